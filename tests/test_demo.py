"""The demo's evaluation steps: localization on the held-out videos and the off-screen check
(each video's frames with another video's soundtrack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from avfixtures import TINY_MODEL

from avssl import demo
from avssl.config import from_dict, to_dict
from avssl.data.audio import compute_audio_stats, save_stats
from avssl.data.manifest import read_manifest, resolve
from avssl.utils.checkpoint import save_checkpoint


def _row(i: int, label: int, in_view: list[int], audio: bool = True) -> dict:
    return {"id": f"v{i}", "path": f"videos/v{i}.mp4", "label": label, "labels_in_view": in_view,
            "boxes": {"fps": 16.0, "xyxy": [[0, 0, 1, 1]]}, "has_audio": audio,
            "audio_path": f"audio/v{i}.wav" if audio else None, "sample_rate": 16000,
            "audio_rms_db": -20.0 - i, "audio_stream": 1 if audio else None, "split": "test"}


def test_offscreen_rows_pair_each_video_with_a_sound_not_in_view():
    rows = [_row(0, 0, [0, 1]), _row(1, 1, [1]), _row(2, 0, [0]), _row(3, 2, [2, 0]),
            _row(4, 1, [1, 2], audio=False)]
    out = demo.offscreen_rows(rows)
    by_id = {r["id"]: r for r in rows}
    # v0 shows 0 and 1: v1 (1) and v2 (0) are in view, v3 (class 2) is the first that is not
    assert [(r["id"], r["audio_from"]) for r in out] == [
        ("v0", "v3"), ("v1", "v2"), ("v2", "v1"), ("v4", "v0")]
    # v3 shows 2 and 0: v4 has no audio, v0 and v2 are class 0, v1 (class 1) is already used
    for r in out:
        partner = by_id[r["audio_from"]]
        assert partner["label"] not in by_id[r["id"]]["labels_in_view"]
        assert "boxes" not in r and r["path"] == by_id[r["id"]]["path"]
        assert r["label"] == by_id[r["id"]]["label"]
        for c in demo.AUDIO_COLUMNS:
            assert r.get(c) == partner.get(c)
    assert len({r["audio_from"] for r in out}) == len(out)  # each soundtrack used once
    assert demo.offscreen_rows([_row(0, 0, [0]), _row(1, 0, [0])]) == []


def test_demo_localization_and_offscreen_check(tmp_path: Path):
    """Both localization passes of the demo on real encoded files: the off-screen pass reuses
    the in-view calibration, reads the swapped soundtracks, and its counts are its outcomes."""
    from avssl.data.synthetic import make_synthetic
    from avssl.methods import build_method
    from avssl.preprocess import preprocess

    # 3 classes, one object per video: every held-out video has a partner of another class
    make_synthetic(tmp_path / "src", num_videos=9, classes=3, seed=1, duration=1.5, fps=16.0,
                   size=(48, 48), sample_rate=16000, test_fraction=0.5, distractors=(0, 0),
                   progress=False)
    preprocess(tmp_path / "src", tmp_path / "prepared", fps=16.0, short_side=40,
               sample_rate=16000, gop=8, workers=1, progress=False)
    tiny_prepared = tmp_path / "prepared" / "manifest.jsonl"
    cfg = from_dict(TINY_MODEL, require_paths=False)
    stats = tmp_path / "audio_stats.npz"
    save_stats(stats, *compute_audio_stats(tiny_prepared, cfg.data))
    ckpt = tmp_path / "runs" / "cma" / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    torch.manual_seed(0)
    save_checkpoint({"model": build_method(cfg, 8).state_dict(), "config": to_dict(cfg)}, ckpt)

    loc = demo._localize(tiny_prepared, tmp_path, stats)
    off = demo._offscreen(tiny_prepared, tmp_path, stats)

    swapped = read_manifest(tiny_prepared.parent / "manifest_offscreen.jsonl")
    test = {r["id"]: r for r in read_manifest(tiny_prepared.parent / "manifest_test.jsonl")}
    assert swapped == sorted(demo.offscreen_rows(sorted(test.values(), key=lambda r: r["id"])),
                             key=lambda r: r["id"])
    assert len(swapped) == len(test) >= 3
    summary = json.loads((tmp_path / "localization_offscreen" / "summary.json").read_text())
    assert summary["calibration"] == {**loc["calibration"], "source": "file",
                                      "note": summary["calibration"]["note"]}
    assert summary["localization"] is None and summary["source_decision"] is None  # no boxes
    assert off is not None and off["videos_off_screen"] == len(swapped)
    assert off["false_source_videos"] == summary["counts"]["localized"]
    source = audible = 0
    for v, row in zip(summary["videos"], swapped):
        result = json.loads((tmp_path / "localization_offscreen" / v["dir"] / "result.json")
                            .read_text())
        source += result["decisions"].get("source", 0)
        audible += sum(result["decisions"].values()) - result["decisions"].get("silent audio", 0)
        partner = test[row["audio_from"]]
        assert resolve(tiny_prepared.parent / "manifest_offscreen.jsonl", row["audio_path"]) == \
            resolve(tiny_prepared, partner["audio_path"])
    assert (off["false_source_clips"], off["clips_off_screen"]) == (source, audible)


class _Stop(Exception):
    pass


def _avid_overrides(tmp_path: Path, monkeypatch, *argv: str) -> list[str]:
    """The overrides `avssl demo ARGV` trains AVID with (every step before it stubbed out)."""
    import argparse

    import avssl.data.synthetic

    seen: list[str] = []

    def fake_train(config, out, name, overrides, fresh):
        seen.extend(overrides)
        raise _Stop

    prepared = tmp_path / "prepared"
    prepared.mkdir(exist_ok=True)
    (prepared / "audio_stats.npz").touch()  # the statistics step is skipped
    monkeypatch.setattr(avssl.data.synthetic, "make_synthetic", lambda *a, **k: None)
    monkeypatch.setattr(demo, "prepare", lambda *a: prepared / "manifest.jsonl")
    monkeypatch.setattr(demo, "_train", fake_train)
    monkeypatch.setattr(demo, "set_threads", lambda n: {  # leave torch's threads alone
        "torch_threads": 2, "torch": "", "cpu_capability": "", "machine": "", "processor": ""})
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    with pytest.raises(_Stop):
        demo.run(parser.parse_args(["--out", str(tmp_path), *argv]))
    return seen


def test_avid_epochs_reaches_the_avid_config(tmp_path: Path, monkeypatch, capsys):
    assert "train.epochs=40" in _avid_overrides(tmp_path, monkeypatch, "--avid-epochs", "40")
    plain = _avid_overrides(tmp_path, monkeypatch)
    assert plain and not any(o.startswith("train.epochs") for o in plain)
    from avssl.cli import main

    for bad in ("0", "x"):
        with pytest.raises(SystemExit) as e:
            main(["demo", "--avid-epochs", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].endswith(f"argument --avid-epochs: must be an integer >= 1, got {bad!r}")
