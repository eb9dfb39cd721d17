"""Cross-validation folds: stratified k-fold from labels, or predefined fold ids (ESC-50).

ESC-50 ships a ``fold`` column (1..5) and is evaluated by 5-fold cross-validation over those
folds (docs/reference.md section 4.4). Without fold ids, rows are split into ``k`` stratified
folds: every class is spread as evenly as possible over the folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Split = tuple[np.ndarray, np.ndarray]


def k_fold_splits(labels: Sequence[Any] | np.ndarray | None = None, k: int = 5, *,
                  folds: Sequence[Any] | np.ndarray | None = None, seed: int = 0) -> list[Split]:
    """``k`` (train, test) index pairs; the test sets are disjoint and cover every row.

    Args:
        labels: (N,) class of each row; used for stratified folds when ``folds`` is None.
        k: number of folds for stratified splitting (ignored when ``folds`` is given).
        folds: (N,) predefined fold id of each row (ESC-50's ``fold``); one split per distinct
            id, in sorted order, testing on the rows with that id.
        seed: shuffles each class before dealing its rows round-robin over the folds
            (deterministic for a given seed).

    Returns:
        list of (train_idx, test_idx), int64 arrays sorted ascending.
    """
    if folds is not None:
        f = np.asarray(folds)
        ids = sorted(set(f.tolist()))
        if len(ids) < 2:
            raise ValueError(f"need at least 2 distinct fold ids, got {ids}")
        return [(np.flatnonzero(f != i).astype(np.int64), np.flatnonzero(f == i).astype(np.int64))
                for i in ids]
    if labels is None:
        raise ValueError("give labels (stratified folds) or folds (predefined fold ids)")
    y = np.asarray(labels)
    n = len(y)
    if k < 2 or k > n:
        raise ValueError(f"k must be in [2, {n}] for {n} rows, got {k}")
    rng = np.random.default_rng(seed)
    assign = np.empty(n, np.int64)
    offset = 0  # continue the round-robin across classes so fold sizes differ by at most 1
    for c in sorted(set(y.tolist()), key=repr):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        assign[idx] = (offset + np.arange(len(idx))) % k
        offset = (offset + len(idx)) % k
    return [(np.flatnonzero(assign != i), np.flatnonzero(assign == i)) for i in range(k)]
