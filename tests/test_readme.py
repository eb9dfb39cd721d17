"""The README's "Your own videos" commands, run exactly as written on a generated folder.

Only the variable assignments at the top of the block (the user's inputs) are replaced: the CPU
recipe, a tiny batch and a 2-step limit. Every command line below them runs verbatim.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the user's inputs in the README block -> the values this test gives them
INPUTS = {
    "VIDEOS": "my_videos",
    "RECIPE": "configs/demo/avid.yaml",
    "CMA": "configs/demo/cma.yaml",
    "SET": '"data.batch_size=4 data.num_workers=0 train.max_steps=2"',
}


def readme_block(heading: str) -> str:
    """The first ```bash block under the ``## heading`` of README.md."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```bash\n(.*?)```", section, re.S)
    assert found, f"no bash block under '## {heading}'"
    return found.group(1)


def with_inputs(block: str, inputs: dict[str, str]) -> str:
    """``block`` with the assignments of ``inputs`` replaced; each must be assigned once."""
    out, seen = [], set()
    for line in block.splitlines():
        name = line.split("=", 1)[0]
        if name in inputs and "=" in line:
            out.append(f"{name}={inputs[name]}")
            seen.add(name)
        else:
            out.append(line)
    assert seen == set(inputs), f"README block does not assign {set(inputs) - seen}"
    return "\n".join(out) + "\n"


def make_video_folder(dst: Path) -> None:
    """16 synthetic videos (2 classes) in dst/{train,test}/<class>/."""
    from avssl.data.synthetic import make_synthetic

    src = dst.parent / "generated"
    make_synthetic(src, num_videos=16, classes=2, seed=4, duration=2.0, fps=16.0,
                   size=(64, 64), sample_rate=16000, test_fraction=0.25, progress=False)
    for line in (src / "meta.jsonl").read_text().splitlines():
        row = json.loads(line)
        target = dst / row["split"] / str(row["label"]) / Path(row["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "videos" / Path(row["path"]).name, target)


@pytest.mark.slow
def test_own_videos_commands_run_as_written(tmp_path: Path) -> None:
    make_video_folder(tmp_path / "my_videos")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    script = "set -euo pipefail\n" + with_inputs(readme_block("Your own videos"), INPUTS)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    manifest = [json.loads(x) for x in
                (tmp_path / "prepared/mine/manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 16 and {m["split"] for m in manifest} == {"train", "test"}
    assert (tmp_path / "prepared/mine/audio_stats.npz").is_file()
    for stage in ("mine_avid", "mine_cma"):
        assert (tmp_path / "runs" / stage / "checkpoints/last.pt").is_file()
        assert f"run finished: runs/{stage}" in r.stdout
    assert "video->audio R@1 (%)" in r.stdout
    overlays = list((tmp_path / "outputs/mine_localize").rglob("*.png"))
    assert overlays, "no localization overlay written"
    probe = list((tmp_path / "runs/mine_cma/checkpoints").glob("eval_linear_*.json"))
    assert probe, "no linear-probe result written"
