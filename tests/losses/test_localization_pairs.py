"""Side-by-side pairs for the multiple-instance localization term (``method.localization_pairs``):
which clip sits where, which locations form each clip's bag, and the term AVID computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avssl.losses.localization import mil_contrastive_loss, side_by_side, split_pairs


def test_side_by_side_puts_neighbouring_clips_together() -> None:
    video = torch.randn(5, 3, 2, 4, 6)  # odd: the last clip is left out
    pairs = side_by_side(video)
    assert pairs.shape == (2, 3, 2, 4, 12)
    for k in range(2):
        assert torch.equal(pairs[k, ..., :6], video[2 * k])
        assert torch.equal(pairs[k, ..., 6:], video[2 * k + 1])


def test_split_pairs_bags_hold_exactly_their_clips_locations() -> None:
    """Each location's embedding names its pair, row, column: a bag must hold the columns of its
    own half and nothing else, in clip order (row 2k: left half of pair k)."""
    p, t, h, w2 = 3, 2, 2, 7  # odd width: the middle column straddles both clips
    idx = torch.stack(torch.meshgrid(torch.arange(p), torch.arange(t), torch.arange(h),
                                     torch.arange(w2), indexing="ij"), dim=-1).float()
    bags = split_pairs(idx)
    assert bags.shape == (2 * p, t * h * 3, 4)
    for clip in range(2 * p):
        pair, cols = clip // 2, ({0, 1, 2} if clip % 2 == 0 else {4, 5, 6})
        assert set(bags[clip, :, 0].tolist()) == {pair}
        assert set(bags[clip, :, 3].long().tolist()) == cols
    assert 3 not in bags[..., 3].long().flatten().tolist()  # the straddling column is in no bag


def test_pairs_of_a_context_free_encoder_give_each_clips_own_grid() -> None:
    """With no receptive field across the seam (a per-pixel map, pooled on a grid that divides
    the width) the bags equal each clip's own location grid: the bookkeeping loses nothing."""
    torch.manual_seed(0)
    video = torch.randn(4, 3, 2, 8, 8)

    def grid(x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, T, H/4, W/4, 3)
        y = F.avg_pool3d(torch.tanh(x) * 2 + x ** 2, (1, 4, 4))
        return F.normalize(y.movedim(1, -1), dim=-1)

    bags = split_pairs(grid(side_by_side(video)))
    own = grid(video).flatten(1, 3)
    torch.testing.assert_close(bags, own)


def test_avid_localization_pairs_term() -> None:
    """``localization_pairs``: the MIL term is the written-out loss on the pair bags of the
    method's own encoders; gradients reach the video encoder; an odd batch leaves one clip out."""
    from tests.methods.test_methods import make_batch, make_method

    m = make_method(localization_weight=0.5, localization_pairs=True)
    batch = make_batch([0, 3, 5, 7, 9])
    torch.manual_seed(1)
    out = m(batch)
    got = {k: float(v.detach()) for k, v in out.items()}
    with torch.no_grad():
        bags = split_pairs(m.encoders.embed_locations(side_by_side(batch["video"])))
        a = m.encoders.embed_audio(batch["audio"])
    assert bags.shape[0] == 4
    want = mil_contrastive_loss(bags, a[:4], m.cfg.temperature)
    assert got["loss_mil"] == pytest.approx(float(want), rel=1e-5)
    instance = (got["loss_v2a"] + got["loss_a2v"]) / 2
    assert got["loss"] == pytest.approx(instance + 0.5 * got["loss_mil"], rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in m.encoders.video.parameters() if p.requires_grad)
    # the plain term sees whole clips: a different value from the same weights
    m.cfg.localization_pairs = False
    assert float(m(batch)["loss_mil"].detach()) != pytest.approx(got["loss_mil"], rel=1e-3)
