"""BYOL's regression loss (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020).

The online network's prediction ``p`` regresses the target network's projection ``z`` of the
other view: ``2 - 2 * cos(p, z)`` (the squared distance of the two L2-normalized vectors),
averaged over the batch. Shapes: ``p``, ``z`` (B, D) -> a scalar in [0, 4]. The symmetric loss
over the two views (each view's prediction against the other view's target) is summed in
:mod:`avssl.methods.byol`.

Computed in float32 with autocast off (bf16 would round cosines near 1 by ~4e-3, the size of
the loss late in training). ``z`` is detached here (the stop-gradient on the target branch), so
no caller can let a gradient reach the target network; the method also computes ``z`` under
``no_grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avssl.losses.precision import full_precision


def byol_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Per-row cosine similarity of ``p`` and ``z.detach()``: (B, D), (B, D) -> (B,)."""
    if p.ndim != 2 or p.shape != z.shape:
        raise ValueError(f"expected p and z of the same shape (B, D), got {tuple(p.shape)} and "
                         f"{tuple(z.shape)}")
    with torch.autocast(device_type=p.device.type, enabled=False):
        p = full_precision(p)
        z = full_precision(z.detach()).to(p.dtype)
        return (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """``mean_b(2 - 2 * cos(p_b, z_b))``: p the online prediction (B, D), z the target
    projection (B, D), detached here. 0 when every pair points the same way."""
    return (2.0 - 2.0 * byol_cosine(p, z)).mean()
