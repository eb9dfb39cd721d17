"""Training methods: config name -> class. Each is an nn.Module with ``forward(batch) -> dict``
holding ``loss`` and named parts, and ``on_epoch_start(epoch) -> dict`` of logged numbers."""

from __future__ import annotations

from torch import nn

from avssl.config import Config
from avssl.methods.avid import AVID
from avssl.methods.cma import CMA

METHODS: dict[str, type[nn.Module]] = {
    "avid": AVID,
    "cma": CMA,
}


def build_method(cfg: Config, num_rows: int) -> nn.Module:
    """The method named by ``cfg.method.name`` for a dataset of ``num_rows`` instances."""
    try:
        cls = METHODS[cfg.method.name]
    except KeyError:
        raise ValueError(f"method.name: unknown method {cfg.method.name!r} "
                         f"(known: {', '.join(METHODS)})") from None
    return cls(cfg, num_rows)
