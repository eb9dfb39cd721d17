"""Config loading: inheritance, overrides, and one-line errors naming file and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from avssl.config import Config, ConfigError, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    p = tmp_path / "manifest.jsonl"
    p.write_text("")
    return p


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_match_reference(manifest: Path, tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.yaml", f"data: {{manifest: {manifest}}}\n"))
    assert isinstance(cfg, Config)
    assert cfg.data.audio.n_fft == 1024 and cfg.data.audio.hop_length == 240
    assert cfg.data.audio.sample_rate == 24000 and cfg.data.audio.duration == 2.0
    from avssl.methods import method_settings
    from avssl.methods.cma import CMASettings

    m = method_settings(cfg)
    assert m.name == "avid" and m.temperature == 0.07 and m.num_negatives == 1024
    assert m.memory_momentum == 0.5 and CMASettings().num_positives == 32
    assert cfg.data.video.color_jitter == [0.4, 0.4, 0.4, 0.2]


def test_base_inheritance_and_merge(manifest: Path, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "base.yaml",
          f"seed: 3\ndata:\n  manifest: {manifest}\n  video: {{num_frames: 16, fps: 8}}\n")
    child = write(tmp_path / "sub" / "child.yaml",
                  "base: ../base.yaml\ndata:\n  video: {num_frames: 4}\noptim: {lr: 1e-3}\n")
    cfg = load_config(child)
    assert cfg.seed == 3
    assert cfg.data.video.num_frames == 4  # child wins
    assert cfg.data.video.fps == 8.0  # merged from base, int -> float
    assert cfg.optim.lr == pytest.approx(1e-3)  # YAML 1.1 reads "1e-3" as a string


def test_overrides(manifest: Path, tmp_path: Path) -> None:
    c = write(tmp_path / "c.yaml", f"data: {{manifest: {manifest}}}\n")
    cfg = load_config(c, ["optim.lr=5e-4", "data.split=null", "data.video.flip=false",
                          "model.head.hidden=[256]"])
    assert cfg.optim.lr == pytest.approx(5e-4)
    assert cfg.data.split is None
    assert cfg.data.video.flip is False
    assert cfg.model.head.hidden == [256]


@pytest.mark.parametrize("text, needle", [
    ("data: {manifst: x}\n", "data.manifst: unknown key"),
    ("data: {batch_size: many}\n", "data.batch_size: expected int, got 'many'"),
    ("data: {batch_size: 1.5}\n", "data.batch_size: expected int"),
    ("data: {video: {flip: 3}}\n", "data.video.flip: expected bool"),
    ("optim: {lr: -1}\n", "optim.lr: -1.0 is below the minimum 0.0"),
    ("data: {audio: {volume_jitter: 2}}\n", "data.audio.volume_jitter: 2.0 is above the maximum"),
    ("data: {backend: ffmpeg}\n", "data.backend: 'ffmpeg' is not one of ['pyav', 'decord']"),
    ("data: {video: {mean: [0.1, x]}}\n", "data.video.mean[1]: expected float"),
    ("data: 5\n", "data: expected a mapping"),
    ("data: {manifest: /no/such/manifest.jsonl}\n", "data.manifest: file not found"),
    ("seed: 1\n", "data.manifest: required"),
    ("data: [unclosed\n", "invalid YAML"),
    ("base: missing.yaml\n", "base: config file not found"),
])
def test_errors_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    c = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as e:
        load_config(c)
    msg = str(e.value)
    assert needle in msg
    assert "bad.yaml" in msg
    assert "\n" not in msg


def test_override_errors(manifest: Path, tmp_path: Path) -> None:
    c = write(tmp_path / "c.yaml", f"data: {{manifest: {manifest}}}\n")
    with pytest.raises(ConfigError, match=r"optim.lrr: unknown key .*did you mean 'lr'"):
        load_config(c, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"expected key\.sub=value"):
        load_config(c, ["optim.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_circular_base(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_saved_config_round_trips(manifest: Path, tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.yaml", f"data: {{manifest: {manifest}}}\n"),
                      ["train.epochs=3", "data.audio.feature=logmel"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg


@pytest.mark.slow
def test_cli_exit_code_2_without_traceback(tmp_path: Path) -> None:
    c = write(tmp_path / "bad.yaml", "optim: {lr: fast}\n")
    r = subprocess.run([sys.executable, "-m", "avssl.cli", "config", str(c)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "optim.lr: expected float, got 'fast'" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_shipped_configs_load() -> None:
    """Every YAML under configs/ is valid (paths to data are not required to exist here)."""
    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert len(files) >= 6
    for f in files:
        load_config(f, require_paths=False)
    avid = load_config(root / "avid" / "kinetics.yaml", require_paths=False)
    assert (avid.data.batch_size, avid.optim.lr, avid.train.epochs) == (256, 2e-4, 30)
    assert avid.data.clips_per_video == 10
    cma = load_config(root / "cma" / "audioset.yaml", require_paths=False)
    assert (cma.method["name"], cma.data.batch_size, cma.optim.lr, cma.train.epochs) == (
        "cma", 160, 1e-4, 40)
    assert cma.method["resample_every"] == 10 and cma.method["num_positives"] == 32


# ---------------------------------------------------------------- avssl config / train checks
def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    from avssl.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("config", sorted(str(p) for p in (ROOT / "configs").rglob("*.yaml")))
def test_avssl_config_accepts_every_shipped_config_before_the_data_exists(
        config: str, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _cli(capsys, "config", config)
    assert code == 0, err
    assert "manifest:" in out


@pytest.mark.parametrize(("override", "message"), [
    ("method.name=foo", "method.name: unknown method 'foo' (known: avid, cma"),
    ("model.video.arch=resnet50", "model.video.arch: unknown video encoder 'resnet50'"),
    ("model.video.depth=7", "model.video.depth: r2plus1d has depths [10, 18, 34], got 7"),
    ("model.audio.depth=18", "model.audio.depth: audio_cnn is the 10-layer CNN"),
])
@pytest.mark.parametrize("command", ["config", "train"])
def test_config_and_train_reject_bad_method_and_model(
        command: str, override: str, message: str, capsys: pytest.CaptureFixture,
        tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("")  # train checks paths first: give it one that exists
    argv = [command, str(ROOT / "configs/avid/kinetics.yaml"), override,
            f"data.manifest={manifest}"]
    if command == "train":
        argv += ["--run-dir", str(tmp_path / "run")]
    code, _, err = _cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "configs/avid/kinetics.yaml (with overrides)" in lines[0]
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_train_names_a_missing_manifest(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, _, err = _cli(capsys, "train", str(ROOT / "configs/avid/kinetics.yaml"),
                        f"data.manifest={tmp_path / 'nope.jsonl'}")
    assert code == 2
    assert err.strip().splitlines() == [
        f"avssl train: error: {ROOT / 'configs/avid/kinetics.yaml'} (with overrides): "
        f"data.manifest: file not found: {tmp_path / 'nope.jsonl'}"]


def test_train_batch_larger_than_the_data(tiny_prepared: Path, capsys: pytest.CaptureFixture,
                                          tmp_path: Path) -> None:
    code, _, err = _cli(capsys, "train", str(ROOT / "configs/demo/avid.yaml"),
                        f"data.manifest={tiny_prepared}", "data.batch_size=64",
                        "data.num_workers=0", "--run-dir", str(tmp_path / "run"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "data.batch_size: 64 is larger than the 48 clips" in lines[0], err
