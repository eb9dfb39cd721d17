"""Helpers the evaluation protocols share (:mod:`avssl.eval.finetune`, :mod:`avssl.eval.vcop`,
:mod:`avssl.eval.audio_eval`, :mod:`avssl.eval.cli`): a config with a validated ``eval`` section,
an encoder from a checkpoint, the common CLI arguments, the results path and a text table."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from avssl.config import (
    Config,
    ConfigError,
    _apply_override,
    _build,
    _read_yaml,
    from_dict,
    parse_override,
)

S = TypeVar("S")


@dataclass
class SplitSpec:
    """One train/test pair: split names of the manifest rows, optionally another manifest
    (when each official split is prepared as its own manifest)."""

    train: str
    test: str
    manifest: str | None = None


def load_eval_config(path: str | Path, overrides: list[str] | tuple[str, ...],
                     settings_cls: type[S], require_paths: bool = True,
                     settings: dict[str, Any] | None = None) -> tuple[Config, S]:
    """Load ``path`` as a :class:`Config` plus its ``eval`` section as ``settings_cls``.

    The ``eval`` section (with ``eval.*`` overrides, then ``settings``: values of command-line
    flags, which win) is validated as ``settings_cls``: an unknown key or a bad value raises a
    one-line :class:`ConfigError` naming ``eval.<key>``. The rest is validated as a Config.
    """
    data = _read_yaml(Path(path))
    for item in overrides:
        keys, value = parse_override(item)
        _apply_override(data, keys, value)
    ev = data.pop("eval", None)
    src = str(path) + (" (with overrides)" if overrides or settings else "")
    if ev is None:
        ev = {}
    if not isinstance(ev, dict):
        raise ConfigError(f"{src}: eval: expected a mapping of {settings_cls.__name__} "
                          f"settings, got {ev!r}")
    ev = {**ev, **(settings or {})}
    try:
        out = _build(settings_cls, ev, "eval", src)
    except TypeError as e:  # a nested entry without a required key (eval.splits: [{train: a}])
        raise ConfigError(f"{src}: eval: {e}") from None
    cfg = from_dict(data, Config, src, require_paths)
    return cfg, out


def load_encoder(cfg: Config, checkpoint: str | Path | None, modality: str) -> nn.Module:
    """The ``video`` or ``audio`` encoder with the ``encoders.<modality>.*`` weights of
    ``checkpoint`` (random init from ``cfg.model`` when None). The checkpoint's own model
    section describes its weights; without a ``config`` in it, ``cfg.model`` does."""
    from avssl.models.loading import load_encoders

    modules, _ = load_encoders(checkpoint, [modality], model=cfg.model, require_config=False)
    return modules[modality]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``avssl eval finetune|retrieval|audio``; the protocol's settings are the
    config's ``eval`` section and ``eval.*`` overrides."""
    parser.add_argument("config", help="evaluation config (YAML; optional `eval` section)")
    parser.add_argument("overrides", nargs="*", default=[],
                        help="key.sub=value overrides; eval.* for the protocol's settings "
                             "(default: none)")
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="pretraining checkpoint (.pt) (optional; default: none, a randomly "
                             "initialized encoder, the baseline; then give --out)")
    parser.add_argument("--out", metavar="JSON",
                        help="results JSON (default: <checkpoint stem>.<protocol>_"
                             "<config stem>.json beside the checkpoint; required without "
                             "--checkpoint)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (default: bars on a terminal)")


def results_path(args: argparse.Namespace, protocol: str) -> Path:
    """``--out``, else ``<checkpoint stem>.<protocol>_<config stem>.json`` beside it."""
    if getattr(args, "out", None):
        return Path(args.out)
    if not args.checkpoint:
        from avssl.utils.errors import UsageError

        raise UsageError("give --out when no --checkpoint is given")
    ck = Path(args.checkpoint)
    return ck.with_name(f"{ck.stem}.{protocol}_{Path(args.config).stem}.json")


def device() -> torch.device:
    """CUDA when available, else the CPU (single-process protocols)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """Plain text table; floats printed as percent with 2 decimals."""
    cells = [[f"{100 * v:.2f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
    return "\n".join([line, "-" * len(line)]
                     + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells])
