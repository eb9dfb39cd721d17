"""MemoryBank and Queue in a single process (the DDP behaviour is in test_distributed.py)."""

from __future__ import annotations

import os
import re

import pytest
import torch
import torch.nn.functional as F

from avssl.memory import MemoryBank, Queue, merge_duplicates


def _emb(b: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, generator=g), dim=1)


def test_init_unit_norm_deterministic_and_persistent() -> None:
    a, b, c = MemoryBank(50, 16, seed=3), MemoryBank(50, 16, seed=3), MemoryBank(50, 16, seed=4)
    torch.testing.assert_close(a.memory.norm(dim=1), torch.ones(50))
    assert torch.equal(a.memory, b.memory) and not torch.equal(a.memory, c.memory)
    assert list(a.state_dict()) == ["memory"]
    assert a.memory.std(0).min() > 0.1  # rows are spread, not a constant vector


def test_rows_shape_and_copy() -> None:
    bank = MemoryBank(20, 4)
    idx = torch.tensor([[1, 2, 3], [4, 5, 19]])
    rows = bank.rows(idx)
    assert rows.shape == (2, 3, 4)
    assert torch.equal(rows[1, 2], bank.memory[19])
    rows.zero_()
    assert bank.memory[19].abs().sum() > 0  # a copy, not a view


@pytest.mark.parametrize("momentum", [0.5, 0.9, 0.0])
def test_update_matches_formula(momentum: float) -> None:
    bank = MemoryBank(30, 8, momentum=momentum, seed=1)
    before = bank.memory.clone()
    idx = torch.tensor([4, 0, 29, 7])
    emb = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    bank.update(idx, emb)
    expected = before.clone()
    for i, row in zip(idx.tolist(), emb):
        v = momentum * before[i] + (1 - momentum) * row
        expected[i] = v / v.norm()
    torch.testing.assert_close(bank.memory, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bank.memory.norm(dim=1), torch.ones(30))
    untouched = [i for i in range(30) if i not in idx.tolist()]
    assert torch.equal(bank.memory[untouched], before[untouched])


def test_update_does_not_track_gradients() -> None:
    bank = MemoryBank(10, 4)
    emb = torch.randn(2, 4, requires_grad=True)
    bank.update(torch.tensor([1, 2]), emb * 2)
    assert not bank.memory.requires_grad and bank.memory.grad_fn is None


def test_duplicates_averaged_then_one_update() -> None:
    m = 0.5
    bank = MemoryBank(10, 6, momentum=m, seed=5)
    before = bank.memory.clone()
    e = _emb(5, 6, seed=6)
    idx = torch.tensor([3, 5, 3, 8, 3])
    bank.update(idx, e)
    mean3 = (e[0] + e[2] + e[4]) / 3
    v3 = m * before[3] + (1 - m) * mean3
    torch.testing.assert_close(bank.memory[3], v3 / v3.norm(), rtol=1e-6, atol=1e-6)
    v5 = m * before[5] + (1 - m) * e[1]
    torch.testing.assert_close(bank.memory[5], v5 / v5.norm(), rtol=1e-6, atol=1e-6)
    # Deterministic: the same update on an identical bank is bit-identical.
    again = MemoryBank(10, 6, momentum=m, seed=5)
    again.update(idx, e)
    assert torch.equal(again.memory, bank.memory)
    # Two duplicates: the order of the pair does not matter (a + b == b + a exactly).
    p, q = MemoryBank(10, 6, seed=5), MemoryBank(10, 6, seed=5)
    p.update(torch.tensor([2, 7, 2]), e[:3])
    q.update(torch.tensor([2, 7, 2]), e[[2, 1, 0]])
    assert torch.equal(p.memory, q.memory)


def test_merge_duplicates() -> None:
    idx = torch.tensor([9, 1, 9, 9, 4, 1])
    emb = torch.arange(12, dtype=torch.float32).view(6, 2)
    u, mean = merge_duplicates(idx, emb)
    assert u.tolist() == [1, 4, 9]
    torch.testing.assert_close(mean, torch.tensor([[6.0, 7.0], [8.0, 9.0], [10 / 3, 13 / 3]]))
    same_i, same_e = merge_duplicates(torch.tensor([2, 0, 1]), emb[:3])
    assert same_i.tolist() == [2, 0, 1] and torch.equal(same_e, emb[:3])


def _chi2(counts: torch.Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_negatives_exclude_self_and_are_uniform() -> None:
    n, k = 11, 64
    bank = MemoryBank(n, 4)
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(n).repeat(20)  # every row's own index appears
    neg = bank.sample_negatives(idx, k, generator=g)
    assert neg.shape == (idx.shape[0], k) and neg.dtype == torch.long
    assert (neg != idx[:, None]).all() and neg.min() >= 0 and neg.max() < n
    # Uniform over the other N-1 rows: chi-square with 9 dof; 99.99th percentile is ~33.7.
    own = torch.full((4000,), 3)
    draws = bank.sample_negatives(own, 16, generator=g).flatten()
    counts = torch.bincount(draws, minlength=n).double()
    assert counts[3] == 0
    assert _chi2(torch.cat([counts[:3], counts[4:]])) < 33.7
    # Reproducible from the generator.
    a = bank.sample_negatives(idx, 8, generator=torch.Generator().manual_seed(1))
    b = bank.sample_negatives(idx, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_negatives_excluding_a_set() -> None:
    n = 12
    bank = MemoryBank(n, 4)
    g = torch.Generator().manual_seed(0)
    # Sets with duplicates, unsorted values, out-of-range padding (-1) and edge values 0, N-1.
    sets = torch.tensor([[5, 0, 11, 5], [3, 4, 3, -1], [11, 10, 9, 8], [0, 1, 2, 3]])
    neg = bank.sample_negatives_excluding(sets.repeat(500, 1), 32, generator=g)
    assert neg.shape == (2000, 32)
    for r, s in enumerate(sets.tolist()):
        drawn = neg[r::4].flatten()
        allowed = sorted(set(range(n)) - set(s))
        counts = torch.bincount(drawn, minlength=n).double()
        assert counts[[v for v in range(n) if v not in allowed]].sum() == 0
        # Uniform over the complement: chi-square 99.99th percentile for <= 9 dof is < 33.7.
        assert _chi2(counts[allowed]) < 33.7, (s, counts)
    # A set covering every row leaves nothing to draw.
    with pytest.raises(ValueError):
        bank.sample_negatives_excluding(torch.arange(n).view(1, n), 4, generator=g)
    # The plain variant is the one-element-set special case in distribution: both exclude self.
    one = bank.sample_negatives_excluding(torch.tensor([[7]]), 1000, generator=g)
    assert (one != 7).all() and len(one.unique()) == n - 1


def test_state_dict_round_trip() -> None:
    bank = MemoryBank(40, 8, seed=0)
    bank.update(torch.tensor([1, 2, 3]), _emb(3, 8, seed=1))
    other = MemoryBank(40, 8, seed=99)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.memory, bank.memory)
    with pytest.raises(RuntimeError):
        MemoryBank(41, 8).load_state_dict(bank.state_dict())


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1))  # type: ignore[union-attr]


def test_large_bank_updates_in_place() -> None:
    n, d = 2_000_000, 128  # 1 GiB of fp32 rows, like AudioSet's 1.78M
    bank = MemoryBank(n, d, seed=0)
    ptr = bank.memory.data_ptr()
    idx = torch.tensor([0, 1_999_999, 123_456, 123_456, 7])
    emb = _emb(5, d, seed=2)
    # Peak resident memory during the update must not grow by anything like the bank's size.
    can_reset = os.path.exists("/proc/self/clear_refs")
    if can_reset:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM (peak RSS) to the current RSS
        except OSError:
            can_reset = False
    rss = _rss_kb("VmRSS") if can_reset else 0
    bank.update(idx, emb)
    bank.sync_from(0)
    negs = bank.sample_negatives(idx, 1024)
    if can_reset:
        assert _rss_kb("VmHWM") - rss < 64 * 1024, "update copied the bank"
    assert bank.memory.data_ptr() == ptr
    assert negs.shape == (5, 1024)
    torch.testing.assert_close(bank.memory[[0, 1_999_999, 123_456, 7]].norm(dim=1), torch.ones(4))
    del bank


def test_queue_fifo_wraps_and_round_trips() -> None:
    q = Queue(5, 3, seed=0)
    torch.testing.assert_close(q.keys.norm(dim=1), torch.ones(5))
    assert (q.ids == -1).all() and int(q.ptr) == 0
    k = torch.arange(24, dtype=torch.float32).view(8, 3)
    q.enqueue(k[:3], torch.tensor([10, 11, 12]))
    assert int(q.ptr) == 3 and torch.equal(q.keys[:3], k[:3])
    q.enqueue(k[3:7], torch.tensor([13, 14, 15, 16]))  # wraps: rows 3, 4, 0, 1
    assert int(q.ptr) == 2
    assert q.ids.tolist() == [15, 16, 12, 13, 14]
    assert torch.equal(q.keys[[3, 4, 0, 1]], k[3:7])
    q.enqueue(k)  # longer than the queue: its last 5 keys, ids -1
    assert torch.equal(q.keys[[2, 3, 4, 0, 1]], k[3:]) and (q.ids == -1).all()
    assert int(q.ptr) == 2
    r = Queue(5, 3, seed=1)
    r.load_state_dict(q.state_dict())
    assert torch.equal(r.keys, q.keys) and int(r.ptr) == 2
    assert sorted(q.state_dict()) == ["ids", "keys", "ptr"]
