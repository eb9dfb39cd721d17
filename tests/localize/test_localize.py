"""Localization maps, the visible-source decision, overlays, and ``avssl localize`` end to end."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from avfixtures import TINY_MODEL
from torch import nn

from avssl.config import from_dict, to_dict
from avssl.data.manifest import write_manifest
from avssl.data.writer import write_av
from avssl.localize import cli
from avssl.localize.calibration import (
    mismatched_confidences,
    resolve_calibration,
    specificity_confidences,
)
from avssl.localize.inputs import Item, Options
from avssl.localize.localizer import Work
from avssl.localize.maps import (
    DECISION_NONE,
    DECISION_SILENT,
    DECISION_SOURCE,
    Calibration,
    auroc,
    calibrate_threshold,
    cosine_maps,
    decide,
    localization_maps,
    null_specificities,
    peak_location,
    rms_dbfs,
    source_confidence,
    specificity,
    standardized_map,
    upsample,
)
from avssl.localize.timeline import DecodeError, decode_raw
from avssl.utils.checkpoint import save_checkpoint
from avssl.viz.overlay import colormap_lut, contact_sheet, draw_label, overlay, write_overlay_video

# --- maps from a model built so that one location matches the audio ---------------------------

D, TP, HP, WP = 4, 2, 3, 3
HOT = (1, 2, 0)  # (t, h, w) of the matching location


def _grid(batch: int) -> torch.Tensor:
    g = torch.zeros(batch, D, TP, HP, WP)
    g[:, 1] = 1.0  # everywhere: direction e1, orthogonal to the audio
    g[:, 1, HOT[0], HOT[1], HOT[2]] = 0.0
    g[:, 0, HOT[0], HOT[1], HOT[2]] = 3.0  # here: e0 (any length: maps are cosines)
    return g


class GridVideo(nn.Module):
    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        return _grid(x.shape[0])


class FeaturesVideo(nn.Module):  # no forward_grid: the conv5x fallback
    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"conv4x": torch.zeros(1), "conv5x": _grid(x.shape[0])}


class FakeEncoders(nn.Module):
    def __init__(self, video: nn.Module) -> None:
        super().__init__()
        self.video, self.video_head = video, nn.Identity()

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.eye(D)[0].expand(audio.shape[0], D)


@pytest.mark.parametrize("video", [GridVideo(), FeaturesVideo()])
def test_map_peaks_at_the_matching_location(video):
    enc = FakeEncoders(video)
    maps = localization_maps(enc, torch.zeros(2, 3, 8, 32, 32), torch.zeros(2, 1, 20, 16))
    assert maps.shape == (2, TP, HP, WP)
    assert maps[0][HOT] == pytest.approx(1.0)  # cosine 1 there, 0 elsewhere
    assert maps[0].sum() == pytest.approx(1.0)
    assert peak_location(maps)[0] == {"t": 1, "h": 2, "w": 0, "value": pytest.approx(1.0),
                                      "x": pytest.approx(1 / 6), "y": pytest.approx(5 / 6)}
    up = upsample(maps, (30, 30))
    assert up.shape == (2, TP, 30, 30)
    y, x = divmod(int(up[0, HOT[0]].argmax()), 30)
    assert y >= 20 and x < 10  # bottom-left third of the frame
    assert float(up[0, 0].abs().max()) == 0.0  # the other time slice stays flat
    conf = source_confidence(maps)
    assert conf[0] == pytest.approx(1 - 1 / 18)  # max - mean over the 18 locations
    flat = torch.full((1, TP, HP, WP), 0.7)
    for kind in ("contrast", "zscore"):
        assert source_confidence(flat, kind)[0] == pytest.approx(0.0, abs=1e-6)
        assert source_confidence(maps, kind)[0] > 0.9
    assert source_confidence(maps, "peak")[0] == pytest.approx(1.0)
    # slavc: mean of the top quarter (4 of 18) of (s + 1) / 2: one 1.0 and three 0.5
    assert source_confidence(maps, "slavc")[0] == pytest.approx((1.0 + 3 * 0.5) / 4)


def test_maps_of_a_real_encoder_pair(tiny_cfg):
    from avssl.methods.base import AVEncoders

    enc = AVEncoders(tiny_cfg).eval()
    maps = localization_maps(enc, torch.randn(2, 3, 4, 64, 96), torch.randn(2, 1, 100, 32))
    assert maps.shape == (2, 1, 2, 3)  # conv5x of 4 x 64 x 96 frames
    assert maps.abs().max() <= 1 + 1e-5


def test_calibration_and_decision():
    mismatched = np.arange(100) / 100
    cal = calibrate_threshold([0.99, 0.97, 0.5], mismatched, percentile=95)
    assert cal.source == "calibrated" and cal.threshold == pytest.approx(0.9405)
    assert cal.matched_above == pytest.approx(2 / 3) and cal.mismatched_above == 0.05
    assert 0.5 < cal.auroc <= 1
    fallback = calibrate_threshold([0.5], [0.1] * 5)
    assert fallback.source == "default" and "not calibrated" in fallback.note
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    assert auroc([1, 2], [0, 0]) == 1.0 and auroc([0], [0]) == 0.5
    assert decide(0.95, -20.0, cal) == DECISION_SOURCE
    assert decide(0.50, -20.0, cal) == DECISION_NONE
    assert decide(0.99, -75.0, cal) == DECISION_SILENT  # silence wins over any map
    assert rms_dbfs(np.zeros(100)) == -120.0
    assert rms_dbfs(np.sin(np.linspace(0, 200 * np.pi, 16000))) == pytest.approx(-3.01, abs=0.02)


# --- viz ----------------------------------------------------------------------------------------

def test_overlay_label_and_contact_sheet():
    frame = np.full((20, 30, 3), 100, np.uint8)
    heat = np.zeros((20, 30))
    heat[10:, :] = 1.0
    out = overlay(frame, heat, alpha=0.5)
    lut = colormap_lut("jet")
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert out[0, 0].tolist() == [round(50 + lut[0, c] / 2) for c in range(3)]
    assert out[19, 0].tolist() == [round(50 + lut[255, c] / 2) for c in range(3)]
    assert (overlay(frame, heat, alpha=0.0) == frame).all()
    with pytest.raises(ValueError, match="does not match"):
        overlay(frame, heat[:10], 0.5)
    labelled = draw_label(frame, "no visible source")
    assert labelled.shape == frame.shape and (labelled[:5] != 100).any()
    assert (labelled[-5:] == 100).all() and (frame == 100).all()  # a copy, top band only
    tiles = [np.full((12, 10, 3), i * 40, np.uint8) for i in range(5)]
    sheet = contact_sheet(tiles, cols=2, pad=2)
    assert sheet.shape == (3 * 14 - 2, 2 * 12 - 2, 3)
    assert (sheet[14:26, 12:22] == 120).all()  # image 3: row 1, column 1
    assert (sheet[28:, 12:] == 0).all()  # the empty sixth cell


def _probe(path: Path) -> tuple[int, float | None, tuple[int, int]]:
    """(video frames, audio seconds or None, (height, width)) by decoding ``path``."""
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
        shape = frames[0].height, frames[0].width
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return len(frames), None, shape
        n = sum(f.samples for f in c.decode(c.streams.audio[0]))
        return len(frames), n / c.streams.audio[0].rate, shape


def test_write_overlay_video_round_trip(tmp_path):
    frames = [np.full((33, 47, 3), 10 * i, np.uint8) for i in range(10)]  # odd: cropped to even
    audio = 0.1 * np.sin(np.arange(20000) / 16000 * 2 * np.pi * 440).astype(np.float32)
    path = write_overlay_video(tmp_path / "o.mp4", frames, 8.0, audio, 16000)
    n, seconds, shape = _probe(path)
    assert n == 10 and shape == (32, 46)
    assert seconds == pytest.approx(1.25, abs=0.07)  # AAC pads up to one 1024-sample frame


# --- decoding by timestamps ----------------------------------------------------------------------

def test_decode_raw_resamples_by_timestamps(tmp_path):
    # 8 fps source, frame k has grey level 15 k; read at 16 fps, output frame j shows k = j // 2
    path = write_av(tmp_path / "v.mp4", (np.full((32, 32, 3), 15 * k, np.uint8)
                                          for k in range(12)), 8.0, gop=4, crf=0)
    dec = decode_raw(path, fps=16.0, sample_rate=16000, max_seconds=10.0, max_size=480,
                     min_short=32, audio_tail_s=0.5)
    levels = dec.frames.reshape(len(dec.frames), -1).mean(1)
    assert len(dec.frames) == 24  # 1.5 s at 16 fps
    assert np.abs(levels - 15 * (np.arange(24) // 2)).max() < 3
    assert dec.audio is None and dec.info["audio_stream"] is None
    assert len(decode_raw(path, 16.0, 16000, 0.5, 480, 32, 0.5).frames) == 8


@pytest.mark.media
def test_decode_real_edge_cases(shared_media):
    args = dict(fps=16.0, sample_rate=16000, max_seconds=1.0, max_size=240, min_short=32,
                audio_tail_s=0.5)
    multi = decode_raw(shared_media / "25_edge_multistream_nasa.mp4", **args)
    assert multi.info["video_stream"] == 3 and multi.info["audio_stream"] == 4
    assert multi.frames.shape == (16, 136, 240, 3)  # 480x270 (largest), long side 240
    silent = decode_raw(shared_media / "27_edge_silent_audio_track_face.mp4", **args)
    assert silent.audio is not None and rms_dbfs(silent.audio) == -120.0
    with pytest.raises(DecodeError, match="decode failed after"):
        decode_raw(shared_media / "na3_corrupted_h264.mp4", **{**args, "max_seconds": 9})


# --- the command end to end ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_cfg():
    return from_dict(TINY_MODEL, require_paths=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_cfg):
    from avssl.methods import build_method

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint({"model": build_method(tiny_cfg, 8).state_dict(),
                     "config": to_dict(tiny_cfg)}, path)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from avssl.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("syn"), num_videos=2, classes=2,
                          duration=1.0, fps=16.0, size=(64, 64), sample_rate=16000,
                          test_fraction=0.0, progress=False)


def _args(input_: Path, ckpt: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args([str(input_), "--checkpoint", str(ckpt), "--out", str(out),
                              "--short-side", "64", "--num-frames", "3", *extra])


def test_cli_folder_with_boxes_no_audio_and_corrupt(tmp_path, checkpoint, synthetic, capsys):
    src = tmp_path / "in"
    shutil.copytree(synthetic / "videos", src)
    write_av(src / "sub" / "noaudio.mp4", (np.full((64, 64, 3), 90, np.uint8)
                                            for _ in range(16)), 16.0)
    good = (src / "c0_00000.mp4").read_bytes()
    (src / "broken.mp4").write_bytes(good[: len(good) // 3])  # truncated: no index
    out = tmp_path / "out"
    assert cli.run(_args(src, checkpoint, out, "--boxes", str(synthetic / "meta.jsonl"))) == 0
    log = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == 1 and summary["counts"]["no audio"] == 1
    assert summary["counts"]["localized"] + summary["counts"]["no visible source"] == 2
    assert "broken: failed" in log and "sub/noaudio: no audio" in log
    # two videos with audio, 4 clips each, 4 mismatched windows per clip: calibrated
    # (specificity: each of the 8 clips against the other video's 4 windows, leave one out)
    cal = summary["calibration"]
    assert cal["source"] == "calibrated" and cal["n_mismatched"] == 32
    assert cal["kind"] == "specificity"
    # both synthetic videos show their sounding object throughout
    dec = summary["source_decision"]
    assert dec["videos_in_view"] == 2 and dec["clips_in_view"] == 8
    assert dec["false_no_source_videos"] == summary["counts"]["no visible source"]
    assert dec["false_no_source_clip_rate"] == pytest.approx(dec["false_no_source_clips"] / 8,
                                                             abs=1e-5)
    assert 'false "no visible source" with the source in view' in log
    loc = summary["localization"]
    assert set(loc) == {"model", "whole_image", "center", "random", "motion"}
    assert loc["model"]["n"] == 8 and loc["model"]["binarization"] == "top50"
    assert loc["motion"]["n"] == 8 and "motion" in log
    assert loc["whole_image"]["n"] == 8 and "cIoU@0.5" in log

    res = json.loads((out / "c0_00000" / "result.json").read_text())
    assert res["calibration"]["threshold"] == cal["threshold"]
    assert res["ground_truth"] == "track" and len(res["clips"]) == 4
    for c in res["clips"]:
        assert {"start", "end", "confidence", "peak", "decision", "map_stats", "ciou"} <= set(c)
        assert c["decision"] in (DECISION_SOURCE, DECISION_NONE)
        assert c["source_in_view"] is True
    assert res["source_in_view"] is True and res["in_view_audible_clips"] == 4
    assert res["false_no_source_clips"] == sum(c["decision"] == DECISION_NONE
                                               for c in res["clips"])
    for k in range(3):  # the 64x64 source is drawn at the 256 px minimum display size
        with av.open(str(out / "c0_00000" / f"frame_{k:02d}.png")) as c:
            f = next(c.decode(video=0))
            assert (f.width, f.height) == (256, 256)
    assert (out / "c0_00000" / "contact_sheet.png").is_file()
    n, seconds, shape = _probe(out / "c0_00000" / "overlay.mp4")
    assert n == 16 and shape == (256, 256) and seconds == pytest.approx(1.0, abs=0.07)
    assert not list(out.rglob(".frames.npy")) and not list(out.rglob(".audio.npy"))

    noaudio = json.loads((out / "sub" / "noaudio" / "result.json").read_text())
    assert noaudio["outcome"] == "no audio" and noaudio["clips"] == []
    assert _probe(out / "sub" / "noaudio" / "overlay.mp4")[1] is None
    broken = json.loads((out / "broken" / "result.json").read_text())
    assert broken["outcome"] == "failed" and broken["error"]


def test_cli_manifest_silent_audio_and_threshold(tmp_path, checkpoint):
    root = tmp_path / "prepared"
    rows = []
    t = np.arange(16000) / 16000
    for vid, wave, grey in (("loud", 0.3 * np.sin(2 * np.pi * 440 * t), 60),
                            ("quiet", np.zeros(16000), 128)):
        write_av(root / "videos" / f"{vid}.mp4",
                 (np.full((48, 64, 3), grey, np.uint8) for _ in range(16)), 16.0)
        (root / "audio").mkdir(exist_ok=True)
        sf.write(root / "audio" / f"{vid}.wav", wave.astype(np.float32), 16000)
        rows.append({"id": vid, "path": f"videos/{vid}.mp4", "duration": 1.0, "fps": 16.0,
                     "num_frames": 16, "width": 64, "height": 48, "has_audio": True,
                     "audio_path": f"audio/{vid}.wav", "sample_rate": 16000,
                     "boxes": {"fps": 16.0, "xyxy": [[0.25, 0.25, 0.75, 0.75]] * 16}})
    write_manifest(root / "manifest.jsonl", rows)
    out = tmp_path / "out"
    # contrast >= 0 always: every audible clip is a source under --threshold 0
    # (--min-display 48: frames drawn at their own size, so the pixel checks below hold)
    assert cli.run(_args(root / "manifest.jsonl", checkpoint, out, "--threshold", "0",
                         "--binarization", "fixed", "--no-video", "--min-display", "48")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["localized"] == 1 and summary["counts"]["silent audio"] == 1
    assert summary["calibration"]["source"] == "user"
    # one audible video: no other sounds to compare with, so the map-only contrast decides
    assert summary["calibration"]["kind"] == "contrast"
    # the silent video's in-view source is not a false "no visible source"
    assert summary["source_decision"] == {
        "videos_in_view": 1, "false_no_source_videos": 0, "false_no_source_video_rate": 0.0,
        "clips_in_view": 4, "false_no_source_clips": 0, "false_no_source_clip_rate": 0.0}
    assert summary["localization"]["model"]["binarization"] == "fixed"
    assert summary["localization"]["center"]["n"] == 8
    quiet = json.loads((out / "quiet" / "result.json").read_text())
    assert {c["decision"] for c in quiet["clips"]} == {DECISION_SILENT}
    assert all(c["audio_rms_db"] == -120.0 for c in quiet["clips"])
    # no heatmap drawn on silent clips: inside the ground-truth outline (rows 12..35, columns
    # 16..47) and below the label band, the frame is the plain grey
    with av.open(str(out / "quiet" / "frame_01.png")) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(img[14:34, 18:46].astype(int) - 128).max() <= 4
    assert img[12, 20:40].min() == 255  # the white ground-truth box
    with av.open(str(out / "loud" / "frame_01.png")) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(img[14:34, 18:46].astype(int) - 60).max() > 20  # the heatmap is there
    assert not (out / "loud" / "overlay.mp4").exists()

    # a raw file, this run's calibration file, VGG-SS boxes (static: the middle clip only)
    vgg = tmp_path / "vggss.json"
    vgg.write_text(json.dumps([{"file": "loud", "bbox": [[0.25, 0.25, 0.75, 0.75]]}]))
    again = tmp_path / "again"
    raw = write_av(tmp_path / "raw" / "loud.mp4", (np.full((48, 64, 3), 60, np.uint8)
                                                    for _ in range(16)), 16.0,
                   (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    assert cli.run(_args(raw, checkpoint, again, "--calibration",
                         str(out / "summary.json"), "--boxes", str(vgg), "--no-video")) == 0
    summary = json.loads((again / "summary.json").read_text())
    assert summary["calibration"]["source"] == "file"
    assert summary["calibration"]["threshold"] == 0.0
    assert summary["localization"]["model"]["n"] == 1
    res = json.loads((again / "loud" / "result.json").read_text())
    assert res["ground_truth"] == "vggss"
    # the clip nearest the middle (0.5 s): 0.25-0.5 s and 0.5-0.75 s tie, the first wins
    assert [c["index"] for c in res["clips"] if "ciou" in c] == [1]


def test_cli_bad_input_exits_2(tmp_path, checkpoint, capsys):
    assert cli.run(_args(tmp_path / "missing.mp4", checkpoint, tmp_path / "o")) == 2
    assert "input not found" in capsys.readouterr().err
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"garbage")
    video = write_av(tmp_path / "v.mp4", (np.zeros((32, 32, 3), np.uint8) for _ in range(4)), 8.0)
    assert cli.run(_args(video, bad_ckpt, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert err.startswith("avssl localize: error:") and err.count("\n") == 1
    assert cli.run(_args(video, checkpoint, tmp_path / "o", "--boxes",
                         str(tmp_path / "nope.json"))) == 2
    assert "--boxes" in capsys.readouterr().err


def test_calibration_null_draws_different_sounds() -> None:
    """Mismatched pairs for calibration come from the less similar half of the other videos'
    sounds: a video whose sound kind recurs elsewhere is not scored against those recurrences."""
    e0, e1 = torch.eye(4)[0], torch.eye(4)[1]
    works = []
    for v in range(6):
        w = Work(Item(f"v{v}", Path(f"v{v}.mp4")), Path("unused"))
        grid = torch.zeros(1, 4, 1, 2, 2)
        grid[0, :, 0, 0, 0] = e0 if v < 3 else e1  # one location shows the video's source
        grid[0, 2, 0, 1:, :] = 1.0  # background elsewhere
        w.grid, w.silent = grid, np.array([False])
        w.audio_emb = (e0 if v < 3 else e1)[None]  # videos 0-2 and 3-5 share a sound kind
        works.append(w)
    matched, mismatched = mismatched_confidences(works, "contrast", per_clip=2)
    # own sound: the source location stands out (contrast = max - mean = 1 - 1/4)
    assert matched == pytest.approx([0.75] * 6)
    # 3 of the 5 other windows are kept (the other sound kind), 2 drawn per clip: all flat maps
    assert len(mismatched) == 12 and mismatched == pytest.approx([0.0] * 12)


# --- the specificity decision: each clip against other sounds on its own frames ----------------

def test_specificity_hand_computed() -> None:
    # null: two sounds on a 1 x 2 grid; mean map [0.5, 0.2], variance [0.01, 0.04] -> spread
    # sqrt(0.025); the own map beats the null mean by 0.3 at the first location
    null = torch.tensor([[[0.4, 0.0]], [[0.6, 0.4]]])
    own = torch.tensor([[0.8, 0.2]])
    z = standardized_map(own, null)
    assert z.tolist() == [[pytest.approx(0.3 / 0.025 ** 0.5), pytest.approx(0.0, abs=1e-6)]]
    assert specificity(own, null) == pytest.approx(0.3 / 0.025 ** 0.5)
    # leave one out, with a third null map [0.5, 0.2]: against the two others, map 0 has
    # spread sqrt((0.0025 + 0.01) / 2) and lies [-0.15, -0.3] from their mean, map 1 the same
    # spread and [+0.15, +0.3], map 2 exactly on the mean of maps 0 and 1
    three = torch.cat([null, torch.tensor([[[0.5, 0.2]]])])
    assert null_specificities(three) == pytest.approx([-0.15 / 0.00625 ** 0.5,
                                                       0.3 / 0.00625 ** 0.5, 0.0], abs=1e-5)
    flat = torch.zeros(3, 1, 2)
    assert specificity(torch.zeros(1, 2), flat) == 0.0  # no sound moves anything: no score
    with pytest.raises(ValueError, match="null maps"):
        standardized_map(own, null[:1])
    with pytest.raises(ValueError, match="needs null maps"):
        source_confidence(own[None], "specificity")


def _toy_works(n_videos: int = 12, clips: int = 4, offscreen: tuple[int, ...] = ()
               ) -> list[Work]:
    """Videos on a 3 x 3 grid, sound kinds 0-3 (video v: kind v % 4), each showing its kind's
    source at one location. Every sound shares one direction (think "loud", "object-like"), and
    the odd videos have a location with that direction strongly (a textured patch, a salient
    object): on those frames every sound's map peaks there. ``offscreen`` videos play a sound
    of another kind, with no source in view."""
    g = torch.Generator().manual_seed(0)
    e = torch.eye(8)
    works = []
    for v in range(n_videos):
        kind = v % 4
        grid = 0.2 * torch.randn(clips, 8, 1, 3, 3, generator=g)
        grid[:, 5] += 1.0  # background
        src = (5 * v) % 9
        grid[:, kind, 0, src // 3, src % 3] += 1.5
        if v % 2:
            tex = (src + 4) % 9
            grid[:, 4, 0, tex // 3, tex % 3] += 3.0
        sound = (kind + 2) % 4 if v in offscreen else kind
        audio = e[sound] + 0.9 * e[4] + 0.1 * torch.randn(clips, 8, generator=g)
        w = Work(Item(f"v{v}", Path(f"v{v}.mp4")), Path("unused"))
        w.grid = torch.nn.functional.normalize(grid, dim=1)
        w.audio_emb = torch.nn.functional.normalize(audio, dim=1)
        w.silent, w.clips = np.zeros(clips, bool), [{} for _ in range(clips)]
        works.append(w)
    return works


def test_specificity_holds_where_a_pooled_threshold_fails() -> None:
    """On frames where every sound's map peaks (odd videos), a map-only confidence calibrated
    on pooled mismatched pairs calls nearly every in-view source "no visible source", on the
    plain frames as well (the pooled threshold is set by the peaked frames). Specificity
    compares each clip with other sounds on the same frames: in-view sources pass, off-screen
    sounds mostly do not."""
    offscreen = (4, 9)
    works = _toy_works(offscreen=offscreen)
    in_view = [w for v, w in enumerate(works) if v not in offscreen]

    matched, mismatched = mismatched_confidences(works, "contrast")
    pooled = calibrate_threshold(matched, mismatched, kind="contrast")
    conf = [source_confidence(cosine_maps(w.grid, w.audio_emb), "contrast") for w in in_view]
    assert np.mean([float(c) >= pooled.threshold for cs in conf for c in cs]) < 0.2

    matched, mismatched = specificity_confidences(works)
    cal = calibrate_threshold(matched, mismatched, kind="specificity")
    assert cal.source == "calibrated" and cal.n_mismatched == 48 * 32
    assert cal.auroc > 0.85  # the off-screen clips count as matched here
    calls = {v: [decide(c, -20.0, cal) for c in w.confidence] for v, w in enumerate(works)}
    hits = [d == DECISION_SOURCE for v, ds in calls.items() if v not in offscreen for d in ds]
    assert np.mean(hits) > 0.9
    false = [d == DECISION_SOURCE for v in offscreen for d in calls[v]]
    assert np.mean(false) <= 0.25
    assert all(decide(c, -75.0, cal) == DECISION_SILENT for c in works[0].confidence)


def test_specificity_falls_back_to_contrast_without_other_sounds() -> None:
    works = _toy_works(n_videos=1)
    assert specificity_confidences(works) is None
    cal = resolve_calibration(works, Options())
    assert cal.kind == "contrast" and cal.source == "default"
    assert "instead of 'specificity'" in cal.note
    cal = resolve_calibration(works, Options(threshold=0.1))
    assert (cal.kind, cal.source, cal.threshold) == ("contrast", "user", 0.1)
    # with other videos, --threshold applies to specificity (and confidences are computed)
    works = _toy_works(n_videos=3)
    cal = resolve_calibration(works, Options(threshold=2.0))
    assert cal.kind == "specificity" and all(w.confidence is not None for w in works)
