"""A sampler that is deterministic per epoch, shards across ranks and resumes mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Epoch ``e`` visits ``randperm(n, seed + e)`` (or ``range(n)``), rank r takes every
    ``world``-th item from r, and ``set_epoch(e, skip)`` drops the first ``skip`` items of this
    rank's share: after a crash the run continues with exactly the samples it had not seen.

    The share is cut to a multiple of ``world`` so every rank runs the same number of steps.
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world = rank, world_size
        self.epoch, self.skip = 0, 0
        self.per_rank = n // world_size
        if self.per_rank == 0:
            raise ValueError(f"{n} samples cannot be shared by {world_size} ranks")

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        mine = order[: self.per_rank * self.world][self.rank::self.world]
        return iter(mine[self.skip:].tolist())

    def __len__(self) -> int:
        return max(self.per_rank - self.skip, 0)
