"""Constant-frame-rate resampling by timestamps: output frame ``k`` (time ``k / fps``) shows the
source frame on screen then, the last one whose time is <= ``k / fps``.

Used by the preprocessor's re-encoding and by ``avssl localize``'s decoding: source frames
come in time order; each fills the output frames that start before the next one's time (see
:func:`repeats_until`), and the last one those before its end.
"""

from __future__ import annotations

import math
from fractions import Fraction

Time = float | Fraction


def frames_before(t: Time, fps: Time, tolerance: float = 0.0) -> int:
    """How many output frames start before time ``t``: the count of ``k >= 0`` with
    ``k / fps < t - tolerance``.

    Exact with Fractions (and no tolerance); with floats the count is that of the comparison
    as written (a tolerance keeps an output time equal to ``t`` up to rounding from counting).
    """
    x = t - tolerance if tolerance else t
    if x <= 0:
        return 0
    k = math.ceil(x * fps)
    while k > 0 and (k - 1) / fps >= x:  # float rounding of ``x * fps``
        k -= 1
    while k / fps < x:
        k += 1
    return k


def repeats_until(t: Time, fps: Time, written: int, tolerance: float = 0.0,
                  limit: int | None = None) -> int:
    """How many output frames the source frame on screen until time ``t`` (the next source
    frame's time, or the end of the last one) still fills, with ``written`` output frames
    already out: frames ``written .. frames_before(t) - 1``, at most up to ``limit`` frames
    in all; 0 when they are already written."""
    n = frames_before(t, fps, tolerance)
    if limit is not None:
        n = min(n, limit)
    return max(0, n - written)


__all__ = ["frames_before", "repeats_until"]
