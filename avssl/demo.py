"""`avssl demo`: the whole mission on CPU in minutes, on the generated dataset.

generate synthetic videos -> preprocess (the same tool as for Kinetics) -> spectrogram stats ->
train AVID -> train CMA from it -> cross-modal retrieval and sound-source localization on the
held-out videos (and the visible-source decision with off-screen soundtracks) -> linear probe
and kNN beside a random encoder on a downstream set (other videos of the same classes among
clutter). Every step is skipped when its output already exists, so an interrupted demo picks up
where it stopped.

Reproducibility: every random draw is seeded (``--seed``: the training seed; the data are
fixed), and torch's intra-op thread count is fixed (``--threads``, default 2) because it sets
the order of float reductions in the CPU kernels: 1 and 2 threads give different weights after
a few steps, and training amplifies the difference into different final figures. With the
same thread count, CPU type and package versions, two runs end with bit-identical checkpoints.
The final figures are also written to ``OUT/demo_results.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "demo"
# Fixed rather than torch's default (the machine's physical cores): the thread count changes
# how CPU kernels split their reductions, hence the float results (see the module docstring).
DEMO_THREADS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--num-videos", type=int, default=240,
                        help="pretraining videos, and as many downstream ones (default: "
                             "%(default)s)")
    parser.add_argument("--classes", type=int, default=None,
                        help="default: the variant's (4 for a, 6 for b)")
    parser.add_argument("--variant", default="a", choices=("a", "b"),
                        help="synthetic generator variant (see avssl make-synthetic --variant; "
                             "default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (AVID and CMA); the generated data do not change "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=DEMO_THREADS,
                        help="torch intra-op threads (default %(default)s; 0: torch's own "
                             "choice, which depends on the machine and changes the results)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for generation and preprocessing (default: %(default)s)")
    parser.add_argument("--avid-epochs", type=_positive_int, default=None,
                        help="AVID epochs (default: configs/demo/avid.yaml's); variant b "
                             "localizes with --num-videos 960 --avid-epochs 40 (README)")
    parser.add_argument("--fresh", action="store_true", help="retrain even if runs exist")


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


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
    if fresh and run_dir.exists():  # start over: train refuses to overwrite a run
        shutil.rmtree(run_dir)
    from avssl.eval.retrieval import evaluate_cross_modal

    results = train(cfg, run_dir, resume=not fresh, evaluate=evaluate_cross_modal)
    from avssl.utils.atomic import atomic_write_json

    atomic_write_json(done, results)
    return results


def _cma_purity(out: Path, manifest: Path) -> dict[str, float] | None:
    """Fraction of CMA positive-set members of the anchor's class (synthetic labels)."""
    import torch

    from avssl.data.manifest import read_manifest
    from avssl.methods.cma import positive_set_purity
    from avssl.utils.checkpoint import load_checkpoint

    ckpt = out / "runs" / "cma" / "checkpoints" / "last.pt"
    if not ckpt.is_file():
        return None
    state = load_checkpoint(ckpt)["model"]
    # the training rows in dataset order: split "train", with audio, sorted by id
    rows = [r for r in read_manifest(manifest) if r.get("split") == "train" and r["has_audio"]]
    labels = torch.tensor([int(r["label"]) for r in rows])
    sets = state["positive_set"]
    counts = torch.bincount(labels).float()
    chance = float((counts * (counts - 1)).sum() / (len(labels) * (len(labels) - 1)))
    return {"purity": positive_set_purity(sets, labels), "chance": chance}


def _localize(manifest: Path, out: Path, stats: Path) -> dict[str, Any]:
    """`avssl localize` on the test rows, scored against the synthetic boxes."""
    from avssl.data.manifest import read_manifest, write_manifest
    from avssl.localize.cli import localize
    from avssl.localize.inputs import Options

    test = manifest.parent / "manifest_test.jsonl"
    write_manifest(test, [r for r in read_manifest(manifest) if r.get("split") == "test"])
    ckpt = out / "runs" / "cma" / "checkpoints" / "last.pt"
    # Frames at the training scale (short side 64: the 8x8 conv5x grid of the demo encoder).
    # The synthetic objects cover ~5-10 % of the frame, so "top50" (half of the pixels) caps
    # cIoU near 0.2: score with the fixed 0.5 threshold instead.
    opts = Options(num_frames=4, max_seconds=4.0, audio_stats=str(stats), write_video=True,
                   binarization="fixed")
    return localize(test, ckpt, out / "localization", opts=opts, log=lambda m: None)


#: the manifest columns that describe a row's soundtrack (swapped by :func:`offscreen_rows`)
AUDIO_COLUMNS = ("has_audio", "audio_path", "sample_rate", "audio_rms_db", "audio_stream",
                 "audio_shift_s")


def offscreen_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's frames with the soundtrack of another row whose class is not in view in them.

    Every sound's source is then off screen, so each "source" call on these rows is a false
    alarm of the visible-source decision (the other error beside a false "no visible source").
    A row's classes in view are ``labels_in_view`` (the synthetic generator's column), else its
    ``label``. Partners are matched greedily in cyclic order, each soundtrack used once; a row
    left without a partner is dropped. Boxes are dropped (the sound's object is not there);
    ``audio_from`` names the partner.
    """
    n = len(rows)
    used: set[int] = set()
    out = []
    for i, row in enumerate(rows):
        in_view = set(row.get("labels_in_view", [row.get("label")]))
        for k in range(1, n):
            j = (i + k) % n
            partner = rows[j]
            if j in used or not partner.get("has_audio") or partner.get("label") in in_view:
                continue
            used.add(j)
            swapped = {c: v for c, v in row.items() if c not in ("boxes", *AUDIO_COLUMNS)}
            swapped.update({c: partner[c] for c in AUDIO_COLUMNS if c in partner})
            swapped["audio_from"] = partner["id"]
            out.append(swapped)
            break
    return out


def _offscreen(manifest: Path, out: Path, stats: Path) -> dict[str, Any] | None:
    """`avssl localize` on the held-out videos with off-screen soundtracks
    (:func:`offscreen_rows`), at the threshold calibrated on the real ones: how many videos
    and audible clips are called "source" (all false alarms). None without any such row."""
    from avssl.data.manifest import read_manifest, write_manifest
    from avssl.localize.cli import localize
    from avssl.localize.inputs import Options

    rows = offscreen_rows(read_manifest(manifest.parent / "manifest_test.jsonl"))
    if not rows:
        return None
    swapped = manifest.parent / "manifest_offscreen.jsonl"
    write_manifest(swapped, rows)
    dst = out / "localization_offscreen"
    opts = Options(num_frames=1, max_seconds=4.0, audio_stats=str(stats), write_video=False,
                   binarization="fixed",
                   calibration_file=str(out / "localization" / "summary.json"))
    summary = localize(swapped, out / "runs" / "cma" / "checkpoints" / "last.pt", dst,
                       opts=opts, log=lambda m: None)
    decisions: dict[str, int] = {}
    for v in summary["videos"]:
        result = json.loads((dst / v["dir"] / "result.json").read_text())
        for d, k in result.get("decisions", {}).items():
            decisions[d] = decisions.get(d, 0) + k
    audible = decisions.get("source", 0) + decisions.get("no visible source", 0)
    videos = len(summary["videos"])
    false_videos = summary["counts"]["localized"]
    return {"videos_off_screen": videos, "false_source_videos": false_videos,
            "false_source_video_rate": round(false_videos / videos, 5),
            "clips_off_screen": audible, "false_source_clips": decisions.get("source", 0),
            "false_source_clip_rate": round(decisions.get("source", 0) / max(audible, 1), 5)}


def prepare(src: Path, dst: Path, workers: int) -> Path:
    """`avssl preprocess` at the demo's settings (16 fps, short side 64, 16 kHz); the manifest."""
    from avssl.preprocess import preprocess

    preprocess(src, dst, fps=16.0, short_side=64, sample_rate=16000, gop=16, workers=workers)
    return dst / "manifest.jsonl"


def probe_data(out: Path, args: argparse.Namespace) -> Path:
    """The probe's downstream set: other videos (seed 1) of the same classes, one object each,
    among static clutter discs in the palette's colours; returns its manifest.

    Probing on the pretraining videos cannot tell a trained encoder from a random one: there the
    class is the colour of an object, which random features read as well (measured: linear
    top-1 81-88 % random vs 77-81 % trained), and 42 % of those videos show a silent object of
    another class, which caps any visual-only classifier near 79 %. Clutter in the same
    colours makes "which colours are in view" a poor cue, so a probe has to find the object.
    """
    from avssl.data.synthetic import make_synthetic

    make_synthetic(out / "probe_synthetic", num_videos=args.num_videos, classes=args.classes,
                   seed=1, workers=args.workers, distractors=(0, 0), clutter=20,
                   variant=args.variant)
    return prepare(out / "probe_synthetic", out / "probe_prepared", args.workers)


def _probe(out: Path, manifest: Path, stats: Path) -> dict[str, Any]:
    """`avssl eval linear` and `avssl eval knn` of the CMA checkpoint on ``manifest``, beside a
    randomly initialized encoder (tables printed); returns {protocol: results JSON}."""
    from avssl.cli import main

    ckpt = out / "runs" / "cma" / "checkpoints" / "last.pt"
    config = CONFIG_DIR.parent / "eval" / "synthetic_linear.yaml"
    results = {}
    for protocol in ("linear", "knn"):
        dst = ckpt.parent / f"eval_{protocol}_{config.stem}.json"
        rc = main(["eval", protocol, str(config), "--checkpoint", str(ckpt), "--random-baseline",
                   "--no-progress", "--out", str(dst), f"data.manifest={manifest}",
                   f"data.audio.stats={stats}"])
        if rc == 0:
            results[protocol] = json.loads(dst.read_text())
    return results


def set_threads(threads: int) -> dict[str, Any]:
    """Fix torch's intra-op thread count (``threads`` > 0) and describe what the run's float
    results depend on: threads, the CPU kernels' instruction set, versions."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return {"torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "processor": platform.processor()}


def run(args: argparse.Namespace) -> int:
    from avssl.data.audio import compute_audio_stats, save_stats
    from avssl.data.synthetic import make_synthetic

    out = Path(args.out)
    t_all = time.perf_counter()
    env = set_threads(args.threads)
    print(f"torch {env['torch']}, {env['torch_threads']} intra-op threads, CPU kernels "
          f"{env['cpu_capability']}; variant {args.variant}, training seed {args.seed}")

    t0 = _step(f"1/7 generate {args.num_videos} synthetic audio-visual videos -> "
               f"{out / 'synthetic'}")
    make_synthetic(out / "synthetic", num_videos=args.num_videos, classes=args.classes,
                   seed=0, workers=args.workers, distractors=(0, 1), variant=args.variant)
    _done(t0)

    t0 = _step(f"2/7 preprocess -> {out / 'prepared'}")
    manifest = prepare(out / "synthetic", out / "prepared", args.workers)
    prepared = manifest.parent
    _done(t0)

    t0 = _step("3/7 spectrogram statistics")
    stats = prepared / "audio_stats.npz"
    common = [f"data.manifest={manifest}"]
    if not stats.is_file():
        from avssl.config import load_config

        cfg = load_config(CONFIG_DIR / "avid.yaml", common)
        mean, std = compute_audio_stats(manifest, cfg.data)
        save_stats(stats, mean, std)
    common += [f"data.audio.stats={stats}", f"seed={args.seed}"]
    _done(t0)

    t0 = _step("4/7 train AVID (cross-modal instance discrimination)")
    epochs = [f"train.epochs={args.avid_epochs}"] if args.avid_epochs else []
    avid = _train(CONFIG_DIR / "avid.yaml", out, "avid", [*common, *epochs], args.fresh)
    _done(t0)

    t0 = _step("5/7 train CMA (cross-modal agreement) from the AVID checkpoint")
    cma = _train(CONFIG_DIR / "cma.yaml", out, "cma",
                 [*common, f"train.init_from={out / 'runs/avid/checkpoints/last.pt'}"],
                 args.fresh)
    _done(t0)

    t0 = _step("6/7 sound-source localization on the held-out videos")
    loc = _localize(manifest, out, stats)
    off = _offscreen(manifest, out, stats)
    _done(t0)

    t0 = _step(f"7/7 linear probe and kNN beside a random encoder, on a downstream set: "
               f"{args.num_videos} other videos, one object each among clutter of the same "
               f"colours -> {out / 'probe_prepared'}")
    probe = _probe(out, probe_data(out, args), stats)
    _done(t0)

    purity = _cma_purity(out, manifest)
    print("\n== results (held-out videos)")
    for name, res in (("AVID", avid), ("AVID+CMA", cma)):
        if not res:
            continue
        chance = res["retrieval_chance_R@1"]
        print(f"   {name:9s} video->audio R@1 {res['retrieval_v2a_R@1']:5.1f} %, "
              f"R@5 {res['retrieval_v2a_R@5']:5.1f} %, median rank "
              f"{res['retrieval_v2a_median_rank']:.0f}; audio->video R@1 "
              f"{res['retrieval_a2v_R@1']:5.1f} %, R@5 {res['retrieval_a2v_R@5']:5.1f} %  "
              f"(chance R@1 {chance:.1f} %, R@5 {5 * chance:.1f} %, median rank "
              f"{(res['retrieval_num_queries'] + 1) / 2:.0f})")
        if "retrieval_v2a_class@1" in res:
            print(f"   {'':9s} top-1 of the same class: video->audio "
                  f"{res['retrieval_v2a_class@1']:.1f} %, audio->video "
                  f"{res['retrieval_a2v_class@1']:.1f} % "
                  f"(chance {res['retrieval_class_chance@1']:.1f} %)")
    if purity is not None:
        print(f"   CMA positive sets: {100 * purity['purity']:.1f} % of members share the anchor's "
              f"class (chance {100 * purity['chance']:.1f} %)")
    if loc:
        rows = loc.get("localization", {})
        for name, r in rows.items():
            print(f"   localization {name:12s} cIoU@0.5 {100 * r['cIoU@0.5']:5.1f}  "
                  f"AUC {100 * r['AUC']:5.1f}  ({r['binarization']})")
        dec, cal = loc.get("source_decision"), loc.get("calibration", {})
        if dec:  # every held-out video shows its sounding object: each "none" is a miss
            print(f"   visible-source decision ({cal.get('kind')}, threshold "
                  f"{cal.get('threshold', float('nan')):.3f}): \"no visible source\" for "
                  f"{dec['false_no_source_videos']}/{dec['videos_in_view']} videos, "
                  f"{100 * dec['false_no_source_clip_rate']:.1f} % of clips, whose source is "
                  f"in view")
        if off:  # every sound of these swapped soundtracks is off screen: each "source" errs
            print(f"   the same decision with another video's soundtrack (its class not in "
                  f"view): \"source\" for {off['false_source_videos']}/"
                  f"{off['videos_off_screen']} videos, "
                  f"{100 * off['false_source_clip_rate']:.1f} % of clips")
    for protocol, res in probe.items():
        top1 = res["top1"]
        pairs = ", ".join(f"{layer} {top1['checkpoint'][layer]:.0f} vs {top1['random'][layer]:.0f}"
                          for layer in res["layers"])
        print(f"   {protocol} probe top-1 % (downstream set, trained vs random encoder): {pairs}"
              f"  (majority {res['majority_top1']:.0f})")
    seconds = time.perf_counter() - t_all
    from avssl.utils.atomic import atomic_write_json

    atomic_write_json(out / "demo_results.json", {
        "variant": args.variant, "seed": args.seed, **env, "seconds": round(seconds, 1),
        "avid": avid, "cma": cma, "cma_purity": purity,
        "localization": loc.get("localization") if loc else None,
        "source_decision": loc.get("source_decision") if loc else None,
        "off_screen_decision": off,
        "calibration": loc.get("calibration") if loc else None,
        "probe": {p: {"top1": r["top1"], "layers": r["layers"]} for p, r in probe.items()}})
    print(f"\ndemo finished in {seconds:.0f} s; outputs in {out}/")
    return 0
