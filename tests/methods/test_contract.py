"""Every entry of METHODS keeps the method contract (methods/contract.py, docs/design.md)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avssl.config import OptimConfig, from_dict
from avssl.data.sample import SampleSpec
from avssl.methods import METHODS, MethodSettings, TrainingMethod, method_settings

TINY_MODEL = {"video": {"arch": "r2plus1d", "depth": 10, "width": 4},
              "audio": {"arch": "audio_cnn", "depth": 10, "width": 4},
              "head": {"hidden": [16], "out_dim": 8}}


@pytest.mark.parametrize("name", list(METHODS))
def test_spec_is_consistent(name: str) -> None:
    spec = METHODS[name]
    assert issubclass(spec.settings, MethodSettings)
    assert spec.settings().name == name  # the default name is the registry key
    assert isinstance(spec.sample(spec.settings()), SampleSpec)
    assert spec.encoders and set(spec.encoders) <= {"video", "audio"}
    assert spec.paper
    for f in dataclasses.fields(spec.settings):  # every key is typed and has a default
        assert f.default is not dataclasses.MISSING or \
            f.default_factory is not dataclasses.MISSING, f"{name}: method.{f.name}"


@pytest.mark.parametrize("name", list(METHODS))
def test_builds_only_its_encoders_and_keeps_the_protocol(name: str) -> None:
    spec = METHODS[name]
    cfg = from_dict({"model": TINY_MODEL, "method": {"name": name}}, require_paths=False)
    torch.manual_seed(0)
    method = spec.cls(cfg, method_settings(cfg), 8)  # tiny encoders, 8 rows
    assert isinstance(method, TrainingMethod)
    keys = {k.split(".")[1] for k in method.state_dict() if k.startswith("encoders.")}
    want = set(spec.encoders) | {f"{e}_head" for e in spec.encoders}
    assert keys == want, f"{name} builds {sorted(keys)}, declares {spec.encoders}"
    groups = method.param_groups(OptimConfig())
    grouped = [p for g in groups for p in g["params"]]
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) and {id(p) for p in grouped} == \
        {id(p) for p in trainable}, "every trainable parameter in exactly one group"
    assert method.on_step_end(1, 10) is not None and method.on_epoch_start(0) is not None
