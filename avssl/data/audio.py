"""Audio features: the published linear spectrogram, log-mel, per-bin z-scoring, volume jitter.

Linear spectrogram (AVID/CMA, Morgado et al. CVPR 2021): STFT with n_fft 1024, hop 240 (10 ms at
24 kHz), periodic Hann window, centred frames with reflect padding (librosa's default when the
reference was written); power; the 513 bins become 257 by keeping DC and averaging the pairs
(1, 2), (3, 4), ..., (511, 512); the first ``num_frames`` (200) frames; dB with ``top_db`` 100
(``10 log10(max(P, 1e-10))``, floored at the spectrogram's max - top_db); z-scored per bin as
``(x - mean) / (std + 1e-5)``. Output (1, T, F): time x frequency.

Also: ``avssl audio-stats MANIFEST OUT.npz`` computes the per-bin statistics (:func:`run`).
"""

from __future__ import annotations

import argparse
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avssl.config import AudioConfig, DataConfig

log = logging.getLogger(__name__)

AMIN = 1e-10  # power floor before the log (librosa.power_to_db)
STD_EPS = 1e-5  # added to std when z-scoring (as the reference)


def num_bins(cfg: AudioConfig) -> int:
    """F, the feature size: n_fft // 4 + 1 linear bins (257 for n_fft 1024), or n_mels."""
    return cfg.n_fft // 4 + 1 if cfg.feature == "linear" else cfg.n_mels


def available_frames(cfg: AudioConfig) -> int:
    """Frames a centred STFT gives for ``cfg.duration`` seconds."""
    return round(cfg.duration * cfg.sample_rate) // cfg.hop_length + 1


@lru_cache(maxsize=8)
def _hann(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32)


def linear_spectrogram(wave: np.ndarray | torch.Tensor, n_fft: int = 1024, hop_length: int = 240,
                       num_frames: int = 200, top_db: float | None = 100.0) -> torch.Tensor:
    """Published AVID spectrogram of a mono waveform (S,): float32 (1, T, n_fft // 4 + 1) dB.

    T = ``num_frames``, the first frames of the centred STFT (what ``torch.stft(center=True,
    pad_mode="reflect")`` or librosa 0.8 give). Written as framing + rfft in (time, freq) layout
    with strided adds for the power and bin pairs: 2-3x faster than stft + reductions.
    """
    if n_fft % 4:
        raise ValueError(f"n_fft must be a multiple of 4 (bins are averaged in pairs), got {n_fft}")
    x = torch.as_tensor(wave, dtype=torch.float32).reshape(-1)
    pad = n_fft // 2
    if x.numel() <= pad:
        raise ValueError(f"waveform of {x.numel()} samples is too short for n_fft={n_fft}")
    xp = torch.cat([x[1:pad + 1].flip(0), x, x[-pad - 1:-1].flip(0)])  # reflect padding
    frames = xp.unfold(0, n_fft, hop_length)[:num_frames]  # (T, n_fft) view
    spec = torch.fft.rfft(frames * _hann(n_fft))  # (T, n_fft / 2 + 1) complex
    t = spec.shape[0]
    sq = torch.view_as_real(spec).square_().view(t, -1)  # re0^2, im0^2, re1^2, im1^2, ...
    half = n_fft // 4
    power = torch.empty(t, half + 1)
    torch.add(sq[:, 0], sq[:, 1], out=power[:, 0])  # DC keeps its own bin
    q = sq[:, 2:].view(t, half, 4)  # FFT bins (2k - 1, 2k): re^2, im^2, re^2, im^2
    pairs = power[:, 1:]
    torch.add(q[..., 0], q[..., 1], out=pairs)
    pairs.add_(q[..., 2]).add_(q[..., 3]).mul_(0.5)
    return power_to_db_(power, top_db).unsqueeze(0)


def power_to_db_(power: torch.Tensor, top_db: float | None) -> torch.Tensor:
    """In place: ``10 log10(max(P, 1e-10))``, floored at ``max - top_db`` over the whole input
    (librosa.power_to_db with ref 1)."""
    db = power.clamp_(min=AMIN).log10_().mul_(10.0)
    if top_db is not None:
        db = db.clamp_(min=float(db.max()) - top_db)
    return db


class LogMel:
    """torchaudio MelSpectrogram (power) -> dB with ``top_db``: (S,) -> (1, T, n_mels)."""

    def __init__(self, cfg: AudioConfig) -> None:
        import torchaudio

        self.num_frames = cfg.num_frames
        self.top_db = cfg.top_db
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
            n_mels=cfg.n_mels, power=2.0, center=True, pad_mode="reflect")

    def __call__(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(wave, dtype=torch.float32).reshape(-1)
        with torch.no_grad():
            power = self.mel(x)[:, : self.num_frames]  # (n_mels, T)
        return power_to_db_(power.T.contiguous(), self.top_db).unsqueeze(0)


def load_stats(path: str | Path, num_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin ``mean``, ``std`` float32 (F,) from an npz; checks F when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio statistics not found "
                                "(compute them with `avssl audio-stats MANIFEST OUT.npz`)")
    with np.load(path) as z:
        if "mean" not in z or "std" not in z:
            raise ValueError(f"{path}: expected arrays 'mean' and 'std', found {list(z)}")
        mean, std = z["mean"].astype(np.float32), z["std"].astype(np.float32)
    if mean.shape != std.shape or mean.ndim != 1:
        raise ValueError(f"{path}: mean/std must both be (F,), got {mean.shape}, {std.shape}")
    if num_features is not None and mean.shape[0] != num_features:
        raise ValueError(f"{path}: statistics have {mean.shape[0]} bins but the features have "
                         f"{num_features} (computed for another audio.feature / n_fft / n_mels?)")
    return mean, std


def save_stats(path: str | Path, mean: np.ndarray, std: np.ndarray, **meta: object) -> None:
    """Write ``mean``, ``std`` (F,) and scalar metadata to an npz, atomically."""
    from avssl.utils.atomic import atomic_path

    extra = {k: np.asarray(v) for k, v in meta.items()}
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32), **extra)


def volume_jitter(wave: np.ndarray, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply the waveform by a gain uniform in ``[1 - jitter, 1 + jitter]`` (float32)."""
    if jitter <= 0:
        return wave
    return np.asarray(wave, dtype=np.float32) * np.float32(rng.uniform(1.0 - jitter, 1.0 + jitter))


class AudioTransform:
    """Waveform (S,) float32 -> features (1, T, F): jitter (train), spectrogram, z-score.

    ``normalize=False`` skips the z-scoring even when ``cfg.stats`` is set (used to compute the
    statistics themselves).
    """

    def __init__(self, cfg: AudioConfig, train: bool = True, normalize: bool = True) -> None:
        self.cfg = cfg
        self.train = train
        if available_frames(cfg) < cfg.num_frames:
            raise ValueError(f"audio.num_frames={cfg.num_frames} but {cfg.duration} s at "
                             f"{cfg.sample_rate} Hz with hop {cfg.hop_length} gives only "
                             f"{available_frames(cfg)} frames")
        self.num_features = num_bins(cfg)
        self._logmel = LogMel(cfg) if cfg.feature == "logmel" else None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        if normalize and cfg.stats:
            mean, std = load_stats(cfg.stats, self.num_features)
            self.mean = torch.from_numpy(mean)
            self.std = torch.from_numpy(std) + STD_EPS

    def features(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Unnormalized dB features (1, T, F) of a waveform (no jitter)."""
        if self._logmel is not None:
            return self._logmel(wave)
        c = self.cfg
        return linear_spectrogram(wave, c.n_fft, c.hop_length, c.num_frames, c.top_db)

    def __call__(self, wave: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        if self.train and self.cfg.volume_jitter > 0:
            wave = volume_jitter(wave, self.cfg.volume_jitter, rng or np.random.default_rng())
        x = self.features(wave)
        if self.mean is not None and self.std is not None:
            x = x.sub_(self.mean).div_(self.std)
        return x


# ----------------------------------------------------------------------------------------------
# Dataset statistics
# ----------------------------------------------------------------------------------------------
def audio_rows(rows: list[dict[str, Any]], split: str | None, manifest: str | Path
               ) -> list[dict[str, Any]]:
    """The rows of ``split`` (None: every row) that have audio; ValueError (one line) when
    there are none, naming the splits the manifest does have."""
    picked = rows if split is None else [r for r in rows if r.get("split") == split]
    if not picked:
        present = sorted({str(r["split"]) for r in rows if "split" in r})
        has = f"its splits: {', '.join(present)}" if present else "it has no split column"
        raise ValueError(f"{manifest}: no rows in split {split!r} ({has}; --split all for "
                         "every row)")
    with_audio = [r for r in picked if r.get("has_audio") and r.get("audio_path")]
    if not with_audio:
        where = "" if split is None else f" of split {split!r}"
        raise ValueError(f"{manifest}: none of the {len(picked)} rows{where} has audio")
    return with_audio


def stats_of_rows(manifest: str | Path, rows: list[dict[str, Any]], cfg: AudioConfig,
                  max_videos: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std (F,) of the dB features of up to ``max_videos`` of ``rows``.

    Rows are subsampled deterministically with ``seed``; one random ``cfg.duration`` window per
    video, without jitter or normalization. An unreadable audio file raises ValueError.
    """
    from avssl.data.decode import read_audio
    from avssl.data.manifest import resolve

    rng = np.random.default_rng(seed)
    if len(rows) > max_videos:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), max_videos, replace=False))]
    tf = AudioTransform(cfg, train=False, normalize=False)
    total = np.zeros(tf.num_features, np.float64)
    total_sq = np.zeros(tf.num_features, np.float64)
    count = 0
    A = cfg.duration
    for row in rows:
        dur = float(row["duration"])
        start = float(rng.uniform(0.0, dur - A)) if dur > A else 0.0
        path = resolve(manifest, row["audio_path"])
        try:
            wave = read_audio(path, start, A, cfg.sample_rate)
        except (OSError, RuntimeError) as e:  # soundfile's errors are RuntimeErrors
            reason = " ".join(str(e).split())  # one line
            raise ValueError(f"{path}: cannot read audio of row {row['id']!r} ({reason})") \
                from None
        x = tf.features(wave)[0].double().numpy()  # (T, F)
        total += x.sum(0)
        total_sq += np.square(x).sum(0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    log.info("audio stats over %d videos (%d frames)", len(rows), count)
    return mean.astype(np.float32), std.astype(np.float32)


def compute_audio_stats(manifest: str | Path, cfg: DataConfig, max_videos: int = 500,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std (F,) of the dB features over up to ``max_videos`` videos.

    Videos with audio of ``cfg.split`` (None: every row) are subsampled deterministically with
    ``seed``; one random ``cfg.audio.duration`` window per video, without jitter or
    normalization.
    """
    from avssl.data.manifest import read_manifest

    rows = audio_rows(read_manifest(manifest), cfg.split, manifest)
    return stats_of_rows(manifest, rows, cfg.audio, max_videos, seed)


ALL = "all"  # --split value: every row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``avssl audio-stats MANIFEST OUT.npz [--config CONFIG] [--split NAME]``."""
    parser.description = (
        "Per-frequency-bin mean and std of the dB spectrogram features of a prepared dataset, "
        "for z-scoring the audio input. They take effect only where a config's data.audio.stats "
        "names the file (e.g. `avssl train CONFIG data.audio.stats=OUT.npz`); nothing picks the "
        "file up by itself. Compute them with the data.audio settings of the config that will "
        "use them (--config).")
    parser.add_argument("manifest", metavar="MANIFEST",
                        help="manifest.jsonl written by avssl preprocess")
    parser.add_argument("out", metavar="OUT.npz",
                        help="output .npz with per-bin 'mean' and 'std' (and the audio settings)")
    parser.add_argument("--config",
                        help="run config whose data.audio settings (and data.split) are used "
                             "(default: none, the built-in data.audio defaults)")
    parser.add_argument("--split", metavar="NAME",
                        help=f"rows of this split, or '{ALL}' for every row (default: the "
                             "config's data.split, or every row when no --config is given or "
                             "the manifest has no split column)")
    parser.add_argument("--max-videos", type=int, default=500, metavar="N",
                        help="videos sampled, one window each (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the video and window sampling (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE",
                        help="config overrides, e.g. data.audio.n_mels=64 (default: none)")


def _data_config(args: argparse.Namespace) -> tuple[DataConfig, bool]:
    """The data config of ``--config`` / ``--set``, and whether it names a split."""
    from avssl.config import Config, from_dict, load_config, parse_override

    if args.config:
        return load_config(args.config, args.overrides, require_paths=False).data, True
    data: dict[str, Any] = {}
    for item in args.overrides:
        keys, value = parse_override(item)
        d = data
        for k in keys[:-1]:
            d = d.setdefault(k, {})
            if not isinstance(d, dict):
                raise ValueError(f"--set {item}: {'.'.join(keys[:-1])} is not a section")
        d[keys[-1]] = value
    cfg = from_dict(data, Config, "<command line>", require_paths=False).data
    named = isinstance(data.get("data"), dict) and "split" in data["data"]
    return cfg, named


def run(args: argparse.Namespace) -> int:
    """Compute and save the statistics; every error raises UsageError (one line, exit 2)."""
    from avssl.utils.errors import UsageError
    from avssl.data.manifest import read_manifest

    try:
        if args.max_videos < 1:
            raise ValueError(f"--max-videos must be >= 1, got {args.max_videos}")
        cfg, named = _data_config(args)
        rows = read_manifest(args.manifest)
        if args.split is not None:  # explicit: must exist
            split = None if args.split == ALL else args.split
        elif named and any("split" in r for r in rows):
            split = cfg.split  # the config's data.split
        else:  # no config, or a manifest without splits (e.g. made with --label-from-dir)
            split = None
        picked = audio_rows(rows, split, args.manifest)
        mean, std = stats_of_rows(args.manifest, picked, cfg.audio, args.max_videos, args.seed)
        a = cfg.audio
        save_stats(args.out, mean, std, feature=a.feature, n_fft=a.n_fft,
                   hop_length=a.hop_length, n_mels=a.n_mels, sample_rate=a.sample_rate,
                   split=ALL if split is None else split)
    except OSError as e:  # FileNotFoundError of the config, an unwritable OUT
        raise UsageError(" ".join(str(e).split())) from None
    except ValueError as e:  # ConfigError, ManifestError, bad rows or audio
        raise UsageError(str(e)) from None
    rows_of = f"split {split!r}" if split is not None else "all rows"
    print(f"wrote {args.out}: {len(mean)} bins from {min(len(picked), args.max_videos)} of "
          f"{len(picked)} videos with audio ({rows_of}); mean {mean.mean():.2f} dB, std "
          f"{std.mean():.2f} dB (averaged over bins)")
    print(f"z-scoring uses it only where a config sets data.audio.stats={args.out} "
          "(avssl train / eval: the config given; avssl localize: the checkpoint's)")
    return 0
