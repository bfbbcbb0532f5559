"""Argument types of the ``splitrl`` subcommands: bad values give a one-line error naming them.

Each is an argparse ``type`` (``parser.add_argument("--port", type=port_number)``); argparse turns
the :class:`argparse.ArgumentTypeError` into ``splitrl X: error: argument --port: ...``.
:class:`HelpFormatter` is the subcommands' help layout.
"""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Callable


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and help lines wrapped at spaces only: names such as
    ``sacd-hindsight-mpc-geometric`` or ``gilbert-elliott`` stay whole on one line."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(
            " ".join(text.split()), width, break_on_hyphens=False, break_long_words=False
        )


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` that accepts integers of at least ``minimum`` with a clear message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def port_number(text: str) -> int:
    """An argparse ``type`` for a TCP port, ``0..65535``."""
    port = integer_at_least(0)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is at most 65535, got {port}")
    return port


def positive_number(text: str) -> float:
    """An argparse ``type`` that accepts finite numbers above 0 with a clear message."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value
