"""CMA positive-set mining (``mine_positive_sets``): time ~ N^2, memory ~ chunk * N.

Random unit rows (D = 128) for the video and audio memories, k = 32 positives, row chunks of
4096. For each N: seconds, and the peak memory the mining adds on top of the two banks:
  cpu:  VmHWM - VmRSS from /proc/self/status, with the high-water mark reset to the current RSS
        first (``echo 5 > /proc/self/clear_refs``), so each N is measured on its own;
  cuda: torch.cuda.max_memory_allocated - memory_allocated.
It shows the peak next to chunk * N * 4 bytes (one fp32 chunk x N block: the implementation
holds about three at once: video sims, audio sims, their minimum) and next to the N x N matrix
that is never built. Time is fitted as c * N^2 (least squares over the measured N) and projected
to the sizes not measured and to AudioSet's 1,784,108 rows.

The default sizes stop at 100k: on a 2-core CPU 200k takes about 6 minutes, so it is projected;
pass --sizes 50000 100000 200000 to measure it.

Run: .venv/bin/python benchmarks/bench_cma_mining.py [--sizes 25000 50000 100000] [--chunk 4096]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch
import torch.nn.functional as F

from avssl.methods.cma import mine_positive_sets

AUDIOSET_ROWS = 1_784_108
GB = 1e9


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak(device: torch.device) -> int:
    """Reset the peak counter; returns the current usage in bytes (the baseline)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    return _status_kb("VmRSS") * 1024


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return _status_kb("VmHWM") * 1024


def measure(n: int, dim: int, k: int, chunk: int,
            device: torch.device) -> tuple[float, float, float, float]:
    """(wall seconds, user CPU s, system CPU s, peak bytes added) of one mining over N random
    unit rows. CPU seconds are less disturbed than wall time by other load on a shared machine;
    system time is mostly page faults of the freshly allocated chunk x N blocks."""
    g = torch.Generator().manual_seed(n)
    video = F.normalize(torch.randn(n, dim, generator=g), dim=1).to(device)
    audio = F.normalize(torch.randn(n, dim, generator=g), dim=1).to(device)
    if device.type == "cuda":  # warm up kernels and the allocator outside the timing
        mine_positive_sets(video[:chunk], audio[:chunk], k, chunk)
    base = _reset_peak(device)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    sets = mine_positive_sets(video, audio, k, chunk)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    peak = _peak(device) - base
    assert sets.shape == (n, k)
    del sets, video, audio
    return seconds, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, float(peak)


def fit_n2(rows: list[tuple[int, float]], what: str) -> float:
    """Least squares ``t = c * N^2`` (returns c), printed with the free log-log exponent."""
    c = sum(t * n**2 for n, t in rows) / sum(n**4 for n, _ in rows)
    msg = f"fit ({what} time): t = {c * 1e9:.3f} ns * N^2"
    if len(rows) >= 2:
        ln = torch.tensor([[float(n), t] for n, t in rows]).log()
        slope = float(torch.linalg.lstsq(
            torch.stack([ln[:, 0], torch.ones(len(rows))], 1), ln[:, 1:]).solution[0])
        msg += f"; free log-log exponent {slope:.2f}"
    print(msg)
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    ap.add_argument("--project", type=int, nargs="+", default=[200_000, AUDIOSET_ROWS])
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--chunk-sweep", type=int, nargs="*", default=[1024],
                    help="other chunks, measured at the smallest N (memory follows the chunk)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("-k", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu, {torch.get_num_threads()} threads")
    print(f"mine_positive_sets: D={args.dim}, k={args.k}, fp32, {name}, torch {torch.__version__}")
    print(f"{'N':>10}{'chunk':>7}{'seconds':>10}{'user s':>8}{'sys s':>8}{'s/N^2 (ns)':>12}"
          f"{'peak GB':>9}"
          f"{'chunk*N*4 GB':>14}{'peak/(chunk*N*4)':>18}{'N*N*4 GB':>10}")
    rows: list[tuple[int, float]] = []  # (N, wall s)
    cpu_rows: list[tuple[int, float]] = []  # (N, user + sys CPU s)
    runs = [(n, args.chunk) for n in args.sizes]
    runs += [(min(args.sizes), c) for c in args.chunk_sweep if c != args.chunk]
    for n, chunk in runs:
        sec, user, sys_s, peak = measure(n, args.dim, args.k, chunk, device)
        if chunk == args.chunk:
            rows.append((n, sec))
            cpu_rows.append((n, user + sys_s))
        block = min(chunk, n) * n * 4
        print(f"{n:>10}{chunk:>7}{sec:>10.2f}{user:>8.1f}{sys_s:>8.1f}{sec / n**2 * 1e9:>12.3f}"
              f"{peak / GB:>9.2f}"
              f"{block / GB:>14.2f}{peak / block:>18.2f}{n * n * 4 / GB:>10.1f}", flush=True)

    c = fit_n2(rows, "wall")
    fit_n2(cpu_rows, "cpu (user+sys)")
    print(f"load average (1, 5, 15 min): {os.getloadavg()} (wall time grows with other load)")
    for n in args.project:
        t = c * n**2
        # ~3 chunk x N fp32 blocks + the (N, k) int64 result.
        mem = 3 * min(args.chunk, n) * n * 4 + n * args.k * 8
        print(f"projected N={n:>9,}: {t:>9.0f} s ({t / 3600:.2f} h), peak ~{mem / GB:.1f} GB "
              f"at chunk {args.chunk}")


if __name__ == "__main__":
    main()
