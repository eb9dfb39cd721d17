"""BYOL on video frames: an online network regresses an EMA target network.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS
2020 (docs/reference.md section 3.2). Each item gives two augmentations of the same clip
(``views``: 2 x (B, 3, T, H, W); T = 1 with ``data.video.num_frames: 1`` for single frames and
a ``frame_*`` encoder). The online network (``encoders``: video encoder + projection head, then
``predictor``) predicts the target network's projection of the other view; the loss is
``2 - 2 cos`` (:mod:`avssl.losses.byol`) summed over both directions (as the paper: in [0, 8]).
The target (``target``, an EMA of ``encoders``; :mod:`avssl.memory.ema`) gets no gradient: it
runs under ``no_grad``, its parameters do not require one and are in no optimizer group. After
every optimizer step it moves towards the online weights with BYOL's cosine momentum, from
``base_momentum`` to 1 over the schedule's steps.

Normalization: the predictor takes the projection head's raw (unnormalized) output, as in the
paper; the loss normalizes the prediction and the target's projection itself. The head's
normalized output (:meth:`AVEncoders.embed_video`) is only what evaluation uses. With
``model.head.video_grid_pool`` max/avg the projections of the last grid's locations are pooled
first (as :meth:`AVEncoders.embed_video` does), without normalizing.

Shapes: views 2 x (B, 3, T, H, W) -> projections (B, D) (``model.head.out_dim``) -> predictions
(B, D) (predictor D -> ``predictor_hidden`` -> BN -> ReLU -> D).

Distributed policy: no collective of its own. DDP all-reduces the online gradients, so the
online weights, hence the EMA targets (computed on every rank, from the step number alone),
are identical on every rank; the target's parameters need no gradient, so DDP ignores them.
BatchNorm statistics are per rank (the batch of each rank), as in every method here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from avssl.config import Config, OptimConfig, opt
from avssl.data.sample import SampleSpec
from avssl.losses.byol import byol_loss
from avssl.memory.ema import cosine_momentum, ema_target, ema_update_
from avssl.methods.base import AVEncoders, decay_groups
from avssl.methods.contract import Method, MethodSettings
from avssl.models.heads import predictor


@dataclass
class BYOLSettings(MethodSettings):
    """``method:`` keys of BYOL (docs/reference.md section 3.2)."""

    name: str = "byol"
    base_momentum: float = opt(0.996, lo=0.0, hi=1.0,
                               doc="EMA momentum of the target at step 0; cosine to 1 at the "
                                   "end of train.epochs (0.996 published)")
    predictor_hidden: int = opt(4096, lo=1, doc="hidden width of the predictor MLP")
    predictor_lr: float | None = opt(None, lo=0.0,
                                     doc="the predictor's own learning rate (null: optim.lr); "
                                         "the lr schedule scales it too")
    exclude_bias_and_norm: bool = opt(True, doc="no weight decay on biases and BatchNorm "
                                                "parameters (every 1-D tensor)")


def sample(settings: BYOLSettings) -> SampleSpec:
    """Two augmentations of the same frames, no audio."""
    return SampleSpec(views=2, audio=None)


def project_video(enc: AVEncoders, video: Tensor) -> Tensor:
    """(B, 3, T, H, W) -> the projection head's unnormalized output (B, D)."""
    if enc.video_grid_pool == "off":
        return enc.video_head.projection(enc.video(video))
    grid = enc.video.forward_grid(video)
    z = enc.video_head.projection(grid.flatten(2).transpose(1, 2))  # (B, L, D)
    return z.amax(1) if enc.video_grid_pool == "max" else z.mean(1)


class BYOL(Method):
    """Online encoders + predictor, an EMA target of the encoders, and the BYOL objective."""

    def __init__(self, cfg: Config, settings: BYOLSettings, num_rows: int) -> None:
        super().__init__()
        self.settings = settings
        self.encoders = AVEncoders(cfg, ("video",))
        self.predictor = predictor(self.encoders.embed_dim, settings.predictor_hidden, bn=True)
        self.target = ema_target(self.encoders)

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """batch: views [2 x (B, 3, T, H, W)] -> {loss, byol_cos (mean prediction-target
        cosine)}."""
        views = batch["views"]
        if len(views) != 2:
            raise ValueError(f"BYOL expects 2 views per item, got {len(views)}")
        v1, v2 = views
        # one pass per view: BatchNorm statistics of each view's own batch, as the paper
        p1 = self.predictor(project_video(self.encoders, v1))
        p2 = self.predictor(project_video(self.encoders, v2))
        with torch.no_grad():
            z1 = project_video(self.target, v1)
            z2 = project_video(self.target, v2)
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        # each term is 2 - 2 * (mean cosine over the batch): the mean of both cosines
        return {"loss": loss, "byol_cos": (1.0 - loss / 4.0).detach()}

    def momentum(self, step: int, total_steps: int) -> float:
        """The momentum of the update after optimizer step ``step`` (1-based): BYOL's
        ``tau_k`` with k = step - 1, so the first update uses ``base_momentum``."""
        return cosine_momentum(step - 1, total_steps, self.settings.base_momentum)

    def on_step_end(self, step: int, total_steps: int) -> dict[str, float]:
        """Move the target towards the online encoders (depends on the step only: a resumed
        run continues exactly)."""
        m = self.momentum(step, total_steps)
        ema_update_(self.target, self.encoders, m)
        return {"byol_momentum": m}

    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        """Online encoder + head at ``optim.lr``, the predictor at ``method.predictor_lr``
        (default ``optim.lr``); without weight decay on 1-D tensors when
        ``exclude_bias_and_norm``. The target is in no group."""
        wd = optim.weight_decay
        lr = optim.lr if self.settings.predictor_lr is None else self.settings.predictor_lr

        def groups(module: nn.Module, **extra: Any) -> list[dict[str, Any]]:
            if self.settings.exclude_bias_and_norm:
                return decay_groups(module, wd, **extra)
            params = [p for p in module.parameters() if p.requires_grad]
            return [{"params": params, "weight_decay": wd, **extra}] if params else []

        return groups(self.encoders) + groups(self.predictor, lr=lr)
