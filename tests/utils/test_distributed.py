"""Distributed helpers, memory-bank sync, gradient gathers and Z estimation on 2 gloo processes.

One module-scoped spawn runs every distributed check (starting processes is the slow part); each
rank saves its results to a temporary folder and the tests below assert in the parent against a
single process working on the global batch.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from avssl.losses import NCEConstant, estimate_log_z
from avssl.memory import MemoryBank, Queue
from avssl.utils import distributed as D

# spawns 2 processes (gloo)
pytestmark = pytest.mark.slow

WORLD = 2
N_ROWS, DIM = 20, 8

# Local batches per step and rank: duplicates across ranks (1, 7), within a rank (3, 3), and an
# uneven step (4 rows vs 2).
BANK_STEPS: list[tuple[list[int], list[int]]] = [
    ([1, 2, 3], [4, 5, 1]),
    ([7, 8, 9, 10], [11, 7]),
    ([3, 3, 0], [19, 0, 3]),
    ([12, 13], [14, 15]),
]


def _bank_batch(step: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.tensor(BANK_STEPS[step][r])
    g = torch.Generator().manual_seed(100 * step + r)
    return idx, F.normalize(torch.randn(len(idx), DIM, generator=g), dim=1)


def _model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 3)


def _inputs() -> torch.Tensor:
    return torch.randn(6, 4, generator=torch.Generator().manual_seed(1))


def _neg_logits() -> torch.Tensor:
    return (torch.rand(6, 10, generator=torch.Generator().manual_seed(2)) * 2 - 1) / 0.07


def _contrastive(q: torch.Tensor, keys: torch.Tensor, offset: int, reduction: str) -> torch.Tensor:
    """Each query against every key of the global batch; its own key is the target."""
    target = torch.arange(q.shape[0]) + offset
    return F.cross_entropy(q @ keys.T / 0.1, target, reduction=reduction)


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]  # type: ignore[union-attr]


def _worker(r: int, world: int, tmp: str) -> None:
    os.environ.update(RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r))
    torch.set_num_threads(1)
    info = D.init_distributed(backend="gloo", init_method=f"file://{tmp}/store",
                              timeout=timedelta(seconds=60))
    out: dict[str, Any] = {}
    try:
        out["info"] = (info.rank, info.world_size, info.local_rank, info.is_main, D.is_dist(),
                       D.rank(), D.world_size(), D.is_main())

        # (a) banks and queues: the same global update on every rank.
        bank, queue = MemoryBank(N_ROWS, DIM, seed=0), Queue(7, DIM, seed=0)
        for step in range(len(BANK_STEPS)):
            idx, emb = _bank_batch(step, r)
            bank.update(idx, emb)
            queue.enqueue(emb, idx)
        out["bank"], out["queue"] = bank.memory.clone(), queue.state_dict()
        other = MemoryBank(N_ROWS, DIM, seed=r)  # differs per rank until synced
        other.sync_from(0)
        out["synced"] = other.memory.clone()

        # (b) gradients through all_gather_grad, DDP-style averaging, equal batches (mean loss).
        x = _inputs()
        model = _model()
        q = F.normalize(model(x[3 * r:3 * r + 3]), dim=1)
        keys = D.all_gather_grad(q)
        out["gathered"] = keys.detach().clone()
        _contrastive(q, keys, 3 * r, "mean").backward()
        out["grads_mean"] = [D.all_reduce_mean(g) for g in _grads(model)]
        # ... and uneven batches (4 + 2 rows, summed loss, summed gradients).
        model = _model()
        lo, hi = (0, 4) if r == 0 else (4, 6)
        q = F.normalize(model(x[lo:hi]), dim=1)
        _contrastive(q, D.all_gather_grad(q), lo, "sum").backward()
        out["grads_sum"] = [D.all_reduce_mean(g) * world for g in _grads(model)]

        # (c) Z from each rank's negatives, averaged across ranks.
        neg = _neg_logits()[3 * r:3 * r + 3]
        out["log_z"] = estimate_log_z(neg, 5000)
        out["nce_constant"] = NCEConstant()(neg, 5000).clone()

        # Other collectives.
        out["gather_uneven"] = D.all_gather_nograd(torch.arange(r + 2) + 10 * r)
        out["reduce"] = D.all_reduce_mean(torch.tensor([float(r), 2.0 * r]))
        out["object"] = D.broadcast_object({"from": r, "list": [r] * 3})
        D.barrier()
        torch.save(out, f"{tmp}/rank{r}.pt")
    finally:
        D.cleanup()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(WORLD, str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_init_and_rank_helpers(results: list[dict[str, Any]]) -> None:
    assert results[0]["info"] == (0, 2, 0, True, True, 0, 2, True)
    assert results[1]["info"] == (1, 2, 1, False, True, 1, 2, False)


def test_banks_identical_and_equal_to_single_process(results: list[dict[str, Any]]) -> None:
    b0, b1 = results[0]["bank"], results[1]["bank"]
    assert torch.equal(b0, b1)  # bit-identical across ranks
    ref, queue = MemoryBank(N_ROWS, DIM, seed=0), Queue(7, DIM, seed=0)
    for step in range(len(BANK_STEPS)):
        (i0, e0), (i1, e1) = _bank_batch(step, 0), _bank_batch(step, 1)
        ref.update(torch.cat([i0, i1]), torch.cat([e0, e1]))
        queue.enqueue(torch.cat([e0, e1]), torch.cat([i0, i1]))
    assert torch.equal(b0, ref.memory)
    assert not torch.equal(b0, MemoryBank(N_ROWS, DIM, seed=0).memory)
    for res in results:
        for key, val in queue.state_dict().items():
            assert torch.equal(res["queue"][key], val), key
    assert torch.equal(results[1]["synced"], MemoryBank(N_ROWS, DIM, seed=0).memory)


def test_all_gather_grad_matches_single_process(results: list[dict[str, Any]]) -> None:
    x = _inputs()
    for reduction, key in (("mean", "grads_mean"), ("sum", "grads_sum")):
        model = _model()
        q = F.normalize(model(x), dim=1)
        _contrastive(q, q, 0, reduction).backward()
        if key == "grads_mean":
            torch.testing.assert_close(results[0]["gathered"], q.detach(), rtol=0, atol=1e-7)
        for g_ref, g0, g1 in zip(_grads(model), results[0][key], results[1][key]):
            torch.testing.assert_close(g0, g_ref, rtol=0, atol=1e-6)
            torch.testing.assert_close(g1, g_ref, rtol=0, atol=1e-6)


def test_log_z_matches_global_batch(results: list[dict[str, Any]]) -> None:
    ref = estimate_log_z(_neg_logits(), 5000)
    for res in results:
        torch.testing.assert_close(res["log_z"], ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(res["nce_constant"], ref, rtol=1e-6, atol=1e-6)
    # Each rank alone would have given a different estimate: the averaging did happen.
    assert abs(float(estimate_log_z(_neg_logits()[:3], 5000) - ref)) > 1e-3


def test_other_collectives(results: list[dict[str, Any]]) -> None:
    for res in results:
        assert res["gather_uneven"].tolist() == [0, 1, 10, 11, 12]
        torch.testing.assert_close(res["reduce"], torch.tensor([0.5, 1.0]))
        assert res["object"] == {"from": 0, "list": [0, 0, 0]}


def test_single_process_is_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    info = D.init_distributed()
    assert (info.rank, info.world_size, info.local_rank) == (0, 1, 0) and info.is_main
    assert not D.is_dist() and D.rank() == 0 and D.world_size() == 1 and D.is_main()
    t = torch.randn(3, 2, requires_grad=True)
    assert D.all_gather_nograd(t) is t and D.all_gather_grad(t) is t
    assert D.all_reduce_mean(t) is t and D.broadcast_(t) is t
    obj = {"a": 1}
    assert D.broadcast_object(obj) is obj
    D.barrier()
    D.cleanup()
