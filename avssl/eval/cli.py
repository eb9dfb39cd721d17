"""``avssl eval linear|knn CONFIG --checkpoint CKPT [key=value ...]``: frozen-feature probes.

CONFIG is an eval config (e.g. ``configs/eval/synthetic_linear.yaml``): its ``data`` section names
the labelled manifest, the train split (``data.split``), the test split (``data.eval_split``),
the clip geometry and ``data.clips_per_video`` (uniformly spaced clips averaged per video). The
model comes from the checkpoint's own config; only ``encoders.video.*`` weights are used.
Results go to ``<checkpoint dir>/eval_<protocol>_<config stem>.json`` and are printed as a table.

The protocol's settings (:class:`~avssl.eval.linear.LinearSettings`,
:class:`~avssl.eval.knn.KnnSettings`) come from the config's ``eval`` section, then ``eval.*``
overrides, then the flags of the same name (``--steps``, ``-k``, ...), which win; an unknown key
is a one-line config error, like for ``finetune``, ``retrieval`` and ``audio``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from avssl.eval.features import LAYERS, FrozenFeatures, extract_features


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="eval YAML config (data section: labelled manifest, splits; "
                                  "optional eval section: the protocol's settings)")
    p.add_argument("overrides", nargs="*",
                   help="key.sub=value overrides of the eval config, eval.* for the protocol's "
                        "settings (default: none)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="avssl checkpoint (.pt) (required)")
    p.add_argument("--layers", default=None,
                   help="comma-separated encoder stages; overrides eval.layers "
                        f"(default: {','.join(LAYERS)})")
    p.add_argument("--random-baseline", action="store_true",
                   help="also evaluate a randomly initialized encoder of the same architecture "
                        "(default: off)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, "
                                                  "else cpu)")
    p.add_argument("--cache-dir", default=None,
                   help="feature cache folder (default: <checkpoint dir>/feature_cache)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the cache (default: cache on)")
    p.add_argument("--out", default=None, metavar="JSON",
                   help="results JSON (default: <checkpoint dir>/eval_<protocol>_<config stem>"
                        ".json)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (default: bars on a terminal)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from avssl.eval.knn import KnnSettings
    from avssl.eval.linear import LinearSettings

    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    # protocol flags default to None: given, they win over the config's eval.* value
    d = LinearSettings()
    lin = sub.add_parser("linear", help="linear probe per layer (BN + linear, frozen features)",
                         description="Linear probe per layer on frozen max-pooled features. "
                                     "Settings: eval.steps, eval.lr, eval.weight_decay, "
                                     "eval.optimizer, eval.probe_batch_size, eval.layers (or "
                                     "the flags below, which win).")
    _common(lin)
    lin.add_argument("--steps", type=int, default=None,
                     help=f"optimizer steps; overrides eval.steps (default: {d.steps})")
    lin.add_argument("--lr", type=float, default=None,
                     help=f"learning rate; overrides eval.lr (default: {d.lr:g})")
    lin.add_argument("--weight-decay", type=float, default=None,
                     help=f"overrides eval.weight_decay (default: {d.weight_decay:g})")
    lin.add_argument("--optimizer", choices=("adam", "sgd"), default=None,
                     help=f"overrides eval.optimizer (default: {d.optimizer})")
    lin.add_argument("--probe-batch-size", type=int, default=None,
                     help="mini-batch size of the probe; overrides eval.probe_batch_size "
                          "(default: full batch)")
    k = KnnSettings()
    knn = sub.add_parser("knn", help="weighted cosine kNN per layer (Wu et al. 2018)",
                         description="Weighted cosine kNN classifier per layer. Settings: eval.k, "
                                     "eval.temperature, eval.layers (or the flags below, which "
                                     "win).")
    _common(knn)
    knn.add_argument("-k", type=int, default=None,
                     help=f"neighbours; overrides eval.k (default: {k.k})")
    knn.add_argument("--temperature", type=float, default=None,
                     help=f"vote weight exp(sim/T); overrides eval.temperature "
                          f"(default: {k.temperature:g})")
    knn.add_argument("--neighbors", type=int, default=0, metavar="Q",
                     help="also write a PNG grid of Q query test videos and their neighbours "
                          "(default: %(default)s, none)")
    # protocols with their own modules: fine-tuning, VCOP retrieval, ESC-50 style audio
    from avssl.eval import audio_eval, finetune, vcop

    for name, module, text, settings in (
            ("finetune", finetune, "fine-tune the video encoder (UCF-101/HMDB-51 protocol)",
             finetune.FinetuneSettings),
            ("retrieval", vcop, "video retrieval by class, VCOP protocol (R@1/5/10/20/50)",
             vcop.RetrievalSettings),
            ("audio", audio_eval, "frozen audio features + linear classifier, k-fold (ESC-50)",
             audio_eval.AudioEvalSettings)):
        keys = ", ".join(f"eval.{f.name}" for f in dataclasses.fields(settings))
        p = sub.add_parser(name, help=text, description=f"{text}. Settings: {keys}.")
        module.add_arguments(p)
        p.set_defaults(_protocol_run=module.run)


#: protocol -> {settings field: argparse dest of the flag that overrides it}
FLAGS: dict[str, dict[str, str]] = {
    "linear": {"steps": "steps", "lr": "lr", "weight_decay": "weight_decay",
               "optimizer": "optimizer", "probe_batch_size": "probe_batch_size",
               "layers": "layers"},
    "knn": {"k": "k", "temperature": "temperature", "layers": "layers"},
}


def load_probe_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The eval Config and the protocol's settings (:class:`~avssl.eval.linear.LinearSettings`
    or :class:`~avssl.eval.knn.KnnSettings`): the config's ``eval`` section, then ``eval.*``
    overrides, then the flags given on the command line; validated together."""
    from avssl.eval.common import load_eval_config
    from avssl.eval.knn import KnnSettings
    from avssl.eval.linear import LinearSettings

    cls = LinearSettings if args.protocol == "linear" else KnnSettings
    flags: dict[str, Any] = {}
    for key, dest in FLAGS[args.protocol].items():
        value = getattr(args, dest, None)
        if value is not None:
            flags[key] = value
    if isinstance(flags.get("layers"), str):
        flags["layers"] = [x.strip() for x in flags["layers"].split(",") if x.strip()]
    return load_eval_config(args.config, args.overrides, cls, settings=flags)


def _usage_error(msg: str) -> Exception:
    from avssl.utils.errors import UsageError

    return UsageError(msg)


def load_video_encoder(checkpoint: str | Path) -> tuple[torch.nn.Module, Any]:
    """The video encoder of one of our checkpoints (only ``encoders.video.*`` keys) and the
    checkpoint's Config."""
    from avssl.models.loading import load_encoders

    modules, cfg = load_encoders(checkpoint, ["video"])
    return modules["video"], cfg


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
    from avssl.eval.features import checkpoint_identity
    from avssl.models import build_video_encoder
    from avssl.utils.atomic import atomic_write_json

    cfg, settings = load_probe_config(args)
    if cfg.data.split is None or cfg.data.eval_split is None:
        raise _usage_error("data.split and data.eval_split must both name a split "
                           "(train and test)")
    layers = tuple(settings.layers)
    if not layers:
        raise _usage_error("eval.layers (--layers) is empty: name at least one stage")
    ckpt = Path(args.checkpoint)
    encoder, ckpt_cfg = load_video_encoder(ckpt)
    unknown = [x for x in layers if x not in encoder.feature_dims]
    if unknown:
        raise _usage_error(f"eval.layers (--layers): unknown {unknown} (encoder has "
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
                tr.feats, tr.labels, te.feats, te.labels, steps=settings.steps, lr=settings.lr,
                weight_decay=settings.weight_decay, optimizer=settings.optimizer,
                batch_size=settings.probe_batch_size, seed=cfg.seed, device=device)
        else:
            from avssl.eval.knn import knn_top1

            results[name] = {layer: knn_top1(tr.feats[layer], tr.labels, te.feats[layer],
                                             te.labels, k=settings.k,
                                             temperature=settings.temperature)
                             for layer in layers}
            if name == "checkpoint" and args.neighbors > 0:
                from avssl.eval.knn import nearest_neighbors
                from avssl.viz.neighbors import neighbor_grid, spread_rows

                png = ckpt.parent / f"eval_knn_{Path(args.config).stem}_neighbors.png"
                rows = spread_rows(te.num_videos, args.neighbors)
                nn_idx, sims = nearest_neighbors(tr.feats[layers[-1]],
                                                 te.feats[layers[-1]][rows],
                                                 min(5, tr.num_videos))
                neighbor_grid(te_ds, tr_ds, rows, nn_idx, sims, png,
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
    # the settings used (eval section, eval.* overrides, flags), layers listed above
    used = {k: v for k, v in dataclasses.asdict(settings).items() if k != "layers"}
    summary["probe" if args.protocol == "linear" else "knn"] = used
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

