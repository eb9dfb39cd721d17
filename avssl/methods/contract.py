"""The method contract: what a training method is, declares and may hook into (docs/design.md).

A method is one file under ``avssl/methods/``: an ``nn.Module`` (subclass :class:`Method` for the
no-op hooks), a settings dataclass extending :class:`MethodSettings` (the keys of the config's
``method:`` section, validated like every other section), and a :class:`MethodSpec` entry in
``avssl.methods.METHODS`` that names both, the encoders it builds and the sample it wants. The
trainer knows nothing else about it: it builds the dataset from :attr:`MethodSpec.sample`, the
optimizer from :meth:`TrainingMethod.param_groups`, and calls the hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from avssl.config import Config, OptimConfig
from avssl.data.sample import SampleSpec

#: the encoders a method may build (``model.video`` also holds per-frame 2-D encoders:
#: ``frame_resnet18`` etc. run on every frame of the clip, or on single frames with
#: ``data.video.num_frames: 1``)
ENCODERS = ("video", "audio")


@dataclass
class MethodSettings:
    """Keys every ``method:`` section has; a method's own dataclass extends it."""

    name: str = "avid"


@runtime_checkable
class TrainingMethod(Protocol):
    """What the trainer calls. Built as ``cls(cfg, settings, num_rows)`` (``num_rows``: videos in
    the training split, one memory-bank row each)."""

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """A batch of items of the method's :class:`SampleSpec` -> ``{"loss": scalar, ...}``;
        every other 0-d tensor is logged under its key (e.g. ``loss_v2a``, ``acc_corr``)."""
        ...

    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        """Before epoch ``epoch`` (0-based; also on resume): e.g. re-mine positive sets.
        Returns numbers to log."""
        ...

    def on_step_end(self, step: int, total_steps: int) -> dict[str, float]:
        """After optimizer step ``step`` (1-based) of ``total_steps``: e.g. an EMA teacher's
        update. Must depend only on its arguments and the state dict, so resuming is exact."""
        ...

    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        """Optimizer parameter groups (each may set its own ``lr`` / ``weight_decay``)."""
        ...


class Method(nn.Module):
    """Base class with the contract's no-op hooks and one parameter group."""

    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        return {}

    def on_step_end(self, step: int, total_steps: int) -> dict[str, float]:
        return {}

    def param_groups(self, optim: OptimConfig) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]


@dataclass(frozen=True)
class MethodSpec:
    """One entry of ``avssl.methods.METHODS``.

    cls: the method class, built as ``cls(cfg, settings, num_rows)``.
    settings: its settings dataclass (a :class:`MethodSettings`).
    encoders: the encoders it builds, from :data:`ENCODERS` (no other is built, so DDP sees
        no unused parameters).
    sample: the items it trains on, from its settings (:class:`SampleSpec`).
    paper: the one-line citation shown by ``avssl methods``.
    """

    cls: Callable[[Config, Any, int], nn.Module]
    settings: type[MethodSettings]
    encoders: tuple[str, ...]
    sample: Callable[[Any], SampleSpec]
    paper: str

    def __post_init__(self) -> None:
        bad = [e for e in self.encoders if e not in ENCODERS]
        if bad:
            raise ValueError(f"MethodSpec.encoders: unknown {bad} (known: {list(ENCODERS)})")
