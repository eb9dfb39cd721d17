"""`avssl config CONFIG [key=value ...]`: validate a config and print it fully resolved.

It checks everything `avssl train` checks about the config itself (keys, types, ranges, the
method name, the encoders' architectures and depths) but not the data paths, so a config can be
checked before its dataset is prepared; the commands that read a path check it.
"""

from __future__ import annotations

import argparse

from avssl.config import Config, ConfigError, dump_config, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")


def load_checked(path: str, overrides: list[str], require_paths: bool) -> Config:
    """``load_config`` plus the method/model checks of :func:`avssl.methods.check_config`,
    with errors naming the file."""
    from avssl.methods import check_config

    cfg = load_config(path, overrides, require_paths=require_paths)
    try:
        check_config(cfg)
    except ConfigError as e:
        src = path + (" (with overrides)" if overrides else "")
        raise ConfigError(f"{src}: {e}") from None
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = load_checked(args.config, args.overrides, require_paths=False)
    print(dump_config(cfg), end="")
    return 0
