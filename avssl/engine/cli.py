"""`avssl train CONFIG [--run-dir DIR] [--resume] [key=value ...]` (also under torchrun)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avssl.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    parser.add_argument("--run-dir", help="output folder (default: run_dir of the config, "
                                          "else runs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN_DIR/checkpoints/last.pt if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir or cfg.run_dir or Path("runs") / Path(args.config).stem)
    from avssl.engine.trainer import train

    results = train(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    if results:
        print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=1))
    return 0
