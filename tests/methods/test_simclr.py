"""SimCLR on a tiny per-frame encoder: sample spec, settings, forward, gradients, parameter groups,
and `avssl train` end to end on the tiny prepared dataset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from avssl.config import Config, ConfigError, OptimConfig, from_dict
from avssl.data.sample import SampleSpec
from avssl.losses.ntxent import nt_xent
from avssl.methods import METHODS, build_method, check_config, method_settings
from avssl.methods.simclr import SimCLR, SimCLRSettings, pair_accuracy, sample


def make_cfg(**method: Any) -> Config:
    """A width-4 frame CNN, an 8-d embedding, a BN head."""
    values = {
        "seed": 0,
        "model": {"video": {"arch": "frame_small", "width": 4},
                  "head": {"hidden": [16], "out_dim": 8, "bn": True}},
        "method": {"name": "simclr", **method},
    }
    return from_dict(values, require_paths=False)


def make_method(**method: Any) -> SimCLR:
    torch.manual_seed(0)
    m = build_method(make_cfg(**method), 10)
    assert isinstance(m, SimCLR)
    return m


def make_batch(b: int = 4, frames: int = 1, size: int = 16, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {"views": [torch.randn(b, 3, frames, size, size, generator=g) for _ in range(2)],
            "index": torch.arange(b)}


def test_sample_spec_and_settings() -> None:
    assert sample(SimCLRSettings()) == SampleSpec(views=2, view_shift=0.0, audio=None)
    cfg = make_cfg(temperature=0.2, temporal_shift=0.5)
    settings = method_settings(cfg)
    assert isinstance(settings, SimCLRSettings) and settings.temperature == 0.2
    spec = METHODS["simclr"].sample(settings)
    assert spec == SampleSpec(views=2, view_shift=0.5, audio=None) and not spec.needs_audio
    assert METHODS["simclr"].encoders == ("video",)
    check_config(cfg)
    for bad in ({"temperature": 0.0}, {"temporal_shift": -1.0}, {"queue": 3}):
        with pytest.raises(ConfigError):
            method_settings(make_cfg(**bad))


def test_forward_loss_and_gradients() -> None:
    m = make_method(temperature=0.1)
    batch = make_batch()
    out = m(batch)
    assert set(out) == {"loss", "acc_pair"}
    assert all(v.ndim == 0 for v in out.values())
    assert torch.isfinite(out["loss"]) and 0.0 <= float(out["acc_pair"]) <= 100.0
    out["loss"].backward()
    for part in ("video", "video_head"):
        grads = [p.grad for p in getattr(m.encoders, part).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), part
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0, part
    # the loss is NT-Xent of the two views' embeddings (one pass over both views: same BN)
    with torch.no_grad():
        z1, z2 = m.embed_views(*batch["views"])
        torch.testing.assert_close(m(batch)["loss"], nt_xent(z1, z2, 0.1))


def test_clips_of_several_frames() -> None:
    out = make_method()(make_batch(b=3, frames=2))
    assert torch.isfinite(out["loss"])


def test_pair_accuracy() -> None:
    z = torch.eye(4, 6)
    assert float(pair_accuracy(z, z)) == 100.0
    # each second view is nearest to another instance's first view: nothing found
    assert float(pair_accuracy(z, z.roll(1, dims=0))) == 0.0
    z2 = z.clone()
    z2[0] = F.normalize(z[1] + 0.5 * z[0], dim=0)  # instance 0's second view leans to 1's
    # only that view misses (its nearest is a view of instance 1): 7 of 8 anchors
    assert float(pair_accuracy(z, z2)) == 87.5


def test_no_audio_encoder_and_checkpoint_layout() -> None:
    m = make_method()
    assert not hasattr(m.encoders, "audio") and not hasattr(m.encoders, "audio_head")
    keys = m.state_dict().keys()
    assert keys and all(k.startswith(("encoders.video.", "encoders.video_head.")) for k in keys)


def test_param_groups_exclude_biases_and_norms() -> None:
    m = make_method()
    groups = m.param_groups(OptimConfig(weight_decay=1e-4))
    decay = [g for g in groups if g["weight_decay"] > 0]
    no_decay = [g for g in groups if g["weight_decay"] == 0]
    assert len(decay) == 1 and len(no_decay) == 1 and decay[0]["weight_decay"] == 1e-4
    assert all(p.ndim > 1 for p in decay[0]["params"])
    assert no_decay[0]["params"] and all(p.ndim == 1 for p in no_decay[0]["params"])
    ids = sorted(id(p) for g in groups for p in g["params"])
    assert ids == sorted(id(p) for p in m.parameters())


# ----------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------
def _tiny_config(tmp: Path, manifest: Path) -> Path:
    cfg: dict[str, Any] = {
        "seed": 3,
        "data": {"manifest": str(manifest), "split": "train", "eval_split": "test",
                 "batch_size": 4, "num_workers": 0, "clips_per_video": 1,
                 "video": {"num_frames": 1, "fps": 8, "crop_size": 16, "resize": 20,
                           "color_jitter": [0.4, 0.4, 0.2, 0.0]}},
        "model": {"video": {"arch": "frame_small", "width": 4},
                  "head": {"hidden": [16], "out_dim": 8, "bn": True}},
        # a temporal positive: the second view is up to 0.25 s from the first
        "method": {"name": "simclr", "temperature": 0.1, "temporal_shift": 0.25},
        "optim": {"lr": 1e-3, "schedule": "cosine"},
        "train": {"epochs": 2, "log_every_steps": 1},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_avssl_train_end_to_end(tiny_prepared: Path, tmp_path: Path) -> None:
    from avssl.models.loading import load_encoders
    from avssl.utils.checkpoint import load_checkpoint

    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "avssl.cli", "train",
                        str(_tiny_config(tmp_path, tiny_prepared)), "--run-dir", str(run),
                        "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt_path = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 6  # 12 train videos / batch 4
    metrics = [yaml.safe_load(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in metrics if x.get("kind") == "train"]
    assert train and all("acc_pair" in x for x in train)
    modules, cfg = load_encoders(ckpt_path, ["video"])
    assert cfg is not None and cfg.method["name"] == "simclr"
    state: dict[str, Tensor] = ckpt["model"]
    for k, v in modules["video"].state_dict().items():
        assert torch.equal(v, state[f"encoders.video.{k}"]), k
