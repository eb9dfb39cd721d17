"""Preprocessing on synthesized real encoded files: frame-rate conversion, A/V alignment,
kill -9 and resume, meta/labels, shards + merge, the CLI's errors."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from argparse import ArgumentParser
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf

from avssl.data.level import rms_dbfs as rms_db
from avssl.data.writer import write_av
from avssl.preprocess import PreprocessError, merge, preprocess, scan_videos
from avssl.preprocess.cli import add_arguments, run
from avssl.preprocess.encode import AudioSink, _PtsReorder
from avssl.preprocess.probe import output_size
from avssl.preprocess.runner import remove_stale_temporaries
from avssl.preprocess.scan import parse_shard

ROOT = Path(__file__).resolve().parents[2]
SR = 24000


def clip(path: Path, seconds: float = 1.0, fps: float = 10.0, size: tuple[int, int] = (48, 64),
         audio: bool = True, seed: int = 0, stereo: bool = False, **kw: Any) -> Path:
    """A real encoded clip: moving noise frames (H, W = size) and a 0.3-amplitude tone."""
    rng = np.random.default_rng(seed)
    n = round(seconds * fps)
    base = rng.integers(0, 255, (size[0], size[1] * 2, 3), dtype=np.uint8)
    frames = [base[:, i % size[1]:i % size[1] + size[1]] for i in range(n)]
    t = np.arange(round(seconds * SR)) / SR
    sound = (0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t)).astype(np.float32) if audio else None
    if sound is not None and stereo:
        sound = np.stack([sound, np.zeros_like(sound)])  # left only
    return write_av(path, frames, fps, sound, SR, **kw)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gray_levels(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.to_ndarray(format="gray").mean()) for f in c.decode(video=0)]


def cli(*argv: str) -> int:
    parser = ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args([*argv, "--no-progress"]))


# ---------------------------------------------------------------- pure helpers

def test_output_size_keeps_aspect_with_even_sides() -> None:
    assert output_size(640, 360, 96) == (170, 96)  # 170.67 -> nearest even
    assert output_size(360, 640, 96) == (96, 170)
    assert output_size(512, 512, 96) == (96, 96)
    assert output_size(32, 24, 96) == (128, 96)  # upscales to the asked short side
    assert output_size(360, 288, 96, Fraction(16, 9)) == (214, 96)  # anamorphic: display aspect


def test_rms_db_floor_and_full_scale() -> None:
    assert rms_db(np.zeros(100, np.float32)) == -120.0
    assert rms_db(np.zeros(0, np.float32)) == -120.0
    assert rms_db(np.ones(100, np.float32)) == pytest.approx(0.0)
    assert rms_db(np.full(100, 0.1, np.float32)) == pytest.approx(-20.0)


def test_pts_reorder_sorts_permuted_timestamps() -> None:
    # AVI packed B-frames: display order is right, timestamps come permuted (07_*.avi)
    class F:
        def __init__(self, pts: int | None) -> None:
            self.pts, self.duration = pts, 1

    reorder = _PtsReorder(window=4)
    frames = [F(p) for p in [1, 2, 4, 3, 5, 7, 6, 8, None]]
    out = [r for f in frames for r in reorder.push(f)] + reorder.drain()  # type: ignore[arg-type]
    assert [pts for pts, _ in out] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [f for _, f in out] == frames  # frames keep decoder order


def _audio_frame(t: float, seconds: float, rate: int, value: float) -> av.AudioFrame:
    n = round(seconds * rate)
    frame = av.AudioFrame.from_ndarray(np.full((2, n), value, np.float32), format="fltp",
                                       layout="stereo")
    frame.sample_rate, frame.time_base, frame.pts = rate, Fraction(1, rate), round(t * rate)
    return frame


def test_audio_sink_fills_timestamp_holes_and_follows_rate_changes() -> None:
    sink = AudioSink(8000)
    sink.push(_audio_frame(0.5, 0.1, 16000, 0.5))
    sink.push(_audio_frame(0.8, 0.1, 16000, 0.5))  # 0.2 s hole -> silence
    sink.push(_audio_frame(0.9, 0.1, 48000, -0.25))  # rate changes mid-stream
    out = sink.finish()
    assert sink.start == pytest.approx(0.5)
    assert len(out) == pytest.approx(0.5 * 8000, abs=40)
    assert np.abs(out[int(0.13 * 8000):int(0.27 * 8000)]).max() < 1e-3
    assert out[int(0.33 * 8000):int(0.37 * 8000)] == pytest.approx(0.5, abs=0.02)
    assert out[-200:-50] == pytest.approx(-0.25, abs=0.02)


@pytest.mark.parametrize("text", ["2/2", "a/b", "1-2", "-1/2", ""])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(PreprocessError, match="shard"):
        parse_shard(text)


def test_parse_shard_accepts() -> None:
    assert parse_shard("1/4") == (1, 4)
    assert parse_shard(None) is None


def test_scan_rules(tmp_path: Path) -> None:
    for rel in ["b/x.MP4", "a.mkv", ".hidden.mp4", "b/.tmp-x-abcdefgh.mp4", "notes.txt",
                ".git/y.mp4", "c d.AVI", "out/videos/z.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert scan_videos(tmp_path, exclude=tmp_path / "out") == ["a.mkv", "b/x.MP4", "c d.AVI"]


def test_shard_removes_only_its_own_temporaries(tmp_path: Path) -> None:
    """Shards may share DST while running: one must not delete another's files in flight."""
    mine = ["videos/a/.tmp-x-abcd1234.mp4", "audio/a/.tmp-x-abcd_234.wav",
            ".records/a/.tmp-x-zzzz0000.json", ".tmp-manifest.shard-0-of-2-abcd1234.jsonl"]
    theirs = ["videos/a/.tmp-x-y-abcd1234.mp4", "videos/.tmp-x-abcd1234.mp4",
              ".tmp-manifest.shard-1-of-2-abcd1234.jsonl", "videos/a/x.mp4"]
    for rel in mine + theirs:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    own = {"manifest.shard-0-of-2", "failures.shard-0-of-2"}
    assert remove_stale_temporaries(tmp_path, {"a/x"}, own) == len(mine)
    assert [rel for rel in mine + theirs if (tmp_path / rel).exists()] == theirs
    assert remove_stale_temporaries(tmp_path, None) == 3  # unsharded: every .tmp-*
    assert (tmp_path / "videos/a/x.mp4").exists()


# ---------------------------------------------------------------- conversion on real files

@pytest.mark.parametrize("src_fps", [25, 10])
def test_frame_rate_conversion_picks_frame_on_screen(tmp_path: Path, src_fps: int) -> None:
    """Source frame i has brightness 8 i; output frame k must show floor(k * src_fps / 16)."""
    n = round(1.2 * src_fps)
    frames = [np.full((64, 64, 3), 8 * i, np.uint8) for i in range(n)]
    write_av(tmp_path / "src" / "ramp.mp4", frames, src_fps)
    summary = preprocess(tmp_path / "src", tmp_path / "out", short_side=64, progress=False)
    assert summary.ok == 1 and summary.failed == 0
    (row,) = read_rows(tmp_path / "out" / "manifest.jsonl")
    assert row["duration"] == pytest.approx(1.2)
    assert row["num_frames"] == math.ceil(1.2 * 16) == 20
    src_levels = np.array(gray_levels(tmp_path / "src" / "ramp.mp4"))
    out_levels = gray_levels(tmp_path / "out" / row["path"])
    assert len(out_levels) == row["num_frames"]
    shown = [int(np.argmin(np.abs(src_levels - v))) for v in out_levels]
    assert shown == [k * src_fps // 16 for k in range(20)]
    assert max(abs(v - src_levels[i]) for v, i in zip(out_levels, shown)) < 2.0


@pytest.mark.parametrize(("name", "video_start", "audio_start", "shift", "tol"), [
    ("late.mkv", 0.0, 0.3, 0.3, 0.002),    # audio starts 0.3 s after the first frame
    ("early.mkv", 0.2, 0.0, -0.2, 0.002),  # audio starts 0.2 s before it
    ("late.mp4", 0.0, 0.3, 0.3, 0.05),     # MP4: AAC priming moves the decoded start to 0.257
])
def test_av_alignment_known_offset(tmp_path: Path, name: str, video_start: float,
                                   audio_start: float, shift: float, tol: float) -> None:
    """A white frame at t = 1.0 s of the video timeline and a beep at the same moment: after
    preprocessing, the beep's onset in the wav is at the white output frame's time."""
    fps = 25
    frames = [np.full((48, 64, 3), 255 if i == fps else 0, np.uint8) for i in range(2 * fps)]
    sound = np.zeros(2 * SR, np.float32)
    onset = round((1.0 + video_start - audio_start) * SR)  # the beep in the audio's own clock
    sound[onset:onset + SR // 20] = 0.8 * np.sin(2 * np.pi * 2000 * np.arange(SR // 20) / SR)
    write_av(tmp_path / "src" / name, frames, fps, sound, SR,
             video_start_s=video_start, audio_start_s=audio_start)
    preprocess(tmp_path / "src", tmp_path / "out", short_side=48, progress=False)
    (row,) = read_rows(tmp_path / "out" / "manifest.jsonl")
    assert row["audio_shift_s"] == pytest.approx(shift, abs=tol)
    white = int(np.argmax(gray_levels(tmp_path / "out" / row["path"])))
    assert white == 16  # t = 1.0 s at 16 fps
    wav, sr = sf.read(tmp_path / "out" / row["audio_path"])
    beep = int(np.argmax(np.abs(wav) > 0.3 * np.abs(wav).max())) / sr
    assert beep == pytest.approx(white / 16, abs=0.01)  # far tighter than one frame (62.5 ms)


def test_flac_sample_rate_and_empty_audio_stream(tmp_path: Path) -> None:
    clip(tmp_path / "src" / "tone.mkv", seconds=1.5, stereo=True)
    # an audio stream without packets (MKV keeps it): video kept, has_audio false, audio_error
    write_av(tmp_path / "src" / "mute.mkv", [np.zeros((48, 64, 3), np.uint8)] * 10, 10,
             np.zeros(0, np.float32), SR)
    preprocess(tmp_path / "src", tmp_path / "out", short_side=48, sample_rate=16000,
               audio_format="flac", progress=False)
    mute, tone = read_rows(tmp_path / "out" / "manifest.jsonl")
    assert tone["audio_path"] == "audio/tone.flac" and tone["sample_rate"] == 16000
    info = sf.info(tmp_path / "out" / tone["audio_path"])
    assert (info.format, info.samplerate, info.channels, info.subtype) == ("FLAC", 16000, 1,
                                                                           "PCM_16")
    assert info.duration == pytest.approx(1.5, abs=0.05)
    # 0.3-amplitude sine on the left only: mono is the channel mean, 0.15 amplitude, -19.5 dBFS
    # (swresample's own stereo->mono mix would give 0.21, -16.5 dBFS; the left alone -13.5)
    assert tone["audio_rms_db"] == pytest.approx(20 * math.log10(0.15 / math.sqrt(2)), abs=0.5)
    assert mute["has_audio"] is False and mute["audio_path"] is None
    assert mute["audio_stream"] == 1 and "no audio samples" in mute["audio_error"]
    assert mute["num_frames"] == 16


# ---------------------------------------------------------------- a dataset: meta, shards

@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """UCF-style folders, a file without audio, a corrupt file, an id collision, a meta file."""
    src = tmp_path_factory.mktemp("ds") / "src"
    clip(src / "Drum" / "v_1.mp4", seed=1)
    clip(src / "Drum" / "v_2.mkv", seed=2)
    clip(src / "Flute" / "v 3.mp4", seed=3)
    clip(src / "Flute" / "v_3.mov", seed=4)  # same id as "v 3.mp4": DuplicateId failure
    clip(src / "Flute" / "v_4.mp4", seed=5, audio=False)
    clip(src / "root.mp4", seed=6)
    (src / "Flute" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(600))
    sf.write(src / "sound_only.avi", np.zeros(SR, np.float32), SR, format="WAV")
    meta = [{"path": "Drum/v_1.mp4", "split": "train", "label": "drums",
             "boxes": {"0": [[0.1, 0.2, 0.5, 0.6]], "deep": {"x": [1, 2, {"y": None}]}}},
            {"path": "Flute/v_4.mp4", "split": "test", "class_name": "flute"},
            {"path": "gone.mp4", "split": "train"}]
    (src / "meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return src


@pytest.fixture(scope="module")
def unsharded(dataset: Path) -> Path:
    dst = dataset.parent / "all"
    summary = preprocess(dataset, dst, short_side=48, workers=2, label_from_dir=True,
                         progress=False)
    assert (summary.processed, summary.skipped, summary.meta_unmatched) == (7, 0, 1)
    return dst


def test_dataset_rows_meta_labels_failures(unsharded: Path) -> None:
    rows = {r["id"]: r for r in read_rows(unsharded / "manifest.jsonl")}
    assert list(rows) == sorted(rows) == ["Drum/v_1", "Drum/v_2", "Flute/v_3", "Flute/v_4",
                                          "root"]
    assert rows["Drum/v_1"]["label"] == "drums"  # meta wins over the folder name
    assert rows["Drum/v_1"]["boxes"]["deep"] == {"x": [1, 2, {"y": None}]}
    assert rows["Drum/v_1"]["split"] == "train"
    assert rows["Drum/v_2"]["label"] == "Drum" and "split" not in rows["Drum/v_2"]
    assert rows["Flute/v_3"]["source"] == "Flute/v 3.mp4"
    assert rows["Flute/v_4"]["label"] == "Flute" and rows["Flute/v_4"]["class_name"] == "flute"
    assert rows["Flute/v_4"]["has_audio"] is False and rows["Flute/v_4"]["audio_stream"] is None
    assert "label" not in rows["root"]
    for r in rows.values():
        assert (unsharded / r["path"]).is_file()
        assert r["has_audio"] == (r["audio_path"] is not None) == (r["sample_rate"] == SR)
        assert r["duration"] == pytest.approx(1.0)
    failures = {f["source"]: f for f in read_rows(unsharded / "failures.jsonl")}
    assert sorted(failures) == ["Flute/broken.mp4", "Flute/v_3.mov", "sound_only.avi"]
    assert failures["Flute/v_3.mov"]["error"] == "DuplicateId"
    assert "Flute/v 3.mp4" in failures["Flute/v_3.mov"]["reason"]
    assert failures["sound_only.avi"]["reason"] == "no video stream"
    assert failures["Flute/broken.mp4"]["reason"].startswith("cannot open: ")
    assert all("\n" not in f["reason"] for f in failures.values())


def test_rerun_is_a_noop(dataset: Path, unsharded: Path) -> None:
    files = [unsharded / "manifest.jsonl", unsharded / "failures.jsonl",
             *sorted((unsharded / ".records").rglob("*.json"))]
    before = {p: p.stat().st_mtime_ns for p in files}
    summary = preprocess(dataset, unsharded, short_side=48, workers=2, label_from_dir=True,
                         progress=False)
    assert (summary.processed, summary.skipped, summary.ok, summary.failed) == (0, 7, 5, 3)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    # a deleted output is noticed and redone; the manifest comes out the same
    manifest = (unsharded / "manifest.jsonl").read_text()
    (unsharded / "videos" / "root.mp4").unlink()
    summary = preprocess(dataset, unsharded, short_side=48, label_from_dir=True, progress=False)
    assert (summary.processed, summary.skipped) == (1, 6)
    assert (unsharded / "videos" / "root.mp4").is_file()
    assert (unsharded / "manifest.jsonl").read_text() == manifest


def test_two_shards_and_merge_equal_unsharded(dataset: Path, unsharded: Path) -> None:
    dst = dataset.parent / "sharded"
    assert cli(str(dataset), str(dst), "--short-side", "48", "--shard", "1/2",
               "--label-from-dir") == 0
    assert cli("--merge", str(dst)) == 2  # shard 0 not run yet
    assert cli(str(dataset), str(dst), "--short-side", "48", "--shard", "0/2",
               "--label-from-dir") == 0
    one = read_rows(dst / "manifest.shard-1-of-2.jsonl")
    zero = read_rows(dst / "manifest.shard-0-of-2.jsonl")
    assert zero and one and not {r["id"] for r in zero} & {r["id"] for r in one}
    assert cli("--merge", str(dst)) == 0
    assert read_rows(dst / "manifest.jsonl") == read_rows(unsharded / "manifest.jsonl")
    assert read_rows(dst / "failures.jsonl") == read_rows(unsharded / "failures.jsonl")
    assert merge(dst).ok == 5


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, dataset: Path, unsharded: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        ([str(dataset), str(tmp_path / "o"), "--shard", "3/2"], "--shard K/N needs 0 <= K < N"),
        ([str(dataset), str(tmp_path / "o"), "--shard", "half"], "--shard must look like K/N"),
        ([str(tmp_path / "missing"), str(tmp_path / "o")], "SRC is not a folder"),
        ([str(tmp_path), str(tmp_path / "o")], "no video files under"),
        ([str(dataset), str(blocker / "o")], "is not writable"),
        ([str(dataset), str(tmp_path / "o"), "--short-side", "95"], "--short-side"),
        ([str(dataset), str(unsharded), "--fps", "25"], "fps=16.0"),  # settings of that DST
        (["--merge", str(tmp_path)], "no shard manifests"),
        ([str(dataset)], "need SRC and DST"),
    ]
    for argv, message in cases:
        code = cli(*argv)
        err = capsys.readouterr().err
        assert code == 2, argv
        assert err.count("\n") == 1 and message in err, err
    (tmp_path / "bad.jsonl").write_text('{"path": "a.mp4", "fps": 3}\n')
    assert cli(str(dataset), str(tmp_path / "o"), "--meta", str(tmp_path / "bad.jsonl")) == 2
    assert "['fps'] are computed by the preprocessor" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"path": "a.mp4"\n')
    assert cli(str(dataset), str(tmp_path / "o"), "--meta", str(tmp_path / "bad.jsonl")) == 2
    assert "bad.jsonl:1: not valid JSON" in capsys.readouterr().err


# ---------------------------------------------------------------- kill -9 and resume

def _records(dst: Path) -> dict[str, tuple[int, int]]:
    """Finished records (not their .tmp-* temporaries) -> (inode, mtime)."""
    return {p.stem: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (dst / ".records").glob("*.json") if not p.name.startswith(".")}


@pytest.mark.slow
def test_kill_and_resume(tmp_path: Path) -> None:
    src, dst, clean = tmp_path / "src", tmp_path / "dst", tmp_path / "clean"
    for i in range(8):
        clip(src / f"c{i}.mp4", seconds=6.0, fps=25, size=(96, 128), seed=i)
    cmd = [sys.executable, str(ROOT / "tools" / "preprocess.py"), str(src), str(dst),
           "--short-side", "96", "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not _records(dst) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.03)  # usually lands while the next input's .tmp-* output is being written
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = _records(dst)
    assert 1 <= len(done) < 8, "the run must be killed part way"
    assert not (dst / "manifest.jsonl").exists()
    # every record points at complete outputs
    for id_ in done:
        row = json.loads((dst / ".records" / f"{id_}.json").read_text())["row"]
        assert len(gray_levels(dst / row["path"])) == row["num_frames"]
    # simulate a crash mid-write for an unfinished input: a truncated output and a temporary
    todo = sorted({f"c{i}" for i in range(8)} - set(done))
    (dst / "videos" / f"{todo[0]}.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom")
    (dst / "videos" / f".tmp-{todo[0]}-abcd1234.mp4").write_bytes(b"half")

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"{len(todo)} converted now, {len(done)} already done" in out.stdout
    assert {k: v for k, v in _records(dst).items() if k in done} == done  # not rewritten
    assert not [p for p in dst.rglob(".tmp-*")]
    preprocess(src, clean, short_side=96, progress=False)
    rows = read_rows(dst / "manifest.jsonl")
    assert rows == read_rows(clean / "manifest.jsonl") and len(rows) == 8
    for row in rows:
        assert len(gray_levels(dst / row["path"])) == row["num_frames"] == 96
    assert re.search(r"8 videos ok", out.stdout)


def _children(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid`` (Linux /proc)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            kids.add(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.slow
def test_kill_9_takes_pool_workers_down(tmp_path: Path) -> None:
    """Orphaned workers would finish their input and write records under a rerun's feet."""
    for i in range(4):
        clip(tmp_path / "src" / f"c{i}.mp4", seconds=8.0, fps=25, size=(96, 128), seed=i)
    cmd = [sys.executable, str(ROOT / "tools" / "preprocess.py"), str(tmp_path / "src"),
           str(tmp_path / "dst"), "--short-side", "96", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "dst" / "videos").is_dir() and time.monotonic() < deadline:
            time.sleep(0.01)  # workers exist once they write outputs
        kids = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        records = _records(tmp_path / "dst")
        time.sleep(1.0)  # an orphan would finish its input by now
        assert _records(tmp_path / "dst") == records
        assert len(kids) >= 2 and not [k for k in kids if _alive(k)]
    finally:
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_labels_and_split_from_folders() -> None:
    from avssl.preprocess.runner import labels_from_dir

    assert labels_from_dir("dog/a.mp4") == {"label": "dog"}
    assert labels_from_dir("train/dog/a.mp4") == {"split": "train", "label": "dog"}
    assert labels_from_dir("test/cat/sub/b.mp4") == {"split": "test", "label": "cat"}
    assert labels_from_dir("train/a.mp4") == {"label": "train"}  # no class folder: no split
    assert labels_from_dir("a.mp4") == {}
