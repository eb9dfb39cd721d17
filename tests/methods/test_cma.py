"""CMA positive-set mining: chunked top-k agreement equals a brute-force reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avssl.methods.cma import mine_positive_sets, mining_chunk_rows, positive_set_purity


def brute_force(v: torch.Tensor, a: torch.Tensor, k: int) -> list[set[int]]:
    """Written out: agreement(i, j) = min(cos_v(i, j), cos_a(i, j)), top k over j != i."""
    n = v.shape[0]
    out = []
    for i in range(n):
        scores = []
        for j in range(n):
            if j == i:
                continue
            sv = float(torch.dot(v[i], v[j]))
            sa = float(torch.dot(a[i], a[j]))
            scores.append((min(sv, sa), j))
        scores.sort(reverse=True)
        out.append({j for _, j in scores[:k]})
    return out


def test_chunked_mining_equals_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(57, 16, generator=g, dtype=torch.float64), dim=1)
    a = F.normalize(torch.randn(57, 16, generator=g, dtype=torch.float64), dim=1)
    ref = brute_force(v, a, k=5)
    for chunk in (1, 7, 57, 1000):  # chunks that divide N, do not, and exceed it
        got = mine_positive_sets(v, a, k=5, chunk=chunk)
        assert got.shape == (57, 5)
        assert [set(r.tolist()) for r in got] == ref
        assert not (got == torch.arange(57)[:, None]).any()  # self never a positive


def test_agreement_needs_both_modalities() -> None:
    # j is i's nearest video neighbour but far in audio: min() must reject it.
    v = F.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.9, 0.4], [0.0, 1.0]]), dim=1)
    a = F.normalize(torch.tensor([[1.0, 0.0], [-1.0, 0.1], [0.9, 0.4], [0.0, 1.0]]), dim=1)
    sets = mine_positive_sets(v, a, k=1)
    assert sets[0].item() == 2


def test_purity() -> None:
    sets = torch.tensor([[1, 2], [0, 3], [3, 0], [2, 1]])
    labels = torch.tensor([0, 0, 1, 1])
    # row0: 1 same, 2 diff; row1: 0 same, 3 diff; row2: 3 same, 0 diff; row3: 2 same, 1 diff
    assert positive_set_purity(sets, labels) == 0.5
    assert positive_set_purity(sets[:, :1], labels) == 1.0


def test_mining_chunk_fits_the_memory_budget() -> None:
    # AudioSet-sized bank in fp32: 4 GB holds two (280, 1.78M) buffers, not 4096 rows (58 GB)
    n = 1_780_000
    rows = mining_chunk_rows(n, 4096, 4.0)
    assert rows == 280 and 2 * rows * n * 4 <= 4e9 < 2 * (rows + 1) * n * 4
    assert mining_chunk_rows(10_000, 4096, 4.0) == 4096  # small banks: the configured maximum
    assert mining_chunk_rows(100, 4096, 4.0) == 100
    assert mining_chunk_rows(n, 4096, 0.0) == 1  # never zero rows
    assert mining_chunk_rows(n, 4096, 4.0, bytes_per_value=2) == 561  # fp16 banks
