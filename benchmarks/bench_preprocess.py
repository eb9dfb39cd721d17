"""Preprocessing throughput: seconds of source video converted per second of wall time, per worker.

Generates a few synthetic 640x360 @ 30 fps MP4 clips with stereo 44.1 kHz AAC audio (smooth
moving content, like real footage rather than codec-hostile noise), then runs the preprocessor
with its defaults (16 fps, short side 256, 24 kHz wav) and one worker. Prints one line per
setting and a final ``preprocess: X.XX s video / s wall / worker`` line. About 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from avssl.data.writer import write_av
from avssl.preprocess import preprocess


def synthetic_clip(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (360, 640),
                   seed: int = 0) -> None:
    """A clip with a drifting colour gradient, a moving square, and a tone plus noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(round(seconds * fps)):
        img = np.empty((h, w, 3), np.uint8)
        img[..., 0] = (128 + 100 * np.sin(xx / 60 + i / 10)).astype(np.uint8)
        img[..., 1] = (128 + 100 * np.cos(yy / 45 - i / 15)).astype(np.uint8)
        img[..., 2] = ((xx + yy + 4 * i) % 256).astype(np.uint8)
        x0, y0 = (40 + 7 * i) % (w - 60), (30 + 3 * i) % (h - 60)
        img[y0:y0 + 60, x0:x0 + 60] = 255
        frames.append(img)
    sr = 44100
    t = np.arange(round(seconds * sr)) / sr
    tone = 0.2 * np.sin(2 * np.pi * (300 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    write_av(path, frames, fps, np.stack([tone, 0.5 * tone]).astype(np.float32), sr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        t0 = time.perf_counter()
        for i in range(args.clips):
            synthetic_clip(src / f"clip{i}.mp4", args.seconds, seed=i)
        print(f"generated {args.clips} x {args.seconds:.0f} s 640x360@30 clips in "
              f"{time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        summary = preprocess(src, dst, workers=1, progress=False)
        wall = time.perf_counter() - t0
        assert summary.ok == args.clips and summary.failed == 0, summary.format()
        video_s = args.clips * args.seconds
        print(f"1 worker ({os.cpu_count()} cores; codec threads = cores / workers): "
              f"{video_s:.0f} s of video in {wall:.2f} s wall")
        print(f"preprocess: {video_s / wall:.2f} s video / s wall / worker")


if __name__ == "__main__":
    main()
