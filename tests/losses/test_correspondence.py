"""The correspondence loss against a cross-entropy written out by hand, and its accuracy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from avssl.losses.correspondence import correspondence_loss


def written_out(pos: Tensor, neg: Tensor) -> Tensor:
    """mean over the 2B pairs of -log softmax(logits)[target], in float64 with plain exp/log."""
    total, count = 0.0, 0
    for logits, target in [(row, 1) for row in pos.double()] + [(row, 0) for row in neg.double()]:
        z = [math.exp(float(x)) for x in logits]
        total += -math.log(z[target] / (z[0] + z[1]))
        count += 1
    return torch.tensor(total / count, dtype=torch.float64)


def test_loss_equals_the_written_out_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(7, 2, generator=g) * 3, torch.randn(7, 2, generator=g) * 3
    loss, acc = correspondence_loss(pos, neg)
    assert loss.dim() == 0 and acc.dim() == 0 and loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), written_out(pos, neg), rtol=1e-6, atol=1e-6)
    right = int((pos[:, 1] > pos[:, 0]).sum() + (neg[:, 0] >= neg[:, 1]).sum())
    assert float(acc) == pytest.approx(100.0 * right / 14)


def test_accuracy_counts() -> None:
    # positives: 2 of 3 say "corresponds"; negatives: 1 of 3 says "does not", 1 ties (a tie
    # is class 0: right for a negative), 1 says "corresponds"
    pos = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 3.0]])
    neg = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    _, acc = correspondence_loss(pos, neg)
    assert float(acc) == pytest.approx(100.0 * 4 / 6)
    assert not acc.requires_grad
    perfect = correspondence_loss(torch.tensor([[0.0, 9.0]]), torch.tensor([[9.0, 0.0]]))
    assert float(perfect[1]) == 100.0 and float(perfect[0]) < 1e-3
    # equal logits: chance, log 2
    chance = correspondence_loss(torch.zeros(4, 2), torch.zeros(4, 2))[0]
    assert float(chance) == pytest.approx(math.log(2))


def test_unbalanced_pairs_and_gradient() -> None:
    """B' != B is allowed (the mean is over all pairs); fp64 stays fp64 (gradcheck)."""
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    neg = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    loss, _ = correspondence_loss(pos, neg)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, written_out(pos.detach(), neg.detach()))
    assert torch.autograd.gradcheck(lambda p, n: correspondence_loss(p, n)[0], (pos, neg))


def test_half_precision_is_computed_in_fp32() -> None:
    pos = torch.randn(4, 2).bfloat16()
    neg = torch.randn(4, 2).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, acc = correspondence_loss(pos, neg)
    assert loss.dtype == torch.float32 and acc.dtype == torch.float32
    torch.testing.assert_close(loss.double(), written_out(pos.float(), neg.float()),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shapes", [((4, 3), (4, 2)), ((4,), (4, 2)), ((0, 2), (0, 2))])
def test_bad_shapes_are_rejected(shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    with pytest.raises(ValueError, match=r"expected \(B, 2\) logits"):
        correspondence_loss(torch.zeros(shapes[0]), torch.zeros(shapes[1]))
