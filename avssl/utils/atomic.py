"""Atomic writes: write to a temporary file beside the target, fsync, then rename.

A crash (even ``kill -9``) leaves either the old file or the new one, never half of one.
Temporary names start with ``.tmp-`` so scanners can ignore them.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` alone
    can only be read by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    ``suffix`` defaults to the target's suffix, so writers that pick a format from the file
    name (PyAV, soundfile, torch) still work. On an exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.stem + "-", suffix=suffix or path.suffix,
                               dir=path.parent)
    # mkstemp makes the file 0600; give it the mode a plain open() would (0666 minus the
    # umask), so datasets, checkpoints and results stay readable by the rest of a team
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[BinaryIO | Any]:
    """Open a temporary file for writing (text ``"w"`` or binary ``"wb"``); rename on close."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    with atomic_open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through a temporary file (checkpoints must never be half-written)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
