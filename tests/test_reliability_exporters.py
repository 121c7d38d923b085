"""Exporter faults over real sockets: a collector that is down, hangs, answers 500 / 429, or flaps.

Whatever the collector does, the application's calls return at once and never raise, the export queue
stays within ``max_queue_size``, every span, log record and metric point is accounted for exactly once
in ``victor_otel_exported_total{signal,outcome}`` (success, failure or dropped), ``shutdown()`` stays
within its budget, and exporting resumes when the collector comes back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import victor_otel
from tests.conftest import scrape, value
from tests.faults import FaultServer, free_port, wait_for
from victor_otel.logs import OTelBridgeHandler

EXPORTED = "victor_otel_exported_total"


@victor_otel.instrument(coordinator="FaultCoordinator", method="work")
def work(i: int) -> int:
    return i


@pytest.fixture(autouse=True)
def _fast_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches leave 20 ms after the first item instead of 5 s (the SDK reads these at construction).
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "20")


@pytest.fixture
def collector() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def start(endpoint: str, **settings: Any) -> victor_otel.Telemetry:
    arguments: dict[str, Any] = {
        "service_name": "faults", "traces_exporter": "otlp", "metrics_exporter": "prometheus",
        "otlp_endpoint": endpoint, "export_timeout": 0.5, "shutdown_timeout": 5.0,
    }
    arguments.update(settings)
    return victor_otel.init(**arguments)


def calls(n: int) -> float:
    """Make ``n`` instrumented calls; return the slowest one's duration in seconds."""
    slowest = 0.0
    for i in range(n):
        began = time.perf_counter()
        assert work(i) == i
        slowest = max(slowest, time.perf_counter() - began)
    return slowest


def traces(telemetry: victor_otel.Telemetry) -> dict[str, Any]:
    return telemetry.export_stats()["traces"]


def settled(telemetry: victor_otel.Telemetry, n: int) -> bool:
    s = traces(telemetry)
    return bool(s["success"] + s["failure"] + s["dropped"] == n)


def test_a_healthy_collector_gets_every_span_and_the_counter_says_so(collector: FaultServer) -> None:
    telemetry = start(collector.url)
    calls(200)
    wait_for(lambda: len(collector.span_names) == 200, what="200 spans at the collector")
    assert collector.span_names == ["FaultCoordinator.work"] * 200
    # Counted when the exporter gets the answer, a moment after the collector has the spans.
    wait_for(lambda: traces(telemetry)["success"] == 200, what="200 exported spans counted")
    stats = traces(telemetry)
    assert (stats["success"], stats["failure"], stats["dropped"]) == (200, 0, 0)
    assert stats["consecutive_failures"] == 0 and stats["last_success"] is not None
    samples = scrape()
    assert value(samples, EXPORTED, signal="traces", outcome="success") == 200
    assert value(samples, EXPORTED, signal="traces", outcome="failure") == 0
    assert value(samples, EXPORTED, signal="traces", outcome="dropped") == 0


def test_collector_down_costs_the_application_nothing_and_export_resumes_when_it_is_back() -> None:
    server = FaultServer(port=free_port())  # not started: connection refused
    telemetry = start(server.url)
    try:
        slowest = calls(100)
        assert slowest < 0.5, f"a call took {slowest:.3f} s while the collector was down"
        wait_for(lambda: traces(telemetry)["failure"] == 100, what="100 failed spans")
        stats = traces(telemetry)
        assert stats["success"] == 0 and stats["dropped"] == 0
        assert stats["consecutive_failures"] >= 1 and stats["last_error"]
        assert value(scrape(), EXPORTED, signal="traces", outcome="failure") == 100

        server.start()  # the collector comes back on the same address
        calls(50)
        wait_for(lambda: len(server.span_names) == 50, what="50 spans after the collector came back")
        wait_for(lambda: traces(telemetry)["success"] == 50, what="50 exported spans counted")
        assert traces(telemetry)["consecutive_failures"] == 0
    finally:
        server.stop()


def test_a_collector_that_never_answers_costs_one_export_timeout_per_batch(collector: FaultServer) -> None:
    collector.mode = "hang"
    telemetry = start(collector.url, export_timeout=0.3)
    slowest = calls(20)
    assert slowest < 0.3
    wait_for(lambda: traces(telemetry)["failure"] == 20, what="20 spans lost to timeouts")
    assert collector.count("traces") >= 1

    calls(20)  # buffered while the last batch may still hang: shutdown must not wait longer than its budget
    began = time.monotonic()
    victor_otel.shutdown(timeout=1.0)
    assert time.monotonic() - began < 1.0 + 1.5


@pytest.mark.parametrize(
    ("mode", "retry_after", "requests"),
    [
        ("error", None, (1, 1)),      # 500: not retryable, one request
        ("throttle", None, (1, 1)),   # 429: the first backoff (1 s) is beyond the 0.5 s deadline
        # 429 + Retry-After: 0: retried by exporters that honour it (1.45), at most the exporter's 6 attempts;
        # older ones (1.43) back off 1 s, beyond the deadline: one request. Failed in time either way.
        ("throttle", 0, (1, 6)),
    ],
)
def test_500_and_429_fail_the_batch_within_the_timeout(
    collector: FaultServer, monkeypatch: pytest.MonkeyPatch, mode: str, retry_after: int | None,
    requests: tuple[int, int],
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # one batch, sent by force_flush
    collector.mode, collector.retry_after = mode, retry_after
    telemetry = start(collector.url)
    calls(10)
    began = time.monotonic()
    telemetry.tracer_provider.force_flush()
    assert time.monotonic() - began < 0.5 + 1.0
    assert traces(telemetry)["failure"] == 10
    status = 500 if mode == "error" else 429
    low, high = requests
    assert low <= collector.count("traces", status) <= high
    assert collector.span_names == []


def test_shutdown_stops_retrying_a_throttling_collector_within_its_budget(collector: FaultServer) -> None:
    collector.mode = "throttle"  # 429 without Retry-After: backoff 1 s, 2 s, 4 s... within a 30 s export timeout
    telemetry = start(collector.url, export_timeout=30.0, shutdown_timeout=1.0)
    calls(10)
    wait_for(lambda: collector.count("traces", 429) >= 1, what="a first throttled export")
    began = time.monotonic()
    # Within the budget whatever the exporter does: 1.45's retry loop is abandoned (False), 1.43's exporter
    # aborts its backoff when shut down and fails the batch in time (True). Never the 30 s export timeout.
    victor_otel.shutdown()
    assert time.monotonic() - began < 1.0 + 1.5
    # The abandoned exporter stops its retries at once instead of trying for 30 s.
    wait_for(lambda: traces(telemetry)["failure"] == 10, timeout=5, what="the retried batch given up")


def test_a_flapping_collector_loses_only_the_batches_it_refused(collector: FaultServer) -> None:
    collector.mode = "flap"  # ok, 500, ok, 500...
    telemetry = start(collector.url)
    for _ in range(10):
        calls(20)
        telemetry.tracer_provider.force_flush()
    wait_for(lambda: settled(telemetry, 200), what="all 200 spans accounted for")
    stats = traces(telemetry)
    assert stats["success"] > 0 and stats["failure"] > 0 and stats["dropped"] == 0
    assert len(collector.span_names) == stats["success"]  # nothing counted that did not arrive, nor twice
    collector.mode = "ok"
    calls(20)
    wait_for(lambda: traces(telemetry)["success"] == stats["success"] + 20, what="export after flapping")


def test_a_full_queue_drops_and_counts_and_memory_stays_bounded(collector: FaultServer) -> None:
    collector.mode = "hang"
    telemetry = start(collector.url, export_timeout=0.3, max_queue_size=50)
    longest_queue = 0
    slowest = 0.0
    for _ in range(20):
        slowest = max(slowest, calls(100))
        longest_queue = max(longest_queue, traces(telemetry)["queued"])
    assert traces(telemetry)["queue_capacity"] == 50
    assert longest_queue <= 50
    assert slowest < 0.3
    assert traces(telemetry)["dropped"] >= 2000 - 3 * 50  # the queue, a batch in flight, one being formed
    assert value(scrape(), EXPORTED, signal="traces", outcome="dropped") == traces(telemetry)["dropped"]
    assert victor_otel.shutdown(timeout=10) is True
    assert settled(telemetry, 2000)  # every span is exactly one of: exported, failed, dropped


def test_log_records_are_counted_when_the_collector_fails_and_when_the_queue_is_full(
    collector: FaultServer,
) -> None:
    handler = OTelBridgeHandler()
    logger = logging.getLogger("tests.reliability.faults")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        telemetry = start(collector.url, traces_exporter="none", logs_exporter="otlp", max_queue_size=20,
                          export_timeout=0.3)
        for i in range(10):
            logger.info("record %d", i)
        wait_for(lambda: len(collector.log_bodies) == 10, what="10 log records at the collector")
        wait_for(lambda: telemetry.export_stats()["logs"]["success"] == 10, what="10 exported records counted")

        collector.mode = "error"
        for i in range(10):
            logger.info("refused %d", i)
        wait_for(lambda: telemetry.export_stats()["logs"]["failure"] == 10, what="10 refused records")

        collector.mode = "hang"
        for i in range(500):
            logger.info("flood %d", i)
        logs = telemetry.export_stats()["logs"]
        assert logs["queued"] <= 20 and logs["dropped"] >= 500 - 3 * 20
        assert victor_otel.shutdown(timeout=10) is True
        logs = telemetry.export_stats()["logs"]
        assert logs["success"] + logs["failure"] + logs["dropped"] == 520
    finally:
        logger.removeHandler(handler)


def test_metric_points_pushed_over_otlp_are_counted_and_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FaultServer(port=free_port())
    telemetry = start(server.url, traces_exporter="none", metrics_exporter="otlp", metric_export_interval=100)
    try:
        calls(5)
        wait_for(lambda: telemetry.export_stats()["metrics"]["failure"] > 0, what="a failed metrics push")
        assert telemetry.export_stats()["metrics"]["success"] == 0
        server.start()
        wait_for(lambda: server.total("victor.coordinator.executions", coordinator="FaultCoordinator") == 5,
                 what="the executions counter at the collector")
        wait_for(lambda: telemetry.export_stats()["metrics"]["success"] > 0, what="a successful push counted")
        wait_for(lambda: server.total("victor.otel.exported", signal="metrics", outcome="failure") > 0,
                 what="the failures themselves reported once the collector is back")
    finally:
        victor_otel.shutdown()
        server.stop()


def test_an_exporter_that_raises_never_reaches_the_application() -> None:
    class Broken:
        def export(self, spans: Any) -> Any:
            raise OSError("disk full")

        def shutdown(self) -> None:
            raise RuntimeError("cannot even stop")

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            raise RuntimeError("nor flush")

    telemetry = victor_otel.init(service_name="faults", traces_exporter="none", span_exporters=[Broken()])
    assert calls(5) < 0.5
    stats = traces(telemetry)
    assert stats["failure"] == 5 and stats["last_error"] == "OSError"  # the class only: no message, no secret
    assert victor_otel.shutdown() is True
