"""load_encoders: the one checkpoint-to-encoder loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avssl.config import from_dict, to_dict
from avssl.methods import build_method
from avssl.models.loading import PARTS, load_encoders
from avssl.utils.checkpoint import CheckpointError

MODEL = {"video": {"arch": "r2plus1d", "depth": 10, "width": 4},
         "audio": {"arch": "audio_cnn", "width": 4}, "head": {"hidden": [16], "out_dim": 8}}


def _checkpoint(tmp_path: Path, with_config: bool = True) -> tuple[Path, dict]:
    cfg = from_dict({"model": MODEL}, require_paths=False)
    state = build_method(cfg, num_rows=8).state_dict()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, **({"config": to_dict(cfg)} if with_config else {})}, path)
    return path, state


def test_every_part_gets_the_checkpoint_weights(tmp_path: Path) -> None:
    path, state = _checkpoint(tmp_path)
    parts, cfg = load_encoders(path, PARTS)
    assert cfg is not None and cfg.model.video.width == 4
    for part, module in parts.items():
        for k, v in module.state_dict().items():
            assert torch.equal(v, state[f"encoders.{part}.{k}"]), (part, k)


def test_without_config_the_given_model_describes_the_weights(tmp_path: Path) -> None:
    path, state = _checkpoint(tmp_path, with_config=False)
    with pytest.raises(CheckpointError, match="no 'config' key"):
        load_encoders(path, ["video"])
    model = from_dict({"model": MODEL}, require_paths=False).model
    parts, cfg = load_encoders(path, ["audio"], model=model, require_config=False)
    assert cfg is None and list(parts) == ["audio"]
    for k, v in parts["audio"].state_dict().items():
        assert torch.equal(v, state[f"encoders.audio.{k}"]), k


def test_weights_that_do_not_fit_are_one_line(tmp_path: Path) -> None:
    path, _ = _checkpoint(tmp_path, with_config=False)
    wider = from_dict({"model": {**MODEL, "video": {**MODEL["video"], "width": 8}}},
                      require_paths=False).model
    with pytest.raises(CheckpointError, match="video weights do not fit the config") as e:
        load_encoders(path, ["video"], model=wider, require_config=False)
    assert "\n" not in str(e.value)


def test_random_baseline_without_a_checkpoint() -> None:
    model = from_dict({"model": MODEL}, require_paths=False).model
    parts, cfg = load_encoders(None, ["video", "video_head"], model=model)
    assert cfg is None and parts["video_head"] is not None
    out = parts["video"].eval()(torch.zeros(1, 3, 4, 32, 32))
    assert out.shape == (1, parts["video"].out_dim)
