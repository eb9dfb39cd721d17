"""Downstream protocols: fine-tuning, VCOP retrieval, audio cross-validation, folds."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from avssl.config import from_dict, load_config
from avssl.data.synthetic import make_synthetic
from avssl.eval import audio_eval, finetune, vcop
from avssl.eval.common import SplitSpec, load_eval_config
from avssl.eval.finetune import FinetuneSettings, finetune_split, multi_clip_accuracy
from avssl.eval.folds import k_fold_splits
from avssl.eval.vcop import topk_class_recall
from avssl.methods.base import AVEncoders
from avssl.preprocess import preprocess
from avssl.utils.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------
def test_topk_class_recall_hand_computed() -> None:
    # Gallery on the unit circle at angles 0, 30, 60, 90, 180 degrees; labels 0, 1, 1, 2, 0.
    ang = torch.tensor([0.0, 30.0, 60.0, 90.0, 180.0]).deg2rad()
    gallery = torch.stack([ang.cos(), ang.sin()], 1)
    g_labels = torch.tensor([0, 1, 1, 2, 0])
    # Query at 85 deg, label 0: ranking 90(2), 60(1), 30(1), 0(0), 180(0) -> first hit rank 4.
    # Query at 10 deg, label 1: ranking 0(0), 30(1), ... -> first hit rank 2.
    # Query at 100 deg, label 2: ranking 90(2) -> rank 1.
    # Query at 45 deg, label 3: no gallery item of class 3 -> never.
    qa = torch.tensor([85.0, 10.0, 100.0, 45.0]).deg2rad()
    queries = torch.stack([qa.cos(), qa.sin()], 1) * 3.0  # scale: cosine ignores it
    q_labels = torch.tensor([0, 1, 2, 3])
    r = topk_class_recall(queries, q_labels, gallery, g_labels, ks=(1, 2, 3, 4, 50))
    assert r == {1: 0.25, 2: 0.5, 3: 0.5, 4: 0.75, 50: 0.75}


def test_multi_clip_accuracy_differs_from_clip_vote() -> None:
    # Video 0 (label 0): clips prefer class 1 twice by a little, class 0 once by a lot.
    # Per clip: 1 of 3 right; averaged softmax: class 0 (0.9+0.4+0.4)/3 = 0.567 > 0.433.
    # Video 1 (label 1): both clips right.
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    index = torch.tensor([0, 0, 0, 1, 1])
    labels = torch.tensor([0, 0, 0, 1, 1])
    clip_acc, video_acc = multi_clip_accuracy(probs, index, labels)
    assert clip_acc == pytest.approx(3 / 5)
    assert video_acc == 1.0
    # Majority vote of the clips would call video 0 class 1: averaging is what makes it right.
    assert (probs[:3].argmax(1) == 1).sum() == 2


@pytest.mark.parametrize("n,k", [(23, 5), (10, 2), (50, 5)])
def test_stratified_folds(n: int, k: int) -> None:
    labels = np.random.default_rng(0).integers(0, 3, n)
    splits = k_fold_splits(labels, k=k)
    assert len(splits) == k
    tests = [te for _, te in splits]
    assert sorted(np.concatenate(tests).tolist()) == list(range(n))  # disjoint, cover all
    for tr, te in splits:
        assert not set(tr) & set(te) and len(tr) + len(te) == n
    sizes = [len(te) for te in tests]
    assert max(sizes) - min(sizes) <= 1
    for c in range(3):  # stratified: each class spread within 1 over the folds
        per = [int((labels[te] == c).sum()) for te in tests]
        assert max(per) - min(per) <= 1
    again = k_fold_splits(labels, k=k)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))  # deterministic


def test_predefined_folds() -> None:
    folds = [3, 1, 2, 1, 3, 2]
    splits = k_fold_splits(folds=folds)
    assert [te.tolist() for _, te in splits] == [[1, 3], [2, 5], [0, 4]]
    assert splits[0][0].tolist() == [0, 2, 4, 5]
    with pytest.raises(ValueError):
        k_fold_splits(folds=[1, 1])


def test_eval_configs_load() -> None:
    ucf = load_config(ROOT / "configs/eval/ucf101.yaml", require_paths=False)
    assert ucf.optim.lr == 1e-4 and ucf.optim.schedule == "step"
    assert ucf.optim.milestones == [6, 10, 14] and ucf.optim.gamma == 0.3
    assert ucf.train.epochs == 16
    assert load_config(ROOT / "configs/eval/hmdb51.yaml", require_paths=False).train.epochs == 10
    esc = load_config(ROOT / "configs/eval/esc50.yaml", require_paths=False)
    assert esc.data.audio.duration == 2.0 and esc.data.split is None


# ----------------------------------------------------------------------------------------------
# End to end on a tiny synthetic dataset
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evalproto")
    make_synthetic(root / "src", num_videos=12, classes=2, seed=1, duration=1.5, fps=16.0,
                   size=(48, 48), sample_rate=16000, test_fraction=0.34, progress=False)
    preprocess(root / "src", root / "prepared", fps=16.0, short_side=40, sample_rate=16000,
               gop=8, workers=1, progress=False)
    manifest = root / "prepared" / "manifest.jsonl"
    cfg = {
        "seed": 0,
        "data": {"manifest": str(manifest), "split": "train", "eval_split": "test",
                 "batch_size": 4, "num_workers": 0, "require_audio": False,
                 "video": {"num_frames": 4, "fps": 8, "crop_size": 32, "resize": 36},
                 "audio": {"sample_rate": 16000, "duration": 1.0, "feature": "logmel",
                           "n_fft": 512, "hop_length": 160, "n_mels": 32, "num_frames": 100}},
        "model": {"video": {"arch": "r2plus1d", "depth": 10, "width": 4},
                  "audio": {"arch": "audio_cnn", "width": 4},
                  "head": {"hidden": [16], "out_dim": 8}},
        "optim": {"lr": 1e-4, "schedule": "step", "milestones": [1], "gamma": 0.3},
        "train": {"epochs": 1},
    }
    config = root / "eval.yaml"
    config.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    enc = AVEncoders(from_dict(cfg, require_paths=False))
    ckpt = root / "ckpt" / "last.pt"
    ckpt.parent.mkdir()
    save_checkpoint({"model": {f"encoders.{k}": v for k, v in enc.state_dict().items()},
                     "config": cfg}, ckpt)
    return {"config": config, "ckpt": ckpt, "manifest": manifest}


def _args(module: object, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # type: ignore[attr-defined]
    args, extra = parser.parse_known_args(list(argv))  # as avssl.cli: overrides after options
    args.overrides += extra
    return args


def test_finetune_end_to_end(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    args = _args(finetune, str(setup["config"]), "--checkpoint", str(setup["ckpt"]),
                 "--no-progress", "eval.num_test_clips=3", "eval.warmup_epochs=1",
                 "eval.splits=[{train: train, test: test}, {train: train, test: test}]")
    assert finetune.run(args) == 0
    out = setup["ckpt"].with_name("last.finetune_eval.json")
    res = json.loads(out.read_text())
    assert len(res["splits"]) == 2 and res["warmup_epochs"] == 1
    for r in res["splits"]:
        assert 0.0 <= r["clip@1"] <= 1.0 and 0.0 <= r["video@1"] <= 1.0
        assert r["num_test"] > 0 and r["num_classes"] == 2 and len(r["train_loss"]) == 2
    assert res["mean"]["video@1"] == pytest.approx(
        sum(r["video@1"] for r in res["splits"]) / 2)
    assert "Video@1" in capsys.readouterr().out


# overrides for the DDP comparison: one full batch of the 8 training videos per step (so the
# gradient is the same whatever the split over processes), no dropout
DDP_OVERRIDES = ["data.batch_size=8", "eval.dropout=0.0", "eval.num_test_clips=3"]
DDP_RUNS = {"warmup": ["train.epochs=0", "eval.warmup_epochs=2"],
            "finetune": ["train.epochs=2", "eval.warmup_epochs=0"]}


def _finetune_outputs(config: str, ckpt: str, extra: list[str]) -> dict[str, Any]:
    cfg, settings = load_eval_config(config, DDP_OVERRIDES + extra, FinetuneSettings)
    out: dict[str, Any] = {}
    res = finetune_split(cfg, settings, SplitSpec("train", "test"), ckpt, outputs=out)
    return {"result": res, "probs": out["probs"], "video_index": out["video_index"],
            "state": {k: v.detach().clone() for k, v in out["model"].state_dict().items()}}


def _ddp_finetune_worker(r: int, world: int, tmp: str, config: str, ckpt: str) -> None:
    from avssl.utils import distributed as D

    torch.set_num_threads(1)
    os.environ.update(RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r))
    D.init_distributed(backend="gloo", init_method=f"file://{tmp}/store")
    try:
        torch.save({name: _finetune_outputs(config, ckpt, extra)
                    for name, extra in DDP_RUNS.items()}, f"{tmp}/rank{r}.pt")
    finally:
        D.cleanup()


@pytest.mark.slow
def test_finetune_ddp_two_processes(setup: dict[str, Path], tmp_path: Path) -> None:
    """2 gloo processes: the warm-up (frozen encoder in eval mode, full-batch steps) equals a
    single process; fine-tuning keeps every weight identical across the processes; the
    sharded test predictions come back complete and in dataset order."""
    config, ckpt = str(setup["config"]), str(setup["ckpt"])
    mp.spawn(_ddp_finetune_worker, args=(2, str(tmp_path), config, ckpt), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = {name: _finetune_outputs(config, ckpt, extra) for name, extra in DDP_RUNS.items()}
    for name in DDP_RUNS:
        a, b, s = ranks[0][name], ranks[1][name], single[name]
        assert a["result"]["num_processes"] == 2 and s["result"]["num_processes"] == 1
        for k, v in a["state"].items():  # DDP: the processes never drift apart
            assert torch.equal(v, b["state"][k]), (name, k)
        assert torch.equal(a["probs"], b["probs"])
        assert torch.equal(a["video_index"], s["video_index"])  # every clip, dataset order
        assert len(a["probs"]) == 3 * s["result"]["num_test"]
    w, s = ranks[0]["warmup"], single["warmup"]
    assert not torch.allclose(w["state"]["classifier.fc.weight"],
                              _finetune_outputs(config, ckpt, ["train.epochs=0",
                                                               "eval.warmup_epochs=0"])
                              ["state"]["classifier.fc.weight"])  # the warm-up did train
    for k, v in s["state"].items():
        torch.testing.assert_close(w["state"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(w["probs"], s["probs"], rtol=1e-5, atol=1e-6)
    assert w["result"]["clip@1"] == s["result"]["clip@1"]


def test_vcop_retrieval_end_to_end(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ret.json"
    args = _args(vcop, str(setup["config"]), "--checkpoint", str(setup["ckpt"]), "--out",
                 str(out), "--no-progress", "eval.num_clips=2")
    assert vcop.run(args) == 0
    res = json.loads(out.read_text())
    rec = [res["mean"][f"R@{k}"] for k in (1, 5, 10, 20, 50)]
    assert all(0.0 <= v <= 1.0 for v in rec) and rec == sorted(rec)
    assert rec[-1] == 1.0  # gallery smaller than 50 and holds both classes


def test_audio_eval_end_to_end(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "audio.json"
    args = _args(audio_eval, str(setup["config"]), "--checkpoint", str(setup["ckpt"]),
                 "--out", str(out), "data.split=null", "eval.folds=2", "eval.num_crops=3",
                 "eval.layers=[conv4x, conv5x]", "eval.max_iter=30")
    assert audio_eval.run(args) == 0
    res = json.loads(out.read_text())
    assert res["num_folds"] == 2 and res["num_clips"] == 12 and res["num_crops"] == 3
    assert res["fold_source"].startswith("stratified")
    for layer in ("conv4x", "conv5x"):
        accs = res["layers"][layer]["folds"]
        assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    assert res["best"]["layer"] in ("conv4x", "conv5x")


def _audio_eval_on(setup: dict[str, Path], tmp_path: Path, manifest: Path, *extra: str
                   ) -> dict:
    """``avssl eval audio`` on an audio manifest with the tiny encoders; the results JSON."""
    out = tmp_path / "a.json"
    args = _args(audio_eval, str(setup["config"]), "--checkpoint", str(setup["ckpt"]),
                 "--out", str(out), f"data.manifest={manifest}", "data.split=null",
                 "eval.num_crops=2", "eval.layers=[conv5x]", "eval.max_iter=20", *extra)
    assert audio_eval.run(args) == 0
    return json.loads(out.read_text())


def test_audio_eval_uses_fold_column(setup: dict[str, Path], tmp_path: Path) -> None:
    # An audio-only manifest (no video `path`) with ESC-50 style fold ids.
    src = [json.loads(x) for x in setup["manifest"].read_text().splitlines() if x.strip()]
    rows = [{"id": r["id"], "audio_path": str(setup["manifest"].parent / r["audio_path"]),
             "label": f"class{r['label']}", "fold": 1 + i % 3} for i, r in enumerate(src)]
    manifest = tmp_path / "audio.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _audio_eval_on(setup, tmp_path, manifest)
    assert res["fold_source"] == "fold" and res["num_folds"] == 3


# ----------------------------------------------------------------------------------------------
# Audio benchmark layouts (avssl audio-manifest)
# ----------------------------------------------------------------------------------------------
def _benchmark_audio(setup: dict[str, Path], root: Path) -> list[tuple[str, str]]:
    """Copy the tiny dataset's wavs to ``root/audio``; (relative path, label) per clip."""
    import shutil

    src = [json.loads(x) for x in setup["manifest"].read_text().splitlines() if x.strip()]
    (root / "audio").mkdir(parents=True)
    out = []
    for r in src:
        name = f"audio/{Path(r['id']).name}.wav"
        shutil.copy(setup["manifest"].parent / r["audio_path"], root / name)
        out.append((name, f"scene{r['label']}"))
    return out


def test_dcase_cross_validation_layout(setup: dict[str, Path], tmp_path: Path) -> None:
    from avssl.eval.audio_datasets import write_audio_manifest

    root = tmp_path / "dcase2016"
    clips = _benchmark_audio(setup, root)
    (root / "evaluation_setup").mkdir()
    for k in (1, 2):  # clip i is evaluated in fold 1 + i % 2, trained on in the other
        test = [c for i, c in enumerate(clips) if i % 2 == k - 1]
        train = [c for c in clips if c not in test]
        for part, rows in (("train", train), ("evaluate", test)):
            (root / "evaluation_setup" / f"fold{k}_{part}.txt").write_text(
                "".join(f"{n}\t{lab}\n" for n, lab in rows))
    manifest = tmp_path / "out" / "dcase.jsonl"
    rows = write_audio_manifest("dcase", root, manifest)
    assert len(rows) == len(clips) and all("fold" in r and "split" not in r for r in rows)
    by_id = {r["id"]: r for r in rows}
    for i, (name, label) in enumerate(clips):
        r = by_id[Path(name).stem]
        assert r["fold"] == 1 + i % 2 and r["label"] == label
        assert (manifest.parent / r["audio_path"]).resolve() == (root / name).resolve()
    res = _audio_eval_on(setup, tmp_path, manifest)
    assert res["fold_source"] == "fold" and res["num_folds"] == 2 and res["num_classes"] == 2


def test_dcase_single_split_layout(setup: dict[str, Path], tmp_path: Path) -> None:
    from avssl.eval.audio_datasets import write_audio_manifest

    root = tmp_path / "dcase2018"
    clips = _benchmark_audio(setup, root)
    train, test, unlisted = clips[:6], clips[6:10], clips[10:]
    (root / "evaluation_setup").mkdir()
    for part, rows in (("train", train), ("evaluate", test)):
        (root / "evaluation_setup" / f"fold1_{part}.csv").write_text(
            "filename\tscene_label\n" + "".join(f"{n}\t{lab}\n" for n, lab in rows))
    manifest = tmp_path / "dcase.jsonl"
    rows = write_audio_manifest("dcase", root, manifest)
    assert sorted(r["id"] for r in rows) == sorted(Path(n).stem for n, _ in train + test)
    assert {r["id"] for r in rows if r["split"] == "test"} == {Path(n).stem for n, _ in test}
    assert unlisted and "fold" not in rows[0]
    res = _audio_eval_on(setup, tmp_path, manifest, "eval.train_split=train",
                         "eval.test_split=test")
    assert res["fold_source"] == "split train -> test" and res["num_folds"] == 1
    assert res["num_clips"] == 10
    # the DCASE 2014 lists of the AVID-CMA code: train.txt / test.txt at the root
    (root / "evaluation_setup" / "fold1_train.csv").unlink()
    (root / "evaluation_setup" / "fold1_evaluate.csv").unlink()
    (root / "evaluation_setup").rmdir()
    for part, rows_ in (("train", train), ("test", test)):
        (root / f"{part}.txt").write_text("".join(f"{n} {lab[-1]}\n" for n, lab in rows_))
    rows = write_audio_manifest("dcase", root, manifest)
    assert [r["split"] for r in rows] == ["train"] * 6 + ["test"] * 4
    assert {r["label"] for r in rows} == {"0", "1"}
    bad = _args(audio_eval, str(setup["config"]), "--out", str(tmp_path / "bad.json"),
                f"data.manifest={manifest}", "data.split=null", "eval.train_split=train",
                "eval.test_split=val")
    with pytest.raises(ValueError, match=r"no rows with split 'val' \(have \['test', 'train'\]\)"):
        audio_eval.run(bad)


def test_esc50_layout_and_errors(setup: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    from avssl.cli import main

    root = tmp_path / "ESC-50-master"
    clips = _benchmark_audio(setup, root)
    (root / "meta").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    lines += [f"{Path(n).name},{1 + i % 5},{lab[-1]},cat{lab[-1]},False,x,A"
              for i, (n, lab) in enumerate(clips)]
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    manifest = tmp_path / "esc50.jsonl"
    assert main(["audio-manifest", "esc50", str(root), "--out", str(manifest)]) == 0
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert len(rows) == len(clips) and {r["fold"] for r in rows} == {1, 2, 3, 4, 5}
    assert all(isinstance(r["label"], int) for r in rows)
    assert "5 folds" not in capsys.readouterr().out  # printed as "folds 1, 2, 3, 4, 5"
    (root / clips[3][0]).unlink()
    assert main(["audio-manifest", "esc50", str(root), "--out", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "esc50.csv:5:" in err and Path(clips[3][0]).name in err
    assert main(["audio-manifest", "dcase", str(root), "--out", str(manifest)]) == 2
    assert "evaluation_setup" in capsys.readouterr().err


@pytest.mark.parametrize("config,protocols", [
    ("ucf101.yaml", ("finetune", "retrieval")), ("hmdb51.yaml", ("finetune", "retrieval")),
    ("esc50.yaml", ("audio",)), ("dcase.yaml", ("audio",)),
    ("synthetic_linear.yaml", ("linear", "knn"))])
def test_eval_configs_settings_validate(config: str, protocols: tuple[str, ...]) -> None:
    """Every shipped eval config's `eval` section is valid for the protocols it documents."""
    from avssl.eval.knn import KnnSettings
    from avssl.eval.linear import LinearSettings

    classes = {"finetune": FinetuneSettings, "retrieval": vcop.RetrievalSettings,
               "audio": audio_eval.AudioEvalSettings, "linear": LinearSettings,
               "knn": KnnSettings}
    for protocol in protocols:
        _, settings = load_eval_config(ROOT / "configs" / "eval" / config, [], classes[protocol],
                                       require_paths=False)
        assert isinstance(settings, classes[protocol])
    if config == "dcase.yaml":
        assert (settings.train_split, settings.test_split) == ("train", "test")
