"""``victor-otel``: the command line, one module per command.

- ``victor-otel demo`` (:mod:`victor_otel.cli.demo`): a demo app with three coordinators under synthetic load,
  serving ``/metrics``, with a live one-line summary (calls, errors, p95) on a terminal and one plain line a
  second otherwise.
- ``victor-otel check`` (:mod:`victor_otel.cli.check`): the effective configuration and where each value came
  from, validated; the OTLP endpoint and the metrics port tried. Exit status 0 when everything is fine, 1 when
  a check fails, 2 for a bad value.
- ``victor-otel metrics`` (:mod:`victor_otel.cli.metrics`): the metric contract as a table, as JSON
  (``--json``) or Markdown.

This module holds the parser and :func:`main` (the ``victor-otel`` console script); the names below are
re-exported so that ``from victor_otel.cli import ...`` works as it did when the command line was one module.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from victor_otel._version import __version__
from victor_otel.cli import check, demo, metrics
from victor_otel.cli.check import (
    FAIL,
    OK,
    SKIP,
    WARN,
    Finding,
    _is_secret,
    flag,
    probe_otlp,
    probe_port,
    run_check,
    run_checks,
    shown_source,
    shown_value,
)
from victor_otel.cli.common import EXIT_BAD_VALUE, EXIT_BROKEN_PIPE, EXIT_OK, EXIT_PROBLEM
from victor_otel.cli.demo import DEMO_EXTRA, _summary_line, run_demo, summary_segments
from victor_otel.cli.metrics import contract_as_json, run_metrics
from victor_otel.cli.output import CLEAR_LINE, Segment, StatusLine
from victor_otel.terminal import color_enabled, styled

__all__ = [
    "CLEAR_LINE",
    "DEMO_EXTRA",
    "EXIT_BAD_VALUE",
    "EXIT_BROKEN_PIPE",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "FAIL",
    "OK",
    "SKIP",
    "WARN",
    "Finding",
    "Segment",
    "StatusLine",
    "_is_secret",
    "_summary_line",
    "build_parser",
    "color_enabled",
    "contract_as_json",
    "flag",
    "main",
    "probe_otlp",
    "probe_port",
    "run_check",
    "run_checks",
    "run_demo",
    "run_metrics",
    "shown_source",
    "shown_value",
    "styled",
    "summary_segments",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="victor-otel",
        description="victor_otel command line: run the demo, check a configuration, list the metric contract.",
        epilog="Run 'victor-otel COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"victor-otel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (demo, check, metrics):  # each adds its sub-parser, with ``run`` set to what runs it
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can be caught, not at interpreter exit
        return status
    except BrokenPipeError:
        # The reader went away (``victor-otel metrics | head``): stop quietly, as other commands do. Standard
        # output is pointed at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status
