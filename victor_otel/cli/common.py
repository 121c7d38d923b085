"""What the commands share: exit statuses and argument types."""

from __future__ import annotations

import argparse

#: Exit statuses of ``victor-otel check`` (2 is also argparse's for a bad command line).
EXIT_OK, EXIT_PROBLEM, EXIT_BAD_VALUE = 0, 1, 2
#: Exit status when standard output was closed by its reader (128 + SIGPIPE, as a shell reports it).
EXIT_BROKEN_PIPE = 141


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value
