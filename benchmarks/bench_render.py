"""P3: rendering ``/metrics`` with 1,000 coordinator x method label sets.

Ours: ``victor_otel.render()`` (one full collection: the MeterProvider's observable process gauges, the
pre-aggregated coordinator families, ``target_info``), after 100 coordinators x 10 methods were each
called through ``track``. Anchor: prometheus_client's ``generate_latest`` over a registry holding the
same families and label sets (executions and duration counters, the latency histogram with the same
buckets, the two per-coordinator window gauges, the three process gauges), ``_created`` series off as
in our output. Our text also holds what else victor_otel exports (``target_info``, health statuses).
Target: ratio <= 1.0.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)

import victor_otel
from benchmarks.harness import Result, compare, ratio_result, rounds_for
from victor_otel import instruments as contract
from victor_otel.registry import get_registry

COORDINATORS, METHODS = 100, 10
LIMIT = 1.0


def _label_sets(coordinators: int, methods: int) -> list[tuple[str, str]]:
    return [(f"Coordinator{c:03d}", f"method_{m}") for c in range(coordinators) for m in range(methods)]


def _anchor_registry(label_sets: list[tuple[str, str]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    labels = ("coordinator", "method")
    executions = Counter("victor_coordinator_executions", contract.EXECUTIONS.description, labels,
                         registry=registry)
    duration = Counter("victor_coordinator_duration_seconds", contract.DURATION.description, labels,
                       registry=registry)
    latency = Histogram("victor_coordinator_latency_seconds", contract.LATENCY.description, labels,
                        buckets=contract.LATENCY_BUCKETS, registry=registry)
    throughput = Gauge("victor_coordinator_throughput", contract.THROUGHPUT.description, ("coordinator",),
                       registry=registry)
    error_rate = Gauge("victor_coordinator_error_rate", contract.ERROR_RATE.description, ("coordinator",),
                       registry=registry)
    for spec in (contract.MEMORY, contract.CPU, contract.UPTIME):
        Gauge(spec.prometheus_name, spec.description, registry=registry).set(1.0)
    for coordinator, method in label_sets:
        for d in (0.003, 0.04, 0.7):
            executions.labels(coordinator, method).inc()
            duration.labels(coordinator, method).inc(d)
            latency.labels(coordinator, method).observe(d)
        throughput.labels(coordinator).set(0.05)
        error_rate.labels(coordinator).set(0.0)
    return registry


def _fill_ours(label_sets: list[tuple[str, str]]) -> None:
    for coordinator, method in label_sets:
        for _ in range(3):
            with victor_otel.track(coordinator, method):
                pass


def run(quick: bool) -> list[Result]:
    rounds = rounds_for(quick)
    label_sets = _label_sets(*((10, 10) if quick else (COORDINATORS, METHODS)))
    disable_created_metrics()  # our output has no _created series: the anchor renders none either
    try:
        victor_otel.shutdown()
        get_registry().reset()
        victor_otel.init(service_name="bench", traces_exporter="none")
        _fill_ours(label_sets)
        anchor_registry = _anchor_registry(label_sets)
        ours_lines = victor_otel.render()[0].count(b"\n")
        anchor_lines = generate_latest(anchor_registry).count(b"\n")
        c = compare(victor_otel.render, lambda: generate_latest(anchor_registry), number=1 if quick else 3,
                    rounds=rounds)
    finally:
        enable_created_metrics()
        victor_otel.shutdown()
        get_registry().reset()
    return [
        ratio_result(
            "P3", f"render /metrics, {len(label_sets):,} label sets vs generate_latest", c, LIMIT,
            note=f"{ours_lines:,} vs {anchor_lines:,} lines (ours adds target_info and health)",
        )
    ]
