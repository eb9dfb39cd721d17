"""Preprocessing's per-input time limit and its process pool: a hung input becomes a failure,
its worker is replaced and the run goes on; exit code 1 when every input failed; --help
defaults."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from argparse import ArgumentParser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from avfixtures import write_video

from avssl.cli import main
from avssl.preprocess import preprocess
from avssl.preprocess.cli import add_arguments
from avssl.preprocess.pool import Lost, run_tasks
from avssl.preprocess.runner import HANG_ENV

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(),
                                reason="needs Linux /proc")


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def live_workers() -> list[int]:
    """Live spawned children of this process (multiprocessing workers; not its resource
    tracker)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(ppid) == os.getpid() and state != "Z" and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


@contextlib.contextmanager
def fail_after(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds``: a run that ignores the time limit
    fails the test instead of hanging it."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def videos(src: Path, names: list[str]) -> Path:
    for name in names:
        write_video(src / name, num_frames=6, height=32, width=48)
    return src


@pytest.mark.parametrize("workers", [1, 2])
def test_hung_input_times_out_and_the_run_goes_on(tmp_path: Path, workers: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = videos(tmp_path / "src", ["a.mp4", "b_hang.mp4", "c.mp4", "d.mp4"])
    dst = tmp_path / "dst"
    monkeypatch.setenv(HANG_ENV, "b_hang")
    t0 = time.monotonic()
    with fail_after(60):
        summary = preprocess(src, dst, short_side=32, workers=workers, timeout=2, progress=False)
    elapsed = time.monotonic() - t0
    assert 2 <= elapsed < 30  # returns, and did wait for the limit
    assert (summary.ok, summary.failed, summary.processed) == (3, 1, 4)
    assert read_rows(dst / "failures.jsonl") == [
        {"source": "b_hang.mp4", "id": "b_hang", "reason": "timed out after 2 s",
         "error": "Timeout"}]
    assert [r["id"] for r in read_rows(dst / "manifest.jsonl")] == ["a", "c", "d"]
    assert not list(dst.rglob(".tmp-*"))  # the killed worker's half-written outputs are gone
    assert not live_workers()  # the hung worker was killed, the others stopped
    if workers == 1:
        # one worker at a time, in sorted order: c and d ran in the hung one's replacement
        mtime = {p.stem: p.stat().st_mtime_ns for p in (dst / ".records").glob("*.json")}
        assert mtime["a"] <= mtime["b_hang"] <= mtime["c"] <= mtime["d"]
        # a timed-out input counts as done; deleting its record retries it
        monkeypatch.delenv(HANG_ENV)
        assert preprocess(src, dst, short_side=32, timeout=2, progress=False).skipped == 4
        (dst / ".records" / "b_hang.json").unlink()
        summary = preprocess(src, dst, short_side=32, timeout=2, progress=False)
        assert (summary.processed, summary.ok, summary.failed) == (1, 4, 0)


def test_cli_timeout_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    src = videos(tmp_path / "src", ["hang.mp4", "ok.mp4"])
    monkeypatch.setenv(HANG_ENV, "hang")
    with fail_after(60):
        code = main(["preprocess", str(src), str(tmp_path / "dst"), "--short-side", "32",
                     "--timeout", "1.5", "--no-progress"])
    assert code == 0  # some inputs failed, not all
    assert "failed: hang.mp4: timed out after 1.5 s" in capsys.readouterr().out
    code = main(["preprocess", str(src), str(tmp_path / "dst2"), "--timeout", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--timeout must be >= 0" in err


def test_all_inputs_failed_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "broken.mp4").write_bytes(os.urandom(600))
    assert main(["preprocess", str(src), str(dst), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"avssl preprocess: error: all 1 inputs failed; see "
                            f"{dst / 'failures.jsonl'}\n")
    assert "0 videos ok" in captured.out and "failed: broken.mp4" in captured.out
    # a rerun finds the failure record: still nothing usable, still an error
    assert main(["preprocess", str(src), str(dst), "--no-progress"]) == 1
    assert "all 1 inputs failed" in capsys.readouterr().err


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    parser = ArgumentParser()
    add_arguments(parser)
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) == 12
    for action in options:
        assert action.help and "(default: " in action.help, action.option_strings
    with pytest.raises(SystemExit):
        main(["preprocess", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 = no limit (default: 600)" in text and "(default: 16)" in text


# ---------------------------------------------------------------- the pool itself

def _square_unless(x: int) -> int:
    """Run in pool workers: 3 crashes the worker, 4 hangs, 5 raises."""
    if x == 3:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == 4:
        time.sleep(600)
    if x == 5:
        raise ValueError("five is right out")
    return x * x


def test_pool_survives_crash_hang_and_exception() -> None:
    with fail_after(60):
        outcomes = dict(run_tasks(_square_unless, range(9), workers=2, timeout=1.5))
    assert outcomes == {
        **{x: x * x for x in (0, 1, 2, 6, 7, 8)},
        3: Lost("worker died (killed by SIGSEGV)", "WorkerDied"),
        4: Lost("timed out after 1.5 s", "Timeout"),
        5: Lost("five is right out", "ValueError"),
    }
    assert not live_workers()


def test_pool_closed_early_kills_its_workers() -> None:
    results = run_tasks(_square_unless, [2, 4, 4], workers=3, timeout=0)  # 4: no limit, hangs
    assert next(results) == (2, 4)
    assert len(live_workers()) == 3
    results.close()  # what Ctrl-C (KeyboardInterrupt in the consumer) does
    assert not live_workers()
