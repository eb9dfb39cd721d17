"""Clip timing: where the audio window and the video clip start, and which frames to decode.

Training (AVID/CMA, Morgado et al. CVPR 2021): the audio window (``A`` seconds) is sampled
first, start uniform in ``[0, D - A]``; the video clip (``Tv = num_frames / clip_fps`` seconds)
then starts uniformly in ``[a0 - max_offset, a0 + A - Tv + max_offset]`` clamped to
``[0, Dv - Tv]``, an off-sync augmentation of up to ``max_offset`` seconds.

All times are seconds from the first video frame (the preprocessing contract puts audio time 0
there). The video start is quantized to the video's frame grid and the audio start to the audio
sample grid, so ``video_start``/``audio_start``/``offset_s`` describe exactly what is decoded.
Frame ``k`` of the clip is video frame ``round((v0 + k / clip_fps) * video_fps)``.

Short videos: when the video is shorter than the clip, the start is 0 and frame indices past
the end are clamped (the last frame repeats); when the audio is shorter than the window, the
window starts at 0 and :func:`avssl.data.decode.read_audio` zero-pads the missing tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avssl.config import DataConfig


@dataclass(frozen=True)
class ClipTiming:
    """One clip: ``audio_start``/``video_start`` in seconds, decoded ``frame_indices`` (T,)."""

    audio_start: float
    video_start: float
    frame_indices: np.ndarray

    @property
    def offset_s(self) -> float:
        """Seconds the video clip starts after the audio window (negative: before)."""
        return self.video_start - self.audio_start


@dataclass(frozen=True)
class ClipSampler:
    """Samples :class:`ClipTiming` for one video given its duration, fps and frame count.

    ``num_frames`` frames at ``clip_fps``; ``audio_duration`` seconds of audio at
    ``sample_rate``; off-sync jitter up to ``max_offset`` seconds.
    """

    num_frames: int = 8
    clip_fps: float = 16.0
    audio_duration: float = 2.0
    max_offset: float = 0.5
    sample_rate: int = 24000

    @classmethod
    def from_config(cls, cfg: DataConfig) -> ClipSampler:
        return cls(num_frames=cfg.video.num_frames, clip_fps=cfg.video.fps,
                   audio_duration=cfg.audio.duration, max_offset=cfg.max_offset,
                   sample_rate=cfg.audio.sample_rate)

    @property
    def clip_duration(self) -> float:
        """Tv: seconds spanned by the video clip (``num_frames / clip_fps``)."""
        return self.num_frames / self.clip_fps

    # ------------------------------------------------------------------------------------------
    def frame_indices(self, video_start: float, video_fps: float,
                      video_num_frames: int) -> np.ndarray:
        """int64 (T,) frame indices of the clip starting at ``video_start`` seconds, clamped to
        ``[0, video_num_frames - 1]`` (short videos repeat their last frame)."""
        t = video_start + np.arange(self.num_frames) / self.clip_fps
        idx = np.floor(t * video_fps + 0.5 + 1e-6).astype(np.int64)  # round half up
        return np.clip(idx, 0, max(video_num_frames - 1, 0))

    def _timing(self, audio_start: float, video_frame: int, video_fps: float,
                video_num_frames: int) -> ClipTiming:
        a0 = round(audio_start * self.sample_rate) / self.sample_rate
        v0 = video_frame / video_fps
        return ClipTiming(audio_start=a0, video_start=v0,
                          frame_indices=self.frame_indices(v0, video_fps, video_num_frames))

    @staticmethod
    def _video_limit(video_fps: float, video_num_frames: int, clip_frames: float) -> int:
        """Last start frame that keeps the whole clip inside the video (>= 0)."""
        return max(math.floor(video_num_frames - clip_frames + 1e-6), 0)

    def random(self, rng: np.random.Generator, duration: float, video_fps: float,
               video_num_frames: int) -> ClipTiming:
        """Training clip: random audio window, then a video clip within ``max_offset`` of it.

        ``duration``: seconds of audio available; the video spans ``video_num_frames /
        video_fps`` seconds. The video start is drawn uniformly among the frame-grid positions
        of the allowed interval, so ``|offset_s| <= max_offset`` holds exactly when possible.
        """
        A, Tv = self.audio_duration, self.clip_duration
        a0 = float(rng.uniform(0.0, duration - A)) if duration > A else 0.0
        lo = max(a0 - self.max_offset, 0.0)
        hi = min(a0 + A - Tv + self.max_offset, video_num_frames / video_fps - Tv)
        f_lo, f_hi = math.ceil(lo * video_fps - 1e-6), math.floor(hi * video_fps + 1e-6)
        f_max = self._video_limit(video_fps, video_num_frames, Tv * video_fps)
        if f_lo <= f_hi:
            f = int(rng.integers(f_lo, f_hi + 1))
        else:  # the interval holds no frame (short video or a very short window)
            f = round((lo + hi) / 2 * video_fps)
        return self._timing(a0, min(max(f, 0), f_max), video_fps, video_num_frames)

    def shifted(self, t: ClipTiming, shift_s: float, video_fps: float,
                video_num_frames: int) -> ClipTiming:
        """The clip ``shift_s`` seconds after ``t`` (before, when negative), on the frame grid and
        inside the video; the audio window stays ``t``'s (a view of the same moment's sound)."""
        f_max = self._video_limit(video_fps, video_num_frames, self.clip_duration * video_fps)
        f = math.floor((t.video_start + shift_s) * video_fps + 0.5)
        return self._timing(t.audio_start, min(max(f, 0), f_max), video_fps, video_num_frames)

    def center(self, duration: float, video_fps: float, video_num_frames: int) -> ClipTiming:
        """Evaluation: the video clip centred in the video, audio centred on the clip."""
        return self.uniform(duration, video_fps, video_num_frames, 1)[0]

    def uniform(self, duration: float, video_fps: float, video_num_frames: int,
                k: int) -> list[ClipTiming]:
        """Evaluation: ``k`` clips with starts evenly spaced from the first to the last
        possible start (``k == 1``: the centre clip); each audio window is centred on its clip
        and moved inside the audio when it would leave it (the clip stays inside the window)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        A, Tv = self.audio_duration, self.clip_duration
        f_max = self._video_limit(video_fps, video_num_frames, Tv * video_fps)
        starts = [f_max / 2] if k == 1 else np.linspace(0, f_max, k)
        out = []
        for s in starts:
            f = math.floor(float(s) + 0.5)
            a0 = f / video_fps + Tv / 2 - A / 2
            a0 = min(max(a0, 0.0), duration - A) if duration > A else 0.0
            out.append(self._timing(a0, f, video_fps, video_num_frames))
        return out

    def sample(self, mode: str, rng: np.random.Generator | None, duration: float,
               video_fps: float, video_num_frames: int, clip: int = 0,
               num_clips: int = 1) -> ClipTiming:
        """Dispatch: ``"random"`` (needs ``rng``), ``"center"``, or ``"uniform"`` (clip
        ``clip`` of ``num_clips``)."""
        if mode == "random":
            if rng is None:
                raise ValueError("random clip sampling needs an np.random.Generator")
            return self.random(rng, duration, video_fps, video_num_frames)
        if mode == "center":
            return self.center(duration, video_fps, video_num_frames)
        if mode == "uniform":
            return self.uniform(duration, video_fps, video_num_frames, num_clips)[clip]
        raise ValueError(f"unknown clip mode {mode!r} (random, center, uniform)")
