"""Audio features: linear spectrogram vs an independent numpy reference, log-mel, stats, jitter."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avssl.cli import main
from avssl.config import AudioConfig, DataConfig
from avssl.data import audio as A
from avssl.data.manifest import read_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[2]
SR = 24000


def numpy_reference(x: np.ndarray, n_fft: int = 1024, hop: int = 240, frames: int = 200,
                    top_db: float = 100.0) -> np.ndarray:
    """Written out independently: reflect-pad n_fft/2, periodic Hann frames, |rfft|^2, DC then
    pair means of bins (1,2)...(511,512), first `frames`, 10 log10 with a top_db floor.
    Returns (T, F)."""
    xp = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    out = []
    for t in range(frames):
        seg = xp[t * hop: t * hop + n_fft] * win
        p = np.abs(np.fft.rfft(seg)) ** 2  # 513 bins
        bins = [p[0]] + [(p[2 * k - 1] + p[2 * k]) / 2 for k in range(1, n_fft // 4 + 1)]
        out.append(bins)
    power = np.array(out)
    db = 10 * np.log10(np.maximum(power, 1e-10))
    return np.maximum(db, db.max() - top_db)


def test_linear_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    x = 0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t) + 0.05 * rng.standard_normal(2 * SR)
    x = x.astype(np.float32)
    ours = A.linear_spectrogram(x)
    assert ours.shape == (1, 200, 257) and ours.dtype == torch.float32
    ref = numpy_reference(x)
    np.testing.assert_allclose(ours[0].numpy(), ref, atol=2e-3 * np.abs(ref).max())
    # The dB floor (top_db) is applied over the whole spectrogram.
    silence_tail = np.concatenate([x[:SR], np.zeros(SR, np.float32)])
    s = A.linear_spectrogram(silence_tail)[0]
    assert float(s.max() - s.min()) == pytest.approx(100.0, abs=1e-3)


def test_pure_tone_lands_in_its_bin() -> None:
    # Bin k of the 257 (k >= 1) averages FFT bins 2k-1 and 2k, i.e. 23.4375 Hz each.
    for k in (10, 100, 200):
        f = (2 * k) * SR / 1024  # centre of FFT bin 2k
        x = (0.5 * np.sin(2 * np.pi * f * np.arange(2 * SR) / SR)).astype(np.float32)
        s = A.linear_spectrogram(x)[0]
        assert int(s[5:-5].mean(0).argmax()) == k
    dc = A.linear_spectrogram(np.full(2 * SR, 0.5, np.float32))[0]
    assert int(dc[5:-5].mean(0).argmax()) == 0


def test_logmel_shape_and_tone() -> None:
    cfg = AudioConfig(feature="logmel", n_mels=64, num_frames=200)
    tf = A.AudioTransform(cfg, train=False)
    low = (0.5 * np.sin(2 * np.pi * 300 * np.arange(2 * SR) / SR)).astype(np.float32)
    high = (0.5 * np.sin(2 * np.pi * 6000 * np.arange(2 * SR) / SR)).astype(np.float32)
    ml, mh = tf(low), tf(high)
    assert ml.shape == (1, 200, 64) and mh.shape == (1, 200, 64)
    assert int(ml[0].mean(0).argmax()) < int(mh[0].mean(0).argmax())


def test_config_checks_frames() -> None:
    with pytest.raises(ValueError, match="num_frames"):
        A.AudioTransform(AudioConfig(duration=1.0), train=False)  # 101 < 200 frames


def test_volume_jitter_range() -> None:
    rng = np.random.default_rng(1)
    x = np.ones(100, np.float32)
    gains = np.array([A.volume_jitter(x, 0.1, rng)[0] for _ in range(2000)])
    assert gains.min() >= 0.9 - 1e-6 and gains.max() <= 1.1 + 1e-6
    assert gains.min() < 0.91 and gains.max() > 1.09  # covers the range
    assert A.volume_jitter(x, 0.0, rng) is x
    # Train transform applies it (a gain of g moves the dB by 20 log10 g); test does not.
    cfg = AudioConfig()
    wave = (0.2 * np.random.default_rng(2).standard_normal(2 * SR)).astype(np.float32)
    test_tf = A.AudioTransform(cfg, train=False)
    assert torch.equal(test_tf(wave, np.random.default_rng(3)), test_tf(wave))
    shift = (A.AudioTransform(cfg, train=True)(wave, np.random.default_rng(3)) - test_tf(wave))
    g = np.random.default_rng(3).uniform(0.9, 1.1)
    assert float(shift.mean()) == pytest.approx(20 * np.log10(g), abs=1e-3)


def _write_dataset(root: Path, n: int = 6, splits: tuple[str | None, ...] = ("train",)) -> Path:
    """``n`` videos with tones (split ``splits[i % len(splits)]``, None: no split key) and
    one silent video."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        (root / "audio").mkdir(parents=True, exist_ok=True)
        t = np.arange(3 * SR) / SR
        x = 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t) + 0.02 * rng.standard_normal(3 * SR)
        sf.write(root / f"audio/v{i}.wav", x.astype(np.float32), SR, subtype="PCM_16")
        rows.append({"id": f"v{i}", "path": f"videos/v{i}.mp4", "duration": 3.0, "fps": 16.0,
                     "num_frames": 48, "width": 64, "height": 64, "has_audio": True,
                     "audio_path": f"audio/v{i}.wav", "sample_rate": SR, "audio_rms_db": -12.0})
        if (split := splits[i % len(splits)]) is not None:
            rows[-1]["split"] = split
    rows.append({"id": "z_silent", "path": "videos/z.mp4", "duration": 3.0, "fps": 16.0,
                 "num_frames": 48, "width": 64, "height": 64, "has_audio": False,
                 "audio_path": None, "sample_rate": None})
    if splits[0] is not None:
        rows[-1]["split"] = splits[0]
    write_manifest(root / "manifest.jsonl", rows)
    return root / "manifest.jsonl"


def test_stats_normalize_their_own_data(tmp_path: Path) -> None:
    manifest = _write_dataset(tmp_path)
    cfg = DataConfig()
    mean, std = A.compute_audio_stats(manifest, cfg, max_videos=500, seed=0)
    assert mean.shape == (257,) and std.shape == (257,) and np.all(std > 0)
    A.save_stats(tmp_path / "s.npz", mean, std, feature="linear")
    # Re-draw the same windows (same seed) and z-score them: ~0 mean, ~1 std per bin.
    norm_cfg = dataclasses.replace(cfg.audio, stats=str(tmp_path / "s.npz"))
    tf = A.AudioTransform(norm_cfg, train=False)
    from avssl.data.decode import read_audio
    rng = np.random.default_rng(0)
    feats = []
    for i in range(6):
        start = rng.uniform(0.0, 1.0)
        feats.append(tf(read_audio(tmp_path / f"audio/v{i}.wav", start, 2.0, SR))[0])
    z = torch.cat(feats).numpy()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-2)
    # Stats for another feature size are refused.
    with pytest.raises(ValueError, match="257 bins"):
        A.AudioTransform(dataclasses.replace(norm_cfg, feature="logmel", n_mels=64))
    with pytest.raises(FileNotFoundError, match="audio-stats"):
        A.load_stats(tmp_path / "missing.npz")


def _stats_cli(*argv: object) -> int:
    """``avssl audio-stats ...`` through the real entry point (exit codes, stderr)."""
    return main(["audio-stats", *map(str, argv)])


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("avssl audio-stats: error: "), \
        err
    assert all(n in err for n in needles), err


def test_cli_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _write_dataset(tmp_path, n=3, splits=("train", "train", "test"))
    out = tmp_path / "stats.npz"
    # No config: every row (test rows too), whatever the manifest's splits.
    assert _stats_cli(manifest, out, "--max-videos", "2",
                      "--set", "data.audio.feature=logmel", "data.audio.n_mels=32") == 0
    mean, _ = A.load_stats(out, 32)
    text = capsys.readouterr().out
    assert mean.shape == (32,) and "32 bins from 2 of 3 videos with audio (all rows)" in text
    assert f"data.audio.stats={out}" in text
    with np.load(out) as z:
        assert str(z["split"]) == "all"
    # An explicit split, or one named by --set data.split, is honoured.
    assert _stats_cli(manifest, out, "--split", "test") == 0
    assert "from 1 of 1 videos with audio (split 'test')" in capsys.readouterr().out
    assert _stats_cli(manifest, out, "--set", "data.split=train") == 0
    assert "from 2 of 2 videos" in capsys.readouterr().out
    # Errors: one line on stderr, exit code 2.
    assert _stats_cli(manifest, out, "--split", "nope") == 2
    _one_line_error(capsys, "no rows in split 'nope'", "its splits: test, train", "--split all")
    assert _stats_cli(manifest, out, "--set", "data.audio.bogus=1") == 2
    _one_line_error(capsys, "bogus")
    assert _stats_cli(tmp_path / "missing.jsonl", out) == 2
    _one_line_error(capsys, "missing.jsonl", "manifest not found")
    assert _stats_cli(manifest, out, "--max-videos", "0") == 2
    _one_line_error(capsys, "--max-videos must be >= 1")
    assert _stats_cli(manifest, out, "--config", tmp_path / "none.yaml") == 2
    _one_line_error(capsys, "none.yaml")
    assert _stats_cli(manifest, tmp_path, "--split", "all") == 2  # OUT is a folder
    _one_line_error(capsys, str(tmp_path))
    (tmp_path / "audio" / "v2.wav").write_bytes(b"not audio")
    assert _stats_cli(manifest, out, "--split", "test") == 2
    _one_line_error(capsys, "v2.wav: cannot read audio of row 'v2'")


def test_cli_with_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "run.yaml"
    conf.write_text("data:\n  split: train\n  audio:\n    feature: logmel\n    n_mels: 16\n")
    out = tmp_path / "s.npz"
    # The config's data.split selects rows when the manifest has that column ...
    split_manifest = _write_dataset(tmp_path / "a", n=3, splits=("train", "test"))
    assert _stats_cli(split_manifest, out, "--config", conf) == 0
    assert "from 2 of 2 videos with audio (split 'train')" in capsys.readouterr().out
    assert A.load_stats(out)[0].shape == (16,)
    with np.load(out) as z:
        assert str(z["feature"]) == "logmel" and int(z["n_mels"]) == 16
        assert str(z["split"]) == "train"
    # ... and a manifest without splits (preprocess --label-from-dir) gives every row.
    plain = _write_dataset(tmp_path / "b", n=3, splits=(None,))
    assert _stats_cli(plain, out, "--config", conf) == 0
    assert "from 3 of 3 videos with audio (all rows)" in capsys.readouterr().out
    # A split asked for explicitly must exist.
    assert _stats_cli(plain, out, "--config", conf, "--split", "train") == 2
    _one_line_error(capsys, "no rows in split 'train'", "no split column")
    # The shipped recipe's config as users run it (base.yaml: data.split null -> every row).
    assert _stats_cli(split_manifest, out, "--config", ROOT / "configs/avid/kinetics.yaml") == 0
    assert "257 bins from 3 of 3 videos with audio (all rows)" in capsys.readouterr().out
    # Only rows without audio: one line.
    silent = tmp_path / "c" / "manifest.jsonl"
    write_manifest(silent, [r for r in read_manifest(plain) if not r["has_audio"]])
    assert _stats_cli(silent, out) == 2
    _one_line_error(capsys, "none of the 1 rows has audio")


def test_matches_librosa() -> None:
    """Same numbers as librosa's centred STFT with reflect padding (librosa 0.8's default, the
    version of the published code) and librosa.power_to_db."""
    librosa = pytest.importorskip("librosa")
    x = (0.1 * np.random.default_rng(3).standard_normal(2 * SR)).astype(np.float32)
    power = np.abs(librosa.stft(x, n_fft=1024, hop_length=240, pad_mode="reflect")) ** 2
    binned = np.vstack([power[:1], 0.5 * (power[1::2] + power[2::2])])[:, :200]  # (257, T)
    ref = librosa.power_to_db(binned, top_db=100.0).T
    np.testing.assert_allclose(A.linear_spectrogram(x)[0].numpy(), ref, atol=0.02)
