"""Manifest I/O: ``manifest.jsonl``, one JSON object per prepared video, sorted by ``id``.

Contract (docs/design.md): ``id`` (stable, from the relative source path), ``path`` (video, relative
to the manifest), ``duration``, ``fps``, ``num_frames``, ``width``, ``height``, ``has_audio``,
``audio_path`` (relative, or null), ``sample_rate``, optional ``label`` and ``split``. Preprocessing
adds ``audio_rms_db``, ``source``, ``video_stream``, ``audio_stream``, ``audio_shift_s``. Extra keys
(for example ``boxes`` of the synthetic dataset) are kept as they are.

Rows are sorted by ``id`` so that a row number means the same video on every machine and run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from avssl.utils.atomic import atomic_write_jsonl
from avssl.utils.jsonl import iter_jsonl

REQUIRED_KEYS = ("id", "path", "duration", "fps", "num_frames", "width", "height", "has_audio",
                 "audio_path", "sample_rate")


class ManifestError(ValueError):
    """A manifest file is missing, unreadable, or has a bad row (message names file and line)."""


def make_id(relpath: str | Path) -> str:
    """Stable id from a path relative to the dataset root: ``a/b c.mp4`` -> ``a/b_c``.

    The extension is dropped and characters outside ``[A-Za-z0-9._/-]`` become ``_``, so the id
    is also a safe relative output path.
    """
    p = Path(relpath).as_posix()
    stem = p[: -len(Path(p).suffix)] if Path(p).suffix else p
    return re.sub(r"[^A-Za-z0-9._/-]", "_", stem)


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a manifest; rows come back sorted by ``id``."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (run `avssl preprocess SRC DST` first)")
    rows: list[dict[str, Any]] = []
    for lineno, row in iter_jsonl(path, ManifestError):
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise ManifestError(f"{path}:{lineno}: row is missing keys {missing}")
        rows.append(row)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ManifestError(f"{path}: duplicate ids {dup}")
    rows.sort(key=lambda r: r["id"])
    return rows


def write_manifest(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows sorted by ``id``, atomically."""
    atomic_write_jsonl(path, sorted(rows, key=lambda r: r["id"]))


def resolve(manifest_path: str | Path, relpath: str | None) -> Path | None:
    """Absolute path of a file named relative to the manifest's folder (None stays None)."""
    if relpath is None:
        return None
    return (Path(manifest_path).parent / relpath).resolve()
