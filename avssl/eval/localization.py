"""Sound-source localization metrics: binarization, cIoU, cIoU@0.5, AUC, baselines.

Protocol (docs/reference.md section 5): a localization map (higher = more likely the source) is
binarized, then compared to a ground-truth map ``gt`` in [0, 1] (Flickr-SoundNet: annotator
consensus with 0.5 pixels; VGG-SS: union of boxes; see :mod:`avssl.eval.gt`) by the consensus IoU

    cIoU = sum(pred * gt) / (sum(gt) + sum(pred * [gt == 0]))        (Senocak et al. 2018)

The headline numbers are cIoU@0.5 (fraction of samples with cIoU >= 0.5) and AUC, the area under
the success-rate curve ``s(t) = fraction of samples with cIoU >= t`` for t = 0, 0.05, ..., 1,
integrated with the trapezoidal rule (``sklearn.metrics.auc`` over those 21 points, as in the
LVS, EZ-VSL and SLAVC evaluators; Chen et al. 2021, Mo & Morgado 2022). Numbers here are
fractions in [0, 1]; papers print them x100.

Binarization changes the numbers, so every result records the mode by name:

``top50``      min-max normalize the map, keep the pixels >= the value at sorted position
               ``int(n / 2)``, i.e. the top half (LVS, EZ-VSL; EZ-VSL's ``>=``; LVS keeps
               ``>`` and so drops ties at the median).
``fixed``      min-max normalize, keep ``>= threshold`` (0.5).
``slavc_rel``  SLAVC's relative prediction (``--relative_prediction``): min-max normalize, keep
               the pixels >= the value at sorted position ``int(n * pred_size)``; ``pred_size``
               (SLAVC's default 0.5) is the fraction *dropped*, so 0.5 equals ``top50``.
``slavc_abs``  SLAVC's absolute prediction (its default): map the raw similarity from its fixed
               range ``value_range`` to [0, 1] (SLAVC: logits s/tau in [-1/tau, 1/tau], i.e.
               cosine in [-1, 1]), keep ``>= threshold`` (SLAVC's ``--pred_thr`` 0.5, which is
               cosine >= 0). Unlike the others it does not depend on the map's own min and max,
               so a flat low map predicts nothing.

Shapes: a map is ``(H, W)`` or a batch ``(N, H, W)``; numpy arrays or torch tensors are accepted
and numpy comes back. A constant map min-max normalizes to all ones: no pixel ranks below
another, so all are kept (as the top-50 % rule does with ties), and the whole-image baseline
predicts the whole image under every mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BINARIZATIONS = ("top50", "fixed", "slavc_rel", "slavc_abs")
#: defaults of the binarization parameters (the published values)
BINARIZATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "top50": {},
    "fixed": {"threshold": 0.5},
    "slavc_rel": {"pred_size": 0.5},
    "slavc_abs": {"threshold": 0.5, "value_range": (-1.0, 1.0)},
}
AUC_THRESHOLDS = np.linspace(0.0, 1.0, 21)  # 0, 0.05, ..., 1
BASELINES = ("whole_image", "center", "random")


def _np(x: Any) -> np.ndarray:
    """numpy float64 view of a numpy array, torch tensor or nested list."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _batched(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """(H, W) -> (1, H, W), True; (N, H, W) -> itself, False."""
    if x.ndim == 2:
        return x[None], True
    if x.ndim == 3:
        return x, False
    raise ValueError(f"expected a map (H, W) or a batch (N, H, W), got shape {x.shape}")


def minmax_normalize(maps: Any) -> np.ndarray:
    """Per-sample min-max normalization to [0, 1]: (H, W) or (N, H, W) -> same shape.

    A constant map becomes all ones (every pixel ties for the top).
    """
    x, single = _batched(_np(maps))
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 1.0)
    return out[0] if single else out


def _keep_top(norm: np.ndarray, drop_fraction: float) -> np.ndarray:
    """Keep pixels >= the value at sorted position int(n * drop_fraction) (per sample)."""
    if not 0.0 <= drop_fraction < 1.0:
        raise ValueError(f"pred_size must be in [0, 1), got {drop_fraction}")
    flat = norm.reshape(norm.shape[0], -1)
    k = int(flat.shape[1] * drop_fraction)
    thr = np.sort(flat, axis=1)[:, k]
    return norm >= thr[:, None, None]


def binarize(pred_map: Any, mode: str = "top50", *, threshold: float | None = None,
             pred_size: float | None = None,
             value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Binary prediction (bool, same shape) of a map (H, W) or batch (N, H, W).

    Args:
        pred_map: localization scores, higher = sounding.
        mode: one of :data:`BINARIZATIONS` (see the module docstring).
        threshold: ``fixed`` / ``slavc_abs`` cut on the [0, 1] scores (default 0.5).
        pred_size: ``slavc_rel`` fraction of pixels dropped (default 0.5).
        value_range: ``slavc_abs`` fixed (min, max) of the raw scores (default cosine (-1, 1)).
    """
    if mode not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {mode!r} (choose from {list(BINARIZATIONS)})")
    x, single = _batched(_np(pred_map))
    d = BINARIZATION_DEFAULTS[mode]
    if mode == "top50":
        out = _keep_top(minmax_normalize(x), 0.5)
    elif mode == "slavc_rel":
        out = _keep_top(minmax_normalize(x), d["pred_size"] if pred_size is None else pred_size)
    elif mode == "fixed":
        out = minmax_normalize(x) >= (d["threshold"] if threshold is None else threshold)
    else:  # slavc_abs
        lo, hi = d["value_range"] if value_range is None else value_range
        if hi <= lo:
            raise ValueError(f"value_range must be (min, max) with min < max, got {value_range}")
        out = (x - lo) / (hi - lo) >= (d["threshold"] if threshold is None else threshold)
    return out[0] if single else out


def binarization_params(mode: str, **overrides: Any) -> dict[str, Any]:
    """The parameters ``binarize(mode, **overrides)`` uses (defaults filled in), for reports."""
    if mode not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {mode!r} (choose from {list(BINARIZATIONS)})")
    params = {**BINARIZATION_DEFAULTS[mode],
              **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(params) - set(BINARIZATION_DEFAULTS[mode])
    if unknown:
        raise ValueError(f"binarization {mode!r} takes no parameter(s) {sorted(unknown)}")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def ciou(pred_bin: Any, gt_map: Any) -> np.ndarray | float:
    """Consensus IoU (Senocak et al. 2018) of binary predictions against ground-truth maps.

    ``sum(pred * gt) / (sum(gt) + sum(pred * [gt == 0]))``: gt may be fractional (Flickr's
    0.5 pixels count half in both the overlap and the denominator); predicted pixels where gt
    is 0 are false positives, predicted pixels at gt 0.5 are not. pred_bin, gt_map: (H, W) ->
    float, or (N, H, W) -> (N,). NaN where the denominator is 0 (no gt and no prediction).
    """
    p, single = _batched(_np(pred_bin))
    g, _ = _batched(_np(gt_map))
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    p = (p > 0).astype(np.float64)
    inter = (p * g).sum(axis=(1, 2))
    denom = g.sum(axis=(1, 2)) + (p * (g == 0)).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, inter / np.where(denom > 0, denom, 1.0), np.nan)
    return float(out[0]) if single else out


def ciou_at(ious: Sequence[float] | np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of samples with cIoU >= ``threshold`` (cIoU@0.5 by default); (N,) -> float."""
    x = _np(ious).reshape(-1)
    if x.size == 0:
        raise ValueError("no cIoU values")
    return float(np.mean(x >= threshold))


def success_curve(ious: Sequence[float] | np.ndarray,
                  thresholds: np.ndarray = AUC_THRESHOLDS) -> np.ndarray:
    """Success rate per threshold: fraction of samples with cIoU >= t, (len(thresholds),)."""
    x = _np(ious).reshape(-1)
    if x.size == 0:
        raise ValueError("no cIoU values")
    return (x[None, :] >= thresholds[:, None]).mean(axis=1)


def auc(ious: Sequence[float] | np.ndarray) -> float:
    """Area under the success-rate curve over t = 0, 0.05, ..., 1 by the trapezoidal rule.

    Same as LVS/EZ-VSL/SLAVC's ``sklearn.metrics.auc(thr, success)``:
    ``0.05 * (sum(s) - (s[0] + s[20]) / 2)``. A perfect predictor (all cIoU 1) scores 1.
    """
    s = success_curve(ious)
    step = float(AUC_THRESHOLDS[1] - AUC_THRESHOLDS[0])
    return float(step * (s.sum() - (s[0] + s[-1]) / 2))


@dataclass
class LocalizationResult:
    """Headline localization numbers of one predictor over ``n`` samples (fractions)."""

    ciou_at_05: float
    auc: float
    mean_ciou: float
    binarization: str
    n: int
    binarization_params: dict[str, Any] = field(default_factory=dict)
    n_skipped_empty_gt: int = 0
    ious: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, with_ious: bool = False) -> dict[str, Any]:
        d = {"cIoU@0.5": self.ciou_at_05, "AUC": self.auc, "mean_cIoU": self.mean_ciou,
             "binarization": self.binarization, "binarization_params": self.binarization_params,
             "n": self.n, "n_skipped_empty_gt": self.n_skipped_empty_gt}
        if with_ious:
            d["ious"] = list(self.ious)
        return d

    def __str__(self) -> str:
        return (f"cIoU@0.5 {100 * self.ciou_at_05:.1f} / AUC {100 * self.auc:.1f} "
                f"(mean cIoU {100 * self.mean_ciou:.1f}, n={self.n}, {self.binarization})")


def evaluate_result(pred_maps: Any, gt_maps: Any, mode: str = "top50",
                    **params: Any) -> LocalizationResult:
    """Binarize ``pred_maps`` (N, H, W) with ``mode`` and score them against ``gt_maps``.

    Samples whose ground truth is empty (no visible source: cIoU undefined) are left out and
    counted in ``n_skipped_empty_gt``.
    """
    pred, _ = _batched(_np(pred_maps))
    gt, _ = _batched(_np(gt_maps))
    if pred.shape != gt.shape:
        raise ValueError(f"prediction maps {pred.shape} and ground truth {gt.shape} differ")
    keep = gt.reshape(gt.shape[0], -1).sum(axis=1) > 0
    if not keep.any():
        raise ValueError("every ground-truth map is empty: nothing to score")
    ious = np.asarray(ciou(binarize(pred[keep], mode, **params), gt[keep]), dtype=np.float64)
    return LocalizationResult(
        ciou_at_05=ciou_at(ious, 0.5), auc=auc(ious), mean_ciou=float(ious.mean()),
        binarization=mode, n=int(keep.sum()),
        binarization_params=binarization_params(mode, **params),
        n_skipped_empty_gt=int((~keep).sum()), ious=[float(v) for v in ious])


def evaluate(pred_maps: Any, gt_maps: Any, mode: str = "top50", **params: Any) -> dict[str, Any]:
    """:func:`evaluate_result` as a dict: ``cIoU@0.5``, ``AUC``, ``mean_cIoU``,
    ``binarization``, ``binarization_params``, ``n``, ``n_skipped_empty_gt``."""
    return evaluate_result(pred_maps, gt_maps, mode, **params).to_dict()


# ----------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------
def center_prior(height: int, width: int) -> np.ndarray:
    """Centre-prior score map (H, W) in [-1, 1] whose level sets are centred boxes.

    ``2 * (1 - max(|x - cx| / (W/2), |y - cy| / (H/2))) - 1`` (pixel centres), on the cosine
    scale of real maps so every binarization treats it like a model's map. Its binarization is
    a centred box with the frame's aspect ratio: ``fixed`` 0.5 and ``slavc_abs`` 0.5 keep the box
    of half the width and half the height (1/4 of the area), ``top50`` / ``slavc_rel`` 0.5 the box
    of about half the area (sides x 0.71; ties at the median ring are kept).
    """
    y = (np.arange(height) + 0.5) / height * 2 - 1
    x = (np.arange(width) + 0.5) / width * 2 - 1
    cheb = np.maximum(np.abs(y)[:, None], np.abs(x)[None, :])  # 0 at the centre, ~1 at the edge
    return 2 * (1 - cheb) - 1


def baseline_maps(kind: str, n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Score maps (N, H, W) of a map-free predictor, to be binarized like a model's maps.

    ``whole_image``: all ones (every binarization keeps the whole frame: a constant map
    normalizes to ones; ``slavc_abs`` keeps cosine 1).
    ``center``: :func:`center_prior`. ``random``: uniform noise in [-1, 1] per pixel from
    ``np.random.default_rng(seed)``.
    """
    if kind == "whole_image":
        return np.ones((n, height, width))
    if kind == "center":
        return np.broadcast_to(center_prior(height, width), (n, height, width)).copy()
    if kind == "random":
        return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, height, width))
    raise ValueError(f"unknown baseline {kind!r} (choose from {list(BASELINES)})")


def motion_map(frames: Any, size: tuple[int, int] | int) -> np.ndarray:
    """Frame-difference baseline map (H, W) of a clip: where the pixels change.

    frames: (T, H0, W0, 3) (uint8 or float) -> the mean over t of ``|x[t+1] - x[t]|`` averaged
    over the colour channels, resized to ``size`` = (H, W) or H = W by area averaging (each
    output pixel: the mean over the input pixels it covers).
    Still clips and single frames give all zeros. A map-free predictor that needs the pixels:
    on videos where only the sources move it is a strong baseline, and a model's maps that do
    not beat it have learned no more than "what moves" (camera motion makes it weak on real
    footage).
    """
    import torch
    import torch.nn.functional as F

    size = (size, size) if isinstance(size, int) else tuple(size)
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {x.shape}")
    if len(x) < 2:
        return np.zeros(size, np.float32)
    diff = np.abs(np.diff(x, axis=0)).mean(axis=(0, 3))  # (H0, W0)
    t = torch.from_numpy(np.ascontiguousarray(diff))[None, None]
    return F.interpolate(t, size=size, mode="area")[0, 0].numpy()


def evaluate_with_baselines(pred_maps: Any, gt_maps: Any, mode: str = "top50", seed: int = 0,
                            extra: dict[str, Any] | None = None,
                            **params: Any) -> dict[str, Any]:
    """The model's numbers beside the whole-image, centre and random baselines, all binarized
    with the same ``mode``: ``{"model": {...}, "whole_image": {...}, "center": {...},
    "random": {...}}`` (each as :func:`evaluate`). ``extra``: more baselines that need the
    data, name -> their maps (N, H, W) (e.g. ``"motion"``: :func:`motion_map` of each clip),
    scored the same way after the built-in ones."""
    gt, _ = _batched(_np(gt_maps))
    out = {"model": evaluate(pred_maps, gt, mode, **params)}
    n, h, w = gt.shape
    for kind in BASELINES:
        out[kind] = evaluate(baseline_maps(kind, n, h, w, seed), gt, mode, **params)
    for name, maps in (extra or {}).items():
        if name in out:
            raise ValueError(f"baseline {name!r} is already in the table")
        out[name] = evaluate(maps, gt, mode, **params)
    return out


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Lines ``name  cIoU@0.5  AUC  mean`` (x100) for :func:`evaluate_with_baselines` output."""
    first = next(iter(results.values()))
    lines = [f"binarization {first['binarization']} {first['binarization_params'] or ''}".rstrip(),
             f"{'':14s} {'cIoU@0.5':>8s} {'AUC':>6s} {'mean':>6s} {'n':>5s}"]
    for name, r in results.items():
        lines.append(f"{name:14s} {100 * r['cIoU@0.5']:8.1f} {100 * r['AUC']:6.1f} "
                     f"{100 * r['mean_cIoU']:6.1f} {r['n']:5d}")
    return "\n".join(lines)


__all__ = [
    "AUC_THRESHOLDS", "BASELINES", "BINARIZATIONS", "LocalizationResult", "auc",
    "baseline_maps", "binarization_params", "binarize", "center_prior", "ciou", "ciou_at",
    "evaluate", "evaluate_result", "evaluate_with_baselines", "format_table", "minmax_normalize",
    "motion_map", "success_curve",
]
