"""Training methods: config name -> :class:`~avssl.methods.contract.MethodSpec`.

Adding a method is one file under ``avssl/methods/`` (class, settings dataclass, sample
function), its loss under ``avssl/losses/``, one entry below and a config; the trainer does not
change (docs/design.md, "The method contract").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from avssl.config import Config, ConfigError, from_dict, to_dict
from avssl.methods import avc, avid, byol, cma, simclr
from avssl.methods.avid import AVID
from avssl.methods.cma import CMA
from avssl.methods.contract import Method, MethodSettings, MethodSpec, TrainingMethod

METHODS: dict[str, MethodSpec] = {
    "avid": MethodSpec(avid.AVID, avid.AVIDSettings, ("video", "audio"), avid.sample,
                       "Morgado et al., Audio-Visual Instance Discrimination, CVPR 2021"),
    "cma": MethodSpec(cma.CMA, cma.CMASettings, ("video", "audio"), avid.sample,
                      "Morgado et al., ... with Cross-Modal Agreement, CVPR 2021"),
    "simclr": MethodSpec(simclr.SimCLR, simclr.SimCLRSettings, ("video",), simclr.sample,
                         "Chen et al., A Simple Framework for Contrastive Learning, ICML 2020"),
    "byol": MethodSpec(byol.BYOL, byol.BYOLSettings, ("video",), byol.sample,
                       "Grill et al., Bootstrap Your Own Latent, NeurIPS 2020"),
    "avc": MethodSpec(avc.AVC, avc.AVCSettings, ("video", "audio"), avc.sample,
                      "Arandjelovic & Zisserman, Look, Listen and Learn, ICCV 2017"),
}

__all__ = ["AVID", "CMA", "METHODS", "Method", "MethodSettings", "MethodSpec", "TrainingMethod",
           "build_method", "check_config", "method_settings", "method_spec", "resolved_dict"]


def method_spec(cfg: Config, src: str = "<config>") -> MethodSpec:
    """The spec of ``cfg.method["name"]``; :class:`ConfigError` for an unknown name."""
    if not isinstance(cfg.method, dict):
        raise ConfigError(f"{src}: method: expected a mapping, got {cfg.method!r}")
    name = cfg.method.get("name", MethodSettings.name)  # no name: the default method
    if not isinstance(name, str):
        raise ConfigError(f"{src}: method.name: expected one of {', '.join(METHODS)}, got "
                          f"{name!r}")
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"{src}: method.name: unknown method {name!r} "
                          f"(known: {', '.join(METHODS)})") from None


def method_settings(cfg: Config, src: str = "<config>") -> Any:
    """The ``method:`` section validated by its method's own dataclass (an unknown key, a
    wrong type or a value out of range is one :class:`ConfigError` line naming it)."""
    spec = method_spec(cfg, src)
    return from_dict(dict(cfg.method), spec.settings, src, require_paths=False, prefix="method")


def resolved_dict(cfg: Config, src: str = "<config>") -> dict[str, Any]:
    """``cfg`` as a plain dict with every default of its method's settings filled in (what a
    run directory's config.yaml and a checkpoint record)."""
    out = to_dict(cfg)
    out["method"] = to_dict(method_settings(cfg, src))
    return out


def check_config(cfg: Config, src: str = "<config>") -> None:
    """Everything ``build_method`` would reject, without data or memory: the method name and
    settings, and the encoders and heads built on the meta device (unknown arch, a depth the
    arch lacks, ...). Raises :class:`ConfigError` naming the key."""
    spec = method_spec(cfg, src)
    settings = method_settings(cfg, src)
    spec.sample(settings)
    try:
        with torch.device("meta"):
            spec.cls(cfg, settings, 2)  # two rows: the smallest bank with a negative
    except ConfigError as e:  # the builders name the key, not the file
        raise ConfigError(f"{src}: {e}") from None


def build_method(cfg: Config, num_rows: int, src: str = "<config>") -> nn.Module:
    """The method named by ``cfg.method["name"]`` for a dataset of ``num_rows`` instances."""
    spec = method_spec(cfg, src)
    return spec.cls(cfg, method_settings(cfg, src), num_rows)
