"""`avssl train CONFIG [--run-dir DIR] [--resume] [key=value ...]` (also under torchrun)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avssl.cli_config import load_checked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    parser.add_argument("--run-dir", help="output folder (default: run_dir of the config, "
                                          "else runs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN_DIR/checkpoints/last.pt if it exists (without "
                             "it, a run directory holding a checkpoint is refused)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars or progress lines")


_DIRECTIONS = {"v2a": "video->audio", "a2v": "audio->video"}


def format_results(results: dict[str, float]) -> str:
    """Labelled end-of-run numbers, one per line (``retrieval_v2a_R@1`` -> ``video->audio
    R@1 (%)``)."""
    lines = []
    for k, v in results.items():
        name = k.removeprefix("retrieval_")
        head, _, metric = name.partition("_")
        label = f"{_DIRECTIONS[head]} {metric}" if head in _DIRECTIONS else name
        label = label.replace("_", " ") + ("" if "rank" in name else " (%)")
        lines.append(f"  {label:<30} {v:7.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = load_checked(args.config, args.overrides, require_paths=True)
    run_dir = Path(args.run_dir or cfg.run_dir or Path("runs") / Path(args.config).stem)
    from avssl.engine.trainer import train
    from avssl.eval.retrieval import evaluate_cross_modal
    from avssl.methods import method_spec
    from avssl.utils import distributed as dist

    # cross-modal retrieval needs both encoders (a video-only method has none to compare)
    both = {"video", "audio"} <= set(method_spec(cfg).encoders)
    evaluate = evaluate_cross_modal if cfg.train.eval_retrieval and both else None
    try:
        results = train(cfg, run_dir, resume=args.resume, progress=not args.no_progress,
                        evaluate=evaluate)
    except FloatingPointError as e:  # a diverged run: one line, the checkpoint stays
        print(f"avssl train: error: {e}", file=sys.stderr)
        return 1
    if dist.is_main():
        print(f"run finished: {run_dir} (checkpoints/last.pt, metrics.jsonl, plots/loss.png)")
        if results:
            split = cfg.data.eval_split
            print(f"cross-modal retrieval on split {split!r}:\n{format_results(results)}")
    return 0
