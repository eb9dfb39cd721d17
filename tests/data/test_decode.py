"""Decoding backends (PyAV, decord) on real H.264 files, audio windows, the reader cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from avfixtures import audio_position, coded_audio, read_code, write_video

from avssl.data import decode
from avssl.data.decode import ReaderCache, open_video, read_audio

BACKENDS = ["pyav", "decord"]
N = 80  # 5 s at 16 fps, keyframe every 16 frames


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("dec") / "v.mp4", N, fps=16, gop=16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata(video: Path, backend: str) -> None:
    with open_video(video, backend) as r:
        assert r.fps == pytest.approx(16.0)
        assert r.num_frames == N
        assert (r.width, r.height) == (160, 64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_are_the_requested_ones(video: Path, backend: str) -> None:
    # Sequential clip, backwards jump (a new seek), mid-GOP starts, repeats, the last frame,
    # and indices past the end / negative (clamped).
    requests = [list(range(8)), [50, 51, 52], [17, 17, 3, 3], [79], [33, 34, 75, 2],
                [70, 78, 79, 80, 200], [-5, 0]]
    with open_video(video, backend) as r:
        for idx in requests:
            frames = r.get_frames(idx)
            assert frames.dtype == np.uint8 and frames.shape == (len(idx), 64, 160, 3)
            want = np.clip(idx, 0, N - 1).tolist()
            assert [read_code(f) for f in frames] == want, (backend, idx)


def test_backends_agree(video: Path) -> None:
    idx = [0, 5, 16, 31, 32, 47, 63, 79, 79, 40]
    with open_video(video, "pyav") as a, open_video(video, "decord") as b:
        fa, fb = a.get_frames(idx), b.get_frames(idx)
    diff = np.abs(fa.astype(np.int16) - fb.astype(np.int16)).mean()
    assert diff < 2.0, diff  # same decoder (FFmpeg); only colour conversion may differ


def test_unknown_backend_and_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(ValueError, match="unknown video backend"):
        open_video(bad, "opencv")
    for backend in BACKENDS:
        with pytest.raises(Exception):  # noqa: B017 - each backend raises its own error type
            open_video(bad, backend)


def test_read_audio_exact_window_and_padding(tmp_path: Path) -> None:
    sr = 24000
    path = tmp_path / "a.wav"
    sf.write(path, coded_audio(sr * 3), sr, subtype="PCM_16")  # 3 s
    x = read_audio(path, 1.25, 0.5, sr)
    assert x.dtype == np.float32 and x.shape == (12000,)
    assert audio_position(x[0]) == 30000  # sample-exact start
    assert np.all(np.diff(np.round(x * 32768)) == 1)  # contiguous samples
    # Negative start: zeros first, then the file from sample 0.
    y = read_audio(path, -0.1, 0.5, sr)
    assert y.shape == (12000,)
    assert np.all(y[:2400] == 0) and audio_position(y[2400]) == 0
    # Past the end: file tail then zeros.
    z = read_audio(path, 2.75, 0.5, sr)
    assert z.shape == (12000,)
    assert audio_position(z[0]) == (66000 % 65536) and np.all(z[6000:] == 0)
    assert np.all(z[:6000] != 0)
    # Entirely outside.
    assert np.all(read_audio(path, 5.0, 0.5, sr) == 0)


def test_read_audio_resamples_other_rates(tmp_path: Path) -> None:
    path = tmp_path / "b.wav"
    t = np.arange(16000 * 2) / 16000
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    x = read_audio(path, 0.5, 1.0, 24000)
    assert x.shape == (24000,)
    spec = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spec) * 24000 / 24000 - 440) <= 1  # 1 Hz bins over 1 s


def test_reader_cache_lru_and_fork(video: Path, tmp_path: Path) -> None:
    other = write_video(tmp_path / "w.mp4", 16)
    cache = ReaderCache(maxsize=1)
    r1 = cache.get(video)
    assert cache.get(video) is r1
    r2 = cache.get(other)
    assert r2 is not r1 and len(cache) == 1
    # A child process must not reuse the parent's decoder: it gets a fresh one.
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        ok = cache.get(other) is not r2 and len(cache) == 1
        ok = ok and read_code(cache.get(other).get_frames([3])[0]) == 3
        os.write(wfd, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(rfd, 1) == b"1"
    assert cache.get(other) is r2  # the parent keeps its own
    decode.reset_reader_cache()


def test_pyav_seeks_to_the_keyframe_before(video: Path) -> None:
    """Frames 70-73 with keyframes every 16: decoding starts at frame 64, not at 0."""
    with open_video(video, "pyav") as r:
        assert isinstance(r, decode.PyAVReader)
        seen: list[int] = []
        inner = r._frames

        def counting():  # type: ignore[no-untyped-def]
            for f in inner():
                seen.append(r._index(f.pts))
                yield f

        r._frames = counting  # type: ignore[method-assign]
        assert [read_code(f) for f in r.get_frames([70, 71, 72, 73])] == [70, 71, 72, 73]
        assert seen[0] == 64 and seen[-1] == 73  # from the keyframe, and no further than needed
        seen.clear()
        r.get_frames([5, 60])  # far apart: two seeks rather than decoding 6..59
        assert len(seen) < 30, seen


def test_decord_leaves_no_background_decoding(tmp_path: Path) -> None:
    """decord keeps decoding ahead after get_batch unless told to stop; that CPU time would be
    taken from the transforms in the same worker."""
    long = write_video(tmp_path / "long.mp4", 320, height=192, width=256)
    with open_video(long, "decord") as r:
        busy = []
        for start in (10, 100):
            r.get_frames(range(start, start + 8))
            c0 = time.process_time()
            time.sleep(0.05)
            busy.append(time.process_time() - c0)
        assert max(busy) < 0.004, busy
