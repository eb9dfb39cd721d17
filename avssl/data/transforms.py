"""Video clip transforms: uint8 (T, H, W, 3) frames -> float (3, T, crop, crop) normalized.

Train (AVID/CMA, Morgado et al. CVPR 2021): RandomResizedCrop(scale=(min_scale, 1), ratio 3/4-4/3),
horizontal flip (p 0.5), ColorJitter(brightness, contrast, saturation, hue) in a random order,
ImageNet mean/std, with ONE random setting per clip applied to every frame. Test: short side to
``resize``, centre crop ``crop_size``.

The parameters are drawn here from an explicit ``np.random.Generator`` (torchvision's v2
transforms draw them from the global torch RNG, which depends on the worker process) and applied
with torchvision's functional ops on the whole (T, 3, H, W) tensor, so every frame gets the same
crop, flip and jitter. The crop is taken before resizing to the small output size, and the colour
jitter runs on the small frames (cheaper).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from avssl.config import VideoConfig

RATIO = (3 / 4, 4 / 3)


def random_resized_crop_params(rng: np.random.Generator, height: int, width: int,
                               scale: tuple[float, float],
                               ratio: tuple[float, float] = RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop: area fraction uniform in ``scale``,
    log aspect ratio uniform in ``log(ratio)``, 10 tries, else a centre crop."""
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        ar = math.exp(rng.uniform(log_r[0], log_r[1]))
        w = round(math.sqrt(target * ar))
        h = round(math.sqrt(target / ar))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, resize: int, crop: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) in the source frame of the centre ``crop`` after resizing the short
    side to ``resize``; cropping it and resizing to ``crop`` equals resize-then-crop up to
    rounding to whole source pixels."""
    s = min(height, width) / resize  # source pixels per resized pixel
    side = min(round(crop * s), height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def _to_tchw(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> (T, 3, H, W) view (channels-last memory, no copy)."""
    x = torch.from_numpy(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2)


class VideoTransform:
    """uint8 (T, H, W, 3) numpy/tensor -> float32 (3, T, crop, crop), normalized.

    ``train=True``: random crop/flip/jitter from ``rng`` (an ``np.random.Generator`` or a seed;
    the same generator state gives the same output). ``train=False``: deterministic.
    """

    CHUNK = 4  # frames per pass of the colour ops (cache-sized)

    def __init__(self, cfg: VideoConfig, train: bool = True) -> None:
        self.cfg = cfg
        self.train = train
        self.size = [cfg.crop_size, cfg.crop_size]
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32).view(3, 1, 1, 1)
        self.std = torch.tensor(cfg.std, dtype=torch.float32).view(3, 1, 1, 1)
        self.scale, self.shift = 1.0 / self.std, -self.mean / self.std
        self._scale_np = self.scale.view(3).numpy().copy()  # float32, for the numba kernel
        self._shift_np = self.shift.view(3).numpy().copy()
        b, c, s, h = (list(cfg.color_jitter) + [0.0] * 4)[:4]
        self.jitter = (float(b), float(c), float(s), float(h))
        self._ws: torch.Tensor | None = None
        self._u8: np.ndarray | None = None

    def __call__(self, frames: np.ndarray | torch.Tensor,
                 rng: np.random.Generator | int | None = None) -> torch.Tensor:
        x = _to_tchw(frames)
        H, W = x.shape[-2:]
        if self.train:
            rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
            top, left, h, w = random_resized_crop_params(rng, H, W, (self.cfg.min_scale, 1.0))
            flip = self.cfg.flip and rng.random() < 0.5
        else:
            top, left, h, w = center_crop_box(H, W, self.cfg.resize, self.cfg.crop_size)
            flip = False
        # Crop (a view) then resize straight to the output size: far fewer pixels to filter.
        x = F.resized_crop(x, top, left, h, w, self.size, antialias=True)
        jitter = self._jitter_params(rng) if self.train else []  # type: ignore[arg-type]
        kernel = _color_kernel()
        if kernel is not None:  # all the colour ops and the normalization in one numba call
            u8 = self._planes_u8(x, flip)
            out = np.empty(u8.shape, np.float32)
            codes = np.array([OP_CODES[op] for op, _ in jitter], np.int64)
            factors = np.array([f for _, f in jitter], np.float64)
            kernel(u8.reshape(3, u8.shape[1], -1), out.reshape(3, u8.shape[1], -1), codes,
                   factors, self._scale_np, self._shift_np)
            return torch.from_numpy(out)
        return self._torch_colour(self._planes(x, flip), jitter)

    def _torch_colour(self, x: torch.Tensor, jitter: list[tuple[Any, float]]) -> torch.Tensor:
        """The colour ops and the normalization in torch, in place on x (3, T, h, w) in
        [0, 255] (the path without numba)."""
        if self._ws is None or self._ws.shape[2:] != x.shape[2:]:
            self._ws = torch.empty((5, self.CHUNK, *x.shape[2:]))  # scratch, reused
        # Every op is per frame, so run them all on a few frames at a time: the chunk and its
        # scratch planes stay in L2 cache across the ~40 passes.
        for t0 in range(0, x.shape[1], self.CHUNK):
            xc = x[:, t0:t0 + self.CHUNK]
            ws = self._ws[:, : xc.shape[1]]
            k = 1.0 / 255.0  # xc holds the clip / k (see _brightness): 0-255 to start with
            for op, factor in jitter:
                k = op(xc, factor, ws, k)
            xc.mul_(self.scale * k).add_(self.shift)  # (k xc - mean) / std
        return x

    def _planes_u8(self, x: torch.Tensor, flip: bool) -> np.ndarray:
        """uint8 (T, 3, h, w) channels-last -> uint8 (3, T, h, w), flipped if asked: each
        channel one contiguous plane, the output layout (a reused scratch array)."""
        # numpy deinterleaves uint8 ~2x faster than torch's strided copies and takes the flip
        # as a negative stride (no extra pass).
        src = x.permute(0, 2, 3, 1).numpy()  # (T, h, w, 3) view
        if flip:
            src = src[:, :, ::-1]
        shape = (3, src.shape[0], *src.shape[1:3])
        if self._u8 is None or self._u8.shape != shape:
            self._u8 = np.empty(shape, np.uint8)  # scratch, reused
        np.copyto(self._u8, src.transpose(3, 0, 1, 2))
        return self._u8

    def _planes(self, x: torch.Tensor, flip: bool) -> torch.Tensor:
        """uint8 (T, 3, h, w) channels-last -> float (3, T, h, w) in [0, 255], flipped if asked."""
        # a uint8 -> float copy_ is vectorized, a type-promoting mul from uint8 is not (the
        # 1 / 255 is deferred, see _torch_colour).
        u8 = self._planes_u8(x, flip)
        return torch.empty(u8.shape).copy_(torch.from_numpy(u8))

    def _jitter_params(self, rng: np.random.Generator) -> list[tuple[Any, float]]:
        """torchvision ColorJitter's draw: factors, then a random order of the four ops."""
        b, c, s, h = self.jitter
        factors = [rng.uniform(max(0.0, 1 - b), 1 + b) if b > 0 else None,
                   rng.uniform(max(0.0, 1 - c), 1 + c) if c > 0 else None,
                   rng.uniform(max(0.0, 1 - s), 1 + s) if s > 0 else None,
                   rng.uniform(-h, h) if h > 0 else None]
        ops = (_brightness, _contrast, _saturation, _hue)
        return [(ops[i], float(factors[i])) for i in rng.permutation(4)
                if factors[i] is not None]


# ----------------------------------------------------------------------------------------------
# Colour ops on a clip (3, T, h, w) float in [0, 1], in place. They compute what torchvision's
# adjust_* compute on (T, 3, h, w) (tests compare them), several times faster: channel planes
# are contiguous here, scratch planes are reused (``ws``: float (5, T, h, w), allocated when
# not given), hue is a closed-form HSV round trip, and clamps that cannot bind are skipped.
#
# The private ops take the clip with a deferred scale ``k`` (``x`` holds clip / k) and return
# the scale of their result: a brightness factor <= 1 only scales (no pass at all), hue
# commutes with scaling, the others fold ``k`` into their blend; VideoTransform starts with
# the 0-255 frames (k = 1 / 255) and folds the last ``k`` into the normalization.
# ----------------------------------------------------------------------------------------------
GRAY = (0.2989, 0.587, 0.114)  # torchvision's luma weights
_TWO = torch.tensor(2.0)
_CENTRES = torch.tensor([3.0, 2.0, 4.0]).view(3, 1, 1, 1)  # hue sixths where R, G, B peak


def _scratch(x: torch.Tensor, ws: torch.Tensor | None, n: int) -> list[torch.Tensor]:
    if ws is None or ws.shape[0] < n or ws.shape[1:] != x.shape[1:]:
        ws = torch.empty((n, *x.shape[1:]), dtype=x.dtype)
    return list(ws.unbind(0))[:n]


def _brightness(x: torch.Tensor, factor: float, ws: torch.Tensor | None, k: float) -> float:
    if factor <= 1.0:  # stays in [0, 1]: the clamp is a no-op, the scale can wait
        return k * factor
    x.mul_(k * factor).clamp_(0.0, 1.0)
    return 1.0


def _contrast(x: torch.Tensor, factor: float, ws: torch.Tensor | None, k: float) -> float:
    """Blend each frame with its mean grey level."""
    chan = x.mean(dim=(2, 3))  # (3, T): the mean of the luma is the luma of the means
    w = (1.0 - factor) * k
    mean = (chan[0] * (GRAY[0] * w)).add_(chan[1], alpha=GRAY[1] * w)
    mean = mean.add_(chan[2], alpha=GRAY[2] * w).view(-1, 1, 1)
    torch.add(mean, x, alpha=factor * k, out=x)  # one pass: factor * clip + (1 - factor) * mean
    if factor > 1.0:  # else a convex combination of values in [0, 1]
        x.clamp_(0.0, 1.0)
    return 1.0


def _saturation(x: torch.Tensor, factor: float, ws: torch.Tensor | None, k: float) -> float:
    """Blend each pixel with its grey level."""
    w = (1.0 - factor) * k  # (1 - factor) * grey, before x changes in place
    gray = torch.mul(x[0], GRAY[0] * w, out=_scratch(x, ws, 1)[0])
    gray.add_(x[1], alpha=GRAY[1] * w).add_(x[2], alpha=GRAY[2] * w)
    torch.add(gray, x, alpha=factor * k, out=x)
    if factor > 1.0:  # else a convex combination of values in [0, 1]
        x.clamp_(0.0, 1.0)
    return 1.0


def _hue(x: torch.Tensor, factor: float, ws: torch.Tensor | None, k: float) -> float:
    adjust_hue(x, factor, ws)
    return k  # hue(k x) = k hue(x)


def _hue_loop(r: np.ndarray, g: np.ndarray, b: np.ndarray, shift: np.float32) -> None:
    """adjust_hue's arithmetic per pixel of the float32 planes, in place; shift = 6 factor.
    float32 constants throughout so that numba computes in float32 as torch does."""
    one, two, three = np.float32(1.0), np.float32(2.0), np.float32(3.0)
    four, six = np.float32(4.0), np.float32(6.0)
    for i in range(r.shape[0]):
        mx, mn = max(r[i], g[i], b[i]), min(r[i], g[i], b[i])
        c = mx - mn
        if c <= 0:  # grey: unchanged
            continue
        a = two + (r[i] + mn - g[i] - b[i]) / c
        h = three + (a if b[i] >= g[i] else -a) + shift
        h -= six * np.floor(h / six)
        r[i] = (mn - c) + c * min(max(abs(h - three), one), two)
        g[i] = (mx + c) - c * min(max(abs(h - two), one), two)
        b[i] = (mx + c) - c * min(max(abs(h - four), one), two)


OP_CODES = {_brightness: 0, _contrast: 1, _saturation: 2, _hue: 3}  # for _color_loop
_COLOR_KERNEL: Any = None  # compiled on first use; False: numba missing


def _color_kernel() -> Any:
    """:func:`_color_loop` compiled by numba, or None without it (VideoTransform then runs
    the torch ops). Compiled lazily (~1 s once per process) so that importing avssl stays
    cheap; numba is a dependency of librosa."""
    global _COLOR_KERNEL
    if _COLOR_KERNEL is None:
        try:
            from numba import njit
        except ImportError:
            _COLOR_KERNEL = False
        else:
            hue = njit(nogil=True, cache=False)(_hue_loop)
            # reassociation only: the float64 sum vectorizes (the rest stays IEEE float32)
            gray_sum = njit(nogil=True, cache=False, fastmath={"reassoc"})(_gray_sum)
            _COLOR_KERNEL = njit(nogil=True, cache=False)(_make_color_loop(hue, gray_sum))
    return _COLOR_KERNEL or None


def _gray_sum(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> float:
    """Sum over the pixels of the float32 luma (as torchvision's rgb_to_grayscale)."""
    w0, w1, w2 = np.float32(GRAY[0]), np.float32(GRAY[1]), np.float32(GRAY[2])
    acc = 0.0
    for i in range(r.shape[0]):
        acc += np.float64(w0 * r[i] + w1 * g[i] + w2 * b[i])
    return acc


def _make_color_loop(hue: Any, gray_sum: Any) -> Any:
    def _color_loop(src: np.ndarray, out: np.ndarray, ops: np.ndarray, factors: np.ndarray,
                    scale: np.ndarray, shift: np.ndarray) -> None:
        """uint8 planes src (3, T, P) -> float32 out (3, T, P): x * (1 / 255), then the colour ops
        ``ops`` (OP_CODES) with ``factors`` in order, then x * scale + shift per channel.

        torchvision's float32 arithmetic and clamps per op (``_blend``: f x + (1 - f) y,
        clamped to [0, 1]), one frame at a time so that the ~5 passes over it stay in cache.
        """
        zero, one, inv = np.float32(0.0), np.float32(1.0), np.float32(1.0 / 255.0)
        w0, w1, w2 = np.float32(GRAY[0]), np.float32(GRAY[1]), np.float32(GRAY[2])
        n = src.shape[2]
        for t in range(src.shape[1]):
            r, g, b = out[0, t], out[1, t], out[2, t]
            sr, sg, sb = src[0, t], src[1, t], src[2, t]
            for i in range(n):
                r[i] = np.float32(sr[i]) * inv
                g[i] = np.float32(sg[i]) * inv
                b[i] = np.float32(sb[i]) * inv
            for j in range(ops.shape[0]):
                op = ops[j]
                f, f1 = np.float32(factors[j]), np.float32(1.0 - factors[j])
                if op == 0:  # brightness: blend with black
                    for i in range(n):
                        r[i] = min(max(f * r[i], zero), one)
                        g[i] = min(max(f * g[i], zero), one)
                        b[i] = min(max(f * b[i], zero), one)
                elif op == 1:  # contrast: blend with the frame's mean grey
                    m = f1 * np.float32(gray_sum(r, g, b) / n)
                    for i in range(n):
                        r[i] = min(max(f * r[i] + m, zero), one)
                        g[i] = min(max(f * g[i] + m, zero), one)
                        b[i] = min(max(f * b[i] + m, zero), one)
                elif op == 2:  # saturation: blend with the pixel's grey
                    for i in range(n):
                        m = f1 * (w0 * r[i] + w1 * g[i] + w2 * b[i])
                        r[i] = min(max(f * r[i] + m, zero), one)
                        g[i] = min(max(f * g[i] + m, zero), one)
                        b[i] = min(max(f * b[i] + m, zero), one)
                else:
                    hue(r, g, b, np.float32(6.0 * factors[j]))
            s0, s1, s2 = scale[0], scale[1], scale[2]
            h0, h1, h2 = shift[0], shift[1], shift[2]
            for i in range(n):
                r[i] = r[i] * s0 + h0
                g[i] = g[i] * s1 + h1
                b[i] = b[i] * s2 + h2

    return _color_loop


def adjust_brightness(x: torch.Tensor, factor: float,
                      ws: torch.Tensor | None = None) -> torch.Tensor:
    k = _brightness(x, factor, ws, 1.0)
    return x if k == 1.0 else x.mul_(k)


def adjust_contrast(x: torch.Tensor, factor: float,
                    ws: torch.Tensor | None = None) -> torch.Tensor:
    _contrast(x, factor, ws, 1.0)
    return x


def adjust_saturation(x: torch.Tensor, factor: float,
                      ws: torch.Tensor | None = None) -> torch.Tensor:
    _saturation(x, factor, ws, 1.0)
    return x

def adjust_hue(x: torch.Tensor, factor: float, ws: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate the HSV hue by ``factor`` turns (in [-0.5, 0.5]); S and V are kept. Plain torch
    (VideoTransform uses the numba loop of the same arithmetic when it can).

    Branch-free: torch.where and gathers do not vectorize on CPU, plain arithmetic does.
    With u, v, w = (r, g, b - min) / C, the hue in sixths of a turn is q = 1 + v + w - u
    (in [0, 3]) where g >= b and 6 - q where g < b, which equals torchvision's per-sector
    formula everywhere (ties included: both are continuous along the hexagon, so either
    branch may take g == b).
    """
    r, g, b = x[0], x[1], x[2]
    maxc, minc, chroma, h6, tmp = _scratch(x, ws, 5)
    torch.maximum(torch.maximum(r, g, out=maxc), b, out=maxc)
    torch.minimum(torch.minimum(r, g, out=minc), b, out=minc)
    torch.sub(maxc, minc, out=chroma)
    # 3 - q = 2 + (r + min - g - b) / C (grey pixels: any hue, C = 0 makes it irrelevant)
    torch.add(r, minc, out=h6).sub_(g).sub_(b)
    torch.addcdiv(_TWO, h6, torch.clamp(chroma, min=1e-12, out=tmp), out=h6)
    # hue = 3 + copysign(3 - q, b - g) (q where g >= b, 6 - q where g < b), rotated, mod 6;
    # mul by 1/6 instead of div: only moves values within an ulp of a multiple of 6, where
    # the result is the same either side.
    torch.copysign(h6, torch.sub(b, g, out=tmp), out=h6).add_(3.0 + 6.0 * factor)
    h6.sub_(torch.mul(h6, 1.0 / 6.0, out=tmp).floor_(), alpha=6.0)
    # HSV -> RGB: R = min + C * clamp(|h6 - 3| - 1, 0, 1), G, B = max - C * clamp(|h6 - c| - 1,
    # 0, 1) with c = 2, 4; as (min - C) + C * clamp(|h6 - 3|, 1, 2) etc.: one pass less. The
    # three channels in one op each (x is free now): per-op overhead is ~half the time here.
    minc.sub_(chroma)
    maxc.add_(chroma)
    torch.sub(h6, _CENTRES.to(x.dtype), out=x).abs_().clamp_(1.0, 2.0)
    torch.addcmul(minc, x[0], chroma, out=x[0])
    torch.addcmul(maxc, x[1:], chroma, value=-1.0, out=x[1:])
    return x
