"""The confidence threshold of ``avssl localize``: each clip's map under other videos' sounds
(the null), the threshold calibrated on them or given (``--threshold``, ``--calibration``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from avssl.localize.inputs import LocalizeError, Options
from avssl.localize.localizer import Work
from avssl.localize.maps import (
    MIN_NULL,
    NULL_PER_CLIP,
    Calibration,
    calibrate_threshold,
    cosine_maps,
    null_specificities,
    source_confidence,
    specificity,
)

MISMATCHED_PER_CLIP = 4  # other-video audio windows paired with each clip for calibration


def _audible_pool(works: list[Work]) -> tuple[np.ndarray, torch.Tensor]:
    """The audible windows of every embedded video: the video owning each (N,) and their audio
    embeddings (N, D)."""
    pool = [(wi, c) for wi, w in enumerate(works) if w.grid is not None
            for c in np.flatnonzero(~w.silent)]  # type: ignore[operator]
    owner = np.array([wi for wi, _ in pool], dtype=np.int64)
    emb = (torch.stack([works[wi].audio_emb[c] for wi, c in pool])  # type: ignore[index]
           if pool else torch.empty(0))
    return owner, emb


def _draw_null(rng: np.random.Generator, pool_emb: torch.Tensor, others: np.ndarray,
               own: torch.Tensor, n: int) -> np.ndarray:
    """Up to ``n`` pool indices among ``others`` for one clip whose audio embedding is ``own``.

    The null hypothesis is a *different* sound: only the less similar half of ``others`` (by
    cosine with the clip's own audio; at least ``n`` windows) is drawn from, because a similar
    sound (the same kind of source) may well have a visible source in these frames.
    """
    sim = pool_emb[others] @ own
    n_keep = max(n, math.ceil(len(others) / 2))
    keep = others[torch.argsort(sim)[:n_keep].numpy()]
    return rng.choice(keep, size=min(n, len(keep)), replace=False)


def mismatched_confidences(works: list[Work], kind: str, per_clip: int = MISMATCHED_PER_CLIP,
                           seed: int = 0) -> tuple[list[float], list[float]]:
    """Map-only confidences (:data:`MAP_CONFIDENCE_KINDS`) of every audible clip with its own
    audio (matched) and with up to ``per_clip`` audible windows of OTHER videos (mismatched,
    see :func:`_draw_null`), seeded."""
    rng = np.random.default_rng(seed)
    owner, pool_emb = _audible_pool(works)
    matched: list[float] = []
    mismatched: list[float] = []
    for wi, w in enumerate(works):
        if w.grid is None:
            continue
        others = np.flatnonzero(owner != wi)
        for c in np.flatnonzero(~w.silent):  # type: ignore[operator]
            g = w.grid[c:c + 1]
            matched.append(float(source_confidence(cosine_maps(g, w.audio_emb[c:c + 1]), kind)))
            if not len(others):
                continue
            pick = _draw_null(rng, pool_emb, others, w.audio_emb[c], per_clip)
            a = pool_emb[torch.as_tensor(pick)]
            maps = cosine_maps(g.expand(len(pick), *g.shape[1:]), a)
            mismatched += source_confidence(maps, kind).tolist()
    return matched, mismatched


def specificity_confidences(works: list[Work], per_clip: int = NULL_PER_CLIP, seed: int = 0
                            ) -> tuple[list[float], list[float]] | None:
    """:func:`~avssl.localize.maps.specificity` of every clip against ``per_clip`` audible
    windows of OTHER videos (:func:`_draw_null`), stored in ``Work.confidence``; returns the
    audible clips' values (matched) and the leave-one-out values of their null windows
    (mismatched), or None when a video has fewer than ``MIN_NULL`` other windows to draw."""
    rng = np.random.default_rng(seed)
    owner, pool_emb = _audible_pool(works)
    matched: list[float] = []
    mismatched: list[float] = []
    for wi, w in enumerate(works):
        if w.grid is None:
            continue
        others = np.flatnonzero(owner != wi)
        if len(others) < MIN_NULL:
            return None
        aud, silent = w.audio_emb, w.silent
        assert aud is not None and silent is not None
        conf = np.zeros(len(w.grid))
        for c in range(len(w.grid)):  # silent clips too: their entries show a confidence
            g = w.grid[c:c + 1]
            pick = _draw_null(rng, pool_emb, others, aud[c], per_clip)
            null = cosine_maps(g.expand(len(pick), *g.shape[1:]), pool_emb[torch.as_tensor(pick)])
            conf[c] = specificity(cosine_maps(g, aud[c:c + 1])[0], null)
            if not silent[c]:
                matched.append(float(conf[c]))
                mismatched += null_specificities(null)
        w.confidence = conf
    return matched, mismatched


def resolve_calibration(works: list[Work], opts: Options) -> Calibration:
    """``--threshold`` > ``--calibration FILE`` > calibrated on this run > default.

    ``specificity`` (the default) needs other videos' audio; with fewer than ``MIN_NULL``
    audible windows of other videos (a single video) the map-only ``contrast`` is used instead,
    and the calibration's note says so.
    """
    kind, note = opts.confidence, ""
    scored = None
    if kind == "specificity":
        scored = specificity_confidences(works, seed=opts.seed)
        if scored is None:
            kind = "contrast"
            note = (f"confidence 'contrast' instead of 'specificity' (fewer than {MIN_NULL} "
                    f"audible windows of other videos to compare with)")
    if opts.threshold is not None:
        cal = Calibration(float(opts.threshold), kind, "user",
                          note="--threshold given on the command line")
    elif opts.calibration_file is not None:
        cal = read_calibration(opts.calibration_file, kind)
    else:
        matched, mismatched = scored or mismatched_confidences(works, kind, seed=opts.seed)
        cal = calibrate_threshold(matched, mismatched, opts.percentile, kind)
    if note:
        cal.note = f"{cal.note}; {note}" if cal.note else note
    return cal


def read_calibration(path: str | Path, kind: str | None) -> Calibration:
    """The calibration stored in an earlier run's ``summary.json`` / ``result.json`` (or a
    bare calibration dict); its confidence kind must be ``kind`` (unless None)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        cal = Calibration.from_dict(data.get("calibration", data))
    except (OSError, json.JSONDecodeError, ValueError, AttributeError, TypeError) as e:
        raise LocalizeError(f"--calibration {path}: cannot read a calibration ({e})") from None
    if kind is not None and cal.kind != kind:
        raise LocalizeError(f"--calibration {path}: calibrated for confidence {cal.kind!r}, "
                            f"not {kind!r} (pass --confidence {cal.kind})")
    cal.source, cal.note = "file", f"from {path} ({cal.source}: {cal.note})"
    return cal
