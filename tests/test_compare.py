"""`avssl compare`: the five shipped synthetic configs trained with one budget, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avssl.cli import main
from avssl.compare import DEFAULT_CONFIGS, Row, format_table

ROOT = Path(__file__).resolve().parents[1]


def test_format_table_marks_what_does_not_apply() -> None:
    rows = [Row("random", "random r2plus1d", values={"linear": 40.0, "knn": 35.5}),
            Row("avc", "configs/avc/synthetic.yaml", 2, 3.25, values={"pretext": 50.0})]
    lines = format_table(rows).splitlines()
    assert lines[0].startswith("| method | steps | time (s) | linear top-1 | kNN top-1")
    assert lines[2] == "| random | - | - | 40.0 | 35.5 | - | - | - | - | - |"
    assert lines[3] == "| avc | 2 | 3.2 | - | - | - | - | - | - | 50.0 |"


def test_bad_budget_and_missing_config_are_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "--budget-steps", "0"]) == 2
    assert main(["compare", "no/such.yaml", "--budget-steps", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--budget-steps" in err[0] and "no/such.yaml" in err[1]


@pytest.mark.slow
def test_compare_five_methods_on_generated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    """Generates a small synthetic set, trains AVID, CMA (from that AVID run), SimCLR, BYOL
    and AVC for 2 steps each, and checks the table's rows and which columns apply."""
    monkeypatch.chdir(ROOT)  # the default configs are relative to the repository
    out, data = tmp_path / "cmp", tmp_path / "data"
    rc = main(["compare", *DEFAULT_CONFIGS, "--budget-steps", "2", "--data", str(data),
               "--out", str(out), "--num-videos", "16", "--workers", "1", "--threads", "1",
               "--set", "data.batch_size=4", "data.num_workers=0", "data.clips_per_video=1"])
    printed = capsys.readouterr().out
    assert rc == 0
    result = json.loads((out / "compare.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["random", "avid", "cma", "simclr", "byol", "avc"]
    assert rows["random"]["note"] == "r2plus1d"  # the first config's architecture, untrained
    for name in ("avid", "cma", "simclr", "byol", "avc"):
        r = rows[name]
        assert r["steps"] == 2 and r["seconds"] > 0
        assert 0 <= r["values"]["linear"] <= 100 and 0 <= r["values"]["knn"] <= 100
    # cross-modal columns only for the audio-visual methods
    for name in ("avid", "cma", "avc"):
        assert {"v2a_R@1", "a2v_R@1", "cIoU@0.5", "AUC"} <= set(rows[name]["values"])
    for name in ("simclr", "byol"):
        assert not {"v2a_R@1", "cIoU@0.5"} & set(rows[name]["values"])
    assert "pretext" in rows["avc"]["values"]  # correspondence accuracy
    assert rows["cma"]["note"] == "after demo_avid"  # CMA continued this comparison's AVID run
    assert (out / "compare.png").stat().st_size > 0
    table = (out / "compare.md").read_text()
    assert table.strip() in printed and table.count("\n") == 2 + len(rows)
