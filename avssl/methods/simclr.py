"""SimCLR: two augmented views of each frame (or clip) pulled together by NT-Xent.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (docs/reference.md section 3.1). Video only: the image method run on
frames through a per-frame encoder (``model.video.arch: frame_*`` with
``data.video.num_frames: 1``), or on clips with any video encoder. The projection head is
``model.head`` (SimCLR's MLP has BatchNorm: ``bn: true``); the loss is
:func:`avssl.losses.ntxent.nt_xent_global`. With ``method.temporal_shift`` > 0 the second view is
a clip up to that many seconds away in the same video (a temporal positive), not only another
augmentation of the same frames.

BatchNorm: both views go through the encoder and head as one batch of 2B (the views
concatenated on the batch axis, as SimCLR's reference implementation does), so BN statistics are
computed over both views together, one pass instead of two. SimCLR additionally aggregates BN
statistics over all devices ("global BN"); here BN is per process (the package has no
SyncBatchNorm), so with several processes the statistics are those of the local 2B views.

Distributed policy: the NT-Xent candidates are the views of every process (gathered with
gradients), the anchors the local ones; with DDP's gradient averaging this equals one process
holding the global batch (up to the per-process BN statistics above). ``acc_pair`` is measured
among the local candidates only.

Weight decay: biases and normalization parameters are excluded (as in SimCLR's LARS setup).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from avssl.config import Config, OptimConfig, opt
from avssl.data.sample import SampleSpec
from avssl.losses.ntxent import nt_xent_global
from avssl.methods.base import AVEncoders, decay_groups
from avssl.methods.contract import Method, MethodSettings


@dataclass
class SimCLRSettings(MethodSettings):
    """``method:`` keys of SimCLR (docs/reference.md section 3.1)."""

    name: str = "simclr"
    temperature: float = opt(0.1, lo=1e-4)
    temporal_shift: float = opt(0.0, lo=0.0,
                                doc="seconds; 0: both views show the same frames, differently "
                                    "augmented; > 0: the second view starts up to this far "
                                    "from the first (a nearby clip/frame of the same video)")


def sample(settings: SimCLRSettings) -> SampleSpec:
    """Two augmented views per item (key ``views``), no audio."""
    return SampleSpec(views=2, view_shift=settings.temporal_shift, audio=None)


@torch.no_grad()
def pair_accuracy(z1: Tensor, z2: Tensor) -> Tensor:
    """Top-1 accuracy (%) of finding each view's other view among the other 2B - 1 local
    views: z1, z2 (B, D) -> 0-d tensor."""
    z = torch.cat([z1, z2]).float()
    b = z1.shape[0]
    with torch.autocast(device_type=z.device.type, enabled=False):
        sim = (z @ z.T).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return (sim.argmax(dim=1) == target).float().mean() * 100.0


class SimCLR(Method):
    """A video encoder + projection head trained with NT-Xent on two views of each item."""

    def __init__(self, cfg: Config, settings: SimCLRSettings, num_rows: int) -> None:
        super().__init__()
        self.cfg = settings
        self.encoders = AVEncoders(cfg, ("video",))

    def embed_views(self, v1: Tensor, v2: Tensor) -> tuple[Tensor, Tensor]:
        """Two views (B, 3, T, H, W) -> their L2-normalized embeddings (B, D) each, from one
        pass over the 2B concatenated views (BN statistics over both)."""
        z = self.encoders.embed_video(torch.cat([v1, v2]))
        return z[: v1.shape[0]], z[v1.shape[0]:]

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """batch: views [(B, 3, T, H, W), (B, 3, T, H, W)] -> {loss, acc_pair}."""
        views = batch["views"]
        if len(views) != 2:
            raise ValueError(f"SimCLR expects 2 views per item, got {len(views)}")
        z1, z2 = self.embed_views(views[0], views[1])
        loss = nt_xent_global(z1, z2, self.cfg.temperature)
        return {"loss": loss, "acc_pair": pair_accuracy(z1.detach(), z2.detach())}

    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        """Weights with ``optim.weight_decay``; biases and norm parameters without."""
        return decay_groups(self, optim.weight_decay)
