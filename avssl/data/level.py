"""Audio level in dBFS: one definition for the manifest's ``audio_rms_db`` (preprocessing) and
the "silent audio" decision (localization)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: the level of digital silence (and of no samples at all)
RMS_FLOOR_DB = -120.0


def rms_dbfs(wave: Any) -> float:
    """RMS level of float samples (full scale 1.0) in dBFS, floored at -120 (digital silence).

    wave: any array-like of samples (numpy array, tensor on the CPU), flattened.
    """
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return RMS_FLOOR_DB
    ms = float(np.mean(np.square(x)))
    return max(RMS_FLOOR_DB, 10.0 * math.log10(ms)) if ms > 0 else RMS_FLOOR_DB
