"""The model side of ``avssl localize``: loading a checkpoint's encoders and embedding every clip
of a decoded video (the first pass, before calibration)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avssl.localize.inputs import Item, LocalizeError, Options
from avssl.localize.maps import audio_embedding, rms_dbfs, video_embedding_grid
from avssl.localize.timeline import Decoded, DecodeError, decode_prepared, decode_raw


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
        """Seconds of video in one clip."""
        return self.T / self.fps

    def decode(self, item: Item) -> Decoded:
        """The item's frames on the model's time grid and its audio (raises DecodeError)."""
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
