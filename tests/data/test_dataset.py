"""AVClipDataset and build_loader on a small prepared dataset of real encoded files."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from avfixtures import audio_position, make_prepared, read_code

from avssl.config import AudioConfig, DataConfig, VideoConfig
from avssl.data.dataset import AVClipDataset, build_loader
from avssl.data.manifest import ManifestError

GREYS = {"a0": 40, "a1": 80, "a2": 120, "a3": 160, "b0": 200, "t0": 230}
SPECS = [
    {"id": "a2", "seconds": 3.0, "label": "dog", "split": "train"},
    {"id": "a0", "seconds": 3.0, "label": "cat", "split": "train"},
    {"id": "a1", "seconds": 2.5, "label": "dog", "split": "train"},
    {"id": "a3", "seconds": 4.0, "split": "train"},  # no label
    {"id": "b0", "seconds": 3.0, "label": "cat", "split": "train", "audio": False},
    {"id": "t0", "seconds": 3.0, "label": "bird", "split": "test"},
]
CFG = DataConfig(video=VideoConfig(num_frames=4, crop_size=32, resize=36),
                 audio=AudioConfig(), max_failure_fraction=0.0)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    return make_prepared(root, [dict(s, grey=GREYS[s["id"]]) for s in SPECS])


def _grey_of(video: torch.Tensor) -> float:
    """Background grey level (0-255) of a test-mode clip (3, T, h, w), from its bottom half."""
    mean = torch.tensor(CFG.video.mean).view(3, 1, 1, 1)
    std = torch.tensor(CFG.video.std).view(3, 1, 1, 1)
    return float((video * std + mean)[:, :, 20:].mean() * 255)


def test_rows_index_labels_and_require_audio(manifest: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="avssl.data.dataset"):
        ds = AVClipDataset(manifest, CFG, train=False)
    assert "skipping 1 of 5 videos without audio" in caplog.text
    assert [r["id"] for r in ds.rows] == ["a0", "a1", "a2", "a3"]  # sorted, split, with audio
    assert ds.num_videos == len(ds) == 4
    assert ds.classes == ["bird", "cat", "dog"]  # from every split, so test maps alike
    for v, rid in enumerate(["a0", "a1", "a2", "a3"]):
        item = ds[v]
        assert int(item["index"]) == v
        assert _grey_of(item["video"]) == pytest.approx(GREYS[rid], abs=4)
    assert [int(ds[v]["label"]) for v in range(4)] == [1, 2, 2, -1]

    test = AVClipDataset(manifest, CFG, split="test", train=False)
    assert [r["id"] for r in test.rows] == ["t0"] and int(test[0]["label"]) == 0
    everything = AVClipDataset(manifest, CFG, split=None, require_audio=False)
    assert everything.num_videos == 6
    with pytest.raises(ManifestError, match=r"manifest\.jsonl: no rows in split 'val'"):
        AVClipDataset(manifest, CFG, split="val")
    with pytest.raises(ManifestError, match=r"nowhere\.jsonl: manifest not found"):
        AVClipDataset(manifest.parent / "nowhere.jsonl", CFG)


def test_video_only_policy(manifest: Path) -> None:
    ds = AVClipDataset(manifest, CFG, require_audio=False)
    assert ds.num_videos == 5
    item = ds[4]  # b0, no audio
    assert "audio" not in item and "has_audio" not in item
    assert item["video"].shape == (3, 4, 32, 32)
    both = AVClipDataset(manifest, CFG, require_audio=False, return_audio=True)
    silent, sound = both[4], both[0]
    assert silent["audio"].shape == sound["audio"].shape == (1, 200, 257)
    assert not bool(silent["has_audio"]) and bool(sound["has_audio"])
    assert float(silent["audio"].std()) == 0.0  # spectrogram of silence


def test_item_timing_matches_content(manifest: Path) -> None:
    ds = AVClipDataset(manifest, CFG, train=True, seed=3)
    for i in range(len(ds)):
        item = ds[i]
        t = ds.timing(i, 0, np.random.default_rng([3, 0, i]))
        assert float(item["video_start"]) == pytest.approx(t.video_start, abs=1e-6)
        assert float(item["audio_start"]) == pytest.approx(t.audio_start, abs=1e-6)
        assert float(item["offset_s"]) == pytest.approx(t.offset_s, abs=1e-6)
        frames, wave = ds.decode(i, t)
        assert [read_code(f) for f in frames] == t.frame_indices.tolist()
        assert t.frame_indices[0] == round(t.video_start * 16)
        assert wave is not None and audio_position(wave[0]) == round(t.audio_start * 24000)


def test_batches_through_workers_and_determinism(manifest: Path) -> None:
    ds = AVClipDataset(manifest, CFG, train=True, seed=7, clips_per_video=2)
    assert len(ds) == 8
    ds[0]  # the parent holds open decoders when the workers fork (they must not touch them)
    loader = build_loader(ds, batch_size=3, num_workers=2, shuffle=False, drop_last=False,
                          seed=0)
    assert loader.persistent_workers
    batches = list(loader)
    b = batches[0]
    assert set(b) == {"video", "audio", "index", "label", "video_start", "audio_start",
                      "offset_s"}
    assert b["video"].shape == (3, 3, 4, 32, 32) and b["video"].dtype == torch.float32
    assert b["audio"].shape == (3, 1, 200, 257) and b["audio"].dtype == torch.float32
    assert b["index"].dtype == torch.long and b["label"].dtype == torch.long
    assert b["offset_s"].dtype == torch.float32
    index = torch.cat([x["index"] for x in batches])
    assert index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # item i -> video i // clips_per_video
    # Same samples as the main process (worker count does not matter), per item.
    for k in (0, 5, 7):
        ref = ds[k]
        got = batches[k // 3]
        for key in ("video", "audio", "offset_s"):
            assert torch.equal(got[key][k % 3], ref[key]), (k, key)
    # Two clips of one video differ (each item has its own draw).
    assert not torch.equal(ds[0]["video"], ds[1]["video"])
    # set_epoch reaches the persistent workers and changes the draws.
    loader.set_epoch(1)
    epoch1 = torch.cat([x["offset_s"] for x in loader])
    ds_main = AVClipDataset(manifest, CFG, train=True, seed=7, clips_per_video=2)
    ds_main.set_epoch(1)
    assert torch.equal(epoch1, torch.stack([ds_main[i]["offset_s"] for i in range(8)]))
    assert not torch.equal(epoch1, torch.cat([x["offset_s"] for x in batches]))
    del loader


def test_shuffled_loader_is_a_seeded_permutation(manifest: Path) -> None:
    ds = AVClipDataset(manifest, CFG, train=False)
    loader = build_loader(ds, batch_size=4, num_workers=0, shuffle=True, drop_last=False, seed=1)
    order0 = [int(i) for b in loader for i in b["index"]]
    again = [int(i) for b in loader for i in b["index"]]
    loader.set_epoch(1)
    order1 = [int(i) for b in loader for i in b["index"]]
    assert sorted(order0) == [0, 1, 2, 3] and order0 == again
    assert sorted(order1) == [0, 1, 2, 3]


def test_uniform_clips(manifest: Path) -> None:
    ds = AVClipDataset(manifest, CFG, train=False, clip_mode="uniform", clips_per_video=3)
    assert len(ds) == 12
    starts = [float(ds[i]["video_start"]) for i in range(9, 12)]  # a3, 4 s = 64 frames
    assert starts == pytest.approx([0.0, 30 / 16, 60 / 16])
    assert torch.equal(ds[9]["video"], ds[9]["video"])  # deterministic in test mode


def _corrupt_dataset(root: Path, n_bad: int) -> Path:
    specs = [{"id": f"v{i}", "seconds": 2.0, "grey": 40 + 20 * i} for i in range(6)]
    for s in specs[:n_bad]:
        s["corrupt"] = True
    return make_prepared(root, specs)


def test_corrupt_file_is_replaced_and_logged(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    manifest = _corrupt_dataset(tmp_path, 1)
    cfg = dataclasses.replace(CFG, max_failure_fraction=0.2, split=None)  # 1 of 6 allowed
    ds = AVClipDataset(manifest, cfg, train=False)
    with caplog.at_level(logging.WARNING, logger="avssl.data.dataset"):
        item = ds[0]
    assert "v0.mp4" in caplog.text and "replacing the sample" in caplog.text
    v = int(item["index"])
    assert v != 0 and _grey_of(item["video"]) == pytest.approx(40 + 20 * v, abs=4)
    assert int(ds[0]["index"]) == v  # the replacement is deterministic
    assert list(ds.failed) == [0]  # one distinct failed video, however often it is hit
    assert int(ds[3]["index"]) == 3


def test_too_many_corrupt_files_raise(tmp_path: Path) -> None:
    manifest = _corrupt_dataset(tmp_path, 2)
    cfg = dataclasses.replace(CFG, max_failure_fraction=0.2, split=None)
    ds = AVClipDataset(manifest, cfg, train=False)
    # The first failure is tolerated (replaced); the second distinct one raises.
    with pytest.raises(RuntimeError, match=r"2 of 6 videos failed.*1 allowed") as e:
        for i in range(len(ds)):
            ds[i]
    msg = str(e.value)
    assert re.search(r"v[01]\.mp4: InvalidDataError", msg), msg
    assert "max_failure_fraction=0.2" in msg and "avssl preprocess" in msg
    assert sorted(ds.failed) == [0, 1]
    # Fraction 0: the first failure raises.
    strict = AVClipDataset(manifest, dataclasses.replace(cfg, max_failure_fraction=0.0),
                           train=False)
    with pytest.raises(RuntimeError, match="0 allowed"):
        strict[0]
