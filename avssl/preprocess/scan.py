"""Find the input videos, read the optional meta file, and parse ``--shard K/N``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from avssl.utils.atomic import TMP_PREFIX

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".mpe", ".m2v", ".flv",
    ".wmv", ".asf", ".3gp", ".3g2", ".ts", ".mts", ".m2ts", ".ogv", ".vob", ".mxf", ".dv",
})

# Keys the preprocessor computes; a meta file may not overwrite them.
RESERVED_KEYS = frozenset({
    "id", "path", "duration", "fps", "num_frames", "width", "height", "has_audio", "audio_path",
    "sample_rate", "audio_rms_db", "source", "video_stream", "audio_stream", "audio_shift_s",
    "audio_error",
})


class PreprocessError(ValueError):
    """Bad input to the preprocessor (missing SRC, bad --shard, bad meta file, ...): one line."""


def scan_videos(src: str | Path, exclude: str | Path | None = None) -> list[str]:
    """Relative POSIX paths of the video files under ``src``, sorted.

    Extensions match case-insensitively; hidden files and folders (including ``.tmp-*``) are
    skipped, and so is ``exclude`` (the output folder when it lies inside ``src``).
    """
    root = Path(src)
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames
                       if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)]
        for name in filenames:
            hidden = name.startswith((".", TMP_PREFIX))
            if hidden or Path(name).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            found.append((here / name).relative_to(root).as_posix())
    return sorted(found)


def normalize_relpath(path: str) -> str:
    """``./a\\b.mp4`` -> ``a/b.mp4`` (meta files written on Windows or with a leading ``./``)."""
    p = Path(path.replace("\\", "/")).as_posix()
    return p[2:] if p.startswith("./") else p


def load_meta(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a meta JSON-lines file: ``{"path": <relative to SRC>, ...other keys}`` per line.

    Returns ``{relative path: other keys}``. Bad JSON, a missing or duplicate ``path`` and
    reserved keys (the ones the preprocessor computes, e.g. ``fps``) raise PreprocessError
    naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise PreprocessError(f"meta file not found: {path}")
    meta: dict[str, dict[str, Any]] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PreprocessError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("path"), str):
                raise PreprocessError(f"{where}: each line needs a string 'path'")
            rel = normalize_relpath(row.pop("path"))
            bad = sorted(RESERVED_KEYS.intersection(row))
            if bad:
                raise PreprocessError(f"{where}: keys {bad} are computed by the preprocessor")
            if rel in meta:
                raise PreprocessError(f"{where}: duplicate path {rel!r}")
            meta[rel] = row
    return meta


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"K/N"`` (0 <= K < N) -> ``(K, N)``; None stays None."""
    if text is None:
        return None
    if isinstance(text, tuple):
        k, n = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m:
            raise PreprocessError(f"--shard must look like K/N (e.g. 0/4), got {text!r}")
        k, n = int(m.group(1)), int(m.group(2))
    if not 0 <= k < n:
        raise PreprocessError(f"--shard K/N needs 0 <= K < N, got {k}/{n}")
    return k, n
