"""Projection heads and linear classifiers.

Morgado et al. 2021 (AVID + CMA): per modality an MLP 512 -> 512 -> ReLU -> 512 -> ReLU -> 128,
then L2 normalization (590,976 parameters). The MLP is stored as ``projection`` (an
``nn.Sequential`` with Linear layers at indices 0, 2, 4), like the published
``video_proj.projection.*`` / ``audio_proj.projection.*`` keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from avssl.models.common import Pool, global_pool


class FeatureBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last axis of (..., C) inputs (every leading axis is a sample), so a
    head with BN also works per location (:meth:`ProjectionHead.forward_map`)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class ProjectionHead(nn.Module):
    """MLP embedding head: (B, in_dim) -> (B, out_dim), L2-normalized when ``normalize``.

    Args:
        in_dim: encoder embedding size (512 published).
        hidden: hidden layer sizes, each Linear followed by ReLU ([512, 512] published;
            [] gives a single linear projection).
        out_dim: embedding size (128 published).
        normalize: L2-normalize the output (done in float32 so bf16 autocast does not
            round the norms; scores are later divided by a temperature of 0.07).
        bn: BatchNorm after each hidden Linear, before its ReLU (SimCLR v2, BYOL; Chen et al.
            2020, Grill et al. 2020). Off keeps the published key layout (Linear at 0, 2, 4).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (512, 512), out_dim: int = 128,
                 normalize: bool = True, bn: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h, bias=not bn), *([FeatureBatchNorm(h)] if bn else []),
                       nn.ReLU(inplace=True)]
            d = h
        layers.append(nn.Linear(d, out_dim))
        self.projection = nn.Sequential(*layers)
        self.in_dim, self.out_dim, self.normalize = in_dim, out_dim, normalize

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim); L2 over the last axis if ``normalize``."""
        z = self.projection(x)
        return F.normalize(z.float(), dim=-1) if self.normalize else z

    def forward_map(self, fmap: Tensor) -> Tensor:
        """Apply the head at every location: (B, in_dim, *grid) -> (B, out_dim, *grid).

        Same weights as :meth:`forward` (an MLP of 1x1 convs), each location normalized on
        its own; used for sound-source localization on the conv5x grid (B, C, T, H, W).
        """
        return self(fmap.movedim(1, -1)).movedim(-1, 1)


def predictor(dim: int, hidden: int = 4096, bn: bool = True) -> ProjectionHead:
    """The predictor MLP of BYOL / SimSiam (Grill et al. 2020; Chen & He 2021): (B, dim) ->
    Linear -> BN -> ReLU -> Linear -> (B, dim), not normalized (the loss normalizes)."""
    return ProjectionHead(dim, hidden=[hidden], out_dim=dim, normalize=False, bn=bn)


class LinearClassifier(nn.Module):
    """Probe / fine-tuning classifier: (B, in_dim) or (B, in_dim, *grid) -> (B, num_classes) logits.

    A feature map is first globally pooled (``pool``); then optional BatchNorm (without affine:
    the Linear absorbs scale and shift), dropout, Linear.

    Args:
        in_dim: feature channels.
        num_classes: number of classes.
        bn: standardize features with BatchNorm1d (docs/reference.md section 4.2).
        dropout: dropout probability before the Linear (0.5 for fine-tuning).
        pool: "max" (AVID's probe protocol) or "avg" for map inputs.
    """

    def __init__(self, in_dim: int, num_classes: int, bn: bool = False, dropout: float = 0.0,
                 pool: Pool = "max") -> None:
        super().__init__()
        self.pool = pool
        self.bn = nn.BatchNorm1d(in_dim, affine=False) if bn else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim > 2:
            x = global_pool(x, self.pool)
        return self.fc(self.dropout(self.bn(x)))
