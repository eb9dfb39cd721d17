"""Checkpoint I/O: atomic writes, ``weights_only`` loads, readable one-line errors."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from avssl.utils.atomic import atomic_torch_save

#: the keys every checkpoint written by ``avssl train`` and ``avssl convert`` has
CHECKPOINT_KEYS = ("model", "config")
CONVERT_HINT = "for the published AVID-CMA weights run `avssl convert avid-cma SRC DST`"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable (message names the file and what to do)."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically: a crash leaves the previous checkpoint intact."""
    atomic_torch_save(state, path)


def _first_line(text: str) -> str:
    """The first non-empty line of an exception message, without C++ assertion prefixes."""
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", line)


def _describe_load_error(path: Path, e: Exception, trust_hint: str) -> str:
    """One line for an exception of ``torch.load``: refused objects, or not a torch file.

    PyTorch's ``weights_only`` errors are several paragraphs; the cause is the line after
    ``WeightsUnpickler error:``.
    """
    text = str(e)
    found = re.search(r"Unsupported global: (GLOBAL \S+)", text)
    if found:
        return (f"{path}: refusing to unpickle arbitrary Python objects ({found.group(1)}; "
                f"a checkpoint should hold only tensors and plain containers){trust_hint}")
    if isinstance(e, EOFError):
        return f"{path}: not a PyTorch checkpoint (truncated: ran out of data)"
    _, sep, after = text.partition("WeightsUnpickler error:")
    detail = _first_line(after if sep else text) or type(e).__name__
    verb = "unreadable archive" if "PytorchStreamReader" in text or "enforce fail" in text \
        else "could not unpickle"
    return f"{path}: not a PyTorch checkpoint ({verb}: {detail})"


def load_torch_file(path: str | Path, map_location: str | torch.device = "cpu",
                    trust: bool = False, trust_hint: str = "") -> Any:
    """``torch.load`` with every failure turned into a one-line :class:`CheckpointError`.

    ``trust`` False loads with ``weights_only=True`` (tensors and plain containers only: no
    code runs from the file); ``trust_hint`` is appended when that refuses an object.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file (give a checkpoint .pt file)")
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (empty file)")
        with warnings.catch_warnings():
            # plain (non-torch) pickles warn about their protocol before failing: noise on stderr
            warnings.filterwarnings("ignore", message=".*pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=not trust)
    except CheckpointError:
        raise
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # garbage, another format, a pickle with non-tensor objects, ...
        raise CheckpointError(_describe_load_error(path, e, trust_hint)) from None


def check_checkpoint(obj: Any, path: str | Path,
                     require: Sequence[str] = CHECKPOINT_KEYS) -> dict[str, Any]:
    """``obj`` (a loaded file) if it is a dict with the ``require`` keys and a state dict under
    ``model``; else a one-line :class:`CheckpointError` naming ``path``."""
    keys = " and ".join(f"'{k}'" for k in require)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not an avssl checkpoint (holds a {type(obj).__name__}, "
                              f"not a dict with {keys} key{'s' * (len(require) > 1)}; "
                              f"{CONVERT_HINT})")
    missing = [k for k in require if k not in obj]
    if missing:
        have = ", ".join(repr(k) for k in list(obj)[:6]) + (", ..." if len(obj) > 6 else "")
        names = "/".join(repr(k) for k in missing) + (" keys" if len(missing) > 1 else " key")
        raise CheckpointError(f"{path}: not an avssl checkpoint (no {names}; has "
                              f"{have or 'no keys'}; {CONVERT_HINT})")
    for key in require:
        if key in ("model", "config") and not isinstance(obj[key], dict):
            raise CheckpointError(f"{path}: not an avssl checkpoint ('{key}' holds a "
                                  f"{type(obj[key]).__name__}, not a dict)")
    return obj


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    require: Sequence[str] = CHECKPOINT_KEYS) -> dict[str, Any]:
    """Load one of our checkpoints with ``weights_only=True`` (no code runs from the file).

    Every problem raises :class:`CheckpointError` with one line naming the file: missing, not a
    PyTorch file, non-tensor objects pickled in it, or a PyTorch file that is not a dict with
    the ``require`` keys (``()``: any dict).
    """
    return check_checkpoint(load_torch_file(path, map_location), path, require)


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The method's state dict from one of our checkpoints (or a bare state dict)."""
    return ckpt.get("model", ckpt)
