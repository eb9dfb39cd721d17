"""Preprocessing the 10 real clips of ../shared/media (see its README for their quirks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf

from avssl.data.manifest import read_manifest
from avssl.preprocess import preprocess

pytestmark = pytest.mark.media

FPS, SHORT, SR, GOP = 16, 96, 16000, 8
# durations measured by decoding every frame (README), seconds
DURATIONS = {"01_speech_grid_bbaf2n": 2.98, "02_speech_grid_brbk7n": 2.98,
             "07_speech_makeup_vlog": 6.56, "19_animal_cat_on_floor": 5.08,
             "24_event_flipping_pancake": 10.38, "25_edge_multistream_nasa": 13.06,
             "26_edge_audio_dropout_airplane": 11.23, "27_edge_silent_audio_track_face": 11.8,
             "na1_no_audio_arm_wrestling": 10.0}


@pytest.fixture(scope="module")
def prepared(shared_media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("media")
    summary = preprocess(shared_media, dst, short_side=SHORT, sample_rate=SR, gop=GOP,
                         workers=2, progress=False)
    assert (summary.ok, summary.no_audio, summary.silent, summary.failed) == (9, 1, 1, 1)
    return dst


@pytest.fixture(scope="module")
def rows(prepared: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_manifest(prepared / "manifest.jsonl")}


def wav(prepared: Path, row: dict[str, Any]) -> np.ndarray:
    data, sr = sf.read(prepared / row["audio_path"], dtype="float32")
    assert sr == SR
    return data


def test_rows_and_failures(prepared: Path, rows: dict[str, dict[str, Any]]) -> None:
    assert sorted(rows) == sorted(DURATIONS)
    no_audio = sorted(i for i, r in rows.items() if not r["has_audio"])
    assert no_audio == ["na1_no_audio_arm_wrestling"]
    assert rows["na1_no_audio_arm_wrestling"]["audio_stream"] is None
    lines = (prepared / "failures.jsonl").read_text().splitlines()
    (failure,) = [json.loads(line) for line in lines]
    assert failure["source"] == "na3_corrupted_h264.mp4" and failure["error"] == "InvalidDataError"
    assert failure["reason"].startswith("video decode failed after 28 frames: Invalid data")
    assert not (prepared / "videos" / "na3_corrupted_h264.mp4").exists()


def test_audio_levels_silence_and_dropout(prepared: Path, rows: dict[str, dict[str, Any]]) -> None:
    silent = rows["27_edge_silent_audio_track_face"]
    assert silent["has_audio"] and silent["audio_rms_db"] <= -100
    assert not np.any(wav(prepared, silent))  # digital silence stays digital silence
    for id_, row in rows.items():
        if row["has_audio"] and id_ != silent["id"]:
            assert row["audio_rms_db"] > -60, id_
            assert np.abs(wav(prepared, row)).max() <= 1.0
    dropout = wav(prepared, rows["26_edge_audio_dropout_airplane"])
    before, after = dropout[: int(4.5 * SR)], dropout[int(4.7 * SR):]
    assert 10 * np.log10(np.mean(before.astype(np.float64) ** 2)) > -45
    assert len(after) > 6 * SR and not np.any(after)  # kept, silent from 4.66 s on


def test_multistream_choice(rows: dict[str, dict[str, Any]]) -> None:
    row = rows["25_edge_multistream_nasa"]
    # all four A/V streams are flagged default: the largest video (480x270 @29.97) and the
    # audio with the higher rate (16 kHz, both stereo) win
    assert (row["video_stream"], row["audio_stream"]) == (3, 4)
    assert (row["width"], row["height"]) == (170, 96)
    # 390 frames at 29.97 fps last 13.013 s (stream 0: 325 frames at 25 fps, 13.0 s, 208 out)
    assert row["duration"] == pytest.approx(13.013, abs=0.002) and row["num_frames"] == 209


@pytest.mark.parametrize("id_", sorted(DURATIONS))
def test_outputs_decode_as_promised(prepared: Path, rows: dict[str, dict[str, Any]],
                                    id_: str) -> None:
    row = rows[id_]
    assert row["duration"] == pytest.approx(DURATIONS[id_], abs=0.1)  # 24_*.mkv: no header value
    assert 0 <= row["num_frames"] / FPS - row["duration"] < 1 / FPS
    assert min(row["width"], row["height"]) == SHORT and row["width"] % 2 == row["height"] % 2 == 0
    with av.open(str(prepared / row["path"])) as c:
        assert [s.type for s in c.streams] == ["video"]
        vs = c.streams.video[0]
        assert vs.average_rate == FPS and vs.codec_context.name == "h264"
        keys = [p.is_keyframe for p in c.demux(vs) if p.size]
    assert len(keys) == row["num_frames"]
    assert [i for i, k in enumerate(keys) if k] == list(range(0, len(keys), GOP))
    with av.open(str(prepared / row["path"])) as c:
        frames = [(f.time, f.width, f.height, f.format.name) for f in c.decode(video=0)]
    assert [t for t, *_ in frames] == pytest.approx([k / FPS for k in range(row["num_frames"])])
    assert {f[1:] for f in frames} == {(row["width"], row["height"], "yuv420p")}
    if row["has_audio"]:
        info = sf.info(prepared / row["audio_path"])
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert info.duration == pytest.approx(row["duration"], abs=0.1)
