"""SampleSpec items on real encoded files: the sampler gives exactly the documented pairs.

Four videos of different durations (0.75 s: shorter than the 1 s audio window, 1.5, 2.5, 4 s)
are written with the project's writer (H.264 frames that show their own index, see
:mod:`avfixtures`) next to float WAV files whose every sample names its video and its position:
sample ``n`` of video ``v`` is ``(v * CODE + n + 1) / 2**23`` (exact in float32; 0 is padding
past the end). Audio items are read back raw (an identity transform replaces the spectrogram), so
each window says where it came from independently of the dataset's own bookkeeping; the real
transform is checked separately against ``read_audio`` + the same transform in test mode.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from avfixtures import read_code, write_video

from avssl.config import AudioConfig, DataConfig, VideoConfig
from avssl.data.audio import AudioTransform
from avssl.data.dataset import AVClipDataset, build_loader
from avssl.data.decode import read_audio
from avssl.data.manifest import read_manifest, write_manifest
from avssl.data.sample import SampleSpec
from avssl.data.sampling import ClipTiming

SR, FPS, A = 16000, 16.0, 1.0  # audio rate, video fps, audio window (s)
CODE = 100_000  # > samples of the longest video (4 s * 16 kHz)
DURATIONS = [0.75, 1.5, 2.5, 4.0]  # video v lasts DURATIONS[v] seconds
CFG = DataConfig(video=VideoConfig(num_frames=4, fps=FPS, crop_size=32, resize=36),
                 audio=AudioConfig(sample_rate=SR, duration=A, feature="logmel", n_fft=512,
                                   hop_length=160, n_mels=32, num_frames=100),
                 max_offset=0.25, max_failure_fraction=0.0)
EPOCHS = 5
CLIPS = 3  # clips per video: 12 items per epoch


def coded_wave(v: int) -> np.ndarray:
    """float32 audio of video ``v``: sample n = (v * CODE + n + 1) / 2**23."""
    n = round(DURATIONS[v] * SR)
    return ((v * CODE + np.arange(n) + 1) / 2.0 ** 23).astype(np.float32)


def expected_window(v: int, start: float) -> np.ndarray:
    """The A-second window of video ``v`` at ``start`` (zeros past the end)."""
    wave, s0, n = coded_wave(v), round(start * SR), round(A * SR)
    out = np.zeros(n, np.float32)
    part = wave[s0:s0 + n]
    out[:len(part)] = part
    return out


def origin(window: torch.Tensor) -> tuple[int, int]:
    """(video, first sample) of a raw window read back from the coded audio."""
    k = round(float(window.reshape(-1)[0]) * 2.0 ** 23) - 1
    assert k >= 0, "the window starts in padding"
    v, n = divmod(k, CODE)
    return v, n


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample_spec")
    rows = []
    (root / "audio").mkdir()
    for v, secs in enumerate(DURATIONS):
        n = round(secs * FPS)
        write_video(root / "videos" / f"v{v}.mp4", n, FPS)
        sf.write(root / "audio" / f"v{v}.wav", coded_wave(v), SR, subtype="FLOAT")
        rows.append({"id": f"v{v}", "path": f"videos/v{v}.mp4", "duration": n / FPS, "fps": FPS,
                     "num_frames": n, "width": 160, "height": 64, "has_audio": True,
                     "audio_path": f"audio/v{v}.wav", "sample_rate": SR, "split": "train"})
    path = root / "manifest.jsonl"
    write_manifest(path, rows)
    return path


class RawWave:
    """Stands in for the AudioTransform: the waveform itself, (S,), no jitter."""

    def __call__(self, wave: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        return torch.from_numpy(np.array(wave, dtype=np.float32))


def raw_dataset(manifest: Path, spec: SampleSpec, **kw: Any) -> AVClipDataset:
    ds = AVClipDataset(manifest, CFG, sample=spec, clips_per_video=CLIPS, seed=11, **kw)
    assert ds.audio_transform is not None
    ds.audio_transform = RawWave()  # type: ignore[assignment]
    return ds


def items(ds: AVClipDataset, epochs: int = EPOCHS) -> list[tuple[int, int, dict[str, Any]]]:
    """(epoch, item number, item) for every item of ``epochs`` epochs."""
    out = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        out += [(epoch, i, ds[i]) for i in range(len(ds))]
    return out


def replay_plan(ds: AVClipDataset, epoch: int, i: int) -> Any:
    """The plan of item ``i`` (what __getitem__ draws first when nothing fails)."""
    rng = np.random.default_rng([ds.seed, epoch, i])
    video, clip = divmod(i, ds.clips_per_video)
    return ds.plan(video, ds.timing(video, clip, rng), rng)


def last_start(v: int) -> float:
    return max(DURATIONS[v] - A, 0.0)


# ------------------------------------------------------------------------------ other_video
def test_other_video_pairs(manifest: Path) -> None:
    """audio_other: another video, chosen among all others, a window inside it, read exactly
    where the item says; the own window is the clip's."""
    ds = raw_dataset(manifest, SampleSpec(other_audio="other_video"))
    drawn: dict[int, set[int]] = {v: set() for v in range(len(DURATIONS))}
    for epoch, i, item in items(ds):
        v, o = int(item["index"]), int(item["other_index"])
        start, own = float(item["other_start"]), float(item["audio_start"])
        assert v == i // CLIPS and o != v, (epoch, i)
        drawn[v].add(o)
        assert -1e-9 <= start <= last_start(o) + 0.5 / SR, (o, start)
        # the window's content says which video and where: the ones the item names
        assert origin(item["audio_other"]) == (o, round(start * SR)), (epoch, i)
        np.testing.assert_array_equal(item["audio_other"].numpy(), expected_window(o, start))
        assert origin(item["audio"]) == (v, round(own * SR))
        np.testing.assert_array_equal(item["audio"].numpy(), expected_window(v, own))
        plan = replay_plan(ds, epoch, i)
        assert (plan.other_video, plan.other_start) == (o, pytest.approx(start, abs=1e-6))
        assert set(item) == {"video", "audio", "audio_other", "other_index", "other_start",
                             "index", "label", "video_start", "audio_start", "offset_s"}
    # every other video is eventually drawn, for every video
    assert drawn == {v: set(range(len(DURATIONS))) - {v} for v in drawn}


def test_other_video_uses_the_real_transform(manifest: Path) -> None:
    """With the spectrogram (test mode: no jitter), audio / audio_other are the transform of
    read_audio at the starts the item names."""
    ds = AVClipDataset(manifest, CFG, train=False, clip_mode="random",
                       sample=SampleSpec(other_audio="other_video"), seed=4)
    transform = AudioTransform(CFG.audio, train=False)
    for i in range(len(ds)):
        item = ds[i]
        for key, video, start in (("audio_other", item["other_index"], item["other_start"]),
                                  ("audio", item["index"], item["audio_start"])):
            path = manifest.parent / ds.rows[int(video)]["audio_path"]
            ref = transform(read_audio(path, float(start), A, SR))
            assert item[key].shape == (1, 100, 32)
            torch.testing.assert_close(item[key], ref, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------- other_time
@pytest.mark.parametrize("gap", [1.5, 0.7071])  # 0.7071 s is off the 16 kHz sample grid
def test_other_time_pairs(manifest: Path, gap: float) -> None:
    """audio_other: the same video, at least other_gap seconds from the own window when the
    video allows it, else its farthest window."""
    ds = raw_dataset(manifest, SampleSpec(other_audio="other_time", other_gap=gap))
    allowed_seen, farthest_seen, sides = 0, 0, set()
    for epoch, i, item in items(ds):
        v = int(item["index"])
        assert int(item["other_index"]) == v
        plan = replay_plan(ds, epoch, i)
        own, other = plan.views[0].audio_start, plan.other_start
        assert float(item["audio_start"]) == pytest.approx(own, abs=1e-6)
        assert float(item["other_start"]) == pytest.approx(other, abs=1e-6)
        assert origin(item["audio_other"]) == (v, round(other * SR))
        np.testing.assert_array_equal(item["audio_other"].numpy(), expected_window(v, other))
        last = last_start(v)
        assert -1e-9 <= other <= last + 0.5 / SR
        if own - gap >= -1e-9 or own + gap <= last + 1e-9:  # the video allows the gap
            allowed_seen += 1
            assert abs(other - own) >= gap - 1e-9, (v, own, other)
            if v == 3:
                sides.add(other > own)
        else:  # the farthest window of the video
            farthest_seen += 1
            far = 0.0 if own > last - own else last
            assert other == pytest.approx(far, abs=0.5 / SR), (v, own, other)
            assert abs(other - own) >= abs(far - own) - 0.5 / SR
    assert allowed_seen and farthest_seen  # both cases were exercised
    assert sides == {True, False}  # the 4 s video draws on both sides of its own window


def test_far_window_starts_are_on_the_sample_grid(manifest: Path) -> None:
    ds = raw_dataset(manifest, SampleSpec(other_audio="other_time", other_gap=0.7071))
    for epoch in range(2):
        for i in range(len(ds)):
            start = replay_plan(ds, epoch, i).other_start
            assert start * SR == pytest.approx(round(start * SR), abs=1e-6)


# ------------------------------------------------------------------------------------ views
def test_two_views_without_shift_are_the_same_frames(manifest: Path) -> None:
    ds = AVClipDataset(manifest, CFG, train=False, clip_mode="random", seed=2,
                       clips_per_video=CLIPS, sample=SampleSpec(views=2, view_shift=0.0))
    for epoch, i, item in items(ds, epochs=2):
        assert "video" not in item and len(item["views"]) == 2
        assert torch.equal(item["views"][0], item["views"][1]), (epoch, i)
        plan = replay_plan(ds, epoch, i)
        assert np.array_equal(plan.views[0].frame_indices, plan.views[1].frame_indices)
        assert "audio" in item and "audio_other" not in item


@pytest.mark.parametrize("shift", [0.1, 0.3])  # 1.6 and 4.8 frames at 16 fps
def test_shifted_views_stay_within_the_shift(manifest: Path, shift: float) -> None:
    """Each further view starts at most view_shift seconds from the first, on the frame grid,
    inside the video; its decoded frames are the planned ones; the audio window stays the
    first view's."""
    ds = AVClipDataset(manifest, CFG, train=False, clip_mode="random", seed=2,
                       clips_per_video=CLIPS, sample=SampleSpec(views=2, view_shift=shift))
    shifts = set()
    for epoch, i, item in items(ds, epochs=3):
        v = i // CLIPS
        plan = replay_plan(ds, epoch, i)
        first, second = plan.views
        assert second.audio_start == first.audio_start
        d = second.video_start - first.video_start
        assert abs(d) <= shift + 1e-9, (epoch, i, d)
        frames = d * FPS
        assert frames == pytest.approx(round(frames), abs=1e-6)  # on the frame grid
        n = round(DURATIONS[v] * FPS)
        assert second.frame_indices.min() >= 0 and second.frame_indices.max() <= n - 1
        shifts.add(round(frames))
        decoded, _, _ = ds.decode_plan(v, plan)
        for k, (view, timing) in enumerate(zip(decoded, plan.views)):
            assert [read_code(f) for f in view] == timing.frame_indices.tolist()
            # the item's view is those frames, transformed (deterministic in test mode)
            ref = ds.video_transform(view, np.random.default_rng(0))
            assert torch.equal(item["views"][k], ref), (epoch, i, k)
        assert float(item["video_start"]) == pytest.approx(first.video_start, abs=1e-6)
    k = math.floor(shift * FPS + 1e-6)
    assert shifts <= set(range(-k, k + 1))
    assert {-1, 0, 1} <= shifts  # both directions, and no shift at all, occur


# ------------------------------------------------------------------------------ determinism
def _assert_same(a: dict[str, Any], b: dict[str, Any], where: Any) -> None:
    assert set(a) == set(b), where
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, list):
            assert len(x) == len(y) and all(torch.equal(p, q) for p, q in zip(x, y)), (where, key)
        else:
            assert torch.equal(x, y), (where, key)


FULL = SampleSpec(views=2, view_shift=0.2, other_audio="other_video")


def test_items_depend_only_on_seed_epoch_and_index(manifest: Path) -> None:
    a = AVClipDataset(manifest, CFG, seed=9, sample=FULL)
    b = AVClipDataset(manifest, CFG, seed=9, sample=FULL)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in reversed(range(len(a))):  # another order: no state carried between items
            _assert_same(a[i], b[i], (epoch, i))
    b.set_epoch(1)
    assert any(not torch.equal(a[i]["other_start"], b[i]["other_start"]) for i in range(len(a)))


def test_items_do_not_depend_on_workers(manifest: Path) -> None:
    ds = AVClipDataset(manifest, CFG, seed=9, sample=FULL, clips_per_video=2)
    ds.set_epoch(2)
    ref = [ds[i] for i in range(len(ds))]
    loader = build_loader(ds, batch_size=3, num_workers=2, shuffle=False, drop_last=False)
    loader.set_epoch(2)
    k = 0
    for batch in loader:
        for j in range(len(batch["index"])):
            got = {key: ([v[j] for v in val] if isinstance(val, list) else val[j])
                   for key, val in batch.items()}
            _assert_same(got, ref[k], k)
            k += 1
    assert k == len(ds)
    del loader


def test_default_spec_gives_the_plain_items(manifest: Path) -> None:
    plain = AVClipDataset(manifest, CFG, seed=5, clips_per_video=2)
    spec = AVClipDataset(manifest, CFG, seed=5, clips_per_video=2, sample=SampleSpec())
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        spec.set_epoch(epoch)
        for i in range(len(plain)):
            _assert_same(plain[i], spec[i], (epoch, i))


def _with_broken_audio(manifest: Path, root: Path, keep: list[int], broken: int) -> Path:
    """A copy of the test set with only the videos ``keep``, the audio of ``broken``
    unreadable."""
    shutil.copytree(manifest.parent, root)
    (root / "audio" / f"v{broken}.wav").write_bytes(b"not audio" * 100)
    rows = [r for r in read_manifest(root / "manifest.jsonl") if int(r["id"][1:]) in keep]
    write_manifest(root / "manifest.jsonl", rows)
    return root / "manifest.jsonl"


def test_a_failed_other_video_is_not_drawn_again(manifest: Path, tmp_path: Path) -> None:
    """The video whose audio failed is replaced and not drawn again as 'another video'."""
    path = _with_broken_audio(manifest, tmp_path / "four", [0, 1, 2, 3], broken=3)
    cfg = dataclasses.replace(CFG, max_failure_fraction=0.5)  # 2 of 4 videos may fail
    ds = AVClipDataset(path, cfg, sample=SampleSpec(other_audio="other_video"), seed=1,
                       clips_per_video=CLIPS)
    for epoch in range(2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert int(item["other_index"]) != 3 and int(item["index"]) != 3
    assert list(ds.failed) == [3]


def test_no_other_video_left_raises(manifest: Path, tmp_path: Path) -> None:
    """Two videos, the audio of one unreadable: the other one has no 'other video' left; the
    item fails with a message instead of drawing the broken one forever."""
    path = _with_broken_audio(manifest, tmp_path / "two", [2, 3], broken=3)
    cfg = dataclasses.replace(CFG, max_failure_fraction=0.5)  # 1 of 2 videos may fail
    ds = AVClipDataset(path, cfg, sample=SampleSpec(other_audio="other_video"), seed=1)
    with pytest.raises(RuntimeError, match="every other video failed to load"):
        ds[0]


class _Uniform:
    """A stand-in generator whose uniform draws are all ``u``."""

    def __init__(self, u: float) -> None:
        self.u = u

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + self.u * (hi - lo)


@pytest.mark.parametrize("u", [0.0, 0.5, 0.999999])
def test_far_window_keeps_a_gap_off_the_sample_grid(manifest: Path, u: float) -> None:
    """A gap that is not a whole number of samples is still kept after the start is rounded
    to the sample grid (u = 0: the start nearest the own window)."""
    gap = 0.70713  # 11314.08 samples at 16 kHz
    ds = AVClipDataset(manifest, CFG, sample=SampleSpec(other_audio="other_time",
                                                        other_gap=gap))
    own = 0.1  # before the gap fits below it: every start is above own + gap
    t = ClipTiming(audio_start=own, video_start=0.0, frame_indices=np.arange(4))
    plan = ds.plan(3, t, _Uniform(u))  # type: ignore[arg-type]
    assert plan.other_start is not None
    assert plan.other_start - own >= gap
    assert plan.other_start <= last_start(3) + 0.5 / SR
    assert plan.other_start * SR == pytest.approx(round(plan.other_start * SR), abs=1e-6)
