"""An exponential-moving-average (EMA) copy of a network: BYOL's target network (Grill et al.,
"Bootstrap Your Own Latent", NeurIPS 2020).

After every optimizer step the target follows the online network,
``xi <- m * xi + (1 - m) * theta``, with BYOL's cosine momentum schedule
``m_k = 1 - (1 - m_base) * (cos(pi * k / K) + 1) / 2`` (``m_base`` at step 0, 1 at step K).

What is averaged (:func:`ema_update_`), for every tensor of the module's state:

- parameters: ``t = m * t + (1 - m) * o``;
- floating buffers (BatchNorm running mean / variance): averaged the same way, not copied. A
  copy would give the target the statistics of the *online* weights, which do not match the
  target's averaged weights; averaging keeps the target one consistent averaged model (its
  statistics span the same horizon as its weights). They are only used when the target runs in
  eval mode: in training both networks normalize with the statistics of their own batch;
- integer buffers (``num_batches_tracked``): copied (a count cannot be averaged).

:func:`ema_target` builds the target: a deep copy with ``requires_grad_(False)`` (the optimizer
never sees it and no gradient reaches it), whose BatchNorm layers do not update their running
statistics when they run in training mode (they still normalize with batch statistics, as
BYOL's target does), so :func:`ema_update_` is the only thing that changes the target's state
and the update above holds exactly. Being a submodule of its owner it follows the owner's
``train()`` / ``eval()``, and is saved in the owner's ``state_dict`` (a resumed run continues
the same target).

Distributed policy: no communication. Under DDP the online parameters are identical on every
rank after the gradient all-reduce and the optimizer step, and the momentum depends only on
the step, so every rank's update gives the same target parameters. BatchNorm running
statistics are per rank (the trainer's DDP does not broadcast buffers and BN is not synced),
so the target's averaged statistics are per rank too; they only matter in eval mode, and rank
0's are the ones saved.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """BYOL's momentum at ``step`` of ``total_steps``: ``1 - (1 - base) * (cos(pi k/K) + 1) / 2``.

    ``base`` at step 0, ``(1 + base) / 2`` half-way, 1 at ``total_steps`` (``step`` is clamped
    to [0, total_steps])."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base momentum must be in [0, 1], got {base}")
    k = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


def _state_pairs(target: nn.Module, online: nn.Module
                 ) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]]]:
    """(floating pairs, integer pairs) of (target, online) tensors: parameters and buffers,
    matched by name."""
    t_state = dict(target.named_parameters()) | dict(target.named_buffers())
    o_state = dict(online.named_parameters()) | dict(online.named_buffers())
    if t_state.keys() != o_state.keys():
        diff = sorted(t_state.keys() ^ o_state.keys())
        raise ValueError(f"ema_update_: target and online modules differ in {diff[:5]}")
    floating, integer = [], []
    for name, t in t_state.items():
        o = o_state[name]
        if t.shape != o.shape:
            raise ValueError(f"ema_update_: {name} has shape {tuple(t.shape)} in the target "
                             f"and {tuple(o.shape)} in the online module")
        (floating if t.is_floating_point() else integer).append((t, o))
    return floating, integer


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: ``t = momentum * t + (1 - momentum) * o`` for every parameter and floating
    buffer of ``target`` (``o``: the tensor of the same name in ``online``); integer buffers
    are copied. ``momentum`` 1 leaves the target unchanged, 0 copies the online module."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    floating, integer = _state_pairs(target, online)
    if floating:
        ts = [t for t, _ in floating]
        os_ = [o.detach().to(t.dtype) for t, o in floating]
        # two products then a sum (no fused multiply-add): the result is, to the bit,
        # ``momentum * t + (1 - momentum) * o`` evaluated in the tensors' dtype
        torch._foreach_mul_(ts, momentum)
        torch._foreach_add_(ts, torch._foreach_mul(os_, 1.0 - momentum))
    for t, o in integer:
        t.copy_(o)


def ema_target(online: nn.Module) -> nn.Module:
    """A frozen deep copy of ``online`` to be updated with :func:`ema_update_`: no parameter
    requires a gradient, and its BatchNorm layers normalize with batch statistics in training
    mode without updating their running statistics (see the module docstring)."""
    target = copy.deepcopy(online).requires_grad_(False)
    for m in target.modules():
        if isinstance(m, _BatchNorm):
            m.track_running_stats = False  # buffers kept: eval mode still uses them
    return target
