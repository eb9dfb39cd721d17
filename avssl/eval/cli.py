"""``avssl eval linear|knn CONFIG --checkpoint CKPT [key=value ...]``: frozen-feature probes.

CONFIG is an eval config (e.g. ``configs/eval/synthetic_linear.yaml``): its ``data`` section names
the labelled manifest, the train split (``data.split``), the test split (``data.eval_split``),
the clip geometry and ``data.clips_per_video`` (uniformly spaced clips averaged per video). The
model comes from the checkpoint's own config; only ``encoders.video.*`` weights are used.
Results go to ``<checkpoint dir>/eval_<protocol>_<config stem>.json`` and are printed as a table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from avssl.eval.features import LAYERS, FrozenFeatures, extract_features


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="eval YAML config (data section: labelled manifest, splits)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the eval config")
    p.add_argument("--checkpoint", required=True, help="avssl checkpoint (.pt)")
    p.add_argument("--layers", default=",".join(LAYERS),
                   help="comma-separated encoder stages (default: %(default)s)")
    p.add_argument("--random-baseline", action="store_true",
                   help="also evaluate a randomly initialized encoder of the same architecture")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--cache-dir", default=None,
                   help="feature cache folder (default: <checkpoint dir>/feature_cache)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--out", default=None, help="results JSON (default: beside the checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    lin = sub.add_parser("linear", help="linear probe per layer (BN + linear, frozen features)",
                         description="Linear probe per layer on frozen max-pooled features.")
    _common(lin)
    lin.add_argument("--steps", type=int, default=300, help="optimizer steps (%(default)s)")
    lin.add_argument("--lr", type=float, default=1e-2, help="learning rate (%(default)s)")
    lin.add_argument("--weight-decay", type=float, default=1e-4)
    lin.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    lin.add_argument("--probe-batch-size", type=int, default=None,
                     help="mini-batch size of the probe (default: full batch)")
    knn = sub.add_parser("knn", help="weighted cosine kNN per layer (Wu et al. 2018)",
                         description="Weighted cosine kNN classifier per layer.")
    _common(knn)
    knn.add_argument("-k", type=int, default=20, help="neighbours (%(default)s)")
    knn.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(sim/T)")
    knn.add_argument("--neighbors", type=int, default=0, metavar="Q",
                     help="also write a PNG grid of Q query test videos and their neighbours")
    # protocols with their own modules: fine-tuning, VCOP retrieval, ESC-50 style audio
    from avssl.eval import audio_eval, finetune, vcop

    for name, module, text in (
            ("finetune", finetune, "fine-tune the video encoder (UCF-101/HMDB-51 protocol)"),
            ("retrieval", vcop, "video retrieval by class, VCOP protocol (R@1/5/10/20/50)"),
            ("audio", audio_eval, "frozen audio features + linear classifier, k-fold (ESC-50)")):
        p = sub.add_parser(name, help=text, description=text)
        module.add_arguments(p)
        p.set_defaults(_protocol_run=module.run)


def _usage_error(msg: str) -> Exception:
    from avssl.cli import UsageError

    return UsageError(msg)


def load_video_encoder(checkpoint: str | Path) -> tuple[torch.nn.Module, Any]:
    """The video encoder of one of our checkpoints (only ``encoders.video.*`` keys) and the
    checkpoint's Config."""
    from avssl.config import from_dict
    from avssl.engine.checkpoint import CheckpointError, load_checkpoint, model_state
    from avssl.models import build_video_encoder

    ckpt = load_checkpoint(checkpoint)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{checkpoint}: checkpoint has no 'config' (not written by avssl "
                              "train or avssl convert)")
    cfg = from_dict(ckpt["config"], src=f"{checkpoint} (config)", require_paths=False)
    cfg.model.video.pretrained = None  # the checkpoint holds the weights
    prefix = "encoders.video."
    state = {k[len(prefix):]: v for k, v in model_state(ckpt).items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{checkpoint}: no {prefix}* weights in the checkpoint")
    enc = build_video_encoder(cfg.model.video)
    try:
        enc.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{checkpoint}: weights do not fit the config ({first})") from None
    return enc, cfg


def _features(encoder: torch.nn.Module, cfg: Any, layers: tuple[str, ...], identity: str,
              cache_dir: Path | None, device: torch.device, progress: bool
              ) -> tuple[FrozenFeatures, FrozenFeatures, Any, Any]:
    from avssl.data.dataset import AVClipDataset

    encoder.to(device)
    out = []
    for split in (cfg.data.split, cfg.data.eval_split):
        ds = AVClipDataset(cfg.data.manifest, cfg.data, split=split, train=False,
                           clip_mode="uniform", clips_per_video=cfg.data.clips_per_video,
                           require_audio=False, seed=cfg.seed)
        f = extract_features(encoder, ds, layers, batch_size=cfg.data.batch_size, device=device,
                             cache_dir=cache_dir, identity=identity,
                             num_workers=cfg.data.num_workers, progress=progress)
        if (f.labels < 0).any():
            raise _usage_error(f"{cfg.data.manifest}: split {split!r} has unlabelled videos "
                               "(probes need a label on every row)")
        out.append((f, ds))
    (tr, tr_ds), (te, te_ds) = out
    return tr, te, tr_ds, te_ds


def _table(results: dict[str, dict[str, float]], layers: tuple[str, ...], metric: str) -> str:
    cols = list(results)
    lines = [f"{'layer':<8}" + "".join(f"{c + ' ' + metric:>22}" for c in cols)]
    for layer in layers:
        lines.append(f"{layer:<8}" + "".join(f"{results[c][layer]:>22.2f}" for c in cols))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_protocol_run", None) is not None:
        return args._protocol_run(args)
    from avssl.config import load_config
    from avssl.eval.features import checkpoint_identity
    from avssl.models import build_video_encoder
    from avssl.utils.atomic import atomic_write_json

    cfg = load_config(args.config, args.overrides)
    if cfg.data.split is None or cfg.data.eval_split is None:
        raise _usage_error("data.split and data.eval_split must both name a split "
                           "(train and test)")
    layers = tuple(x.strip() for x in args.layers.split(",") if x.strip())
    ckpt = Path(args.checkpoint)
    encoder, ckpt_cfg = load_video_encoder(ckpt)
    unknown = [x for x in layers if x not in encoder.feature_dims]
    if unknown:
        raise _usage_error(f"--layers: unknown {unknown} (encoder has "
                           f"{', '.join(encoder.feature_dims)})")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cache_dir = None if args.no_cache else Path(args.cache_dir or ckpt.parent / "feature_cache")
    progress = not args.no_progress

    encoders: dict[str, tuple[torch.nn.Module, str]] = {
        "checkpoint": (encoder, checkpoint_identity(ckpt))}
    if args.random_baseline:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            rand = build_video_encoder(ckpt_cfg.model.video)
        encoders["random"] = (rand, f"random-init:{cfg.seed}:{ckpt_cfg.model.video}")

    results: dict[str, dict[str, float]] = {}
    extra: dict[str, Any] = {}
    for name, (enc, identity) in encoders.items():
        tr, te, tr_ds, te_ds = _features(enc, cfg, layers, identity, cache_dir, device, progress)
        if args.protocol == "linear":
            from avssl.eval.linear import linear_probe

            results[name] = linear_probe(
                tr.feats, tr.labels, te.feats, te.labels, steps=args.steps, lr=args.lr,
                weight_decay=args.weight_decay, optimizer=args.optimizer,
                batch_size=args.probe_batch_size, seed=cfg.seed, device=device)
        else:
            from avssl.eval.knn import knn_top1

            results[name] = {layer: knn_top1(tr.feats[layer], tr.labels, te.feats[layer],
                                             te.labels, k=args.k, temperature=args.temperature)
                             for layer in layers}
            if name == "checkpoint" and args.neighbors > 0:
                from avssl.viz.neighbors import neighbor_grid

                png = ckpt.parent / f"eval_knn_{Path(args.config).stem}_neighbors.png"
                neighbor_grid(te_ds, tr_ds, te.feats[layers[-1]], tr.feats[layers[-1]], png,
                              queries=args.neighbors, k=min(5, tr.num_videos),
                              query_index=te.index, gallery_index=tr.index)
                extra["neighbors_png"] = str(png)
        extra.setdefault("num_train", tr.num_videos)
        extra.setdefault("num_test", te.num_videos)
        extra.setdefault("num_classes", int(max(tr.labels.max(), te.labels.max())) + 1)

    p = torch.bincount(te.labels).float() / te.num_videos
    chance = 100.0 * float(p.max())  # majority-class rate on the test split
    metric = "top1"
    summary: dict[str, Any] = {
        "protocol": args.protocol, "checkpoint": str(ckpt), "config": str(args.config),
        "manifest": cfg.data.manifest, "train_split": cfg.data.split,
        "test_split": cfg.data.eval_split, "clips_per_video": cfg.data.clips_per_video,
        "layers": list(layers), **extra, "majority_top1": chance,
        "top1": results,
    }
    if args.protocol == "linear":
        summary["probe"] = {"steps": args.steps, "lr": args.lr, "optimizer": args.optimizer,
                            "weight_decay": args.weight_decay,
                            "batch_size": args.probe_batch_size}
    else:
        summary["knn"] = {"k": args.k, "temperature": args.temperature}
    out = Path(args.out) if args.out else ckpt.parent / (
        f"eval_{args.protocol}_{Path(args.config).stem}.json")
    atomic_write_json(out, _finite(summary))
    print(f"{args.protocol} top-1 (%) on {cfg.data.eval_split!r} ({extra['num_test']} videos, "
          f"{extra['num_classes']} classes, majority {chance:.1f} %)")
    print(_table(results, layers, metric))
    print(f"results: {out}")
    if "neighbors_png" in extra:
        print(f"neighbours: {extra['neighbors_png']}")
    return 0


def _finite(obj: Any) -> Any:
    """NaN -> None so the JSON stays standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="avssl eval")
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))

