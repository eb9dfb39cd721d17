"""Heatmap overlays, text labels, contact sheets and overlay videos with the original audio.

Colormaps come from matplotlib (a 256-entry lookup table, no figure is drawn); text is drawn
with Pillow (a matplotlib dependency) and its built-in font. All images are uint8 (H, W, 3) RGB.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=8)
def colormap_lut(name: str = "jet") -> np.ndarray:
    """uint8 (256, 3) RGB lookup table of a matplotlib colormap."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def apply_colormap(heat: np.ndarray, name: str = "jet") -> np.ndarray:
    """(H, W) values in [0, 1] (clipped) -> uint8 (H, W, 3) colours."""
    idx = np.clip(np.nan_to_num(np.asarray(heat, np.float64)), 0.0, 1.0) * 255 + 0.5
    return colormap_lut(name)[idx.astype(np.int64)]


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.5,
            cmap: str = "jet") -> np.ndarray:
    """Alpha-blend a coloured heatmap on a frame: uint8 (H, W, 3) + (H, W) in [0, 1] -> uint8.

    ``out = (1 - alpha) * frame + alpha * colormap(heat)``; ``alpha`` in [0, 1].
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a frame (H, W, 3), got {frame.shape}")
    if np.shape(heat) != frame.shape[:2]:
        raise ValueError(f"heat {np.shape(heat)} does not match the frame {frame.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mixed = (1 - alpha) * frame.astype(np.float32) + alpha * apply_colormap(heat, cmap)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _font(size: int):  # -> PIL.ImageFont
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # pragma: no cover - old Pillow
        return ImageFont.load_default()


def draw_label(img: np.ndarray, text: str, position: str = "top",
               color: tuple[int, int, int] = (255, 255, 255),
               background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """A copy of ``img`` (uint8 (H, W, 3)) with ``text`` on a dark band at the top or bottom.

    The font scales with the image height (about 1/18 of it, at least 8 px).
    """
    from PIL import Image, ImageDraw

    if position not in ("top", "bottom"):
        raise ValueError(f"position must be 'top' or 'bottom', got {position!r}")
    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    draw = ImageDraw.Draw(im)
    font = _font(max(8, im.height // 18))
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    pad = 2
    band = y1 - y0 + 2 * pad
    top = 0 if position == "top" else im.height - band
    draw.rectangle([0, top, min(im.width, x1 - x0 + 2 * pad) - 1, top + band - 1],
                   fill=background)
    draw.text((pad - x0, top + pad - y0), text, fill=color, font=font)
    return np.asarray(im)


def contact_sheet(images: Sequence[np.ndarray], cols: int = 4, pad: int = 2,
                  background: int = 0) -> np.ndarray:
    """Tile same-size uint8 (H, W, 3) images in a grid of ``cols`` columns, ``pad`` pixels apart.

    Returns uint8 (rows * (H + pad) - pad, cols' * (W + pad) - pad, 3) where cols' =
    min(cols, len(images)); empty cells are ``background``.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    h, w = images[0].shape[:2]
    if any(im.shape != images[0].shape for im in images):
        raise ValueError("contact_sheet images must all have the same shape")
    cols = max(1, min(cols, len(images)))
    rows = -(-len(images) // cols)
    sheet = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), background, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = im
    return sheet


def even_size(img: np.ndarray) -> np.ndarray:
    """Crop one row/column if needed so H and W are even (yuv420p needs it)."""
    h, w = img.shape[:2]
    return img[: h - h % 2, : w - w % 2]


def save_png(path: str | Path, img: np.ndarray) -> Path:
    """Write uint8 (H, W, 3) as PNG, atomically."""
    from PIL import Image

    from avssl.utils.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        # compress_level 1: several times faster than the default 6, files ~30 % larger
        Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(tmp, format="PNG",
                                                                        compress_level=1)
    return path


def write_overlay_video(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float,
                        audio: np.ndarray | None = None, sample_rate: int = 16000) -> Path:
    """Encode overlay frames (uint8 (H, W, 3) each) with optional mono float ``audio`` into an
    MP4 (H.264 + AAC) via :func:`avssl.data.writer.write_av`; odd sizes are cropped to even."""
    from avssl.data.writer import write_av

    if len(frames) == 0:
        raise ValueError("write_overlay_video needs at least one frame")
    if audio is not None:
        audio = np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0)
        if audio.size == 0:
            audio = None
    return write_av(path, (even_size(f) for f in frames), fps, audio, sample_rate)


__all__ = ["apply_colormap", "colormap_lut", "contact_sheet", "draw_label", "even_size",
           "overlay", "save_png", "write_overlay_video"]
