"""Run logging: ``metrics.jsonl``, TensorBoard scalars and a loss-curve PNG (main rank only)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from avssl.utils.atomic import atomic_path


class RunLogger:
    """Appends one JSON line per logged step to ``run_dir/metrics.jsonl`` and mirrors the
    scalars to TensorBoard under ``run_dir/tb``. Inactive (no files) when ``enabled`` is False.
    ``append=False`` (a run starting from scratch) empties an existing metrics.jsonl first.
    """

    def __init__(self, run_dir: Path, enabled: bool = True, append: bool = True) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
            self._file = open(self.run_dir / "metrics.jsonl",  # noqa: SIM115
                              "a" if append else "w")

    def log(self, step: int, values: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        row = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        assert self._tb is not None
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            assert self._tb is not None
            self._tb.close()


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1:02:05"``; ``"?"`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class StepReporter:
    """Progress for logs that are not a terminal: a plain line at the first step, then at most
    one every ``every_s`` seconds, and at the last step: step/total, epoch, loss, clips/s, ETA.

    The ETA extrapolates the mean time per step of this process (from ``start_step``, so a
    resumed run does not count the steps it did not do).
    """

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True,
                 every_s: float = 30.0, stream: TextIO | None = None) -> None:
        self.total, self.start, self.enabled, self.every_s = total_steps, start_step, enabled, \
            every_s
        self.stream = stream
        self.t0 = time.perf_counter()
        self.last_print = -math.inf

    def eta_seconds(self, step: int) -> float:
        done = step - self.start
        if done <= 0:
            return math.nan
        return (time.perf_counter() - self.t0) / done * max(self.total - step, 0)

    def eta(self, step: int) -> str:
        return format_duration(self.eta_seconds(step))

    def step(self, step: int, epoch: int, loss: float, clips_per_s: float) -> None:
        now = time.perf_counter()
        last = step >= self.total
        if not self.enabled or (now - self.last_print < self.every_s and not last
                                and step != self.start + 1):
            return
        self.last_print = now
        width = len(str(self.total))
        print(f"step {step:>{width}}/{self.total} (epoch {epoch + 1}) loss {loss:.4f} "
              f"{clips_per_s:.1f} clips/s elapsed {format_duration(now - self.t0)} "
              f"ETA {self.eta(step)}", file=self.stream or sys.stdout, flush=True)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a step logged twice (a resumed run) keeps its last value."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows[(r["kind"], r["step"])] = r
    return sorted(rows.values(), key=lambda r: (r["kind"], r["step"]))


def plot_losses(run_dir: Path) -> Path | None:
    """``plots/loss.png``: every ``loss*`` series of the training rows against the step."""
    metrics = Path(run_dir) / "metrics.jsonl"
    if not metrics.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics) if r["kind"] == "train"]
    keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if k in r]
        # markers when there are few points: a 1-point line is invisible
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, lw=2 if k == "loss" else 1,
                marker="o" if len(pts) < 30 else None, ms=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(Path(run_dir).name)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over
    ax.grid(alpha=0.3)
    out = Path(run_dir) / "plots" / "loss.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
