"""AVC (audio-visual correspondence, L3-Net) on tiny encoders: the forward pass, its gradients,
that it learns, and an end-to-end ``avssl train`` run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor

from avssl.config import Config, from_dict
from avssl.data.dataset import AVClipDataset
from avssl.data.sample import SampleSpec
from avssl.losses.correspondence import correspondence_loss
from avssl.methods import METHODS, build_method, method_settings
from avssl.methods.avc import AVC, AVCSettings, sample

MODEL = {"video": {"arch": "r2plus1d", "depth": 10, "width": 4},
         "audio": {"arch": "audio_cnn", "depth": 10, "width": 4},
         "head": {"hidden": [16], "out_dim": 8}}


def make_cfg(**method: Any) -> Config:
    return from_dict({"seed": 0, "model": MODEL, "method": {"name": "avc", **method}},
                     require_paths=False)


def make_method(**method: Any) -> AVC:
    torch.manual_seed(0)
    m = build_method(make_cfg(**method), 10)
    assert isinstance(m, AVC)
    return m


def make_batch(b: int, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.randn(b, 3, 4, 32, 32, generator=g),
            "audio": torch.randn(b, 1, 40, 32, generator=g),
            "audio_other": torch.randn(b, 1, 40, 32, generator=g),
            "index": torch.arange(b)}


def test_settings_and_sample() -> None:
    settings = method_settings(make_cfg())
    assert isinstance(settings, AVCSettings)
    assert (settings.negatives, settings.other_gap, settings.fusion_hidden) == \
        ("other_video", 2.0, [128])
    assert sample(settings) == SampleSpec(audio="same", other_audio="other_video", other_gap=2.0)
    hard = method_settings(make_cfg(negatives="other_time", other_gap=0.5))
    assert METHODS["avc"].sample(hard) == SampleSpec(other_audio="other_time", other_gap=0.5)
    assert METHODS["avc"].encoders == ("video", "audio")


def test_forward_uses_every_parameter() -> None:
    """Finite loss; every parameter (both encoders, both heads, the fusion MLP and the
    classifier) gets a gradient, so DDP sees no unused parameter."""
    m = make_method(fusion_hidden=[32, 16])
    out = m(make_batch(6))
    assert set(out) == {"loss", "acc_corr"}
    assert all(v.dim() == 0 for v in out.values())
    assert math.isfinite(out["loss"].detach().item()) and 0.0 <= out["acc_corr"].item() <= 100.0
    out["loss"].backward()
    unused = [n for n, p in m.named_parameters() if p.grad is None]
    assert not unused, unused
    for prefix in ("encoders.video.", "encoders.video_head.", "encoders.audio.",
                   "encoders.audio_head.", "fusion."):
        grads = [p.grad for n, p in m.named_parameters() if n.startswith(prefix)]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), prefix
    # fusion: Linear(2D, 32), ReLU, Linear(32, 16), ReLU, Linear(16, 2)
    shapes = [tuple(p.shape) for n, p in m.named_parameters()
              if n.startswith("fusion.") and n.endswith("weight")]
    assert shapes == [(32, 16), (16, 32), (2, 16)]


def test_loss_is_the_correspondence_loss_of_the_pairs() -> None:
    """Positive pair (video, audio), negative pair (video, audio_other); both audio windows
    go through the audio encoder as one batch (shared BN statistics)."""
    m = make_method()
    batch = make_batch(5, seed=1)
    with torch.no_grad():
        v = m.encoders.embed_video(batch["video"])
        a = m.encoders.embed_audio(torch.cat([batch["audio"], batch["audio_other"]]))
        ref = correspondence_loss(m.fusion(torch.cat([v, a[:5]], 1)),
                                  m.fusion(torch.cat([v, a[5:]], 1)))
        out = m(batch)
    torch.testing.assert_close(out["loss"], ref[0])
    torch.testing.assert_close(out["acc_corr"], ref[1])


def test_loss_drops_on_a_learnable_batch() -> None:
    """25 Adam steps on a fixed batch whose negatives are the other items' own audio (so the
    pairs can be told apart): the loss ends below 0.8 x its first value, from about log 2."""
    m = make_method()
    batch = make_batch(8, seed=2)
    batch["audio_other"] = batch["audio"].roll(1, dims=0)  # item i's negative: i-1's audio
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = m(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[0] == pytest.approx(math.log(2), abs=0.15)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("negatives", ["other_video", "other_time"])
def test_forward_on_dataset_items(tiny_prepared: Path, negatives: str) -> None:
    """The dataset built from the method's SampleSpec gives batches the forward takes."""
    cfg = from_dict({"seed": 0, "model": MODEL, "method": {"name": "avc", "negatives": negatives,
                                                           "other_gap": 0.25},
                     "data": {"manifest": str(tiny_prepared), **DATA}}, require_paths=False)
    settings = method_settings(cfg)
    ds = AVClipDataset(tiny_prepared, cfg.data, sample=sample(settings), seed=0)
    items = [ds[i] for i in (0, 5, 9)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    if negatives == "other_time":
        assert torch.equal(batch["other_index"], batch["index"])
    else:
        assert not (batch["other_index"] == batch["index"]).any()
    out = build_method(cfg, ds.num_videos)(batch)
    assert math.isfinite(float(out["loss"].detach()))


# ------------------------------------------------------------------------------ end to end
DATA = {"split": "train", "eval_split": "test", "batch_size": 4, "num_workers": 0,
        "clips_per_video": 1, "max_offset": 0.25,
        "video": {"num_frames": 4, "fps": 8, "crop_size": 32, "resize": 36},
        "audio": {"sample_rate": 16000, "duration": 1.0, "feature": "logmel", "n_fft": 512,
                  "hop_length": 160, "n_mels": 32, "num_frames": 100}}


@pytest.mark.slow
def test_avssl_train_logs_acc_corr(tiny_prepared: Path, tmp_path: Path) -> None:
    """``avssl train`` of a tiny AVC config exits 0 and its metrics.jsonl holds acc_corr."""
    config = tmp_path / "avc.yaml"
    config.write_text(yaml.safe_dump({
        "seed": 1, "data": {"manifest": str(tiny_prepared), **DATA}, "model": MODEL,
        "method": {"name": "avc"}, "optim": {"lr": 1e-3},
        "train": {"epochs": 2, "checkpoint_every_steps": 0, "log_every_steps": 1}}))
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "avssl.cli", "train", str(config), "--run-dir",
                        str(run), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    train = [row for row in rows if row.get("kind") == "train" and "acc_corr" in row]
    assert len(train) == 6  # 12 train videos / batch 4 = 3 steps, 2 epochs
    assert all(0.0 <= row["acc_corr"] <= 100.0 and math.isfinite(row["loss"]) for row in train)
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu",
                       weights_only=False)["model"]
    assert any(k.startswith("encoders.video.") for k in state)
    assert any(k.startswith("fusion.") for k in state)
