"""Convert a checkpoint of the published AVID-CMA code (Morgado et al. 2021) into avssl's layout.

Published: ``{epoch, model, optimizer, train_criterion}``; ``model`` keys carry the DDP prefix
``module.`` (``module.video_model.*``, ``module.audio_model.*``, ``module.video_proj.*``,
``module.audio_proj.*``); ``train_criterion`` holds the memory banks
``nce_average.view1_mem`` (video, [N, 128]) and ``nce_average.view2_mem`` (audio) and, for CMA,
``nce_average.positive_set`` ([N, 32] int). The encoders and heads of avssl use the published
module names, so weights map by prefix alone.

The noise constants Z of the published run are not converted: they are re-estimated on the
first batch if training continues (they only scale the NCE's noise term).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avssl.config import Config, to_dict
from avssl.utils.checkpoint import CheckpointError, load_torch_file, save_checkpoint

PREFIXES = {
    "video_model.": "encoders.video.",
    "audio_model.": "encoders.audio.",
    "video_proj.": "encoders.video_head.",
    "audio_proj.": "encoders.audio_head.",
}
BANKS = {"view1_mem": "memory.video.memory", "view2_mem": "memory.audio.memory"}


def _strip(key: str, prefix: str = "module.") -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


def convert_state(published: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Published checkpoint dict -> (our method state dict, info about what was found)."""
    if not isinstance(published, dict):
        raise CheckpointError("not a published AVID-CMA checkpoint (holds a "
                              f"{type(published).__name__}, not a dict with a 'model' entry)")
    if not isinstance(published.get("model"), dict):
        what = "no 'model' entry" if "model" not in published else "'model' is not a dict"
        raise CheckpointError(f"not a published AVID-CMA checkpoint ({what}; top-level keys: "
                              f"{[str(k) for k in list(published)[:6]]})")
    if isinstance(published.get("config"), dict) and any(
            str(k).startswith("encoders.") for k in published["model"]):
        raise CheckpointError("already in avssl's layout (written by avssl train or convert): "
                              "use it as it is")
    state: dict[str, Tensor] = {}
    skipped = []
    for key, value in published["model"].items():
        k = _strip(str(key))
        for src, dst in PREFIXES.items():
            if k.startswith(src):
                state[dst + k[len(src):]] = value
                break
        else:
            skipped.append(key)
    if not any(k.startswith("encoders.video.") for k in state):
        raise CheckpointError("published checkpoint has no video_model.* weights")
    info: dict[str, Any] = {"skipped": skipped, "num_rows": None, "cma": False}
    raw = published.get("train_criterion")
    crit = {_strip(str(k)): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    for src, dst in BANKS.items():
        if f"nce_average.{src}" in crit:
            bank = crit[f"nce_average.{src}"].float()
            state[dst] = torch.nn.functional.normalize(bank, dim=1)
            info["num_rows"] = bank.shape[0]
    if "nce_average.positive_set" in crit:
        state["positive_set"] = crit["nce_average.positive_set"].long()
        state["mined_epoch"] = torch.tensor(int(published.get("epoch", 0)))
        info["cma"] = True
    info["epoch"] = int(published.get("epoch", 0))
    return state, info


def published_config(info: dict[str, Any]) -> Config:
    """The config of the published models (R(2+1)D-18, 10-layer audio CNN, 128-d heads)."""
    cfg = Config()
    cfg.method = {"name": "cma", "num_positives": 32} if info["cma"] else {"name": "avid"}
    return cfg


def convert_avid_cma(src: str | Path, dst: str | Path, trust: bool = False) -> dict[str, Any]:
    """Read a published checkpoint, write ours (``{"model", "epoch", "config"}``) atomically."""
    src = Path(src)
    published = load_torch_file(src, trust=trust, trust_hint="; if you trust this file, run "
                                "again with --trust to allow non-tensor objects in it")
    try:
        state, info = convert_state(published)
    except CheckpointError as e:
        raise CheckpointError(f"{src}: {e}") from None
    cfg = published_config(info)
    try:
        save_checkpoint({"model": state, "epoch": info["epoch"], "config": to_dict(cfg),
                         "converted_from": str(src)}, dst)
    except OSError as e:  # a folder, no permission, disk full: one line, not a traceback
        raise CheckpointError(f"{dst}: cannot write ({e.strerror or e})") from None
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["avid-cma"],
                        help="layout of the source checkpoint (only avid-cma)")
    parser.add_argument("src", help="published checkpoint (.pth.tar)")
    parser.add_argument("dst", help="output checkpoint in avssl's layout (.pt; its folder is "
                                    "created)")
    parser.add_argument("--trust", action="store_true",
                        help="allow pickled non-tensor objects, which can run code (only for "
                             "files you trust; default: off, tensors and plain containers only)")


def run(args: argparse.Namespace) -> int:
    info = convert_avid_cma(args.src, args.dst, trust=args.trust)
    kind = "AVID+CMA" if info["cma"] else "AVID"
    print(f"converted {kind} checkpoint (epoch {info['epoch']}, memory rows {info['num_rows']})"
          f" -> {args.dst}")
    if info["skipped"]:
        print(f"ignored {len(info['skipped'])} keys: {info['skipped'][:5]}")
    return 0
