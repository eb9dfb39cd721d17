"""AVClipDataset: prepared videos (manifest.jsonl) -> batch dicts (docs/design.md); a loader.

Each item is one clip: ``video`` float (3, T, H, W) normalized, ``audio`` float (1, T_a, F)
spectrogram, ``index`` long (the video's row in this dataset = its memory-bank row), ``label``
long, ``video_start``/``audio_start``/``offset_s`` float seconds. Item ``i`` is clip
``i % clips_per_video`` of video ``i // clips_per_video``; its randomness comes only from
``np.random.default_rng([seed, epoch, i])``, so resuming mid-epoch or changing the number of
workers gives the same samples.

A method states what its items hold with a :class:`avssl.data.sample.SampleSpec` (several
augmented views, a temporal positive, audio of another video or time); without one an item is
the clip with its own audio window, as above.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from avssl.config import DataConfig
from avssl.data.audio import AudioTransform
from avssl.data.decode import evict_reader, get_reader, read_audio, reset_reader_cache
from avssl.data.manifest import ManifestError, read_manifest, resolve
from avssl.data.sample import SampleSpec
from avssl.data.sampling import ClipSampler, ClipTiming
from avssl.data.transforms import VideoTransform

log = logging.getLogger(__name__)

_CFG = object()  # sentinel: "take the value from the config" (None is a valid split)
CLIP_MODES = ("random", "center", "uniform")


class AVClipDataset(Dataset):
    """Clips of the prepared videos listed in ``manifest`` (rows of ``split``, sorted by id).

    Args:
        manifest: ``manifest.jsonl`` written by ``avssl preprocess``.
        cfg: data config (video/audio geometry, backend, max_offset, failure threshold).
        split: rows with this ``split`` value; None: every row. Default ``cfg.split``.
        train: random augmentation (crop/flip/jitter, volume jitter) vs deterministic test ones.
        require_audio: skip rows without audio. Default ``cfg.require_audio``.
        return_audio: include the ``audio`` key. Default ``require_audio``. Video-only use
            (``require_audio=False``) omits the key for every item, so batches have the same
            keys; with ``return_audio=True`` rows without audio give the spectrogram of silence
            and a ``has_audio`` key tells them apart.
        clip_mode: "random" (default when training), "center" (default otherwise), "uniform"
            (``clips_per_video`` evenly spaced clips).
        clips_per_video: items per video per epoch. Default ``cfg.clips_per_video``.
        seed: base seed of every item's generator.
        sample: what a training item holds (views, other audio; see
            :class:`~avssl.data.sample.SampleSpec`). None or the default spec: the clip and its
            own audio window. A spec without audio sets ``require_audio`` False by default.
    """

    def __init__(self, manifest: str | Path, cfg: DataConfig, split: Any = _CFG,
                 train: bool = True, require_audio: bool | None = None,
                 clip_mode: str | None = None, clips_per_video: int | None = None,
                 seed: int = 0, return_audio: bool | None = None,
                 sample: SampleSpec | None = None) -> None:
        self.manifest = Path(manifest)
        # None and the default spec take the original path (bit-identical items)
        self.sample = None if sample is None or sample == SampleSpec() else sample
        if self.sample is not None:
            if require_audio is None and not self.sample.needs_audio:
                require_audio = False
            if return_audio is None:
                return_audio = self.sample.audio == "same"
        self.cfg = cfg
        self.split = cfg.split if split is _CFG else split
        self.train = train
        self.require_audio = cfg.require_audio if require_audio is None else require_audio
        self.return_audio = self.require_audio if return_audio is None else return_audio
        self.clip_mode = clip_mode or ("random" if train else "center")
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be one of {CLIP_MODES}, got {self.clip_mode!r}")
        self.clips_per_video = cfg.clips_per_video if clips_per_video is None else clips_per_video
        if self.clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {self.clips_per_video}")
        self.seed = seed
        self.backend = cfg.backend

        all_rows = read_manifest(self.manifest)  # ManifestError names the file when missing
        rows = [r for r in all_rows if self.split is None or r.get("split") == self.split]
        if not rows:
            splits = sorted({str(r.get("split")) for r in all_rows})
            raise ManifestError(f"{self.manifest}: no rows in split {self.split!r} "
                                f"(splits present: {splits})")
        if self.require_audio:
            kept = [r for r in rows if r.get("has_audio") and r.get("audio_path")]
            if len(kept) < len(rows):
                log.info("%s: skipping %d of %d videos without audio (require_audio)",
                         self.manifest, len(rows) - len(kept), len(rows))
            rows = kept
            if not rows:
                raise ManifestError(f"{self.manifest}: no rows with audio in split "
                                    f"{self.split!r} (set data.require_audio=false for "
                                    "video-only data)")
        self.rows: list[dict[str, Any]] = rows
        self.num_videos = len(rows)
        # Labels: classes from every row of the manifest, so all splits map names alike.
        self.classes, self._label_ids = _label_map(all_rows, self.manifest)

        self.sampler = ClipSampler.from_config(cfg)
        self.video_transform = VideoTransform(cfg.video, train=train)
        wants_audio = self.return_audio or (self.sample is not None
                                            and self.sample.other_audio is not None)
        self.audio_transform = AudioTransform(cfg.audio, train=train) if wants_audio else None
        if self.sample is not None and self.sample.other_audio == "other_video" \
                and self.num_videos < 2:
            raise ManifestError(f"{self.manifest}: audio of another video needs at least 2 "
                                f"videos in split {self.split!r}, found {self.num_videos}")
        self.max_failures = _allowed_failures(cfg.max_failure_fraction, self.num_videos)
        self.failed: dict[int, str] = {}  # video position -> last error, in this process
        # Shared memory, so set_epoch reaches persistent DataLoader workers too.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    # ------------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Change every item's random draw (also seen by already started workers)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.num_videos * self.clips_per_video

    def video_path(self, video: int) -> Path:
        return resolve(self.manifest, self.rows[video]["path"])  # type: ignore[return-value]

    def label_of(self, video: int) -> int:
        """Integer label of a video (-1 when absent)."""
        lab = self.rows[video].get("label")
        if lab is None:
            return -1
        return self._label_ids[lab] if isinstance(lab, str) else int(lab)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} items")
        epoch = self.epoch
        rng = np.random.default_rng([self.seed, epoch, i])
        video, clip = divmod(i, self.clips_per_video)
        attempt = 0
        while True:
            t = self.timing(video, clip, rng)
            try:
                if self.sample is None:
                    frames, wave = self.decode(video, t)
                else:
                    plan = self.plan(video, t, rng)
                    decoded = self.decode_plan(video, plan)
            except Exception as e:  # any decoder error: replace the sample
                attempt += 1
                bad, err = (e.video, e.error) if isinstance(e, _PartFailed) else (video, e)
                replacement = self._on_failure(bad, err, i, epoch, attempt)
                if bad == video:  # another video's audio failed: keep this one, redraw that
                    video = replacement
                rng = np.random.default_rng([self.seed, epoch, i, attempt])
                continue
            if self.sample is None:
                return self.make_item(video, t, frames, wave, rng)
            return self.make_declared_item(video, plan, decoded, rng)

    # ------------------------------------------------------------------------------------------
    def timing(self, video: int, clip: int = 0,
               rng: np.random.Generator | None = None) -> ClipTiming:
        """Where clip ``clip`` of ``video`` starts (``rng`` for random mode)."""
        row = self.rows[video]
        return self.sampler.sample(self.clip_mode, rng, float(row["duration"]), float(row["fps"]),
                                   int(row["num_frames"]), clip, self.clips_per_video)

    def decode(self, video: int, t: ClipTiming) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 frames (T, H, W, 3) and the float32 audio window (S,) of one clip (None when
        audio is not returned; zeros for a row without audio). Raises on decoding errors."""
        frames = get_reader(self.video_path(video), self.backend).get_frames(t.frame_indices)
        if self.audio_transform is None:
            return frames, None
        a, row = self.cfg.audio, self.rows[video]
        if row.get("has_audio") and row.get("audio_path"):
            wave = read_audio(resolve(self.manifest, row["audio_path"]), t.audio_start,
                              a.duration, a.sample_rate)
        else:
            wave = np.zeros(round(a.duration * a.sample_rate), np.float32)
        return frames, wave

    def make_item(self, video: int, t: ClipTiming, frames: np.ndarray, wave: np.ndarray | None,
                  rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Transform decoded data into the batch-dict item (draws crop/jitter/gain from rng)."""
        item: dict[str, torch.Tensor] = {"video": self.video_transform(frames, rng)}
        if self.audio_transform is not None and wave is not None:
            item["audio"] = self.audio_transform(wave, rng)
            if not self.require_audio:
                row = self.rows[video]
                has = bool(row.get("has_audio") and row.get("audio_path"))
                item["has_audio"] = torch.tensor(has)
        item.update(self._where(video, t))
        return item

    def _where(self, video: int, t: ClipTiming) -> dict[str, torch.Tensor]:
        """The keys every item has: ``index``, ``label`` and the clip's timing."""
        return {"index": torch.tensor(video, dtype=torch.long),
                "label": torch.tensor(self.label_of(video), dtype=torch.long),
                "video_start": torch.tensor(t.video_start, dtype=torch.float32),
                "audio_start": torch.tensor(t.audio_start, dtype=torch.float32),
                "offset_s": torch.tensor(t.offset_s, dtype=torch.float32)}

    # ---------------------------------------------------------------- declared samples (spec)
    def plan(self, video: int, t: ClipTiming, rng: np.random.Generator) -> _Plan:
        """Where every part of a declared item comes from (draws the views' shifts and the
        other window from ``rng``, after the clip's own timing)."""
        spec = self.sample
        assert spec is not None
        row = self.rows[video]
        fps, n = float(row["fps"]), int(row["num_frames"])
        # a whole number of frames, uniform over the grid positions within view_shift (a
        # continuous draw rounded to the grid could land up to half a frame beyond it)
        k = math.floor(spec.view_shift * fps + 1e-6)
        views = [t] + [self.sampler.shifted(t, int(rng.integers(-k, k + 1)) / fps, fps, n)
                       for _ in range(spec.views - 1)]
        other_video, other_start = None, None
        a = self.cfg.audio
        if spec.other_audio == "other_video":
            other_video = self._other_video(video, rng)
            other_start = _window_start(float(rng.uniform(0.0, 1.0)),
                                        float(self.rows[other_video]["duration"]), a.duration)
        elif spec.other_audio == "other_time":
            other_video = video
            # the gap rounded up to the sample grid, so the rounded start keeps it
            gap = math.ceil(spec.other_gap * a.sample_rate - 1e-6) / a.sample_rate
            other_start = _far_window(float(rng.uniform(0.0, 1.0)), t.audio_start,
                                      float(row["duration"]), a.duration, gap)
        if other_start is not None:
            other_start = round(other_start * a.sample_rate) / a.sample_rate
        return _Plan(views, other_video, other_start)

    def _other_video(self, video: int, rng: np.random.Generator) -> int:
        """Any video but ``video``, uniformly; not one that failed to load in this process
        (drawn again, with two videos it would be drawn forever)."""
        if not self.failed:
            j = int(rng.integers(self.num_videos - 1))
            return j + (j >= video)
        others = [v for v in range(self.num_videos) if v != video and v not in self.failed]
        if not others:
            raise RuntimeError("audio of another video: every other video failed to load")
        return others[int(rng.integers(len(others)))]

    def decode_plan(self, video: int, plan: _Plan
                    ) -> tuple[list[np.ndarray], np.ndarray | None, np.ndarray | None]:
        """Frames of every view (one decoder call: shared frames are decoded once), the own
        window and the other window; a failure raises :class:`_PartFailed` naming the video."""
        spec = self.sample
        assert spec is not None
        try:
            idx = np.concatenate([v.frame_indices for v in plan.views])
            frames = get_reader(self.video_path(video), self.backend).get_frames(idx)
            own = self._window(video, plan.views[0].audio_start) if spec.audio else None
        except Exception as e:
            raise _PartFailed(video, e) from e
        other = None
        if plan.other_video is not None:
            assert plan.other_start is not None
            try:
                other = self._window(plan.other_video, plan.other_start)
            except Exception as e:
                raise _PartFailed(plan.other_video, e) from e
        T = len(plan.views[0].frame_indices)
        views = [frames[k * T:(k + 1) * T] for k in range(len(plan.views))]
        return views, own, other

    def _window(self, video: int, start: float) -> np.ndarray:
        """The audio window at ``start`` seconds of ``video`` (silence for a row without audio)."""
        a, row = self.cfg.audio, self.rows[video]
        if row.get("has_audio") and row.get("audio_path"):
            return read_audio(resolve(self.manifest, row["audio_path"]), start, a.duration,
                              a.sample_rate)
        return np.zeros(round(a.duration * a.sample_rate), np.float32)

    def make_declared_item(self, video: int, plan: _Plan,
                           decoded: tuple[list[np.ndarray], np.ndarray | None,
                                          np.ndarray | None],
                           rng: np.random.Generator) -> dict[str, Any]:
        """The item of a :class:`SampleSpec`: views, then the own window, then the other one,
        each augmented with its own draws from ``rng``."""
        frames, own, other = decoded
        views = [self.video_transform(f, rng) for f in frames]
        t = plan.views[0]
        item: dict[str, Any] = {"video": views[0]} if len(views) == 1 else {"views": views}
        if own is not None:
            assert self.audio_transform is not None
            item["audio"] = self.audio_transform(own, rng)
        if other is not None:
            assert self.audio_transform is not None and plan.other_start is not None
            item["audio_other"] = self.audio_transform(other, rng)
            item["other_index"] = torch.tensor(plan.other_video, dtype=torch.long)
            item["other_start"] = torch.tensor(plan.other_start, dtype=torch.float32)
        item.update(self._where(video, t))
        return item

    def _on_failure(self, video: int, err: Exception, i: int, epoch: int, attempt: int) -> int:
        """Log and count a failed video; return the video to load instead (or raise)."""
        path = self.video_path(video)
        evict_reader(path, self.backend)
        msg = f"{type(err).__name__}: {err}"
        self.failed[video] = msg
        n = len(self.failed)
        log.warning("failed to load %s (%s); replacing the sample (%d failed videos in this "
                    "process, %d allowed)", path, msg, n, self.max_failures)
        if n > self.max_failures:
            raise RuntimeError(
                f"{n} of {self.num_videos} videos failed to decode in this process, more than "
                f"the {self.max_failures} allowed (data.max_failure_fraction="
                f"{self.cfg.max_failure_fraction}). Last: {path}: {msg}. Check or re-create the "
                f"files (avssl preprocess), remove them from {self.manifest}, or raise "
                "data.max_failure_fraction.") from err
        ok = [v for v in range(self.num_videos) if v not in self.failed]
        if not ok:
            raise RuntimeError(f"every video of {self.manifest} failed to decode; last: "
                               f"{path}: {msg}") from err
        # Deterministic replacement from (seed, epoch, item, attempt).
        pick = np.random.default_rng([self.seed, epoch, i, attempt, 1]).integers(len(ok))
        return ok[int(pick)]


@dataclass(frozen=True)
class _Plan:
    """A declared item's parts: the clip timing of every view (the first is the item's clip),
    and the other audio window's video and start (None without one)."""

    views: list[ClipTiming]
    other_video: int | None
    other_start: float | None


class _PartFailed(Exception):
    """Decoding one part of a declared item failed: ``video`` is the one to blame."""

    def __init__(self, video: int, error: Exception) -> None:
        super().__init__(str(error))
        self.video, self.error = video, error


def _window_start(u: float, duration: float, window: float) -> float:
    """A uniform window start (``u`` in [0, 1)) inside ``duration`` seconds (0 if too short)."""
    return u * (duration - window) if duration > window else 0.0


def _far_window(u: float, own: float, duration: float, window: float, gap: float) -> float:
    """A window start at least ``gap`` seconds from ``own``, uniform (``u`` in [0, 1)) over the
    starts that allow it; the farthest start of the video when none does."""
    last = max(duration - window, 0.0)
    spans = [(lo, hi) for lo, hi in ((0.0, own - gap), (own + gap, last)) if lo <= hi]
    if not spans:
        return 0.0 if own > last - own else last
    x = u * sum(hi - lo for lo, hi in spans)
    for lo, hi in spans:
        if x <= hi - lo:
            return lo + x
        x -= hi - lo
    return spans[-1][1]


def _allowed_failures(fraction: float, num_videos: int) -> int:
    """Failed videos tolerated: ``fraction * num_videos``, at least 1 when fraction > 0."""
    if fraction <= 0:
        return 0
    return max(1, math.floor(fraction * num_videos))


def _label_map(rows: list[dict[str, Any]], manifest: Path) -> tuple[list[str], dict[str, int]]:
    """Sorted class names of string labels and their ids (empty for integer labels)."""
    labels = [r["label"] for r in rows if r.get("label") is not None]
    if any(not isinstance(x, (str, int)) or isinstance(x, bool) for x in labels):
        raise ManifestError(f"{manifest}: labels must be integers or strings")
    strs = {lab for lab in labels if isinstance(lab, str)}
    if strs and len(strs) != len(set(labels)):
        raise ManifestError(f"{manifest}: labels mix strings and integers")
    classes = sorted(strs)
    return classes, {c: k for k, c in enumerate(classes)}


# ----------------------------------------------------------------------------------------------
# Loader
# ----------------------------------------------------------------------------------------------
class EpochSampler(Sampler[int]):
    """Every index once per epoch; shuffled with ``seed + epoch`` when ``shuffle``."""

    def __init__(self, n: int, shuffle: bool, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class AVLoader(DataLoader):
    """DataLoader with ``set_epoch(epoch)``: sets the sampler's and the dataset's epoch."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def worker_init(worker_id: int) -> None:
    reset_reader_cache()  # never use a decoder opened by the parent process


def build_loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool,
                 drop_last: bool, seed: int = 0, distributed: bool | None = None,
                 prefetch_factor: int = 2) -> AVLoader:
    """A DataLoader over ``dataset`` (``batch_size`` per process).

    ``distributed=None`` uses a DistributedSampler when ``torch.distributed`` is initialized.
    Workers are persistent and reset the decoder cache when they start. Call
    ``loader.set_epoch(epoch)`` before each epoch (shuffle order and augmentation draws).
    """
    import torch.distributed as dist

    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler: Sampler[int] = DistributedSampler(dataset, shuffle=shuffle, seed=seed,
                                                   drop_last=drop_last)  # type: ignore[arg-type]
    else:
        sampler = EpochSampler(len(dataset), shuffle, seed)  # type: ignore[arg-type]
    workers = num_workers > 0
    return AVLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                    drop_last=drop_last, persistent_workers=workers,
                    worker_init_fn=worker_init if workers else None,
                    prefetch_factor=prefetch_factor if workers else None,
                    pin_memory=torch.cuda.is_available())
