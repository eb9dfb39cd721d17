"""Choose the video and audio streams of an input, and the output frame size."""

from __future__ import annotations

from fractions import Fraction

import av
from av.stream import Disposition


def _is_default(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & Disposition.default)


def choose_video_stream(
        container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream to convert, or None.

    Cover art (``attached_pic``) is not video. Streams flagged default come first; among those
    (or among all when none is flagged), the most pixels wins, then the lowest index.
    """
    streams = [s for s in container.streams.video
               if not s.disposition & Disposition.attached_pic]
    pool = [s for s in streams if _is_default(s)] or streams
    if not pool:
        return None
    return max(pool, key=lambda s: (s.codec_context.width * s.codec_context.height, -s.index))


def choose_audio_stream(
        container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The audio stream to extract, or None: default-flagged first, then most channels, then
    highest sample rate, then lowest index."""
    streams = list(container.streams.audio)
    pool = [s for s in streams if _is_default(s)] or streams
    if not pool:
        return None

    def size(s: av.audio.stream.AudioStream) -> tuple[int, int, int]:
        cc = s.codec_context
        return (cc.channels or 0, cc.sample_rate or 0, -s.index)

    return max(pool, key=size)


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def output_size(width: int, height: int, short_side: int,
                sample_aspect_ratio: Fraction | None = None) -> tuple[int, int]:
    """``(width, height)`` of the output: square pixels, short side ``short_side``, the other
    side scaled to keep the display aspect ratio and rounded to an even number."""
    sar = Fraction(sample_aspect_ratio) if sample_aspect_ratio else Fraction(1)
    display_w = width * sar
    if display_w <= height:
        return short_side, _even(short_side * height / display_w)
    return _even(short_side * display_w / height), short_side
