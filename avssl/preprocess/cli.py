"""Command line of the preprocessor: ``avssl preprocess SRC DST [options]`` or ``--merge DST``."""

from __future__ import annotations

import argparse
import sys

from avssl.preprocess.runner import DEFAULT_TIMEOUT_S, merge, preprocess
from avssl.preprocess.scan import PreprocessError

DESCRIPTION = ("Re-encode every video under SRC to constant-fps H.264 (short GOP, no audio) plus "
               "mono 16-bit audio aligned to the first video frame, and write DST/manifest.jsonl "
               "and DST/failures.jsonl. Resumable: run it again after a crash.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the preprocess arguments to ``parser`` (a subcommand parser or a standalone one).

    Every option's help names its default (``--help`` is the reference for long runs).
    """
    parser.add_argument("src", nargs="?", metavar="SRC", help="folder with the input videos")
    parser.add_argument("dst", nargs="?", metavar="DST", help="output folder")
    parser.add_argument("--fps", type=float, default=16.0,
                        help="output frame rate (default: %(default)g)")
    parser.add_argument("--short-side", type=int, default=256,
                        help="output short side in pixels, even (default: %(default)s)")
    parser.add_argument("--sample-rate", type=int, default=24000,
                        help="output audio sample rate in Hz (default: %(default)s)")
    parser.add_argument("--gop", type=int, default=16,
                        help="frames between keyframes (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel processes (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="time limit per input: one still running after it (a hung decode) "
                             "is killed and reported in failures.jsonl, its worker replaced; "
                             "0 = no limit (default: %(default)g)")
    parser.add_argument("--shard", metavar="K/N",
                        help="process inputs whose sorted index %% N == K, 0 <= K < N "
                             "(default: all inputs)")
    parser.add_argument("--audio-format", choices=("wav", "flac"), default="wav",
                        help="16-bit PCM container (default: %(default)s)")
    parser.add_argument("--meta", metavar="FILE",
                        help="JSON lines {path, ...keys} copied into rows "
                             "(default: SRC/meta.jsonl if present)")
    parser.add_argument("--label-from-dir", action="store_true",
                        help="label = first folder of the relative path (SRC/<class>/...), "
                             "and with SRC/{train,val,test}/<class>/... the split too "
                             "(default: off)")
    parser.add_argument("--merge", metavar="DST",
                        help="join the shard manifests in DST into manifest.jsonl, instead of "
                             "converting (default: off)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar (default: show one)")


def run(args: argparse.Namespace) -> int:
    """Run the command: 0 on success (some failed inputs included, see the summary), 1 when
    every input failed, 2 on bad input."""
    try:
        if args.merge is not None:
            if args.src is not None or args.dst is not None:
                raise PreprocessError("--merge DST takes no SRC/DST arguments")
            summary = merge(args.merge)
        else:
            if args.src is None or args.dst is None:
                raise PreprocessError("need SRC and DST (or --merge DST)")
            summary = preprocess(
                args.src, args.dst, fps=args.fps, short_side=args.short_side,
                sample_rate=args.sample_rate, gop=args.gop, workers=args.workers,
                shard=args.shard, audio_format=args.audio_format, meta=args.meta,
                label_from_dir=args.label_from_dir, progress=args.progress,
                timeout=args.timeout)
    except PreprocessError as e:
        print(f"avssl preprocess: error: {e}", file=sys.stderr)
        return 2
    print(summary.format())
    if summary.all_failed:
        # likely a systematic problem (codec missing, wrong SRC): scripts must notice
        print(f"avssl preprocess: error: all {summary.failed} inputs failed; see "
              f"{summary.failures_file}", file=sys.stderr)
        return 1
    return 0
