"""What ``avssl localize`` is given: its :class:`Options` and the input videos (a file, a folder
or a manifest) with their ground-truth boxes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avssl.eval.gt import BoxAnnotation, GroundTruthError, find, load_boxes
from avssl.localize.maps import SILENCE_DB

FALLBACK_VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
    ".ts", ".mts", ".m2ts", ".ogv",
})


class LocalizeError(ValueError):
    """Bad input (missing file, unusable checkpoint, bad boxes file): one line, exit code 2."""


@dataclass
class Options:
    """Everything ``avssl localize`` can be told (see
    :func:`avssl.localize.cli.add_arguments` for the meaning)."""

    binarization: str = "top50"
    num_frames: int = 8
    backend: str = "pyav"
    threshold: float | None = None
    calibration_file: str | None = None
    confidence: str = "specificity"
    percentile: float = 95.0
    silence_db: float = SILENCE_DB
    max_seconds: float = 30.0
    short_side: int | None = None
    max_size: int = 480
    min_display: int = 256
    eval_size: int = 224
    alpha: float = 0.5
    batch_size: int = 8
    device: str | None = None
    write_video: bool = True
    audio_stats: str | None = None
    seed: int = 0
    progress: bool = True  # a progress bar over the videos (on a terminal)


@dataclass
class Item:
    """One input video. ``audio_path`` is set for prepared (manifest) rows."""

    name: str
    path: Path
    prepared: bool = False
    audio_path: Path | None = None
    has_audio: bool | None = None
    annotation: BoxAnnotation | None = None


def _video_extensions() -> frozenset[str]:
    try:  # the preprocessor's list, so both commands accept the same files
        from avssl.preprocess.scan import VIDEO_EXTENSIONS

        return frozenset(VIDEO_EXTENSIONS)
    except ImportError:  # pragma: no cover
        return FALLBACK_VIDEO_EXTENSIONS


def _read_boxes(boxes: str | Path | None) -> dict[str, BoxAnnotation]:
    """The ``--boxes`` file's annotations by name (none without one)."""
    if boxes is None:
        return {}
    try:
        return load_boxes(boxes)
    except (GroundTruthError, ValueError) as e:
        raise LocalizeError(f"--boxes: {e}") from None


def collect_inputs(source: str | Path, boxes: str | Path | None = None) -> list[Item]:
    """The videos named by INPUT (file, folder, or manifest.jsonl), with their ground truth."""
    from avssl.data.manifest import ManifestError, make_id, read_manifest, resolve

    src = Path(source)
    annotations = _read_boxes(boxes)
    if not src.exists():
        raise LocalizeError(f"{src}: input not found")
    items: list[Item] = []
    if src.is_file() and src.suffix.lower() == ".jsonl":
        try:
            rows = read_manifest(src)
        except ManifestError as e:
            raise LocalizeError(str(e)) from None
        for row in rows:
            try:
                ann = BoxAnnotation.from_row(row)
            except GroundTruthError as e:
                raise LocalizeError(f"{src}: {e}") from None
            ann = find(annotations, row["id"], row["path"]) or ann
            audio = resolve(src, row.get("audio_path"))
            items.append(Item(row["id"], resolve(src, row["path"]), True, audio,
                              bool(row.get("has_audio")) and audio is not None, ann))
    elif src.is_dir():
        exts = _video_extensions()
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in exts
                       and not any(part.startswith(".") for part in p.relative_to(src).parts))
        if not files:
            raise LocalizeError(f"{src}: no video files found")
        for p in files:
            rel = p.relative_to(src)
            items.append(Item(make_id(rel), p, annotation=find(annotations, rel, p.name)))
    else:
        items.append(Item(make_id(src.name), src, annotation=find(annotations, src.name)))
    return items
