"""GPU check of the published training recipe: a few AVID (and CMA) steps per precision setting.

Runs the model of ``configs/avid/kinetics.yaml`` (R(2+1)D-18 width 64, audio CNN width 64, heads
512-512-128, 8x112x112 clips, 1x200x257 linear spectrograms, NCE with 1024 negatives) on
synthetic tensors, so it needs no decoder (no PyAV, decord or librosa) and no data set. The
memory banks have ``--num-rows`` rows (default 4096: quick; the published number of negatives
still fits). Settings, each from the same seeded initial weights and batches:

  fp32          AVID, no autocast, contiguous tensors
  bf16          AVID, bf16 autocast
  bf16+cl       AVID, bf16 autocast + channels-last (3-D video, 2-D audio): the published setting
  cma-fp32      CMA (configs/cma/kinetics.yaml, positive sets mined at epoch 0), fp32
  cma-bf16+cl   CMA, bf16 autocast + channels-last

Each setting runs ``--warmup`` steps then ``--steps`` timed steps (``torch.cuda.synchronize``
around the timed span) of the trainer's step (autocast forward, backward, optimizer step, bank
update) and reports: are all losses finite, first -> last loss, clips/s, ms/step, peak GPU memory
(``torch.cuda.max_memory_allocated``, reset per setting) and |first-step loss - fp32's| (the same
weights, batch and negatives, so this is the precision's effect alone). Batches are moved to the
device every step as the trainer does (pinned host tensors); decoding is not included.

With two or more CUDA GPUs (or ``--ddp on``) it also runs 2 processes under
DistributedDataParallel (NCCL; gloo on CPU) in the published precision and checks that the
memory banks, parameters and NCE constants stay identical across ranks and the losses finite.

On CPU the precision policy of :mod:`avssl.engine.device` turns autocast and channels-last off:
every setting then runs in fp32 (the script says so); ``--tiny`` shrinks the model and inputs for
such a smoke run. Exit code 0 when every setting ran with finite losses (and the DDP check, if
run, passed), 1 otherwise, 2 on bad arguments.

Run on a GPU machine, from the repository root:
    python benchmarks/gpu_check.py --batch-sizes 32,64 --json gpu_check.json
CPU smoke run:
    python benchmarks/gpu_check.py --device cpu --tiny --steps 2
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as `python benchmarks/gpu_check.py` without install
    sys.path.insert(0, str(ROOT))

# Only these avssl modules: none reaches the decoders (tests/engine/test_gpu_check.py checks).
from avssl import config as avconfig  # noqa: E402
from avssl.engine.device import autocast, channels_last_, move, resolve_precision  # noqa: E402
from avssl.engine.optim import build_optimizer  # noqa: E402
from avssl.methods import build_method  # noqa: E402
from avssl.utils import distributed as dist  # noqa: E402

AVID_CONFIG = ROOT / "configs" / "avid" / "kinetics.yaml"
CMA_CONFIG = ROOT / "configs" / "cma" / "kinetics.yaml"

# --tiny: width-8 encoders, 4x32x32 clips, 1x32x33 spectrograms, small head and bank.
TINY_OVERRIDES = (
    "model.video.width=8", "model.audio.width=8", "model.head.hidden=[32]",
    "model.head.out_dim=16", "data.video.num_frames=4", "data.video.crop_size=32",
    "data.audio.num_frames=32", "data.audio.n_fft=128", "method.num_negatives=64",
)
TINY_CMA_OVERRIDES = ("method.num_positives=4", "method.positive_negatives=16")
TINY_ROWS, TINY_BATCH = 256, 4


@dataclass(frozen=True)
class Setting:
    """One measured configuration: method, requested precision and its fp32 reference."""

    name: str
    method: str  # "avid" | "cma"
    amp: str  # "none" | "bf16"
    channels_last: bool
    reference: str  # setting whose first-step loss |dloss| is measured against


SETTINGS = (
    Setting("fp32", "avid", "none", False, "fp32"),
    Setting("bf16", "avid", "bf16", False, "fp32"),
    Setting("bf16+cl", "avid", "bf16", True, "fp32"),
    Setting("cma-fp32", "cma", "none", False, "cma-fp32"),
    Setting("cma-bf16+cl", "cma", "bf16", True, "cma-fp32"),
)
SETTING_NAMES = tuple(s.name for s in SETTINGS)


# ----------------------------------------------------------------------------------------------
# Config and synthetic data
# ----------------------------------------------------------------------------------------------
def build_config(method: str, tiny: bool, overrides: Sequence[str] = ()) -> avconfig.Config:
    """The published AVID (or CMA) Kinetics config, shrunk by ``--tiny``, plus ``overrides``."""
    path = CMA_CONFIG if method == "cma" else AVID_CONFIG
    items = list(TINY_OVERRIDES if tiny else ())
    if method == "cma":
        items += TINY_CMA_OVERRIDES if tiny else ()
        items.append("train.init_from=null")  # random weights: no AVID checkpoint here
    return avconfig.load_config(path, [*items, *overrides], require_paths=False)


def num_bins(audio: avconfig.AudioConfig) -> int:
    """Spectrogram bins, as ``avssl.data.audio.num_bins`` (not imported: that module is the
    decoding side of the package): n_fft // 4 + 1 linear bins (257 for 1024), or n_mels."""
    return audio.n_fft // 4 + 1 if audio.feature == "linear" else audio.n_mels


def input_shapes(cfg: avconfig.Config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-sample shapes: video (3, T, H, W), audio (1, T_a, F)."""
    v, a = cfg.data.video, cfg.data.audio
    return (3, v.num_frames, v.crop_size, v.crop_size), (1, a.num_frames, num_bins(a))


class SyntheticBatches:
    """Loader stand-in: two pre-generated host batches used alternately, and per step fresh
    distinct memory rows. Everything derives from ``seed``, so every setting sees the same
    batches. Under DDP the rows are one global draw split by rank (distinct across ranks) and
    each rank has its own clips."""

    def __init__(self, cfg: avconfig.Config, batch: int, num_rows: int, seed: int,
                 pin: bool, rank: int = 0, world: int = 1) -> None:
        if batch * world > num_rows:
            raise ValueError(f"batch {batch} x {world} process(es) needs at least that many "
                             f"memory rows, got --num-rows {num_rows}")
        vshape, ashape = input_shapes(cfg)
        g = torch.Generator().manual_seed(seed + 7919 * rank)
        self.pool = [{"video": torch.randn(batch, *vshape, generator=g),
                      "audio": torch.randn(batch, *ashape, generator=g)} for _ in range(2)]
        if pin:  # as the trainer's DataLoader(pin_memory=True): async host-to-device copies
            self.pool = [{k: v.pin_memory() for k, v in b.items()} for b in self.pool]
        self.rows = torch.Generator().manual_seed(seed + 1)
        self.batch, self.num_rows, self.rank, self.world = batch, num_rows, rank, world

    def __call__(self, step: int) -> dict[str, Tensor]:
        perm = torch.randperm(self.num_rows, generator=self.rows)[: self.batch * self.world]
        index = perm[self.rank * self.batch:(self.rank + 1) * self.batch]
        return {**self.pool[step % 2], "index": index}


# ----------------------------------------------------------------------------------------------
# One setting
# ----------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    """Drop the previous setting's tensors and start a fresh peak-memory count."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor],
               device: torch.device, amp: str) -> float:
    """The trainer's step (bf16 needs no GradScaler; constant lr, no scheduler needed); returns
    the loss as a float, which waits for the step as the trainer's logging does."""
    with autocast(device, amp):
        out = model(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return float(out["loss"].detach())


def build(cfg: avconfig.Config, num_rows: int, device: torch.device, channels_last: bool,
          seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Method (seeded initial weights) on ``device`` in its memory format, and its optimizer."""
    torch.manual_seed(seed)
    method = build_method(cfg, num_rows).to(device)
    if channels_last:
        channels_last_(method)  # per module: 3-D video and 2-D audio formats
    method.train()
    return method, build_optimizer(method.parameters(), cfg.optim)


def run_setting(setting: Setting, cfg: avconfig.Config, batch: int, num_rows: int,
                device: torch.device, warmup: int, steps: int, seed: int) -> dict[str, Any]:
    """Warm-up then timed steps of one setting; the result row (see :func:`failed_row`)."""
    prec = resolve_precision(setting.amp, setting.channels_last, device)
    free_memory(device)
    method, optimizer = build(cfg, num_rows, device, prec.channels_last, seed)
    mined = method.on_epoch_start(0)  # CMA mines its positive sets from the banks; AVID: {}
    data = SyntheticBatches(cfg, batch, num_rows, seed, pin=device.type == "cuda")
    torch.manual_seed(seed + 1)  # negatives: the same draws in every setting
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            t0 = time.perf_counter()
        losses.append(train_step(method, optimizer, move(data(step), device, prec.channels_last),
                                 device, prec.amp))
    sync(device)
    elapsed = time.perf_counter() - t0
    return {
        **row_head(setting, batch, prec.amp, prec.channels_last), "notice": prec.notice,
        "losses": losses, "finite": all(math.isfinite(v) for v in losses),
        "clips_per_s": batch * steps / elapsed if steps else None,
        "ms_per_step": 1e3 * elapsed / steps if steps else None,
        "peak_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                     if device.type == "cuda" else None),
        "params_m": sum(p.numel() for p in method.parameters()) / 1e6,
        "cma_mining_s": mined.get("cma_mining_s"), "error": None,
    }


def row_head(setting: Setting, batch: int, amp: str, channels_last: bool) -> dict[str, Any]:
    runs_as = ("fp32" if amp == "none" else amp) + ("+cl" if channels_last else "")
    return {"setting": setting.name, "method": setting.method, "batch": batch,
            "amp": amp, "channels_last": channels_last, "runs_as": runs_as}


def failed_row(setting: Setting, batch: int, device: torch.device, err: BaseException
               ) -> dict[str, Any]:
    """The row of a setting that raised (out of memory, a kernel error): recorded, not fatal,
    so one command still reports every other setting."""
    prec = resolve_precision(setting.amp, setting.channels_last, device)
    msg = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return {**row_head(setting, batch, prec.amp, prec.channels_last), "notice": prec.notice,
            "losses": [], "finite": False, "clips_per_s": None, "ms_per_step": None,
            "peak_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                         if device.type == "cuda" else None),
            "params_m": None, "cma_mining_s": None, "error": msg[:300]}


def add_loss_deltas(rows: list[dict[str, Any]]) -> None:
    """|first-step loss - the reference setting's| for rows of the same batch size."""
    first = {(r["setting"], r["batch"]): r["losses"][0] for r in rows if r["losses"]}
    by_name = {s.name: s for s in SETTINGS}
    for r in rows:
        ref = first.get((by_name[r["setting"]].reference, r["batch"]))
        r["dloss_vs_fp32"] = abs(r["losses"][0] - ref) if r["losses"] and ref is not None \
            else None


# ----------------------------------------------------------------------------------------------
# DDP
# ----------------------------------------------------------------------------------------------
def ddp_check(opts: dict[str, Any], world: int = 2) -> dict[str, Any]:
    """``world`` processes (NCCL on CUDA, gloo on CPU) of AVID in the published precision;
    returns rank 0's summary (banks/params/log Z identical across ranks, finite losses)."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_ddp_") as tmp:
        mp.spawn(_ddp_worker, args=(world, tmp, opts), nprocs=world, join=True)
        return json.loads((Path(tmp) / "result.json").read_text())


def _ddp_worker(rank: int, world: int, tmp: str, opts: dict[str, Any]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    cuda = opts["device"] == "cuda"
    if not cuda:
        torch.set_num_threads(1)  # two CPU processes on a shared machine
    dist.init_distributed(backend="nccl" if cuda else "gloo", init_method=f"file://{tmp}/store",
                          timeout=timedelta(seconds=opts["ddp_timeout_s"]))
    try:
        summary = _ddp_train(rank, world, torch.device("cuda", rank) if cuda else
                             torch.device("cpu"), opts)  # the DDP wrapper dies with its frame
        if rank == 0:
            (Path(tmp) / "result.json").write_text(json.dumps(summary))
    finally:
        dist.cleanup()


def _ddp_train(rank: int, world: int, device: torch.device, opts: dict[str, Any]
               ) -> dict[str, Any]:
    cfg = build_config("avid", opts["tiny"], opts["overrides"])
    prec = resolve_precision(cfg.train.amp, cfg.train.channels_last, device)  # published
    method, optimizer = build(cfg, opts["num_rows"], device, prec.channels_last, opts["seed"])
    # Banks are kept identical by gathered updates: never broadcast (as the trainer does).
    model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda"
                                    else None, broadcast_buffers=False)
    batch = opts["batch"]
    data = SyntheticBatches(cfg, batch, opts["num_rows"], opts["seed"],
                            pin=device.type == "cuda", rank=rank, world=world)
    torch.manual_seed(opts["seed"] + 1 + rank)  # each rank its own negatives (trainer: seed+rank)
    losses: list[float] = []
    total = opts["warmup"] + opts["steps"]
    t0 = time.perf_counter()
    for step in range(total):
        if step == opts["warmup"]:
            sync(device)
            t0 = time.perf_counter()
        losses.append(train_step(model, optimizer, move(data(step), device, prec.channels_last),
                                 device, prec.amp))
    sync(device)
    elapsed = time.perf_counter() - t0

    def max_diff_to_rank0(t: Tensor) -> float:
        parts = [torch.empty_like(t) for _ in range(world)]
        torch.distributed.all_gather(parts, t.contiguous())
        return max(float((p.float() - parts[0].float()).abs().max()) for p in parts)

    bank_diff = max(max_diff_to_rank0(b.memory) for b in method.memory.values())
    flat = torch.cat([p.detach().reshape(-1).float() for p in method.parameters()])
    param_diff = max_diff_to_rank0(flat)
    log_z = {n: float(t) for n, t in method.named_buffers() if n.endswith("log_z")}
    mine = {"rank": rank, "losses": losses, "log_z": log_z,
            "peak_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                         if device.type == "cuda" else None)}
    ranks = dist.all_gather_object(mine)
    return {
        "world": world, "backend": torch.distributed.get_backend(), "batch_per_rank": batch,
        "runs_as": ("fp32" if prec.amp == "none" else prec.amp)
        + ("+cl" if prec.channels_last else ""),
        "steps": total, "ranks": ranks,
        "finite": all(math.isfinite(v) for r in ranks for v in r["losses"]),
        "bank_max_diff": bank_diff, "banks_identical": bank_diff == 0.0,
        "param_max_diff": param_diff, "params_identical": param_diff == 0.0,
        "log_z_identical": all(r["log_z"] == ranks[0]["log_z"] for r in ranks),
        "clips_per_s": world * batch * opts["steps"] / elapsed if opts["steps"] else None,
    }


def ddp_ok(summary: dict[str, Any]) -> bool:
    return bool(summary.get("finite") and summary.get("banks_identical")
                and summary.get("params_identical") and summary.get("log_z_identical"))


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    """The compact result table, one line per (setting, batch)."""
    head = (f"{'setting':<13}{'runs as':<9}{'batch':>6}  {'finite':<7}{'loss first -> last':<22}"
            f"{'clips/s':>9}{'ms/step':>9}{'peak GiB':>9}{'|dloss| vs fp32':>16}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["error"]:
            lines.append(f"{r['setting']:<13}{r['runs_as']:<9}{r['batch']:>6}  FAILED  "
                         f"{r['error'][:80]}")
            continue
        loss = f"{r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}"
        lines.append(f"{r['setting']:<13}{r['runs_as']:<9}{r['batch']:>6}  "
                     f"{'yes' if r['finite'] else 'NO':<7}{loss:<22}"
                     f"{_f(r['clips_per_s'], '.1f'):>9}{_f(r['ms_per_step'], '.1f'):>9}"
                     f"{_f(r['peak_gib'], '.2f'):>9}{_f(r['dloss_vs_fp32'], '.2e'):>16}")
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "device": str(device),
                           "cuda_devices": torch.cuda.device_count()
                           if torch.cuda.is_available() else 0}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                   cudnn=torch.backends.cudnn.version(),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn=torch.backends.cudnn.allow_tf32,
                   cudnn_benchmark=torch.backends.cudnn.benchmark)
    else:
        env["threads"] = torch.get_num_threads()
    return env


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return out


def _settings(text: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in out if x not in SETTING_NAMES]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown setting(s) {bad or text!r}; known: "
                                         f"{', '.join(SETTING_NAMES)}")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--batch-sizes", "--batch-size", type=_int_list, default=None,
                    help="clips per GPU, comma-separated for scaling (default 32; --tiny 4)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    ap.add_argument("--num-rows", type=int, default=None,
                    help="memory-bank rows (default 4096; --tiny 256)")
    ap.add_argument("--settings", type=_settings, default=list(SETTING_NAMES),
                    help=f"comma-separated subset of {','.join(SETTING_NAMES)}")
    ap.add_argument("--ddp", choices=("auto", "on", "off"), default="auto",
                    help="2-process DDP check: auto = when >= 2 CUDA GPUs; on = also on CPU "
                         "(gloo)")
    ap.add_argument("--tiny", action="store_true",
                    help="width-8 encoders and small inputs (CPU smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of torch (default: torch's; 1 is far faster on a busy "
                         "shared CPU)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (the trainer leaves it off)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override, e.g. model.video.width=32 (repeatable)")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT",
                    help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        ap.error("--steps and --warmup must be >= 1 (the first step is the |dloss| reference)")
    args.batch_sizes = args.batch_sizes or [TINY_BATCH if args.tiny else 32]
    args.num_rows = args.num_rows or (TINY_ROWS if args.tiny else 4096)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("error: --device cuda but torch sees no CUDA device "
                  "(use --device cpu --tiny for a smoke run)", file=sys.stderr)
            return 2
        device = torch.device("cuda", device.index if device.index is not None
                              else torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    elif device.type != "cpu":
        print(f"error: --device {args.device}: expected cuda, cuda:N or cpu", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        configs = {m: build_config(m, args.tiny, args.override) for m in ("avid", "cma")}
    except avconfig.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    env = environment(device)
    cfg = configs["avid"]
    vshape, ashape = input_shapes(cfg)
    print("gpu_check: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print(f"model: video {cfg.model.video.arch}-{cfg.model.video.depth or 18} width "
          f"{cfg.model.video.width}, audio {cfg.model.audio.arch} width {cfg.model.audio.width}"
          f", head {cfg.model.head.hidden}->{cfg.model.head.out_dim}; clip {vshape}, "
          f"spectrogram {ashape}; {cfg.method['loss']} K={cfg.method['num_negatives']}, "
          f"bank rows {args.num_rows}; {cfg.optim.name} lr {cfg.optim.lr}")
    print(f"batch sizes {args.batch_sizes} per GPU, {args.warmup} warm-up + {args.steps} timed "
          f"steps per setting, seed {args.seed}", flush=True)

    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    for batch in args.batch_sizes:
        for setting in (s for s in SETTINGS if s.name in args.settings):
            try:
                row = run_setting(setting, configs[setting.method], batch, args.num_rows,
                                  device, args.warmup, args.steps, args.seed)
            except Exception as e:  # report and go on: one command should cover every setting
                row = failed_row(setting, batch, device, e)
            free_memory(device)
            if row["notice"] and row["notice"] not in notes:
                notes.append(row["notice"])
                print(f"precision policy: {row['notice']}")
            status = row["error"] or (f"loss {row['losses'][0]:.4f} -> {row['losses'][-1]:.4f}, "
                                      f"{row['clips_per_s']:.1f} clips/s")
            print(f"  {setting.name:<12} batch {batch:>4} as {row['runs_as']:<8} {status}",
                  flush=True)
            rows.append(row)
    add_loss_deltas(rows)
    if notes:
        print(f"precision policy: on {device.type} every setting runs as fp32 with contiguous "
              "tensors (avssl/engine/device.py); rows differ by name only")

    want_ddp = args.ddp == "on" or (args.ddp == "auto" and device.type == "cuda"
                                    and torch.cuda.device_count() >= 2)
    ddp: dict[str, Any]
    if want_ddp:
        opts = {"device": device.type, "tiny": args.tiny, "overrides": list(args.override),
                "num_rows": args.num_rows, "batch": args.batch_sizes[0], "seed": args.seed,
                "warmup": args.warmup, "steps": args.steps, "ddp_timeout_s": 300}
        free_memory(device)
        try:
            ddp = ddp_check(opts)
            ddp["ok"] = ddp_ok(ddp)
        except Exception as e:  # a worker's traceback ends with its own error: keep the end
            lines = [x for x in str(e).strip().splitlines() if x.strip()]
            ddp = {"ok": False, "error": f"{type(e).__name__}: {lines[-1] if lines else ''}",
                   "detail": str(e)[-4000:]}
    else:
        why = ("--ddp off" if args.ddp == "off" else
               f"{env['cuda_devices']} CUDA GPU(s) visible, needs 2" if device.type == "cuda"
               else "CPU run (--ddp on forces a gloo check)")
        ddp = {"ok": True, "skipped": why}

    print()
    print(table(rows))
    if "skipped" in ddp:
        print(f"DDP: skipped ({ddp['skipped']})")
    elif "error" in ddp:
        print(f"DDP: FAILED {ddp['error']}\n{ddp['detail']}")
    else:
        print(f"DDP: {ddp['world']} processes ({ddp['backend']}), {ddp['runs_as']}, batch "
              f"{ddp['batch_per_rank']}/rank, {ddp['steps']} steps: losses finite "
              f"{ddp['finite']}, banks identical {ddp['banks_identical']} (max diff "
              f"{ddp['bank_max_diff']:.1e}), params identical {ddp['params_identical']} "
              f"(max diff {ddp['param_max_diff']:.1e}), log Z identical "
              f"{ddp['log_z_identical']}, {_f(ddp['clips_per_s'], '.1f')} clips/s -> "
              f"{'OK' if ddp['ok'] else 'FAILED'}")
    ok = bool(rows) and all(r["finite"] and not r["error"] for r in rows) and ddp["ok"]
    print(f"result: {'OK' if ok else 'FAILED'}")
    if args.json:
        out = {"ok": ok, "environment": env, "notes": notes, "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "settings": [asdict(s) for s in SETTINGS if s.name in args.settings],
            "results": rows, "ddp": ddp}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
