"""Same-modality video retrieval, VCOP protocol (Xu et al. CVPR 2019), docs/reference.md sec. 4.3.

Each video: 10 uniformly spaced clips through the frozen video encoder (globally pooled
conv5x features), averaged over the clips and L2-normalized. Every test video queries the train
split by cosine similarity; R@k (k in 1, 5, 10, 20, 50) is the fraction of queries with a video
of the same class among the k nearest.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from avssl.config import Config
from avssl.eval.common import (
    SplitSpec,
    add_common_arguments,
    device,
    format_table,
    load_encoder,
    load_eval_config,
    results_path,
)
from avssl.utils.atomic import atomic_write_json

KS = (1, 5, 10, 20, 50)


@dataclass
class RetrievalSettings:
    """The ``eval`` section for VCOP retrieval (not part of :class:`avssl.config.Config`)."""

    splits: list[SplitSpec] = field(default_factory=list)  # []: data.split / data.eval_split
    num_clips: int = 10
    ks: list[int] = field(default_factory=lambda: list(KS))


def topk_class_recall(query_feats: Tensor, query_labels: Tensor, gallery_feats: Tensor,
                      gallery_labels: Tensor, ks: Sequence[int] = KS) -> dict[int, float]:
    """R@k: fraction of queries with a gallery item of their class among the k most similar.

    query_feats: (Q, D), gallery_feats: (G, D), compared by cosine similarity (normalized
    here); query_labels: (Q,), gallery_labels: (G,). k larger than G is clipped to G. Ties are
    broken by :func:`torch.topk` (VCOP protocol, Xu et al. 2019).
    """
    q = F.normalize(query_feats.float(), dim=1)
    g = F.normalize(gallery_feats.float(), dim=1)
    sims = q @ g.T  # (Q, G)
    kmax = min(max(ks), g.shape[0])
    top = sims.topk(kmax, dim=1).indices  # (Q, kmax), most similar first
    hit = gallery_labels[top] == query_labels[:, None]  # (Q, kmax)
    first = torch.where(hit.any(1), hit.float().argmax(1), kmax)  # 0-based rank of 1st hit
    return {k: float((first < min(k, kmax)).float().mean()) for k in ks}


@torch.no_grad()
def video_features(encoder: nn.Module, loader: DataLoader, dev: torch.device,
                   progress: bool = False) -> tuple[Tensor, Tensor]:
    """Per-video features (V, D), L2-normalized means over each video's clips, and labels (V,),
    ordered by the dataset's video index."""
    from tqdm import tqdm

    encoder.eval()
    feats, idx, labels = [], [], []
    for batch in tqdm(loader, desc="features", leave=False, disable=None if progress else True):
        feats.append(encoder(batch["video"].to(dev)).float().cpu())
        idx.append(batch["index"])
        labels.append(batch["label"])
    f, i, y = torch.cat(feats), torch.cat(idx), torch.cat(labels)
    uniq, inv = torch.unique(i, return_inverse=True)
    mean = torch.zeros(len(uniq), f.shape[1]).index_add_(0, inv, f)
    vlabels = torch.zeros(len(uniq), dtype=y.dtype).scatter_(0, inv, y)
    return F.normalize(mean, dim=1), vlabels


def vcop_retrieval(cfg: Config, settings: RetrievalSettings, checkpoint: str | Path | None,
                   progress: bool = False) -> dict[str, Any]:
    """R@k of every split pair (test queries the train split) and the mean over pairs."""
    from avssl.data.dataset import AVClipDataset

    dev = device()
    encoder = load_encoder(cfg, checkpoint, "video").to(dev)
    splits = settings.splits or [SplitSpec(str(cfg.data.split), str(cfg.data.eval_split))]
    per = []
    for s in splits:
        t0 = time.time()
        manifest = s.manifest or cfg.data.manifest
        feats = {}
        for role, name in (("gallery", s.train), ("query", s.test)):
            ds = AVClipDataset(manifest, cfg.data, split=name, train=False, clip_mode="uniform",
                               clips_per_video=settings.num_clips, require_audio=False,
                               seed=cfg.seed)
            loader = DataLoader(ds, batch_size=cfg.data.batch_size,
                                num_workers=cfg.data.num_workers)
            feats[role] = video_features(encoder, loader, dev, progress)
        rec = topk_class_recall(*feats["query"], *feats["gallery"], settings.ks)
        per.append({"train_split": s.train, "test_split": s.test, "manifest": str(manifest),
                    "num_queries": len(feats["query"][1]), "num_gallery": len(feats["gallery"][1]),
                    **{f"R@{k}": v for k, v in rec.items()},
                    "seconds": round(time.time() - t0, 1)})
    mean = {f"R@{k}": sum(r[f"R@{k}"] for r in per) / len(per) for k in settings.ks}
    return {"protocol": "vcop_retrieval", "checkpoint": str(checkpoint) if checkpoint else None,
            "num_clips": settings.num_clips, "splits": per, "mean": mean}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``avssl eval retrieval CONFIG [--checkpoint CKPT] [--out JSON] [key=value ...]``."""
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Config/manifest/checkpoint errors propagate to the top-level CLI (exit code 2)."""
    cfg, settings = load_eval_config(args.config, args.overrides, RetrievalSettings)
    out = results_path(args, "retrieval")
    res = vcop_retrieval(cfg, settings, args.checkpoint, progress=not args.no_progress)
    atomic_write_json(out, res)
    ks = settings.ks
    rows = [[f"{r['train_split']}/{r['test_split']}", r["num_queries"],
             *(r[f"R@{k}"] for k in ks)] for r in res["splits"]]
    rows.append(["mean", "", *(res["mean"][f"R@{k}"] for k in ks)])
    print(format_table(["split", "queries", *(f"R@{k}" for k in ks)], rows))
    print(f"results: {out}")
    return 0
