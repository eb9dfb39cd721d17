"""``avssl localize INPUT --checkpoint CKPT --out DIR``: where is the sound in these videos?

INPUT is a video file, a folder (searched recursively for video files) or a prepared
``manifest.jsonl`` (video + audio file per row; rows with ``boxes`` carry ground truth).

Per video, the first ``--max-seconds`` are cut into consecutive clips of the model's geometry
(``data.video.num_frames`` frames at ``data.video.fps``), each paired with the audio window of the
model (``data.audio.duration`` s, mono, ``data.audio.sample_rate``) centred on the clip. Frames
are taken by timestamp (the frame on screen at ``k / fps``), so any source frame rate works; the
whole frame is used (short side resized to ``--short-side``, default ``data.video.resize``,
aspect kept), so the map covers the whole picture. For each clip: the cosine map
(:mod:`avssl.localize.maps`), its confidence, the peak, and a decision: "source",
"no visible source" (confidence below the threshold) or "silent audio" (RMS below
``--silence-db``).

The confidence (default ``specificity``, see :mod:`avssl.localize.maps`) compares each clip's
map with the maps of the same frames under other videos' sounds, so it needs 2+ videos with
audio (at least ``MIN_NULL`` audible windows in the others); a single video falls back to the
map-only ``contrast``. The threshold is calibrated on the run's own videos when it can (see
:func:`avssl.localize.maps.calibrate_threshold`), else ``--threshold``, ``--calibration FILE``
(``summary.json`` of an earlier run) or the uncalibrated default, and is stored in every JSON.

Outputs in ``DIR/<name>/``: ``frame_XX.png`` (``--num-frames`` evenly spaced overlays),
``contact_sheet.png``, ``overlay.mp4`` (every localized frame at the model's fps, with the
audio), ``result.json``; ``DIR/summary.json`` holds the counts per outcome, the calibration and,
with ground truth (manifest ``boxes`` or ``--boxes FILE``: Flickr XML, VGG-SS JSON, our
JSON/JSONL), cIoU@0.5 / AUC with the binarization's name beside the whole-image, centre, random
and motion (frame-difference) baselines, and how often a clip or video whose source the ground
truth shows on screen was called "no visible source" (``source_decision``). Outcomes per video:
"localized" (a source in at least one clip), "no visible source", "silent audio", "no audio" (no
usable audio stream: no heatmap) and "failed" (unreadable file: the run goes on). Exit code 0
when at least one video was processed, 1 when every video failed, 2 for bad input (one line on
stderr).

This module is the command line and the run's orchestration; the parts live in
:mod:`~avssl.localize.inputs` (options, input videos), :mod:`~avssl.localize.timeline`
(decoding), :mod:`~avssl.localize.localizer` (model, embeddings),
:mod:`~avssl.localize.calibration` (threshold) and :mod:`~avssl.localize.render` (per-video
outputs, summaries).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avssl.eval.localization import BINARIZATIONS, evaluate_with_baselines, format_table
from avssl.localize.calibration import (
    MISMATCHED_PER_CLIP,
    mismatched_confidences,
    read_calibration,
    resolve_calibration,
    specificity_confidences,
)
from avssl.localize.inputs import (
    FALLBACK_VIDEO_EXTENSIONS,
    Item,
    LocalizeError,
    Options,
    collect_inputs,
)
from avssl.localize.localizer import Localizer, Work, load_model
from avssl.localize.maps import CONFIDENCE_KINDS
from avssl.localize.render import (
    _cleanup,
    _summary_line,
    _unique_dirs,
    false_no_source,
    finish_video,
    format_false_no_source,
)
from avssl.localize.timeline import (
    Decoded,
    DecodeError,
    _describe,
    decode_prepared,
    decode_raw,
    display_size,
)

OUTCOMES = ("localized", "no visible source", "silent audio", "no audio", "failed")


def localize(source: str | Path, checkpoint: str | Path, out: str | Path,
             boxes: str | Path | None = None, opts: Options | None = None,
             log: Any = print) -> dict[str, Any]:
    """Run the whole command; returns the summary (also written to ``out/summary.json``).

    Raises :class:`LocalizeError` for bad input; per-video problems become entries.
    """
    from avssl.utils.atomic import atomic_write_json

    opts = opts or Options()
    if opts.binarization not in BINARIZATIONS:
        raise LocalizeError(f"--binarization must be one of {list(BINARIZATIONS)}")
    if opts.confidence not in CONFIDENCE_KINDS:
        raise LocalizeError(f"--confidence must be one of {list(CONFIDENCE_KINDS)}")
    if opts.num_frames < 1 or opts.max_seconds <= 0 or opts.eval_size < 8:
        raise LocalizeError("--num-frames must be >= 1, --max-seconds > 0, --eval-size >= 8")
    if opts.calibration_file is not None and opts.threshold is None:
        # fail early; the kind is checked once known (specificity may fall back to contrast)
        read_calibration(opts.calibration_file, None)
    items = collect_inputs(source, boxes)
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoders, cfg = load_model(checkpoint, device, opts.audio_stats)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loc = Localizer(encoders, cfg, opts, device)
    t0 = time.perf_counter()
    works = []
    try:
        from tqdm import tqdm

        for item, d in tqdm(list(zip(items, _unique_dirs(items, out))), desc="localize",
                            unit="video", leave=False, disable=None if opts.progress else True):
            works.append(loc.process(item, d))
        cal = resolve_calibration(works, opts)
        text = f"confidence threshold {cal.threshold:.4f} ({cal.kind}, {cal.source}"
        if cal.source == "calibrated":
            text += (f": {cal.percentile:g}th percentile of {cal.n_mismatched} mismatched pairs; "
                     f"{100 * (cal.matched_above or 0):.0f}% of matched clips above, "
                     f"AUROC {cal.auroc:.2f}")
        log(text + (f"; {cal.note}" if cal.source == "default" else "") + ")")
        samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        results = []
        for w in works:
            try:
                r = finish_video(w, loc, cal, opts, samples)
            except Exception as e:  # a rendering/encoding problem must not stop the run
                r = {"input": str(w.item.path), "name": w.item.name, "outcome": "failed",
                     "error": f"writing outputs failed: {_describe(e)}", "clips": []}
            results.append(r)
            log(_summary_line(r))
    finally:
        for w in works:
            _cleanup(w)
    counts = Counter(r["outcome"] for r in results)
    summary: dict[str, Any] = {
        "input": str(source), "checkpoint": str(checkpoint),
        "counts": {k: counts.get(k, 0) for k in OUTCOMES},
        "calibration": cal.to_dict(), "binarization": opts.binarization,
        "videos_with_ground_truth": sum(it.annotation is not None for it in items),
        "seconds": round(time.perf_counter() - t0, 2),
        "videos": [{"name": r["name"], "outcome": r["outcome"], "error": r.get("error"),
                    "dir": str(d.relative_to(out))}
                   for r, d in zip(results, _unique_dirs(items, out))],
        "localization": None,
    }
    if samples:
        pred, gt, motion = (np.stack(x) for x in zip(*samples))
        table = evaluate_with_baselines(pred, gt, opts.binarization, seed=opts.seed,
                                        extra={"motion": motion})
        summary["localization"] = table
        log(format_table(table))
    summary["source_decision"] = false_no_source(results)
    if summary["source_decision"] is not None:
        log(format_false_no_source(summary["source_decision"]))
    atomic_write_json(out / "summary.json", summary)
    log("summary: " + ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v)
        + f" ({len(results)} videos, {summary['seconds']:.1f} s) -> {out}")
    return summary


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``avssl localize``."""
    d = Options()
    parser.add_argument("input", help="a video file, a folder of videos, or a manifest.jsonl")
    parser.add_argument("--checkpoint", required=True, help="avssl checkpoint (.pt) (required)")
    parser.add_argument("--out", required=True, help="output folder (required)")
    parser.add_argument("--boxes", help="ground truth: folder of Flickr XML, VGG-SS JSON list, "
                                        "our JSON {name: {fps, xyxy}} or a meta/manifest JSONL "
                                        "(default: the manifest's boxes, else none)")
    parser.add_argument("--binarization", default=d.binarization, choices=BINARIZATIONS,
                        help="how maps become masks for cIoU (default %(default)s)")
    parser.add_argument("--num-frames", type=int, default=d.num_frames,
                        help="overlay PNGs per video, evenly spaced (default %(default)s)")
    parser.add_argument("--backend", default=d.backend, choices=("pyav", "decord"),
                        help="decoder of prepared (manifest) videos; raw files always use PyAV "
                             "(default %(default)s)")
    parser.add_argument("--threshold", type=float, help="fixed confidence threshold, skips "
                                                        "calibration (default: calibrated on "
                                                        "the run's videos)")
    parser.add_argument("--calibration", dest="calibration_file",
                        help="reuse the threshold of an earlier run's summary.json (default: "
                             "calibrate on the run's videos)")
    parser.add_argument("--confidence", default=d.confidence, choices=CONFIDENCE_KINDS,
                        help="map confidence measure (default %(default)s)")
    parser.add_argument("--percentile", type=float, default=d.percentile,
                        help="percentile of mismatched-audio confidences used as threshold "
                             "(default %(default)s)")
    parser.add_argument("--silence-db", type=float, default=d.silence_db,
                        help="audio windows below this RMS level (dBFS) are silent "
                             "(default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=d.max_seconds,
                        help="localize only the first N seconds of each video "
                             "(default %(default)s)")
    parser.add_argument("--short-side", type=int, help="model input short side in pixels "
                                                       "(default: the model's data.video.resize)")
    parser.add_argument("--max-size", type=int, default=d.max_size,
                        help="long side of the overlay frames (default %(default)s)")
    parser.add_argument("--min-display", type=int, default=d.min_display,
                        help="short side of the overlay frames at least (upscaled for viewing; "
                             "default %(default)s)")
    parser.add_argument("--eval-size", type=int, default=d.eval_size,
                        help="ground-truth grid for cIoU (default %(default)s)")
    parser.add_argument("--alpha", type=float, default=d.alpha,
                        help="heatmap opacity (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="clips per forward pass (default %(default)s)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--audio-stats", help="per-bin audio statistics (.npz) when the "
                                              "checkpoint's path does not exist here (default: "
                                              "the checkpoint's data.audio.stats)")
    parser.add_argument("--no-video", dest="write_video", action="store_false",
                        help="do not write overlay.mp4 (default: written)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of the mismatched-audio sampling and the random-box "
                             "baseline (default %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar (default: a bar on a terminal)")


def run(args: argparse.Namespace) -> int:
    """Run ``avssl localize``; bad input prints one line and returns 2."""
    fields = Options.__dataclass_fields__
    opts = Options(**{k: getattr(args, k) for k in fields if hasattr(args, k)})
    try:
        summary = localize(args.input, args.checkpoint, args.out, args.boxes, opts)
    except LocalizeError as e:
        print(f"avssl localize: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    counts = summary["counts"]
    return 1 if counts["failed"] == sum(counts.values()) else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m avssl.localize.cli ...``: parse ``argv`` and :func:`run`."""
    parser = argparse.ArgumentParser(prog="avssl localize", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


# The command's own names, and those of its parts that other code and earlier scripts import
# from here (``avssl.localize.cli.Options`` and so on).
__all__ = [
    "FALLBACK_VIDEO_EXTENSIONS", "MISMATCHED_PER_CLIP", "OUTCOMES", "DecodeError", "Decoded",
    "Item", "LocalizeError", "Localizer", "Options", "Work", "add_arguments", "collect_inputs",
    "decode_prepared", "decode_raw", "display_size", "false_no_source", "finish_video",
    "format_false_no_source", "load_model", "localize", "main", "mismatched_confidences",
    "read_calibration", "resolve_calibration", "run", "specificity_confidences",
]


if __name__ == "__main__":
    sys.exit(main())
