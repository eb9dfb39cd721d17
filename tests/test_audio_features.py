"""Audio features: linear spectrogram vs an independent numpy reference, log-mel, stats, jitter."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avssl.config import AudioConfig, DataConfig
from avssl.data import audio as A
from avssl.data.manifest import write_manifest

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


def _write_dataset(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        (root / "audio").mkdir(parents=True, exist_ok=True)
        t = np.arange(3 * SR) / SR
        x = 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t) + 0.02 * rng.standard_normal(3 * SR)
        sf.write(root / f"audio/v{i}.wav", x.astype(np.float32), SR, subtype="PCM_16")
        rows.append({"id": f"v{i}", "path": f"videos/v{i}.mp4", "duration": 3.0, "fps": 16.0,
                     "num_frames": 48, "width": 64, "height": 64, "has_audio": True,
                     "audio_path": f"audio/v{i}.wav", "sample_rate": SR, "audio_rms_db": -12.0,
                     "split": "train"})
    rows.append({"id": "z_silent", "path": "videos/z.mp4", "duration": 3.0, "fps": 16.0,
                 "num_frames": 48, "width": 64, "height": 64, "has_audio": False,
                 "audio_path": None, "sample_rate": None, "split": "train"})
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


def test_cli_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _write_dataset(tmp_path, n=3)
    parser = argparse.ArgumentParser()
    A.add_arguments(parser)
    out = tmp_path / "stats.npz"
    args = parser.parse_args([str(manifest), str(out), "--max-videos", "2",
                              "--set", "data.audio.feature=logmel", "data.audio.n_mels=32"])
    assert A.run(args) == 0
    mean, _ = A.load_stats(out, 32)
    assert mean.shape == (32,) and "32 bins" in capsys.readouterr().out
    args = parser.parse_args([str(manifest), str(out), "--split", "nope"])
    assert A.run(args) == 1 and "split 'nope'" in capsys.readouterr().out
    args = parser.parse_args([str(manifest), str(out), "--set", "data.audio.bogus=1"])
    assert A.run(args) == 2 and "bogus" in capsys.readouterr().out


def test_cli_with_config_file(tmp_path: Path) -> None:
    manifest = _write_dataset(tmp_path, n=2)
    conf = tmp_path / "run.yaml"
    conf.write_text("data:\n  split: train\n  audio:\n    feature: logmel\n    n_mels: 16\n")
    parser = argparse.ArgumentParser()
    A.add_arguments(parser)
    out = tmp_path / "s.npz"
    assert A.run(parser.parse_args([str(manifest), str(out), "--config", str(conf)])) == 0
    assert A.load_stats(out)[0].shape == (16,)
    with np.load(out) as z:
        assert str(z["feature"]) == "logmel" and int(z["n_mels"]) == 16


def test_matches_librosa() -> None:
    """Same numbers as librosa's centred STFT with reflect padding (librosa 0.8's default, the
    version of the published code) and librosa.power_to_db."""
    librosa = pytest.importorskip("librosa")
    x = (0.1 * np.random.default_rng(3).standard_normal(2 * SR)).astype(np.float32)
    power = np.abs(librosa.stft(x, n_fft=1024, hop_length=240, pad_mode="reflect")) ** 2
    binned = np.vstack([power[:1], 0.5 * (power[1::2] + power[2::2])])[:, :200]  # (257, T)
    ref = librosa.power_to_db(binned, top_db=100.0).T
    np.testing.assert_allclose(A.linear_spectrogram(x)[0].numpy(), ref, atol=0.02)
