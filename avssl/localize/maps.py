"""Localization maps from a trained model, and the "is there a visible source" decision.

Map (docs/reference.md section 5.1; Senocak et al. 2018, Chen et al. 2021 LVS): cosine similarity
between the clip's audio embedding (B, D) and the video encoder's last spatial grid projected
by the video head at every location, ``video_head.forward_map(video.forward_grid(x))``
(B, D, T', H', W'), L2-normalized per location. A map is always there, even for silence or an
off-screen sound, so a decision sits on top of it:

- **silence**: the audio window's RMS level (dBFS, full scale 1.0) below ``silence_db``
  (default -60 dBFS) -> "silent audio", no source is claimed whatever the map says;
- **confidence**: how much the map stands out; a clip is "source" when it reaches a threshold.

The default confidence, ``specificity`` (:func:`specificity`), asks whether some location of
*these frames* matches *this sound* better than it matches other sounds: the clip's frames are
also paired with K audio windows of other videos (the null hypothesis: those sounds cannot come
from these frames), the null's mean map is subtracted location by location, the difference is
divided by the null's spread, and the confidence is the maximum over locations. The null is
the clip's own, so what makes every sound's map peaked on some frames (textured or coloured
backgrounds, large or salient objects, a model that likes objects whatever they sound like)
cancels out, and the unit (null spreads) means much the same on any data. The
map-only confidences (``contrast`` = max - mean over locations, ``zscore``, ``peak``,
``slavc``; :func:`source_confidence`) compare a clip's map with maps of *other* frames, and
the pooled threshold is set by whichever frames make every sound's map peaked, and by
"mismatched" sounds that are not a null at all: a sound of another video whose class has a
silent object in these frames does have a visible source here. Measured on the demo's 48
held-out videos (AVID after 12 epochs; every source in view): 21 % of the mismatched sounds
were of that kind, with contrasts as high as the clips' own sounds, and they alone set the
95th percentile, so 79 % of the clips (26 of the 48 videos) were called "no visible source";
with ``specificity`` 42 % of the clips and no video, while 4 % of off-screen pairings (a sound
of a class not in view) were called "source".

The threshold is calibrated from data where possible (:func:`calibrate_threshold`) at a high
percentile (95th) of the confidences under the null hypothesis, so about 5 % of mismatched
pairs would be called "source": for ``specificity``, each null window scored against the clip's
other null windows (leave one out), for the map-only kinds the confidences of maps with other
videos' audio. Uncalibrated defaults (:data:`DEFAULT_THRESHOLDS`) are rough guesses for a
trained model and are labelled as such in every output.

The 5 % holds for the null windows, not for a clip whose real soundtrack is off screen: null
windows are drawn relative to the clip's own sound (:func:`~avssl.localize.calibration._draw_null`),
so that sound is an outlier against its null while a null window is not against the others.
Measured with each held-out video playing another's soundtrack (class not in view; ``avssl demo``
reports it): 0-1.8 % of such clips called "source" with a model that localizes, 15-31 % with one
that does not (variant b at the demo's budget). Scoring other sounds exactly as the clip's own
would be exact, but on few-class data a fifth of them have a silent object of their class in
view, which raises the threshold far above what off-screen sounds reach (README, variant b).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.data.level import rms_dbfs

#: ``specificity`` needs null maps (other sounds on the same frames); the others a map only
CONFIDENCE_KINDS = ("specificity", "contrast", "zscore", "peak", "slavc")
MAP_CONFIDENCE_KINDS = CONFIDENCE_KINDS[1:]
#: uncalibrated thresholds per confidence kind (cosine units except zscore and specificity,
#: which are in standard deviations; guesses, see above)
DEFAULT_THRESHOLDS = {"specificity": 3.0, "contrast": 0.2, "zscore": 2.5, "peak": 0.5,
                      "slavc": 0.6}
NULL_PER_CLIP = 32  # other-sound windows paired with each clip for ``specificity``
MIN_NULL = 4  # fewer null windows for a clip than this: ``specificity`` cannot be computed
MIN_NULL_STD = 1e-3  # floor of a location's null standard deviation (cosine units)
SILENCE_DB = -60.0
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
    if kind == "specificity":
        raise ValueError("confidence 'specificity' needs null maps: use specificity()")
    raise ValueError(f"unknown confidence {kind!r} (choose from {list(CONFIDENCE_KINDS)})")


def standardized_map(own: Tensor, null: Tensor, min_std: float = MIN_NULL_STD) -> Tensor:
    """A clip's map relative to its null: ``(own - mean_k null_k) / s`` per location.

    own: (*grid) map of the clip's frames with its own audio; null: (K, *grid) maps of the same
    frames with K other sounds (K >= 2). Subtracting the null's mean map per location removes
    what every sound's map shows on these frames (a location any sound matches). ``s`` is one
    number per clip, the null's root-mean-square spread over locations (floored at
    ``min_std``), not a per-location spread: a location where the null sounds happen to agree
    would otherwise turn any small difference of a sound unlike them into a large score.
    """
    null = torch.as_tensor(null).float()
    own = torch.as_tensor(own).float()
    if null.shape[0] < 2 or tuple(null.shape[1:]) != tuple(own.shape):
        raise ValueError(f"null maps {tuple(null.shape)} must be (K >= 2, *{tuple(own.shape)})")
    spread = null.var(0, unbiased=False).mean().sqrt().clamp_min(min_std)
    return (own - null.mean(0)) / spread


def specificity(own: Tensor, null: Tensor, min_std: float = MIN_NULL_STD) -> float:
    """Max over locations of :func:`standardized_map`: how far (in null spreads) the best
    location matches this sound better than it matches other sounds on average."""
    return float(standardized_map(own, null, min_std).max())


def null_specificities(null: Tensor, min_std: float = MIN_NULL_STD) -> list[float]:
    """:func:`specificity` of each null map against the other K - 1 (leave one out): samples of
    the confidence when the sound is not from these frames, on these frames; K values."""
    null = torch.as_tensor(null).float()
    k = null.shape[0]
    out = []
    for i in range(k):
        rest = torch.cat([null[:i], null[i + 1:]])
        out.append(specificity(null[i], rest, min_std))
    return out


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
        note=f"{percentile:g}th percentile of confidences with other videos' audio"
        + (" (each null window against the clip's others, leave one out)"
           if kind == "specificity" else ""))


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
    "DEFAULT_THRESHOLDS", "MAP_CONFIDENCE_KINDS", "MIN_NULL", "NULL_PER_CLIP", "SILENCE_DB",
    "Calibration", "audio_embedding", "auroc", "calibrate_threshold", "cosine_maps", "decide",
    "is_silent", "localization_maps", "map_stats", "null_specificities", "peak_location",
    "rms_dbfs", "source_confidence", "specificity", "standardized_map", "upsample",
    "video_embedding_grid", "video_grid",
]
