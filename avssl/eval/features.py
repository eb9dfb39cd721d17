"""Frozen video features for probes: per-layer global max-pooling, multi-clip averaging, caching.

Protocol (docs/reference.md section 4.2): the encoder is frozen in eval mode (BatchNorm
uses its running statistics), every stage map conv2x..conv5x is globally max-pooled over time and
space, and the clips of one video are averaged. Extracted features are cached on disk, keyed by
the checkpoint (path + mtime), the layers and the data settings, so a second probe is instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from avssl.utils.atomic import atomic_torch_save

log = logging.getLogger(__name__)

LAYERS: tuple[str, ...] = ("conv2x", "conv3x", "conv4x", "conv5x")
CACHE_VERSION = 1


@dataclass
class FrozenFeatures:
    """Per-video features of one split.

    ``feats[layer]``: float (N, C_layer); ``labels``: long (N,) (-1 where unlabelled);
    ``index``: long (N,) the video's position in the dataset, ascending.
    """

    feats: dict[str, Tensor]
    labels: Tensor
    index: Tensor

    @property
    def num_videos(self) -> int:
        return int(self.labels.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {"feats": self.feats, "labels": self.labels, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrozenFeatures:
        return cls(feats=dict(d["feats"]), labels=d["labels"], index=d["index"])


def max_pool_map(x: Tensor) -> Tensor:
    """(B, C, *grid) -> (B, C): global max over every non-channel axis (docs/reference.md 4.2)."""
    return x.flatten(2).amax(dim=2)


def average_by_index(x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of the rows sharing an ``index`` (multi-clip averaging).

    x: (M, C) per-clip features; index: (M,) video ids. Returns (unique ids (N,) ascending,
    means (N, C)).
    """
    uniq, inv = torch.unique(index, return_inverse=True)
    sums = torch.zeros(len(uniq), x.shape[1], dtype=x.dtype).index_add_(0, inv, x)
    counts = torch.bincount(inv, minlength=len(uniq)).to(x.dtype)
    return uniq, sums / counts[:, None]


def checkpoint_identity(checkpoint: str | Path) -> str:
    """``resolved path@mtime_ns``: changes whenever the checkpoint file is rewritten."""
    p = Path(checkpoint).resolve()
    return f"{p}@{p.stat().st_mtime_ns}"


def weights_identity(encoder: nn.Module) -> str:
    """A hash of the encoder's state dict (cache identity when no checkpoint file is named)."""
    h = hashlib.sha1()
    for k, v in encoder.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return "weights:" + h.hexdigest()


def cache_key(identity: str, layers: Sequence[str], dataset: Dataset) -> str:
    """Hash of (encoder identity, layers, data config, split, clip sampling, manifest)."""
    cfg = getattr(dataset, "cfg", None)
    data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else repr(cfg)
    if isinstance(data, dict):  # loader settings do not change the features
        for k in ("batch_size", "num_workers", "max_failure_fraction"):
            data.pop(k, None)
    manifest = getattr(dataset, "manifest", None)
    parts = {
        "version": CACHE_VERSION,
        "identity": identity,
        "layers": list(layers),
        "data": data,
        "split": getattr(dataset, "split", None),
        "clip_mode": getattr(dataset, "clip_mode", None),
        "clips_per_video": getattr(dataset, "clips_per_video", None),
        "manifest": checkpoint_identity(manifest) if manifest and Path(manifest).exists()
        else str(manifest),
        "num_items": len(dataset),  # type: ignore[arg-type]
    }
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


@torch.no_grad()
def _extract(encoder: nn.Module, dataset: Dataset, layers: Sequence[str], batch_size: int,
             device: torch.device, num_workers: int, progress: bool) -> FrozenFeatures:
    was_training = encoder.training
    encoder.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    per_layer: dict[str, list[Tensor]] = {name: [] for name in layers}
    idx, labels = [], []
    try:
        for batch in tqdm(loader, desc="features", leave=False,
                          disable=None if progress else True):
            maps = encoder.forward_features(batch["video"].to(device))  # type: ignore[operator]
            for name in layers:
                if name not in maps:
                    raise KeyError(f"encoder has no layer {name!r} (has: {', '.join(maps)})")
                per_layer[name].append(max_pool_map(maps[name]).float().cpu())
            idx.append(batch["index"])
            labels.append(batch.get("label", torch.full_like(batch["index"], -1)))
    finally:
        encoder.train(was_training)
    i, y = torch.cat(idx), torch.cat(labels).long()
    feats = {name: average_by_index(torch.cat(per_layer[name]), i)[1] for name in layers}
    uniq, inv = torch.unique(i, return_inverse=True)
    ym = torch.full((len(uniq),), -1, dtype=torch.long).scatter_(0, inv, y)
    return FrozenFeatures(feats=feats, labels=ym, index=uniq)


def extract_features(encoder: nn.Module, dataset: Dataset, layers: Sequence[str] = LAYERS,
                     batch_size: int = 32, device: torch.device | str = "cpu",
                     cache_dir: str | Path | None = None, checkpoint: str | Path | None = None,
                     identity: str | None = None, num_workers: int = 0,
                     progress: bool = True) -> FrozenFeatures:
    """Max-pooled, clip-averaged features of every video of ``dataset`` for each layer.

    encoder: has ``forward_features((B, 3, T, H, W)) -> {layer: (B, C, T', H', W')}``; it is
    run in eval mode under ``no_grad`` (its train/eval state is restored afterwards).
    dataset: items with ``video``, ``index`` (video id) and ``label``; several clips per video
    (e.g. ``AVClipDataset(..., clip_mode="uniform", clips_per_video=k)``) are averaged.
    cache_dir: when given, features are read from / written (atomically) to
    ``cache_dir/feats_<key>.pt``; the key hashes ``identity`` (default: ``checkpoint`` path +
    mtime, else a hash of the encoder's weights), ``layers``, the data config, split and clip
    sampling. Returns :class:`FrozenFeatures` with ``feats[layer]`` (N_videos, C_layer).
    """
    device = torch.device(device)
    layers = tuple(layers)
    path: Path | None = None
    if cache_dir is not None:
        if identity is None:
            identity = (checkpoint_identity(checkpoint) if checkpoint is not None
                        else weights_identity(encoder))
        path = Path(cache_dir) / f"feats_{cache_key(identity, layers, dataset)}.pt"
        if path.is_file():
            try:
                cached = FrozenFeatures.from_dict(torch.load(path, map_location="cpu",
                                                             weights_only=True))
                log.info("features read from cache %s", path)
                return cached
            except Exception as e:  # a corrupt cache file is recomputed, not fatal
                log.warning("ignoring unreadable feature cache %s (%s)", path, e)
    out = _extract(encoder, dataset, layers, batch_size, device, num_workers, progress)
    if path is not None:
        atomic_torch_save(out.to_dict(), path)
    return out
