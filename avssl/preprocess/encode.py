"""Convert one input: constant-fps H.264 video (no audio) plus a mono 16-bit audio file.

Both streams are decoded in one demux pass. Time 0 of every output is the first video frame:
output video frame ``k`` shows the source frame on screen at ``k / fps`` and the audio is shifted
(zeros padded or leading samples dropped) by the difference between the first decoded audio and
video frame times. Decoded frame timestamps are used, never ``stream.start_time`` (garbage in
some MP4 files).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf
from av.video.frame import PictureType

from avssl.data.frame_rate import repeats_until
from avssl.data.level import rms_dbfs
from avssl.preprocess.probe import choose_audio_stream, choose_video_stream, output_size
from avssl.utils.atomic import atomic_path

CRF = "20"  # visually transparent at training resolutions; x264's default is 23
PRESET = "veryfast"  # most of the speed of ultrafast at clearly smaller files
REORDER_WINDOW = 8  # decoded frames held back to sort timestamps (AVI packed B-frames)
AUDIO_GAP_S = 0.05  # a hole in audio timestamps longer than this is filled with silence


@dataclass(frozen=True)
class EncodeSettings:
    """Output format: ``fps`` (frames/s), ``short_side`` (pixels, even), ``sample_rate`` (Hz),
    ``gop`` (frames between keyframes), ``audio_format`` (``wav`` or ``flac``), ``threads``
    (codec threads for this process)."""

    fps: float = 16.0
    short_side: int = 256
    sample_rate: int = 24000
    gop: int = 16
    audio_format: str = "wav"
    threads: int = 1


class ConversionError(Exception):
    """An input that cannot be converted; ``str()`` is the readable one-line reason and
    ``error`` the name of the underlying error type."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(reason)
        self.error = error


def describe(exc: BaseException) -> str:
    """One readable line for an exception (FFmpeg errors without the errno noise)."""
    text = getattr(exc, "strerror", None) if isinstance(exc, av.FFmpegError) else None
    text = text or str(exc) or type(exc).__name__
    return " ".join(text.split())


class _PtsReorder:
    """Sort presentation timestamps within a small window.

    Decoders return frames in display order, but some containers (AVI with packed B-frames)
    attach the timestamps permuted: 1, 2, 4, 3, 5, 7, 6, ... The set of timestamps is right, so
    the k-th frame out gets the k-th smallest timestamp. Frames without one get the previous
    timestamp plus one frame duration.
    """

    def __init__(self, window: int = REORDER_WINDOW) -> None:
        self.window = window
        self.frames: list[av.VideoFrame] = []
        self.heap: list[int] = []
        self.last: int | None = None

    def push(self, frame: av.VideoFrame) -> list[tuple[int, av.VideoFrame]]:
        pts = frame.pts
        if pts is None:
            pts = 0 if self.last is None else self.last + max(1, frame.duration or 1)
        self.last = pts if self.last is None else max(self.last, pts)
        self.frames.append(frame)
        heapq.heappush(self.heap, pts)
        out = []
        while len(self.frames) > self.window:
            out.append((heapq.heappop(self.heap), self.frames.pop(0)))
        return out

    def drain(self) -> list[tuple[int, av.VideoFrame]]:
        out = [(heapq.heappop(self.heap), f) for f in self.frames]
        self.frames = []
        return out


class VideoSink:
    """Frame-rate conversion and H.264 encoding into an MP4 without audio.

    Output frame ``k`` is the last source frame whose time (from the first frame) is <= k/fps
    (:mod:`avssl.data.frame_rate`); the output ends when the last source frame's display time
    ends. Exact fractions avoid off-by-one picks when output and source times coincide.
    """

    def __init__(self, path: Path, stream: av.video.stream.VideoStream,
                 settings: EncodeSettings) -> None:
        self.path = path
        self.stream = stream
        self.settings = settings
        self.fps = Fraction(settings.fps).limit_denominator(1001)
        self.reorder = _PtsReorder()
        self.decoded = 0  # frames out of the decoder (for error messages)
        self.written = 0  # output frames encoded
        self.pts0: int | None = None
        self.time_base: Fraction = stream.time_base or Fraction(1, 90000)  # of decoded frames
        self.current: av.VideoFrame | None = None
        self.current_t = Fraction(0)
        self.last_spacing: Fraction | None = None
        self.out: av.container.OutputContainer | None = None
        self.out_stream: av.video.stream.VideoStream | None = None
        self.size: tuple[int, int] | None = None
        self.end_time = Fraction(0)

    @property
    def start_time(self) -> float:
        """Source time of the first frame in seconds (the zero of all outputs)."""
        return float((self.pts0 or 0) * self.time_base)

    @property
    def duration(self) -> float:
        """Source video duration in seconds, from the first frame to the end of the last."""
        return float(self.end_time)

    def push(self, frame: av.VideoFrame) -> None:
        self.decoded += 1
        for pts, f in self.reorder.push(frame):
            self._show(pts, f)

    def finish(self) -> None:
        """Flush the reorder window, write the last frame's repeats and flush the encoder."""
        for pts, f in self.reorder.drain():
            self._show(pts, f)
        if self.current is None:
            return
        self.end_time = self._end_time()
        self._emit(self.current, self._advance(self.end_time))
        self.current = None
        assert self.out is not None and self.out_stream is not None
        self.out.mux(self.out_stream.encode(None))

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None

    def _show(self, pts: int, frame: av.VideoFrame) -> None:
        if self.pts0 is None:
            self.pts0 = pts
        t = (pts - self.pts0) * self.time_base
        if self.current is not None:
            if t > self.current_t:
                self.last_spacing = t - self.current_t
            self._emit(self.current, self._advance(t))
        self.current, self.current_t = frame, max(t, self.current_t)

    def _advance(self, t: Fraction) -> int:
        """How many output frames fall before source time ``t`` and are still unwritten."""
        return repeats_until(t, self.fps, self.written)

    def _end_time(self) -> Fraction:
        assert self.current is not None
        duration = Fraction(self.current.duration or 0) * self.time_base
        if duration <= 0:
            rate = self.stream.average_rate or self.stream.guessed_rate
            duration = self.last_spacing or (1 / Fraction(rate) if rate else 1 / self.fps)
        return self.current_t + duration

    def _emit(self, frame: av.VideoFrame, repeats: int) -> None:
        if repeats <= 0:
            return
        if self.out is None:
            self._open(frame)
        assert self.out is not None and self.out_stream is not None and self.size is not None
        img = frame.reformat(self.size[0], self.size[1], "yuv420p", interpolation="BICUBIC")
        img.pict_type = PictureType.NONE  # a source I-frame must not force an output keyframe
        img.time_base = 1 / self.fps
        for _ in range(repeats):
            img.pts = self.written
            self.out.mux(self.out_stream.encode(img))
            self.written += 1

    def _open(self, frame: av.VideoFrame) -> None:
        sar = self.stream.codec_context.sample_aspect_ratio
        self.size = output_size(frame.width, frame.height, self.settings.short_side, sar)
        self.out = av.open(str(self.path), "w", format="mp4")
        st = self.out.add_stream("libx264", rate=self.fps)
        st.width, st.height = self.size
        st.pix_fmt = "yuv420p"
        st.time_base = 1 / self.fps
        gop = str(self.settings.gop)
        st.options = {"crf": CRF, "preset": PRESET, "g": gop, "keyint_min": gop,
                      "sc_threshold": "0", "bf": "0", "threads": str(self.settings.threads)}
        self.out_stream = st


class AudioSink:
    """Decoded audio -> mono float32 at ``sample_rate``, remembering when the first sample plays.

    Resampling goes through ``av.AudioResampler`` to planar float at the source layout (at most
    stereo); channels are then averaged. (Swresample's own stereo->mono mix sums at 0.707 per
    channel, +3 dB that clips correlated full-scale audio.) A new resampler is made when the
    input format changes mid-stream, and holes in the timestamps become silence.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.chunks: list[np.ndarray] = []
        self.start: float | None = None
        self.expected: float | None = None  # source time where the next frame should start
        self.decoded_s = 0.0
        self.error: str | None = None
        self.resampler: av.AudioResampler | None = None
        self.signature: tuple[str, str, int] | None = None

    def push(self, frame: av.AudioFrame) -> None:
        t = float(frame.time) if frame.pts is not None and frame.time is not None else self.expected
        if self.start is None:
            self.start = t
        if t is not None and self.expected is not None and t - self.expected > AUDIO_GAP_S:
            self._flush()
            self.chunks.append(np.zeros(round((t - self.expected) * self.sample_rate), np.float32))
        step = frame.samples / frame.sample_rate
        self.expected = (t if t is not None else 0.0) + step
        self.decoded_s += step
        signature = (frame.format.name, frame.layout.name, frame.sample_rate)
        if signature != self.signature:
            self._flush()
            layout = "mono" if frame.layout.nb_channels == 1 else "stereo"
            self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.sample_rate)
            self.signature = signature
        assert self.resampler is not None
        for out in self.resampler.resample(frame):
            self._add(out)

    def fail(self, reason: str) -> None:
        self.error = reason

    def finish(self) -> np.ndarray:
        """All samples (float32, mono); raises ValueError when empty or not finite."""
        self._flush()
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        if samples.size == 0:
            raise ValueError("no audio samples decoded")
        if not np.all(np.isfinite(samples)):
            raise ValueError("decoded audio contains NaN or infinite values")
        return samples

    def _flush(self) -> None:
        if self.resampler is not None:
            for out in self.resampler.resample(None):
                self._add(out)
            self.resampler = None
            self.signature = None

    def _add(self, frame: av.AudioFrame) -> None:
        arr = frame.to_ndarray()  # planar: (channels, samples)
        self.chunks.append(arr.mean(axis=0, dtype=np.float32) if arr.shape[0] > 1 else arr[0])


def _decode_all(container: av.container.InputContainer, vs: av.video.stream.VideoStream,
                as_: av.audio.stream.AudioStream | None, video: VideoSink,
                audio: AudioSink | None) -> None:
    """One demux pass feeding both sinks. Video errors raise ConversionError; audio errors
    only mark the audio sink as failed (the video is still worth keeping)."""
    packets = container.demux(vs, as_) if as_ is not None else container.demux(vs)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except (av.FFmpegError, OSError) as e:
            raise ConversionError(f"read failed after {video.decoded} video frames: {describe(e)}",
                                  type(e).__name__) from e
        if packet.stream.index == vs.index:
            try:
                frames = packet.decode()
            except (av.FFmpegError, OSError, ValueError) as e:
                raise ConversionError(
                    f"video decode failed after {video.decoded} frames: {describe(e)}",
                    type(e).__name__) from e
            for frame in frames:
                video.push(frame)
        elif audio is not None and audio.error is None:
            try:
                for frame in packet.decode():
                    audio.push(frame)
            except (av.FFmpegError, OSError, ValueError) as e:
                audio.fail(f"audio decode failed after {audio.decoded_s:.2f} s: {describe(e)}")


def _align(samples: np.ndarray, shift_s: float, sample_rate: int) -> np.ndarray:
    """Put the first video frame at sample 0: pad zeros when audio starts later (shift > 0),
    drop leading samples when it starts earlier."""
    n = round(abs(shift_s) * sample_rate)
    if shift_s > 0:
        return np.concatenate([np.zeros(n, np.float32), samples])
    return samples[n:]


def write_audio(path: Path, samples: np.ndarray, sample_rate: int, audio_format: str) -> None:
    """Write mono float samples as 16-bit PCM WAV or FLAC, atomically."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), pcm, sample_rate, subtype="PCM_16", format=audio_format.upper())


def _threads(stream: av.stream.Stream, threads: int) -> None:
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads


def convert(src: Path, dst: Path, id_: str, source: str,
            settings: EncodeSettings) -> dict[str, Any]:
    """Convert ``src`` into ``dst/videos/<id>.mp4`` (+ ``dst/audio/<id>.<fmt>``); return the
    manifest row. Raises ConversionError (or any other exception) when the input is unusable."""
    video_rel = f"videos/{id_}.mp4"
    try:
        container = av.open(str(src), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise ConversionError(f"cannot open: {describe(e)}", type(e).__name__) from e
    with container:
        vs = choose_video_stream(container)
        if vs is None:
            raise ConversionError("no video stream", "NoVideoStream")
        as_ = choose_audio_stream(container)
        # Read indices now: stream objects must not be touched once the container is closed.
        video_index, audio_index = vs.index, (as_.index if as_ is not None else None)
        _threads(vs, settings.threads)
        audio = AudioSink(settings.sample_rate) if as_ is not None else None
        with atomic_path(dst / video_rel) as tmp:
            video = VideoSink(tmp, vs, settings)
            try:
                _decode_all(container, vs, as_, video, audio)
                video.finish()
            finally:
                video.close()
            if video.written == 0:
                raise ConversionError("video stream has no decodable frames", "EmptyVideo")
    assert video.size is not None
    row: dict[str, Any] = {
        "id": id_, "path": video_rel, "duration": round(video.duration, 6),
        "fps": float(settings.fps), "num_frames": video.written,
        "width": video.size[0], "height": video.size[1],
        "has_audio": False, "audio_path": None, "sample_rate": None, "audio_rms_db": None,
        "source": source, "video_stream": video_index, "audio_stream": audio_index,
        "audio_shift_s": None,
    }
    if audio is not None:
        row.update(_finish_audio(audio, video.start_time, dst, id_, settings))
    return row


def _finish_audio(audio: AudioSink, video_start: float, dst: Path, id_: str,
                  settings: EncodeSettings) -> dict[str, Any]:
    """Align and write the audio; the row fields it sets (``audio_error`` when it failed)."""
    try:
        if audio.error is not None:
            raise ValueError(audio.error)
        samples = audio.finish()
        shift = (audio.start if audio.start is not None else video_start) - video_start
        samples = _align(samples, shift, settings.sample_rate)
        if samples.size == 0:
            raise ValueError("audio ends before the first video frame")
    except ValueError as e:
        return {"audio_error": describe(e)}
    rel = f"audio/{id_}.{settings.audio_format}"
    write_audio(dst / rel, samples, settings.sample_rate, settings.audio_format)
    quantized = np.round(np.clip(samples, -1.0, 1.0) * 32767.0) / 32767.0
    return {"has_audio": True, "audio_path": rel, "sample_rate": settings.sample_rate,
            "audio_rms_db": round(rms_dbfs(quantized), 2), "audio_shift_s": round(shift, 6)}


__all__ = ["ConversionError", "EncodeSettings", "convert", "describe", "write_audio"]
