"""FIFO queue of keys for contrastive learning with many negatives (He et al. 2020, MoCo).

Distributed policy: :meth:`Queue.enqueue` all-gathers the keys (no gradient, rank order) before
writing, so every rank holds the same queue and the same pointer; nothing is broadcast. The keys,
the instance ids and the write pointer are persistent buffers, so a resumed run continues with the
same queue.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avssl.memory.bank import random_unit_rows
from avssl.utils.distributed import all_gather_nograd


class Queue(nn.Module):
    """``size`` keys of dimension ``dim`` (MoCo, He et al. 2020), oldest overwritten first.

    Buffers: ``keys`` (size, D) start as random unit rows (generated from ``seed`` on the CPU);
    ``ids`` (size,) long, the instance index of each key (-1 while it is still a random key), so
    a method can mask keys of its own videos; ``ptr`` () long, the next row written.
    """

    keys: Tensor
    ids: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"need size >= 1 and dim >= 1, got {size} x {dim}")
        self.size, self.dim = size, dim
        self.register_buffer("keys", random_unit_rows(size, dim, seed, dtype))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"

    @torch.no_grad()
    def enqueue(self, keys: Tensor, ids: Tensor | None = None) -> None:
        """Append ``keys`` (B, D) (and their instance ``ids`` (B,), default -1) from every rank.

        The gathered batch is written at ``ptr``, wrapping around; when it is longer than the
        queue only its last ``size`` keys are kept.
        """
        keys = keys.detach().reshape(-1, self.dim)
        if ids is None:
            ids = torch.full((keys.shape[0],), -1, dtype=torch.long, device=keys.device)
        if ids.reshape(-1).shape[0] != keys.shape[0]:
            raise ValueError(f"{ids.numel()} ids for {keys.shape[0]} keys")
        keys = all_gather_nograd(keys.to(self.keys.device, self.keys.dtype))
        ids = all_gather_nograd(ids.reshape(-1).to(self.ids.device, torch.long))
        n = keys.shape[0]
        if n > self.size:
            keys, ids, n = keys[-self.size:], ids[-self.size:], self.size
        # Rows written, in order, starting at ptr and wrapping; index_copy_ keeps it in place.
        start = int(self.ptr)
        rows = (torch.arange(n, device=self.keys.device) + start) % self.size
        self.keys.index_copy_(0, rows, keys)
        self.ids.index_copy_(0, rows, ids)
        self.ptr.fill_((start + n) % self.size)
