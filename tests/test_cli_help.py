"""Every command's --help shows each option's default."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from avssl.cli import COMMANDS, build_parser, main


def _options_without_default(parser: argparse.ArgumentParser, name: str
                             ) -> Iterator[tuple[str, list[str], object]]:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub_name, sub in a.choices.items():
                yield from _options_without_default(sub, f"{name} {sub_name}")
        elif (a.option_strings and a.default is not None and a.default is not False
              and a.default is not argparse.SUPPRESS and a.help is not argparse.SUPPRESS
              and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))):
            text = a.help or ""
            if "%(default)" not in text and "default" not in text.lower():
                yield name, a.option_strings, a.default


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_shows_every_default(command: str) -> None:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = list(_options_without_default(sub.choices[command], command))
    assert not missing, f"--help does not show these defaults: {missing}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_exits_0(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: avssl")
