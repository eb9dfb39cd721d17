"""NCE / InfoNCE against straightforward loop implementations written out here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avssl.losses import NCEConstant, estimate_log_z, info_nce_loss, nce_loss


def loop_nce(pos: torch.Tensor, neg: torch.Tensor, z: float, n: int) -> torch.Tensor:
    """NPID NCE as written in docs/reference.md section 1.3, with raw exps and explicit loops:
    h = exp(l) / (exp(l) + K * Z / N)."""
    b, p = pos.shape
    k = neg.shape[1]
    noise = k * z / n
    total = pos.new_zeros(())
    for i in range(b):
        term = pos.new_zeros(())
        for j in range(p):
            s = torch.exp(pos[i, j])
            term = term - torch.log(s / (s + noise)) / p
        for j in range(k):
            s = torch.exp(neg[i, j])
            term = term - torch.log(noise / (s + noise))
        total = total + term
    return total / b


def loop_nce_npid_form(pos: torch.Tensor, neg: torch.Tensor, z: float, n: int) -> torch.Tensor:
    """The lemniscate / AVID-CMA form: s = exp(l) / Z, Pn = 1/N, h = s / (s + K*Pn)."""
    k = neg.shape[1]
    pn = 1.0 / n
    s_pos, s_neg = torch.exp(pos) / z, torch.exp(neg) / z
    ln_pmt = torch.log(s_pos / (s_pos + k * pn)).mean(1)
    ln_pon = torch.log((k * pn) / (s_neg + k * pn)).sum(1)
    return -(ln_pmt + ln_pon).mean()


def loop_info_nce(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    b, p = pos.shape
    total = pos.new_zeros(())
    for i in range(b):
        for j in range(p):
            denom = torch.exp(pos[i, j]) + sum(torch.exp(neg[i, m]) for m in range(neg.shape[1]))
            total = total - torch.log(torch.exp(pos[i, j]) / denom) / (b * p)
    return total


def _logits(b: int, p: int, k: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    t = 0.07
    pos = (torch.rand(b, p, generator=g, dtype=dtype) * 2 - 1) / t
    neg = (torch.rand(b, k, generator=g, dtype=dtype) * 2 - 1) / t
    return pos.requires_grad_(), neg.requires_grad_()


@pytest.mark.parametrize("p", [1, 3])
def test_nce_matches_loops_values_and_grads(p: int) -> None:
    n, k = 500, 16
    pos, neg = _logits(4, p, k, seed=p)
    z = float(n * torch.exp(neg.detach()).mean())
    ours = nce_loss(pos, neg, math.log(z), n)
    gp, gn = torch.autograd.grad(ours, (pos, neg))
    ref = loop_nce(pos, neg, z, n)
    rp, rn = torch.autograd.grad(ref, (pos, neg))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gp, rp, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(gn, rn, rtol=1e-7, atol=1e-9)
    # The docs/reference.md section 1.3 raw-exp form and the NPID s/Z form are the same loss.
    torch.testing.assert_close(loop_nce_npid_form(pos, neg, z, n), ref, rtol=1e-10, atol=1e-10)


def test_nce_fp32_and_tensor_log_z() -> None:
    n, k = 1000, 32
    pos, neg = _logits(8, 1, k, seed=5, dtype=torch.float32)
    log_z = estimate_log_z(neg, n)
    ours = nce_loss(pos.squeeze(1), neg, log_z, n)  # (B,) positives accepted
    ref = loop_nce(pos.double(), neg.double(), float(log_z.double().exp()), n)
    assert ours.dtype == torch.float32 and ours.dim() == 0
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)


def test_nce_several_positives_average_their_terms() -> None:
    n, k = 300, 8
    pos, neg = _logits(5, 4, k, seed=11)
    whole = nce_loss(pos, neg, 2.0, n)
    # Negative term is shared: mean over P of the single-positive losses is the same loss.
    single = torch.stack([nce_loss(pos[:, j:j + 1], neg, 2.0, n) for j in range(4)]).mean()
    torch.testing.assert_close(whole, single, rtol=1e-12, atol=1e-12)
    # ... and a positive's term is not simply summed: duplicating a column changes nothing.
    doubled = nce_loss(torch.cat([pos, pos], 1), neg, 2.0, n)
    torch.testing.assert_close(whole, doubled, rtol=1e-12, atol=1e-12)


def test_nce_gradcheck() -> None:
    pos, neg = _logits(3, 2, 5, seed=3)
    assert torch.autograd.gradcheck(lambda a, b: nce_loss(a, b, 1.5, 100), (pos, neg))
    assert torch.autograd.gradcheck(info_nce_loss, (pos, neg))


def test_large_logits_stay_finite() -> None:
    for scale in (1 / 0.07, 1e3, 1e5):
        pos = torch.tensor([[scale], [-scale]], requires_grad=True)
        neg = torch.tensor([[scale, -scale, 0.0], [-scale, scale, 0.5]], requires_grad=True)
        for loss in (nce_loss(pos, neg, 0.0, 10), info_nce_loss(pos, neg)):
            gp, gn = torch.autograd.grad(loss, (pos, neg))
            assert torch.isfinite(loss) and torch.isfinite(gp).all() and torch.isfinite(gn).all()
    z = estimate_log_z(torch.full((4, 8), 1e4), 1000)
    torch.testing.assert_close(z, torch.tensor(1e4 + math.log(1000)))


def test_half_precision_inputs_computed_in_fp32() -> None:
    pos, neg = _logits(6, 2, 10, seed=7, dtype=torch.float32)
    pb, nb = pos.detach().bfloat16(), neg.detach().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nce_loss(pb, nb, 1.0, 50)
        info = info_nce_loss(pb, nb)
    assert loss.dtype == torch.float32 and info.dtype == torch.float32
    torch.testing.assert_close(loss, nce_loss(pb.float(), nb.float(), 1.0, 50))
    torch.testing.assert_close(info, info_nce_loss(pb.float(), nb.float()))


@pytest.mark.parametrize("p", [1, 3])
def test_info_nce_matches_loops_and_cross_entropy(p: int) -> None:
    pos, neg = _logits(4, p, 6, seed=20 + p)
    ours = info_nce_loss(pos, neg)
    gp, gn = torch.autograd.grad(ours, (pos, neg))
    ref = loop_info_nce(pos, neg)
    rp, rn = torch.autograd.grad(ref, (pos, neg))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gp, rp, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(gn, rn, rtol=1e-7, atol=1e-9)
    ce = torch.stack([torch.nn.functional.cross_entropy(
        torch.cat([pos[:, j:j + 1], neg], 1), torch.zeros(4, dtype=torch.long))
        for j in range(p)]).mean()
    torch.testing.assert_close(ours, ce, rtol=1e-10, atol=1e-10)


def test_estimate_log_z_matches_formula() -> None:
    _, neg = _logits(7, 1, 13, seed=9)
    n = 12345
    z = 0.0
    for row in neg.detach().tolist():
        for v in row:
            z += math.exp(v)
    z = n * z / neg.numel()
    est = estimate_log_z(neg, n)
    assert not est.requires_grad and est.dim() == 0
    assert math.isclose(float(est), math.log(z), rel_tol=1e-12)


def test_nce_constant_freezes_and_round_trips() -> None:
    c = NCEConstant()
    assert not c.initialized
    _, neg = _logits(4, 1, 8, seed=1, dtype=torch.float32)
    first = c(neg, 100).clone()
    torch.testing.assert_close(first, estimate_log_z(neg, 100))
    again = c(neg + 3.0, 100)  # different logits: still the frozen value
    assert torch.equal(again, first)
    other = NCEConstant()
    other.load_state_dict(c.state_dict())
    assert other.initialized and torch.equal(other(neg + 5.0, 100), first)
    # Loading an un-estimated state makes it estimate again.
    c.load_state_dict(NCEConstant().state_dict())
    assert not c.initialized
    torch.testing.assert_close(c(neg + 3.0, 100), first + 3.0)


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        nce_loss(torch.zeros(3, 1), torch.zeros(4, 5), 0.0, 10)
    with pytest.raises(ValueError):
        info_nce_loss(torch.zeros(3, 1, 1), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        nce_loss(torch.zeros(3, 1), torch.zeros(3, 5), 0.0, 0)


# ----------------------------------------------------------------------------------------------
# Multiple-instance localization term (EZ-VSL)
# ----------------------------------------------------------------------------------------------
def reference_mil(v: list[list[list[float]]], a: list[list[float]], t: float) -> float:
    """Written out with Python floats: S[i][j] = max_l <v_i,l, a_j>; symmetric cross-entropy."""
    n = len(a)
    s = [[max(sum(x * y for x, y in zip(loc, a[j])) for loc in v[i]) for j in range(n)]
         for i in range(n)]
    total = 0.0
    for i in range(n):
        row = math.log(sum(math.exp(s[i][j] / t) for j in range(n))) - s[i][i] / t
        col = math.log(sum(math.exp(s[j][i] / t) for j in range(n))) - s[i][i] / t
        total += 0.5 * (row + col)
    return total / n


def test_mil_contrastive_loss_against_written_out_formula() -> None:
    from avssl.losses.localization import mil_contrastive_loss

    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(5, 6, 4, generator=g, dtype=torch.float64), dim=-1)
    a = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=-1)
    got = mil_contrastive_loss(v, a, 0.1)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(reference_mil(v.tolist(), a.tolist(), 0.1), rel=1e-5)
    # anchors split over "processes" (rows 0-1, 2-3, 4 of the same candidates): the
    # size-weighted mean of their losses is the full loss
    parts = [(mil_contrastive_loss(v[lo:hi], a[lo:hi], 0.1, video_all=v, audio_all=a,
                                   offset=lo), hi - lo) for lo, hi in ((0, 2), (2, 4), (4, 5))]
    assert float(parts[1][0]) != pytest.approx(float(got), rel=1e-3)
    assert float(sum(loss * n for loss, n in parts) / 5) == pytest.approx(float(got), rel=1e-6)


def test_mil_loss_only_the_best_location_matters() -> None:
    """Moving a non-maximal location changes nothing; the loss falls as the matching location
    of the positive video aligns with its sound."""
    from avssl.losses.localization import mil_contrastive_loss

    a = torch.eye(3)
    v = torch.full((3, 2, 3), 0.0)
    v[:, 0] = F.normalize(torch.tensor([[0.9, 0.3, 0.3], [0.3, 0.9, 0.3], [0.3, 0.3, 0.9]]), dim=1)
    v[:, 1] = F.normalize(torch.ones(3), dim=0) * 0.1  # a weak background location
    base = mil_contrastive_loss(v, a, 0.1)
    v2 = v.clone()
    v2[:, 1] = -v2[:, 1]
    assert float(mil_contrastive_loss(v2, a, 0.1)) == pytest.approx(float(base))
    v3 = v.clone()
    v3[0, 0] = torch.tensor([1.0, 0.0, 0.0])
    assert float(mil_contrastive_loss(v3, a, 0.1)) < float(base)
