"""`avssl demo`: the whole mission on CPU in minutes, on the generated dataset.

generate synthetic videos -> preprocess (the same tool as for Kinetics) -> spectrogram stats ->
train AVID -> train CMA from it -> cross-modal retrieval on held-out videos. Every step is
skipped when its output already exists, so an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="output folder")
    parser.add_argument("--num-videos", type=int, default=240)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="retrain even if runs exist")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


def _train(config: Path, out: Path, name: str, overrides: list[str], fresh: bool
           ) -> dict[str, Any]:
    from avssl.config import load_config
    from avssl.engine.trainer import train

    run_dir = out / "runs" / name
    done = run_dir / "results.json"
    if done.is_file() and not fresh:
        print(f"   {run_dir} already trained (use --fresh to retrain)")
        return json.loads(done.read_text())
    cfg = load_config(config, overrides)
    results = train(cfg, run_dir, resume=not fresh)
    from avssl.utils.atomic import atomic_write_json

    atomic_write_json(done, results)
    return results


def run(args: argparse.Namespace) -> int:
    from avssl.data.audio import compute_audio_stats, save_stats
    from avssl.data.synthetic import make_synthetic
    from avssl.preprocess import preprocess

    out = Path(args.out)
    t_all = time.perf_counter()

    t0 = _step(f"1/5 generate {args.num_videos} synthetic audio-visual videos -> "
               f"{out / 'synthetic'}")
    make_synthetic(out / "synthetic", num_videos=args.num_videos, classes=args.classes,
                   seed=0, workers=args.workers, distractors=(0, 1))
    _done(t0)

    t0 = _step(f"2/5 preprocess -> {out / 'prepared'}")
    prepared = out / "prepared"
    preprocess(out / "synthetic", prepared, fps=16.0, short_side=64, sample_rate=16000,
               gop=16, workers=args.workers)
    manifest = prepared / "manifest.jsonl"
    _done(t0)

    t0 = _step("3/5 spectrogram statistics")
    stats = prepared / "audio_stats.npz"
    common = [f"data.manifest={manifest}"]
    if not stats.is_file():
        from avssl.config import load_config

        cfg = load_config(CONFIG_DIR / "avid.yaml", common)
        mean, std = compute_audio_stats(manifest, cfg.data)
        save_stats(stats, mean, std)
    common.append(f"data.audio.stats={stats}")
    _done(t0)

    t0 = _step("4/5 train AVID (cross-modal instance discrimination)")
    avid = _train(CONFIG_DIR / "avid.yaml", out, "avid", common, args.fresh)
    _done(t0)

    t0 = _step("5/5 train CMA (cross-modal agreement) from the AVID checkpoint")
    cma = _train(CONFIG_DIR / "cma.yaml", out, "cma",
                 [*common, f"method.init_from={out / 'runs/avid/checkpoints/last.pt'}"],
                 args.fresh)
    _done(t0)

    print("\n== results (held-out videos)")
    for name, res in (("AVID", avid), ("AVID+CMA", cma)):
        if not res:
            continue
        chance = res["retrieval_chance_R@1"]
        print(f"   {name:9s} video->audio R@1 {res['retrieval_v2a_R@1']:5.1f} %  "
              f"audio->video R@1 {res['retrieval_a2v_R@1']:5.1f} %  "
              f"(chance {chance:.1f} %, {res['retrieval_v2a_R@1'] / chance:.1f}x)")
    print(f"\ndemo finished in {time.perf_counter() - t_all:.0f} s; outputs in {out}/")
    return 0
