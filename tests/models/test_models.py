"""Encoders and heads: published architecture (counts, keys, shapes) and the encoder contract."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from avssl.config import ConfigError, EncoderConfig, HeadConfig
from avssl.engine.device import channels_last_
from avssl.models import (
    AUDIO_ENCODERS,
    VIDEO_ENCODERS,
    AudioCNN,
    LinearClassifier,
    ProjectionHead,
    R2Plus1D,
    TorchvisionVideoResNet,
    build_audio_encoder,
    build_head,
    build_video_encoder,
)

# Key names and shapes of the published weights, kept in the repository (docs/reference.md
# section 6): a missing file is an error, never a skip.
KEY_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "avid_cma_checkpoint_keys.txt"

# docs/reference.md section 1.2 and the key file's last lines
R2PLUS1D_PARAMS = {10: 7_015_616, 18: 15_379_136, 34: 28_861_632}
AUDIO_CNN_PARAMS = 4_725_696
HEAD_PARAMS = 590_976


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def published() -> dict[str, list[int]]:
    """Key -> shape of the published AVID-CMA checkpoint."""
    keys = {}
    for line in KEY_FILE.read_text().splitlines():
        m = re.fullmatch(r"(module\.\S+) (\[.*\])", line.strip())
        if m:
            keys[m.group(1)] = ast.literal_eval(m.group(2))
    return keys


def subtree(keys: dict[str, list[int]], prefix: str) -> dict[str, list[int]]:
    return {k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}


def shapes(m: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in m.state_dict().items()}


# --------------------------------------------------------------------------------------------
# Published architecture
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [10, 18, 34])
def test_r2plus1d_parameter_counts(depth: int) -> None:
    with torch.device("meta"):  # counts only: skip allocating and initializing 29M weights
        m = R2Plus1D(depth=depth, width=64)
    assert n_params(m) == R2PLUS1D_PARAMS[depth]
    assert m.out_dim == 512


def test_key_file_counts_match_reference(published: dict[str, list[int]]) -> None:
    text = KEY_FILE.read_text()
    for depth in (10, 34):
        m = re.search(rf"R2Plus1D depth {depth}: ([\d,]+)", text)
        assert m and int(m.group(1).replace(",", "")) == R2PLUS1D_PARAMS[depth]


def test_audio_cnn_and_head_parameter_counts() -> None:
    assert n_params(AudioCNN(width=64)) == AUDIO_CNN_PARAMS
    head = ProjectionHead(512, hidden=[512, 512], out_dim=128)
    assert n_params(head) == HEAD_PARAMS


def test_r2plus1d_keys_and_shapes_match_published(published: dict[str, list[int]]) -> None:
    ref = subtree(published, "module.video_model.")
    m = R2Plus1D(depth=18, width=64)
    assert shapes(m) == ref
    # loads strictly after stripping only the prefix
    state = {k: torch.zeros(v, dtype=torch.long if k.endswith("num_batches_tracked") else None)
             for k, v in ref.items()}
    m.load_state_dict(state, strict=True)


def test_audio_cnn_keys_and_shapes_match_published(published: dict[str, list[int]]) -> None:
    assert shapes(AudioCNN(width=64)) == subtree(published, "module.audio_model.")


def test_head_keys_match_published(published: dict[str, list[int]]) -> None:
    head = ProjectionHead(512, [512, 512], 128)
    assert shapes(head) == subtree(published, "module.video_proj.")
    assert shapes(head) == subtree(published, "module.audio_proj.")


def test_r2plus1d_published_stage_shapes_224() -> None:
    with torch.device("meta"):  # shape propagation only; a CPU forward at 224 is not needed
        m = R2Plus1D(depth=18, width=64)
        feats = m.forward_features(torch.empty(1, 3, 8, 224, 224))
        out = m(torch.empty(1, 3, 8, 224, 224))
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "conv2x": (64, 8, 56, 56), "conv3x": (128, 4, 28, 28),
        "conv4x": (256, 2, 14, 14), "conv5x": (512, 1, 7, 7)}
    assert tuple(out.shape) == (1, 512)


def test_r2plus1d_real_forward_shapes_112() -> None:
    m = R2Plus1D(depth=10, width=8).eval()
    with torch.no_grad():
        feats = m.forward_features(torch.randn(1, 3, 8, 112, 112))
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "conv2x": (8, 8, 28, 28), "conv3x": (16, 4, 14, 14),
        "conv4x": (32, 2, 7, 7), "conv5x": (64, 1, 4, 4)}


def test_r2plus1d_block_structure() -> None:
    m = R2Plus1D(depth=18, width=64)
    first = m.conv3x[0]
    # a strided 3x3x3 conv factorized: spatial stride on spt_conv1, temporal on tmp_conv1
    assert first.spt_conv1.stride == (1, 2, 2) and first.tmp_conv1.stride == (2, 1, 1)
    assert first.spt_conv2.stride == (1, 1, 1) and first.tmp_conv2.stride == (1, 1, 1)
    assert first.res_conv is not None and first.res_conv.stride == (2, 2, 2)
    assert m.conv2x[0].res_conv is None and m.conv3x[1].res_conv is None
    assert all(c.bias is None for c in m.modules() if isinstance(c, nn.Conv3d))
    stem_pool = m.conv1[3]
    assert isinstance(stem_pool, nn.MaxPool3d) and stem_pool.padding == (0, 1, 1)


def test_r2plus1d_depth10_accepts_bare_block_keys() -> None:
    src, dst = R2Plus1D(depth=10, width=4), R2Plus1D(depth=10, width=4)
    state = {re.sub(r"^(conv[2-5]x)\.0\.", r"\1.", k): v for k, v in src.state_dict().items()}
    assert "conv2x.spt_conv1.weight" in state
    dst.load_state_dict(state, strict=True)
    assert torch.equal(dst.conv5x[0].tmp_conv2.weight, src.conv5x[0].tmp_conv2.weight)


def test_audio_cnn_shapes_full_input() -> None:
    m = AudioCNN(width=64).eval()
    with torch.no_grad():
        feats = m.forward_features(torch.randn(1, 1, 200, 257))
        out = m(torch.randn(2, 1, 200, 257))
    own = {k: tuple(v.shape[1:]) for k, v in feats.items() if not k.endswith("x")}
    assert own == {"conv1": (64, 100, 129), "block1": (64, 50, 65), "block2": (128, 25, 33),
                   "block3": (256, 13, 17), "block4": (512, 13, 17)}
    assert feats["conv5x"] is feats["block4"] and feats["conv2x"] is feats["block1"]
    assert out.shape == (2, 512)


@pytest.mark.parametrize("arch", ["r2plus1d_18", "r3d_18"])
def test_torchvision_wrappers_match_torchvision(arch: str) -> None:
    with torch.device("meta"):
        ref = getattr(torchvision.models.video, arch)(weights=None)
        ours = TorchvisionVideoResNet(arch, depth=18, width=64)
    assert shapes(ours) == {k: v for k, v in shapes(ref).items() if not k.startswith("fc.")}


def test_torchvision_wrapper_same_features_as_torchvision() -> None:
    torch.manual_seed(0)
    ref = torchvision.models.video.r2plus1d_18(weights=None).eval()
    ours = TorchvisionVideoResNet("r2plus1d_18").eval()
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.stem(x)))))
        assert torch.allclose(ours.forward_grid(x), expected)


# --------------------------------------------------------------------------------------------
# Encoder contract, for every registered arch
# --------------------------------------------------------------------------------------------
WIDTH = 8
VIDEO_IN = (2, 3, 4, 32, 32)
AUDIO_IN = (2, 1, 32, 40)


def _encoders() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    out = []
    for arch in VIDEO_ENCODERS:
        depth = 10 if arch == "r2plus1d" else 18
        # torchvision's 2-D ResNets per frame keep their width (64)
        width = 64 if arch.startswith("frame_resnet") else WIDTH
        cfg = EncoderConfig(arch=arch, depth=depth, width=width)
        out.append((f"video/{arch}", build_video_encoder(cfg), VIDEO_IN))
    for arch in AUDIO_ENCODERS:
        cfg = EncoderConfig(arch=arch, depth=10, width=WIDTH)
        out.append((f"audio/{arch}", build_audio_encoder(cfg), AUDIO_IN))
    return out


@pytest.fixture(scope="module")
def encoders() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return _encoders()


def test_encoder_contract(encoders: list[tuple[str, nn.Module, tuple[int, ...]]]) -> None:
    assert len(encoders) == len(VIDEO_ENCODERS) + len(AUDIO_ENCODERS)
    for name, enc, shape in encoders:
        enc.eval()
        x = torch.randn(*shape)
        with torch.no_grad():
            out, feats, grid = enc(x), enc.forward_features(x), enc.forward_grid(x)
        assert enc.out_dim == enc.feature_dims["conv5x"], name
        if not name.startswith("video/frame_resnet"):
            assert enc.out_dim == 8 * WIDTH, name
        assert out.shape == (shape[0], enc.out_dim), name
        assert {"conv2x", "conv3x", "conv4x", "conv5x"} <= set(feats), name
        for stage, t in feats.items():
            assert t.shape[1] == enc.feature_dims[stage], (name, stage)
            assert t.ndim == len(shape), (name, stage)
        assert torch.equal(grid, feats["conv5x"]), name
        assert torch.allclose(out, grid.flatten(2).amax(-1)), name  # global max pool


def test_encoders_train_backward(encoders: list[tuple[str, nn.Module, tuple[int, ...]]]) -> None:
    for name, enc, shape in encoders:
        enc.train()
        enc.zero_grad()
        enc(torch.randn(*shape)).square().mean().backward()
        assert all(p.grad is not None for p in enc.parameters()), name


def test_channels_last_same_output(encoders: list[tuple[str, nn.Module, tuple[int, ...]]]) -> None:
    for name, enc, shape in encoders:
        enc.eval()
        fmt = torch.channels_last_3d if len(shape) == 5 else torch.channels_last
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = enc(x)
            channels_last_(enc)  # per weight: 3-D or 2-D format (a frame encoder has 2-D convs)
            got = enc(x.contiguous(memory_format=fmt))
            enc.to(memory_format=torch.contiguous_format)
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), name


def test_bf16_autocast(encoders: list[tuple[str, nn.Module, tuple[int, ...]]]) -> None:
    for name, enc, shape in encoders:
        enc.eval()
        head = ProjectionHead(enc.out_dim, [16], 8)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = enc(torch.randn(*shape))
            z = head(out)
        assert out.shape == (shape[0], enc.out_dim) and torch.isfinite(out).all(), name
        assert z.dtype == torch.float32
        assert torch.allclose(z.norm(dim=-1), torch.ones(shape[0]), atol=1e-5), name


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------
def test_projection_head_normalizes() -> None:
    head = build_head(32, HeadConfig(hidden=[16, 16], out_dim=8))
    z = head(torch.randn(5, 32))
    assert z.shape == (5, 8)
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-6)
    assert [type(m) for m in head.projection] == [nn.Linear, nn.ReLU] * 2 + [nn.Linear]
    raw = ProjectionHead(32, [16], 8, normalize=False)(torch.randn(5, 32))
    assert not torch.allclose(raw.norm(dim=1), torch.ones(5))


def test_projection_head_per_location_equals_per_vector() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(16, [12, 12], 8)
    fmap = torch.randn(2, 16, 2, 3, 4)
    out = head.forward_map(fmap)
    assert out.shape == (2, 8, 2, 3, 4)
    b, t, i, j = 1, 1, 2, 3
    assert torch.allclose(out[b, :, t, i, j], head(fmap[b, :, t, i, j][None])[0], atol=1e-6)
    per_vector = head(fmap.permute(0, 2, 3, 4, 1).reshape(-1, 16))
    assert torch.allclose(out.permute(0, 2, 3, 4, 1).reshape(-1, 8), per_vector, atol=1e-6)


def test_linear_classifier() -> None:
    clf = LinearClassifier(16, 5, bn=True, dropout=0.5)
    assert clf(torch.randn(4, 16)).shape == (4, 5)
    assert clf(torch.randn(4, 16, 2, 3, 3)).shape == (4, 5)  # map input: global max pool
    clf.eval()
    x = torch.randn(4, 16, 2, 3, 3)
    assert torch.allclose(clf(x), clf(x.flatten(2).amax(-1)))


# --------------------------------------------------------------------------------------------
# Builders and errors
# --------------------------------------------------------------------------------------------
def test_unknown_arch_names_key_and_choices() -> None:
    with pytest.raises(ValueError, match=r"model\.video\.arch.*r2plus1d.*tv_r3d_18"):
        build_video_encoder(EncoderConfig(arch="resnet3000"))
    with pytest.raises(ValueError, match=r"model\.audio\.arch.*audio_cnn.*resnet18"):
        build_audio_encoder(EncoderConfig(arch="r2plus1d"))


def test_bad_depth_names_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.video\.depth.*10, 18, 34"):
        build_video_encoder(EncoderConfig(arch="r2plus1d", depth=50))
    with pytest.raises(ConfigError, match=r"model\.audio\.depth"):
        build_audio_encoder(EncoderConfig(arch="audio_cnn", depth=18))


def test_width_and_depth_from_config() -> None:
    m = build_video_encoder(EncoderConfig(arch="r2plus1d", depth=34, width=4))
    assert [len(getattr(m, s)) for s in ("conv2x", "conv3x", "conv4x", "conv5x")] == [3, 4, 6, 3]
    assert m.feature_dims == {"conv2x": 4, "conv3x": 8, "conv4x": 16, "conv5x": 32}


def test_pretrained_loads_under_found_prefix(tmp_path: Path) -> None:
    video, audio = R2Plus1D(depth=10, width=4), AudioCNN(width=4)
    state = {f"module.video_model.{k}": v for k, v in video.state_dict().items()}
    state |= {f"module.audio_model.{k}": v for k, v in audio.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "model": state}, path)
    v = build_video_encoder(EncoderConfig(arch="r2plus1d", depth=10, width=4,
                                          pretrained=str(path)))
    a = build_audio_encoder(EncoderConfig(arch="audio_cnn", depth=10, width=4,
                                          pretrained=str(path)))
    assert torch.equal(v.conv4x[0].spt_conv1.weight, video.conv4x[0].spt_conv1.weight)
    assert torch.equal(a.block3.conv2.weight, audio.block3.conv2.weight)
    with pytest.raises(ConfigError, match=r"model\.video\.pretrained"):
        build_video_encoder(EncoderConfig(arch="r2plus1d", depth=10, width=8,
                                          pretrained=str(path)))


@pytest.mark.parametrize("depth", [10, 18])
def test_r2plus1d_spatial_stride_same_weights_finer_grid(depth: int) -> None:
    """Trading the last strides for dilation keeps the weights and computes the stride-32
    map exactly at every (32 / s)-th location (Yu & Koltun 2016), on a (32 / s)x finer grid."""
    torch.manual_seed(0)
    ref = R2Plus1D(depth=depth, width=4).eval()
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        for b in ref.modules():  # non-trivial BN statistics
            if isinstance(b, nn.BatchNorm3d):
                b.running_mean.uniform_(-0.2, 0.2)
                b.running_var.uniform_(0.5, 1.5)
        want = ref.forward_grid(x)
        assert want.shape[-2:] == (2, 2)
        for stride, size in ((16, 4), (8, 8)):
            m = R2Plus1D(depth=depth, width=4, spatial_stride=stride).eval()
            m.load_state_dict(ref.state_dict())  # same keys and shapes
            got = m.forward_grid(x)
            assert got.shape == (*want.shape[:3], size, size)
            step = 32 // stride
            torch.testing.assert_close(got[..., ::step, ::step], want, rtol=1e-4, atol=1e-5)
            assert m.forward(x).shape == ref.forward(x).shape


def test_spatial_stride_from_config_and_errors() -> None:
    m = build_video_encoder(EncoderConfig(arch="r2plus1d", depth=10, width=4, spatial_stride=8))
    assert m.forward_grid(torch.randn(1, 3, 4, 56, 56)).shape[-2:] == (7, 7)
    with pytest.raises(ConfigError, match=r"model\.video\.spatial_stride.*r2plus1d"):
        build_video_encoder(EncoderConfig(arch="tv_r3d_18", width=4, spatial_stride=16))
    with pytest.raises(ValueError, match="spatial_stride"):
        R2Plus1D(depth=10, width=4, spatial_stride=4)
