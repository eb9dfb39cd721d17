"""Clip timing: audio window first, video within max_offset, frame indices, eval modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from avfixtures import audio_position, coded_audio, read_code, write_video

from avssl.config import DataConfig
from avssl.data.decode import open_video, read_audio
from avssl.data.sampling import ClipSampler

FPS, SR = 16.0, 24000
S = ClipSampler(num_frames=8, clip_fps=16.0, audio_duration=2.0, max_offset=0.5, sample_rate=SR)


def test_from_config() -> None:
    cfg = DataConfig()
    s = ClipSampler.from_config(cfg)
    assert (s.num_frames, s.clip_fps, s.audio_duration, s.max_offset, s.sample_rate) == \
        (8, 16.0, 2.0, 0.5, 24000)
    assert s.clip_duration == 0.5


def test_random_bounds_grid_and_coverage() -> None:
    rng = np.random.default_rng(0)
    D, n = 10.0, 160
    offs, a0s = [], []
    for _ in range(2000):
        t = S.random(rng, D, FPS, n)
        assert 0 <= t.audio_start <= D - 2.0 + 1e-9
        assert 0 <= t.video_start <= D - 0.5 + 1e-9
        assert -0.5 - 1e-9 <= t.offset_s <= 2.0 - 0.5 + 0.5 + 1e-9  # [-m, A - Tv + m]
        assert t.offset_s == pytest.approx(t.video_start - t.audio_start)
        # On the frame grid / sample grid, and the indices are the clip's frames.
        assert t.video_start * FPS == pytest.approx(round(t.video_start * FPS), abs=1e-9)
        assert t.audio_start * SR == pytest.approx(round(t.audio_start * SR), abs=1e-6)
        assert t.frame_indices.tolist() == list(range(round(t.video_start * FPS),
                                                      round(t.video_start * FPS) + 8))
        offs.append(t.offset_s)
        a0s.append(t.audio_start)
    offs_a = np.array(offs)
    # Both signs, reaching close to both ends of [-max_offset, A - Tv + max_offset].
    assert offs_a.min() < -0.4 and offs_a.max() > 1.9
    assert (offs_a < 0).mean() > 0.05 and (offs_a > 0).mean() > 0.5
    assert min(a0s) < 0.1 and max(a0s) > 7.9  # audio start covers [0, D - A]


def test_offset_range_matches_reference() -> None:
    """Video start uniform in [a0 - 0.5, a0 + A - Tv + 0.5]: video never leaves the audio
    window by more than max_offset on either side."""
    rng = np.random.default_rng(1)
    for _ in range(500):
        t = S.random(rng, 10.0, FPS, 160)
        assert t.video_start >= t.audio_start - 0.5 - 1e-9
        assert t.video_start + S.clip_duration <= t.audio_start + 2.0 + 0.5 + 1e-9


def test_max_offset_zero_keeps_video_inside_audio() -> None:
    s = ClipSampler(8, 16.0, 2.0, 0.0, SR)
    rng = np.random.default_rng(2)
    for _ in range(500):
        t = s.random(rng, 7.3, FPS, round(7.3 * FPS))
        assert t.audio_start - 1e-9 <= t.video_start
        assert t.video_start + s.clip_duration <= t.audio_start + 2.0 + 1e-9


def test_deterministic_given_generator() -> None:
    a = S.random(np.random.default_rng([3, 1, 7]), 9.0, FPS, 144)
    b = S.random(np.random.default_rng([3, 1, 7]), 9.0, FPS, 144)
    c = S.random(np.random.default_rng([3, 2, 7]), 9.0, FPS, 144)
    assert (a.audio_start, a.video_start) == (b.audio_start, b.video_start)
    assert (a.audio_start, a.video_start) != (c.audio_start, c.video_start)


def test_center_and_uniform() -> None:
    c = S.center(10.0, FPS, 160)
    assert c.frame_indices.tolist() == list(range(76, 84))  # (160 - 8) / 2 = 76
    assert c.audio_start + 1.0 == pytest.approx(c.video_start + 0.25)  # centred on the clip
    clips = S.uniform(10.0, FPS, 160, 5)
    starts = [t.frame_indices[0] for t in clips]
    assert starts == [0, 38, 76, 114, 152]  # first to last possible start, evenly spaced
    for t in clips:
        assert 0 <= t.audio_start <= 8.0
        # Audio window inside the file and the clip inside the audio window.
        assert t.audio_start <= t.video_start and t.video_start + 0.5 <= t.audio_start + 2.0
    assert clips[2].audio_start == pytest.approx(clips[2].video_start + 0.25 - 1.0)
    assert clips[0].audio_start == 0.0 and clips[-1].audio_start == pytest.approx(8.0)
    assert S.uniform(10.0, FPS, 160, 1)[0].video_start == c.video_start
    assert S.sample("uniform", None, 10.0, FPS, 160, clip=3, num_clips=5).video_start == \
        clips[3].video_start
    with pytest.raises(ValueError, match=r"np\.random\.Generator"):
        S.sample("random", None, 10.0, FPS, 160)


def test_short_video_repeats_last_frame_and_audio_starts_at_zero() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        t = S.random(rng, 0.25, FPS, 4)  # 4 frames, shorter than the clip and the window
        assert t.audio_start == 0.0 and t.video_start == 0.0
        assert t.frame_indices.tolist() == [0, 1, 2, 3, 3, 3, 3, 3]
    c = S.center(0.25, FPS, 4)
    assert c.frame_indices.tolist() == [0, 1, 2, 3, 3, 3, 3, 3] and c.audio_start == 0.0


def test_clip_fps_differs_from_video_fps() -> None:
    s = ClipSampler(8, 8.0, 2.0, 0.5, SR)  # 8 frames at 8 fps from a 30 fps video
    t = s.random(np.random.default_rng(5), 10.0, 30.0, 300)
    f0 = round(t.video_start * 30)
    # round half up of (v0 + k / 8) * 30 = f0 + 3.75 k
    assert t.frame_indices.tolist() == [f0 + int(np.floor(k * 3.75 + 0.5)) for k in range(8)]
    assert t.frame_indices[-1] <= 299


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_decoded_content_matches_timing(tmp_path: Path, backend: str) -> None:
    """The frames and audio decoded for a timing are the ones at those times."""
    secs = 6.0
    vpath = write_video(tmp_path / "v.mp4", round(secs * FPS))
    apath = tmp_path / "a.wav"
    sf.write(apath, coded_audio(round(secs * SR)), SR, subtype="PCM_16")
    rng = np.random.default_rng(6)
    with open_video(vpath, backend) as r:
        for _ in range(12):
            t = S.random(rng, secs, FPS, round(secs * FPS))
            codes = [read_code(f) for f in r.get_frames(t.frame_indices)]
            assert codes == t.frame_indices.tolist()
            assert codes[0] == round(t.video_start * FPS)  # first frame shows video_start
            wave = read_audio(apath, t.audio_start, 2.0, SR)
            assert wave.shape == (48000,)
            assert audio_position(wave[0]) == round(t.audio_start * SR) % 65536
