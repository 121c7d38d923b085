"""``victor-otel metrics``: the metric contract as a table, as JSON (``--json``) or Markdown."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from victor_otel import instruments
from victor_otel.cli.common import EXIT_OK
from victor_otel.terminal import color_enabled, styled


def add_parser(commands: Any) -> None:
    """Add ``metrics`` to the ``victor-otel`` sub-commands."""
    parser = commands.add_parser(
        "metrics",
        help="print the metric contract: every family, its type, labels and unit",
        description="Print every metric family victor_otel produces (the names alerts and dashboards use) "
        "with its type, labels, unit and meaning, as a table, as JSON for tooling, or as Markdown.",
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="a JSON list of objects, one per family")
    shape.add_argument("--markdown", action="store_true", help="the Markdown table of the README")
    parser.set_defaults(run=run_metrics)


def contract_as_json() -> list[dict[str, Any]]:
    """The metric contract as plain data (``victor-otel metrics --json``)."""
    return [
        {
            "name": spec.prometheus_name,
            "otel_name": spec.otel_name,
            "type": spec.kind.value,
            "unit": spec.unit,
            "labels": list(spec.labels),
            "description": spec.description,
            "buckets": list(spec.buckets) if spec.buckets is not None else None,
            "samples": list(spec.sample_names),
        }
        for spec in instruments.CONTRACT
    ]


def run_metrics(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.json:
        print(json.dumps(contract_as_json(), indent=2), file=out)
        return EXIT_OK
    if args.markdown:
        out.write(instruments.markdown_table())
        return EXIT_OK
    color = color_enabled(out)
    header = ("NAME", "TYPE", "LABELS", "UNIT", "DESCRIPTION")
    rows = [
        (spec.prometheus_name, spec.kind.value, ",".join(spec.labels) or "-", spec.unit or "-", spec.description)
        for spec in instruments.CONTRACT
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    for index, row in enumerate((header, *rows)):
        cells = [f"{cell:<{width}}" for cell, width in zip(row[:4], widths, strict=True)]
        line = "  ".join([*cells, row[4]])
        print(styled(line, "bold", color) if index == 0 else line, file=out)
    return EXIT_OK

