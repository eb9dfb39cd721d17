"""Frozen-feature evaluation: feature extraction + cache, kNN, linear probe, CLI, neighbour grid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import Dataset

from avssl.config import from_dict, to_dict
from avssl.data.dataset import AVClipDataset
from avssl.eval.features import extract_features
from avssl.eval.knn import knn_predict, knn_scores, knn_top1
from avssl.eval.linear import linear_probe
from avssl.methods import build_method
from avssl.models import build_video_encoder

DATA = {"split": "train", "eval_split": "test", "batch_size": 8, "num_workers": 0,
        "clips_per_video": 2, "require_audio": False,
        "video": {"num_frames": 4, "fps": 8, "crop_size": 32, "resize": 36},
        "audio": {"sample_rate": 16000, "duration": 1.0, "feature": "logmel", "n_fft": 512,
                  "hop_length": 160, "n_mels": 32, "num_frames": 100}}
MODEL = {"video": {"arch": "r2plus1d", "depth": 10, "width": 4},
         "audio": {"arch": "audio_cnn", "width": 4}, "head": {"hidden": [16], "out_dim": 8}}


@pytest.fixture(scope="module")
def prepared(tiny_prepared: Path) -> Path:
    return tiny_prepared


@pytest.fixture(scope="module")
def checkpoint(prepared: Path) -> Path:
    """A tiny randomly initialized AVID checkpoint in our layout."""
    cfg = from_dict({"seed": 3, "data": {**DATA, "manifest": str(prepared)}, "model": MODEL,
                     "method": {"name": "avid", "num_negatives": 4}})
    torch.manual_seed(123)  # not the random baseline's seed (the eval config's, 0)
    method = build_method(cfg, num_rows=12)
    path = prepared.parent.parent / "run" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": method.state_dict(), "config": to_dict(cfg)}, path)
    return path


# ----------------------------------------------------------------------------------------------
# kNN
# ----------------------------------------------------------------------------------------------
def test_knn_matches_hand_computed_example() -> None:
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    q = torch.tensor([[2.0, 0.0]])  # cosine: 1.0 (c0), 0.6 (c1), 0.8 (c1), 0.0 (c0)
    # k=3 keeps sims 1.0 (c0), 0.8 and 0.6 (c1): T=0.1 -> e^10 vs e^8 + e^6: class 0 ...
    s = knn_scores(train, labels, q, k=3, temperature=0.1)
    assert torch.allclose(s, torch.tensor([[math.exp(10), math.exp(8) + math.exp(6)]]),
                          rtol=1e-4)
    assert knn_predict(train, labels, q, k=3, temperature=0.1).tolist() == [0]
    # ... T=1 -> e^1 = 2.72 vs e^0.8 + e^0.6 = 4.05: class 1 (the plain majority).
    assert knn_predict(train, labels, q, k=3, temperature=1.0).tolist() == [1]
    assert knn_predict(train, labels, q, k=1, temperature=1.0).tolist() == [0]
    # k larger than the train set is clamped; accuracy in percent
    assert knn_top1(train, labels, torch.tensor([[1.0, 0.1], [0.7, 0.7]]),
                    torch.tensor([0, 1]), k=3, temperature=0.1) == 100.0
    assert knn_scores(train, labels, q, k=99, temperature=1.0).shape == (1, 2)


# ----------------------------------------------------------------------------------------------
# Feature extraction
# ----------------------------------------------------------------------------------------------
class ToyEncoder(nn.Module):
    """'conv2x' is the input itself, 'conv3x' its square (B, 3, T, H, W)."""

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return {"conv2x": x, "conv3x": x * x}


class ToyClips(Dataset):
    """3 videos x 2 clips, items interleaved so one batch mixes videos."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = [{"video": torch.randn(3, 2, 2, 2, generator=g),
                       "index": torch.tensor(v), "label": torch.tensor(v % 2)}
                      for _ in range(2) for v in (2, 0, 1)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.items[i]


def test_features_are_max_pooled_then_averaged_over_clips() -> None:
    ds = ToyClips()
    enc = ToyEncoder().train()
    out = extract_features(enc, ds, layers=("conv2x", "conv3x"), batch_size=4, progress=False)
    assert enc.training  # state restored
    assert out.index.tolist() == [0, 1, 2] and out.labels.tolist() == [0, 1, 0]
    for v in range(3):
        clips = [it["video"] for it in ds.items if int(it["index"]) == v]
        expect = torch.stack([c.flatten(1).amax(1) for c in clips]).mean(0)
        assert torch.allclose(out.feats["conv2x"][v], expect)
        expect3 = torch.stack([(c * c).flatten(1).amax(1) for c in clips]).mean(0)
        assert torch.allclose(out.feats["conv3x"][v], expect3)


def test_feature_cache_is_reused(prepared: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = from_dict({"data": {**DATA, "manifest": str(prepared)}, "model": MODEL})
    ds = AVClipDataset(prepared, cfg.data, split="test", train=False, clip_mode="uniform",
                       clips_per_video=2, require_audio=False)
    torch.manual_seed(0)
    enc = build_video_encoder(cfg.model.video)
    first = extract_features(enc, ds, batch_size=8, cache_dir=tmp_path, identity="ckpt-a",
                             progress=False)
    assert {k: tuple(v.shape) for k, v in first.feats.items()} == {
        "conv2x": (4, 4), "conv3x": (4, 8), "conv4x": (4, 16), "conv5x": (4, 32)}
    assert len(list(tmp_path.glob("feats_*.pt"))) == 1

    def boom(x: Tensor) -> dict[str, Tensor]:
        raise AssertionError("encoder ran although the features are cached")

    monkeypatch.setattr(enc, "forward_features", boom)
    again = extract_features(enc, ds, batch_size=8, cache_dir=tmp_path, identity="ckpt-a",
                             progress=False)
    for k in first.feats:
        assert torch.equal(first.feats[k], again.feats[k])
    assert torch.equal(first.labels, again.labels)
    with pytest.raises(AssertionError, match="encoder ran"):  # other checkpoint: new key
        extract_features(enc, ds, batch_size=8, cache_dir=tmp_path, identity="ckpt-b",
                         progress=False)
    with pytest.raises(AssertionError, match="encoder ran"):  # other layers: new key
        extract_features(enc, ds, layers=("conv5x",), cache_dir=tmp_path, identity="ckpt-a",
                         progress=False)


# ----------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------
def test_linear_probe_separable_vs_random_labels() -> None:
    g = torch.Generator().manual_seed(0)
    classes, n = 4, 400
    means = torch.randn(classes, 16, generator=g) * 3 + 5  # far apart, large offset (BN)

    def sample(m: int) -> tuple[dict[str, Tensor], Tensor]:
        y = torch.randint(classes, (m,), generator=g)
        sep = means[y] + 0.3 * torch.randn(m, 16, generator=g)
        noise = torch.randn(m, 32, generator=g)
        return {"separable": sep, "noise": noise}, y

    xtr, ytr = sample(n)
    xte, yte = sample(n)
    acc = linear_probe(xtr, ytr, xte, yte, steps=150, lr=1e-2)
    assert acc["separable"] >= 99.0
    assert acc["noise"] < 40.0  # chance is 25 %
    # Mini-batch SGD also works.
    acc = linear_probe({"separable": xtr["separable"]}, ytr, {"separable": xte["separable"]},
                       yte, steps=150, lr=0.1, optimizer="sgd", batch_size=64)
    assert acc["separable"] >= 99.0


# ----------------------------------------------------------------------------------------------
# CLI end to end (+ neighbour grid)
# ----------------------------------------------------------------------------------------------
def _eval_config(tmp: Path, manifest: Path) -> Path:
    path = tmp / "probe.yaml"
    path.write_text(yaml.safe_dump({"seed": 0, "data": {**DATA, "manifest": str(manifest)}}))
    return path


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    import avssl.cli

    monkeypatch.setitem(avssl.cli.COMMANDS, "eval", ("avssl.eval.cli", "frozen-feature probes"))
    return avssl.cli.main(argv)


def test_cli_linear_and_knn(prepared: Path, checkpoint: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    config = _eval_config(tmp_path, prepared)
    rc = _main(["eval", "linear", str(config), "--checkpoint", str(checkpoint), "--no-progress",
                "--random-baseline", "--steps", "60", "data.batch_size=6"], monkeypatch)
    out = capsys.readouterr().out
    assert rc == 0
    res = json.loads((checkpoint.parent / "eval_linear_probe.json").read_text())
    assert res["num_train"] == 12 and res["num_test"] == 4 and res["num_classes"] == 2
    for name in ("checkpoint", "random"):
        assert set(res["top1"][name]) == {"conv2x", "conv3x", "conv4x", "conv5x"}
        assert all(0.0 <= v <= 100.0 for v in res["top1"][name].values())
    for layer in ("conv2x", "conv3x", "conv4x", "conv5x"):
        assert layer in out
    assert "checkpoint top1" in out and "random top1" in out
    cache = checkpoint.parent / "feature_cache"
    cached = [torch.load(f, weights_only=True)["feats"]["conv5x"]
              for f in cache.glob("feats_*.pt")]
    assert len(cached) == 4  # {checkpoint, random} x {train, test}, all different
    assert len({tuple(c.flatten().tolist()) for c in cached}) == 4

    rc = _main(["eval", "knn", str(config), "--checkpoint", str(checkpoint), "--no-progress",
                "-k", "3", "--neighbors", "2", "--layers", "conv4x,conv5x",
                "data.batch_size=6"], monkeypatch)
    out = capsys.readouterr().out
    assert rc == 0 and "conv5x" in out
    res = json.loads((checkpoint.parent / "eval_knn_probe.json").read_text())
    assert set(res["top1"]["checkpoint"]) == {"conv4x", "conv5x"} and res["knn"]["k"] == 3
    from PIL import Image

    png = Image.open(res["neighbors_png"])
    cell, pad = 96, 2
    assert png.size == (6 * (cell + pad) - pad, 2 * (cell + pad) - pad)  # 1 query + 5 nbrs
    assert np.asarray(png).std() > 0

    # user errors: one line, exit code 2
    rc = _main(["eval", "knn", str(config), "--checkpoint", str(tmp_path / "none.pt")],
               monkeypatch)
    assert rc == 2 and "checkpoint not found" in capsys.readouterr().err
    rc = _main(["eval", "knn", str(config), "--checkpoint", str(checkpoint), "--layers",
                "conv9x"], monkeypatch)
    assert rc == 2 and "conv9x" in capsys.readouterr().err


def test_synthetic_eval_config_loads() -> None:
    from avssl.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "eval" / "synthetic_linear.yaml", require_paths=False)
    assert cfg.data.manifest == "outputs/demo/probe_prepared/manifest.jsonl"
    assert (cfg.data.split, cfg.data.eval_split) == ("train", "test")
    assert cfg.data.clips_per_video > 1 and cfg.model.video.width == 16


# ----------------------------------------------------------------------------------------------
# Protocol settings: the config's eval section, eval.* overrides, flags (which win)
# ----------------------------------------------------------------------------------------------
def _count_steps(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count optimizer steps of Adam and SGD (patched before the probe builds its optimizer)."""
    calls = {"Adam": 0, "SGD": 0}
    for cls in (torch.optim.Adam, torch.optim.SGD):
        original = cls.step

        def step(self: torch.optim.Optimizer, *a: object, _orig: object = original,
                 _name: str = cls.__name__, **k: object) -> object:
            calls[_name] += 1
            return _orig(self, *a, **k)  # type: ignore[operator]

        monkeypatch.setattr(cls, "step", step)
    return calls


def test_linear_settings_from_eval_section_overrides_and_flags(
        prepared: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import avssl.cli

    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump({"seed": 0, "data": {**DATA, "manifest": str(prepared)},
                                      "eval": {"steps": 5, "layers": ["conv5x"]}}))
    out = tmp_path / "lin.json"
    base = ["eval", "linear", str(config), "--checkpoint", str(checkpoint), "--no-progress",
            "--out", str(out), "data.batch_size=6"]
    runs = [  # (extra arguments, optimizer, steps)
        ([], "Adam", 5),  # the config's eval section
        (["eval.steps=7", "eval.optimizer=sgd", "eval.lr=0.05"], "SGD", 7),  # overrides
        (["--steps", "3", "eval.steps=7"], "Adam", 3),  # the flag wins
    ]
    for extra, opt_name, steps in runs:
        calls = _count_steps(monkeypatch)
        assert avssl.cli.main(base + extra) == 0, capsys.readouterr().err
        assert calls[opt_name] == steps and sum(calls.values()) == steps, (extra, calls)
        res = json.loads(out.read_text())
        assert res["probe"]["steps"] == steps and res["probe"]["optimizer"] == opt_name.lower()
        assert res["layers"] == ["conv5x"] and set(res["top1"]["checkpoint"]) == {"conv5x"}
        monkeypatch.undo()
    assert res["probe"]["lr"] == 1e-2  # the flag run: lr back to the default
    assert json.loads(out.read_text())["probe"]["probe_batch_size"] is None
    capsys.readouterr()


def test_knn_settings_from_eval_overrides(prepared: Path, checkpoint: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import avssl.cli
    import avssl.eval.knn as knn

    used: list[tuple[int, float]] = []
    original = knn.knn_top1

    def spy(*a: object, k: int, temperature: float) -> float:
        used.append((k, temperature))
        return original(*a, k=k, temperature=temperature)  # type: ignore[arg-type]

    monkeypatch.setattr(knn, "knn_top1", spy)
    config = _eval_config(tmp_path, prepared)
    out = tmp_path / "knn.json"
    assert avssl.cli.main(["eval", "knn", str(config), "--checkpoint", str(checkpoint),
                           "--no-progress", "--out", str(out), "eval.k=2",
                           "eval.temperature=0.5", "eval.layers=[conv4x, conv5x]",
                           "data.batch_size=6"]) == 0
    assert used == [(2, 0.5), (2, 0.5)]  # one per layer
    res = json.loads(out.read_text())
    assert res["knn"] == {"k": 2, "temperature": 0.5} and res["layers"] == ["conv4x", "conv5x"]
