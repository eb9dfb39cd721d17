"""AVID trained under DistributedDataParallel on 2 gloo processes equals one process on the
global batch: banks, Z, loss and gradients, over a few Adam steps. Three times: the published
model, the localization setup (finer grid, head on every location, the in-batch multiple-instance
term whose candidates are gathered across processes), and that term on side-by-side pairs.

Each rank gets 4 of the 8 rows of the global batch (different indices, one index on both ranks
so the gathered bank update has to merge a duplicate). Negatives are a deterministic function of
the indices (patched ``MemoryBank.sample_negatives``), so both runs score the same pairs.
BatchNorm: the encoders run in eval mode (running statistics, parameters still trained), because
in train mode each rank would normalize with its own 4-row batch statistics, which no single
process on the 8-row batch reproduces. (SyncBatchNorm would also do, but it needs CUDA.)
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from avssl.config import Config, from_dict
from avssl.memory.bank import MemoryBank
from avssl.methods import build_method
from avssl.methods.avid import AVID
from avssl.utils import distributed as D

# spawns 2 processes (gloo)
pytestmark = pytest.mark.slow

WORLD, LOCAL_B, N_ROWS, K = 2, 4, 24, 5
LR = 1e-3
# Global batch per step: rank 0 takes the first 4 rows, rank 1 the last 4; one shared index.
STEPS: list[list[int]] = [
    [0, 3, 7, 11, 11, 13, 18, 22],
    [5, 1, 20, 9, 2, 6, 9, 23],
    [14, 15, 16, 17, 8, 17, 10, 4],
]


SETUPS = {
    "published": {},
    "localization": {"video_stride": 8, "video_grid_pool": "max", "localization_weight": 0.5},
    "localization_pairs": {"video_stride": 8, "video_grid_pool": "max",
                           "localization_weight": 0.5, "localization_pairs": True},
}
# Parameters after 3 Adam steps (and the banks built from them) can differ by Adam's
# amplification of float noise in near-zero gradients (g / sqrt(v) ~ sign(g)): the
# localization setup, with its (B, N, L) similarity reductions, needs a looser bound.
PARAM_ATOL = {"published": 1e-5, "localization": 1e-4, "localization_pairs": 1e-4}
BANK_ATOL = {"published": 1e-6, "localization": 1e-5, "localization_pairs": 1e-5}


def make_cfg(setup: str = "published") -> Config:
    extra = SETUPS[setup]
    return from_dict({
        "seed": 0,
        "model": {"video": {"arch": "r2plus1d", "depth": 10, "width": 4,
                            "spatial_stride": extra.get("video_stride", 32)},
                  "audio": {"arch": "audio_cnn", "depth": 10, "width": 4},
                  "head": {"hidden": [16], "out_dim": 8,
                           "video_grid_pool": extra.get("video_grid_pool", "off")}},
        "method": {"name": "avid", "variant": "cross", "num_negatives": K,
                   "localization_weight": extra.get("localization_weight", 0.0),
                   "localization_pairs": extra.get("localization_pairs", False)},
    }, require_paths=False)


def deterministic_negatives(self: MemoryBank, idx: Tensor, k: int,
                            generator: torch.Generator | None = None) -> Tensor:
    """(B,) -> (B, K): the K rows after each index (mod N); never the index itself (K < N)."""
    return (idx.reshape(-1, 1) + 1 + torch.arange(k)) % self.num_rows


def make_method(setup: str = "published") -> AVID:
    """Identical initial weights wherever it is built; encoders in eval mode (see module doc)."""
    torch.manual_seed(0)
    method = build_method(make_cfg(setup), N_ROWS)
    assert isinstance(method, AVID)
    method.encoders.eval()
    return method


def global_batch(step: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(step)
    b = len(STEPS[step])
    return {"video": torch.randn(b, 3, 4, 32, 32, generator=g),
            "audio": torch.randn(b, 1, 40, 32, generator=g),
            "index": torch.tensor(STEPS[step])}


def local_batch(step: int, r: int) -> dict[str, Tensor]:
    return {k: v[r * LOCAL_B:(r + 1) * LOCAL_B] for k, v in global_batch(step).items()}


def log_z(method: AVID) -> dict[str, Tensor]:
    return {n: t.z.log_z.clone() for n, t in method.terms.items()}


def train(method: AVID, model: torch.nn.Module, batches: list[dict[str, Tensor]]
          ) -> list[dict[str, Any]]:
    """A few Adam steps; per step: loss, gradients (after DDP averaging), banks, Z."""
    opt = torch.optim.Adam(method.parameters(), lr=LR)
    record = []
    for batch in batches:
        opt.zero_grad()
        out = model(batch)
        out["loss"].backward()
        record.append({
            "loss": out["loss"].detach().clone(),
            "terms": sorted(k for k in out if k.startswith("loss_")),
            "grads": {n: p.grad.clone() for n, p in method.named_parameters()},  # type: ignore[union-attr]
            "banks": {k: b.memory.clone() for k, b in method.memory.items()},
            "log_z": log_z(method),
        })
        opt.step()
    return record


def _worker(r: int, world: int, tmp: str, setup: str) -> None:
    os.environ.update(RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r))
    torch.set_num_threads(1)
    MemoryBank.sample_negatives = deterministic_negatives  # type: ignore[method-assign]
    D.init_distributed(backend="gloo", init_method=f"file://{tmp}/store",
                       timeout=timedelta(seconds=60))
    try:
        _train_rank(r, tmp, setup)  # the DDP wrapper dies with its frame, before the group
    finally:
        D.cleanup()


def _train_rank(r: int, tmp: str, setup: str) -> None:
    method = make_method(setup)
    ddp = DistributedDataParallel(method, broadcast_buffers=False)
    record = train(method, ddp, [local_batch(s, r) for s in range(len(STEPS))])
    params = {n: p.detach().clone() for n, p in method.named_parameters()}
    torch.save({"steps": record, "params": params}, f"{tmp}/rank{r}.pt")


@pytest.fixture(scope="module", params=list(SETUPS))
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(per-rank results of the DDP run, the single-process run on the global batches)."""
    setup = request.param
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, str(tmp), setup), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(MemoryBank, "sample_negatives", deterministic_negatives)
        method = make_method(setup)
        record = train(method, method, [global_batch(s) for s in range(len(STEPS))])
        single = {"steps": record, "setup": setup,
                  "params": {n: p.detach().clone() for n, p in method.named_parameters()}}
    return ranks, single


def test_steps_have_cross_rank_duplicates() -> None:
    for step in STEPS:
        r0, r1 = set(step[:LOCAL_B]), set(step[LOCAL_B:])
        assert r0 != r1 and len(r0 & r1) >= 1


def test_banks_identical_across_ranks_and_equal_to_single_process(runs: Any) -> None:
    ranks, single = runs
    start = make_method()
    for s, ref in enumerate(single["steps"]):
        for key in ("video", "audio"):
            b0, b1 = ranks[0]["steps"][s]["banks"][key], ranks[1]["steps"][s]["banks"][key]
            assert torch.equal(b0, b1), (s, key)  # bit-identical
            torch.testing.assert_close(b0, ref["banks"][key], rtol=0,
                                       atol=BANK_ATOL[single["setup"]])
    for key in ("video", "audio"):  # step 0 moved exactly the global batch's rows, both ranks'
        moved = (ranks[0]["steps"][0]["banks"][key] != start.memory[key].memory).any(1)
        assert moved.nonzero().squeeze(1).tolist() == sorted(set(STEPS[0]))


def test_loss_and_gradients_equal_single_process(runs: Any) -> None:
    ranks, single = runs
    mil = SETUPS[single["setup"]].get("localization_weight", 0) > 0
    assert ("loss_mil" in single["steps"][0]["terms"]) == mil
    for s, ref in enumerate(single["steps"]):
        mean_loss = (ranks[0]["steps"][s]["loss"] + ranks[1]["steps"][s]["loss"]) / 2
        torch.testing.assert_close(mean_loss, ref["loss"], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(ranks[0]["steps"][s]["loss"], ranks[1]["steps"][s]["loss"])
        for name, g in ref["grads"].items():
            g0, g1 = ranks[0]["steps"][s]["grads"][name], ranks[1]["steps"][s]["grads"][name]
            assert torch.equal(g0, g1), (s, name)  # DDP averaged: the same on both ranks
            torch.testing.assert_close(g0, g, rtol=1e-5, atol=1e-5, msg=f"step {s}: {name}")
    for name, p in single["params"].items():
        torch.testing.assert_close(ranks[0]["params"][name], p, rtol=1e-5,
                                   atol=PARAM_ATOL[single["setup"]])


def test_z_identical_across_ranks_and_equal_to_single_process(runs: Any) -> None:
    ranks, single = runs
    z_first = single["steps"][0]["log_z"]
    for s, ref in enumerate(single["steps"]):
        for name, val in ref["log_z"].items():
            z0, z1 = ranks[0]["steps"][s]["log_z"][name], ranks[1]["steps"][s]["log_z"][name]
            assert torch.isfinite(z0) and torch.equal(z0, z1), (s, name)
            torch.testing.assert_close(z0, val, rtol=1e-6, atol=1e-6)
            assert torch.equal(val, z_first[name])  # frozen after the first step
