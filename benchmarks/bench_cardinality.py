"""P5: 1,000,000 calls over 100,000 distinct method names stay within the cardinality cap.

P5b: 100,000 distinct *coordinator* names through the seed's ``track_execution`` with
``setup_coordinator_logging`` active (records filtered out, as at the default success level): past the cap
nothing a name can create is kept (series, loggers), RSS growth stays bounded, and a call past the cap
costs at most 1.2x a call within it (both timed on the thread's CPU clock in the same child process,
interleaved): past the cap a call takes no registry-wide lock, nor the logging module's.

``track("BenchCoordinator", name)`` with 100,000 names, 1,000,000 calls, metrics only, default cap
(1,000). Checked afterwards: ``/metrics`` shows exactly cap + 1 ``executions_total`` series (the extra
one being the ``otel_metric_overflow="true"`` series), every call is counted, and resident memory grew
by at most 20 MB (psutil RSS, after ``gc.collect()``, the name list built before the first reading).

It runs in a child process (``python -m benchmarks.bench_cardinality --child``) so that the RSS figure is
this case's own, not what earlier cases left in the allocator.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path
from time import perf_counter, thread_time

from benchmarks.harness import Result

CALLS, NAMES, CAP, GROWTH_MB = 1_000_000, 100_000, 1_000, 20.0
PAST_CAP_RATIO = 1.2
EXECUTIONS = "victor_coordinator_executions_total"


def _child(calls: int, names: int) -> dict[str, float]:
    import psutil
    from prometheus_client.parser import text_string_to_metric_families

    import victor_otel

    victor_otel.init(service_name="bench", traces_exporter="none", cardinality_limit=CAP)
    method_names = [f"method_{i}" for i in range(names)]
    for name in method_names[:10]:  # warm every code path once before the first reading
        with victor_otel.track("BenchCoordinator", name):
            pass
    victor_otel.render()
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    start = perf_counter()
    for i in range(calls):
        with victor_otel.track("BenchCoordinator", method_names[i % names]):
            pass
    elapsed = perf_counter() - start
    body = victor_otel.render()[0].decode()
    gc.collect()
    after = process.memory_info().rss
    series = 0
    counted = 0.0
    overflow = 0
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == EXECUTIONS:
                series += 1
                counted += sample.value
                overflow += sample.labels.get("otel_metric_overflow") == "true"
    victor_otel.shutdown()
    return {
        "growth_mb": (after - before) / 2**20, "series": series, "overflow_series": overflow,
        "counted": counted - 10, "calls": calls, "per_call_s": elapsed / calls,
    }


def _coordinators_child(names: int) -> dict[str, float]:
    import io
    import logging

    import psutil

    import victor_otel

    victor_otel.init(service_name="bench", traces_exporter="none", cardinality_limit=CAP)
    victor_otel.setup_coordinator_logging(level="INFO", stream=io.StringIO())  # successes are DEBUG: filtered
    collector = victor_otel.get_coordinator_metrics_collector()
    admitted = [f"Admitted{i}" for i in range(CAP)]
    past = [f"Past{i}" for i in range(names)]
    for name in admitted:
        collector.track_execution(name, 1.0)
    victor_otel.render()
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    within_s = past_s = 0.0
    chunk = max(1, names // 10)
    for start in range(0, names, chunk):  # interleaved: both see the same machine
        t = thread_time()  # CPU time: time descheduled while other processes run is not a call's cost
        for i in range(start, start + chunk):
            collector.track_execution(admitted[i % CAP], 1.0)
        within_s += thread_time() - t
        t = thread_time()
        for name in past[start:start + chunk]:
            collector.track_execution(name, 1.0)
        past_s += thread_time() - t
    body = victor_otel.render()[0].decode()
    gc.collect()
    after = process.memory_info().rss
    series = sum(line.startswith(EXECUTIONS + "{") for line in body.splitlines())
    loggers = sum(n.startswith("victor.coordinators.") for n in logging.Logger.manager.loggerDict)
    victor_otel.teardown_coordinator_logging()
    victor_otel.shutdown()
    return {"growth_mb": (after - before) / 2**20, "series": series, "loggers": loggers,
            "within_s": within_s / names, "past_s": past_s / names}


def run(quick: bool) -> list[Result]:
    calls, names = (20_000, 2_000) if quick else (CALLS, NAMES)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_cardinality", "--child", str(calls), str(names)],
        capture_output=True, text=True, timeout=600, check=True, cwd=root,
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    past_names = 5_000 if quick else NAMES
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_cardinality", "--coordinators", str(past_names)],
        capture_output=True, text=True, timeout=600, check=True, cwd=root,
    )
    c = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = c["past_s"] / c["within_s"]
    past_ok = ratio <= PAST_CAP_RATIO and c["series"] == CAP + 1 and c["loggers"] <= CAP and (
        c["growth_mb"] <= GROWTH_MB)
    ok = (
        m["growth_mb"] <= GROWTH_MB and m["series"] == CAP + 1 and m["overflow_series"] == 1
        and m["counted"] == m["calls"]
    )
    return [
        Result(
            case="P5", what=f"{calls:,} calls over {names:,} method names: RSS growth",
            ours=m["growth_mb"], anchor=None, target=f"<= {GROWTH_MB:g} MB, {CAP + 1} series",
            passed=ok, rounds=1, unit="MB",
            note=f"{int(m['series'])} series ({int(m['overflow_series'])} overflow), "
            f"{m['per_call_s'] * 1e6:.1f} us/call",
        ),
        Result(
            case="P5b", what=f"{past_names:,} coordinator names past the cap (track_execution, logging on): "
            "a call past the cap vs one within it",
            ours=c["past_s"], anchor=c["within_s"], target=f"<= {PAST_CAP_RATIO:g}, {CAP + 1} series, "
            f"<= {CAP} loggers, <= {GROWTH_MB:g} MB", passed=past_ok, rounds=1, ratio=ratio,
            note=f"{int(c['series'])} series, {int(c['loggers'])} loggers, RSS +{c['growth_mb']:.1f} MB",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--coordinators", action="store_true")
    parser.add_argument("calls", type=int, nargs="?", default=CALLS)
    parser.add_argument("names", type=int, nargs="?", default=NAMES)
    args = parser.parse_args()
    if args.coordinators:
        print(json.dumps(_coordinators_child(args.calls)))
    elif args.child:
        print(json.dumps(_child(args.calls, args.names)))
    else:
        for result in run(quick=False):
            print(result)


if __name__ == "__main__":
    main()
