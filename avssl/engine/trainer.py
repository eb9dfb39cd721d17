"""The training loop: one process, or one per GPU/CPU slot under ``torchrun`` (DDP).

Checkpoints (``checkpoints/last.pt`` every epoch and every ``checkpoint_every_steps`` steps, plus
``epoch_K.pt``) hold everything a resume needs: the method's state (weights, memory banks, Z,
positive sets), optimizer, scheduler, RNG state and the position in the epoch. All sample
randomness derives from (seed, epoch, index), so a run killed at any point and resumed with
``--resume`` ends with the same weights as an uninterrupted one (``train.deterministic``).
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from avssl.config import Config, ConfigError
from avssl.data.dataset import AVClipDataset, worker_init
from avssl.data.sampler import ResumableSampler
from avssl.engine.device import autocast, channels_last_, move, resolve_precision
from avssl.engine.logging import RunLogger, StepReporter, plot_losses
from avssl.engine.optim import build_optimizer, build_scheduler
from avssl.methods import method_settings, method_spec, resolved_dict
from avssl.utils import distributed as dist
from avssl.utils.atomic import atomic_write_text
from avssl.utils.checkpoint import load_checkpoint, model_state, save_checkpoint

#: ``evaluate(method, cfg, device, progress) -> {name: value}``, run on the main rank at the end
Evaluator = Callable[[nn.Module, Config, torch.device, bool], dict[str, float]]

# Tests set this to SIGKILL the process right after the given global step (a real crash).
KILL_AT_STEP_ENV = "AVSSL_TEST_KILL_AT_STEP"


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class RunDirExistsError(FileExistsError):
    """A run directory already holds a checkpoint and ``--resume`` was not given."""


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to start a new run over a run directory that already holds a checkpoint."""
    last = run_dir / "checkpoints" / "last.pt"
    if not resume and last.is_file():
        raise RunDirExistsError(
            f"{run_dir} already holds a run ({last}): add --resume to continue it, or give "
            f"another --run-dir (or delete {run_dir}) to start over")


def init_from_checkpoint(method: nn.Module, path: str) -> list[str]:
    """Start (e.g. CMA) from another run's weights, banks and Z; returns the keys not found."""
    state = model_state(load_checkpoint(path))
    missing, unexpected = method.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"train.init_from: {path} has keys this method does not know: "
                         f"{unexpected[:5]}")
    return list(missing)


class Trainer:
    """Builds data, method, optimizer from a config and runs (or resumes) the training.

    Method-agnostic: the method's :class:`~avssl.methods.MethodSpec` says what a sample holds
    and which class to build; the method's ``param_groups``, ``on_epoch_start`` and
    ``on_step_end`` are the only other calls (see :mod:`avssl.methods.contract`).
    """

    def __init__(self, cfg: Config, run_dir: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.spec, settings = method_spec(cfg), method_settings(cfg)
        check_run_dir(self.run_dir, resume)
        self.info = dist.init_distributed()
        self.device = self.info.device
        self.precision = resolve_precision(cfg.train.amp, cfg.train.channels_last, self.device)
        if self.precision.notice and self.info.rank == 0:
            print(self.precision.notice)
        seed_everything(cfg.seed + self.info.rank, cfg.train.deterministic)
        self.ckpt_dir = self.run_dir / "checkpoints"
        if self.info.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml",
                              yaml.safe_dump(resolved_dict(cfg), sort_keys=False))
        dist.barrier()

        d = cfg.data
        self.dataset = AVClipDataset(d.manifest, d, split=d.split, train=True, seed=cfg.seed,
                                     sample=self.spec.sample(settings))
        world = self.info.world_size
        if d.batch_size % world:
            raise ConfigError(f"data.batch_size: {d.batch_size} is not divisible by the "
                              f"{world} processes")
        self.local_batch = d.batch_size // world
        self.sampler = ResumableSampler(len(self.dataset), shuffle=True, seed=cfg.seed,
                                        rank=self.info.rank, world_size=world)
        self.steps_per_epoch = self.sampler.per_rank // self.local_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(f"data.batch_size: {d.batch_size} is larger than the "
                              f"{len(self.dataset)} clips of split {d.split!r} in "
                              f"{d.manifest}; lower data.batch_size")

        self.loader = self._build_loader()
        self.method = self.spec.cls(cfg, settings, self.dataset.num_videos).to(self.device)
        if self.precision.channels_last:
            channels_last_(self.method)  # 3-D format for video convs, 2-D for audio
        # --resume without a checkpoint yet (a first job, a demo) starts from init_from too
        resuming = resume and (self.ckpt_dir / "last.pt").is_file()
        if cfg.train.init_from and not resuming:
            init_from_checkpoint(self.method, cfg.train.init_from)
        self.model: nn.Module = self.method
        if world > 1:
            # Banks are kept identical by gathered updates: never broadcast them every step.
            self.model = DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        self.optimizer = build_optimizer(self.method.param_groups(cfg.optim), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.steps_per_epoch,
                                         cfg.train.epochs)
        self.scaler = torch.amp.GradScaler(enabled=self.precision.amp == "fp16")
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        # the lr schedule and the methods' step hooks span train.epochs; max_steps only stops
        self.schedule_steps = self.steps_per_epoch * cfg.train.epochs
        full = self.schedule_steps
        self.total_steps = min(full, cfg.train.max_steps) if cfg.train.max_steps else full
        if resume:
            self._resume()
        # a run that starts at step 0 starts a new metrics.jsonl (the old one would mix runs)
        self.logger = RunLogger(self.run_dir, enabled=self.info.rank == 0,
                                append=self.global_step > 0)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            **self._rng_state(),
            "config": resolved_dict(self.cfg),
        }

    def _rng_state(self) -> dict[str, Any]:
        return {"rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None}

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"].cpu())

    def save(self, epoch_end: bool) -> None:
        """Rank 0 writes; every rank must call it (the RNG states of all ranks are gathered,
        so a DDP run resumes with the negatives each rank would have drawn)."""
        rng_ranks = dist.all_gather_object(self._rng_state()) \
            if self.info.world_size > 1 else None
        if self.info.rank != 0:
            return
        state = self.state()
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        save_checkpoint(state, self.ckpt_dir / "last.pt")
        if epoch_end:
            save_checkpoint(state, self.ckpt_dir / f"epoch_{self.epoch}.pt")

    def _resume(self) -> None:
        path = self.ckpt_dir / "last.pt"
        if not path.is_file():
            if dist.is_main():
                print(f"no checkpoint at {path}: starting from scratch")
            return
        ckpt = load_checkpoint(path, map_location=self.device)
        unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch = ckpt["epoch"], ckpt["step_in_epoch"]
        self.global_step = ckpt["global_step"]
        ranks = ckpt.get("rng_ranks")
        if self.info.world_size == 1:
            self._set_rng_state(ckpt)
        elif ranks is not None and len(ranks) == self.info.world_size:
            self._set_rng_state(ranks[self.info.rank])  # each rank's own negatives stream
        else:  # saved by another number of processes: a fresh stream per rank
            torch.manual_seed(self.cfg.seed + 7919 * self.global_step + self.info.rank)
        if dist.is_main():
            print(f"resumed from {path}: epoch {self.epoch}, step {self.step_in_epoch}/"
                  f"{self.steps_per_epoch}")

    # ------------------------------------------------------------------ loop
    def _build_loader(self) -> DataLoader:
        """One loader for the whole run: persistent workers keep their decoders (and any
        compiled kernels) across epochs; the epoch reaches them through the dataset."""
        d = self.cfg.data
        return DataLoader(self.dataset, batch_size=self.local_batch, sampler=self.sampler,
                          num_workers=d.num_workers, drop_last=True,
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=d.num_workers > 0,
                          worker_init_fn=worker_init if d.num_workers > 0 else None,
                          # own generator: workers' base seed must not consume the global RNG
                          # (negatives), or a resumed run would drift from an uninterrupted one
                          generator=torch.Generator().manual_seed(self.cfg.seed),
                          prefetch_factor=4 if d.num_workers > 0 else None)

    def _loader(self) -> DataLoader:
        self.dataset.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, skip=self.step_in_epoch * self.local_batch)
        return self.loader

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        with autocast(self.device, self.precision.amp):
            out = self.model(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        vals = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}
        if not math.isfinite(vals["loss"]):
            raise FloatingPointError(self._nonfinite_message(vals))
        return vals

    def _nonfinite_message(self, vals: dict[str, float]) -> str:
        """Which terms went non-finite, and the advice that fits the run's settings."""
        bad = ", ".join(f"{k}={v}" for k, v in vals.items() if not math.isfinite(v))
        where = f"step {self.global_step} (epoch {self.epoch + 1}): {bad}"
        if self.precision.amp != "none":
            advice = (f"rerun with train.amp=none to see whether {self.precision.amp} autocast "
                      "causes it, else lower optim.lr or set optim.grad_clip")
        else:
            advice = "lower optim.lr or set optim.grad_clip"
        last = self.ckpt_dir / "last.pt"
        resume = f"; {last} holds the last good state (--resume)" if last.is_file() else ""
        return f"non-finite loss at {where}; {advice}{resume}"

    def _done(self) -> bool:
        return self.epoch >= self.cfg.train.epochs or self.global_step >= self.total_steps

    def fit(self, evaluate: Evaluator | None = None) -> dict[str, Any]:
        """Train until ``train.epochs`` (or ``train.max_steps``) and return the end-of-run
        results of ``evaluate`` (main rank; ``{}`` elsewhere or without an evaluator)."""
        cfg = self.cfg
        kill_at = int(os.environ.get(KILL_AT_STEP_ENV, "-1"))
        main = dist.is_main() and self.progress
        # a bar on a terminal; plain lines every few seconds in a log file (cluster jobs)
        tty = main and sys.stderr.isatty()
        reporter = StepReporter(self.total_steps, self.global_step,
                                enabled=main and not tty, every_s=cfg.train.print_every_seconds)
        while not self._done():
            self.method.train()
            mined = self.method.on_epoch_start(self.epoch)
            if mined:
                self.logger.log(self.global_step, mined, kind="epoch")
            bar = tqdm(self._loader(), total=self.steps_per_epoch, initial=self.step_in_epoch,
                       desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}", leave=False,
                       disable=not tty, dynamic_ncols=True)
            t_last, sums, n, stop = time.perf_counter(), {}, 0, False
            for batch in bar:
                vals = self.train_step(move(batch, self.device, self.precision.channels_last))
                self.step_in_epoch += 1
                self.global_step += 1
                vals.update(self.method.on_step_end(self.global_step, self.schedule_steps))
                n += 1
                for k, v in vals.items():
                    sums[k] = sums.get(k, 0.0) + v
                now = time.perf_counter()
                clips_s = cfg.data.batch_size / max(now - t_last, 1e-9)
                t_last = now
                stop = self.global_step >= self.total_steps
                bar.set_postfix(loss=f"{vals['loss']:.3f}", clips_s=f"{clips_s:.1f}",
                                eta=reporter.eta(self.global_step))
                reporter.step(self.global_step, self.epoch, vals["loss"], clips_s)
                if self.global_step % cfg.train.log_every_steps == 0 or stop:
                    self.logger.log(self.global_step, {**vals, "clips_per_s": clips_s,
                                                       "lr": self.scheduler.get_last_lr()[0],
                                                       "epoch": self.epoch})
                every = cfg.train.checkpoint_every_steps
                if ((every and self.global_step % every == 0) or stop) and \
                        self.step_in_epoch < self.steps_per_epoch:
                    self.save(epoch_end=False)
                if self.global_step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if stop:  # train.max_steps: checkpointed above, resumable
                    break
            bar.close()
            if stop and self.step_in_epoch < self.steps_per_epoch:  # mid-epoch: no epoch end
                if dist.is_main():
                    print(f"stopped at train.max_steps={cfg.train.max_steps} (epoch "
                          f"{self.epoch + 1}, step {self.step_in_epoch}/{self.steps_per_epoch})")
                break
            means = {f"epoch_{k}": v / max(n, 1) for k, v in sums.items()}
            self.epoch += 1
            self.step_in_epoch = 0
            self.logger.log(self.global_step, {**means, "epoch": self.epoch}, kind="epoch")
            self.save(epoch_end=True)
            if main and n:
                print(f"epoch {self.epoch}/{cfg.train.epochs}: loss {means['epoch_loss']:.4f}")
        results: dict[str, Any] = {}
        if dist.is_main():
            plot_losses(self.run_dir)
            if evaluate is not None and cfg.data.eval_split:
                results = evaluate(self.method, cfg, self.device, self.progress)
                self.logger.log(self.global_step, results, kind="eval")
        dist.barrier()
        self.logger.close()
        return results


def train(cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True,
          evaluate: Evaluator | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (resuming from its last checkpoint when asked); returns
    what ``evaluate`` measured at the end (see :meth:`Trainer.fit`)."""
    trainer = Trainer(cfg, run_dir, resume=resume, progress=progress)
    try:
        return trainer.fit(evaluate)
    finally:
        trainer.model = trainer.method  # free the DDP wrapper before the group (see cleanup)
        dist.cleanup()
