"""Decoding for ``avssl localize``: a video's frames on the model's time grid (frame ``k`` shows
time ``k / fps``) at display size, and the audio under them."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avssl.data.frame_rate import repeats_until
from avssl.localize.inputs import Item

TIME_EPS = 1e-9  # s: an output time equal to a frame's (float) timestamp up to rounding


class DecodeError(RuntimeError):
    """One video cannot be decoded: recorded as a failure, the run continues."""


@dataclass
class Decoded:
    """Frames on the model's time grid (frame k shows time k / fps) and the audio under them.

    ``frames``: uint8 (N, H, W, 3) at display size; ``audio``: float32 mono at the model's rate,
    sample 0 at the first video frame (None without usable audio); ``info``: what was read.
    """

    frames: np.ndarray
    audio: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


def display_size(width: int, height: int, max_size: int, min_short: int,
                 upscale: bool = False) -> tuple[int, int]:
    """(w, h) to keep frames at: long side at most ``max_size`` unless that would make the short
    side smaller than ``min_short`` (the model input); upscaled to ``min_short`` only when
    ``upscale``; even numbers."""
    s = min(1.0, max_size / max(width, height))
    s = max(s, min_short / min(width, height) if upscale else
            min(1.0, min_short / min(width, height)))
    return max(2, 2 * round(width * s / 2)), max(2, 2 * round(height * s / 2))


def _resize_rgb(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (height, width, 3), bicubic (for display only)."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(
        (width, height), Image.Resampling.BICUBIC))


def _describe(exc: BaseException) -> str:
    """One readable line for an exception."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def decode_raw(path: Path, fps: float, sample_rate: int, max_seconds: float, max_size: int,
               min_short: int, audio_tail_s: float) -> Decoded:
    """Decode a raw video with PyAV by timestamps: frames resampled to ``fps`` (the frame on
    screen at each k / fps), audio resampled to mono ``sample_rate`` and aligned to the first
    frame. The default (else largest) video stream and default (else richest) audio stream are
    used, as by the preprocessor. Raises DecodeError when the video is unreadable; audio
    problems only leave ``audio`` None with ``info["audio_error"]``."""
    import av

    from avssl.preprocess.probe import choose_audio_stream, choose_video_stream

    info: dict[str, Any] = {"decoder": "pyav"}
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DecodeError(f"cannot open: {_describe(e)}") from e
    kmax = max(1, math.floor(max_seconds * fps + 1e-6))
    frames: list[np.ndarray] = []
    with container:
        vs = choose_video_stream(container)
        if vs is None:
            raise DecodeError("no video stream")
        as_ = choose_audio_stream(container)
        info.update(video_stream=vs.index, audio_stream=as_.index if as_ is not None else None,
                    width=vs.codec_context.width, height=vs.codec_context.height)
        rate = vs.average_rate or vs.guessed_rate
        info["source_fps"] = float(rate) if rate else None
        dw, dh = display_size(vs.codec_context.width or 2, vs.codec_context.height or 2,
                              max_size, min_short)
        # No frame threading: closing a frame-threaded decoder after a decode error can hang
        # (seen with PyAV 18 on a corrupt H.264 file); slice threads are safe.
        vs.thread_type = "SLICE"
        # Output frame k (time k / fps) is the last decoded frame whose time is <= k / fps
        # (avssl.data.frame_rate); only frames that are picked get converted to RGB.
        prev: Any = None
        prev_rgb: np.ndarray | None = None
        v0: float | None = None
        last_t = 0.0
        count = 0
        try:
            for frame in container.decode(vs):
                t_abs = frame.time if frame.time is not None else count / (info["source_fps"]
                                                                           or fps)
                count += 1
                if v0 is None:
                    v0 = t_abs
                t = t_abs - v0
                for _ in range(repeats_until(t, fps, len(frames), TIME_EPS, kmax)):
                    if prev_rgb is None:  # before the first frame: show the first frame
                        prev_rgb = _rgb(prev if prev is not None else frame, dw, dh)
                    frames.append(prev_rgb)
                prev, prev_rgb, last_t = frame, None, t
                if len(frames) >= kmax:
                    break
        except (av.FFmpegError, OSError, ValueError) as e:
            raise DecodeError(f"video decode failed after {count} frames: {_describe(e)}") from e
        if prev is None:
            raise DecodeError("video stream has no decodable frames")
        # The last frame stays on screen for one source frame period (at least one frame out).
        end = last_t + 1.0 / (info["source_fps"] or fps)
        for _ in range(max(repeats_until(end, fps, len(frames), TIME_EPS, kmax),
                           0 if frames else 1)):
            prev_rgb = prev_rgb if prev_rgb is not None else _rgb(prev, dw, dh)
            frames.append(prev_rgb)
        info["duration"] = round(float(end), 6)
        info["video_start_s"] = v0
    audio = None
    if as_ is not None:
        try:
            audio = _decode_audio(path, sample_rate, v0 or 0.0,
                                  len(frames) / fps + audio_tail_s)
        except (av.FFmpegError, OSError, ValueError, DecodeError) as e:
            info["audio_error"] = f"audio decode failed: {_describe(e)}"
    return Decoded(np.stack(frames), audio, info)


def _rgb(frame: Any, width: int, height: int) -> np.ndarray:
    """One PyAV video frame as uint8 RGB (height, width, 3)."""
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def _decode_audio(path: Path, sample_rate: int, video_start: float, seconds: float) -> np.ndarray:
    """Mono float32 at ``sample_rate`` on the video's timeline (sample 0 = first video frame),
    ``seconds`` long (zeros where the stream has no audio)."""
    import av

    from avssl.preprocess.probe import choose_audio_stream

    need = round(seconds * sample_rate)
    out = np.zeros(need, np.float32)
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = choose_audio_stream(container)
        if stream is None:
            raise DecodeError("no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        pos: int | None = None

        def put(chunks: list[Any]) -> None:
            nonlocal pos
            for c in chunks:
                x = c.to_ndarray().reshape(-1).astype(np.float32)
                lo, hi = max(pos, 0), min(pos + len(x), need)  # type: ignore[operator]
                if hi > lo:
                    out[lo:hi] = x[lo - pos: hi - pos]  # type: ignore[operator]
                pos += len(x)  # type: ignore[operator]

        for frame in container.decode(stream):
            if pos is None:
                t = frame.time if frame.time is not None else video_start
                pos = round((t - video_start) * sample_rate)
            put(resampler.resample(frame))
            if pos >= need:
                break
        if pos is None:
            raise DecodeError("audio stream has no decodable frames")
        put(resampler.resample(None))
    return out


def decode_prepared(item: Item, fps: float, sample_rate: int, max_seconds: float,
                    max_size: int, min_short: int, audio_tail_s: float,
                    backend: str) -> Decoded:
    """Frames of a prepared video through :func:`avssl.data.decode.open_video` (``backend``)
    and its audio file through :func:`avssl.data.decode.read_audio`."""
    from torchvision.transforms.v2 import functional as TF

    from avssl.data.decode import open_video, read_audio

    try:
        reader = open_video(item.path, backend)
    except Exception as e:  # missing or corrupt file: a failure entry
        raise DecodeError(f"cannot open: {_describe(e)}") from e
    try:
        duration = reader.num_frames / reader.fps
        n = max(1, math.floor(min(duration, max_seconds) * fps + 1e-6))
        idx = [math.floor(k / fps * reader.fps + 1e-6) for k in range(n)]
        dw, dh = display_size(reader.width, reader.height, max_size, min_short)
        chunks = []
        for i in range(0, n, 64):
            x = torch.from_numpy(reader.get_frames(idx[i:i + 64])).permute(0, 3, 1, 2)
            if (dh, dw) != tuple(x.shape[-2:]):
                x = TF.resize(x, [dh, dw], antialias=True)
            chunks.append(x.permute(0, 2, 3, 1).numpy())
        info: dict[str, Any] = {"decoder": backend, "source_fps": reader.fps,
                                "width": reader.width, "height": reader.height,
                                "duration": round(duration, 6)}
    except Exception as e:
        raise DecodeError(f"video decode failed: {_describe(e)}") from e
    finally:
        with contextlib.suppress(Exception):
            reader.close()
    audio = None
    if item.has_audio and item.audio_path is not None:
        try:
            audio = read_audio(item.audio_path, 0.0, n / fps + audio_tail_s, sample_rate)
        except Exception as e:
            info["audio_error"] = f"cannot read {item.audio_path.name}: {_describe(e)}"
    return Decoded(np.concatenate(chunks), audio, info)
