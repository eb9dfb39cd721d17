"""benchmarks/gpu_check.py: the GPU check of the training recipe, exercised on the CPU.

On the CPU the precision policy runs every setting in fp32, so the script must say so, and the
settings, built from the same seeded weights, batches and negatives, must give the same losses
(|dloss| = 0: the seeding that makes the GPU's |dloss| a precision measurement works). It must
import nothing that decodes media: the GPU machine has no PyAV, decord or librosa.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SMOKE = ["--device", "cpu", "--tiny", "--steps", "2", "--warmup", "1", "--threads", "1"]
AVID_SETTINGS = ("fp32", "bf16", "bf16+cl")


@pytest.fixture(scope="module")
def gpu_check() -> Iterator[ModuleType]:
    """The script as module ``gpu_check``, with benchmarks/ on sys.path while the tests run
    (DDP workers are spawned processes: they import it by that name, with the parent's path)."""
    import importlib

    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(SCRIPT.parent))
        threads = torch.get_num_threads()
        try:
            yield importlib.import_module("gpu_check")
        finally:
            torch.set_num_threads(threads)  # main(--threads 1) sets it process-wide


def test_cpu_smoke_run(gpu_check: ModuleType, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    assert gpu_check.main([*SMOKE, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["ok"] is True
    rows = {r["setting"]: r for r in report["results"]}
    assert set(AVID_SETTINGS) <= set(rows)
    for name, row in rows.items():
        assert row["error"] is None, (name, row["error"])
        assert row["finite"] and len(row["losses"]) == 3
        assert all(math.isfinite(v) for v in row["losses"])
        assert row["runs_as"] == "fp32" and row["clips_per_s"] > 0
        assert row["peak_gib"] is None  # CPU: no CUDA allocator
        # same weights, batches and negatives, and all fp32 here: identical losses
        assert row["dloss_vs_fp32"] is not None and row["dloss_vs_fp32"] < 1e-6, name
    assert rows["bf16"]["losses"] == rows["fp32"]["losses"]
    # the policy note: configured bf16 / channels-last dropped on the CPU, said in words
    assert "precision policy" in text and "fp32" in text
    assert any("channels_last" in n for n in report["notes"])
    assert "DDP: skipped" in text and report["ddp"].get("skipped")
    assert "clips/s" in text and "result: OK" in text


@pytest.mark.slow
def test_ddp_check_on_cpu(gpu_check: ModuleType, tmp_path: Path) -> None:
    """The 2-process path (NCCL on a multi-GPU machine) with gloo: banks, parameters and log Z
    stay identical across ranks."""
    out = tmp_path / "ddp.json"
    assert gpu_check.main([*SMOKE, "--settings", "fp32", "--ddp", "on",
                           "--json", str(out)]) == 0
    ddp = json.loads(out.read_text())["ddp"]
    assert ddp["ok"] and ddp["world"] == 2 and ddp["backend"] == "gloo"
    assert ddp["banks_identical"] and ddp["params_identical"] and ddp["log_z_identical"]
    assert ddp["finite"] and len(ddp["ranks"]) == 2
    assert ddp["ranks"][0]["losses"] != ddp["ranks"][1]["losses"]  # different local batches


@pytest.mark.slow
def test_imports_no_decoder(tmp_path: Path) -> None:
    """A fresh interpreter where av, decord and librosa cannot be imported loads the script
    and runs a step; none of the data (decoding) or trainer modules comes along, only the
    decoder-free sample declarations the methods make."""
    code = textwrap.dedent(f"""
        import importlib.util, sys
        sys.modules["av"] = sys.modules["decord"] = sys.modules["librosa"] = None
        spec = importlib.util.spec_from_file_location("gpu_check", {str(SCRIPT)!r})
        mod = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = mod
        spec.loader.exec_module(mod)
        # avssl.data.sample: the methods' sample declarations (a dataclass, no decoding)
        ok = {{"avssl.data", "avssl.data.sample"}}
        bad = sorted(m for m in sys.modules if m.startswith(("avssl.data", "avssl.engine.trainer",
                                                              "avssl.eval", "soundfile"))
                     and m not in ok)
        assert not bad, bad
        sys.exit(mod.main(["--device", "cpu", "--tiny", "--steps", "1", "--warmup", "1",
                           "--threads", "1", "--settings", "fp32"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result: OK" in proc.stdout


def test_published_shapes(gpu_check: ModuleType) -> None:
    """Clip and spectrogram shapes of the published config, bins as the data module has them."""
    from avssl.data.audio import num_bins

    cfg = gpu_check.build_config("avid", tiny=False)
    assert gpu_check.input_shapes(cfg) == ((3, 8, 112, 112), (1, 200, 257))
    assert cfg.model.video.width == 64 and cfg.method["num_negatives"] == 1024
    for tiny in (False, True):
        audio = gpu_check.build_config("cma", tiny=tiny).data.audio
        assert gpu_check.num_bins(audio) == num_bins(audio)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error path")
def test_cuda_requested_without_gpu(gpu_check: ModuleType,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--tiny"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
