"""Preprocessing: scan -> choose streams -> re-encode video, extract aligned audio -> manifest,
in parallel, resumable, with a failure report. Entry points: ``preprocess``, ``merge``."""

from avssl.preprocess.encode import ConversionError, EncodeSettings, convert
from avssl.preprocess.runner import Summary, merge, preprocess
from avssl.preprocess.scan import PreprocessError, scan_videos

__all__ = ["ConversionError", "EncodeSettings", "PreprocessError", "Summary", "convert", "merge",
           "preprocess", "scan_videos"]
