"""L1 / L2: the cost of one structured log record, and of execution logging in the decorators.

- L1: one JSON record with correlation (``trace_id`` / ``span_id`` from the current span, ``request_id``
  from baggage) and redaction (every string scanned, a secret-named extra replaced), through a
  ``StreamHandler`` to a discarding stream, against python-json-logger's ``JsonFormatter`` on the same
  record through the same handler (configured for the same visible fields: ``timestamp``, ``level``,
  ``logger``, ``message`` and the extras; it does no correlation and no redaction). Target: ratio <= 0.8.
- L2: one decorated call (metrics only, tracing off, the cheapest mode) with logging set up at INFO, so
  the execution hook runs and finds its DEBUG success record disabled, against the same call with no
  logging set up. Budget: ratio <= 1.25, the hook (a dict lookup and ``isEnabledFor``) costing at most a
  quarter of the cheapest decorated call; next to a span (tens of microseconds) it is a few percent.

Both sides are timed in this process, interleaved round by round (alternating which goes first), with
the process's CPU time: on a busy shared machine, time spent waiting for a CPU would otherwise land on
whichever side was running. The ratio is the median of the per-round ratios.

Run ``python -m benchmarks.bench_logs`` (``--quick`` for tiny counts). :func:`run` returns one dict per
case with the fields of ``benchmarks.harness.Result``.
"""

from __future__ import annotations

import gc
import io
import logging
import statistics
import sys
from collections.abc import Callable
from time import process_time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from pythonjsonlogger.json import JsonFormatter as AnchorJsonFormatter

import victor_otel
from victor_otel import decorators, logs
from victor_otel.registry import get_registry

L1_LIMIT = 0.8
L2_LIMIT = 1.25
_ROUNDS, _QUICK_ROUNDS = 21, 2


class _Sink(io.TextIOBase):
    """A text stream that keeps nothing: both formatters pay the same (tiny) write."""

    def write(self, s: str) -> int:
        return len(s)


def _anchor_formatter() -> logging.Formatter:
    return AnchorJsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


def _records(logger: logging.Logger, number: int) -> list[logging.LogRecord]:
    extra = {
        "user_id": "u-1842",
        "model": "gpt-4o-mini",
        "prompt_tokens": 512,
        "tool": "web_search",
        "api_key": "sk-live-0123456789abcdefghijklmnop",
    }
    return [
        logger.makeRecord(
            logger.name, logging.INFO, __file__, 1, "Processing request %s in %s", ("r-42", "chat"), None,
            "bench", extra,
        )
        for _ in range(number)
    ]


def _time_handle(handler: logging.Handler, records: list[logging.LogRecord]) -> float:
    handle = handler.handle
    start = process_time()
    for record in records:
        handle(record)
    return (process_time() - start) / len(records)


def _summary(case: str, what: str, pairs: list[tuple[float, float]], limit: float, note: str) -> dict[str, Any]:
    ratio = statistics.median(o / a for o, a in pairs)
    return {
        "case": case,
        "what": what,
        "ours": statistics.median(o for o, _ in pairs),
        "anchor": statistics.median(a for _, a in pairs),
        "ratio": ratio,
        "target": f"<= {limit:g}",
        "passed": ratio <= limit,
        "rounds": len(pairs),
        "unit": "s",
        "note": note,
    }


def compare_json(iterations: int = 5_000, rounds: int = _ROUNDS) -> dict[str, Any]:
    """L1: seconds per record for our JSON formatter and for python-json-logger's, and their ratio."""
    logs.teardown_coordinator_logging()  # the default redactor, no hook
    logger = logging.getLogger("victor.coordinators.BenchCoordinator")
    handler = logging.StreamHandler(_Sink())
    ours, anchor = logs.JsonFormatter(), _anchor_formatter()
    tracer = TracerProvider().get_tracer("bench")
    pairs: list[tuple[float, float]] = []
    with tracer.start_as_current_span("bench"), victor_otel.request_context("bench-request-1"):
        sample = _records(logger, 1)[0]
        if '"trace_id":null' in ours.format(sample) or "sk-live" in ours.format(sample):
            raise AssertionError("the benchmark record must be correlated and redacted")
        for formatter in (ours, anchor):  # warm-up
            handler.setFormatter(formatter)
            _time_handle(handler, _records(logger, max(1, iterations // 10)))
        for i in range(rounds):
            timings = {}
            for formatter in ((anchor, ours) if i % 2 else (ours, anchor)):
                records = _records(logger, iterations)
                handler.setFormatter(formatter)
                gc.collect()
                timings[id(formatter)] = _time_handle(handler, records)
            pairs.append((timings[id(ours)], timings[id(anchor)]))
    return _summary(
        "L1", "one JSON log record, correlated + redacted, vs python-json-logger", pairs, L1_LIMIT,
        "same record, same StreamHandler",
    )


def _time_calls(func: Callable[[int], int], number: int) -> float:
    start = process_time()
    for i in range(number):
        func(i)
    return (process_time() - start) / number


def _step(x: int) -> int:
    return x


def decorator_overhead(iterations: int = 50_000, rounds: int = _ROUNDS) -> dict[str, Any]:
    """L2: a decorated call with logging set up (success records disabled) vs without logging."""
    victor_otel.shutdown()
    get_registry().reset()
    logs.teardown_coordinator_logging()
    call = victor_otel.instrument("BenchCoordinator", "step")(_step)
    sink = _Sink()
    pairs: list[tuple[float, float]] = []
    try:
        _time_calls(call, max(1, iterations // 10))
        for i in range(rounds):
            timings: dict[str, float] = {}
            for side in (("off", "on") if i % 2 else ("on", "off")):
                if side == "on":
                    victor_otel.setup_coordinator_logging(level="INFO", stream=sink)
                else:
                    logs.teardown_coordinator_logging()
                gc.collect()
                timings[side] = _time_calls(call, iterations)
            pairs.append((timings["on"], timings["off"]))
    finally:
        logs.teardown_coordinator_logging()
        get_registry().reset()
    assert decorators._runtime.on_execution is None
    return _summary(
        "L2", "decorated call, metrics only: logging set up (hook, record disabled) vs none", pairs, L2_LIMIT,
        "the execution hook on the hot path, record disabled",
    )


def enabled_record_cost(iterations: int = 20_000, rounds: int = 3) -> float:
    """Seconds per decorated call when every execution writes a JSON record (success level INFO)."""
    get_registry().reset()
    call = victor_otel.instrument("BenchCoordinator", "step")(_step)
    victor_otel.setup_coordinator_logging(level="INFO", success_level="INFO", stream=_Sink())
    try:
        return statistics.median(_time_calls(call, iterations) for _ in range(rounds))
    finally:
        logs.teardown_coordinator_logging()
        get_registry().reset()


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Every case of this module, as dicts with the fields of ``benchmarks.harness.Result``."""
    rounds = _QUICK_ROUNDS if quick else _ROUNDS
    return [
        compare_json(iterations=200 if quick else 5_000, rounds=rounds),
        decorator_overhead(iterations=500 if quick else 50_000, rounds=rounds),
    ]


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    results = run(quick=quick)
    for r in results:
        print(
            f"{r['case']:<4} {r['what']}\n     ours {r['ours'] * 1e6:8.2f} us   anchor {r['anchor'] * 1e6:8.2f} us"
            f"   ratio {r['ratio']:.3f} (target {r['target']}: {'PASS' if r['passed'] else 'MISS'}, "
            f"median of {r['rounds']} rounds)"
        )
    enabled = enabled_record_cost(iterations=200 if quick else 20_000)
    print(f"     decorated call writing one JSON record per execution: {enabled * 1e6:.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
