"""Sound-source localization: maps from a trained model, the visible-source decision, and the
``avssl localize`` command (:mod:`avssl.localize.cli`)."""

from avssl.localize.maps import (
    Calibration,
    calibrate_threshold,
    decide,
    localization_maps,
    rms_dbfs,
    source_confidence,
    upsample,
)

__all__ = ["Calibration", "calibrate_threshold", "decide", "localization_maps", "rms_dbfs",
           "source_confidence", "upsample"]
