"""Audio classification with frozen features (ESC-50 / DCASE), docs/reference.md section 4.4.

Protocol (AVID/CMA, Morgado et al. CVPR 2021): ``data.audio.duration`` (2 s) crops, 10 evenly
spaced per clip; frozen audio encoder in eval mode; each conv stage's map globally max-pooled;
per stage a multinomial logistic regression (full batch, L-BFGS, L2) on standardized features of
every training crop; test scores = softmax averaged over a clip's crops; k-fold cross-validation
(ESC-50: its ``fold`` column, 5 folds; DCASE 2016/17: 4 folds) and the mean accuracy over
folds, or one fixed train/test split (``eval.train_split`` / ``eval.test_split``, DCASE
2018-2020). ``avssl audio-manifest`` writes the manifests from the official layouts
(:mod:`avssl.eval.audio_datasets`).

Reads the audio directly (:func:`avssl.data.decode.read_audio` + ``AudioTransform``): the
manifest needs ``audio_path`` and ``label`` per row; ``path`` (video) may be absent, ``fold``,
``split`` and ``duration`` are optional.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.config import Config
from avssl.eval.common import (
    add_common_arguments,
    device,
    format_table,
    load_encoder,
    load_eval_config,
    results_path,
)
from avssl.eval.folds import k_fold_splits
from avssl.utils.atomic import atomic_write_json


@dataclass
class AudioEvalSettings:
    """The ``eval`` section for audio classification (not part of :class:`Config`)."""

    num_crops: int = 10
    folds: int = 5  # stratified folds when the manifest has no `fold` column
    fold_key: str = "fold"
    # one fixed split instead of cross-validation (DCASE 2018-2020: the `split` column)
    train_split: str | None = None
    test_split: str | None = None
    layers: list[str] = field(default_factory=lambda: ["conv3x", "conv4x", "conv5x"])
    weight_decay: float = 1e-3  # L2 on the logistic-regression weights
    max_iter: int = 200  # L-BFGS iterations


def read_audio_manifest(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a JSONL manifest with ``audio_path`` and ``label`` (of ``split`` when given),
    sorted by ``id`` (or file order without ids)."""
    from avssl.data.manifest import ManifestError

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if split is not None and row.get("split") != split:
            continue
        if not row.get("audio_path") or row.get("label") is None:
            raise ManifestError(f"{path}:{lineno}: row needs audio_path and label")
        rows.append(row)
    if not rows:
        raise ManifestError(f"{path}: no rows (split {split!r})")
    if all("id" in r for r in rows):
        rows.sort(key=lambda r: r["id"])
    return rows


def fixed_split(rows: list[dict[str, Any]], train: str | None, test: str | None,
                manifest: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices from the rows' ``split`` values ``train`` and ``test``."""
    from avssl.data.manifest import ManifestError

    if not train or not test:
        raise ManifestError("give both eval.train_split and eval.test_split (or neither)")
    idx = {name: np.flatnonzero([r.get("split") == name for r in rows]).astype(np.int64)
           for name in (train, test)}
    for name, i in idx.items():
        if not len(i):
            have = sorted({str(r.get("split")) for r in rows})
            raise ManifestError(f"{manifest}: no rows with split {name!r} (have {have})")
    return idx[train], idx[test]


def crop_starts(duration: float, crop: float, k: int) -> np.ndarray:
    """(k,) start seconds of ``k`` crops evenly spaced over ``[0, duration - crop]``."""
    return np.linspace(0.0, max(duration - crop, 0.0), k) if k > 1 \
        else np.array([max(duration - crop, 0.0) / 2])


@torch.no_grad()
def audio_features(encoder: nn.Module, rows: list[dict[str, Any]], manifest: str | Path,
                   cfg: Config, settings: AudioEvalSettings, dev: torch.device,
                   batch_size: int = 32) -> dict[str, Tensor]:
    """Per layer: (N_clips, num_crops, C) max-pooled features of every crop of every clip."""
    import soundfile as sf

    from avssl.data.audio import AudioTransform
    from avssl.data.decode import read_audio
    from avssl.data.manifest import resolve

    a = cfg.data.audio
    tf = AudioTransform(a, train=False)
    encoder.eval()
    specs = []
    for row in rows:
        p = resolve(manifest, row["audio_path"])
        dur = float(row["duration"]) if row.get("duration") else sf.info(str(p)).duration
        for s in crop_starts(dur, a.duration, settings.num_crops):
            specs.append(tf(read_audio(p, float(s), a.duration, a.sample_rate)))
    out: dict[str, list[Tensor]] = {name: [] for name in settings.layers}
    for i in range(0, len(specs), batch_size):
        maps = encoder.forward_features(torch.stack(specs[i:i + batch_size]).to(dev))
        for name in settings.layers:
            if name not in maps:
                raise ValueError(f"unknown audio layer {name!r} (have {sorted(maps)})")
            out[name].append(maps[name].float().amax(dim=(2, 3)).cpu())
    n, k = len(rows), settings.num_crops
    return {name: torch.cat(v).view(n, k, -1) for name, v in out.items()}


def logistic_regression(x: Tensor, y: Tensor, num_classes: int, weight_decay: float = 1e-3,
                        max_iter: int = 200) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression, full batch L-BFGS: x (N, D), y (N,) -> W (D, C), b (C,).

    Loss: mean cross-entropy + ``weight_decay * ||W||^2``.
    """
    w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def fold_accuracy(feats: Tensor, labels: Tensor, train: np.ndarray, test: np.ndarray,
                  num_classes: int, weight_decay: float = 1e-3, max_iter: int = 200) -> float:
    """Train on every crop of the ``train`` clips, test with softmax averaged over crops.

    feats: (N_clips, K_crops, D); labels: (N_clips,); returns clip accuracy in [0, 1].
    """
    tr, te = torch.as_tensor(train), torch.as_tensor(test)
    k = feats.shape[1]
    xtr = feats[tr].reshape(-1, feats.shape[2])
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    w, b = logistic_regression((xtr - mean) / std, labels[tr].repeat_interleave(k), num_classes,
                               weight_decay, max_iter)
    probs = F.softmax(((feats[te] - mean) / std) @ w + b, dim=-1).mean(1)  # (N_test, C)
    return float((probs.argmax(1) == labels[te]).float().mean())


def audio_eval(cfg: Config, settings: AudioEvalSettings, checkpoint: str | Path | None
               ) -> dict[str, Any]:
    """Cross-validated accuracy of each layer; ``best`` = the layer with the best mean."""
    t0 = time.time()
    manifest = cfg.data.manifest
    rows = read_audio_manifest(manifest, cfg.data.split)
    raw = [r["label"] for r in rows]
    classes = sorted(set(raw), key=repr)
    labels = torch.tensor([classes.index(v) for v in raw])
    if settings.train_split or settings.test_split:
        splits = [fixed_split(rows, settings.train_split, settings.test_split, manifest)]
        fold_source = f"split {settings.train_split} -> {settings.test_split}"
    elif all(settings.fold_key in r for r in rows):
        splits = k_fold_splits(folds=[r[settings.fold_key] for r in rows])
        fold_source = settings.fold_key
    else:
        splits = k_fold_splits(labels.numpy(), settings.folds, seed=cfg.seed)
        fold_source = f"stratified k={settings.folds}"
    dev = device()
    torch.manual_seed(cfg.seed)
    encoder = load_encoder(cfg, checkpoint, "audio").to(dev)
    feats = audio_features(encoder, rows, manifest, cfg, settings, dev, cfg.data.batch_size)
    layers = {}
    for name, f in feats.items():
        accs = [fold_accuracy(f, labels, tr, te, len(classes), settings.weight_decay,
                              settings.max_iter) for tr, te in splits]
        layers[name] = {"folds": accs, "mean": sum(accs) / len(accs), "dim": f.shape[2]}
    best = max(layers, key=lambda n: layers[n]["mean"])
    return {"protocol": "audio", "checkpoint": str(checkpoint) if checkpoint else None,
            "manifest": str(manifest), "num_clips": len(rows), "num_classes": len(classes),
            "num_crops": settings.num_crops, "crop_seconds": cfg.data.audio.duration,
            "fold_source": fold_source, "num_folds": len(splits), "layers": layers,
            "best": {"layer": best, "mean": layers[best]["mean"]},
            "seconds": round(time.time() - t0, 1)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``avssl eval audio CONFIG [--checkpoint CKPT] [--out JSON] [key=value ...]``."""
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Config/manifest/checkpoint errors propagate to the top-level CLI (exit code 2)."""
    cfg, settings = load_eval_config(args.config, args.overrides, AudioEvalSettings)
    out = results_path(args, "audio")
    res = audio_eval(cfg, settings, args.checkpoint)
    atomic_write_json(out, res)
    n = res["num_folds"]
    rows = [[name, r["dim"], *r["folds"], r["mean"]] for name, r in res["layers"].items()]
    print(format_table(["layer", "dim", *(f"fold{i + 1}" for i in range(n)), "mean"], rows))
    print(f"best: {res['best']['layer']} {100 * res['best']['mean']:.2f}\nresults: {out}")
    return 0
