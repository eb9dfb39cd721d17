"""`avssl compare CONFIG... --budget-steps N`: methods side by side on the synthetic dataset.

Each training config is trained for the same number of optimizer steps on the demo's generated
videos (``train.max_steps``, with ``train.epochs`` set so that every method's schedules span
that budget), then judged the same way:

- linear probe and kNN top-1 (conv5x, %) on the demo's downstream set (other videos of the same
  classes among clutter, ``configs/eval/synthetic_linear.yaml``), with one row for a randomly
  initialized encoder of the first config's architecture;
- cross-modal retrieval R@1 on the held-out videos, for methods with both encoders;
- sound-source localization cIoU@0.5 / AUC on the held-out videos (boxes from the generator),
  for methods with both encoders;
- the method's own pretext accuracy, when it logs one (``acc_*``: AVC's correspondence accuracy,
  SimCLR's pair accuracy), averaged over the last logged steps.

A config that starts from another run (``train.init_from`` = the ``run_dir`` of another config
given here, CMA from AVID) starts from that config's run in this comparison, and its steps
count on top of it (the table says so). The data are those of ``avssl demo`` (``--data``,
default ``outputs/demo``), generated when missing. Writes ``OUT/compare.json``, ``OUT/compare.md``
(the table) and ``OUT/compare.png`` (bar chart); runs go to ``OUT/runs/<config>``; a finished run
is not trained again and an interrupted one continues from its last checkpoint (``--fresh``
retrains both).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avssl.utils.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
PROBE_CONFIG = ROOT / "configs" / "eval" / "synthetic_linear.yaml"
DEFAULT_CONFIGS = ("configs/demo/avid.yaml", "configs/demo/cma.yaml",
                   "configs/simclr/synthetic.yaml", "configs/byol/synthetic.yaml",
                   "configs/avc/synthetic.yaml")
PRETEXT_LAST = 10  # logged steps averaged for the pretext accuracy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configs", nargs="*", default=list(DEFAULT_CONFIGS),
                        help="training configs (default: AVID, CMA, SimCLR, BYOL and AVC on the "
                             "synthetic data: " + " ".join(DEFAULT_CONFIGS) + ")")
    parser.add_argument("--budget-steps", type=int, default=200,
                        help="optimizer steps per config (default: %(default)s)")
    parser.add_argument("--data", default="outputs/demo",
                        help="the demo's data folder (prepared/, probe_prepared/), generated "
                             "there when missing (default: %(default)s)")
    parser.add_argument("--out", default="outputs/compare",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--num-videos", type=int, default=240,
                        help="videos to generate when the data are missing, as avssl demo "
                             "(default: %(default)s)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides for every config, e.g. data.num_workers=0 "
                             "(default: none)")
    parser.add_argument("--no-random", action="store_true",
                        help="leave out the random-encoder row")
    parser.add_argument("--no-localize", action="store_true",
                        help="skip sound-source localization (the slowest evaluation)")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that exist")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch intra-op threads, fixed for reproducible float results "
                             "(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for generating and preprocessing missing data "
                             "(default: %(default)s)")


@dataclass
class Row:
    """One line of the table."""

    name: str
    config: str
    steps: int | None = None
    seconds: float | None = None
    note: str = ""
    values: dict[str, float] = field(default_factory=dict)


COLUMNS = (("linear", "linear top-1"), ("knn", "kNN top-1"), ("v2a_R@1", "v->a R@1"),
           ("a2v_R@1", "a->v R@1"), ("cIoU@0.5", "loc cIoU@0.5"), ("AUC", "loc AUC"),
           ("pretext", "pretext acc"))


# ---------------------------------------------------------------------------------- data
def ensure_data(data: Path, workers: int, num_videos: int = 240) -> tuple[Path, Path, Path]:
    """The demo's training manifest, spectrogram statistics and downstream manifest under
    ``data``, generated (as ``avssl demo`` does) when missing."""
    from avssl import demo

    manifest = data / "prepared" / "manifest.jsonl"
    stats = data / "prepared" / "audio_stats.npz"
    probe = data / "probe_prepared" / "manifest.jsonl"
    args = argparse.Namespace(num_videos=num_videos, classes=None, variant="a", workers=workers)
    if not manifest.is_file():
        from avssl.data.synthetic import make_synthetic

        print(f"generating the synthetic dataset in {data}", flush=True)
        make_synthetic(data / "synthetic", num_videos=args.num_videos, classes=None, seed=0,
                       workers=workers, distractors=(0, 1), variant="a")
        demo.prepare(data / "synthetic", data / "prepared", workers)
    if not stats.is_file():
        from avssl.config import load_config
        from avssl.data.audio import compute_audio_stats, save_stats

        cfg = load_config(demo.CONFIG_DIR / "avid.yaml", [f"data.manifest={manifest}"])
        save_stats(stats, *compute_audio_stats(manifest, cfg.data))
    if not probe.is_file():
        demo.probe_data(data, args)
    return manifest, stats, probe


# ---------------------------------------------------------------------------------- runs
def _run_name(config: Path, taken: set[str]) -> str:
    """``configs/simclr/synthetic.yaml`` -> ``simclr_synthetic`` (unique within the run)."""
    name = f"{config.parent.name}_{config.stem}"
    k, base = 2, name
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _train(config: Path, run_dir: Path, overrides: list[str], fresh: bool
           ) -> tuple[dict[str, Any], float]:
    """Train (or reuse) one run; returns its end-of-run retrieval results and seconds."""
    import shutil

    from avssl.cli_config import load_checked
    from avssl.engine.trainer import train
    from avssl.eval.retrieval import evaluate_cross_modal
    from avssl.methods import method_spec
    from avssl.utils.atomic import atomic_write_json

    done = run_dir / "compare_run.json"
    if done.is_file() and not fresh:
        saved = json.loads(done.read_text())
        print(f"   {run_dir} already trained (--fresh to retrain)", flush=True)
        return saved["results"], saved["seconds"]
    cfg = load_checked(str(config), overrides, require_paths=True)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    both = {"video", "audio"} <= set(method_spec(cfg).encoders)
    t0 = time.perf_counter()
    # an interrupted comparison continues its unfinished run from the last checkpoint
    results = train(cfg, run_dir, resume=True, progress=True,
                    evaluate=evaluate_cross_modal if both else None)
    seconds = time.perf_counter() - t0
    atomic_write_json(done, {"results": results, "seconds": seconds})
    return results, seconds


def epochs_for(config: Path, overrides: list[str], budget: int) -> int:
    """Epochs whose steps cover ``budget`` for this config's data and batch, so every method's
    schedule (lr, momentum) spans the same budget (a single process)."""
    from avssl.cli_config import load_checked
    from avssl.data.dataset import AVClipDataset
    from avssl.methods import method_settings, method_spec

    cfg = load_checked(str(config), overrides, require_paths=True)
    d = cfg.data
    ds = AVClipDataset(d.manifest, d, split=d.split, train=True,
                       sample=method_spec(cfg).sample(method_settings(cfg)))
    per_epoch = len(ds) // d.batch_size
    if per_epoch == 0:
        raise UsageError(f"{config}: data.batch_size {d.batch_size} is larger than the "
                         f"{len(ds)} training clips of {d.manifest}")
    return math.ceil(budget / per_epoch)


def pretext_accuracy(run_dir: Path, last: int = PRETEXT_LAST) -> float | None:
    """Mean of the method's logged ``acc_*`` values over its last ``last`` logged steps."""
    from avssl.engine.logging import read_metrics

    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    vals = [v for r in rows[-last:] for k, v in r.items() if k.startswith("acc_")]
    return sum(vals) / len(vals) if vals else None


def probe(checkpoint: Path, manifest: Path, stats: Path, random_baseline: bool
          ) -> dict[str, dict[str, Any]]:
    """``avssl eval linear`` and ``knn`` of ``checkpoint`` on the downstream set: protocol ->
    results JSON (``top1.checkpoint`` / ``top1.random`` per layer)."""
    from avssl.cli import main

    out = {}
    for protocol in ("linear", "knn"):
        dst = checkpoint.parent / f"compare_{protocol}.json"
        argv = ["eval", protocol, str(PROBE_CONFIG), "--checkpoint", str(checkpoint),
                "--no-progress", "--out", str(dst), f"data.manifest={manifest}",
                f"data.audio.stats={stats}"]
        if random_baseline:
            argv.append("--random-baseline")
        if main(argv) != 0:
            raise RuntimeError(f"avssl eval {protocol} failed on {checkpoint}")
        out[protocol] = json.loads(dst.read_text())
    return out


def localization(checkpoint: Path, manifest: Path, stats: Path, out: Path) -> dict[str, Any]:
    """cIoU@0.5 / AUC (fixed binarization, as the demo) on the held-out videos."""
    from avssl.data.manifest import read_manifest, write_manifest
    from avssl.localize.cli import localize
    from avssl.localize.inputs import Options

    test = manifest.parent / "manifest_test.jsonl"  # beside it: rows hold relative paths
    write_manifest(test, [r for r in read_manifest(manifest) if r.get("split") == "test"])
    opts = Options(num_frames=2, max_seconds=4.0, audio_stats=str(stats), write_video=False,
                   binarization="fixed")
    summary = localize(test, checkpoint, out / "localization", opts=opts, log=lambda m: None)
    counts = summary.get("counts", {})
    if not summary.get("localization"):
        raise RuntimeError(f"localization of {checkpoint} gave no scores (outcomes: {counts})")
    return summary["localization"]["model"]


# ---------------------------------------------------------------------------------- table
def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def format_table(rows: list[Row]) -> str:
    """A Markdown table: method, steps, wall time (training and its end-of-run retrieval),
    then :data:`COLUMNS` (percent)."""
    head = ["method", "steps", "time (s)", *(label for _, label in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = r.name + (f" ({r.note})" if r.note else "")
        cells = [name, "-" if r.steps is None else str(r.steps), _fmt(r.seconds),
                 *(_fmt(r.values.get(k)) for k, _ in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, majority: float | None) -> None:
    """Grouped bars of linear and kNN top-1 per method (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avssl.utils.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.6))
    x = range(len(rows))
    for k, (key, label) in enumerate((("linear", "linear probe"), ("knn", "kNN"))):
        vals = [r.values.get(key, float("nan")) for r in rows]
        ax.bar([i + (k - 0.5) * 0.38 for i in x], vals, width=0.38, label=label)
    if majority is not None:
        ax.axhline(majority, color="grey", ls="--", lw=1, label="majority class")
    ax.set_xticks(list(x), [r.name for r in rows], rotation=20)
    ax.set_ylabel("top-1 on the downstream set (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------- main
def compare(configs: list[Path], budget: int, data: Path, out: Path, random_row: bool = True,
            localize: bool = True, fresh: bool = False, workers: int = 2,
            overrides: list[str] | None = None, num_videos: int = 240) -> list[Row]:
    """Train and judge every config; returns the table's rows (also written under ``out``)."""
    from avssl.cli_config import load_checked
    from avssl.methods import method_spec
    from avssl.utils.atomic import atomic_write_json, atomic_write_text

    manifest, stats, probe_manifest = ensure_data(data, workers, num_videos)
    common = [f"data.manifest={manifest}", f"data.audio.stats={stats}",
              f"train.max_steps={budget}", *(overrides or [])]
    # run_dir of each config -> its run here, so init_from chains stay inside the comparison
    names: set[str] = set()
    plan = []
    for c in configs:
        cfg = load_checked(str(c), list(overrides or []), require_paths=False)
        plan.append((c, cfg, out / "runs" / _run_name(c, names)))
    ours = {str(Path(cfg.run_dir) / "checkpoints" / "last.pt"): run for _, cfg, run in plan
            if cfg.run_dir}
    rows: list[Row] = []
    majority = None
    for i, (config, cfg, run_dir) in enumerate(plan):
        spec = method_spec(cfg)
        name = cfg.method.get("name", "avid")
        print(f"\n== {name}: {config} ({budget} steps) -> {run_dir}", flush=True)
        overrides = list(common)
        note = ""
        if cfg.train.init_from:
            upstream = ours.get(str(Path(cfg.train.init_from)))
            if upstream is None:
                note = f"from {cfg.train.init_from}"
            else:
                overrides.append(f"train.init_from={upstream / 'checkpoints' / 'last.pt'}")
                note = f"after {upstream.name}"
        overrides.append(f"train.epochs={epochs_for(config, overrides, budget)}")
        results, seconds = _train(config, run_dir, overrides, fresh)
        ckpt = run_dir / "checkpoints" / "last.pt"
        from avssl.utils.checkpoint import load_checkpoint

        steps = int(load_checkpoint(ckpt)["global_step"])
        row = Row(name, str(config), steps, seconds, note)
        probes = probe(ckpt, probe_manifest, stats, random_baseline=random_row and i == 0)
        for protocol, res in probes.items():
            row.values[protocol] = res["top1"]["checkpoint"]["conv5x"]
            majority = res.get("majority_top1", majority)
        for key in ("v2a_R@1", "a2v_R@1"):
            if f"retrieval_{key}" in results:
                row.values[key] = results[f"retrieval_{key}"]
        if localize and {"video", "audio"} <= set(spec.encoders):
            loc = localization(ckpt, manifest, stats, run_dir)
            for key in ("cIoU@0.5", "AUC"):
                if key in loc:
                    row.values[key] = 100.0 * loc[key]
        acc = pretext_accuracy(run_dir)
        if acc is not None:
            row.values["pretext"] = acc
        rows.append(row)
        if i == 0 and random_row:
            arch = cfg.model.video.arch
            rows.insert(0, Row("random", f"random {arch}", note=arch, values={
                p: probes[p]["top1"]["random"]["conv5x"] for p in probes}))
    table = format_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.md", table + "\n")
    atomic_write_json(out / "compare.json", {"budget_steps": budget, "data": str(data),
                                             "majority_top1": majority,
                                             "rows": [r.__dict__ for r in rows]})
    plot(rows, out / "compare.png", majority)
    return rows


def run(args: argparse.Namespace) -> int:
    if args.budget_steps < 1:
        raise UsageError(f"--budget-steps must be >= 1, got {args.budget_steps}")
    configs = [Path(c) for c in args.configs]
    missing = [str(c) for c in configs if not c.is_file()]
    if missing:
        raise UsageError(f"config not found: {', '.join(missing)}")
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows = compare(configs, args.budget_steps, Path(args.data), out,
                   random_row=not args.no_random, localize=not args.no_localize,
                   fresh=args.fresh, workers=args.workers, overrides=args.set,
                   num_videos=args.num_videos)
    print(f"\n{format_table(rows)}\n\n(top-1 on the downstream set at conv5x, R@1 and "
          f"localization on the held-out videos, all %)\nwritten: {out / 'compare.md'}, "
          f"{out / 'compare.json'}, {out / 'compare.png'}")
    return 0
