"""The benchmark suite still runs (tiny iteration counts); its timings are never asserted here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("P1", "P1 bare", "P1 debug", "P1 async", "P1 async bare", "P1 peer logfire", "P1 peer traceloop",
         "P1 peer openlit", "P2", "P2 async", "P3", "P5", "P5b", "P6", "import", "H1", "H2", "H3")


def test_every_case_runs_and_reports_a_verdict() -> None:
    # A child process: the cases install tracer providers and start servers this test run must not inherit.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for case in CASES:  # a table row: the case, its figures, then PASS or MISS (info: a row with no target)
        assert re.search(rf"^{re.escape(case)}\s{{2,}}.*\s(PASS|MISS|info)\b", out.stdout, re.M), out.stdout
    assert re.search(r"^\d+ PASS, \d+ MISS.*, \d+ info$", out.stdout, re.M), out.stdout


def test_table_renders_results_of_any_shape() -> None:
    from benchmarks.__main__ import _coerce, table
    from benchmarks.harness import Result

    ours = Result(case="X", what="w", ours=2e-6, anchor=1e-6, target="<= 1", passed=False, rounds=3, ratio=2.0)
    theirs = _coerce({"case": "L1", "what": "log", "ours": 1e-6, "anchor": 2e-6, "target": "<= 0.8",
                      "passed": True, "rounds": 2})
    assert theirs.ratio == 0.5
    text = table([ours, theirs], markdown=True)
    assert "| X | w | 2.0 us | 1.0 us | 2.00 | <= 1 | MISS |" in text
    assert "| L1 | log | 1.0 us | 2.0 us | 0.50 | <= 0.8 | PASS |" in text


def test_an_info_row_has_no_target_and_is_never_a_miss() -> None:
    from benchmarks.__main__ import table
    from benchmarks.harness import INFO, Comparison, info_result

    row = info_result("P1 bare", "vs a bare span", Comparison(ours=3e-6, anchor=2e-6, ratio=1.5, rounds=2))
    assert row.target == INFO and row.info and row.verdict == "info" and row.passed
    assert "| P1 bare | vs a bare span | 3.0 us | 2.0 us | 1.50 | - | info |" in table([row], markdown=True)
