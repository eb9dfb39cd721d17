"""BYOL's loss against ``2 - 2 cos`` written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from avssl.losses.byol import byol_loss


def test_equals_two_minus_two_cos_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    per_row = []
    for a, b in zip(p.tolist(), z.tolist()):
        dot = sum(x * y for x, y in zip(a, b))
        cos = dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
        per_row.append(2 - 2 * cos)
    assert float(byol_loss(p, z)) == pytest.approx(sum(per_row) / len(per_row), abs=1e-6)


def test_zero_for_identical_directions_and_four_for_opposite() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.randn(4, 8, generator=g)
    scale = torch.rand(4, 1, generator=g) + 0.1
    assert float(byol_loss(p, 3.0 * scale * p)) == pytest.approx(0.0, abs=1e-6)
    assert float(byol_loss(p, -p)) == pytest.approx(4.0, abs=1e-6)


def test_target_is_detached_and_fp32_under_autocast() -> None:
    g = torch.Generator().manual_seed(2)
    p = torch.randn(3, 4, generator=g, requires_grad=True)
    z = torch.randn(3, 4, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = byol_loss(p.bfloat16(), z.bfloat16())
    assert loss.dtype == torch.float32
    loss.backward()
    assert p.grad is not None and z.grad is None  # stop-gradient on the target


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        byol_loss(torch.randn(3, 4), torch.randn(3, 5))
