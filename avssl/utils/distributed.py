"""Distributed helpers: process-group setup from the ``torchrun`` environment and collectives.

Policy (docs/design.md, "Distributed"):

- ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``;
  :func:`init_distributed` reads them and starts NCCL when CUDA is available, gloo otherwise.
  Without that environment nothing is initialized and every helper below is the identity (or a
  constant), so the same code runs in a single process.
- Gathers accept a different first dimension on each rank (the last batch of an epoch may be
  short): sizes are exchanged first and the tensors padded, then trimmed. Other dimensions,
  dtype and device must match across ranks.
- :func:`all_gather_grad` keeps gradients (``torch.distributed.nn.functional.all_gather``): its
  backward sums, over ranks, the gradients flowing into each rank's slice. With DDP's gradient
  averaging the parameter gradient then equals the one of the mean of the per-rank losses.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")

_TORCHRUN_KEYS = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: global ``rank`` of ``world_size``, ``local_rank`` on its node,
    and the ``device`` it should compute on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _launched_by_torchrun() -> bool:
    return all(k in os.environ for k in _TORCHRUN_KEYS)


def init_distributed(backend: str | None = None, init_method: str | None = None,
                     timeout: timedelta = timedelta(minutes=30)) -> DistInfo:
    """Initialize the default process group from the ``torchrun`` environment.

    ``backend`` defaults to ``"nccl"`` with CUDA and ``"gloo"`` without. ``init_method``
    defaults to ``"env://"`` (MASTER_ADDR/MASTER_PORT); tests pass ``"file://..."``. Rank and
    world size always come from ``RANK``/``WORLD_SIZE``. Without them: a single process, nothing
    initialized. Calling it again after initialization just describes the current group.
    """
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if not _launched_by_torchrun():
        if cuda:
            torch.cuda.set_device(device)
        return DistInfo(0, 1, 0, device)
    if cuda:
        # Before init: NCCL binds each process to the device current at its first collective.
        torch.cuda.set_device(device)
    if not is_dist():
        rank_, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        backend = backend or ("nccl" if cuda else "gloo")
        kwargs: dict[str, Any] = {}
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(backend=backend, init_method=init_method or "env://",
                                rank=rank_, world_size=world, timeout=timeout, **kwargs)
    return DistInfo(rank(), world_size(), local_rank, device)


def is_dist() -> bool:
    """True when a default process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group (a no-op in a single process).

    Drop every DistributedDataParallel wrapper first: its C++ Reducer holds the group, and a
    group that dies inside the Reducer's destructor (GIL held) can deadlock with a Gloo worker
    thread still freeing a finished collective's tensors (it waits for the GIL; seen as a rank
    hanging at exit, pytorch/pytorch#56297). Wrappers kept alive only by reference cycles are
    collected here, while the group is still registered.
    """
    if is_dist():
        gc.collect()
        dist.destroy_process_group()


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    """First-dimension sizes of every rank, in rank order."""
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def rank_offset(n: int, device: torch.device | str = "cpu") -> int:
    """Row of this process's first item in a rank-ordered gather of ``n`` items per process
    (sizes may differ): the sum of the sizes of the lower ranks. Single process: 0."""
    if not is_dist() or world_size() == 1:
        return 0
    return sum(_gather_sizes(n, torch.device(device))[: rank()])


def _pad_rows(t: Tensor, rows: int) -> Tensor:
    if t.shape[0] == rows:
        return t
    pad = t.new_zeros((rows - t.shape[0], *t.shape[1:]))
    return torch.cat([t, pad], dim=0)


@torch.no_grad()
def all_gather_nograd(t: Tensor) -> Tensor:
    """Concatenate ``t`` (n_r, ...) from every rank along dim 0, in rank order: (sum n_r, ...).

    No gradient flows back. Single process: ``t`` itself.
    """
    if not is_dist() or world_size() == 1:
        return t
    t = t.detach().contiguous()
    sizes = _gather_sizes(t.shape[0], t.device)
    padded = _pad_rows(t, max(sizes))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


def all_gather_grad(t: Tensor) -> Tensor:
    """Like :func:`all_gather_nograd` (n_r, ...) -> (sum n_r, ...) but differentiable.

    Backward: each rank receives the sum over ranks of the gradients w.r.t. its own slice
    (``torch.distributed.nn.functional.all_gather``). Single process: ``t`` itself.
    """
    if not is_dist() or world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    sizes = _gather_sizes(t.shape[0], t.device)
    parts = all_gather(_pad_rows(t.contiguous(), max(sizes)))
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


@torch.no_grad()
def all_reduce_mean(t: Tensor) -> Tensor:
    """Element-wise mean of ``t`` over ranks (a new tensor; ``t`` is not modified).

    Single process: ``t`` itself.
    """
    if not is_dist() or world_size() == 1:
        return t
    out = t.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.div_(world_size()) if out.is_floating_point() else out // world_size()


def all_gather_object(obj: T) -> list[T]:
    """Every rank's picklable ``obj``, in rank order. Single process: ``[obj]``."""
    if not is_dist() or world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s picklable ``obj`` on every rank. Single process: ``obj`` itself."""
    if not is_dist() or world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``t`` in place with rank ``src``'s values; returns ``t``."""
    if is_dist() and world_size() > 1:
        dist.broadcast(t, src=src)
    return t
