"""``avssl localize INPUT --checkpoint CKPT --out DIR``: where is the sound in these videos?

INPUT is a video file, a folder (searched recursively for video files) or a prepared
``manifest.jsonl`` (video + audio file per row; rows with ``boxes`` carry ground truth).

Per video, the first ``--max-seconds`` are cut into consecutive clips of the model's geometry
(``data.video.num_frames`` frames at ``data.video.fps``), each paired with the audio window of the
model (``data.audio.duration`` s, mono, ``data.audio.sample_rate``) centred on the clip. Frames
are taken by timestamp (the frame on screen at ``k / fps``), so any source frame rate works; the
whole frame is used (short side resized to ``--short-side``, default ``data.video.resize``,
aspect kept), so the map covers the whole picture. For each clip: the cosine map
(:mod:`avssl.localize.maps`), its confidence, the peak, and a decision: "source",
"no visible source" (confidence below the threshold) or "silent audio" (RMS below
``--silence-db``).

The confidence (default ``specificity``, see :mod:`avssl.localize.maps`) compares each clip's
map with the maps of the same frames under other videos' sounds, so it needs 2+ videos with
audio (at least ``MIN_NULL`` audible windows in the others); a single video falls back to the
map-only ``contrast``. The threshold is calibrated on the run's own videos when it can (see
:func:`avssl.localize.maps.calibrate_threshold`), else ``--threshold``, ``--calibration FILE``
(``summary.json`` of an earlier run) or the uncalibrated default, and is stored in every JSON.

Outputs in ``DIR/<name>/``: ``frame_XX.png`` (``--num-frames`` evenly spaced overlays),
``contact_sheet.png``, ``overlay.mp4`` (every localized frame at the model's fps, with the
audio), ``result.json``; ``DIR/summary.json`` holds the counts per outcome, the calibration and,
with ground truth (manifest ``boxes`` or ``--boxes FILE``: Flickr XML, VGG-SS JSON, our
JSON/JSONL), cIoU@0.5 / AUC with the binarization's name beside the whole-image, centre and
random baselines, and how often a clip or video whose source the ground truth shows on
screen was called "no visible source" (``source_decision``). Outcomes per video: "localized"
(a source in at least one clip), "no visible source", "silent audio", "no audio" (no usable
audio stream: no heatmap) and "failed" (unreadable file: the run goes on). Exit code 0 when at
least one video was processed, 1 when every video failed, 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avssl.eval.gt import BoxAnnotation, GroundTruthError, find, load_boxes
from avssl.eval.localization import (
    BINARIZATIONS,
    binarize,
    ciou,
    evaluate_with_baselines,
    format_table,
)
from avssl.localize.maps import (
    CONFIDENCE_KINDS,
    DECISION_NONE,
    DECISION_SILENT,
    DECISION_SOURCE,
    MIN_NULL,
    NULL_PER_CLIP,
    SILENCE_DB,
    Calibration,
    audio_embedding,
    calibrate_threshold,
    cosine_maps,
    decide,
    map_stats,
    null_specificities,
    peak_location,
    rms_dbfs,
    source_confidence,
    specificity,
    upsample,
    video_embedding_grid,
)

OUTCOMES = ("localized", "no visible source", "silent audio", "no audio", "failed")
FALLBACK_VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
    ".ts", ".mts", ".m2ts", ".ogv",
})
MISMATCHED_PER_CLIP = 4  # other-video audio windows paired with each clip for calibration


class LocalizeError(ValueError):
    """Bad input (missing file, unusable checkpoint, bad boxes file): one line, exit code 2."""


class DecodeError(RuntimeError):
    """One video cannot be decoded: recorded as a failure, the run continues."""


# ----------------------------------------------------------------------------------------------
# Options, inputs
# ----------------------------------------------------------------------------------------------
@dataclass
class Options:
    """Everything ``avssl localize`` can be told (see :func:`add_arguments` for the meaning)."""

    binarization: str = "top50"
    num_frames: int = 8
    backend: str = "pyav"
    threshold: float | None = None
    calibration_file: str | None = None
    confidence: str = "specificity"
    percentile: float = 95.0
    silence_db: float = SILENCE_DB
    max_seconds: float = 30.0
    short_side: int | None = None
    max_size: int = 480
    min_display: int = 256
    eval_size: int = 224
    alpha: float = 0.5
    batch_size: int = 8
    device: str | None = None
    write_video: bool = True
    audio_stats: str | None = None
    seed: int = 0
    progress: bool = True  # a progress bar over the videos (on a terminal)


@dataclass
class Item:
    """One input video. ``audio_path`` is set for prepared (manifest) rows."""

    name: str
    path: Path
    prepared: bool = False
    audio_path: Path | None = None
    has_audio: bool | None = None
    annotation: BoxAnnotation | None = None


def _video_extensions() -> frozenset[str]:
    try:  # the preprocessor's list, so both commands accept the same files
        from avssl.preprocess.scan import VIDEO_EXTENSIONS

        return frozenset(VIDEO_EXTENSIONS)
    except ImportError:  # pragma: no cover
        return FALLBACK_VIDEO_EXTENSIONS


def collect_inputs(source: str | Path, boxes: str | Path | None = None) -> list[Item]:
    """The videos named by INPUT (file, folder, or manifest.jsonl), with their ground truth."""
    from avssl.data.manifest import ManifestError, make_id, read_manifest, resolve

    src = Path(source)
    annotations: dict[str, BoxAnnotation] = {}
    if boxes is not None:
        try:
            annotations = load_boxes(boxes)
        except (GroundTruthError, ValueError) as e:
            raise LocalizeError(f"--boxes: {e}") from None
    if not src.exists():
        raise LocalizeError(f"{src}: input not found")
    items: list[Item] = []
    if src.is_file() and src.suffix.lower() == ".jsonl":
        try:
            rows = read_manifest(src)
        except ManifestError as e:
            raise LocalizeError(str(e)) from None
        for row in rows:
            try:
                ann = BoxAnnotation.from_row(row)
            except GroundTruthError as e:
                raise LocalizeError(f"{src}: {e}") from None
            ann = find(annotations, row["id"], row["path"]) or ann
            audio = resolve(src, row.get("audio_path"))
            items.append(Item(row["id"], resolve(src, row["path"]), True, audio,
                              bool(row.get("has_audio")) and audio is not None, ann))
    elif src.is_dir():
        exts = _video_extensions()
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in exts
                       and not any(part.startswith(".") for part in p.relative_to(src).parts))
        if not files:
            raise LocalizeError(f"{src}: no video files found")
        for p in files:
            rel = p.relative_to(src)
            items.append(Item(make_id(rel), p, annotation=find(annotations, rel, p.name)))
    else:
        items.append(Item(make_id(src.name), src, annotation=find(annotations, src.name)))
    return items


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------
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
        # Output frame k (time k / fps) is the last decoded frame whose time is <= k / fps;
        # only frames that are picked get converted to RGB.
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
                while len(frames) < kmax and len(frames) / fps < t - 1e-9:
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
        # The last frame stays on screen for one source frame period.
        end = last_t + 1.0 / (info["source_fps"] or fps)
        while len(frames) < kmax and (len(frames) / fps < end - 1e-9 or not frames):
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


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def load_model(checkpoint: str | Path, device: torch.device | str = "cpu",
               audio_stats: str | None = None) -> tuple[torch.nn.Module, Any]:
    """AVEncoders (eval mode, on ``device``) and the Config of one of our checkpoints.

    Only the ``encoders.*`` weights are used (memory banks and optimizer state are ignored), so
    AVID and CMA checkpoints and converted published weights all work.
    """
    from avssl.methods.base import AVEncoders
    from avssl.models.loading import PARTS, load_encoders
    from avssl.utils.checkpoint import CheckpointError

    try:
        parts, cfg = load_encoders(checkpoint, PARTS)
    except CheckpointError as e:
        raise LocalizeError(str(e)) from None
    assert cfg is not None  # load_encoders requires a config by default
    if audio_stats is not None:
        cfg.data.audio.stats = audio_stats
    if cfg.data.audio.stats and not Path(cfg.data.audio.stats).is_file():
        raise LocalizeError(f"{checkpoint}: the model's audio statistics "
                            f"{cfg.data.audio.stats} are missing (pass --audio-stats FILE)")
    cfg.model.video.pretrained = cfg.model.audio.pretrained = None  # the checkpoint has them
    with torch.device("meta"):  # no weights: every part is replaced by a loaded one
        enc = AVEncoders(cfg)
    for name, module in parts.items():
        setattr(enc, name, module)
    return enc.eval().to(device), cfg


# ----------------------------------------------------------------------------------------------
# Phase 1: embeddings of every clip
# ----------------------------------------------------------------------------------------------
@dataclass
class Work:
    """Per-video state between the embedding pass and the rendering pass."""

    item: Item
    out_dir: Path
    outcome: str | None = None  # "failed" / "no audio" decided early
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    n_frames: int = 0
    frames_file: Path | None = None
    audio_file: Path | None = None
    clips: list[dict[str, Any]] = field(default_factory=list)
    grid: torch.Tensor | None = None  # (C, D, T', H', W')
    audio_emb: torch.Tensor | None = None  # (C, D)
    silent: np.ndarray | None = None  # (C,) bool
    confidence: np.ndarray | None = None  # (C,) ``specificity`` (needs the other videos' audio)


class Localizer:
    """Runs the encoders on one decoded video: clip tiling, transforms, batched embeddings."""

    def __init__(self, encoders: torch.nn.Module, cfg: Any, opts: Options,
                 device: torch.device) -> None:
        from avssl.data.audio import AudioTransform

        self.enc, self.cfg, self.opts, self.device = encoders, cfg, opts, device
        v, a = cfg.data.video, cfg.data.audio
        self.T, self.fps = v.num_frames, float(v.fps)
        self.sr, self.audio_s = a.sample_rate, float(a.duration)
        self.short_side = opts.short_side or v.resize
        self.mean = torch.tensor(v.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(v.std).view(1, 3, 1, 1)
        self.audio_tf = AudioTransform(a, train=False)

    @property
    def clip_s(self) -> float:
        return self.T / self.fps

    def decode(self, item: Item) -> Decoded:
        args = (self.fps, self.sr, self.opts.max_seconds, self.opts.max_size, self.short_side,
                self.audio_s / 2 + self.clip_s)
        if item.prepared:
            return decode_prepared(item, *args, backend=self.opts.backend)
        return decode_raw(item.path, *args)

    def clip_windows(self, n_frames: int) -> list[dict[str, Any]]:
        """Consecutive clips tiling the frames (the last one padded with its last frame)."""
        out = []
        for c in range(max(1, math.ceil(n_frames / self.T))):
            f0 = c * self.T
            start, end = f0 / self.fps, (f0 + self.T) / self.fps
            mid = (start + end) / 2
            out.append({"index": c, "first_frame": f0,
                        "frames": [min(f0 + j, n_frames - 1) for j in range(self.T)],
                        "start": round(start, 4), "end": round(end, 4),
                        "audio_start": round(mid - self.audio_s / 2, 4),
                        "audio_end": round(mid + self.audio_s / 2, 4)})
        return out

    def video_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> normalized float (3, T, h, w), short side ``short_side``."""
        from torchvision.transforms.v2 import functional as TF

        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        s = self.short_side / min(h, w)
        size = [max(8, round(h * s)), max(8, round(w * s))]
        x = TF.resize(x, size, antialias=True).float().div_(255.0)
        return ((x - self.mean) / self.std).permute(1, 0, 2, 3).contiguous()

    def audio_window(self, audio: np.ndarray, start_s: float) -> np.ndarray:
        """``audio_s`` seconds from ``start_s`` on the timeline, zeros outside the track."""
        n = round(self.audio_s * self.sr)
        s0 = round(start_s * self.sr)
        out = np.zeros(n, np.float32)
        lo, hi = max(s0, 0), min(s0 + n, len(audio))
        if hi > lo:
            out[lo - s0: hi - s0] = audio[lo:hi]
        return out

    @torch.no_grad()
    def embed(self, frames: np.ndarray, audio: np.ndarray,
              clips: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Grid embeddings (C, D, T', H', W'), audio embeddings (C, D) and RMS levels (C,) dBFS
        of every clip (in batches of ``batch_size``)."""
        grids, auds, levels = [], [], []
        bs = max(1, self.opts.batch_size)
        for i in range(0, len(clips), bs):
            part = clips[i:i + bs]
            v = torch.stack([self.video_tensor(frames[c["frames"]]) for c in part])
            waves = [self.audio_window(audio, c["audio_start"]) for c in part]
            levels += [rms_dbfs(w) for w in waves]
            a = torch.stack([self.audio_tf(w) for w in waves])
            grids.append(video_embedding_grid(self.enc, v.to(self.device)).cpu())
            auds.append(audio_embedding(self.enc, a.to(self.device)).cpu())
        return torch.cat(grids), torch.cat(auds), np.asarray(levels)

    def process(self, item: Item, out_dir: Path) -> Work:
        """Decode and embed one video; never raises for a bad file (``outcome="failed"``)."""
        work = Work(item, out_dir)
        try:
            dec = self.decode(item)
        except DecodeError as e:
            work.outcome, work.error = "failed", str(e)
            return work
        work.info = dec.info
        work.n_frames = len(dec.frames)
        work.clips = self.clip_windows(work.n_frames)
        out_dir.mkdir(parents=True, exist_ok=True)
        # Frames and audio wait on disk for the rendering pass (after calibration), so memory
        # stays flat however many videos there are.
        work.frames_file = out_dir / ".frames.npy"
        np.save(work.frames_file, dec.frames)
        if dec.audio is None:
            work.outcome = "no audio"
            work.error = dec.info.get("audio_error")
            return work
        work.audio_file = out_dir / ".audio.npy"
        np.save(work.audio_file, dec.audio)
        grid, aemb, levels = self.embed(dec.frames, dec.audio, work.clips)
        work.grid, work.audio_emb = grid, aemb
        work.silent = levels < self.opts.silence_db
        for c, lv in zip(work.clips, levels):
            c["audio_rms_db"] = round(float(lv), 2)
        return work


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------
def _audible_pool(works: list[Work]) -> tuple[np.ndarray, torch.Tensor]:
    """The audible windows of every embedded video: the video owning each (N,) and their audio
    embeddings (N, D)."""
    pool = [(wi, c) for wi, w in enumerate(works) if w.grid is not None
            for c in np.flatnonzero(~w.silent)]  # type: ignore[operator]
    owner = np.array([wi for wi, _ in pool], dtype=np.int64)
    emb = (torch.stack([works[wi].audio_emb[c] for wi, c in pool])  # type: ignore[index]
           if pool else torch.empty(0))
    return owner, emb


def _draw_null(rng: np.random.Generator, pool_emb: torch.Tensor, others: np.ndarray,
               own: torch.Tensor, n: int) -> np.ndarray:
    """Up to ``n`` pool indices among ``others`` for one clip whose audio embedding is ``own``.

    The null hypothesis is a *different* sound: only the less similar half of ``others`` (by
    cosine with the clip's own audio; at least ``n`` windows) is drawn from, because a similar
    sound (the same kind of source) may well have a visible source in these frames.
    """
    sim = pool_emb[others] @ own
    n_keep = max(n, math.ceil(len(others) / 2))
    keep = others[torch.argsort(sim)[:n_keep].numpy()]
    return rng.choice(keep, size=min(n, len(keep)), replace=False)


def mismatched_confidences(works: list[Work], kind: str, per_clip: int = MISMATCHED_PER_CLIP,
                           seed: int = 0) -> tuple[list[float], list[float]]:
    """Map-only confidences (:data:`MAP_CONFIDENCE_KINDS`) of every audible clip with its own
    audio (matched) and with up to ``per_clip`` audible windows of OTHER videos (mismatched,
    see :func:`_draw_null`), seeded."""
    rng = np.random.default_rng(seed)
    owner, pool_emb = _audible_pool(works)
    matched: list[float] = []
    mismatched: list[float] = []
    for wi, w in enumerate(works):
        if w.grid is None:
            continue
        others = np.flatnonzero(owner != wi)
        for c in np.flatnonzero(~w.silent):  # type: ignore[operator]
            g = w.grid[c:c + 1]
            matched.append(float(source_confidence(cosine_maps(g, w.audio_emb[c:c + 1]), kind)))
            if not len(others):
                continue
            pick = _draw_null(rng, pool_emb, others, w.audio_emb[c], per_clip)
            a = pool_emb[torch.as_tensor(pick)]
            maps = cosine_maps(g.expand(len(pick), *g.shape[1:]), a)
            mismatched += source_confidence(maps, kind).tolist()
    return matched, mismatched


def specificity_confidences(works: list[Work], per_clip: int = NULL_PER_CLIP, seed: int = 0
                            ) -> tuple[list[float], list[float]] | None:
    """:func:`~avssl.localize.maps.specificity` of every clip against ``per_clip`` audible
    windows of OTHER videos (:func:`_draw_null`), stored in ``Work.confidence``; returns the
    audible clips' values (matched) and the leave-one-out values of their null windows
    (mismatched), or None when a video has fewer than ``MIN_NULL`` other windows to draw."""
    rng = np.random.default_rng(seed)
    owner, pool_emb = _audible_pool(works)
    matched: list[float] = []
    mismatched: list[float] = []
    for wi, w in enumerate(works):
        if w.grid is None:
            continue
        others = np.flatnonzero(owner != wi)
        if len(others) < MIN_NULL:
            return None
        aud, silent = w.audio_emb, w.silent
        assert aud is not None and silent is not None
        conf = np.zeros(len(w.grid))
        for c in range(len(w.grid)):  # silent clips too: their entries show a confidence
            g = w.grid[c:c + 1]
            pick = _draw_null(rng, pool_emb, others, aud[c], per_clip)
            null = cosine_maps(g.expand(len(pick), *g.shape[1:]), pool_emb[torch.as_tensor(pick)])
            conf[c] = specificity(cosine_maps(g, aud[c:c + 1])[0], null)
            if not silent[c]:
                matched.append(float(conf[c]))
                mismatched += null_specificities(null)
        w.confidence = conf
    return matched, mismatched


def resolve_calibration(works: list[Work], opts: Options) -> Calibration:
    """``--threshold`` > ``--calibration FILE`` > calibrated on this run > default.

    ``specificity`` (the default) needs other videos' audio; with fewer than ``MIN_NULL``
    audible windows of other videos (a single video) the map-only ``contrast`` is used instead,
    and the calibration's note says so.
    """
    kind, note = opts.confidence, ""
    scored = None
    if kind == "specificity":
        scored = specificity_confidences(works, seed=opts.seed)
        if scored is None:
            kind = "contrast"
            note = (f"confidence 'contrast' instead of 'specificity' (fewer than {MIN_NULL} "
                    f"audible windows of other videos to compare with)")
    if opts.threshold is not None:
        cal = Calibration(float(opts.threshold), kind, "user",
                          note="--threshold given on the command line")
    elif opts.calibration_file is not None:
        cal = read_calibration(opts.calibration_file, kind)
    else:
        matched, mismatched = scored or mismatched_confidences(works, kind, seed=opts.seed)
        cal = calibrate_threshold(matched, mismatched, opts.percentile, kind)
    if note:
        cal.note = f"{cal.note}; {note}" if cal.note else note
    return cal


def read_calibration(path: str | Path, kind: str | None) -> Calibration:
    """The calibration stored in an earlier run's ``summary.json`` / ``result.json`` (or a
    bare calibration dict); its confidence kind must be ``kind`` (unless None)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        cal = Calibration.from_dict(data.get("calibration", data))
    except (OSError, json.JSONDecodeError, ValueError, AttributeError, TypeError) as e:
        raise LocalizeError(f"--calibration {path}: cannot read a calibration ({e})") from None
    if kind is not None and cal.kind != kind:
        raise LocalizeError(f"--calibration {path}: calibrated for confidence {cal.kind!r}, "
                            f"not {kind!r} (pass --confidence {cal.kind})")
    cal.source, cal.note = "file", f"from {path} ({cal.source}: {cal.note})"
    return cal


# ----------------------------------------------------------------------------------------------
# Phase 2: decisions, metrics, rendering
# ----------------------------------------------------------------------------------------------
def _label(decision: str, conf: float | None, cal: Calibration) -> str:
    if decision == DECISION_SOURCE:
        return f"source  conf {conf:.3f} >= {cal.threshold:.3f}"
    if decision == DECISION_NONE:
        return f"no visible source  conf {conf:.3f} < {cal.threshold:.3f}"
    return decision


def _draw_boxes(img: np.ndarray, boxes: list[list[float]]) -> np.ndarray:
    """White outlines of normalized boxes (ground truth) on a copy of ``img``."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    h, w = img.shape[:2]
    for x0, y0, x1, y1 in boxes:
        d.rectangle([x0 * w, y0 * h, max(x0 * w, x1 * w - 1), max(y0 * h, y1 * h - 1)],
                    outline=(255, 255, 255))
    return np.asarray(im)


def _gt_clips(work: Work, ann: BoxAnnotation) -> list[int]:
    """Clips scored against the ground truth: all for a track; for a static annotation the
    clip closest to the middle of the video."""
    if not ann.static:
        return [c["index"] for c in work.clips]
    mid = float(work.info.get("duration") or 0.0) / 2
    return [min(work.clips, key=lambda c: abs((c["start"] + c["end"]) / 2 - mid))["index"]]


def finish_video(work: Work, loc: Localizer, cal: Calibration, opts: Options,
                 samples: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Decide, score, render and write ``result.json`` of one processed video; appends its
    (pred map, gt map) pairs at ``eval_size`` to ``samples``; returns the result dict."""
    from avssl.utils.atomic import atomic_write_json
    from avssl.viz.overlay import (
        contact_sheet,
        draw_label,
        overlay,
        save_png,
        write_overlay_video,
    )

    item, ann = work.item, work.item.annotation
    result: dict[str, Any] = {
        "input": str(item.path), "name": item.name, "outcome": work.outcome,
        "error": work.error, "info": work.info,
        "clip": {"num_frames": loc.T, "fps": loc.fps, "seconds": loc.clip_s,
                 "audio_seconds": loc.audio_s, "sample_rate": loc.sr,
                 "input_short_side": loc.short_side},
        "confidence_kind": cal.kind, "calibration": cal.to_dict(),
        "silence_db": opts.silence_db, "binarization": opts.binarization,
        "ground_truth": None if ann is None else ann.source,
        "clips": [],
    }
    if work.outcome == "failed":
        work.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(work.out_dir / "result.json", result)
        return result
    frames = np.load(work.frames_file, mmap_mode="r")  # type: ignore[arg-type]
    audio = np.load(work.audio_file) if work.audio_file is not None else None
    # overlays are drawn at least ``min_display`` pixels on the short side (small prepared
    # videos are upscaled for viewing only; the model saw them at ``short_side``)
    H, W = display_size(frames.shape[2], frames.shape[1], 1 << 30, opts.min_display,
                        upscale=True)[::-1]
    T = loc.T
    heat_frames: list[np.ndarray | None] = [None] * work.n_frames
    labels = ["no audio"] * work.n_frames
    gt_clips = set(_gt_clips(work, ann)) if ann is not None else set()
    # frames that show ground-truth boxes: every frame of a track, the scored clip otherwise
    boxed = {c["first_frame"] + j for c in work.clips if c["index"] in gt_clips
             for j in range(T)}
    if work.grid is not None:
        maps = cosine_maps(work.grid, work.audio_emb)  # (C, T', H', W')
        if cal.kind == "specificity" and work.confidence is not None:
            confs = work.confidence.tolist()
        else:
            confs = source_confidence(maps, cal.kind).tolist()
        peaks = peak_location(maps)
        Tp = maps.shape[1]
        for c, clip in enumerate(work.clips):
            rms = clip["audio_rms_db"]
            decision = decide(confs[c], rms, cal, opts.silence_db)
            entry = {k: clip[k] for k in ("index", "start", "end", "audio_start", "audio_end",
                                          "audio_rms_db")}
            entry.update(confidence=round(confs[c], 5), decision=decision, peak=peaks[c],
                         map_stats=map_stats(maps[c]))
            if ann is not None and c in gt_clips:
                t_mid = (clip["start"] + clip["end"]) / 2
                pred = upsample(maps[c].mean(0), opts.eval_size).numpy()
                gt = ann.map_at(t_mid, opts.eval_size, opts.eval_size)
                entry["source_in_view"] = bool(gt.sum() > 0)
                if gt.sum() > 0:
                    samples.append((pred, gt))
                    entry["ciou"] = round(float(ciou(binarize(pred, opts.binarization), gt)), 5)
            result["clips"].append(entry)
            # display heat: the clip's map min-max normalized over the clip, per time slice
            lo, hi = float(maps[c].min()), float(maps[c].max())
            norm = (maps[c] - lo) / (hi - lo) if hi > lo else torch.zeros_like(maps[c])
            up = upsample(norm, (H, W)).numpy() if decision == DECISION_SOURCE else None
            for j in range(T):
                f = clip["first_frame"] + j
                if f >= work.n_frames:
                    break
                heat_frames[f] = None if up is None else up[min(Tp - 1, j * Tp // T)]
                labels[f] = _label(decision, confs[c], cal)
        decisions = Counter(e["decision"] for e in result["clips"])
        if decisions[DECISION_SOURCE]:
            result["outcome"] = "localized"
        elif decisions[DECISION_SILENT] == len(work.clips):
            result["outcome"] = "silent audio"
        else:
            result["outcome"] = "no visible source"
        result["decisions"] = dict(decisions)
        in_view = [e for e in result["clips"] if e.get("source_in_view")]
        if in_view:  # ground truth says the sound's source is on screen in these clips
            result["source_in_view"] = True
            audible = [e for e in in_view if e["decision"] != DECISION_SILENT]
            result["false_no_source_clips"] = sum(e["decision"] == DECISION_NONE
                                                  for e in audible)
            result["in_view_audible_clips"] = len(audible)
        scored = [e["ciou"] for e in result["clips"] if "ciou" in e]
        if scored:
            result["ciou"] = {"mean": round(float(np.mean(scored)), 5),
                              "cIoU@0.5": round(float(np.mean(np.asarray(scored) >= 0.5)), 5),
                              "n": len(scored), "binarization": opts.binarization}
    else:
        result["outcome"] = "no audio"

    def render(f: int) -> np.ndarray:
        img = np.asarray(frames[f])
        if img.shape[:2] != (H, W):
            img = _resize_rgb(img, W, H)
        if heat_frames[f] is not None:
            img = overlay(img, heat_frames[f], opts.alpha)  # type: ignore[arg-type]
        if ann is not None and f in boxed:
            img = _draw_boxes(img, ann.boxes_at(f / loc.fps))
        return draw_label(img, f"{f / loc.fps:5.2f}s  {labels[f]}")

    n_png = max(1, min(opts.num_frames, work.n_frames))
    picks = [min(work.n_frames - 1, math.floor((k + 0.5) * work.n_frames / n_png))
             for k in range(n_png)]
    pngs = []
    for k, f in enumerate(picks):
        img = render(f)
        save_png(work.out_dir / f"frame_{k:02d}.png", img)
        pngs.append(img)
    save_png(work.out_dir / "contact_sheet.png", contact_sheet(pngs, cols=min(4, n_png)))
    result["frames"] = [{"file": f"frame_{k:02d}.png", "time": round(f / loc.fps, 4)}
                        for k, f in enumerate(picks)]
    result["contact_sheet"] = "contact_sheet.png"
    if opts.write_video:
        track = None if audio is None else audio[: round(work.n_frames / loc.fps * loc.sr)]
        write_overlay_video(work.out_dir / "overlay.mp4",
                            [render(f) for f in range(work.n_frames)], loc.fps, track, loc.sr)
        result["overlay"] = "overlay.mp4"
    atomic_write_json(work.out_dir / "result.json", result)
    return result


def _cleanup(work: Work) -> None:
    for p in (work.frames_file, work.audio_file):
        if p is not None:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _summary_line(r: dict[str, Any]) -> str:
    name, outcome = r["name"], r["outcome"]
    if outcome == "failed":
        return f"{name}: failed: {r['error']}"
    if outcome == "no audio":
        why = f" ({r['error']})" if r.get("error") else ""
        return f"{name}: no audio{why}"
    d = r.get("decisions", {})
    n = len(r["clips"])
    best = max((c["confidence"] for c in r["clips"]), default=float("nan"))
    text = (f"{name}: {outcome} ({d.get(DECISION_SOURCE, 0)}/{n} clips with a source, "
            f"{d.get(DECISION_SILENT, 0)} silent, max confidence {best:.3f})")
    if "ciou" in r:
        c = r["ciou"]
        text += f"; cIoU {100 * c['mean']:.1f}, cIoU@0.5 {100 * c['cIoU@0.5']:.1f} (n={c['n']})"
    return text


def false_no_source(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How often a sound whose source the ground truth shows on screen is called "no visible
    source": per video (its outcome; videos with at least one such audible clip) and per
    audible clip. None when no video has ground truth in view."""
    videos = [r for r in results if r.get("source_in_view") and r.get("in_view_audible_clips")]
    if not videos:
        return None
    clips = sum(r["in_view_audible_clips"] for r in videos)
    false_clips = sum(r["false_no_source_clips"] for r in videos)
    false_videos = sum(r["outcome"] == "no visible source" for r in videos)
    return {"videos_in_view": len(videos), "false_no_source_videos": false_videos,
            "false_no_source_video_rate": round(false_videos / len(videos), 5),
            "clips_in_view": clips, "false_no_source_clips": false_clips,
            "false_no_source_clip_rate": round(false_clips / clips, 5)}


def format_false_no_source(d: dict[str, Any]) -> str:
    """One line for :func:`false_no_source`'s dict."""
    return (f"false \"no visible source\" with the source in view (ground truth): "
            f"{d['false_no_source_videos']}/{d['videos_in_view']} videos "
            f"({100 * d['false_no_source_video_rate']:.1f} %), "
            f"{d['false_no_source_clips']}/{d['clips_in_view']} clips "
            f"({100 * d['false_no_source_clip_rate']:.1f} %)")


def _safe_name(name: str) -> str:
    """A relative folder name inside the output folder for any item name (an absolute id or
    one with ``..`` must not write outside it)."""
    parts = [p for p in Path(name).parts if p not in ("", ".", "..", "/", "\\")]
    parts = [p for p in parts if not Path(p).anchor]
    return str(Path(*parts)) if parts else "video"


def _unique_dirs(items: list[Item], out: Path) -> list[Path]:
    seen: Counter[str] = Counter()
    dirs = []
    for it in items:
        name = _safe_name(it.name)
        seen[name] += 1
        suffix = "" if seen[name] == 1 else f"_{seen[name]}"
        dirs.append(out / f"{name}{suffix}")
    return dirs


def localize(source: str | Path, checkpoint: str | Path, out: str | Path,
             boxes: str | Path | None = None, opts: Options | None = None,
             log: Any = print) -> dict[str, Any]:
    """Run the whole command; returns the summary (also written to ``out/summary.json``).

    Raises :class:`LocalizeError` for bad input; per-video problems become entries.
    """
    from avssl.utils.atomic import atomic_write_json

    opts = opts or Options()
    if opts.binarization not in BINARIZATIONS:
        raise LocalizeError(f"--binarization must be one of {list(BINARIZATIONS)}")
    if opts.confidence not in CONFIDENCE_KINDS:
        raise LocalizeError(f"--confidence must be one of {list(CONFIDENCE_KINDS)}")
    if opts.num_frames < 1 or opts.max_seconds <= 0 or opts.eval_size < 8:
        raise LocalizeError("--num-frames must be >= 1, --max-seconds > 0, --eval-size >= 8")
    if opts.calibration_file is not None and opts.threshold is None:
        # fail early; the kind is checked once known (specificity may fall back to contrast)
        read_calibration(opts.calibration_file, None)
    items = collect_inputs(source, boxes)
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoders, cfg = load_model(checkpoint, device, opts.audio_stats)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loc = Localizer(encoders, cfg, opts, device)
    t0 = time.perf_counter()
    works = []
    try:
        from tqdm import tqdm

        for item, d in tqdm(list(zip(items, _unique_dirs(items, out))), desc="localize",
                            unit="video", leave=False, disable=None if opts.progress else True):
            works.append(loc.process(item, d))
        cal = resolve_calibration(works, opts)
        text = f"confidence threshold {cal.threshold:.4f} ({cal.kind}, {cal.source}"
        if cal.source == "calibrated":
            text += (f": {cal.percentile:g}th percentile of {cal.n_mismatched} mismatched pairs; "
                     f"{100 * (cal.matched_above or 0):.0f}% of matched clips above, "
                     f"AUROC {cal.auroc:.2f}")
        log(text + (f"; {cal.note}" if cal.source == "default" else "") + ")")
        samples: list[tuple[np.ndarray, np.ndarray]] = []
        results = []
        for w in works:
            try:
                r = finish_video(w, loc, cal, opts, samples)
            except Exception as e:  # a rendering/encoding problem must not stop the run
                r = {"input": str(w.item.path), "name": w.item.name, "outcome": "failed",
                     "error": f"writing outputs failed: {_describe(e)}", "clips": []}
            results.append(r)
            log(_summary_line(r))
    finally:
        for w in works:
            _cleanup(w)
    counts = Counter(r["outcome"] for r in results)
    summary: dict[str, Any] = {
        "input": str(source), "checkpoint": str(checkpoint),
        "counts": {k: counts.get(k, 0) for k in OUTCOMES},
        "calibration": cal.to_dict(), "binarization": opts.binarization,
        "videos_with_ground_truth": sum(it.annotation is not None for it in items),
        "seconds": round(time.perf_counter() - t0, 2),
        "videos": [{"name": r["name"], "outcome": r["outcome"], "error": r.get("error"),
                    "dir": str(d.relative_to(out))}
                   for r, d in zip(results, _unique_dirs(items, out))],
        "localization": None,
    }
    if samples:
        pred = np.stack([p for p, _ in samples])
        gt = np.stack([g for _, g in samples])
        table = evaluate_with_baselines(pred, gt, opts.binarization, seed=opts.seed)
        summary["localization"] = table
        log(format_table(table))
    summary["source_decision"] = false_no_source(results)
    if summary["source_decision"] is not None:
        log(format_false_no_source(summary["source_decision"]))
    atomic_write_json(out / "summary.json", summary)
    log("summary: " + ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v)
        + f" ({len(results)} videos, {summary['seconds']:.1f} s) -> {out}")
    return summary


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``avssl localize``."""
    d = Options()
    parser.add_argument("input", help="a video file, a folder of videos, or a manifest.jsonl")
    parser.add_argument("--checkpoint", required=True, help="avssl checkpoint (.pt) (required)")
    parser.add_argument("--out", required=True, help="output folder (required)")
    parser.add_argument("--boxes", help="ground truth: folder of Flickr XML, VGG-SS JSON list, "
                                        "our JSON {name: {fps, xyxy}} or a meta/manifest JSONL "
                                        "(default: the manifest's boxes, else none)")
    parser.add_argument("--binarization", default=d.binarization, choices=BINARIZATIONS,
                        help="how maps become masks for cIoU (default %(default)s)")
    parser.add_argument("--num-frames", type=int, default=d.num_frames,
                        help="overlay PNGs per video, evenly spaced (default %(default)s)")
    parser.add_argument("--backend", default=d.backend, choices=("pyav", "decord"),
                        help="decoder of prepared (manifest) videos; raw files always use PyAV "
                             "(default %(default)s)")
    parser.add_argument("--threshold", type=float, help="fixed confidence threshold, skips "
                                                        "calibration (default: calibrated on "
                                                        "the run's videos)")
    parser.add_argument("--calibration", dest="calibration_file",
                        help="reuse the threshold of an earlier run's summary.json (default: "
                             "calibrate on the run's videos)")
    parser.add_argument("--confidence", default=d.confidence, choices=CONFIDENCE_KINDS,
                        help="map confidence measure (default %(default)s)")
    parser.add_argument("--percentile", type=float, default=d.percentile,
                        help="percentile of mismatched-audio confidences used as threshold "
                             "(default %(default)s)")
    parser.add_argument("--silence-db", type=float, default=d.silence_db,
                        help="audio windows below this RMS level (dBFS) are silent "
                             "(default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=d.max_seconds,
                        help="localize only the first N seconds of each video "
                             "(default %(default)s)")
    parser.add_argument("--short-side", type=int, help="model input short side in pixels "
                                                       "(default: the model's data.video.resize)")
    parser.add_argument("--max-size", type=int, default=d.max_size,
                        help="long side of the overlay frames (default %(default)s)")
    parser.add_argument("--min-display", type=int, default=d.min_display,
                        help="short side of the overlay frames at least (upscaled for viewing; "
                             "default %(default)s)")
    parser.add_argument("--eval-size", type=int, default=d.eval_size,
                        help="ground-truth grid for cIoU (default %(default)s)")
    parser.add_argument("--alpha", type=float, default=d.alpha,
                        help="heatmap opacity (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="clips per forward pass (default %(default)s)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--audio-stats", help="per-bin audio statistics (.npz) when the "
                                              "checkpoint's path does not exist here (default: "
                                              "the checkpoint's data.audio.stats)")
    parser.add_argument("--no-video", dest="write_video", action="store_false",
                        help="do not write overlay.mp4 (default: written)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of the mismatched-audio sampling and the random-box "
                             "baseline (default %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar (default: a bar on a terminal)")


def run(args: argparse.Namespace) -> int:
    """Run ``avssl localize``; bad input prints one line and returns 2."""
    fields = Options.__dataclass_fields__
    opts = Options(**{k: getattr(args, k) for k in fields if hasattr(args, k)})
    try:
        summary = localize(args.input, args.checkpoint, args.out, args.boxes, opts)
    except LocalizeError as e:
        print(f"avssl localize: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    counts = summary["counts"]
    return 1 if counts["failed"] == sum(counts.values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avssl localize", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
