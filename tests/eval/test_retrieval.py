"""Cross-modal retrieval metrics against hand-computed rankings."""

from __future__ import annotations

import torch

from avssl.eval.retrieval import cross_modal_retrieval, ranks_of_matches


def test_ranks_hand_computed() -> None:
    # 3 clips in 2-d. Query 0 = (1, 0): cosines to keys 0, 1, 2 are 0.6, 1.0, 0.0 -> own key
    # ranks 2nd. Query 1 = (0, 1): cosines 0.8, 0.0, 1.0 -> own key (0.0) ranks 3rd.
    # Query 2 = (1, 1)/sqrt2: cosines 0.99, 0.71, 0.71 -> own key ties with key 1: rank 3
    # (ties count against the query).
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    assert ranks_of_matches(q, k).tolist() == [2, 3, 3]


def test_cross_modal_retrieval_values() -> None:
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    audio = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    r = cross_modal_retrieval(video, audio, ks=(1, 2, 3))
    assert r["v2a_R@1"] == 0.0
    assert abs(r["v2a_R@2"] - 100 / 3) < 1e-4
    assert r["v2a_R@3"] == 100.0
    assert r["v2a_median_rank"] == 3.0
    assert abs(r["chance_R@1"] - 100 / 3) < 1e-4
    # audio->video: query audio 0 = (0.6, 0.8) against videos: 0.6, 0.8, 0.99 -> rank 3;
    # audio 1 = (1, 0): 1.0, 0.0, 0.71 -> own video (0.0) rank 3; audio 2 = (0, 1):
    # 0.0, 1.0, 0.71 -> own video (0.71) rank 2.
    assert ranks_of_matches(audio, video).tolist() == [3, 3, 2]
    assert r["a2v_R@1"] == 0.0 and abs(r["a2v_R@2"] - 100 / 3) < 1e-4


def test_perfect_and_scaled_embeddings() -> None:
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    r = cross_modal_retrieval(x, 3.0 * x)  # cosine ignores the scale
    assert r["v2a_R@1"] == 100.0 and r["a2v_R@1"] == 100.0
    assert r["v2a_median_rank"] == 1.0


def test_class_match_at_1() -> None:
    from avssl.eval.retrieval import class_match_at_1

    video = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    audio = torch.tensor([[0.9, 0.1], [1.0, 0.0], [0.0, 1.0], [1.0, 0.2]])
    labels = torch.tensor([0, 0, 1, 1])
    r = class_match_at_1(video, audio, labels)
    # v2a top-1: v0->a1 (0 ok), v1->a0 (0 ok), v2->a2 (1 ok), v3->a2 (1 ok)
    assert r["v2a_class@1"] == 100.0
    # a2v top-1: a0->v0 (ok), a1->v0 (ok), a2->v2 (ok), a3->v0 or v1 (label 0 != 1)
    assert r["a2v_class@1"] == 75.0
    assert r["class_chance@1"] == 50.0
