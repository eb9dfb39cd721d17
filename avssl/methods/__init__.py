"""Training methods: config name -> class. Each is an nn.Module with ``forward(batch) -> dict``
holding ``loss`` and named parts, and ``on_epoch_start(epoch) -> dict`` of logged numbers."""

from __future__ import annotations

import torch
from torch import nn

from avssl.config import Config, ConfigError
from avssl.methods.avid import AVID
from avssl.methods.cma import CMA

METHODS: dict[str, type[nn.Module]] = {
    "avid": AVID,
    "cma": CMA,
}


def method_class(cfg: Config) -> type[nn.Module]:
    """The class of ``cfg.method.name``; :class:`ConfigError` for an unknown name."""
    try:
        return METHODS[cfg.method.name]
    except KeyError:
        raise ConfigError(f"method.name: unknown method {cfg.method.name!r} "
                          f"(known: {', '.join(METHODS)})") from None


def check_config(cfg: Config) -> None:
    """Everything ``build_method`` would reject, without data or memory: the method name, and
    the encoders and heads built on the meta device (unknown arch, a depth the arch lacks, ...).
    Raises :class:`ConfigError` naming the key."""
    cls = method_class(cfg)
    with torch.device("meta"):
        cls(cfg, 2)  # two rows: the smallest bank with a negative; no storage on "meta"


def build_method(cfg: Config, num_rows: int) -> nn.Module:
    """The method named by ``cfg.method.name`` for a dataset of ``num_rows`` instances."""
    return method_class(cfg)(cfg, num_rows)
