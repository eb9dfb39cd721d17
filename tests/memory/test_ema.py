"""The EMA target (BYOL): the update written out on a tiny module, and the cosine schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from avssl.memory.ema import cosine_momentum, ema_target, ema_update_


def tiny(seed: int) -> nn.Module:
    """Linear -> BatchNorm1d -> Linear, with non-trivial weights and running statistics."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net.train()
    for _ in range(seed + 1):  # different running stats and num_batches_tracked per seed
        net(torch.randn(5, 3))
    with torch.no_grad():  # BN's affine starts at 1 / 0 in both: make every tensor differ
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    return net


def test_ema_update_equals_the_formula_for_params_and_buffers() -> None:
    target, online = tiny(0), tiny(1)
    old = {k: v.clone() for k, v in target.state_dict().items()}
    new = online.state_dict()
    m = 0.9
    ema_update_(target, online, m)
    after = target.state_dict()
    assert set(after) == set(old)
    checked = {"float": 0, "int": 0}
    for k, v in after.items():
        if v.is_floating_point():  # weights, biases, BN affine, running_mean / running_var
            assert torch.equal(v, m * old[k] + (1 - m) * new[k]), k  # to the bit
            assert not torch.equal(v, old[k]) and not torch.equal(v, new[k]), k
            checked["float"] += 1
        else:  # num_batches_tracked: copied
            assert torch.equal(v, new[k]), k
            checked["int"] += 1
    assert checked == {"float": 8, "int": 1}


def test_ema_update_extremes_and_no_grad() -> None:
    target, online = tiny(0), tiny(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update_(target, online, 1.0)  # momentum 1: unchanged (the integer buffer is copied)
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k] if v.is_floating_point() else online.state_dict()[k]), k
    ema_update_(target, online, 0.0)  # momentum 0: a copy
    for k, v in target.state_dict().items():
        assert torch.equal(v, online.state_dict()[k]), k
    assert all(p.grad_fn is None for p in target.parameters())
    with pytest.raises(ValueError, match="momentum"):
        ema_update_(target, online, 1.5)
    with pytest.raises(ValueError, match="differ"):
        ema_update_(target, nn.Linear(3, 4), 0.5)


def test_ema_target_is_frozen_and_only_the_update_changes_it() -> None:
    online = tiny(0)
    target = ema_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    assert list(target.state_dict()) == list(online.state_dict())  # same layout, saved alike
    before = {k: v.clone() for k, v in target.state_dict().items()}
    target.train()
    y = target(torch.randn(6, 3))  # batch statistics in training mode ...
    bn = target[1]
    assert isinstance(bn, nn.BatchNorm1d)
    x = target[0](torch.randn(6, 3))
    torch.testing.assert_close(bn(x).mean(0), torch.zeros(4) + bn.bias, atol=1e-5, rtol=0)
    for k, v in target.state_dict().items():  # ... without touching the running statistics
        assert torch.equal(v, before[k]), k
    assert not y.requires_grad
    target.eval()  # eval mode uses the (averaged) running statistics
    x = torch.randn(6, 3)
    ref = (target[0](x) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(bn(target[0](x)), ref * bn.weight + bn.bias)


def test_cosine_momentum_schedule() -> None:
    base, total = 0.996, 1000
    assert cosine_momentum(0, total, base) == pytest.approx(base, abs=1e-12)
    assert cosine_momentum(total // 2, total, base) == pytest.approx((1 + base) / 2, abs=1e-12)
    assert cosine_momentum(total, total, base) == pytest.approx(1.0, abs=1e-12)
    assert cosine_momentum(2 * total, total, base) == pytest.approx(1.0, abs=1e-12)  # clamped
    assert cosine_momentum(-5, total, base) == pytest.approx(base, abs=1e-12)
    k = 123
    assert cosine_momentum(k, total, base) == pytest.approx(
        1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2, abs=1e-15)
    ms = [cosine_momentum(s, total, base) for s in range(total + 1)]
    assert all(a <= b for a, b in itertools.pairwise(ms))  # nondecreasing
    with pytest.raises(ValueError):
        cosine_momentum(1, 0, base)
    with pytest.raises(ValueError):
        cosine_momentum(1, 10, 1.2)
