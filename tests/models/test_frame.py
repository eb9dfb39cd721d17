"""FrameEncoder: a 2-D backbone per frame behind the video-encoder contract."""

from __future__ import annotations

import pytest
import torch

from avssl.models.frame import FrameEncoder
from avssl.models.heads import ProjectionHead, predictor


@pytest.mark.parametrize(("backbone", "width", "dims"), [
    ("small", 8, [8, 16, 32, 64]), ("resnet18", 64, [64, 128, 256, 512]),
    ("resnet50", 64, [256, 512, 1024, 2048])])
def test_stage_maps_keep_the_clip_axes(backbone: str, width: int, dims: list[int]) -> None:
    enc = FrameEncoder(backbone, width).eval()
    x = torch.randn(2, 3, 3, 64, 64)
    feats = enc.forward_features(x)
    assert list(feats) == ["conv2x", "conv3x", "conv4x", "conv5x"]
    assert [f.shape[1] for f in feats.values()] == dims == list(enc.feature_dims.values())
    assert all(f.shape[:3] == (2, dims[i], 3) for i, f in enumerate(feats.values()))
    assert enc(x).shape == (2, enc.out_dim)
    assert enc.forward_grid(x).shape == feats["conv5x"].shape


def test_every_frame_is_encoded_on_its_own() -> None:
    """Frame t of clip b gives the same map as that frame encoded alone (BN in eval mode)."""
    enc = FrameEncoder("small", 4).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    grid = enc.forward_grid(x)
    alone = enc.forward_grid(x[1, :, 2][None])  # a (1, 3, H, W) image: one frame
    assert torch.allclose(grid[1, :, 2], alone[0, :, 0], atol=1e-5)
    assert not torch.allclose(grid[1, :, 2], grid[1, :, 1])


def test_resnets_do_not_scale() -> None:
    with pytest.raises(ValueError, match="width 64"):
        FrameEncoder("resnet18", 32)


def test_projection_head_with_batchnorm_works_per_location() -> None:
    head = ProjectionHead(16, hidden=[32], out_dim=8, bn=True).train()
    fmap = torch.randn(4, 16, 2, 3, 3)
    out = head.forward_map(fmap)
    assert out.shape == (4, 8, 2, 3, 3)
    assert torch.allclose(out.norm(dim=1), torch.ones(4, 2, 3, 3), atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    # the published layout (no BN) keeps its Linear layers at 0, 2, 4
    plain = ProjectionHead(512, [512, 512], 128)
    assert [k for k in plain.state_dict() if k.endswith("weight")] == [
        "projection.0.weight", "projection.2.weight", "projection.4.weight"]


def test_predictor_is_an_unnormalized_mlp_with_batchnorm() -> None:
    p = predictor(8, hidden=16).train()
    y = p(torch.randn(5, 8))
    assert y.shape == (5, 8) and not torch.allclose(y.norm(dim=1), torch.ones(5))
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in p.modules()) == 1


def test_frame_encoder_stands_in_for_the_video_encoder_in_avid() -> None:
    from avssl.config import from_dict
    from avssl.methods import build_method

    cfg = from_dict({"model": {"video": {"arch": "frame_small", "width": 4},
                               "audio": {"arch": "audio_cnn", "width": 4},
                               "head": {"hidden": [16], "out_dim": 8}},
                     "method": {"num_negatives": 4}}, require_paths=False)
    method = build_method(cfg, num_rows=8)
    batch = {"video": torch.randn(4, 3, 2, 32, 32), "audio": torch.randn(4, 1, 50, 32),
             "index": torch.arange(4)}
    out = method(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert method.encoders.video.stem[0].weight.grad is not None
