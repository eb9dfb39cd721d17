"""Shared helpers of the benchmarks: synthetic prepared datasets and timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from avssl.data.manifest import write_manifest
from avssl.data.writer import write_av


def _frames(n: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """Camera-like content: a drifting smooth background, moving blocks, mild sensor noise
    (pure noise would make H.264 decoding unrealistically slow, flat frames too fast)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    out = []
    for k in range(n):
        bg = np.stack([96 + 60 * np.sin(xx / 23 + k / 9 + phase[c]) * np.cos(yy / 31 - k / 13)
                       for c in range(3)], -1)
        for j in range(3):
            y0 = int((height - 32) * (0.5 + 0.45 * np.sin(k / (7 + j) + j)))
            x0 = int((width - 32) * (0.5 + 0.45 * np.cos(k / (11 + j) + 2 * j)))
            bg[y0:y0 + 32, x0:x0 + 32] = (40 + 80 * j, 200 - 60 * j, 120)
        bg += rng.normal(0, 6, bg.shape).astype(np.float32)
        out.append(np.clip(bg, 0, 255).astype(np.uint8))
    return out


def make_prepared_dataset(root: Path, num_videos: int = 16, seconds: float = 10.0,
                          fps: float = 16.0, height: int = 128, width: int = 170,
                          gop: int = 16, sample_rate: int = 24000) -> Path:
    """Write ``videos/<id>.mp4`` (H.264, no audio), ``audio/<id>.wav`` (16-bit mono) and
    ``manifest.jsonl`` as ``avssl preprocess`` does; returns the manifest path."""
    rows = []
    n = round(seconds * fps)
    rng = np.random.default_rng(0)
    for i in range(num_videos):
        vid = f"clip{i:03d}"
        write_av(root / "videos" / f"{vid}.mp4", _frames(n, height, width, i), fps, gop=gop)
        t = np.arange(round(seconds * sample_rate)) / sample_rate
        wave = 0.2 * np.sin(2 * np.pi * (220 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)
        (root / "audio").mkdir(parents=True, exist_ok=True)
        sf.write(root / "audio" / f"{vid}.wav", wave.astype(np.float32), sample_rate,
                 subtype="PCM_16")
        rows.append({"id": vid, "path": f"videos/{vid}.mp4", "duration": n / fps, "fps": fps,
                     "num_frames": n, "width": width, "height": height, "has_audio": True,
                     "audio_path": f"audio/{vid}.wav", "sample_rate": sample_rate,
                     "audio_rms_db": -14.0, "split": "train"})
    manifest = root / "manifest.jsonl"
    write_manifest(manifest, rows)
    return manifest


def rate(fn: Callable[[int], object], items: range, repeats: int = 3) -> tuple[float, float]:
    """Best items/s of ``repeats`` passes of ``fn(i)`` over ``items``, by process CPU time and
    by wall time. CPU time (all threads of this process) is what a worker with a core of its
    own gets, and is much less disturbed by other jobs on a shared machine; best of repeats for
    the same reason."""
    best_cpu = best_wall = 0.0
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        for i in items:
            fn(i)
        c1, w1 = time.process_time(), time.perf_counter()
        best_cpu = max(best_cpu, len(items) / max(c1 - c0, 1e-9))
        best_wall = max(best_wall, len(items) / (w1 - w0))
    return best_cpu, best_wall
