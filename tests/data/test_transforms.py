"""Video transforms: one random setting per clip, shapes, normalization, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from avssl.config import VideoConfig
from avssl.data import transforms as TR
from avssl.data.transforms import (
    VideoTransform,
    center_crop_box,
    random_resized_crop_params,
)

CFG = VideoConfig(num_frames=8, crop_size=32, resize=36, min_scale=0.08)


def _noise_clip(t: int = 8, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return np.repeat(img[None], t, axis=0)


def _marker_clip(t: int = 8, h: int = 48, w: int = 64) -> np.ndarray:
    """A white 6x6 square moving 3 px right per frame on a black background."""
    clip = np.zeros((t, h, w, 3), np.uint8)
    for k in range(t):
        clip[k, 20:26, 10 + 3 * k: 16 + 3 * k] = 255
    return clip


def test_torchvision_v2_shares_params_across_frames() -> None:
    """Checked, not assumed: v2 transforms on (T, C, H, W) use one setting for all T."""
    x = torch.from_numpy(_noise_clip()).permute(0, 3, 1, 2)
    t = v2.Compose([v2.RandomResizedCrop(24, scale=(0.08, 1)), v2.RandomHorizontalFlip(),
                    v2.ColorJitter(0.4, 0.4, 0.4, 0.2)])
    for _ in range(5):
        y = t(x)
        assert torch.equal(y, y[:1].expand_as(y))


def test_identical_frames_stay_identical() -> None:
    tf = VideoTransform(CFG, train=True)
    clip = _noise_clip()
    for seed in range(10):
        y = tf(clip, seed)
        assert y.shape == (3, 8, 32, 32) and y.dtype == torch.float32
        assert torch.equal(y, y[:, :1].expand_as(y)), seed


def _centroid_x(y: torch.Tensor) -> np.ndarray:
    """Marker centroid column per frame of a (3, T, h, w) output (bright = marker)."""
    lum = y.mean(0)  # (T, h, w)
    m = (lum > lum.mean(dim=(1, 2), keepdim=True) + 0.5 * lum.std(dim=(1, 2), keepdim=True))
    cols = torch.arange(lum.shape[-1], dtype=torch.float32)
    return np.array([float((m[k].float().sum(0) * cols).sum() / m[k].sum().clamp(min=1))
                     for k in range(lum.shape[0])])


def test_moving_marker_keeps_its_geometry() -> None:
    """Same crop/flip on every frame: the marker moves by the same step in every frame
    (mirrored when flipped), so its track stays a straight line."""
    cfg = VideoConfig(crop_size=32, resize=36, min_scale=0.6, color_jitter=[0.0, 0.0, 0.0, 0.0])
    tf = VideoTransform(cfg, train=True)
    clip = _marker_clip()
    signs = set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        top, left, h, w = random_resized_crop_params(rng, 48, 64, (0.6, 1.0))
        flip = rng.random() < 0.5
        if not (top <= 20 and top + h >= 26 and left <= 10 and left + w >= 37):
            continue  # marker not fully inside this crop
        xs = _centroid_x(tf(clip, seed))
        steps = np.diff(xs)
        expected = 3 * 32 / w * (-1 if flip else 1)
        np.testing.assert_allclose(steps, expected, atol=0.35)
        signs.add(np.sign(steps.mean()))
    assert signs == {-1.0, 1.0}  # both flipped and unflipped clips were checked


def test_same_seed_same_output_and_seeds_differ() -> None:
    tf = VideoTransform(CFG, train=True)
    clip = _marker_clip() // 2 + _noise_clip() // 2
    a = tf(clip, np.random.default_rng([0, 1, 2]))
    b = tf(torch.from_numpy(clip), np.random.default_rng([0, 1, 2]))  # tensors work too
    c = tf(clip, np.random.default_rng([0, 1, 3]))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Independent of the global torch RNG state.
    torch.manual_seed(123)
    d = tf(clip, np.random.default_rng([0, 1, 2]))
    assert torch.equal(a, d)


def test_test_mode_center_crop_and_normalization() -> None:
    tf = VideoTransform(CFG, train=False)
    # Grey level 0.485*255 in R etc. normalizes to ~0 per channel.
    mean = np.array(CFG.mean) * 255
    clip = np.broadcast_to(np.round(mean).astype(np.uint8), (8, 48, 64, 3)).copy()
    y = tf(clip)
    assert y.shape == (3, 8, 32, 32)
    assert float(y.abs().max()) < 0.02
    white = tf(np.full((8, 48, 64, 3), 255, np.uint8))
    expected = (1 - torch.tensor(CFG.mean)) / torch.tensor(CFG.std)
    torch.testing.assert_close(white.mean(dim=(1, 2, 3)), expected, atol=1e-4, rtol=0)
    # Deterministic and independent of rng.
    clip2 = _marker_clip()
    assert torch.equal(tf(clip2), tf(clip2, 5))
    # Centre crop: short side 48 -> 36, crop 32 => a 43x43 centre box of the 48x64 frame.
    assert center_crop_box(48, 64, 36, 32) == (2, 10, 43, 43)
    # The marker (rows 20-25, cols 10-15 in frame 0) sits left of centre, inside the box.
    xs = _centroid_x(tf(clip2))
    np.testing.assert_allclose(np.diff(xs), 3 * 32 / 43, atol=0.3)
    assert xs[0] == pytest.approx((12.5 - 10) * 32 / 43, abs=0.6)


def test_crop_params_follow_scale_and_ratio() -> None:
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = random_resized_crop_params(rng, 128, 170, (0.08, 1.0))
        assert top >= 0 and top + h <= 128 and left >= 0 and left + w <= 170
        areas.append(h * w / (128 * 170))
        ratios.append(w / h)
    assert min(areas) < 0.1 and max(areas) > 0.9
    assert min(ratios) > 0.7 and max(ratios) < 1.4


@pytest.mark.parametrize("name,factors", [
    ("adjust_brightness", [0.6, 1.0, 1.4]), ("adjust_contrast", [0.6, 1.4]),
    ("adjust_saturation", [0.0, 0.6, 1.4]), ("adjust_hue", [-0.5, -0.2, 0.0, 0.13, 0.5])])
def test_colour_ops_match_torchvision(name: str, factors: list[float]) -> None:
    """Our in-place ops on (3, T, h, w) equal torchvision's on (T, 3, h, w), including grey
    pixels and ties between channels (where the hue sector is ambiguous)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, 20, 24, generator=g)
    x[:, :, :4] = 0.5  # grey
    x[0, :, 4:8] = x[1, :, 4:8]  # R == G
    x[1, :, 8:12] = x[2, :, 8:12]  # G == B
    x[0, :, 12:16] = x[2, :, 12:16]  # R == B
    x[:, 1] = (x[:, 1] * 8).round() / 8  # coarse levels: many exact ties
    ours_fn, ref_fn = getattr(TR, name), getattr(v2.functional, name)
    for f in factors:
        ref = ref_fn(x.permute(1, 0, 2, 3), f).permute(1, 0, 2, 3)
        torch.testing.assert_close(ours_fn(x.clone(), f), ref, atol=1e-5, rtol=0)
        if name == "adjust_hue":  # the numba loop VideoTransform uses (torch without numba)
            y = x.clone()
            TR._hue(y, f, None, 1.0)
            torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_train_transform_matches_torchvision_pipeline() -> None:
    """The whole train path (crop, flip, jitter in the drawn order with the deferred scale and
    skipped clamps, normalization) against torchvision's ops applied one by one."""
    tf = VideoTransform(CFG, train=True)
    clip = _marker_clip() // 2 + _noise_clip() // 2
    F = v2.functional
    ref_ops = {TR._brightness: F.adjust_brightness, TR._contrast: F.adjust_contrast,
               TR._saturation: F.adjust_saturation, TR._hue: F.adjust_hue}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        top, left, h, w = random_resized_crop_params(rng, 48, 64, (CFG.min_scale, 1.0))
        flip = rng.random() < 0.5
        x = F.resized_crop(torch.from_numpy(clip).permute(0, 3, 1, 2), top, left, h, w,
                           [32, 32], antialias=True)
        x = (F.horizontal_flip(x) if flip else x).float() / 255
        for op, factor in tf._jitter_params(rng):
            x = ref_ops[op](x, factor)
        ref = F.normalize(x, CFG.mean, CFG.std).permute(1, 0, 2, 3)
        torch.testing.assert_close(tf(clip, seed), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("train", [True, False])
def test_fused_numba_path_matches_torch_path(train: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-call numba kernel (colour ops in the drawn order + normalization) against the
    torch ops it replaces (the path without numba), on the same draws."""
    if TR._color_kernel() is None:
        pytest.skip("numba not installed")
    cfg = VideoConfig(num_frames=8, crop_size=32, resize=36, min_scale=0.08,
                      color_jitter=[0.8, 0.8, 0.8, 0.4])  # wide factors: clamps bind
    tf = VideoTransform(cfg, train=train)
    clip = _marker_clip() // 2 + _noise_clip() // 2
    clip[:, :8] = 128  # grey rows
    fused = [tf(clip, seed) for seed in range(40)]
    monkeypatch.setattr(TR, "_COLOR_KERNEL", False)
    for seed, y in enumerate(fused):
        torch.testing.assert_close(y, tf(clip, seed), atol=2e-5, rtol=0)
