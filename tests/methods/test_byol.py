"""BYOL on frames (Grill et al., NeurIPS 2020): gradients reach only the online network, the
target is the EMA written out, the optimizer groups, kill -9 and resume, and no collapse."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor

from avssl.config import Config, from_dict, load_config
from avssl.engine.optim import build_optimizer
from avssl.engine.trainer import KILL_AT_STEP_ENV
from avssl.losses.byol import byol_loss
from avssl.methods import build_method
from avssl.methods.byol import BYOL
from avssl.utils.checkpoint import load_checkpoint

DIM = 8


def make_cfg(**method: Any) -> Config:
    """A width-4 per-frame CNN, 8-d projections with BN, a 16-wide predictor."""
    values = {
        "seed": 0,
        "model": {"video": {"arch": "frame_small", "width": 4},
                  "head": {"hidden": [16], "out_dim": DIM, "bn": True}},
        "method": {"name": "byol", "base_momentum": 0.9, "predictor_hidden": 16, **method},
        "optim": {"name": "sgd", "lr": 0.1, "weight_decay": 1e-4},
    }
    return from_dict(values, require_paths=False)


def make_method(**method: Any) -> BYOL:
    torch.manual_seed(0)
    m = build_method(make_cfg(**method), 10)
    assert isinstance(m, BYOL)
    return m.train()


def make_batch(seed: int = 0, b: int = 4) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {"views": [torch.randn(b, 3, 1, 16, 16, generator=g) for _ in range(2)],
            "index": torch.arange(b)}


def test_builds_no_audio_encoder() -> None:
    m = make_method()
    assert not hasattr(m.encoders, "audio") and not hasattr(m.encoders, "audio_head")
    assert not any("audio" in k for k in m.state_dict())
    assert {k.split(".")[0] for k in m.state_dict()} == {"encoders", "predictor", "target"}
    # eval/localize load encoders.video.*: the online encoder is there
    assert any(k.startswith("encoders.video.") for k in m.state_dict())


def test_loss_is_the_symmetric_sum_and_gradients_reach_only_the_online_network() -> None:
    m = make_method()
    batch = make_batch()
    out = m(batch)
    v1, v2 = batch["views"]
    enc, tgt = m.encoders, m.target

    def online(v: Tensor) -> Tensor:
        return m.predictor(enc.video_head.projection(enc.video(v)))

    with torch.no_grad():  # train mode: batch statistics, so a second pass gives the same
        ref = byol_loss(online(v1), tgt.video_head.projection(tgt.video(v2))) + \
            byol_loss(online(v2), tgt.video_head.projection(tgt.video(v1)))
    torch.testing.assert_close(out["loss"], ref)
    assert float(out["byol_cos"]) == pytest.approx(1 - float(ref) / 4, abs=1e-6)
    out["loss"].backward()
    for name, p in m.target.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    for mod in (m.encoders, m.predictor):
        for name, p in mod.named_parameters():
            assert p.requires_grad and p.grad is not None, name


def test_target_is_the_ema_of_the_online_weights_after_each_step() -> None:
    m = make_method()
    opt = build_optimizer(m.param_groups(make_cfg().optim), make_cfg().optim)
    total = 5
    for step in (1, 2):
        target_old = {k: v.clone() for k, v in m.target.state_dict().items()}
        opt.zero_grad(set_to_none=True)
        m(make_batch(seed=step))["loss"].backward()
        opt.step()
        online_new = m.encoders.state_dict()
        # the forward pass does not touch the target (its BN keeps its running statistics)
        assert all(torch.equal(v, target_old[k]) for k, v in m.target.state_dict().items())
        logged = m.on_step_end(step, total)
        mom = logged["byol_momentum"]
        base = 0.9
        assert mom == pytest.approx(1 - (1 - base) * (math.cos(math.pi * (step - 1) / total)
                                                       + 1) / 2, abs=1e-12)
        for k, v in m.target.state_dict().items():
            if v.is_floating_point():  # parameters and BN running statistics: averaged
                assert torch.equal(v, mom * target_old[k] + (1 - mom) * online_new[k]), k
            else:  # num_batches_tracked: copied
                assert torch.equal(v, online_new[k]), k
        assert not all(torch.equal(v, online_new[k]) for k, v in m.target.state_dict().items())


def test_param_groups() -> None:
    m = make_method(predictor_lr=0.5)
    optim = make_cfg().optim
    groups = m.param_groups(optim)
    target_ids = {id(p) for p in m.target.parameters()}
    pred_ids = {id(p) for p in m.predictor.parameters()}
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen))  # every parameter once
    assert not set(seen) & target_ids  # the target is in no group
    trainable = {id(p) for mod in (m.encoders, m.predictor) for p in mod.parameters()}
    assert set(seen) == trainable
    for g in groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= pred_ids or not ids & pred_ids  # a group is predictor-only or not at all
        if ids <= pred_ids:
            assert g["lr"] == 0.5
        else:
            assert g.get("lr", optim.lr) == optim.lr
        for p in g["params"]:  # no decay on biases and norm parameters (1-D)
            assert g["weight_decay"] == (0.0 if p.ndim <= 1 else optim.weight_decay)
    # the optimizer the trainer builds from them keeps the predictor's lr
    opt = build_optimizer(groups, optim)
    assert sorted({g["lr"] for g in opt.param_groups}) == [optim.lr, 0.5]
    # predictor_lr null: optim.lr; exclude_bias_and_norm false: every parameter decays
    groups = make_method(exclude_bias_and_norm=False).param_groups(optim)
    assert all(g["lr"] == optim.lr for g in groups if "lr" in g)
    assert all(g["weight_decay"] == optim.weight_decay for g in groups)


# ----------------------------------------------------------------------------------------------
# End to end (avssl train in a subprocess, on the tiny prepared set: 12 train videos)
# ----------------------------------------------------------------------------------------------
def byol_config(tmp: Path, manifest: Path, **train: Any) -> Path:
    cfg = {
        "seed": 3,
        "data": {"manifest": str(manifest), "split": "train", "eval_split": "test",
                 "batch_size": 4, "num_workers": 0, "clips_per_video": 1,
                 "video": {"num_frames": 1, "fps": 8, "crop_size": 32, "resize": 36,
                           "min_scale": 0.3, "color_jitter": [0.4, 0.4, 0.2, 0.0]}},
        "model": {"video": {"arch": "frame_small", "width": 8},
                  "head": {"hidden": [32], "out_dim": DIM, "bn": True}},
        "method": {"name": "byol", "base_momentum": 0.99, "predictor_hidden": 32},
        "optim": {"lr": 1e-3},
        "train": {"epochs": 2, "deterministic": True, "checkpoint_every_steps": 1,
                  "log_every_steps": 1, **train},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def avssl_train(config: Path, run_dir: Path, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avssl.cli", "train", str(config), "--run-dir",
                           str(run_dir), "--no-progress", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300)


@pytest.mark.slow
def test_kill_and_resume_gives_identical_online_and_target_weights(tiny_prepared: Path,
                                                                    tmp_path: Path) -> None:
    config = byol_config(tmp_path, tiny_prepared)
    clean = avssl_train(config, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    # SIGKILL right after step 4 (mid epoch 2 of 3 steps each), then resume
    crashed = avssl_train(config, tmp_path / "crash", env={KILL_AT_STEP_ENV: "4"})
    assert crashed.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "crash" / "checkpoints" / "last.pt")["global_step"] == 4
    resumed = avssl_train(config, tmp_path / "crash", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a = load_checkpoint(tmp_path / "clean" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "crash" / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] == 6
    assert a["model"].keys() == b["model"].keys()
    assert any(k.startswith("target.") for k in a["model"])
    assert any(k.startswith("encoders.") for k in a["model"])
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    # the target moved off its initial copy of the online network, and is not the online one
    tv = {k.removeprefix("target."): v for k, v in a["model"].items() if k.startswith("target.")}
    assert any(not torch.equal(v, a["model"][f"encoders.{k}"]) for k, v in tv.items()
               if v.is_floating_point())


def mean_dim_std(emb: Tensor) -> float:
    """The standard deviation over samples of each dimension of the L2-normalized embeddings,
    averaged over the dimensions (SimSiam's collapse measure, Chen & He 2021)."""
    z = torch.nn.functional.normalize(emb.double(), dim=1)
    return float(z.std(dim=0).mean())


def collapse_floor(dim: int) -> float:
    """Unit vectors spread over all directions of R^D have a per-dimension std of about
    1/sqrt(D) (each coordinate has variance 1/D); a collapsed network maps every input to one
    vector (std 0). The floor is a tenth of the spread value: far from both."""
    return 0.1 / math.sqrt(dim)


def test_collapse_measure_can_fail() -> None:
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(64, DIM, generator=g)
    assert mean_dim_std(spread) == pytest.approx(1 / math.sqrt(DIM), rel=0.2)
    assert mean_dim_std(spread) > collapse_floor(DIM)
    constant = torch.randn(1, DIM, generator=g).expand(64, DIM)  # a collapsed embedding
    assert mean_dim_std(constant) < collapse_floor(DIM)
    nearly = constant + 1e-3 * torch.randn(64, DIM, generator=g)
    assert mean_dim_std(nearly) < collapse_floor(DIM)


@torch.no_grad()
def online_embeddings(run_dir: Path, manifest: Path) -> Tensor:
    """L2-normalized online embeddings (``encoders.embed_video``, eval mode) of the centre
    frame of every video of the tiny set, from the run's last checkpoint."""
    from avssl.data.dataset import AVClipDataset

    cfg = load_config(run_dir / "config.yaml", require_paths=False)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    method = build_method(cfg, 1)
    method.load_state_dict(ckpt["model"])
    method.eval()
    ds = AVClipDataset(manifest, cfg.data, split=None, train=False, require_audio=False)
    clips = torch.stack([ds[i]["video"] for i in range(len(ds))])
    return method.encoders.embed_video(clips)


@pytest.mark.slow
def test_no_collapse_after_training(tiny_prepared: Path, tmp_path: Path) -> None:
    """10 epochs (30 steps) of BYOL on the tiny set: the embeddings of the 16 videos still
    spread (a collapsed BYOL maps every video to the same vector)."""
    config = byol_config(tmp_path, tiny_prepared, epochs=10, deterministic=False,
                         checkpoint_every_steps=0)
    run = avssl_train(config, tmp_path / "run")
    assert run.returncode == 0, run.stderr[-2000:]
    emb = online_embeddings(tmp_path / "run", tiny_prepared)
    assert emb.shape == (16, DIM)
    std = mean_dim_std(emb)
    assert std > collapse_floor(DIM), f"collapsed: mean per-dimension std {std:.4f}"
