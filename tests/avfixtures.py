"""Helpers for the tests: prepared datasets whose content encodes time, and the smallest
encoder config (:data:`TINY_MODEL`) the localization and demo tests load checkpoints of.

Video frame ``k`` carries ``k`` as 10 bits in black/white 16x16 blocks along its top edge (robust
to H.264), so a test can tell which frame it got. Audio sample ``n`` has the exact 16-bit value
``(n % 65536) - 32768``, so a window's first sample tells where it starts, to the sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from avssl.data.manifest import write_manifest
from avssl.data.writer import write_av

BITS = 10
BLOCK = 16

#: a 4-wide R(2+1)D-10 and audio CNN with an 8-d head, 4 frames at 32 px, 1 s of 16 kHz audio
TINY_MODEL: dict[str, Any] = {
    "model": {"video": {"arch": "r2plus1d", "depth": 10, "width": 4},
              "audio": {"arch": "audio_cnn", "depth": 10, "width": 4},
              "head": {"hidden": [16], "out_dim": 8}},
    "data": {"video": {"num_frames": 4, "crop_size": 32, "resize": 32},
             "audio": {"sample_rate": 16000, "feature": "logmel", "n_fft": 512,
                       "hop_length": 160, "n_mels": 32, "num_frames": 100, "duration": 1.0}},
    "method": {"num_negatives": 4},
}


def coded_frame(k: int, height: int = 64, width: int = 160, grey: int = 96) -> np.ndarray:
    """uint8 (H, W, 3) frame showing the number ``k`` in binary blocks on its top edge."""
    img = np.full((height, width, 3), grey, np.uint8)
    for b in range(BITS):
        img[:BLOCK, b * BLOCK:(b + 1) * BLOCK] = 255 if (k >> b) & 1 else 0
    return img


def read_code(img: np.ndarray) -> int:
    """The frame number shown by :func:`coded_frame` (img uint8 (H, W, 3))."""
    bits = [img[2:BLOCK - 2, b * BLOCK + 2:(b + 1) * BLOCK - 2].mean() > 128 for b in range(BITS)]
    return sum(int(v) << b for b, v in enumerate(bits))


def coded_audio(num_samples: int) -> np.ndarray:
    """int16 (S,) with sample n = (n % 65536) - 32768."""
    return ((np.arange(num_samples) % 65536) - 32768).astype(np.int16)


def audio_position(first_value: float) -> int:
    """Sample index modulo 65536 from a float32 value read from :func:`coded_audio`."""
    return round(float(first_value) * 32768) + 32768


def write_video(path: Path, num_frames: int, fps: float = 16.0, height: int = 64,
                width: int = 160, gop: int = 16, grey: int = 96) -> Path:
    frames = (coded_frame(k, height, width, grey) for k in range(num_frames))
    return write_av(path, frames, fps, gop=gop)


def make_prepared(root: Path, specs: list[dict[str, Any]], fps: float = 16.0, sr: int = 24000,
                  height: int = 64, width: int = 160) -> Path:
    """Write a prepared dataset under ``root`` and return its manifest path.

    Each spec: ``id``, ``seconds``; optional ``audio`` (default True), ``label``, ``split``,
    ``grey`` (background level, to tell videos apart), ``corrupt`` (garbage bytes instead of
    a video).
    """
    rows = []
    for spec in specs:
        vid, secs = spec["id"], float(spec["seconds"])
        n = round(secs * fps)
        vpath = root / "videos" / f"{vid}.mp4"
        if spec.get("corrupt"):
            vpath.parent.mkdir(parents=True, exist_ok=True)
            vpath.write_bytes(b"not a video" * 100)
        else:
            write_video(vpath, n, fps, height, width, grey=spec.get("grey", 96))
        has_audio = spec.get("audio", True)
        apath = None
        if has_audio:
            apath = f"audio/{vid}.wav"
            (root / "audio").mkdir(parents=True, exist_ok=True)
            sf.write(root / apath, coded_audio(round(secs * sr)), sr, subtype="PCM_16")
        row = {"id": vid, "path": f"videos/{vid}.mp4", "duration": n / fps, "fps": fps,
               "num_frames": n, "width": width, "height": height, "has_audio": has_audio,
               "audio_path": apath, "sample_rate": sr if has_audio else None,
               "audio_rms_db": -10.0 if has_audio else None}
        for key in ("label", "split"):
            if key in spec:
                row[key] = spec[key]
        rows.append(row)
    manifest = root / "manifest.jsonl"
    write_manifest(manifest, rows)
    return manifest
