"""``python -m benchmarks``: run every case module and print one table with PASS / MISS per target."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import platform
import subprocess
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from benchmarks.harness import QUICK_ROUNDS, ROUNDS, Result

HERE = Path(__file__).resolve().parent
#: Cheap, in-process cases first; the ones that start processes, servers and exporters last.
ORDER = ("decorator", "peer", "render", "logs", "health", "cardinality", "import", "export", "load", "edge")


def discover(only: set[str] | None) -> list[str]:
    topics = [p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py")]
    topics.sort(key=lambda t: (ORDER.index(t) if t in ORDER else len(ORDER), t))
    return [t for t in topics if only is None or t in only]


def _takes_quick(run: Any) -> bool:
    try:
        params = inspect.signature(run).parameters
    except (TypeError, ValueError):
        return False
    return "quick" in params or len(params) == 1


def _coerce(item: Any) -> Result:
    """A Result from a Result, a mapping or any object with the same field names."""
    if isinstance(item, Result):
        return item
    get = item.get if isinstance(item, Mapping) else lambda k, d=None: getattr(item, k, d)
    values = {f.name: get(f.name) for f in fields(Result)}
    values["case"] = str(values["case"] or get("name") or "?")
    values["what"] = str(values["what"] or get("title") or get("description") or "")
    values["ours"] = float(values["ours"] or 0.0)
    values["unit"] = values["unit"] or "s"
    values["rounds"] = int(values["rounds"] or 0)
    values["note"] = str(values["note"] or "")
    if values["ratio"] is None and values["anchor"]:
        values["ratio"] = values["ours"] / float(values["anchor"])
    values["target"] = str(values["target"] or "")
    values["passed"] = bool(values["passed"])
    return Result(**values)


def run_topic(topic: str, quick: bool) -> tuple[list[Result], str | None]:
    """The topic's results, or (nothing, the output or error to show instead)."""
    module_name = f"benchmarks.bench_{topic}"
    try:
        module = importlib.import_module(module_name)
        run = getattr(module, "run", None)
        if callable(run) and _takes_quick(run):
            return [_coerce(r) for r in run(quick)], None
    except Exception:
        return [], f"ERROR in {module_name}:\n{traceback.format_exc()}"
    takes_quick = "--quick" in (HERE / f"bench_{topic}.py").read_text()
    if quick and not takes_quick:
        return [], f"{module_name}: no run(quick) and no --quick option; skipped in a quick run"
    out = subprocess.run(
        [sys.executable, "-m", module_name, *(["--quick"] if quick else [])],
        capture_output=True, text=True, cwd=HERE.parent, timeout=1800,
    )
    text = f"{module_name} (run as a module, exit {out.returncode}):\n{out.stdout}{out.stderr}"
    return [], text if out.returncode == 0 else "ERROR " + text


def _seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.1f} us"
    return f"{value * 1e3:.2f} ms"


def _cells(r: Result) -> list[str]:
    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return _seconds(v) if r.unit == "s" else f"{v:.1f} {r.unit}"

    ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
    return [r.case, r.what, fmt(r.ours), fmt(r.anchor), ratio, r.target, r.verdict, r.note]


HEADER = ["case", "what", "ours", "anchor", "ratio", "target", "result", "note"]


def table(results: Iterable[Result], markdown: bool) -> str:
    rows = [HEADER, *(_cells(r) for r in results)]
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs{f' ({model})' if model else ''}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"tiny iteration counts, {QUICK_ROUNDS} rounds")
    parser.add_argument("--only", help="comma-separated topics, e.g. decorator,render (bench_<topic>.py)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    topics = discover(only)
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    print(f"victor_otel benchmarks: {machine()}")
    print(f"each figure is the median of {rounds} rounds (ratio: median of per-round ratios); "
          f"cases: {', '.join(topics)}", flush=True)
    results: list[Result] = []
    failed = False
    for topic in topics:
        got, text = run_topic(topic, args.quick)
        for r in got:
            print(f"  {r.case}: {r.verdict} "
                  f"{'' if r.ratio is None else f'ratio {r.ratio:.2f} '}({r.target})", flush=True)
        results += got
        if text:
            failed = failed or text.startswith("ERROR")
            print(text, flush=True)
    print()
    print(table(results, args.markdown))
    missed = [r.case for r in results if not r.passed and not r.info]
    passed = sum(r.passed and not r.info for r in results)
    info = sum(r.info for r in results)
    print(f"\n{passed} PASS, {len(missed)} MISS{' (' + ', '.join(missed) + ')' if missed else ''}, {info} info")
    if failed:
        return 2
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
