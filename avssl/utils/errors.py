"""Errors for bad user input, at the bottom so every layer can raise them."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user (a path, an argument): the CLI prints it as one line and exits
    with code 2, without a traceback."""
