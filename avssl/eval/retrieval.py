"""Retrieval metrics: cross-modal (video <-> audio) and same-modality nearest neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from avssl.config import Config


def ranks_of_matches(queries: Tensor, keys: Tensor) -> Tensor:
    """1-based rank of key i among all keys for query i, by cosine similarity.

    queries, keys: (N, D). Returns (N,) long. Ties count against the query (pessimistic).
    """
    q, k = F.normalize(queries.float(), dim=1), F.normalize(keys.float(), dim=1)
    sims = q @ k.T
    own = sims.diagonal()[:, None]
    return (sims >= own).sum(dim=1)


def cross_modal_retrieval(video: Tensor, audio: Tensor,
                          ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Video->audio and audio->video retrieval of the same clip among N.

    video, audio: (N, D) embeddings of the same N clips in a shared space. Returns
    ``v2a_R@k``, ``a2v_R@k`` (percent), ``v2a_median_rank``, ``a2v_median_rank`` and ``chance_R@1``.
    """
    n = video.shape[0]
    out: dict[str, float] = {"num_queries": float(n), "chance_R@1": 100.0 / n}
    for name, (q, k) in {"v2a": (video, audio), "a2v": (audio, video)}.items():
        r = ranks_of_matches(q, k)
        for kk in ks:
            out[f"{name}_R@{kk}"] = 100.0 * float((r <= kk).float().mean())
        out[f"{name}_median_rank"] = float(r.float().median())
    return out


@torch.no_grad()
def extract_embeddings(method: torch.nn.Module, loader: DataLoader, device: torch.device,
                       progress: bool = True) -> dict[str, Tensor]:
    """Head embeddings of every clip: ``video``, ``audio`` (N, D), ``index``, ``label`` (N,).

    Clips of the same video (``index``) are averaged then re-normalized.
    """
    enc = method.encoders
    was_training = method.training
    method.eval()
    vs, as_, idx, labels = [], [], [], []
    for batch in tqdm(loader, desc="embedding", leave=False, disable=None if progress else True):
        vs.append(enc.embed_video(batch["video"].to(device)).cpu())
        as_.append(enc.embed_audio(batch["audio"].to(device)).cpu())
        idx.append(batch["index"])
        labels.append(batch.get("label", torch.full_like(batch["index"], -1)))
    method.train(was_training)
    v, a, i, y = torch.cat(vs), torch.cat(as_), torch.cat(idx), torch.cat(labels)
    uniq, inv = torch.unique(i, return_inverse=True)
    n = len(uniq)
    vm = torch.zeros(n, v.shape[1]).index_add_(0, inv, v)
    am = torch.zeros(n, a.shape[1]).index_add_(0, inv, a)
    ym = torch.full((n,), -1, dtype=torch.long).scatter_(0, inv, y.long())
    return {"video": F.normalize(vm, dim=1), "audio": F.normalize(am, dim=1), "index": uniq,
            "label": ym}


def evaluate_cross_modal(method: torch.nn.Module, cfg: Config, device: torch.device,
                         progress: bool = True) -> dict[str, Any]:
    """Cross-modal retrieval on ``cfg.data.eval_split`` (centre clip of each held-out video)."""
    from avssl.data.dataset import AVClipDataset

    ds = AVClipDataset(cfg.data.manifest, cfg.data, split=cfg.data.eval_split, train=False,
                       clips_per_video=1, seed=cfg.seed)
    loader = DataLoader(ds, batch_size=min(64, len(ds)), num_workers=cfg.data.num_workers)
    emb = extract_embeddings(method, loader, device, progress)
    res = cross_modal_retrieval(emb["video"], emb["audio"])
    if (emb["label"] >= 0).all():
        res.update(class_match_at_1(emb["video"], emb["audio"], emb["label"]))
    return {f"retrieval_{k}": v for k, v in res.items()}


def class_match_at_1(video: Tensor, audio: Tensor, labels: Tensor) -> dict[str, float]:
    """Percent of queries whose top-1 cross-modal neighbour has the query's label.

    video, audio: (N, D); labels: (N,) long. ``class_chance@1`` is sum_c p_c^2, the rate of a
    random neighbour (self included, as the gallery includes the query's own clip).
    """
    sims = F.normalize(video.float(), dim=1) @ F.normalize(audio.float(), dim=1).T
    p = torch.bincount(labels).float() / len(labels)
    return {"v2a_class@1": 100.0 * float((labels[sims.argmax(1)] == labels).float().mean()),
            "a2v_class@1": 100.0 * float((labels[sims.argmax(0)] == labels).float().mean()),
            "class_chance@1": 100.0 * float((p * p).sum())}
