"""Constant-frame-rate resampling by timestamps (:mod:`avssl.data.frame_rate`)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from avssl.data.frame_rate import frames_before, repeats_until


def _loop_count(t: float, fps: float, tolerance: float) -> int:
    """The count as a loop over output frames compares it (the rule's definition)."""
    k = 0
    while k / fps < t - tolerance:
        k += 1
    return k


def test_frames_before_exact_with_fractions() -> None:
    fps = Fraction(16)
    assert frames_before(Fraction(0), fps) == 0
    assert frames_before(Fraction(-1, 10), fps) == 0
    assert frames_before(Fraction(1, 16), fps) == 1  # frame 1 starts at t: not before
    assert frames_before(Fraction(1, 16) + Fraction(1, 90000), fps) == 2
    assert frames_before(Fraction(3, 2), fps) == 24
    ntsc = Fraction(30000, 1001)
    for pts in range(0, 5000, 7):
        t = Fraction(pts, 90000)
        assert frames_before(t, ntsc) == max(0, math.ceil(t * ntsc))


def test_frames_before_floats_match_the_comparison() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        fps = rng.choice([8.0, 10.0, 16.0, 25.0, 29.97, 30000 / 1001, 60.0])
        src = rng.choice([8.0, 12.5, 24.0, 25.0, 30000 / 1001, 59.94])
        t = rng.randrange(0, 400) / src + rng.choice([0.0, 1e-12, -1e-12, 1e-9, 2e-9])
        for tol in (0.0, 1e-9):
            assert frames_before(t, fps, tol) == _loop_count(t, fps, tol), (t, fps, tol)


def test_repeats_until_holds_each_source_frame() -> None:
    # source at 8 fps read at 16 fps: each source frame fills two output frames
    shown: list[int] = []
    for i in range(1, 13):  # frame i - 1 is on screen until frame i's time
        shown += [i - 1] * repeats_until(i / 8.0, 16.0, len(shown), 1e-9)
    assert shown == [k // 2 for k in range(24)]
    assert repeats_until(1.0, 16.0, written=20) == 0  # already written
    assert repeats_until(1.0, 16.0, written=4, limit=10) == 6
    assert repeats_until(1.0, 16.0, written=12, limit=10) == 0
