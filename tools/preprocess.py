#!/usr/bin/env python
"""Prepare a video folder for training: ``python tools/preprocess.py SRC DST [options]``.

The same command as ``avssl preprocess`` (see ``--help``); ``--merge DST`` joins shards.
"""

import argparse
import sys

from avssl.preprocess.cli import DESCRIPTION, add_arguments, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="preprocess", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
