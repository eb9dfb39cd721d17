"""CPU time of one AVID training step, split into its phases.

Two models (cross-modal AVID, NCE, N memory rows, K negatives, Adam):
  demo: configs/demo/avid.yaml model section (R(2+1)D depth 10 width 16, audio CNN width 16,
        head [128] -> 64), video 3x8x56x56, log-mel audio (1, 200, 64);
  full: the published model (R(2+1)D-18 width 64, audio CNN width 64, heads 512-512-128,
        configs/base.yaml), video 3x8x112x112, linear spectrogram (1, 200, 257).

Phases, each timed on its own (the same calls as ``AVID.forward``, unrolled):
  data:     hand the step a batch from pre-generated synthetic tensors (indexing a pool): ~0 by
            construction; decoding cost is in bench_loader.py;
  forward:  encoders + heads + bank scores + NCE loss (``encoders``, ``instance_terms``);
  backward: ``loss.backward()``;
  optim:    ``Adam.step()`` (+ ``zero_grad``);
  memory:   ``update_memory`` (the two ``MemoryBank.update`` calls).
Median over the measured steps after warm-up steps.

Run: .venv/bin/python benchmarks/bench_train_step.py [--batch 8] [--rows 10000] [--amp bf16]
     [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import torch

from avssl.config import Config, load_config
from avssl.methods import build_method
from avssl.methods.avid import AVID

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PHASES = ("data", "forward", "backward", "optim", "memory")


def build(cfg_path: Path, rows: int, negatives: int | None) -> tuple[Config, AVID]:
    cfg = load_config(cfg_path, require_paths=False)
    if negatives is not None:
        cfg.method["num_negatives"] = negatives
    torch.manual_seed(0)
    method = build_method(cfg, rows)
    assert isinstance(method, AVID)
    return cfg, method


def time_steps(method: AVID, video_shape: tuple[int, ...], audio_shape: tuple[int, ...],
               batch: int, rows: int, warmup: int, steps: int, amp: str) -> dict[str, float]:
    """Median seconds per phase over ``steps`` steps after ``warmup`` steps."""
    method.train()
    opt = torch.optim.Adam(method.parameters(), lr=2e-4, weight_decay=1e-5)
    g = torch.Generator().manual_seed(0)
    pool = 2 * batch  # synthetic "dataset": the loader's output, already in memory
    videos = torch.randn(pool, *video_shape, generator=g)
    audios = torch.randn(pool, *audio_shape, generator=g)
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if amp == "bf16"
                else contextlib.nullcontext())
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        sel = torch.randperm(pool, generator=g)[:batch]
        data = {"video": videos[sel], "audio": audios[sel],
                "index": torch.randint(0, rows, (batch,), generator=g)}
        t1 = time.perf_counter()
        with autocast:
            v, a = method.encoders(data)
            emb = {"v": v, "a": a}
            parts = method.instance_terms(emb, data["index"])
            loss = torch.stack(list(parts.values())).mean()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        method.update_memory(emb, data["index"])
        t5 = time.perf_counter()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss {float(loss)} at step {step}")
        if step >= warmup:
            for p, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                times[p].append(dt)
    return {p: statistics.median(v) for p, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rows", type=int, default=10_000, help="memory rows N")
    ap.add_argument("--negatives", type=int, default=None,
                    help="K (default: the config's, 128 demo, 1024 full)")
    ap.add_argument("--amp", choices=("none", "bf16"), default="none")
    ap.add_argument("--demo-steps", type=int, default=10)
    ap.add_argument("--full-steps", type=int, default=5)
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cases = [("demo", CONFIGS / "demo" / "avid.yaml", (3, 8, 56, 56), (1, 200, 64),
              2, args.demo_steps)]
    if not args.skip_full:
        cases.append(("full", CONFIGS / "avid" / "kinetics.yaml", (3, 8, 112, 112),
                      (1, 200, 257), 1, args.full_steps))
    print(f"AVID train step on CPU: torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, batch {args.batch}, N={args.rows}, amp {args.amp}; "
          "median seconds")
    head = f"{'model':<6}{'params':>9}{'K':>6}{'steps':>7}" + "".join(f"{p:>10}" for p in PHASES)
    print(head + f"{'total':>10}{'clips/s':>9}")
    for name, path, vshape, ashape, warmup, steps in cases:
        cfg, method = build(path, args.rows, args.negatives)
        params = sum(p.numel() for p in method.parameters())
        t = time_steps(method, vshape, ashape, args.batch, args.rows, warmup, steps, args.amp)
        total = sum(t.values())
        print(f"{name:<6}{params / 1e6:>8.2f}M{cfg.method['num_negatives']:>6}{steps:>7}"
              + "".join(f"{t[p]:>10.4f}" for p in PHASES)
              + f"{total:>10.3f}{args.batch / total:>9.2f}", flush=True)
    print("data = indexing pre-generated tensors (~0 by construction; decoding: bench_loader.py)")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}: other work on the "
          "machine's cores inflates every phase")


if __name__ == "__main__":
    main()
