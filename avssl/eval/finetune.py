"""Fine-tuning on action recognition (UCF-101 / HMDB-51), docs/reference.md section 4.1.

Protocol (AVID/CMA, Morgado et al. CVPR 2021): the pretrained video encoder plus a linear
classifier with dropout 0.5, trained end to end with Adam (lr 1e-4) on random clips; step
schedule (UCF: 16 epochs, milestones 6/10/14; HMDB: 10 epochs, 3/6/8; gamma 0.3). Test:
Clip@1 (every clip on its own) and Video@1 (softmax averaged over 10 uniformly spaced clips
per video). Each (train split, test split) pair is reported and the mean over pairs.

Multi-GPU / multi-node like training: under ``torchrun`` the global ``data.batch_size`` is split
over the processes, gradients are averaged by DistributedDataParallel (the classifier alone
during the warm-up epochs, the whole model after), and the test clips are sharded over the
processes without padding and gathered before scoring, so the numbers do not depend on the
number of processes beyond the usual per-GPU BatchNorm statistics. Rank 0 writes the results.

The helpers the protocols share are in :mod:`avssl.eval.common`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from avssl.config import (
    Config,
)
from avssl.engine.optim import build_optimizer, build_scheduler
from avssl.eval.common import (
    SplitSpec,
    add_common_arguments,
    format_table,
    load_encoder,
    load_eval_config,
    results_path,
)
from avssl.models.heads import LinearClassifier
from avssl.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)
S = TypeVar("S")


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------
@dataclass
class FinetuneSettings:
    """The ``eval`` section for fine-tuning (not part of :class:`avssl.config.Config`)."""

    splits: list[SplitSpec] = field(default_factory=list)  # []: data.split / data.eval_split
    num_test_clips: int = 10
    dropout: float = 0.5
    warmup_epochs: int = 0  # classifier-only epochs (encoder frozen) before fine-tuning
    test_batch_size: int = 0  # 0: data.batch_size
    max_train_steps: int = 0  # 0: every batch (for smoke tests)


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def multi_clip_accuracy(probs: Tensor, video_index: Tensor, labels: Tensor
                        ) -> tuple[float, float]:
    """Clip@1 and Video@1 (fractions in [0, 1]).

    probs: (N_clips, C) class probabilities (softmax) of every clip; video_index: (N_clips,)
    the video of each clip; labels: (N_clips,) the video's label. Video@1 takes the argmax of
    the probabilities averaged over the clips of a video (docs/reference.md section 4.1).
    """
    clip_acc = float((probs.argmax(1) == labels).float().mean())
    uniq, inv = torch.unique(video_index, return_inverse=True)
    summed = torch.zeros(len(uniq), probs.shape[1], dtype=probs.dtype).index_add_(0, inv, probs)
    counts = torch.zeros(len(uniq), dtype=probs.dtype).index_add_(0, inv, torch.ones_like(
        inv, dtype=probs.dtype))
    vlabels = torch.zeros(len(uniq), dtype=labels.dtype).scatter_(0, inv, labels)
    video_acc = float(((summed / counts[:, None]).argmax(1) == vlabels).float().mean())
    return clip_acc, video_acc


# ----------------------------------------------------------------------------------------------
# Fine-tuning
# ----------------------------------------------------------------------------------------------
class VideoClassifier(nn.Module):
    """Video encoder + LinearClassifier: (B, 3, T, H, W) -> (B, num_classes) logits."""

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = LinearClassifier(encoder.out_dim, num_classes, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.encoder(x))


def _num_classes(ds: Any) -> int:
    if ds.classes:
        return len(ds.classes)
    from avssl.data.manifest import read_manifest

    labels = [int(r["label"]) for r in read_manifest(ds.manifest) if r.get("label") is not None]
    if not labels:
        raise ValueError(f"{ds.manifest}: no labelled rows")
    return max(labels) + 1


@torch.no_grad()
def predict_clips(model: nn.Module, loader: DataLoader, dev: torch.device, progress: bool = False
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Softmax (N_clips, C), video index (N_clips,), label (N_clips,) of every clip of
    ``loader``; under DDP each process predicts its own shard and the shards are gathered."""
    from tqdm import tqdm

    from avssl.utils.distributed import all_gather_nograd

    model.eval()
    probs, idx, labels = [], [], []
    for batch in tqdm(loader, desc="test", leave=False, disable=None if progress else True):
        probs.append(F.softmax(model(batch["video"].to(dev)).float(), dim=1))
        idx.append(batch["index"].to(dev))
        labels.append(batch["label"].to(dev))
    out = [torch.cat(t) if t else torch.empty(0, device=dev) for t in (probs, idx, labels)]
    return tuple(all_gather_nograd(t).cpu() for t in out)  # type: ignore[return-value]


def _shard(dataset: Any, rank: int, world: int) -> Any:
    """Items rank, rank + world, ... of ``dataset`` (no padding: every clip scored once)."""
    from torch.utils.data import Subset

    if world == 1:
        return dataset
    return Subset(dataset, range(rank, len(dataset), world))


def _average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the processes:
    each one updated them on its own shard in the last forward pass, and the test must use
    one model everywhere."""
    from avssl.utils.distributed import all_reduce_mean

    for b in model.buffers():
        if b.is_floating_point():
            b.copy_(all_reduce_mean(b))


def _unshuffle(t: Tensor, order: Tensor) -> Tensor:
    """Rows of ``t`` are items ``order``: put row k at position ``order[k]``."""
    out = torch.empty_like(t)
    out[order] = t
    return out


def _ddp(module: nn.Module, dev: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)


def finetune_split(cfg: Config, settings: FinetuneSettings, split: SplitSpec,
                   checkpoint: str | Path | None, progress: bool = False,
                   outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune a fresh copy of the encoder on ``split.train``, test on ``split.test``.

    Returns ``clip@1``, ``video@1`` (fractions), ``num_train``/``num_test`` videos, losses.
    Under ``torchrun`` (an initialized process group) it runs data-parallel; every process
    returns the same result. ``outputs``, when given, receives the trained ``model`` and the
    test ``probs`` (N_clips, C), ``video_index`` and ``labels`` (N_clips,).
    """
    from tqdm import tqdm

    from avssl.data.dataset import AVClipDataset, build_loader
    from avssl.utils.distributed import all_reduce_mean, init_distributed

    info = init_distributed()
    world, dev = info.world_size, info.device
    progress = progress and info.is_main
    torch.manual_seed(cfg.seed)
    manifest = split.manifest or cfg.data.manifest
    train_ds = AVClipDataset(manifest, cfg.data, split=split.train, train=True,
                             clip_mode="random", clips_per_video=1, require_audio=False,
                             seed=cfg.seed)
    test_ds = AVClipDataset(manifest, cfg.data, split=split.test, train=False,
                            clip_mode="uniform", clips_per_video=settings.num_test_clips,
                            require_audio=False, seed=cfg.seed)
    num_classes = _num_classes(train_ds)
    if cfg.data.batch_size % world:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} is not divisible by the "
                         f"{world} processes")
    bs = min(cfg.data.batch_size, len(train_ds)) // world
    if bs < 1:
        raise ValueError(f"{len(train_ds)} training clips cannot feed {world} processes")
    drop_last = len(train_ds) > bs * world
    train_loader = build_loader(train_ds, bs, cfg.data.num_workers, shuffle=True,
                                drop_last=drop_last, seed=cfg.seed, distributed=world > 1)
    test_bs = max(1, (settings.test_batch_size or cfg.data.batch_size) // world)
    test_loader = build_loader(_shard(test_ds, info.rank, world), test_bs, cfg.data.num_workers,
                               shuffle=False, drop_last=False, distributed=False)
    model = VideoClassifier(load_encoder(cfg, checkpoint, "video"), num_classes,
                            settings.dropout).to(dev)
    steps = len(train_loader)
    if settings.max_train_steps:
        steps = min(steps, settings.max_train_steps)
    opt = build_optimizer(model.parameters(), cfg.optim)
    sched = build_scheduler(opt, cfg.optim, steps, cfg.train.epochs)
    losses: list[float] = []
    total = settings.warmup_epochs + cfg.train.epochs
    # Warm-up trains the classifier on frozen features: DDP then wraps the classifier alone
    # (DDP expects a gradient for every parameter it holds).
    warm_net = _ddp(model.classifier, dev) if world > 1 and settings.warmup_epochs else None
    full_net = _ddp(model, dev) if world > 1 and cfg.train.epochs else model
    for epoch in range(total):
        warm = epoch < settings.warmup_epochs
        for p in model.encoder.parameters():
            p.requires_grad_(not warm)  # Adam skips parameters without gradients
        model.train()
        if warm:
            model.encoder.eval()  # frozen encoder: BN statistics untouched too
        train_loader.set_epoch(epoch)
        run, n = 0.0, 0
        bar = tqdm(train_loader, total=steps, desc=f"epoch {epoch + 1}/{total}", leave=False,
                   disable=None if progress else True)
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            x = batch["video"].to(dev)
            if warm:
                with torch.no_grad():
                    feats = model.encoder(x)
                logits = (warm_net or model.classifier)(feats)
            else:
                logits = full_net(x)
            loss = F.cross_entropy(logits.float(), batch["label"].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            if not warm:
                sched.step()
            run, n = run + float(loss.detach()), n + 1
        mean_loss = float(all_reduce_mean(torch.tensor([run / max(n, 1)], device=dev)))
        losses.append(mean_loss)
        log.info("epoch %d/%d%s: loss %.4f", epoch + 1, total, " (warm-up)" if warm else "",
                 losses[-1])
        if not math.isfinite(losses[-1]):
            raise RuntimeError(f"loss is {losses[-1]} at epoch {epoch + 1}")
    if world > 1:
        _average_buffers(model)
    probs, idx, labels = predict_clips(model, test_loader, dev, progress)
    if world > 1:  # shards were gathered in rank order: back to dataset order
        order = torch.cat([torch.arange(r, len(test_ds), world) for r in range(world)])
        probs, idx, labels = (_unshuffle(t, order) for t in (probs, idx, labels))
    clip_acc, video_acc = multi_clip_accuracy(probs, idx, labels)
    if outputs is not None:
        outputs.update(model=model, probs=probs, video_index=idx, labels=labels)
    return {"train_split": split.train, "test_split": split.test, "manifest": str(manifest),
            "num_classes": num_classes, "num_train": train_ds.num_videos,
            "num_test": test_ds.num_videos, "clips_per_test_video": settings.num_test_clips,
            "num_processes": world, "clip@1": clip_acc, "video@1": video_acc,
            "train_loss": losses}


def finetune(cfg: Config, settings: FinetuneSettings, checkpoint: str | Path | None,
             progress: bool = False) -> dict[str, Any]:
    """Every split of ``settings.splits`` (or data.split/data.eval_split) and their mean."""
    splits = settings.splits or [SplitSpec(str(cfg.data.split), str(cfg.data.eval_split))]
    per = []
    for s in splits:
        t0 = time.time()
        r = finetune_split(cfg, settings, s, checkpoint, progress)
        r["seconds"] = round(time.time() - t0, 1)
        per.append(r)
    mean = {k: sum(r[k] for r in per) / len(per) for k in ("clip@1", "video@1")}
    return {"protocol": "finetune", "checkpoint": str(checkpoint) if checkpoint else None,
            "epochs": cfg.train.epochs, "warmup_epochs": settings.warmup_epochs,
            "optim": dataclasses.asdict(cfg.optim), "splits": per, "mean": mean}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``avssl eval finetune CONFIG [--checkpoint CKPT] [--out JSON] [key=value ...]``."""
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Config/manifest/checkpoint errors propagate to the top-level CLI (exit code 2).
    Under ``torchrun`` every process fine-tunes its share; rank 0 writes and prints."""
    from avssl.utils.distributed import cleanup, init_distributed

    cfg, settings = load_eval_config(args.config, args.overrides, FinetuneSettings)
    out = results_path(args, "finetune")
    info = init_distributed()
    try:
        res = finetune(cfg, settings, args.checkpoint, progress=not args.no_progress)
    finally:
        cleanup()
    if not info.is_main:
        return 0
    atomic_write_json(out, res)
    rows = [[f"{r['train_split']}/{r['test_split']}", r["num_test"], r["clip@1"], r["video@1"]]
            for r in res["splits"]]
    rows.append(["mean", "", res["mean"]["clip@1"], res["mean"]["video@1"]])
    print(format_table(["split", "videos", "Clip@1", "Video@1"], rows))
    print(f"results: {out}")
    return 0
