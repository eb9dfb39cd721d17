"""Write real encoded audio-visual files with PyAV (synthetic data, test fixtures, overlays).

Timestamps are set explicitly so a file can carry a known audio/video start offset: the audio
stream's first sample plays at ``audio_start_s`` and the first video frame at ``video_start_s``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avssl.utils.atomic import atomic_path

AUDIO_CODEC_FOR = {".mp4": "aac", ".mkv": "aac", ".mov": "aac", ".avi": "mp3", ".webm": "libopus"}


def write_av(path: str | Path, frames: Iterable[np.ndarray], fps: float,
             audio: np.ndarray | None = None, sample_rate: int = 24000, *,
             video_start_s: float = 0.0, audio_start_s: float = 0.0, gop: int = 16,
             crf: int = 20, video_codec: str = "libx264", audio_codec: str | None = None,
             audio_bitrate: int = 128_000) -> Path:
    """Encode ``frames`` (each uint8 (H, W, 3) RGB, even H and W) and optional mono or
    (C, S) ``audio`` (float32 in [-1, 1]) into ``path``; written atomically.

    ``video_start_s`` / ``audio_start_s`` shift each stream's first timestamp, which is how
    tests build files whose audio starts before or after the first video frame.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format=_format_for(path)) as out:
        vs = out.add_stream(video_codec, rate=rate)
        vs.pix_fmt = "yuv420p"
        vtb = 1 / rate  # the muxer may change vs.time_base once the header is written
        vs.time_base = vtb
        if video_codec == "libx264":
            vs.options = {"crf": str(crf), "preset": "veryfast", "g": str(gop),
                          "keyint_min": str(gop), "sc_threshold": "0", "bf": "0"}
        else:
            vs.codec_context.gop_size = gop
        as_ = None
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim == 1:
                audio = audio[None]
            codec = audio_codec or AUDIO_CODEC_FOR.get(path.suffix.lower(), "aac")
            as_ = out.add_stream(codec, rate=sample_rate)
            as_.layout = "mono" if audio.shape[0] == 1 else "stereo"
            as_.time_base = Fraction(1, sample_rate)
            as_.bit_rate = audio_bitrate
        v_offset = round(video_start_s * rate)
        first = True
        for i, img in enumerate(frames):
            if first:
                vs.height, vs.width = img.shape[:2]
                first = False
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i + v_offset
            vf.time_base = vtb
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        if as_ is not None and audio is not None:
            _encode_audio(out, as_, audio, sample_rate, round(audio_start_s * sample_rate))
    return path


def _encode_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                  audio: np.ndarray, sample_rate: int, pts0: int) -> None:
    fmt = stream.codec_context.codec.audio_formats[0].name  # e.g. fltp for aac
    chunk = stream.codec_context.frame_size or 1024
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    resampler = None
    for start in range(0, audio.shape[1], chunk):
        block = np.ascontiguousarray(audio[:, start:start + chunk])
        if block.shape[1] < chunk:
            block = np.pad(block, ((0, 0), (0, chunk - block.shape[1])))
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.time_base = Fraction(1, sample_rate)
        frame.pts = pts0 + start
        if fmt != "fltp":
            resampler = resampler or av.AudioResampler(format=fmt, layout=layout, rate=sample_rate)
            for f in resampler.resample(frame):
                f.pts = pts0 + start
                out.mux(stream.encode(f))
        else:
            out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _format_for(path: Path) -> str | None:
    return {".mkv": "matroska", ".mp4": "mp4", ".avi": "avi", ".mov": "mov",
            ".webm": "webm"}.get(path.suffix.lower())
