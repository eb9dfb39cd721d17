"""NT-Xent (SimCLR) against the formula written out with explicit loops, and on 2 gloo processes
against one process holding the global batch.

Reference (Chen et al. 2020): the 2N views z_0..z_{2N-1} (first views, then second views);
anchor i has positive j = (i + N) mod 2N and
``l(i) = log sum_{k != i} exp(z_i . z_k / T) - z_i . z_j / T``; the loss is the mean of l.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.losses.ntxent import nt_xent, nt_xent_global
from avssl.utils import distributed as D

WORLD = 2
N_GLOBAL, D_IN, D_OUT, TEMP = 6, 5, 4, 0.2


def reference_nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent written out: a loop over the 2N anchors, each a log-sum-exp over the others."""
    z = torch.cat([z1, z2])
    n2 = z.shape[0]
    total = z.new_zeros(())
    for i in range(n2):
        j = (i + n2 // 2) % n2
        others = torch.stack([z[i] @ z[k] / temperature for k in range(n2) if k != i])
        total = total + torch.logsumexp(others, 0) - z[i] @ z[j] / temperature
    return total / n2


def _pair(b: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    # the second view: the first one perturbed, so positives are closer than negatives
    z2 = F.normalize(z1 + 0.5 * torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    return z1, z2


@pytest.mark.parametrize("b,d,temperature,seed", [(2, 3, 0.1, 0), (5, 8, 0.5, 1),
                                                  (8, 4, 0.07, 2), (3, 16, 1.0, 3)])
def test_matches_explicit_formula(b: int, d: int, temperature: float, seed: int) -> None:
    z1, z2 = _pair(b, d, seed)
    torch.testing.assert_close(nt_xent(z1, z2, temperature), reference_nt_xent(z1, z2, temperature),
                               rtol=1e-12, atol=1e-12)


def test_closed_form_and_symmetry() -> None:
    """Two orthonormal instances, identical views: each anchor sees its positive at cos 1 and
    two negatives at cos 0, so l = log(exp(1/T) + 2) - 1/T."""
    z = torch.eye(2, 4, dtype=torch.float64)
    t = 0.3
    want = math.log(math.exp(1 / t) + 2) - 1 / t
    assert float(nt_xent(z, z, t)) == pytest.approx(want, abs=1e-12)
    z1, z2 = _pair(5, 6, 7)
    torch.testing.assert_close(nt_xent(z1, z2, t), nt_xent(z2, z1, t))


def test_anchor_subsets_with_offset_average_to_the_whole_batch() -> None:
    """Anchors at rows [lo, hi) of the candidates (what each process computes): equal parts
    average to the global loss, and a wrong offset changes the result."""
    z1, z2 = _pair(6, 5, 4)
    full = reference_nt_xent(z1, z2, TEMP)
    parts = [nt_xent(z1[lo:lo + 2], z2[lo:lo + 2], TEMP, z1, z2, lo) for lo in (0, 2, 4)]
    torch.testing.assert_close(torch.stack(parts).mean(), full, rtol=1e-12, atol=1e-12)
    wrong = nt_xent(z1[2:4], z2[2:4], TEMP, z1, z2, 0)
    assert abs(float(wrong - parts[1])) > 1e-3
    with pytest.raises(ValueError):
        nt_xent(z1[:4], z2[:4], TEMP, z1, z2, 3)  # does not fit


def test_fp32_under_autocast_and_gradient() -> None:
    z1, z2 = _pair(4, 8, 5, dtype=torch.float32)
    z1.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, nt_xent(z1.bfloat16().float(), z2.bfloat16().float(), 0.1))
    loss.backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


def test_rejects_bad_shapes() -> None:
    z1, z2 = _pair(3, 4, 6)
    with pytest.raises(ValueError):
        nt_xent(z1, z2[:2], 0.1)
    with pytest.raises(ValueError):
        nt_xent(z1[:1], z2[:1], 0.1)  # one instance: no negative pair


def test_global_single_process_is_local() -> None:
    z1, z2 = _pair(4, 4, 8)
    assert not D.is_dist()
    torch.testing.assert_close(nt_xent_global(z1, z2, TEMP), nt_xent(z1, z2, TEMP))


# ----------------------------------------------------------------------------------------------
# 2 processes (gloo) vs one process holding the global batch
# ----------------------------------------------------------------------------------------------
def _model() -> nn.Linear:
    torch.manual_seed(0)  # identical init on every rank, as DDP's broadcast would give
    return nn.Linear(D_IN, D_OUT)


def _inputs() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(11)
    x1 = torch.randn(N_GLOBAL, D_IN, generator=g)
    return x1, x1 + 0.3 * torch.randn(N_GLOBAL, D_IN, generator=g)


def _embed(model: nn.Module, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    return F.normalize(model(x1), dim=1), F.normalize(model(x2), dim=1)


def _grads(model: nn.Module) -> list[Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]  # type: ignore[union-attr]


def _worker(r: int, world: int, tmp: str) -> None:
    os.environ.update(RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r))
    torch.set_num_threads(1)
    D.init_distributed(backend="gloo", init_method=f"file://{tmp}/store",
                       timeout=timedelta(seconds=60))
    out: dict[str, Any] = {}
    try:
        x1, x2 = _inputs()
        half = N_GLOBAL // world
        lo, hi = r * half, (r + 1) * half
        # the loss as the method computes it; gradients averaged over ranks as DDP does
        for name, fn in (
            ("ok", lambda a, b: nt_xent_global(a, b, TEMP)),
            # deliberately wrong variants, to show the checks below would catch them:
            # the per-rank loss divided by the world size, and candidates from this rank only
            ("div_world", lambda a, b: nt_xent_global(a, b, TEMP) / D.world_size()),
            ("local_only", lambda a, b: nt_xent(a, b, TEMP)),
        ):
            model = _model()
            loss = fn(*_embed(model, x1[lo:hi], x2[lo:hi]))
            loss.backward()
            out[f"loss_{name}"] = loss.detach().clone()
            out[f"grads_{name}"] = [D.all_reduce_mean(g) for g in _grads(model)]
        # uneven local batches (4 + 2): the offsets come from the gathered sizes; weighting each
        # rank's mean by its anchors gives the global sum
        model = _model()
        lo, hi = (0, 4) if r == 0 else (4, N_GLOBAL)
        loss = nt_xent_global(*_embed(model, x1[lo:hi], x2[lo:hi]), TEMP) * (hi - lo)
        loss.backward()
        out["loss_uneven"] = loss.detach().clone()
        out["grads_uneven"] = [D.all_reduce_mean(g) * world / N_GLOBAL for g in _grads(model)]
        D.barrier()
        torch.save(out, f"{tmp}/rank{r}.pt")
    finally:
        D.cleanup()


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ntxent_dist")
    mp.spawn(_worker, args=(WORLD, str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _single_process() -> tuple[Tensor, list[Tensor]]:
    model = _model()
    loss = nt_xent(*_embed(model, *_inputs()), TEMP)
    loss.backward()
    return loss.detach(), _grads(model)


def _close(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=0, atol=1e-6))


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(
        dist_results: list[dict[str, Any]]) -> None:
    """Loss averaged over ranks and DDP-averaged gradients == the global-batch loss/gradients.

    A per-rank loss divided by the world size (the usual mistake when gathering) would give a
    rank mean of ref / 2 and gradients of ref / 2; candidates from one rank only would give a
    different loss altogether: both variants are run on the ranks and must fail these checks.
    """
    ref_loss, ref_grads = _single_process()
    x1, x2 = _inputs()
    torch.testing.assert_close(ref_loss, reference_nt_xent(*_embed(_model(), x1, x2), TEMP))
    mean_loss = torch.stack([res["loss_ok"] for res in dist_results]).mean()
    torch.testing.assert_close(mean_loss, ref_loss, rtol=0, atol=1e-6)
    assert not _close(dist_results[0]["loss_ok"], dist_results[1]["loss_ok"])  # not trivial
    for res in dist_results:
        for g, g_ref in zip(res["grads_ok"], ref_grads):
            torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-6)
    # the checks above are sensitive to the wrong variants
    for name in ("div_world", "local_only"):
        mean_bad = torch.stack([res[f"loss_{name}"] for res in dist_results]).mean()
        grads_bad = dist_results[0][f"grads_{name}"]
        assert not _close(mean_bad, ref_loss), name
        assert not all(_close(g, g_ref) for g, g_ref in zip(grads_bad, ref_grads)), name


@pytest.mark.slow
def test_two_processes_uneven_batches(dist_results: list[dict[str, Any]]) -> None:
    ref_loss, ref_grads = _single_process()
    total = sum(res["loss_uneven"] for res in dist_results) / N_GLOBAL
    torch.testing.assert_close(total, ref_loss, rtol=0, atol=1e-6)
    for res in dist_results:
        for g, g_ref in zip(res["grads_uneven"], ref_grads):
            torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-6)
