"""Converting a checkpoint in the published AVID-CMA layout into ours."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avssl.config import from_dict
from avssl.methods import build_method
from avssl.utils.checkpoint import load_checkpoint

# Key names and shapes of the published weights, kept in the repository (docs/reference.md
# section 6), so this test runs in every clone: a missing file is an error, never a skip.
KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "avid_cma_checkpoint_keys.txt"


def published_checkpoint(n: int, seed: int = 0) -> dict:
    """Random tensors with exactly the published key names and shapes (from the key list)."""
    g = torch.Generator().manual_seed(seed)
    model = {}
    for line in KEYS.read_text().splitlines():
        m = re.match(r"^(module\.\S+) \[([\d, ]*)\]$", line.strip())
        if not m:
            continue
        shape = [int(x) for x in m.group(2).split(",") if x.strip()]
        if m.group(1).endswith("num_batches_tracked"):
            model[m.group(1)] = torch.tensor(7)
        elif m.group(1).endswith("running_var"):
            model[m.group(1)] = torch.rand(shape, generator=g) + 0.5
        else:
            model[m.group(1)] = torch.randn(shape, generator=g) * 0.05
    crit = {"nce_average.view1_mem": torch.randn(n, 128, generator=g),
            "nce_average.view2_mem": torch.randn(n, 128, generator=g),
            "nce_average.positive_set": torch.randint(0, n, (n, 32), generator=g)}
    return {"epoch": 20, "model": model, "optimizer": {}, "train_criterion": crit}


@pytest.mark.slow
def test_convert_published_layout(tmp_path: Path) -> None:
    n = 40
    pub = published_checkpoint(n)
    src, dst = tmp_path / "checkpoint.pth.tar", tmp_path / "ours.pt"
    torch.save(pub, src)
    r = subprocess.run([sys.executable, "-m", "avssl.cli", "convert", "avid-cma", str(src),
                        str(dst)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "AVID+CMA" in r.stdout
    ours = load_checkpoint(dst)
    cfg = from_dict(ours["config"], require_paths=False)
    method = build_method(cfg, num_rows=n)
    missing, unexpected = method.load_state_dict(ours["model"], strict=False)
    assert not unexpected
    # Only the noise constants (re-estimated on the first batch) are not in the published file.
    assert all(k.endswith("z.log_z") for k in missing), missing
    sd = method.state_dict()
    for key, value in pub["model"].items():
        k = key.removeprefix("module.")
        k = (k.replace("video_model.", "encoders.video.", 1)
              .replace("audio_model.", "encoders.audio.", 1)
              .replace("video_proj.", "encoders.video_head.", 1)
              .replace("audio_proj.", "encoders.audio_head.", 1))
        assert torch.equal(sd[k], value), key
    crit = pub["train_criterion"]
    assert torch.allclose(sd["memory.video.memory"], F.normalize(crit["nce_average.view1_mem"]))
    assert torch.allclose(sd["memory.audio.memory"], F.normalize(crit["nce_average.view2_mem"]))
    assert torch.equal(sd["positive_set"], crit["nce_average.positive_set"])
    # The converted model computes with the published weights: same embeddings as a model
    # whose modules were filled directly from the published tensors.
    method.eval()
    video = torch.randn(1, 3, 8, 64, 64)
    audio = torch.randn(1, 1, 200, 257)
    direct = build_method(cfg, num_rows=n).eval()
    enc = direct.encoders
    strip = {p: {k.removeprefix(f"module.{p}."): v for k, v in pub["model"].items()
                 if k.startswith(f"module.{p}.")}
             for p in ("video_model", "audio_model", "video_proj", "audio_proj")}
    enc.video.load_state_dict(strip["video_model"])
    enc.audio.load_state_dict(strip["audio_model"])
    enc.video_head.load_state_dict(strip["video_proj"])
    enc.audio_head.load_state_dict(strip["audio_proj"])
    with torch.no_grad():
        assert torch.equal(method.encoders.embed_video(video), enc.embed_video(video))
        assert torch.equal(method.encoders.embed_audio(audio), enc.embed_audio(audio))


@pytest.mark.slow
def test_convert_rejects_other_files(tmp_path: Path) -> None:
    src = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, src)
    r = subprocess.run([sys.executable, "-m", "avssl.cli", "convert", "avid-cma", str(src),
                        str(tmp_path / "y.pt")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "not a published AVID-CMA checkpoint" in r.stderr


@pytest.mark.slow
def test_convert_trust_allows_non_tensor_objects(tmp_path: Path) -> None:
    """A published file with a pickled non-tensor object (a numpy array): refused in one line
    with the --trust hint; converted with --trust."""
    import numpy as np

    pub = published_checkpoint(8)
    pub["optimizer"] = {"note": np.zeros(2)}
    src, dst = tmp_path / "checkpoint.pth.tar", tmp_path / "ours.pt"
    torch.save(pub, src)
    cmd = [sys.executable, "-m", "avssl.cli", "convert", "avid-cma", str(src), str(dst)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "refusing to unpickle arbitrary Python objects" in r.stderr
    assert "run again with --trust" in r.stderr and not dst.exists()
    r = subprocess.run([*cmd, "--trust"], capture_output=True, text=True)
    assert r.returncode == 0 and "AVID+CMA" in r.stdout, r.stderr
    assert load_checkpoint(dst)["model"]["positive_set"].shape == (8, 32)
