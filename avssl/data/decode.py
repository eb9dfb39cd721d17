"""Decoding backends: random access to video frames (PyAV or decord) and audio windows.

Both video backends share one interface (:class:`VideoReader`): ``fps``, ``num_frames``,
``width``, ``height`` and ``get_frames(indices) -> uint8 (T, H, W, 3) RGB``. Frame ``k`` is the
frame shown at ``k / fps`` seconds after the first frame (prepared videos have a constant fps).

Readers hold open FFmpeg contexts, which must not cross a ``fork``: :func:`get_reader` keeps a
small per-process LRU cache that forgets (without closing) whatever a parent process opened, so
each DataLoader worker opens its own files lazily.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

BACKENDS = ("pyav", "decord")


class VideoReader:
    """Random access to the frames of one video file (abstract base)."""

    path: str
    fps: float
    num_frames: int
    width: int
    height: int

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 (T, H, W, 3) RGB frames at ``indices`` (any order, repeats allowed; indices
        past the end give the last frame, negative ones the first)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _clamp(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError(f"{self.path}: no frame indices requested")
        return np.clip(idx, 0, max(self.num_frames - 1, 0))

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, fps={self.fps:g}, "
                f"num_frames={self.num_frames}, size={self.width}x{self.height})")


class PyAVReader(VideoReader):
    """PyAV backend: seek to the keyframe at or before the first wanted frame, decode forward.

    The frame index of a decoded frame is ``round((pts - start_time) * time_base * fps)``, so it
    does not depend on where the seek landed. Only the wanted frames are converted to RGB.
    """

    def __init__(self, path: str | Path, threads: int = 1, seek_gap: int = 32) -> None:
        import av
        import av.video.reformatter

        self.path = str(path)
        self._container = av.open(self.path)
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"{self.path}: no video stream")
        s = self._container.streams.video[0]
        # One DataLoader worker is one process: extra decoder threads only oversubscribe cores.
        s.codec_context.thread_count = threads
        if threads != 1:
            s.thread_type = "AUTO"
        self._stream = s
        rate = s.average_rate or s.guessed_rate
        if not rate:
            raise ValueError(f"{self.path}: unknown frame rate")
        self.fps = float(rate)
        self._tb = float(s.time_base)
        self._t0 = s.start_time or 0
        self.width = s.codec_context.width
        self.height = s.codec_context.height
        n = s.frames
        if not n:  # some containers do not store a frame count
            dur = (s.duration * self._tb) if s.duration else (self._container.duration or 0) / 1e6
            n = round(dur * self.fps)
        self.num_frames = int(n)
        # A gap of more than this many frames between wanted frames triggers a new seek.
        self._seek_gap = seek_gap
        # One reformatter (swscale context) for the file: frame.to_ndarray(format=...) builds
        # a new one for every frame, which costs more than decoding the frame.
        self._rgb = av.video.reformatter.VideoReformatter()

    def _index(self, pts: int | None) -> int:
        return round((pts - self._t0) * self._tb * self.fps) if pts is not None else -1

    def _seek(self, index: int) -> None:
        target = self._t0 + int(index / self.fps / self._tb)
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = self._clamp(indices)
        wanted = np.unique(idx)  # sorted
        got: dict[int, np.ndarray] = {}
        pos = 0  # next entry of `wanted` to fill
        while pos < len(wanted):
            pos = self._decode_run(wanted, pos, got)
        return np.stack([got[int(i)] for i in idx])

    def _decode_run(self, wanted: np.ndarray, pos: int, got: dict[int, np.ndarray],
                    from_start: bool = False) -> int:
        """Seek before ``wanted[pos]`` and decode forward, filling ``got``; return the new pos.

        Stops at the end of ``wanted`` or when the next wanted frame is more than ``seek_gap``
        frames ahead (a fresh seek is cheaper than decoding the gap).
        """
        self._seek(0 if from_start else int(wanted[pos]))
        first = True
        last: np.ndarray | None = None
        for frame in self._frames():
            cur = self._index(frame.pts)
            if first and cur > wanted[pos] and not from_start:
                # The seek landed after the target (a bad index): decode from the start.
                return self._decode_run(wanted, pos, got, from_start=True)
            first = False
            if cur < wanted[pos]:
                continue
            # cur >= wanted[pos]: fill every wanted index up to cur (a frame missing from the
            # stream is replaced by the next one rather than left out).
            last = self._to_rgb(frame)
            while pos < len(wanted) and wanted[pos] <= cur:
                got[int(wanted[pos])] = last
                pos += 1
            if pos == len(wanted) or wanted[pos] - cur > self._seek_gap:
                return pos
        # End of stream before every wanted frame: the file has fewer frames than its header
        # says. Clamp to the last frame that exists.
        if last is None:
            last = self._last_frame()
        for w in wanted[pos:]:
            got[int(w)] = last
        return len(wanted)

    def _to_rgb(self, frame: Any) -> np.ndarray:
        """uint8 (H, W, 3) RGB of an av.VideoFrame."""
        return self._rgb.reformat(frame, format="rgb24").to_ndarray()

    def _frames(self) -> Iterator[Any]:  # av.VideoFrame
        for packet in self._container.demux(self._stream):
            yield from packet.decode()

    def _last_frame(self) -> np.ndarray:
        """Decode the whole stream from the start and keep its last frame (a broken header)."""
        self._container.seek(self._t0, stream=self._stream, backward=True, any_frame=False)
        last = None
        for frame in self._container.decode(self._stream):
            last = frame
        if last is None:
            raise RuntimeError(f"{self.path}: no video frame could be decoded")
        self.num_frames = self._index(last.pts) + 1
        return self._to_rgb(last)

    def close(self) -> None:
        self._container.close()


class DecordReader(VideoReader):
    """decord backend (its own keyframe index and seek; frames are counted in pts order)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import decord

        self.path = str(path)
        self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=threads)
        self.fps = float(self._vr.get_avg_fps())
        self.num_frames = len(self._vr)
        if self.num_frames == 0:
            raise ValueError(f"{self.path}: no video frames")
        # decord has no public width/height without decoding; read them from the first frame
        # lazily so opening stays cheap.
        self._shape: tuple[int, int] | None = None

    @property
    def height(self) -> int:  # type: ignore[override]
        return self._frame_shape()[0]

    @property
    def width(self) -> int:  # type: ignore[override]
        return self._frame_shape()[1]

    def _frame_shape(self) -> tuple[int, int]:
        if self._shape is None:
            h, w = self._vr.get_batch([0]).shape[1:3]
            self._vr.seek(0)  # stop decoding ahead (see get_frames)
            self._shape = (int(h), int(w))
        return self._shape

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = self._clamp(indices)
        wanted, inverse = np.unique(idx, return_inverse=True)
        frames = self._vr.get_batch(wanted.tolist()).asnumpy()
        # decord's decoder thread keeps decoding ahead after get_batch (tens of ms of CPU per
        # call, stolen from the transforms); seeking back to the first keyframe stops it
        # (dmlc/decord#197, #208).
        self._vr.seek(0)
        if self._shape is None:
            self._shape = (frames.shape[1], frames.shape[2])
        return frames[inverse] if len(wanted) != len(idx) or not np.all(wanted == idx) else frames

    def close(self) -> None:
        self._vr = None  # decord closes the file when the reader is collected


def open_video(path: str | Path, backend: str = "pyav", threads: int = 1) -> VideoReader:
    """Open ``path`` with ``backend`` ("pyav" or "decord"); ``threads`` decoder threads."""
    if backend == "pyav":
        return PyAVReader(path, threads=threads)
    if backend == "decord":
        return DecordReader(path, threads=threads)
    raise ValueError(f"unknown video backend {backend!r} (choose from {list(BACKENDS)})")


# ----------------------------------------------------------------------------------------------
# Per-process reader cache
# ----------------------------------------------------------------------------------------------
class ReaderCache:
    """LRU cache of open :class:`VideoReader` keyed by (backend, path), valid in one process.

    After a fork the child finds the parent's pid and sets the inherited readers aside without
    touching them (their FFmpeg state belongs to the parent), then opens its own.
    """

    def __init__(self, maxsize: int = 8) -> None:
        self.maxsize = maxsize
        self._pid = os.getpid()
        self._readers: OrderedDict[tuple[str, str], VideoReader] = OrderedDict()

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            self._abandon()

    def _abandon(self) -> None:
        """Forget the readers without ever freeing them in this process: freeing an FFmpeg
        context inherited through fork can deadlock on a lock another thread of the parent
        held at fork time (seen in DataLoader workers), so they stay referenced."""
        _INHERITED.append(self._readers)
        self._readers = OrderedDict()
        self._pid = os.getpid()

    def get(self, path: str | Path, backend: str = "pyav") -> VideoReader:
        self._check_pid()
        key = (backend, str(path))
        reader = self._readers.get(key)
        if reader is not None:
            self._readers.move_to_end(key)
            return reader
        reader = open_video(path, backend)
        self._readers[key] = reader
        while len(self._readers) > self.maxsize:
            _, old = self._readers.popitem(last=False)
            old.close()
        return reader

    def evict(self, path: str | Path, backend: str = "pyav") -> None:
        """Close and forget one reader (after a decoding error, its state is suspect)."""
        self._check_pid()
        reader = self._readers.pop((backend, str(path)), None)
        if reader is not None:
            with contextlib.suppress(Exception):  # a broken reader may fail to close
                reader.close()

    def clear(self, close: bool = True) -> None:
        """Forget every reader; ``close=False`` when they may belong to another process."""
        if close and os.getpid() == self._pid:
            for r in self._readers.values():
                r.close()
            self._readers = OrderedDict()
        else:
            self._abandon()

    def __len__(self) -> int:
        self._check_pid()
        return len(self._readers)


_INHERITED: list[OrderedDict[tuple[str, str], VideoReader]] = []  # see ReaderCache._abandon
_CACHE = ReaderCache()


def get_reader(path: str | Path, backend: str = "pyav") -> VideoReader:
    """An open reader for ``path`` from this process's cache (opened on first use)."""
    return _CACHE.get(path, backend)


def evict_reader(path: str | Path, backend: str = "pyav") -> None:
    _CACHE.evict(path, backend)


def reset_reader_cache() -> None:
    """Set every cached reader aside without closing it (DataLoader ``worker_init_fn``)."""
    _CACHE.clear(close=False)


# ----------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------
def read_audio(path: str | Path, start_s: float, duration_s: float,
               sample_rate: int) -> np.ndarray:
    """float32 mono (S,) with ``S = round(duration_s * sample_rate)`` samples from ``start_s``.

    Only the needed frames are read. The parts of the window outside the file (a negative
    start, or past the end) are zeros. Channels are averaged. A file at another rate is read over
    the same time span and resampled (prepared audio is already at the right rate).
    """
    import soundfile as sf

    n_out = round(duration_s * sample_rate)
    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        start = round(start_s * sr)
        n = round(duration_s * sr) if sr != sample_rate else n_out
        lo, hi = max(start, 0), min(start + n, f.frames)
        out = np.zeros(n, dtype=np.float32)
        if hi > lo:
            f.seek(lo)
            data = f.read(hi - lo, dtype="float32", always_2d=True)
            out[lo - start: lo - start + len(data)] = data.mean(axis=1) if data.shape[1] > 1 \
                else data[:, 0]
    if sr != sample_rate:
        import torch
        import torchaudio.functional as AF

        res = AF.resample(torch.from_numpy(out), sr, sample_rate).numpy()
        out = np.zeros(n_out, dtype=np.float32)
        out[: min(n_out, len(res))] = res[:n_out]
    return out
