"""The second pass of ``avssl localize``, per video: decisions, cIoU against the ground truth,
overlays (PNGs, contact sheet, video) and ``result.json``; the summary lines of the run."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avssl.eval.gt import BoxAnnotation
from avssl.eval.localization import binarize, ciou, motion_map
from avssl.localize.inputs import Item, Options
from avssl.localize.localizer import Localizer, Work
from avssl.localize.maps import (
    DECISION_NONE,
    DECISION_SILENT,
    DECISION_SOURCE,
    Calibration,
    cosine_maps,
    decide,
    map_stats,
    peak_location,
    source_confidence,
    upsample,
)
from avssl.localize.timeline import _resize_rgb, display_size


def _label(decision: str, conf: float | None, cal: Calibration) -> str:
    """The text drawn on a frame for its clip's decision."""
    if decision == DECISION_SOURCE:
        return f"source  conf {conf:.3f} >= {cal.threshold:.3f}"
    if decision == DECISION_NONE:
        return f"no visible source  conf {conf:.3f} < {cal.threshold:.3f}"
    return decision


def _draw_boxes(img: np.ndarray, boxes: list[list[float]]) -> np.ndarray:
    """White outlines of normalized boxes (ground truth) on a copy of ``img``."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    h, w = img.shape[:2]
    for x0, y0, x1, y1 in boxes:
        d.rectangle([x0 * w, y0 * h, max(x0 * w, x1 * w - 1), max(y0 * h, y1 * h - 1)],
                    outline=(255, 255, 255))
    return np.asarray(im)


def _gt_clips(work: Work, ann: BoxAnnotation) -> list[int]:
    """Clips scored against the ground truth: all for a track; for a static annotation the
    clip closest to the middle of the video."""
    if not ann.static:
        return [c["index"] for c in work.clips]
    mid = float(work.info.get("duration") or 0.0) / 2
    return [min(work.clips, key=lambda c: abs((c["start"] + c["end"]) / 2 - mid))["index"]]


def finish_video(work: Work, loc: Localizer, cal: Calibration, opts: Options,
                 samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Decide, score, render and write ``result.json`` of one processed video; appends its
    (pred map, gt map, motion baseline map) triples at ``eval_size`` to ``samples``; returns the
    result dict."""
    from avssl.utils.atomic import atomic_write_json
    from avssl.viz.overlay import (
        contact_sheet,
        draw_label,
        overlay,
        save_png,
        write_overlay_video,
    )

    item, ann = work.item, work.item.annotation
    result: dict[str, Any] = {
        "input": str(item.path), "name": item.name, "outcome": work.outcome,
        "error": work.error, "info": work.info,
        "clip": {"num_frames": loc.T, "fps": loc.fps, "seconds": loc.clip_s,
                 "audio_seconds": loc.audio_s, "sample_rate": loc.sr,
                 "input_short_side": loc.short_side},
        "confidence_kind": cal.kind, "calibration": cal.to_dict(),
        "silence_db": opts.silence_db, "binarization": opts.binarization,
        "ground_truth": None if ann is None else ann.source,
        "clips": [],
    }
    if work.outcome == "failed":
        work.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(work.out_dir / "result.json", result)
        return result
    frames = np.load(work.frames_file, mmap_mode="r")  # type: ignore[arg-type]
    audio = np.load(work.audio_file) if work.audio_file is not None else None
    # overlays are drawn at least ``min_display`` pixels on the short side (small prepared
    # videos are upscaled for viewing only; the model saw them at ``short_side``)
    H, W = display_size(frames.shape[2], frames.shape[1], 1 << 30, opts.min_display,
                        upscale=True)[::-1]
    T = loc.T
    heat_frames: list[np.ndarray | None] = [None] * work.n_frames
    labels = ["no audio"] * work.n_frames
    gt_clips = set(_gt_clips(work, ann)) if ann is not None else set()
    # frames that show ground-truth boxes: every frame of a track, the scored clip otherwise
    boxed = {c["first_frame"] + j for c in work.clips if c["index"] in gt_clips
             for j in range(T)}
    if work.grid is not None:
        maps = cosine_maps(work.grid, work.audio_emb)  # (C, T', H', W')
        if cal.kind == "specificity" and work.confidence is not None:
            confs = work.confidence.tolist()
        else:
            confs = source_confidence(maps, cal.kind).tolist()
        peaks = peak_location(maps)
        Tp = maps.shape[1]
        for c, clip in enumerate(work.clips):
            rms = clip["audio_rms_db"]
            decision = decide(confs[c], rms, cal, opts.silence_db)
            entry = {k: clip[k] for k in ("index", "start", "end", "audio_start", "audio_end",
                                          "audio_rms_db")}
            entry.update(confidence=round(confs[c], 5), decision=decision, peak=peaks[c],
                         map_stats=map_stats(maps[c]))
            if ann is not None and c in gt_clips:
                t_mid = (clip["start"] + clip["end"]) / 2
                pred = upsample(maps[c].mean(0), opts.eval_size).numpy()
                gt = ann.map_at(t_mid, opts.eval_size, opts.eval_size)
                entry["source_in_view"] = bool(gt.sum() > 0)
                if gt.sum() > 0:
                    size = (opts.eval_size, opts.eval_size)
                    samples.append((pred, gt, motion_map(frames[clip["frames"]], size)))
                    entry["ciou"] = round(float(ciou(binarize(pred, opts.binarization), gt)), 5)
            result["clips"].append(entry)
            # display heat: the clip's map min-max normalized over the clip, per time slice
            lo, hi = float(maps[c].min()), float(maps[c].max())
            norm = (maps[c] - lo) / (hi - lo) if hi > lo else torch.zeros_like(maps[c])
            up = upsample(norm, (H, W)).numpy() if decision == DECISION_SOURCE else None
            for j in range(T):
                f = clip["first_frame"] + j
                if f >= work.n_frames:
                    break
                heat_frames[f] = None if up is None else up[min(Tp - 1, j * Tp // T)]
                labels[f] = _label(decision, confs[c], cal)
        decisions = Counter(e["decision"] for e in result["clips"])
        if decisions[DECISION_SOURCE]:
            result["outcome"] = "localized"
        elif decisions[DECISION_SILENT] == len(work.clips):
            result["outcome"] = "silent audio"
        else:
            result["outcome"] = "no visible source"
        result["decisions"] = dict(decisions)
        in_view = [e for e in result["clips"] if e.get("source_in_view")]
        if in_view:  # ground truth says the sound's source is on screen in these clips
            result["source_in_view"] = True
            audible = [e for e in in_view if e["decision"] != DECISION_SILENT]
            result["false_no_source_clips"] = sum(e["decision"] == DECISION_NONE
                                                  for e in audible)
            result["in_view_audible_clips"] = len(audible)
        scored = [e["ciou"] for e in result["clips"] if "ciou" in e]
        if scored:
            result["ciou"] = {"mean": round(float(np.mean(scored)), 5),
                              "cIoU@0.5": round(float(np.mean(np.asarray(scored) >= 0.5)), 5),
                              "n": len(scored), "binarization": opts.binarization}
    else:
        result["outcome"] = "no audio"

    def render(f: int) -> np.ndarray:
        img = np.asarray(frames[f])
        if img.shape[:2] != (H, W):
            img = _resize_rgb(img, W, H)
        if heat_frames[f] is not None:
            img = overlay(img, heat_frames[f], opts.alpha)  # type: ignore[arg-type]
        if ann is not None and f in boxed:
            img = _draw_boxes(img, ann.boxes_at(f / loc.fps))
        return draw_label(img, f"{f / loc.fps:5.2f}s  {labels[f]}")

    n_png = max(1, min(opts.num_frames, work.n_frames))
    picks = [min(work.n_frames - 1, math.floor((k + 0.5) * work.n_frames / n_png))
             for k in range(n_png)]
    pngs = []
    for k, f in enumerate(picks):
        img = render(f)
        save_png(work.out_dir / f"frame_{k:02d}.png", img)
        pngs.append(img)
    save_png(work.out_dir / "contact_sheet.png", contact_sheet(pngs, cols=min(4, n_png)))
    result["frames"] = [{"file": f"frame_{k:02d}.png", "time": round(f / loc.fps, 4)}
                        for k, f in enumerate(picks)]
    result["contact_sheet"] = "contact_sheet.png"
    if opts.write_video:
        track = None if audio is None else audio[: round(work.n_frames / loc.fps * loc.sr)]
        write_overlay_video(work.out_dir / "overlay.mp4",
                            [render(f) for f in range(work.n_frames)], loc.fps, track, loc.sr)
        result["overlay"] = "overlay.mp4"
    atomic_write_json(work.out_dir / "result.json", result)
    return result


def _cleanup(work: Work) -> None:
    """Remove the frames and audio kept on disk between the two passes."""
    for p in (work.frames_file, work.audio_file):
        if p is not None:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _summary_line(r: dict[str, Any]) -> str:
    """One line on one video's result (logged as the run goes)."""
    name, outcome = r["name"], r["outcome"]
    if outcome == "failed":
        return f"{name}: failed: {r['error']}"
    if outcome == "no audio":
        why = f" ({r['error']})" if r.get("error") else ""
        return f"{name}: no audio{why}"
    d = r.get("decisions", {})
    n = len(r["clips"])
    best = max((c["confidence"] for c in r["clips"]), default=float("nan"))
    text = (f"{name}: {outcome} ({d.get(DECISION_SOURCE, 0)}/{n} clips with a source, "
            f"{d.get(DECISION_SILENT, 0)} silent, max confidence {best:.3f})")
    if "ciou" in r:
        c = r["ciou"]
        text += f"; cIoU {100 * c['mean']:.1f}, cIoU@0.5 {100 * c['cIoU@0.5']:.1f} (n={c['n']})"
    return text


def false_no_source(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How often a sound whose source the ground truth shows on screen is called "no visible
    source": per video (its outcome; videos with at least one such audible clip) and per
    audible clip. None when no video has ground truth in view."""
    videos = [r for r in results if r.get("source_in_view") and r.get("in_view_audible_clips")]
    if not videos:
        return None
    clips = sum(r["in_view_audible_clips"] for r in videos)
    false_clips = sum(r["false_no_source_clips"] for r in videos)
    false_videos = sum(r["outcome"] == "no visible source" for r in videos)
    return {"videos_in_view": len(videos), "false_no_source_videos": false_videos,
            "false_no_source_video_rate": round(false_videos / len(videos), 5),
            "clips_in_view": clips, "false_no_source_clips": false_clips,
            "false_no_source_clip_rate": round(false_clips / clips, 5)}


def format_false_no_source(d: dict[str, Any]) -> str:
    """One line for :func:`false_no_source`'s dict."""
    return (f"false \"no visible source\" with the source in view (ground truth): "
            f"{d['false_no_source_videos']}/{d['videos_in_view']} videos "
            f"({100 * d['false_no_source_video_rate']:.1f} %), "
            f"{d['false_no_source_clips']}/{d['clips_in_view']} clips "
            f"({100 * d['false_no_source_clip_rate']:.1f} %)")


def _safe_name(name: str) -> str:
    """A relative folder name inside the output folder for any item name (an absolute id or
    one with ``..`` must not write outside it)."""
    parts = [p for p in Path(name).parts if p not in ("", ".", "..", "/", "\\")]
    parts = [p for p in parts if not Path(p).anchor]
    return str(Path(*parts)) if parts else "video"


def _unique_dirs(items: list[Item], out: Path) -> list[Path]:
    """The output folder of each item in ``out`` (``_2``, ``_3``, ... for repeated names)."""
    seen: Counter[str] = Counter()
    dirs = []
    for it in items:
        name = _safe_name(it.name)
        seen[name] += 1
        suffix = "" if seen[name] == 1 else f"_{seen[name]}"
        dirs.append(out / f"{name}{suffix}")
    return dirs
