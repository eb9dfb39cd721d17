"""Optimizers and per-step learning-rate schedules from :class:`avssl.config.OptimConfig`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from avssl.config import OptimConfig


def build_optimizer(params: Iterable[nn.Parameter] | list[dict[str, Any]], cfg: OptimConfig
                    ) -> torch.optim.Optimizer:
    """``optim.name`` over ``params``: parameters (the frozen ones are left out) or parameter
    groups (a method's :meth:`param_groups`, each may set its own ``lr``/``weight_decay``; the
    config's values are the defaults)."""
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
    else:
        params = [p for p in params if p.requires_grad]
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


def lr_factor(step: int, cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based): linear warm-up, then
    constant, cosine to zero, or step decay by ``gamma`` at epoch ``milestones``."""
    epoch = step / max(steps_per_epoch, 1)
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return (epoch + 1 / max(steps_per_epoch, 1)) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(epochs - cfg.warmup_epochs, 1e-8)
        return 0.5 * (1 + math.cos(math.pi * min((epoch - cfg.warmup_epochs) / span, 1.0)))
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg, steps_per_epoch, epochs))
