"""Loader throughput vs raw decoding, per video backend (one worker = one process, 1 thread).

Builds a small prepared dataset (16 videos, 10 s, 16 fps, 128x170, GOP 16, 24 kHz wav) in a
temporary folder, then measures for each backend:
  loader: AVClipDataset.__getitem__ (8 frames -> 3x8x112x112 with train augmentation, 2 s audio ->
          (1, 200, 257) spectrogram with volume jitter), clips/s;
  raw:    decoding the same frames and audio samples alone (no transforms, no spectrogram);
and prints loader/raw (goal >= 0.7: the data path adds little on top of decoding). Then the
items methods declare (:class:`avssl.data.sample.SampleSpec`: two views of the same frames as
SimCLR/BYOL, two views 0.5 s apart, the own and another video's audio as AVC) against the plain
item on the same clips: a second view of the same frames is decoded once and only augmented
twice, so it should cost well under 2x the one-view item without audio. Rates are
per CPU second of the process (what one worker with its own core gets; robust to other jobs on
a shared machine), with wall-clock rates beside them.

Run: .venv/bin/python benchmarks/bench_loader.py [--videos 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_prepared_dataset, rate

from avssl.config import DataConfig, VideoConfig
from avssl.data.dataset import AVClipDataset
from avssl.data.decode import get_reader, read_audio, reset_reader_cache
from avssl.data.sample import SampleSpec

SPECS = {"1 view, no audio": SampleSpec(views=1, audio=None),
         "2 views (SimCLR, BYOL)": SampleSpec(views=2, audio=None),
         "2 views 0.5 s apart": SampleSpec(views=2, view_shift=0.5, audio=None),
         "own + other audio (AVC)": SampleSpec(other_audio="other_video")}


def bench_backend(manifest: Path, backend: str, clips_per_video: int,
                  repeats: int) -> np.ndarray:
    """clips/s as [[loader_cpu, loader_wall], [raw_cpu, raw_wall]]."""
    cfg = DataConfig(backend=backend, clips_per_video=clips_per_video,
                     video=VideoConfig(num_frames=8, fps=16.0, crop_size=112, resize=128))
    ds = AVClipDataset(manifest, cfg, train=True, seed=0)
    a = cfg.audio
    # The exact clips the loader decodes, to time decoding alone on the same work.
    plans = []
    for i in range(len(ds)):
        video, clip = divmod(i, ds.clips_per_video)
        t = ds.timing(video, clip, np.random.default_rng([ds.seed, ds.epoch, i]))
        audio = ds.manifest.parent / ds.rows[video]["audio_path"]
        plans.append((ds.video_path(video), t.frame_indices, audio, t.audio_start))

    def raw(i: int) -> None:
        vpath, idx, apath, a0 = plans[i]
        get_reader(vpath, backend).get_frames(idx)
        read_audio(apath, a0, a.duration, a.sample_rate)

    items = range(len(ds))
    reset_reader_cache()
    for i in range(len(ds.rows)):  # open every reader once (the steady state of a worker)
        ds[i * ds.clips_per_video]
    best = np.zeros((2, 2))  # (loader, raw) x (cpu, wall)
    for _ in range(repeats):  # interleaved, so background load hits both alike
        best[0] = np.maximum(best[0], rate(ds.__getitem__, items, 1))
        best[1] = np.maximum(best[1], rate(raw, items, 1))
    reset_reader_cache()
    return best


def bench_samples(manifest: Path, clips_per_video: int, repeats: int) -> dict[str, float]:
    """items/s per CPU second of each :data:`SPECS` entry and of the plain item (pyav)."""
    cfg = DataConfig(backend="pyav", clips_per_video=clips_per_video,
                     video=VideoConfig(num_frames=8, fps=16.0, crop_size=112, resize=128))
    sets = {"plain item (AVID)": AVClipDataset(manifest, cfg, train=True, seed=0)}
    sets.update({k: AVClipDataset(manifest, cfg, train=True, seed=0, sample=v)
                 for k, v in SPECS.items()})
    best = dict.fromkeys(sets, 0.0)
    for ds in sets.values():  # warm the decoders
        for i in range(len(ds.rows)):
            ds[i * ds.clips_per_video]
    for _ in range(repeats):
        for name, ds in sets.items():
            best[name] = max(best[name], rate(ds.__getitem__, range(len(ds)), 1)[0])
    reset_reader_cache()
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--clips-per-video", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backends", nargs="+", default=["pyav", "decord"])
    args = p.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_prepared_dataset(Path(tmp), num_videos=args.videos)
        print(f"dataset: {args.videos} videos x 10 s, 16 fps, 128x170, GOP 16, 24 kHz "
              f"({time.perf_counter() - t0:.1f} s to build)")
        print("clips/s per process CPU second (wall-clock clips/s in brackets)")
        print(f"{'backend':8s} {'loader':>16s} {'raw decode':>16s} {'loader/raw':>16s}")
        for backend in args.backends:
            (lc, lw), (rc, rw) = bench_backend(manifest, backend, args.clips_per_video,
                                               args.repeats)
            print(f"{backend:8s} {lc:7.1f} ({lw:6.1f}) {rc:7.1f} ({rw:6.1f}) "
                  f"{lc / rc:7.2f} ({lw / rw:5.2f})")
        rates = bench_samples(manifest, args.clips_per_video, args.repeats)
        base = rates["plain item (AVID)"]
        print("\ndeclared samples (pyav), items/s per CPU second and cost per item vs plain")
        for name, r in rates.items():
            print(f"{name:26s} {r:7.1f}   x{base / r:4.2f}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
