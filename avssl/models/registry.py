"""Config names -> encoders and heads.

``VIDEO_ENCODERS`` / ``AUDIO_ENCODERS`` map ``model.video.arch`` / ``model.audio.arch`` to a
factory ``(depth, width) -> Encoder``. ``depth`` picks the blocks of ``r2plus1d`` (10, 18, 34)
and must be 10 for ``audio_cnn``; archs whose name carries the depth (``tv_r2plus1d_18``,
``tv_r3d_18``, ``resnet18``, the per-frame ``frame_*``) ignore it. ``width`` scales every
channel count (64 published; the ``frame_resnet*`` backbones keep 64).
Archs in ``STRIDED_ARCHS`` also take ``model.video.spatial_stride`` (finer conv5x grids).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avssl.config import ConfigError, EncoderConfig, HeadConfig
from avssl.models.audio_cnn import AudioCNN
from avssl.models.common import Encoder
from avssl.models.frame import FrameEncoder
from avssl.models.heads import ProjectionHead
from avssl.models.r2plus1d import R2PLUS1D_LAYERS, R2Plus1D
from avssl.models.resnet_audio import ResNetAudio
from avssl.models.torchvision_video import TorchvisionVideoResNet

EncoderFactory = Callable[..., Encoder]  # (depth or None = default, width[, spatial_stride])
#: archs whose factory also takes ``spatial_stride`` (the others have the published 32)
STRIDED_ARCHS = frozenset({"r2plus1d"})


class _DepthError(ValueError):
    """A depth the arch does not have (re-raised by the builders as a ConfigError)."""


def _r2plus1d(depth: int | None, width: int, spatial_stride: int = 32) -> Encoder:
    depth = 18 if depth is None else depth
    if depth not in R2PLUS1D_LAYERS:
        raise _DepthError(f"r2plus1d has depths {sorted(R2PLUS1D_LAYERS)}, got {depth}")
    return R2Plus1D(depth=depth, width=width, spatial_stride=spatial_stride)


def _audio_cnn(depth: int | None, width: int) -> Encoder:
    if depth not in (None, 10):
        raise _DepthError(f"audio_cnn is the 10-layer CNN (depth 10), got {depth}")
    return AudioCNN(width=width)


VIDEO_ENCODERS: dict[str, EncoderFactory] = {
    "r2plus1d": _r2plus1d,
    "tv_r2plus1d_18": lambda depth, width: TorchvisionVideoResNet("r2plus1d_18", 18, width),
    "tv_r3d_18": lambda depth, width: TorchvisionVideoResNet("r3d_18", 18, width),
    # a 2-D backbone per frame (image pretext tasks on video frames; models/frame.py)
    "frame_resnet18": lambda depth, width: FrameEncoder("resnet18", width),
    "frame_resnet50": lambda depth, width: FrameEncoder("resnet50", width),
    "frame_small": lambda depth, width: FrameEncoder("small", width),
}
AUDIO_ENCODERS: dict[str, EncoderFactory] = {
    "audio_cnn": _audio_cnn,
    "resnet18": lambda depth, width: ResNetAudio(18, width),
}


def _build(registry: Mapping[str, EncoderFactory], cfg: EncoderConfig, key: str,
           modality: str) -> Encoder:
    if cfg.arch not in registry:
        raise ConfigError(f"{key}.arch: unknown {modality} encoder {cfg.arch!r} "
                          f"(known: {', '.join(registry)})")
    try:
        if cfg.arch in STRIDED_ARCHS:
            model = registry[cfg.arch](cfg.depth, cfg.width, cfg.spatial_stride)
        elif cfg.spatial_stride != 32:
            raise ConfigError(f"{key}.spatial_stride: only {', '.join(sorted(STRIDED_ARCHS))} "
                              f"can change it; {cfg.arch} has 32 (remove the key)")
        else:
            model = registry[cfg.arch](cfg.depth, cfg.width)
    except _DepthError as e:
        raise ConfigError(f"{key}.depth: {e}") from None
    if cfg.pretrained:
        load_pretrained(model, cfg.pretrained, modality, key=f"{key}.pretrained")
    return model


def build_video_encoder(cfg: EncoderConfig) -> Encoder:
    """``model.video`` -> video encoder, (B, 3, T, H, W) -> (B, out_dim)."""
    return _build(VIDEO_ENCODERS, cfg, "model.video", "video")


def build_audio_encoder(cfg: EncoderConfig) -> Encoder:
    """``model.audio`` -> audio encoder, (B, 1, T, F) -> (B, out_dim)."""
    return _build(AUDIO_ENCODERS, cfg, "model.audio", "audio")


def build_head(in_dim: int, cfg: HeadConfig) -> ProjectionHead:
    """``model.head`` -> L2-normalized MLP (B, in_dim) -> (B, cfg.out_dim) (with BatchNorm
    after each hidden layer when ``cfg.bn``)."""
    return ProjectionHead(in_dim, hidden=cfg.hidden, out_dim=cfg.out_dim, bn=cfg.bn)


def load_pretrained(model: nn.Module, path: str | Path, modality: str = "",
                    key: str = "pretrained") -> None:
    """Load encoder weights from a checkpoint holding them under some prefix.

    ``path`` is a file saved with ``torch.save``: a state dict, or a dict with it under
    ``"model"`` or ``"state_dict"``. The prefix is found by matching the model's keys (e.g.
    ``module.video_model.`` in a converted AVID checkpoint, ``""`` for a bare encoder); when
    several prefixes fit, the one naming ``modality`` wins, and ``path#prefix`` forces one.
    Any problem raises :class:`ConfigError` naming ``key``.
    """
    path_str, _, forced = str(path).partition("#")
    try:
        obj: Any = torch.load(path_str, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        raise ConfigError(f"{key}: cannot read {path_str}: {e}") from None
    for name in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(name), dict):
            obj = obj[name]
    if not isinstance(obj, dict):
        raise ConfigError(f"{key}: {path_str} holds no state dict")
    wanted = model.state_dict()
    if forced:
        prefix = forced
    else:
        anchor = next(iter(wanted))
        candidates = sorted({k[: len(k) - len(anchor)] for k in obj
                             if k == anchor or k.endswith("." + anchor)})
        fits = [p for p in candidates
                if all(p + k in obj and obj[p + k].shape == v.shape for k, v in wanted.items())]
        if len(fits) > 1:
            fits = [p for p in fits if modality and modality in p] or fits
        if len(fits) != 1:
            why = "no prefix holds all" if not fits else f"several prefixes fit ({fits}) for"
            raise ConfigError(f"{key}: {why} the {len(wanted)} encoder weights in {path_str}; "
                              "name one as path#prefix")
        prefix = fits[0]
    state = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ConfigError(f"{key}: {path_str} (prefix {prefix!r}) does not fit the encoder: "
                          f"{' '.join(first[:3])}") from None
