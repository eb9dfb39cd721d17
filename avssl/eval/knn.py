"""Weighted cosine k-nearest-neighbour classifier on frozen features.

Each test feature votes over its ``k`` most cosine-similar train features with weights
``exp(sim / T)`` summed per class; the class with the largest sum wins (Wu et al., "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018, eq. 9). Works on
tensors in memory, so a trainer can call :func:`knn_top1` for online monitoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avssl.config import opt
from avssl.eval.features import LAYERS

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


@dataclass
class KnnSettings:
    """The ``eval`` section of ``avssl eval knn`` (or ``eval.*`` overrides; a command-line flag
    of the same name wins). Unknown keys and out-of-range values are config errors."""

    k: int = opt(DEFAULT_K, lo=1, doc="neighbours that vote")
    temperature: float = opt(DEFAULT_TEMPERATURE, lo=1e-6, doc="vote weight exp(cos / T)")
    layers: list[str] = opt(factory=lambda: list(LAYERS), doc="encoder stages evaluated")


def knn_scores(train: Tensor, train_labels: Tensor, test: Tensor, k: int = DEFAULT_K,
               temperature: float = DEFAULT_TEMPERATURE, num_classes: int | None = None,
               chunk: int = 1024) -> Tensor:
    """Class scores of every test feature.

    train: (N, D), train_labels: long (N,) in [0, C), test: (M, D). ``k`` is clamped to N.
    Returns (M, C) float: sum over the k nearest train rows of ``exp(cos / temperature)`` for
    each class (Wu et al. 2018). Queries are processed ``chunk`` at a time.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if train.shape[0] != train_labels.shape[0]:
        raise ValueError(f"{train.shape[0]} train features but {train_labels.shape[0]} labels")
    c = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    k = min(k, train.shape[0])
    tr = F.normalize(train.float(), dim=1)
    labels = train_labels.long().to(tr.device)
    out = []
    for start in range(0, test.shape[0], chunk):
        q = F.normalize(test[start:start + chunk].float().to(tr.device), dim=1)
        sims, nn_idx = (q @ tr.T).topk(k, dim=1)  # (m, k)
        weights = (sims / temperature).exp()
        scores = torch.zeros(q.shape[0], c, device=tr.device)
        scores.scatter_add_(1, labels[nn_idx], weights)
        out.append(scores)
    if not out:
        return torch.zeros(0, c)
    return torch.cat(out)


def knn_predict(train: Tensor, train_labels: Tensor, test: Tensor, k: int = DEFAULT_K,
                temperature: float = DEFAULT_TEMPERATURE, num_classes: int | None = None
                ) -> Tensor:
    """Predicted class (M,) long of every test feature (argmax of :func:`knn_scores`)."""
    return knn_scores(train, train_labels, test, k, temperature, num_classes).argmax(dim=1)


def knn_top1(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor,
             k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Top-1 accuracy in percent of the weighted kNN classifier on (test, test_labels)."""
    if test.shape[0] == 0:
        return float("nan")
    c = int(max(int(train_labels.max()), int(test_labels.max()))) + 1
    pred = knn_predict(train, train_labels, test, k, temperature, num_classes=c)
    return 100.0 * float((pred.cpu() == test_labels.cpu()).float().mean())


def nearest_neighbors(train: Tensor, test: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Indices (M, k) and cosine similarities (M, k) of each test row's k nearest train rows."""
    tr, q = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    sims, idx = (q @ tr.T).topk(min(k, train.shape[0]), dim=1)
    return idx, sims
