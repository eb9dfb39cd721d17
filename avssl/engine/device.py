"""Where and in which precision a step runs: batch transfer, memory formats, autocast.

Policy (README, "Precision and memory format"): ``train.amp`` (bf16/fp16 autocast) and
``train.channels_last`` are GPU settings. On CUDA they apply as configured; on any other device
they are ignored and the run is plain fp32 with contiguous tensors, with one notice. Reasons:
CPU autocast brings no memory saving that matters for a CPU run, is slower than fp32 on most
CPUs without AMX, and bf16 there differs from the CUDA kernels the published recipes were tuned
for; channels-last 3-D convolutions have no fast CPU kernels. So a published config (which sets
both) runs unchanged on a laptop, and the reduced-precision path is measured where it is used
(``benchmarks/gpu_check.py``).

Memory format: 5-D tensors (video clips, Conv3d weights) use ``channels_last_3d``, 4-D tensors
(spectrograms, frames, Conv2d weights) use ``channels_last``; every other tensor is left alone.
A method mixing a 3-D video encoder and a 2-D audio encoder is converted module by module
(``nn.Module.to(memory_format=...)`` would apply one format to both and fail).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Precision:
    """The settings a run actually uses on its device (see the module's policy)."""

    amp: str  # "none" | "bf16" | "fp16"
    channels_last: bool
    notice: str | None = None  # why configured settings were dropped, for the log


def resolve_precision(amp: str, channels_last: bool, device: torch.device) -> Precision:
    """``train.amp`` / ``train.channels_last`` as they apply on ``device``."""
    if device.type == "cuda":
        return Precision(amp, channels_last)
    dropped = [s for s, on in ((f"train.amp={amp}", amp != "none"),
                               ("train.channels_last=true", channels_last)) if on]
    notice = (f"{' and '.join(dropped)} apply on CUDA only: this {device.type} run uses fp32 "
              "and contiguous tensors") if dropped else None
    return Precision("none", False, notice)


def autocast(device: torch.device, amp: str) -> AbstractContextManager[Any]:
    """Autocast to bf16/fp16 on ``device``, or nothing for ``amp == "none"``."""
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def memory_format_for(x: Tensor) -> torch.memory_format | None:
    """channels_last_3d for 5-D, channels_last for 4-D floating tensors, else None."""
    if not x.is_floating_point():
        return None
    return {5: torch.channels_last_3d, 4: torch.channels_last}.get(x.dim())


def channels_last_(module: nn.Module) -> nn.Module:
    """Convert ``module``'s 5-D and 4-D floating parameters and buffers in place to the
    matching channels-last format (see :func:`memory_format_for`); returns ``module``."""
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for t in store.values():
                fmt = memory_format_for(t) if t is not None else None
                if fmt is not None and not t.is_contiguous(memory_format=fmt):
                    # .data keeps the Parameter object (optimizer and DDP hold references)
                    t.data = t.data.contiguous(memory_format=fmt)
    return module


def move(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a (nested) batch to ``device``; dicts, lists and tuples keep their
    structure, other values pass through. With ``channels_last``, 5-D and 4-D floating tensors
    (clips, spectrograms, frames) get the matching channels-last format."""
    if torch.is_tensor(batch):
        x = batch.to(device, non_blocking=True)
        fmt = memory_format_for(x) if channels_last else None
        return x.contiguous(memory_format=fmt) if fmt is not None else x
    if isinstance(batch, Mapping):
        return {k: move(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move(v, device, channels_last) for v in batch)
    return batch
