"""The `avssl` command: one entry point, one subcommand per job.

Each subcommand lives in the module that implements it and exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only maps names to modules (imported lazily, so `avssl --help`
stays fast). Known user errors (bad config, missing manifest, bad arguments) print one line and
exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from avssl.utils.errors import UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "preprocess": ("avssl.preprocess.cli", "re-encode a folder of videos, extract audio, "
                                           "write manifest.jsonl"),
    "make-synthetic": ("avssl.data.synthetic", "generate the synthetic audio-visual dataset"),
    "audio-stats": ("avssl.data.audio", "per-frequency-bin spectrogram statistics of a dataset"),
    "splits": ("avssl.preprocess.splits", "UCF-101 / HMDB-51 official splits as manifest columns"),
    "audio-manifest": ("avssl.eval.audio_datasets", "manifest of an audio benchmark (ESC-50, "
                                                    "DCASE) from its official layout"),
    "train": ("avssl.engine.cli", "train a method from a YAML config (torchrun for DDP)"),
    "eval": ("avssl.eval.cli", "evaluate a checkpoint: linear, knn, finetune, retrieval, audio"),
    "localize": ("avssl.localize.cli", "sound-source localization: heatmaps, overlays, cIoU"),
    "convert": ("avssl.models.convert", "convert a published AVID-CMA checkpoint to avssl's "
                                        "layout"),
    "config": ("avssl.cli_config", "print a resolved config (checks it)"),
    "demo": ("avssl.demo", "the whole pipeline on the synthetic dataset, on CPU"),
    "compare": ("avssl.compare", "train several methods with one step budget, one table"),
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from avssl.config import ConfigError
    from avssl.data.manifest import ManifestError
    from avssl.utils.checkpoint import CheckpointError

    # FileExistsError: a run directory that already holds a run (avssl train without --resume)
    return (UsageError, ConfigError, ManifestError, CheckpointError, FileNotFoundError,
            FileExistsError)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its arguments."""
    from avssl import __version__

    parser = argparse.ArgumentParser(
        prog="avssl", description="Audio-visual self-supervised learning toolkit.")
    parser.add_argument("--version", action="version", version=f"avssl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`train cfg.yaml --resume optim.lr=1e-4`)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        build_parser().print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except _user_errors() as e:
        print(f"avssl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"avssl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m avssl.cli` / `torchrun -m avssl.cli`: run the imported module's main, so that
    # avssl.cli.UsageError raised by a command is the class caught here (not __main__'s copy)
    from avssl import cli

    sys.exit(cli.main())
