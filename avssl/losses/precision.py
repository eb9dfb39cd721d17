"""Losses are computed at full precision: half-precision inputs (autocast) are raised to fp32."""

from __future__ import annotations

import torch
from torch import Tensor


def full_precision(x: Tensor) -> Tensor:
    """bf16/fp16 -> fp32; fp32 and fp64 unchanged (so a test can check a loss in fp64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
