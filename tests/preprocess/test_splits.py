"""`avssl splits`: official UCF-101 / HMDB-51 split lists -> meta files and per-split manifests
that preprocessing and the eval configs (configs/eval/ucf101.yaml, hmdb51.yaml) accept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avssl.cli import main
from avssl.data.dataset import AVClipDataset
from avssl.data.manifest import make_id, read_manifest, write_manifest
from avssl.data.writer import write_av
from avssl.eval.common import load_eval_config
from avssl.eval.finetune import FinetuneSettings
from avssl.preprocess import preprocess, scan_videos
from avssl.preprocess.scan import load_meta

ROOT = Path(__file__).resolve().parents[2]
UCF_CLASSES = ("ApplyEyeMakeup", "YoYo")
# (relative path, the split each official split puts it in)
UCF_VIDEOS = {
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": ("test", "train", "train"),
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi": ("train", "test", "train"),
    "YoYo/v_YoYo_g01_c01.avi": ("test", "train", "test"),
    "YoYo/v_YoYo_g08_c02.avi": ("train", "train", "test"),
}


def write_ucf_lists(d: Path, crlf: bool = True) -> Path:
    """An ucfTrainTestlist/ in the official format (CRLF line ends, as distributed)."""
    d.mkdir(parents=True, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    (d / "classInd.txt").write_text(
        "".join(f"{i} {c}{end}" for i, c in enumerate(UCF_CLASSES, 1)))
    for k in (1, 2, 3):
        train = [f"{p} {UCF_CLASSES.index(p.split('/')[0]) + 1}{end}"
                 for p, s in UCF_VIDEOS.items() if s[k - 1] == "train"]
        test = [f"{p}{end}" for p, s in UCF_VIDEOS.items() if s[k - 1] == "test"]
        (d / f"trainlist0{k}.txt").write_text("".join(train))
        (d / f"testlist0{k}.txt").write_text("".join(test))
    return d


def tiny_clip(path: Path, seed: int) -> None:
    """A real 0.5 s, 32x32 encoded clip (no audio: UCF-101 eval is video-only)."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(8)]
    write_av(path, frames, 16.0)


def splits(*argv: str) -> int:
    return main(["splits", *map(str, argv)])


def one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("avssl splits: error: "), err
    for n in needles:
        assert n in err, err
    return err


def test_ucf101_meta_through_preprocess_into_the_eval_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lists = write_ucf_lists(tmp_path / "ucf101" / "ucfTrainTestlist")
    src = tmp_path / "ucf101" / "UCF-101"
    for i, rel in enumerate(UCF_VIDEOS):
        tiny_clip(src / rel, i)
    meta = tmp_path / "ucf101" / "meta.jsonl"
    assert splits("ucf101", lists, "--out", meta) == 0
    assert "2 train1, 2 test1; 2 classes" in capsys.readouterr().out
    # Meta paths are the relative paths preprocess scans, so its ids come out the same.
    assert set(load_meta(meta)) == set(scan_videos(src)) == set(UCF_VIDEOS)

    dst = tmp_path / "prepared" / "ucf101"
    summary = preprocess(src, dst, short_side=32, meta=meta, progress=False)
    assert summary.ok == 4 and summary.meta_unmatched == 0
    manifest = dst / "manifest.jsonl"
    rows = {r["id"]: r for r in read_manifest(manifest)}
    assert set(rows) == {make_id(rel) for rel in UCF_VIDEOS}
    for rel, s in UCF_VIDEOS.items():
        assert rows[make_id(rel)]["split"] == f"{s[0]}1"
        assert rows[make_id(rel)]["label"] == rel.split("/")[0]

    # Splits 2 and 3: re-split copies, one beside the manifest, one elsewhere (paths rebased).
    m2, m3 = dst / "manifest_split2.jsonl", tmp_path / "elsewhere" / "split3.jsonl"
    assert splits("ucf101", lists, "--split", "2", "--manifest", manifest, "--out", m2) == 0
    assert splits("ucf101", lists, "--split", "3", "--manifest", manifest, "--out", m3) == 0
    capsys.readouterr()

    # The shipped config, as users run it, with the three official splits.
    spec = ("[{train: train1, test: test1}, "
            f"{{train: train2, test: test2, manifest: {m2}}}, "
            f"{{train: train3, test: test3, manifest: {m3}}}]")
    cfg, settings = load_eval_config(ROOT / "configs/eval/ucf101.yaml",
                                     [f"data.manifest={manifest}", f"eval.splits={spec}"],
                                     FinetuneSettings)
    assert (cfg.data.split, cfg.data.eval_split) == ("train1", "test1")
    assert len(settings.splits) == 3
    for k, s in enumerate(settings.splits, 1):
        for name, kind in ((s.train, "train"), (s.test, "test")):
            ds = AVClipDataset(s.manifest or cfg.data.manifest, cfg.data, split=name,
                               train=kind == "train")
            want = {make_id(rel) for rel, sp in UCF_VIDEOS.items() if sp[k - 1] == kind}
            assert {r["id"] for r in ds.rows} == want, (k, kind)
            assert all(ds.video_path(i).is_file() for i in range(ds.num_videos))
            assert ds.classes == list(UCF_CLASSES)
    clip = ds[0]["video"]  # decodes through the rebased path
    assert clip.shape[1] == cfg.data.video.num_frames


def _hmdb_lists(d: Path, files: dict[str, str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


HMDB = {  # <class>_test_split<K>.txt; names with characters make_id replaces
    "brush_hair_test_split1.txt": "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
                                  "Blonde_(1)_brush_hair_f_nm_np1_fr_goo_0.avi 2 \n"
                                  "#20_brush_hair_u_cm_np1_ba_med_0.avi 0 \n",
    "brush_hair_test_split2.txt": "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 2\n"
                                  "Blonde_(1)_brush_hair_f_nm_np1_fr_goo_0.avi 1\n"
                                  "#20_brush_hair_u_cm_np1_ba_med_0.avi 1\n",
    "kick_ball_test_split1.txt": "Goal_kick_ball_f_cm_np1_ba_bad_0.avi 2\n",
    "kick_ball_test_split2.txt": "Goal_kick_ball_f_cm_np1_ba_bad_0.avi 0\n",
}


def test_hmdb51_flags_and_manifest_by_id(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    lists = _hmdb_lists(tmp_path / "testTrainMulti_7030_splits", HMDB)
    meta = tmp_path / "meta.jsonl"
    assert splits("hmdb51", lists, "--out", meta) == 0
    assert "1 train1, 2 test1, 1 unused; 2 classes" in capsys.readouterr().out
    rows = {r["path"]: r for r in map(json.loads, meta.read_text().splitlines())}
    assert rows["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"] == {
        "path": "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "label": "brush_hair",
        "split": "train1"}
    assert rows["kick_ball/Goal_kick_ball_f_cm_np1_ba_bad_0.avi"]["split"] == "test1"
    assert "split" not in rows["brush_hair/#20_brush_hair_u_cm_np1_ba_med_0.avi"]  # 0: unused
    # The ids preprocess gives these paths (it scans SRC = videos/<class>/<name>.avi).
    src = tmp_path / "videos"
    for rel in rows:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"")
    assert set(load_meta(meta)) == set(scan_videos(src))

    # A prepared manifest (rows keyed by id only, no `source`) re-split to split 2.
    prepared = tmp_path / "prepared" / "hmdb51"
    base: dict[str, Any] = {"duration": 1.0, "fps": 16.0, "num_frames": 16, "width": 32,
                            "height": 32, "has_audio": False, "audio_path": None,
                            "sample_rate": None}
    write_manifest(prepared / "manifest.jsonl", [
        {**base, "id": make_id(rel), "path": f"videos/{make_id(rel)}.mp4", "split": "train1"}
        for rel in rows])
    out = tmp_path / "m2" / "manifest.jsonl"
    assert splits("hmdb51", lists, "--split", "2", "--manifest",
                  prepared / "manifest.jsonl", "--out", out) == 0
    capsys.readouterr()
    got = {r["id"]: r for r in read_manifest(out)}
    assert got[make_id("brush_hair/Blonde_(1)_brush_hair_f_nm_np1_fr_goo_0.avi")]["split"] \
        == "train2"
    assert "split" not in got[make_id("kick_ball/Goal_kick_ball_f_cm_np1_ba_bad_0.avi")]
    first = got[make_id("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi")]
    assert first["split"] == "test2" and first["label"] == "brush_hair"
    assert (out.parent / first["path"]).resolve() == (prepared / "videos" / (
        make_id("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi") + ".mp4")).resolve()
    cfg, _ = load_eval_config(ROOT / "configs/eval/hmdb51.yaml", [f"data.manifest={out}"],
                              FinetuneSettings)
    ds = AVClipDataset(out, cfg.data, split="train2")
    assert ds.num_videos == 2 and ds.classes == ["brush_hair", "kick_ball"]


def test_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lists = write_ucf_lists(tmp_path / "ucfTrainTestlist", crlf=False)
    out = tmp_path / "meta.jsonl"
    assert splits("kinetics", lists, "--out", out) == 2
    one_line_error(capsys, "unknown format 'kinetics'", "ucf101, hmdb51")
    assert splits("ucf101", tmp_path / "nope", "--out", out) == 2
    one_line_error(capsys, "nope: not a folder", "ucfTrainTestlist")
    assert splits("ucf101", lists, "--split", "4", "--out", out) == 2
    one_line_error(capsys, "--split must be one of 1, 2, 3")
    (lists / "testlist03.txt").unlink()
    assert splits("ucf101", lists, "--split", "3", "--out", out) == 2
    one_line_error(capsys, "testlist03.txt: not found")
    # a video in both lists of one split
    with (lists / "testlist01.txt").open("a") as f:
        f.write("YoYo/v_YoYo_g08_c02.avi\n")
    assert splits("ucf101", lists, "--out", out) == 2
    one_line_error(capsys, "testlist01.txt:3", "listed twice")
    (lists / "testlist01.txt").write_text("Knitting/v_Knitting_g01_c01.avi\n")
    assert splits("ucf101", lists, "--out", out) == 2
    one_line_error(capsys, "testlist01.txt:1", "'Knitting' is not in classInd.txt")
    (lists / "trainlist02.txt").write_text("YoYo/v_YoYo_g08_c02.avi 1\n")
    assert splits("ucf101", lists, "--split", "2", "--out", out) == 2
    one_line_error(capsys, "trainlist02.txt:1", "class index 1", "gives 2")
    write_ucf_lists(lists, crlf=False)  # valid again
    assert splits("ucf101", lists, "--manifest", tmp_path / "missing.jsonl", "--out", out) == 2
    one_line_error(capsys, "missing.jsonl")

    hmdb = _hmdb_lists(tmp_path / "hmdb", {k: v for k, v in HMDB.items()
                                           if k != "kick_ball_test_split2.txt"})
    assert splits("hmdb51", hmdb, "--split", "2", "--out", out) == 2
    one_line_error(capsys, "kick_ball_test_split2.txt: not found")
    (hmdb / "kick_ball_test_split2.txt").write_text("Goal_kick_ball_f_cm_np1_ba_bad_0.avi 3\n")
    assert splits("hmdb51", hmdb, "--split", "2", "--out", out) == 2
    one_line_error(capsys, "kick_ball_test_split2.txt:1", "<0|1|2>")
    assert splits("hmdb51", tmp_path, "--out", out) == 2
    one_line_error(capsys, "no <class>_test_split<K>.txt files")
    assert not out.exists()


def test_dataset_docs_use_the_configs_paths() -> None:
    """datasets/ names the manifests and run folders the shipped configs read (the configs are
    what users run)."""
    import yaml

    from avssl.config import load_config

    readme = (ROOT / "datasets" / "README.md").read_text()
    prepared = {}
    for f in sorted((ROOT / "configs").rglob("*.yaml")):
        cfg = load_config(f, [], require_paths=False)
        if cfg.data.manifest.startswith("prepared/"):
            prepared[cfg.data.manifest] = f
            assert cfg.data.manifest in readme, f"{f}: {cfg.data.manifest} not in the README"
        if cfg.train.init_from and cfg.train.init_from.startswith("runs/"):
            run_dir = cfg.train.init_from.split("/checkpoints/")[0]
            assert run_dir in readme, f"{f}: {run_dir} not in the README"
    assert len(prepared) >= 5
    for f in sorted((ROOT / "datasets").glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        if "prepared" in doc:
            assert doc["prepared"] in prepared, f"{f}: prepared {doc['prepared']} read by no config"
            assert doc["prepared"].rsplit("/", 1)[0] in doc["preprocess"], f
