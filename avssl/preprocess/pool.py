"""A small process pool with a time limit per task: a hung task's worker is killed and replaced.

``multiprocessing.Pool`` and ``concurrent.futures`` cannot kill one worker: a decode that hangs
in C code (PyAV frame threading did, on a corrupt file) would hold its worker for the rest of a
run, and a worker that dies (segfault, OOM killer) loses its task or breaks the whole pool.
Here every worker is a spawned ``Process`` fed through its own pipe, so the parent knows which
task each one runs and since when, and can kill just that one.

Workers ignore Ctrl-C (the parent stops them) and die with the parent, even after ``kill -9``
(Linux ``PR_SET_PDEATHSIG``): an orphan would otherwise finish its task after the run is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_READY = "ready"  # a worker's first message: imports done, the task's clock may start
_STOP_GRACE_S = 2.0  # how long idle workers get to exit at the end before being killed


@dataclass(frozen=True)
class Lost:
    """The outcome of a task that produced no result: ``reason`` one readable line, ``error`` a
    short name (``Timeout``, ``WorkerDied``, or the type of an exception ``fn`` raised)."""

    reason: str
    error: str


class WorkerStartError(RuntimeError):
    """A worker exited before it was ready: the pool cannot run anything."""


def _die_with_parent(parent: int) -> None:
    """Ignore Ctrl-C (the parent stops the workers) and get SIGKILL when the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(conn: Connection, parent: int, fn: Callable[[Any], Any]) -> None:
    """A worker's loop: receive a task, send ``("ok", result)`` or ``("error", (type, text))``;
    ``None`` or a closed pipe ends it."""
    _die_with_parent(parent)
    conn.send(_READY)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            message: tuple[str, Any] = ("ok", fn(task))
        except Exception as e:  # reported as this task's outcome; the worker goes on
            message = ("error", (type(e).__name__, " ".join(str(e).split()) or type(e).__name__))
        conn.send(message)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class _Worker(Generic[T]):
    """One process, its end of the pipe, and the task it runs (with its deadline)."""

    def __init__(self, ctx: Any, fn: Callable[[T], Any]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc: BaseProcess = ctx.Process(target=_worker_main, args=(child, os.getpid(), fn),
                                             daemon=True, name="avssl-preprocess-worker")
        self.proc.start()
        child.close()  # the parent must not hold the child's end: a dead child then reads as EOF
        self.ready = False
        self.task: T | None = None
        self.deadline = float("inf")
        self.exitcode: int | None = None

    def send(self, task: T, timeout: float) -> None:
        self.conn.send(task)
        self.task = task
        self.deadline = time.monotonic() + timeout if timeout > 0 else float("inf")

    def take(self) -> T:
        """The task just finished or lost; the worker is idle again."""
        task, self.task, self.deadline = self.task, None, float("inf")
        assert task is not None
        return task

    def kill(self) -> None:
        """Kill (if still running), reap and release the process; keeps its exit code."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.exitcode = self.proc.exitcode
        self.proc.close()
        self.conn.close()


def run_tasks(fn: Callable[[T], R], tasks: Iterable[T], workers: int,
              timeout: float) -> Iterator[tuple[T, R | Lost]]:
    """Run ``fn`` on each task in ``workers`` spawned processes; yield ``(task, outcome)`` in
    the order they finish. ``fn`` must be a picklable module-level function.

    A task that runs longer than ``timeout`` seconds (0: no limit) has its worker killed and
    yields ``Lost("timed out after T s", "Timeout")``; a worker that dies yields
    ``Lost("worker died (...)", "WorkerDied")``; an exception raised by ``fn`` yields
    ``Lost(message, type name)``. A fresh worker replaces a killed or dead one while tasks
    remain. Closing the iterator (or an exception, Ctrl-C) kills all workers. The clock of a
    task starts when a ready worker receives it, so worker start-up never counts.
    """
    # spawn: no inherited threads/locks (torch, tqdm) in the children
    ctx = mp.get_context("spawn")
    pending = deque(tasks)
    pool: list[_Worker[T]] = []
    finished = False
    try:
        for _ in range(min(workers, len(pending))):
            pool.append(_Worker(ctx, fn))
        while pending or any(w.task is not None for w in pool):
            for w in pool:
                if w.ready and w.task is None and pending:
                    w.send(pending.popleft(), timeout)
            wait_s = min(w.deadline for w in pool) - time.monotonic()
            handles = [h for w in pool for h in (w.conn, w.proc.sentinel)]
            signalled = set(wait(handles, None if math.isinf(wait_s) else max(0.0, wait_s)))
            for w in list(pool):
                outcome: R | Lost | None = None
                gone = w.proc.sentinel in signalled
                eof = False
                if w.conn in signalled:
                    try:
                        message = w.conn.recv()
                    except (EOFError, OSError):  # the worker died (its pipe end closed)
                        gone = eof = True
                    else:
                        if message == _READY:
                            w.ready = True
                        else:
                            kind, value = message
                            outcome = value if kind == "ok" else Lost(value[1], value[0])
                            yield w.take(), outcome
                            continue
                if gone and not eof and w.conn.poll():
                    continue  # a message sent just before it died: read it first, next round
                if gone:
                    w.kill()
                    if not w.ready:
                        raise WorkerStartError("a preprocess worker exited while starting "
                                               f"({_exit_text(w.exitcode)})")
                    if w.task is not None:
                        outcome = Lost(f"worker died ({_exit_text(w.exitcode)})", "WorkerDied")
                elif w.task is not None and time.monotonic() >= w.deadline and not w.conn.poll():
                    w.kill()  # a hung decode may hold locks and threads: only a kill is safe
                    outcome = Lost(f"timed out after {timeout:g} s", "Timeout")
                else:
                    continue
                pool.remove(w)
                if pending:
                    pool.append(_Worker(ctx, fn))
                if outcome is not None:
                    yield w.take(), outcome
        finished = True
    finally:
        _shutdown(pool, graceful=finished)


def _shutdown(pool: list[_Worker[Any]], graceful: bool) -> None:
    """Stop all workers: after a normal end idle ones are asked to exit; the rest are killed."""
    if graceful:
        for w in pool:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        deadline = time.monotonic() + _STOP_GRACE_S
        for w in pool:
            w.proc.join(max(0.0, deadline - time.monotonic()))
    for w in pool:
        w.kill()
