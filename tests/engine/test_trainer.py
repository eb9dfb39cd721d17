"""Training from a config end to end: AVID then CMA, checkpoints, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from avssl.engine.trainer import KILL_AT_STEP_ENV
from avssl.utils.checkpoint import load_checkpoint

# every test trains in a subprocess (avssl train, torchrun)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tiny_prepared: Path) -> Path:
    return tiny_prepared


def tiny_config(tmp: Path, manifest: Path, **extra: dict) -> Path:
    cfg = {
        "seed": 3,
        "data": {"manifest": str(manifest), "split": "train", "eval_split": "test",
                 "batch_size": 4, "num_workers": 0, "clips_per_video": 1, "max_offset": 0.25,
                 "video": {"num_frames": 4, "fps": 8, "crop_size": 32, "resize": 36},
                 "audio": {"sample_rate": 16000, "duration": 1.0, "feature": "logmel",
                           "n_fft": 512, "hop_length": 160, "n_mels": 32, "num_frames": 100}},
        "model": {"video": {"arch": "r2plus1d", "depth": 10, "width": 4},
                  "audio": {"arch": "audio_cnn", "width": 4},
                  "head": {"hidden": [16], "out_dim": 8}},
        "method": {"name": "avid", "num_negatives": 6},
        "optim": {"lr": 1e-3},
        "train": {"epochs": 2, "deterministic": True, "checkpoint_every_steps": 1,
                  "log_every_steps": 1},
    }
    for section, values in extra.items():
        cfg[section].update(values)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def avssl_train(config: Path, run_dir: Path, *args: str, env: dict | None = None
                ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avssl.cli", "train", str(config), "--run-dir",
                           str(run_dir), "--no-progress", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300)


def test_avid_then_cma(prepared: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, prepared)
    r = avssl_train(config, tmp_path / "avid")
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "avid"
    for f in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/epoch_1.pt",
              "checkpoints/epoch_2.pt", "plots/loss.png"):
        assert (run / f).is_file(), f
    assert list((run / "tb").iterdir())
    assert f"run finished: {run}" in r.stdout
    assert "video->audio R@1 (%)" in r.stdout and "audio->video R@5 (%)" in r.stdout
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 6  # 12 train videos / batch 4 = 3
    state = ckpt["model"]
    assert torch.isfinite(state["terms.v2a.z.log_z"])  # Z estimated once and saved
    # CMA starts from the AVID checkpoint: same banks at the start, positive sets mined.
    # (lr 0: the weights CMA ends with are the ones it started from)
    cma_cfg = tiny_config(tmp_path, prepared, method={
        "name": "cma", "num_positives": 3, "positive_negatives": 4, "resample_every": 1},
        train={"epochs": 1, "init_from": str(run / "checkpoints" / "last.pt")},
        optim={"lr": 0.0})
    # --resume with no checkpoint yet (how schedulers and `avssl demo` start jobs) must still
    # start from init_from
    r = avssl_train(cma_cfg, tmp_path / "cma", "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "starting from scratch" in r.stdout
    cma = load_checkpoint(tmp_path / "cma" / "checkpoints" / "last.pt")["model"]
    assert cma["positive_set"].shape == (12, 3) and (cma["positive_set"] >= 0).all()
    assert int(cma["mined_epoch"]) == 0
    assert torch.equal(cma["terms.v2a.z.log_z"], state["terms.v2a.z.log_z"])
    weights = [k for k in state if k.startswith("encoders.") and k.endswith("conv1.weight")]
    assert weights and all(torch.equal(cma[k], state[k]) for k in weights)


def test_kill_and_resume_gives_identical_weights(prepared: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, prepared, train={"eval_retrieval": False})
    clean = avssl_train(config, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    # SIGKILL right after step 4 (mid epoch 2), then resume from the last checkpoint.
    crashed = avssl_train(config, tmp_path / "crash", env={KILL_AT_STEP_ENV: "4"})
    assert crashed.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "crash" / "checkpoints" / "last.pt")["global_step"] == 4
    resumed = avssl_train(config, tmp_path / "crash", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a = load_checkpoint(tmp_path / "clean" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "crash" / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])


def torchrun_train(config: Path, run_dir: Path, *args: str, env: dict | None = None
                   ) -> subprocess.CompletedProcess:
    """``avssl train`` under torchrun: 2 processes on this machine, gloo on CPU."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "avssl.cli", "train", str(config),
                           "--run-dir", str(run_dir), "--no-progress", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_ddp_kill_and_resume_gives_identical_weights(prepared: Path, tmp_path: Path) -> None:
    """Under torchrun (2 processes), kill -9 mid-epoch then --resume ends with the weights of an
    uninterrupted run: every rank's RNG state is in the checkpoint, so each draws the negatives
    it would have drawn (before, rank 1 was re-seeded and the weights differed)."""
    config = tiny_config(tmp_path, prepared, train={"eval_retrieval": False})
    clean = torchrun_train(config, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    crashed = torchrun_train(config, tmp_path / "crash", env={KILL_AT_STEP_ENV: "4"})
    assert crashed.returncode != 0
    resumed = torchrun_train(config, tmp_path / "crash", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a = load_checkpoint(tmp_path / "clean" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "crash" / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] == 6 and len(a["rng_ranks"]) == 2
    assert not torch.equal(a["rng_ranks"][0]["rng_cpu"], a["rng_ranks"][1]["rng_cpu"])
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_bad_config_exits_2(prepared: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, prepared)
    r = avssl_train(config, tmp_path / "x", "method.variant=diagonal")
    assert r.returncode == 2
    assert "method.variant: 'diagonal' is not one of" in r.stderr
    assert "Traceback" not in r.stderr
    r = avssl_train(config, tmp_path / "x", "method.name=cma", "train.init_from=/no/such.pt")
    assert r.returncode == 2 and "checkpoint not found" in r.stderr


def test_run_logger_fresh_run_replaces_metrics(tmp_path: Path) -> None:
    """A resumed run appends to metrics.jsonl; a run from step 0 starts it anew."""
    from avssl.engine.logging import RunLogger, read_metrics

    for append, step, loss in ((True, 1, 1.0), (True, 2, 0.5)):
        logger = RunLogger(tmp_path, append=append)
        logger.log(step, {"loss": loss})
        logger.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    logger = RunLogger(tmp_path, append=False)
    logger.log(1, {"loss": 2.0})
    logger.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 2.0)]


def _cleanup_order_worker(r: int, world: int, tmp: str, config: str) -> None:
    """Train under a 2-process gloo group; record whether any DDP wrapper is still alive when
    the group is destroyed."""
    import weakref

    import torch.distributed as tdist

    from avssl.config import load_config
    from avssl.engine import trainer as T
    from avssl.utils import distributed as D

    torch.set_num_threads(1)
    os.environ.update(RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r))
    D.init_distributed(backend="gloo", init_method=f"file://{tmp}/store")
    wrappers: list[weakref.ref] = []
    alive_at_destroy: list[bool] = []

    class Recorded(T.DistributedDataParallel):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            wrappers.append(weakref.ref(self))

    destroy = tdist.destroy_process_group

    def recording_destroy(*args, **kwargs) -> None:
        alive_at_destroy.append(any(w() is not None for w in wrappers))
        destroy(*args, **kwargs)

    T.DistributedDataParallel = Recorded  # type: ignore[misc]
    tdist.destroy_process_group = recording_destroy
    T.train(load_config(config), Path(tmp) / "run", progress=False)
    torch.save({"wrappers": len(wrappers), "alive_at_destroy": alive_at_destroy},
               f"{tmp}/rank{r}.pt")


def test_ddp_wrapper_is_freed_before_the_process_group(prepared: Path, tmp_path: Path) -> None:
    """The DDP wrapper's Reducer holds the group: if the group died inside the Reducer's
    destructor (GIL held), a Gloo worker freeing a collective's tensors could wait for the GIL
    forever (seen once: rank 1 hung at exit). train() frees the wrapper first."""
    import torch.multiprocessing as mp

    config = tiny_config(tmp_path, prepared, train={"epochs": 1, "eval_retrieval": False})
    mp.spawn(_cleanup_order_worker, args=(2, str(tmp_path), str(config)), nprocs=2, join=True)
    for r in range(2):
        rec = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert rec["wrappers"] == 1
        assert rec["alive_at_destroy"] == [False]


def test_max_steps_stops_checkpoints_and_resumes_to_the_same_weights(prepared: Path,
                                                                    tmp_path: Path) -> None:
    config = tiny_config(tmp_path, prepared, train={"eval_retrieval": False,
                                                    "checkpoint_every_steps": 0})
    clean = avssl_train(config, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    # stop mid epoch 2 (3 steps per epoch), then continue without the limit
    short = avssl_train(config, tmp_path / "short", "train.max_steps=4")
    assert short.returncode == 0, short.stderr[-2000:]
    assert "stopped at train.max_steps=4" in short.stdout
    ckpt = load_checkpoint(tmp_path / "short" / "checkpoints" / "last.pt")
    assert (ckpt["global_step"], ckpt["epoch"], ckpt["step_in_epoch"]) == (4, 1, 1)
    rows = [json.loads(x) for x in (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows if r["kind"] == "train") == 4
    rest = avssl_train(config, tmp_path / "short", "--resume")
    assert rest.returncode == 0, rest.stderr[-2000:]
    a = load_checkpoint(tmp_path / "clean" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "short" / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_run_dir_with_a_checkpoint_is_not_overwritten(prepared: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, prepared, train={"eval_retrieval": False, "max_steps": 1})
    assert avssl_train(config, tmp_path / "run").returncode == 0
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    again = avssl_train(config, tmp_path / "run")
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "--resume" in lines[0] and "already holds a run" in lines[0]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_progress_lines_in_a_log_and_labelled_results(prepared: Path, tmp_path: Path) -> None:
    """Output to a file (not a terminal): plain progress lines with step/total and ETA."""
    config = tiny_config(tmp_path, prepared, train={"print_every_seconds": 0})
    r = subprocess.run([sys.executable, "-m", "avssl.cli", "train", str(config), "--run-dir",
                        str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [ln for ln in r.stdout.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in steps] == [f"{i}/6" for i in range(1, 7)]
    assert all("loss" in ln and "clips/s" in ln and "ETA" in ln for ln in steps)
    assert steps[-1].endswith("ETA 0:00:00")
    assert "video->audio R@1 (%)" in r.stdout


def test_diverging_run_is_one_line_with_honest_advice(prepared: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, prepared, train={"eval_retrieval": False},
                         optim={"lr": 1e30})
    r = avssl_train(config, tmp_path / "run")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite loss at step" in lines[0], r.stderr[-2000:]
    assert "loss=nan" in lines[0] or "loss=inf" in lines[0]
    assert "lower optim.lr" in lines[0] and "train.amp" not in lines[0]


def test_gpu_precision_settings_are_plain_fp32_on_cpu(prepared: Path, tmp_path: Path) -> None:
    """The published configs set bf16 + channels_last: on CPU they run (as fp32, said once)."""
    base = tiny_config(tmp_path, prepared, train={"eval_retrieval": False, "max_steps": 2})
    ref = avssl_train(base, tmp_path / "fp32")
    gpu = avssl_train(base, tmp_path / "gpu", "train.amp=bf16", "train.channels_last=true")
    assert ref.returncode == 0 and gpu.returncode == 0, gpu.stderr[-2000:]
    assert "train.amp=bf16 and train.channels_last=true apply on CUDA only" in gpu.stdout
    a = load_checkpoint(tmp_path / "fp32" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "gpu" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


#: per method, what the tiny config changes: the image methods run a per-frame encoder on frames
NEW_METHODS = {
    "simclr": {"method": {"name": "simclr", "temporal_shift": 0.25},
               "model": {"video": {"arch": "frame_small", "width": 4},
                         "head": {"hidden": [16], "out_dim": 8, "bn": True}},
               "data": {"video": {"num_frames": 1, "fps": 8, "crop_size": 32, "resize": 36}}},
    "byol": {"method": {"name": "byol", "base_momentum": 0.9, "predictor_hidden": 16},
             "model": {"video": {"arch": "frame_small", "width": 4},
                       "head": {"hidden": [16], "out_dim": 8, "bn": True}},
             "data": {"video": {"num_frames": 1, "fps": 8, "crop_size": 32, "resize": 36}}},
    "avc": {"method": {"name": "avc", "fusion_hidden": [16]}},
}


@pytest.mark.parametrize("name", list(NEW_METHODS))
def test_new_methods_train_under_torchrun(name: str, prepared: Path, tmp_path: Path) -> None:
    """SimCLR, BYOL and AVC train through the same trainer with 2 processes (gloo): every
    parameter that trains gets a gradient on both ranks (DDP raises on unused parameters at
    the second step otherwise), the weights stay finite, and the method's logged numbers are
    there."""
    extra = NEW_METHODS[name]
    config = tiny_config(tmp_path, prepared, method=extra["method"],
                         train={"eval_retrieval": False})
    cfg = yaml.safe_load(config.read_text())
    cfg["method"] = extra["method"]
    for section in ("model", "data"):
        for k, v in extra.get(section, {}).items():
            cfg[section][k] = {**cfg[section].get(k, {}), **v} if isinstance(v, dict) else v
    config.write_text(yaml.safe_dump(cfg))
    r = torchrun_train(config, tmp_path / name)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == 6  # 12 videos, global batch 4 (2 per rank): 3 steps x 2 epochs
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]
    logged = set().union(*(r.keys() for r in rows if r["kind"] == "train"))
    want = {"simclr": "acc_pair", "byol": "byol_momentum", "avc": "acc_corr"}[name]
    assert want in logged
