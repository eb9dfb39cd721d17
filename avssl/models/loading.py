"""Encoders and heads from an avssl checkpoint: the one loader the commands share.

A checkpoint written by ``avssl train`` or ``avssl convert`` holds the method's state dict under
``model`` and the run's config under ``config`` (``docs/checkpoints.md``); the encoders live at
``encoders.<part>.*`` with part one of :data:`PARTS`. Parts are built from the checkpoint's own
``config["model"]`` (the architecture the weights were trained with), or from ``model`` when
the file has no config, and filled strictly; every problem is one :class:`CheckpointError` line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from avssl.config import Config, ConfigError, ModelConfig, from_dict
from avssl.models.registry import build_audio_encoder, build_head, build_video_encoder
from avssl.utils.checkpoint import CheckpointError, load_checkpoint, model_state

#: the encoder parts of a checkpoint, as named under ``encoders.``
PARTS = ("video", "audio", "video_head", "audio_head")


def build_parts(model: ModelConfig, parts: Sequence[str]) -> dict[str, nn.Module]:
    """Randomly initialized ``parts`` of ``model`` (a head needs its encoder's width, so the
    encoder is built too, but only returned when asked for)."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown encoder parts {unknown} (known: {list(PARTS)})")
    out: dict[str, nn.Module] = {}
    for modality, build in (("video", build_video_encoder), ("audio", build_audio_encoder)):
        head = f"{modality}_head"
        if modality not in parts and head not in parts:
            continue
        cfg = getattr(model, modality)
        encoder = build(dataclasses.replace(cfg, pretrained=None))  # weights come later
        if modality in parts:
            out[modality] = encoder
        if head in parts:
            out[head] = build_head(encoder.out_dim, model.head)
    return {p: out[p] for p in parts}


def load_encoders(checkpoint: str | Path | None, parts: Sequence[str] = ("video", "audio"),
                  model: ModelConfig | None = None, require_config: bool = True
                  ) -> tuple[dict[str, nn.Module], Config | None]:
    """``parts`` (e.g. ``["video"]``) with the weights of ``checkpoint``, and its Config.

    checkpoint None: random initialization from ``model`` (a baseline). ``require_config``
    False accepts a file without ``config`` (then ``model`` describes the weights).
    """
    if checkpoint is None:
        if model is None:
            raise ValueError("load_encoders: give a checkpoint or a model config")
        return build_parts(model, parts), None
    ckpt = load_checkpoint(checkpoint, require=("model", "config") if require_config
                           else ("model",))
    cfg = None
    if isinstance(ckpt.get("config"), dict):
        try:
            cfg = from_dict(ckpt["config"], src=f"{checkpoint} (config)", require_paths=False)
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    arch = cfg.model if cfg is not None else model
    if arch is None:
        raise CheckpointError(f"{checkpoint}: no 'config' in the checkpoint to build the "
                              "encoders from")
    try:
        modules = build_parts(arch, parts)
    except ConfigError as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None
    state = model_state(ckpt)
    for part, module in modules.items():
        prefix = f"encoders.{part}."
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not weights:
            raise CheckpointError(f"{checkpoint}: no '{prefix}*' weights in the checkpoint")
        try:
            module.load_state_dict(weights, strict=True)
        except RuntimeError as e:  # PyTorch lists every key: the first line says enough
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{checkpoint}: {part} weights do not fit the config "
                                  f"({first})") from None
    return modules, cfg
