"""Per-modality memory bank of L2-normalized instance embeddings (Wu et al. 2018, NPID; used by
Morgado et al. 2021, AVID-CMA).

Row ``i`` holds a running average of the embeddings of manifest row ``i`` (manifests are sorted
by id, so a row means the same video everywhere). After scoring, rows are updated with
``m_i <- normalize(momentum * m_i + (1 - momentum) * e_i)`` (momentum 0.5 published).

Distributed policy:

- Every rank holds the full bank. It starts identical on every rank because it is generated on
  the CPU from ``seed`` (whatever device it later moves to); :meth:`MemoryBank.sync_from`
  additionally copies rank 0's bank to all ranks on request (e.g. after a partial restore).
- :meth:`MemoryBank.update` all-gathers ``idx`` and ``emb`` (no gradient, rank order) and every
  rank applies the same global update with the same deterministic ops, so the banks stay
  bit-identical without ever broadcasting the bank.
- Duplicate indices in one global update (one video sampled twice, e.g. with
  ``clips_per_video > 1`` or on two ranks) are merged first: their embeddings are averaged (summed
  in global-batch order, occurrence by occurrence, so the sum is deterministic even on CUDA),
  then the row gets ONE momentum update with that mean.
- Negative sampling is local: each rank draws its own negatives with its own generator.
- Wrap a method holding banks in ``DistributedDataParallel(..., broadcast_buffers=False)``: the
  banks are already identical, and DDP would otherwise re-send every bank (up to GBs) each step.

Memory: the bank can have millions of rows; updates touch only the B gathered rows
(``index_select`` + ``index_copy_``), never copying the full bank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.utils.distributed import all_gather_nograd, broadcast_

_INIT_CHUNK = 1 << 16


def random_unit_rows(num_rows: int, dim: int, seed: int,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """(num_rows, dim) Gaussian rows normalized to unit L2 norm, generated on the CPU from
    ``seed`` (identical on every machine), normalized in place chunk by chunk (no second copy)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(num_rows, dim, generator=g, dtype=torch.float32)
    for start in range(0, num_rows, _INIT_CHUNK):
        chunk = rows[start:start + _INIT_CHUNK]
        chunk.div_(torch.linalg.vector_norm(chunk, dim=1, keepdim=True).clamp_min_(1e-12))
    return rows if dtype == torch.float32 else rows.to(dtype)


def _sample_excluding_sorted(excl: Tensor, num_rows: int, k: int,
                             generator: torch.Generator | None) -> Tensor:
    """Uniform draws from [0, num_rows) minus each row's set.

    ``excl`` (B, P): each row sorted ascending, unique values first, padding entries set to
    ``num_rows + P`` (past every valid value). Draw ``r`` uniform in [0, num_rows - m_b) and map
    it to the r-th element of the complement: with sorted unique s_j, the r-th complement element
    is ``r + #{j : s_j - j <= r}``.
    """
    b, p = excl.shape
    valid = excl < num_rows
    m = valid.sum(dim=1, keepdim=True)  # (B, 1) set sizes
    free = num_rows - m
    if bool((free <= 0).any()):
        raise ValueError("an exclusion set covers every memory row: nothing left to sample")
    # randint over a huge range, then modulo: the bias is below num_rows / 2**62.
    raw = torch.randint(0, 1 << 62, (b, k), generator=generator, device=excl.device)
    r = raw % free
    shifted = excl - torch.arange(p, device=excl.device)  # s_j - j, nondecreasing per row
    return r + torch.searchsorted(shifted, r, right=True)


class MemoryBank(nn.Module):
    """A bank of ``num_rows`` unit-norm ``dim``-d rows (NPID, Wu et al. 2018).

    The rows live in the persistent buffer ``memory`` (N, D), so they are saved in
    ``state_dict`` and move with ``.to(device)``.
    """

    memory: Tensor

    def __init__(self, num_rows: int, dim: int, momentum: float = 0.5, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if num_rows < 2 or dim < 1:
            raise ValueError(f"need num_rows >= 2 and dim >= 1, got {num_rows} x {dim}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.num_rows, self.dim, self.momentum = num_rows, dim, float(momentum)
        self.register_buffer("memory", random_unit_rows(num_rows, dim, seed, dtype),
                             persistent=True)

    def extra_repr(self) -> str:
        return f"num_rows={self.num_rows}, dim={self.dim}, momentum={self.momentum}"

    @property
    def device(self) -> torch.device:
        return self.memory.device

    def rows(self, idx: Tensor) -> Tensor:
        """Rows ``idx`` (...) -> (..., D), a copy (no gradient: the bank is not a parameter)."""
        flat = idx.reshape(-1).to(self.device)
        return self.memory.index_select(0, flat).view(*idx.shape, self.dim)

    def sample_negatives(self, idx: Tensor, k: int,
                         generator: torch.Generator | None = None) -> Tensor:
        """(B,) own indices -> (B, K) long, uniform over [0, N) without each row's own index.

        Exact exclusion by the shift trick: draw r in [0, N - 1), return ``r + (r >= idx)``.
        ``generator`` must live on the bank's device (``None``: the global generator).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        own = idx.reshape(-1, 1).to(self.device)
        r = torch.randint(0, self.num_rows - 1, (own.shape[0], k), generator=generator,
                          device=self.device)
        return r + (r >= own).long()

    def sample_negatives_excluding(self, exclude: Tensor, k: int,
                                   generator: torch.Generator | None = None) -> Tensor:
        """(B, P) index sets -> (B, K) long, uniform over [0, N) outside each row's set.

        For the CMA positive-set NCE (Morgado et al. 2021): pass the positive set, with the
        instance's own index as an extra column if it must be excluded as well. Duplicates in a
        set are allowed; values outside [0, N) are ignored.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if exclude.dim() != 2:
            raise ValueError(f"exclude must be (B, P), got {tuple(exclude.shape)}")
        excl = exclude.to(self.device, torch.long)
        p = excl.shape[1]
        pad = self.num_rows + p
        excl = torch.where((excl >= 0) & (excl < self.num_rows), excl, pad)
        excl, _ = torch.sort(excl, dim=1)
        dup = torch.zeros_like(excl, dtype=torch.bool)
        dup[:, 1:] = excl[:, 1:] == excl[:, :-1]
        # Duplicates become padding; a second sort moves padding behind the unique values.
        excl, _ = torch.sort(torch.where(dup, pad, excl), dim=1)
        return _sample_excluding_sorted(excl, self.num_rows, k, generator)

    @torch.no_grad()
    def update(self, idx: Tensor, emb: Tensor) -> None:
        """Momentum update of rows ``idx`` (B,) with embeddings ``emb`` (B, D).

        Under DDP both are all-gathered first so every rank applies the same global update.
        Duplicate indices: embeddings averaged, one update (see the module docstring).
        """
        idx = idx.reshape(-1)
        emb = emb.detach().reshape(-1, self.dim)
        if idx.shape[0] != emb.shape[0]:
            raise ValueError(f"{idx.shape[0]} indices for {emb.shape[0]} embeddings")
        idx = all_gather_nograd(idx.to(self.device, torch.long))
        emb = all_gather_nograd(emb.to(self.device, torch.float32))
        idx, emb = merge_duplicates(idx, emb)
        m = self.momentum
        new = self.memory.index_select(0, idx).float().mul_(m).add_(emb, alpha=1.0 - m)
        new = F.normalize(new, dim=1)
        self.memory.index_copy_(0, idx, new.to(self.memory.dtype))

    @torch.no_grad()
    def sync_from(self, src: int = 0) -> None:
        """Overwrite this rank's bank with rank ``src``'s, in place (no-op in one process)."""
        broadcast_(self.memory, src=src)


def merge_duplicates(idx: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) indices, (B, D) embeddings -> (U,) unique indices, (U, D) mean embedding per index.

    Without duplicates the inputs are returned as they are. Otherwise the sum is taken
    occurrence by occurrence (first occurrences, then second ones, ...), each pass writing to
    distinct rows, so no two additions race and the result is the same on every device and run.
    """
    order = torch.argsort(idx, stable=True)
    s = idx[order]
    first = torch.ones_like(s, dtype=torch.bool)
    first[1:] = s[1:] != s[:-1]
    if bool(first.all()):
        return idx, emb
    group = torch.cumsum(first.long(), 0) - 1  # (B,) group id of each sorted entry
    starts = torch.nonzero(first).squeeze(1)  # (U,) sorted position of each group's start
    occurrence = torch.arange(s.shape[0], device=s.device) - starts[group]
    counts = torch.bincount(group)
    acc = emb.new_zeros((starts.shape[0], emb.shape[1]))
    for o in range(int(occurrence.max()) + 1):
        sel = occurrence == o
        acc[group[sel]] += emb[order[sel]]
    return s[first], acc / counts.unsqueeze(1).to(acc.dtype)
