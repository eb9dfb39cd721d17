"""User errors of ``avssl eval``, ``avssl localize`` and ``avssl convert``: one line on stderr,
exit code 2, no traceback (bad checkpoint files, unknown ``eval.*`` keys); every option's
default in ``--help``."""

from __future__ import annotations

import argparse
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from avssl.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

PROTOCOLS = ("linear", "knn", "finetune", "retrieval", "audio")


class Payload:
    """Pickled, it would open (create) a file when unpickled: must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files that are not avssl checkpoints, by kind."""
    d = tmp_path_factory.mktemp("bad_ckpt")
    files = {name: d / name for name in (
        "random.bin", "text.txt", "empty.pt", "objects.pt", "plain_pickle.pkl", "list.pt",
        "other_dict.pt", "tensor.pt", "truncated.pt", "bad_model.pt", "folder")}
    files["random.bin"].write_bytes(os.urandom(4096))
    files["text.txt"].write_text("epoch: 3\nthis is not a checkpoint\n")
    files["empty.pt"].write_bytes(b"")
    torch.save({"model": {}, "config": {}, "x": Payload(d / "pwned")}, files["objects.pt"])
    with open(files["plain_pickle.pkl"], "wb") as f:  # protocol 4: torch would warn about it
        pickle.dump({"model": {"w": [1.0]}}, f, protocol=4)
    torch.save([torch.zeros(2)], files["list.pt"])
    torch.save({"state_dict": {"w": torch.zeros(2)}}, files["other_dict.pt"])
    torch.save(torch.zeros(3), files["tensor.pt"])
    whole = (d / "list.pt").read_bytes()
    files["truncated.pt"].write_bytes(whole[: len(whole) // 2])
    torch.save({"model": [1, 2], "config": {}}, files["bad_model.pt"])
    files["folder"].mkdir()
    files["missing.pt"] = d / "missing.pt"
    return files


#: kind -> what the one line says, for `avssl eval` and `avssl localize`
EXPECTED = {
    "random.bin": "not a PyTorch checkpoint (could not unpickle: ",
    "text.txt": "not a PyTorch checkpoint (could not unpickle: ",
    "empty.pt": "not a PyTorch checkpoint (empty file)",
    "objects.pt": "refusing to unpickle arbitrary Python objects (GLOBAL ",
    "plain_pickle.pkl": "not a PyTorch checkpoint (could not unpickle: ",
    "list.pt": "not an avssl checkpoint (holds a list, not a dict with 'model' and 'config'",
    "other_dict.pt": "not an avssl checkpoint (no 'model'/'config' keys; has 'state_dict'; for "
                     "the published AVID-CMA weights run `avssl convert avid-cma",
    "tensor.pt": "not an avssl checkpoint (holds a Tensor",
    "truncated.pt": "not a PyTorch checkpoint (unreadable archive: ",
    "bad_model.pt": "not an avssl checkpoint ('model' holds a list, not a dict)",
    "folder": "not a file",
    "missing.pt": "checkpoint not found",
}


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``avssl ARGV``: exit code 2, no warning, and exactly one stderr line, returned."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert not caught, [str(w.message)[:200] for w in caught]
    return err.strip()


@pytest.fixture(scope="module")
def eval_config(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An eval config on the tiny prepared dataset (small clips, no workers)."""
    path = tmp_path_factory.mktemp("cfg") / "probe.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 0,
        "data": {"manifest": str(tiny_prepared), "split": "train", "eval_split": "test",
                 "batch_size": 4, "num_workers": 0, "require_audio": False,
                 "video": {"num_frames": 4, "fps": 8, "crop_size": 32, "resize": 36}},
        "train": {"epochs": 1}}))
    return path


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_eval_linear_bad_checkpoint(kind: str, bad_files: dict[str, Path], eval_config: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = bad_files[kind]
    err = _one_line_error(["eval", "linear", str(eval_config), "--checkpoint", str(ckpt),
                           "--no-progress"], capsys)
    assert err.startswith(f"avssl eval: error: {ckpt}: "), err
    assert EXPECTED[kind] in err, err
    assert not (ckpt.parent / "pwned").exists()  # nothing was run from the pickle


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_localize_bad_checkpoint(kind: str, bad_files: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "v.mp4"  # never decoded: the checkpoint is read first
    video.write_bytes(b"")
    err = _one_line_error(["localize", str(video), "--checkpoint", str(bad_files[kind]),
                           "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    assert err.startswith(f"avssl localize: error: {bad_files[kind]}: "), err
    assert EXPECTED[kind] in err, err


@pytest.mark.parametrize("protocol", ["knn", "finetune", "retrieval", "audio"])
@pytest.mark.parametrize("kind", ["random.bin", "objects.pt", "list.pt", "missing.pt"])
def test_other_protocols_bad_checkpoint(protocol: str, kind: str, bad_files: dict[str, Path],
                                        eval_config: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["data.split=null", "eval.folds=2"] if protocol == "audio" else []
    err = _one_line_error(["eval", protocol, str(eval_config), "--checkpoint",
                           str(bad_files[kind]), "--out", str(tmp_path / "r.json"),
                           "--no-progress", *extra], capsys)
    # finetune/retrieval/audio take a checkpoint without 'config' (the eval config's model)
    expected = EXPECTED[kind].replace(" and 'config'", "") if protocol != "knn" \
        else EXPECTED[kind]
    assert err.startswith(f"avssl eval: error: {bad_files[kind]}: ") and expected in err, err
    assert not (tmp_path / "r.json").exists()


CONVERT_EXPECTED = {
    **{k: v for k, v in EXPECTED.items() if v.startswith(("not a PyTorch", "not a file",
                                                          "checkpoint not found"))},
    "objects.pt": "refusing to unpickle arbitrary Python objects",
    "list.pt": "not a published AVID-CMA checkpoint (holds a list",
    "other_dict.pt": "not a published AVID-CMA checkpoint (no 'model' entry; top-level keys: "
                     "['state_dict'])",
    "tensor.pt": "not a published AVID-CMA checkpoint (holds a Tensor",
    "bad_model.pt": "not a published AVID-CMA checkpoint ('model' is not a dict",
}


@pytest.mark.parametrize("kind", list(CONVERT_EXPECTED))
def test_convert_bad_source(kind: str, bad_files: dict[str, Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "ours.pt"
    err = _one_line_error(["convert", "avid-cma", str(bad_files[kind]), str(dst)], capsys)
    assert err.startswith(f"avssl convert: error: {bad_files[kind]}: "), err
    assert CONVERT_EXPECTED[kind] in err, err
    if kind == "objects.pt":
        assert err.endswith("run again with --trust to allow non-tensor objects in it")
    assert not dst.exists()


@pytest.mark.parametrize("kind", ["random.bin", "text.txt", "truncated.pt", "other_dict.pt"])
def test_convert_trust_bad_source(kind: str, bad_files: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--trust unpickles anything, so garbage fails in the unpickler itself: still one line."""
    err = _one_line_error(["convert", "avid-cma", str(bad_files[kind]), str(tmp_path / "o.pt"),
                           "--trust"], capsys)
    assert err.startswith(f"avssl convert: error: {bad_files[kind]}: not a "), err
    if kind != "other_dict.pt":
        assert "not a PyTorch checkpoint (" in err and "UnpicklingError" not in err[-20:]


def test_convert_refuses_a_converted_checkpoint(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ours = tmp_path / "ours.pt"
    torch.save({"model": {"encoders.video.w": torch.zeros(1)}, "config": {}}, ours)
    err = _one_line_error(["convert", "avid-cma", str(ours), str(tmp_path / "x.pt")], capsys)
    assert "already in avssl's layout" in err


# ----------------------------------------------------------------------------------------------
# eval.* settings: every protocol rejects unknown keys
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_eval_key_is_rejected(protocol: str, eval_config: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "never_read.pt"  # the settings are checked before the checkpoint
    err = _one_line_error(["eval", protocol, str(eval_config), "--checkpoint", str(missing),
                           "eval.stepz=5"], capsys)
    assert err.startswith(f"avssl eval: error: {eval_config} (with overrides): "
                          "eval.stepz: unknown key"), err
    if protocol == "linear":
        assert err.endswith("eval.stepz: unknown key (did you mean 'steps'?)")
    # in the config file's eval section too, and bad values
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": str(eval_config), "eval": {"nope": 1}}))
    err = _one_line_error(["eval", protocol, str(bad), "--checkpoint", str(missing)], capsys)
    assert "eval.nope: unknown key" in err
    bad.write_text(yaml.safe_dump({"base": str(eval_config), "eval": [1, 2]}))
    err = _one_line_error(["eval", protocol, str(bad), "--checkpoint", str(missing)], capsys)
    assert "eval: expected a mapping" in err


@pytest.mark.parametrize("argv,message", [
    (["linear", "eval.steps=0"], "eval.steps: 0 is below the minimum 1"),
    (["linear", "eval.optimizer=rmsprop"], "eval.optimizer: 'rmsprop' is not one of"),
    (["linear", "eval.lr=fast"], "eval.lr: expected float, got 'fast'"),
    (["linear", "--steps", "0"], "eval.steps: 0 is below the minimum 1"),
    (["knn", "eval.k=0"], "eval.k: 0 is below the minimum 1"),
    (["knn", "eval.layers=conv5x"], "eval.layers: expected a list"),
    (["finetune", "eval.splits=[{train: a}]"], "eval: "),
])
def test_bad_eval_values(argv: list[str], message: str, eval_config: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(["eval", argv[0], str(eval_config), "--checkpoint",
                           str(tmp_path / "x.pt"), *argv[1:]], capsys)
    assert message in err, err


# ----------------------------------------------------------------------------------------------
# --help: every option says its default (or that it is required)
# ----------------------------------------------------------------------------------------------
def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


COMMAND_PARSERS = [("eval", p) for p in PROTOCOLS] + [("localize", None), ("convert", None)]


@pytest.mark.parametrize("command,protocol", COMMAND_PARSERS)
def test_help_shows_defaults(command: str, protocol: str | None,
                             capsys: pytest.CaptureFixture[str]) -> None:
    parser = _subparser(build_parser(command), command)
    if protocol:
        parser = _subparser(parser, protocol)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = (action.help or "").lower()
        if action.required:
            assert "required" in text or not action.option_strings, name
        elif action.option_strings or action.nargs in ("*", "?"):
            assert "default" in text, f"{command} {protocol or ''}: {name} shows no default"
    with pytest.raises(SystemExit) as e:
        main([command, *([protocol] if protocol else []), "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "default" in out and "usage: avssl" in out


def test_help_of_eval_protocols() -> None:
    ev = _subparser(build_parser("eval"), "eval")
    lin = _subparser(ev, "linear").format_help()
    assert "(default: 300)" in lin and "eval.steps" in lin and "(required)" in lin
    knn = _subparser(ev, "knn").format_help()
    assert "(default: 20)" in knn and "(default: 0.07)" in knn
    for protocol in ("finetune", "retrieval", "audio"):
        p = _subparser(ev, protocol)
        ck = next(a for a in p._actions if "--checkpoint" in a.option_strings)
        assert not ck.required and "optional" in ck.help and "random" in ck.help
        assert "eval." in p.format_help()  # the settings it reads


def test_localize_no_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-progress reaches Options.progress, and the bar over the videos honours it."""
    from avssl.localize import cli as loc

    seen: list[Any] = []

    class Stop(Exception):
        pass

    def fake_tqdm(iterable: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("disable"))
        raise Stop

    monkeypatch.setattr("tqdm.tqdm", fake_tqdm)
    monkeypatch.setattr(loc, "load_model", lambda *a, **k: (None, None))
    monkeypatch.setattr(loc, "Localizer", lambda *a, **k: None)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    for flag, disable in ((["--no-progress"], True), ([], None)):
        with pytest.raises(Stop):
            main(["localize", str(video), "--checkpoint", "c.pt", "--out",
                  str(tmp_path / "o"), *flag])
        assert seen.pop() is disable


@pytest.mark.parametrize("config,override,message", [
    # a key of another method: each method validates its own section
    ("configs/simclr/synthetic.yaml", "method.num_negatives=5",
     "method.num_negatives: unknown key"),
    ("configs/demo/avid.yaml", "method.base_momentum=0.9", "method.base_momentum: unknown key"),
    ("configs/avc/synthetic.yaml", "method.negatives=same_video",
     "method.negatives: 'same_video' is not one of"),
    ("configs/byol/synthetic.yaml", "method.base_momentum=2", "above the maximum 1.0"),
    ("configs/demo/cma.yaml", "method.name=swav", "method.name: unknown method 'swav'"),
    ("configs/demo/cma.yaml", "method.init_from=x.pt", "method.init_from: unknown key"),
    ("configs/demo/cma.yaml", "method.localization_weight=0",
     "method.localization_pairs: the pairs feed the multiple-instance term, which is off"),
    ("configs/demo/avid.yaml", "data.batch_size=1",
     "method.localization_pairs: pairs need 2 clips per process or more; data.batch_size 1"),
])
@pytest.mark.parametrize("command", ["config", "train"])
def test_method_section_is_checked_by_its_method(command: str, config: str, override: str,
                                                 message: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`avssl config` and `avssl train` reject a bad method key in one line naming the file,
    before any data is read (train: the manifest exists but is never opened)."""
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("not read\n")
    extra = [f"data.manifest={manifest}", "--run-dir", str(tmp_path / "run")] \
        if command == "train" else []
    err = _one_line_error([command, str(ROOT / config), override, *extra], capsys)
    assert message in err and config in err
