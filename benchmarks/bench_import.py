"""Import: ``import victor_otel`` against the OTel SDK trace + metrics modules and the Prometheus exporter.

Each round starts two fresh interpreters (order alternating) that time the import statement itself in
CPU time of the importing thread (interpreter start-up excluded; the files are in the page cache after a
first warm-up import of each). Bytecode is cached on both sides, as after ``pip install``: the children
run without ``PYTHONDONTWRITEBYTECODE``, so the warm-up import writes victor_otel's ``__pycache__`` (an
editable install otherwise recompiles every module at every import while the SDK's bytecode is cached).
The child importing victor_otel also reports how many threads exist afterwards: importing must create
none. Target: ratio <= 1.2 and one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Result, compare_rounds, rounds_for

LIMIT = 1.2
OURS = "import victor_otel"
ANCHOR = "import opentelemetry.sdk.trace, opentelemetry.sdk.metrics, opentelemetry.exporter.prometheus"
_CHILD = (
    "import threading, time, json\n"
    "start = time.thread_time()\n"
    "{statement}\n"
    "elapsed = time.thread_time() - start\n"
    "print(json.dumps([elapsed, threading.active_count()]))\n"
)


def _time_import(statement: str) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(statement=statement)],
        capture_output=True, text=True, timeout=60, check=True, cwd=Path(__file__).resolve().parents[1], env=env,
    )
    elapsed, threads = json.loads(out.stdout.strip().splitlines()[-1])
    return float(elapsed), int(threads)


def run(quick: bool) -> list[Result]:
    threads: list[int] = []

    def one_round(i: int) -> tuple[float, float]:
        if i % 2:
            anchor, _ = _time_import(ANCHOR)
            ours, n = _time_import(OURS)
        else:
            ours, n = _time_import(OURS)
            anchor, _ = _time_import(ANCHOR)
        threads.append(n)
        return ours, anchor

    _time_import(OURS)  # warm the file-system cache and .pyc files
    _time_import(ANCHOR)
    c = compare_rounds(one_round, rounds_for(quick))
    no_thread = max(threads) == 1
    return [
        Result(
            case="import", what="import victor_otel vs OTel SDK trace + metrics + Prometheus exporter",
            ours=c.ours, anchor=c.anchor, target=f"<= {LIMIT:g}, no thread", passed=c.ratio <= LIMIT and no_thread,
            rounds=c.rounds, ratio=c.ratio, note=f"threads after import: {max(threads)}",
        )
    ]
