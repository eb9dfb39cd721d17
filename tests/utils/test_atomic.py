"""Atomic writes: all or nothing, no temporary files left, and the usual file mode."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from avssl.utils.atomic import TMP_PREFIX, atomic_open, atomic_write_json, atomic_write_jsonl


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.jsonl"
    atomic_write_jsonl(target, [{"id": "a"}, {"id": "b"}])
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write('{"id": "half')
        raise RuntimeError("killed mid-write")
    assert [json.loads(x)["id"] for x in target.read_text().splitlines()] == ["a", "b"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_file_mode_follows_the_umask(tmp_path: Path, umask: None, mask: int, mode: int) -> None:
    """Like a plain open(): 0666 minus the umask (mkstemp alone would give 0600)."""
    os.umask(mask)
    target = tmp_path / f"results_{mask:o}.json"
    atomic_write_json(target, {"top1": 0.5})
    assert stat.S_IMODE(target.stat().st_mode) == mode
    plain = tmp_path / f"plain_{mask:o}.json"
    plain.write_text("{}")
    assert stat.S_IMODE(plain.stat().st_mode) == mode
