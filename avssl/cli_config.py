"""`avssl config CONFIG [key=value ...]`: validate a config and print it fully resolved.

It checks everything `avssl train` checks about the config itself (keys, types, ranges, the
method name, the encoders' architectures and depths) but not the data paths, so a config can be
checked before its dataset is prepared; the commands that read a path check it.
"""

from __future__ import annotations

import argparse

import yaml

from avssl.config import Config, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")


def load_checked(path: str, overrides: list[str], require_paths: bool) -> Config:
    """``load_config`` plus the method/model checks of :func:`avssl.methods.check_config`,
    with errors naming the file."""
    from avssl.methods import check_config

    cfg = load_config(path, overrides, require_paths=require_paths)
    check_config(cfg, path + (" (with overrides)" if overrides else ""))
    return cfg


def run(args: argparse.Namespace) -> int:
    from avssl.methods import resolved_dict

    cfg = load_checked(args.config, args.overrides, require_paths=False)
    print(yaml.safe_dump(resolved_dict(cfg), sort_keys=False), end="")
    return 0
