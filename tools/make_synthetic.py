"""Generate the synthetic audio-visual dataset (same as `avssl make-synthetic`).

    python tools/make_synthetic.py DST [--num-videos N] [--classes K] [--seed S]
                                       [--duration D] [--size WxH|N] [--workers W]
"""

from __future__ import annotations

import argparse
import sys

from avssl.data.synthetic import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_synthetic", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
