"""Run logging: the loss plot of a short run, progress lines for log files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from avssl.engine.logging import StepReporter, format_duration, plot_losses


def _coloured_pixels(png: Path) -> int:
    """Pixels of matplotlib's first line colour (C0, #1f77b4) in the left 60 % of ``png``
    (the plot area; the legend sits to the right of it)."""
    import matplotlib.image

    img = matplotlib.image.imread(png)[..., :3]
    img = img[:, : int(img.shape[1] * 0.6)]
    c0 = np.array([0x1F, 0x77, 0xB4]) / 255
    return int((np.abs(img - c0).max(-1) < 0.08).sum())


def test_loss_plot_of_a_two_step_run_is_not_blank(tmp_path: Path) -> None:
    rows = [{"kind": "train", "step": s, "time": 0.0, "loss": 5.0 - s} for s in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = plot_losses(tmp_path)
    assert png is not None and png.is_file()
    assert _coloured_pixels(png) > 20  # markers are drawn, not only a 2-point hairline


def test_loss_plot_of_a_one_step_run_is_not_blank(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "step": 1, "time": 0.0, "loss": 4.0}) + "\n")
    png = plot_losses(tmp_path)
    assert png is not None and _coloured_pixels(png) > 10


def test_step_reporter_lines() -> None:
    out = io.StringIO()
    rep = StepReporter(total_steps=3, start_step=0, every_s=3600, stream=out)
    for step in (1, 2, 3):
        rep.step(step, 0, 1.5, 10.0)
    lines = out.getvalue().splitlines()
    # the first step and the last always print; the middle one is within the interval
    assert [ln.split()[1] for ln in lines] == ["1/3", "3/3"]
    assert lines[-1].endswith("ETA 0:00:00")
    silent = io.StringIO()
    StepReporter(3, 0, enabled=False, stream=silent).step(1, 0, 1.0, 1.0)
    assert silent.getvalue() == ""


def test_format_duration() -> None:
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"
