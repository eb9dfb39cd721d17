"""Localization maps from a trained model, and the "is there a visible source" decision.

Map (REFERENCE.md section 5; Senocak et al. 2018, Chen et al. 2021 LVS): cosine similarity
between the clip's audio embedding (B, D) and the video encoder's last spatial grid projected
by the video head at every location, ``video_head.forward_map(video.forward_grid(x))``
(B, D, T', H', W'), L2-normalized per location. A map is always there, even for silence or an
off-screen sound, so a decision sits on top of it:

- **silence**: the audio window's RMS level (dBFS, full scale 1.0) below ``silence_db``
  (default -60 dBFS) -> "silent audio", no source is claimed whatever the map says;
- **confidence**: how much the map stands out (:func:`source_confidence`, default ``contrast``
  = max - mean over locations); a clip is "source" when it reaches a threshold.

The threshold is calibrated from data where possible (:func:`calibrate_threshold`): maps of a
clip's frames with the audio of *other* videos are the null hypothesis (the sound cannot come
from those frames), and the threshold is a high percentile (95th) of their confidences, so about
5 % of mismatched pairs would be called "source". Uncalibrated defaults (:data:`DEFAULT_THRESHOLDS`)
are rough guesses for a trained model and are labelled as such in every output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONFIDENCE_KINDS = ("contrast", "zscore", "peak", "slavc")
#: uncalibrated thresholds per confidence kind (cosine units except zscore; guesses, see above)
DEFAULT_THRESHOLDS = {"contrast": 0.2, "zscore": 2.5, "peak": 0.5, "slavc": 0.6}
SILENCE_DB = -60.0
RMS_FLOOR_DB = -120.0
DEFAULT_PERCENTILE = 95.0
MIN_MISMATCHED = 20  # fewer mismatched confidences than this: no calibration

DECISION_SOURCE = "source"
DECISION_NONE = "no visible source"
DECISION_SILENT = "silent audio"


# ----------------------------------------------------------------------------------------------
# Maps
# ----------------------------------------------------------------------------------------------
def video_grid(encoder: nn.Module, video: Tensor) -> Tensor:
    """The last spatial map before pooling: ``forward_grid(x)`` (B, C, T', H', W'), else
    ``forward_features(x)["conv5x"]`` for encoders without it."""
    if hasattr(encoder, "forward_grid"):
        return encoder.forward_grid(video)
    feats = encoder.forward_features(video)
    if "conv5x" not in feats:
        raise ValueError(f"{type(encoder).__name__}.forward_features has no 'conv5x' map "
                         f"(keys: {list(feats)})")
    return feats["conv5x"]


def _head_map(head: nn.Module, fmap: Tensor) -> Tensor:
    """Apply a projection head at every location: (B, C, *grid) -> (B, D, *grid)."""
    if hasattr(head, "forward_map"):
        return head.forward_map(fmap)
    return head(fmap.movedim(1, -1)).movedim(-1, 1)


@torch.no_grad()
def video_embedding_grid(encoders: nn.Module, video: Tensor) -> Tensor:
    """(B, 3, T, H, W) -> L2-normalized per-location embeddings (B, D, T', H', W') in float32.

    ``encoders`` exposes ``video`` and ``video_head`` (:class:`avssl.methods.base.AVEncoders`).
    """
    grid = video_grid(encoders.video, video)
    return F.normalize(_head_map(encoders.video_head, grid).float(), dim=1)


@torch.no_grad()
def audio_embedding(encoders: nn.Module, audio: Tensor) -> Tensor:
    """(B, 1, T_a, F) spectrograms -> L2-normalized (B, D) float32 (``embed_audio``)."""
    return F.normalize(encoders.embed_audio(audio).float(), dim=1)


def cosine_maps(grid_emb: Tensor, audio_emb: Tensor) -> Tensor:
    """Cosine similarity of normalized (B, D) audio embeddings with normalized (B, D, *grid)
    location embeddings -> (B, *grid) in [-1, 1]."""
    if grid_emb.shape[:2] != audio_emb.shape:
        raise ValueError(f"grid embeddings {tuple(grid_emb.shape)} and audio embeddings "
                         f"{tuple(audio_emb.shape)} disagree on (B, D)")
    return torch.einsum("bd,bd...->b...", audio_emb, grid_emb)


@torch.no_grad()
def localization_maps(encoders: nn.Module, video: Tensor, audio: Tensor) -> Tensor:
    """Cosine-similarity maps (B, T', H', W') between each clip's audio and its video locations.

    video: (B, 3, T, H, W) normalized frames (any H, W: the encoder is convolutional; the map
    covers the whole input); audio: (B, 1, T_a, F) spectrograms.
    """
    return cosine_maps(video_embedding_grid(encoders, video), audio_embedding(encoders, audio))


def upsample(maps: Tensor, size: tuple[int, int] | int) -> Tensor:
    """Bilinear upsampling (align_corners=False) of the last two axes to ``size`` (H, W).

    maps: (H', W'), (B, H', W') or (B, T', H', W') -> same leading axes, (..., H, W).
    """
    if isinstance(size, int):
        size = (size, size)
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return x.reshape(*lead, *size)


# ----------------------------------------------------------------------------------------------
# Confidence and decision
# ----------------------------------------------------------------------------------------------
def source_confidence(maps: Tensor | np.ndarray, kind: str = "contrast") -> Tensor:
    """How much each map stands out: (B, ...) -> (B,) float32, over every non-batch axis.

    ``contrast``: max - mean (cosine units; 0 for a constant map).
    ``zscore``: (max - mean) / std (0 for a map with std <= 1e-6).
    ``peak``: max cosine.
    ``slavc``: mean of the top quarter of ``(s + 1) / 2`` (SLAVC's confidence on the cosine
    range mapped to [0, 1]; Mo & Morgado 2022).
    """
    x = torch.as_tensor(maps).float()
    x = x.reshape(x.shape[0], -1)
    if kind == "contrast":
        return x.amax(1) - x.mean(1)
    if kind == "zscore":
        std = x.std(1, unbiased=False)
        flat = std <= 1e-6  # float noise of a constant map must not become a z-score
        return torch.where(flat, torch.zeros_like(std),
                           (x.amax(1) - x.mean(1)) / std.clamp_min(1e-6))
    if kind == "peak":
        return x.amax(1)
    if kind == "slavc":
        k = max(1, x.shape[1] // 4)
        return ((x + 1) / 2).topk(k, dim=1).values.mean(1)
    raise ValueError(f"unknown confidence {kind!r} (choose from {list(CONFIDENCE_KINDS)})")


def peak_location(maps: Tensor) -> list[dict[str, float]]:
    """Argmax of each map (B, T', H', W'): grid indices ``t``, ``h``, ``w``, its ``value`` and the
    location centre in normalized image coordinates ``x``, ``y`` (0..1, left/top = 0)."""
    b, _, h, w = maps.shape
    flat = maps.reshape(b, -1)
    vals, idx = flat.max(1)
    out = []
    for v, i in zip(vals.tolist(), idx.tolist()):
        ti, rem = divmod(i, h * w)
        hi, wi = divmod(rem, w)
        out.append({"t": ti, "h": hi, "w": wi, "value": float(v),
                    "x": (wi + 0.5) / w, "y": (hi + 0.5) / h})
    return out


def rms_dbfs(wave: np.ndarray | Tensor) -> float:
    """RMS level of float samples (full scale 1.0) in dBFS, floored at -120 (digital silence)."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return RMS_FLOOR_DB
    ms = float(np.mean(np.square(x)))
    return max(RMS_FLOOR_DB, 10.0 * math.log10(ms)) if ms > 0 else RMS_FLOOR_DB


def is_silent(wave: np.ndarray | Tensor, silence_db: float = SILENCE_DB) -> bool:
    """True when the window's RMS level is below ``silence_db`` dBFS."""
    return rms_dbfs(wave) < silence_db


@dataclass
class Calibration:
    """The confidence threshold and where it came from (stored in every result JSON).

    ``source``: "calibrated" (from mismatched audio in this run), "user" (``--threshold``),
    "file" (an earlier run's calibration) or "default" (:data:`DEFAULT_THRESHOLDS`,
    uncalibrated). ``matched_above``: fraction of matched clips at or above the threshold;
    ``auroc``: how well the confidence separates matched from mismatched pairs (0.5 = not at
    all); ``percentile``: of the mismatched confidences that set the threshold.
    """

    threshold: float
    kind: str = "contrast"
    source: str = "default"
    percentile: float | None = None
    n_matched: int = 0
    n_mismatched: int = 0
    matched_above: float | None = None
    mismatched_above: float | None = None
    auroc: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "threshold" not in known:
            raise ValueError("calibration has no 'threshold'")
        return cls(**known)

    @classmethod
    def default(cls, kind: str = "contrast", note: str = "") -> Calibration:
        if kind not in DEFAULT_THRESHOLDS:
            raise ValueError(f"unknown confidence {kind!r} (choose from {list(CONFIDENCE_KINDS)})")
        return cls(DEFAULT_THRESHOLDS[kind], kind, "default",
                   note=note or "uncalibrated default threshold")


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(positive > negative) + 0.5 P(tie) (Mann-Whitney), from two score lists."""
    p = np.asarray(positives, np.float64)[:, None]
    n = np.asarray(negatives, np.float64)[None, :]
    if p.size == 0 or n.size == 0:
        raise ValueError("auroc needs positives and negatives")
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def calibrate_threshold(matched: Sequence[float], mismatched: Sequence[float],
                        percentile: float = DEFAULT_PERCENTILE, kind: str = "contrast",
                        min_mismatched: int = MIN_MISMATCHED) -> Calibration:
    """Threshold = the ``percentile`` of confidences of clips paired with OTHER videos' audio.

    ``matched``: confidences with the clip's own audio (only used to report ``matched_above``
    and ``auroc``); ``mismatched``: with audio of other videos. Fewer than ``min_mismatched``
    mismatched values: returns the uncalibrated default with a note.
    """
    mis = np.asarray(mismatched, np.float64).reshape(-1)
    mat = np.asarray(matched, np.float64).reshape(-1)
    if mis.size < min_mismatched:
        cal = Calibration.default(kind, f"not calibrated: {mis.size} mismatched pairs "
                                        f"(need {min_mismatched}; give 2+ videos with audio)")
        cal.n_matched, cal.n_mismatched = int(mat.size), int(mis.size)
        return cal
    thr = float(np.percentile(mis, percentile))
    return Calibration(
        threshold=thr, kind=kind, source="calibrated", percentile=float(percentile),
        n_matched=int(mat.size), n_mismatched=int(mis.size),
        matched_above=float(np.mean(mat >= thr)) if mat.size else None,
        mismatched_above=float(np.mean(mis >= thr)),
        auroc=auroc(mat, mis) if mat.size else None,
        note=f"{percentile:g}th percentile of confidences with other videos' audio")


def decide(confidence: float, rms_db: float, calibration: Calibration,
           silence_db: float = SILENCE_DB) -> str:
    """"silent audio" below ``silence_db``, else "source" when ``confidence`` reaches the
    threshold, else "no visible source"."""
    if rms_db < silence_db:
        return DECISION_SILENT
    return DECISION_SOURCE if confidence >= calibration.threshold else DECISION_NONE


def map_stats(maps: Tensor) -> dict[str, float]:
    """min / max / mean / std of one map (any shape), rounded for JSON."""
    x = maps.float().reshape(-1)
    return {k: round(float(v), 5) for k, v in (("min", x.min()), ("max", x.max()),
                                                 ("mean", x.mean()),
                                                 ("std", x.std(unbiased=False)))}


__all__ = [
    "CONFIDENCE_KINDS", "DECISION_NONE", "DECISION_SILENT", "DECISION_SOURCE",
    "DEFAULT_THRESHOLDS", "SILENCE_DB", "Calibration", "audio_embedding", "auroc",
    "calibrate_threshold", "cosine_maps", "decide", "is_silent", "localization_maps", "map_stats",
    "peak_location", "rms_dbfs", "source_confidence", "upsample", "video_embedding_grid",
    "video_grid",
]
