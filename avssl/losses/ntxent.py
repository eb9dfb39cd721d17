"""NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Each of the 2N augmented views of a batch of N instances is an
anchor; its positive is the other view of the same instance, its negatives the 2N - 2 other
views (itself excluded). With L2-normalized embeddings and ``s(u, v) = u . v``:

    l(i, j) = -log( exp(s(z_i, z_j) / T) / sum_{k != i} exp(s(z_i, z_k) / T) ),

and the loss is the mean of l over the 2N (anchor, positive) pairs, i.e. over both directions.

Distributed policy: anchors are this process's 2B views, candidates are the 2N views of every
process (autograd-aware gather, :func:`avssl.utils.distributed.all_gather_grad`); each process
averages over its own anchors. With DDP's gradient averaging this equals one process holding
the global batch (the local batches are equal: the trainer drops the last, short batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avssl.losses.precision import full_precision
from avssl.utils import distributed as D


def nt_xent(z1: Tensor, z2: Tensor, temperature: float, z1_all: Tensor | None = None,
            z2_all: Tensor | None = None, offset: int = 0) -> Tensor:
    """NT-Xent over the local anchors, scalar.

    z1, z2: (B, D) L2-normalized embeddings of the two views of the B local instances (row b
    of ``z1`` and row b of ``z2`` are a positive pair). z1_all, z2_all: (N, D) the two views
    of every instance that serves as a candidate (default: ``z1``/``z2``); local instance b
    sits at row ``offset + b`` of both. The 2N candidates are ``cat([z1_all, z2_all])``: anchor
    ``z1[b]`` has positive ``z2_all[offset + b]``, anchor ``z2[b]`` has ``z1_all[offset + b]``,
    and each excludes only itself. Returns the cross-entropy of ``cos / temperature`` averaged
    over the 2B anchors, computed in fp32 (fp64 inputs stay fp64) even under autocast.
    """
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected z1, z2 of one shape (B, D), got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    if z1_all.shape != z2_all.shape or z1_all.ndim != 2 or z1_all.shape[1] != z1.shape[1]:
        raise ValueError(f"expected z1_all, z2_all of one shape (N, {z1.shape[1]}), got "
                         f"{tuple(z1_all.shape)} and {tuple(z2_all.shape)}")
    b, n = z1.shape[0], z1_all.shape[0]
    if not 0 <= offset <= n - b:
        raise ValueError(f"offset {offset}: the {b} anchors do not fit in {n} candidates")
    if n < 2:
        raise ValueError("NT-Xent needs at least 2 instances (one negative pair)")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        anchors = torch.cat([full_precision(z1), full_precision(z2)])  # (2B, D)
        cands = torch.cat([full_precision(z1_all), full_precision(z2_all)])
        cands = cands.to(anchors.dtype)  # (2N, D)
        logits = anchors @ cands.T / temperature  # (2B, 2N)
        own = torch.arange(offset, offset + b, device=z1.device)
        rows = torch.arange(2 * b, device=z1.device)
        self_col = torch.cat([own, own + n])  # where each anchor sits among the candidates
        target = torch.cat([own + n, own])  # its other view
        logits = logits.index_put((rows, self_col), logits.new_tensor(float("-inf")))
        return F.cross_entropy(logits, target)


def nt_xent_global(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """:func:`nt_xent` with the candidates gathered from every process (a single process: its
    own batch). Call it on every rank (it does collectives)."""
    if not D.is_dist() or D.world_size() == 1:
        return nt_xent(z1, z2, temperature)
    offset = D.rank_offset(z1.shape[0], z1.device)
    return nt_xent(z1, z2, temperature, D.all_gather_grad(z1), D.all_gather_grad(z2), offset)
