"""Checkpoint I/O: atomic writes, ``weights_only`` loads, readable errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avssl.utils.atomic import atomic_torch_save


class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable (message names the file and what to do)."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically: a crash leaves the previous checkpoint intact."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True`` (no arbitrary code from a checkpoint file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, pickle with non-tensor objects, ...
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(e).__name__}: {e})") from e


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The method's state dict from one of our checkpoints (or a bare state dict)."""
    return ckpt.get("model", ckpt)
