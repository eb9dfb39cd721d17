"""Nearest-neighbour grid: each row is a query test video's middle frame, then the middle frames
of its most cosine-similar train videos (a qualitative view of what the features group)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from avssl.data.decode import open_video
from avssl.viz.overlay import contact_sheet, draw_label, save_png

SAME_CLASS = (80, 220, 80)
OTHER_CLASS = (235, 70, 70)


def middle_frame(path: str | Path, num_frames: int, backend: str = "pyav") -> np.ndarray:
    """uint8 (H, W, 3) frame ``num_frames // 2`` of the video at ``path``."""
    with open_video(path, backend) as reader:
        return reader.get_frames([max(0, int(num_frames) // 2)])[0]


def _square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to (size, size, 3)."""
    from PIL import Image

    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(img[top:top + s, left:left + s])
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))


def _name(dataset: Any, label: int) -> str:
    classes = getattr(dataset, "classes", None) or []
    return str(classes[label]) if 0 <= label < len(classes) else str(label)


def spread_rows(m: int, queries: Sequence[int] | int) -> list[int]:
    """The query rows: the given ones, or ``queries`` rows evenly spread over ``m``."""
    if isinstance(queries, int):
        n = max(1, min(queries, m))
        return sorted({round(float(x)) for x in np.linspace(0, m - 1, n)})
    return [int(q) for q in queries]


def neighbor_grid(query_ds: Any, gallery_ds: Any, rows: Sequence[int], nn_idx: Tensor,
                  sims: Tensor, out: str | Path, cell: int = 96,
                  query_index: Tensor | None = None,
                  gallery_index: Tensor | None = None) -> Path:
    """Write the grid PNG (atomically) and return its path.

    query_ds / gallery_ds: :class:`~avssl.data.dataset.AVClipDataset` (test / train split) for
    paths, frame counts, labels and class names. rows: the Q query rows; nn_idx (Q, k) and sims
    (Q, k): their nearest gallery rows and cosine similarities (e.g.
    :func:`avssl.eval.knn.nearest_neighbors`). Row i of the queries / gallery is dataset video
    ``*_index[i]`` (default: i). Output: uint8 image of Q rows and ``1 + k`` columns of
    ``cell`` x ``cell`` tiles 2 px apart; neighbour captions are green when the class matches
    the query's, red otherwise.
    """
    qi = query_index if query_index is not None else np.arange(max(rows) + 1)
    gi = gallery_index if gallery_index is not None else np.arange(int(nn_idx.max()) + 1)
    k = nn_idx.shape[1]
    backend = getattr(query_ds.cfg, "backend", "pyav")
    tiles: list[np.ndarray] = []

    def tile(ds: Any, video: int, text: str, color: tuple[int, int, int]) -> np.ndarray:
        frame = middle_frame(ds.video_path(video), ds.rows[video]["num_frames"], backend)
        return draw_label(_square(frame, cell), text, "bottom", color=color)

    for r, row in enumerate(rows):
        qv = int(qi[row])
        q_label = query_ds.label_of(qv)
        tiles.append(tile(query_ds, qv, f"Q {_name(query_ds, q_label)}", (255, 255, 255)))
        for j in range(k):
            gv = int(gi[int(nn_idx[r, j])])
            g_label = gallery_ds.label_of(gv)
            color = SAME_CLASS if g_label == q_label else OTHER_CLASS
            tiles.append(tile(gallery_ds, gv, f"{_name(gallery_ds, g_label)} "
                                              f"{float(sims[r, j]):.2f}", color))
    return save_png(out, contact_sheet(tiles, cols=1 + k, pad=2))
