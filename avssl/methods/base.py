"""The encoders and heads a method trains (only the modalities it declares), and its optimizer
parameter groups."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.config import Config
from avssl.models import build_audio_encoder, build_head, build_video_encoder
from avssl.models.common import global_pool


class AVEncoders(nn.Module):
    """Video encoder + projection head and audio encoder + projection head, or only those of
    ``modalities`` (a video-only method builds no audio encoder).

    Attribute names (``video``, ``video_head``, ``audio``, ``audio_head``) are part of the
    checkpoint layout (docs/checkpoints.md, :mod:`avssl.models.loading`).
    """

    def __init__(self, cfg: Config, modalities: tuple[str, ...] = ("video", "audio")) -> None:
        super().__init__()
        self.modalities = modalities
        if "video" in modalities:
            self.video = build_video_encoder(cfg.model.video)
            self.video_head = build_head(self.video.out_dim, cfg.model.head)
        if "audio" in modalities:
            self.audio = build_audio_encoder(cfg.model.audio)
            self.audio_head = build_head(self.audio.out_dim, cfg.model.head)
        self.embed_dim = cfg.model.head.out_dim
        self.video_grid_pool = cfg.model.head.video_grid_pool

    def embed_video(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> L2-normalized (B, D).

        With ``model.head.video_grid_pool`` max/avg the head projects every location of the last
        grid (B, C, T', H', W') -> (B, T'H'W', D) and those projections are pooled, instead of
        projecting the pooled features: the embedding is then built from the very per-location
        vectors that sound-source localization compares with the audio.
        """
        return self.embed_video_and_locations(video, locations=False)[0]

    def embed_video_and_locations(self, video: Tensor, locations: bool = True
                                  ) -> tuple[Tensor, Tensor | None]:
        """(B, 3, T, H, W) -> the embedding (B, D) and, if ``locations``, the L2-normalized
        embedding of every last-grid location (B, T'H'W', D); one encoder pass."""
        if self.video_grid_pool == "off" and not locations:
            return F.normalize(self.video_head(self.video(video)), dim=1), None
        grid, z = self._grid_and_projections(video)
        z = z.flatten(1, 3)  # (B, L, D)
        if self.video_grid_pool == "off":
            emb = F.normalize(self.video_head(global_pool(grid, self.video.pool)), dim=1)
        else:
            pooled = z.amax(1) if self.video_grid_pool == "max" else z.mean(1)
            emb = F.normalize(pooled.float(), dim=1)
        return emb, (F.normalize(z.float(), dim=-1) if locations else None)

    def embed_locations(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> the L2-normalized embedding of every last-grid location, on its
        grid: (B, T', H', W', D)."""
        return F.normalize(self._grid_and_projections(video)[1].float(), dim=-1)

    def _grid_and_projections(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, T, H, W) -> the last grid (B, C, T', H', W') and the head's projection of
        every location on it (B, T', H', W', D), not normalized."""
        grid = self.video.forward_grid(video)
        return grid, self.video_head.projection(grid.movedim(1, -1))

    def embed_audio(self, audio: Tensor) -> Tensor:
        """(B, 1, T_a, F) -> L2-normalized (B, D)."""
        return F.normalize(self.audio_head(self.audio(audio)), dim=1)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.embed_video(batch["video"]), self.embed_audio(batch["audio"])


def decay_groups(module: nn.Module, weight_decay: float, **group: Any) -> list[dict[str, Any]]:
    """``module``'s trainable parameters in two optimizer groups: weights with ``weight_decay``,
    and biases and normalization parameters (every tensor of one dimension) without it, as
    SimCLR/BYOL train (Chen et al. 2020; Grill et al. 2020). ``group``: extra keys of both
    groups (e.g. an ``lr``). Empty groups are left out."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, **group},
              {"params": no_decay, "weight_decay": 0.0, **group}]
    return [g for g in groups if g["params"]]


def float32(x: Tensor) -> Tensor:
    """Scores and losses are computed in fp32 even under bf16/fp16 autocast."""
    return x.float() if x.dtype != torch.float32 else x
