"""Faults on the collector path: a store down for 30 s, the collector restarted under load.

- VictoriaLogs (the log store, which keeps its data on disk) is stopped for 30 s while the services keep
  logging: the collector's sending queue holds the records and retries; once the store is back, it holds
  exactly the records the services wrote, and the collector reports no failed send.
- With the log store down, the collector's queue (1000 requests) overflows: the records it cannot queue
  are counted in its own metrics, and the CollectorLosingTelemetry alert (alerts/prometheus_alerts.yml)
  goes pending on the Prometheus that scrapes it.
- The collector is stopped (SIGTERM: it drains its queues) and started again while requests flow: every span
  victor_otel produced is counted once as exported, failed or dropped (``Telemetry.export_stats()``,
  read on ``/health/detailed``), and Jaeger holds exactly the ones counted as exported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.otel_stack import Path3, collector_path, get_json, poll, rules_every_second, running
from tests.e2e.test_bundle_support import alert_rules, load_rules
from tests.e2e.test_two_services import read_json_lines, service

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 30


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path3]:
    path = collector_path(tmp_path / "stack", rule_files=[rules_every_second(tmp_path, load_rules())])
    with running(*path.programs()):
        yield path


def env(stack: Path3, otlp: str) -> dict[str, str]:
    return {"E2E_OTLP": otlp, "OTEL_EXPORTER_OTLP_ENDPOINT": stack.collector.otlp_http,
            "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200"}


def collector_counter(stack: Path3, name: str) -> float:
    """Sum of one of the collector's own metrics, read from its own endpoint (Prometheus text; counters
    there have no ``_total`` suffix, an OpenMetrics scrape adds it)."""
    total = 0.0
    for line in stack.collector.metrics().splitlines():
        if line.split("{")[0].split(" ")[0] in (name, f"{name}_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_log_store_down_for_30_seconds_loses_nothing_within_the_queue(stack: Path3, tmp_path: Path) -> None:
    written = 0
    with (
        service(tmp_path, "tool-service", env=env(stack, "1")) as b_url,
        service(tmp_path, "chat-service", b_url, env=env(stack, "1")) as a_url,
        httpx.Client(timeout=10) as client,
    ):
        def chat(n: int) -> None:
            for _ in range(n):
                assert client.get(f"{a_url}/chat").status_code == 200

        chat(5)
        poll(lambda: stack.logs.count("*") > 0, 60, "the first records in VictoriaLogs")
        stack.logs.program.stop()
        down_since = time.monotonic()
        while time.monotonic() - down_since < OUTAGE_SECONDS:  # the requests are the clock
            chat(1)
            time.sleep(0.5)
        queued = collector_counter(stack, "otelcol_exporter_queue_size")
        stack.logs.program.start()
        chat(5)
    for name in ("chat-service", "tool-service"):
        written += len(read_json_lines(tmp_path / f"{name}.log"))
    assert queued > 0, "the collector should have been holding the records in its queue"
    stored = poll(lambda: (n := stack.logs.count("*")) == written and n, 120,
                  f"{written} log records in VictoriaLogs after the outage")
    assert stored == written
    assert collector_counter(stack, "otelcol_exporter_send_failed_log_records") == 0
    assert collector_counter(stack, "otelcol_exporter_enqueue_failed_log_records") == 0


def exports(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = get_json(f"{url}/health/detailed")["exports"]["traces"]
    return stats


def test_the_collector_restarted_under_load_every_span_is_counted_once(stack: Path3, tmp_path: Path) -> None:
    with (
        service(tmp_path, "tool-service", env=env(stack, "only")) as b_url,
        service(tmp_path, "chat-service", b_url, env=env(stack, "only")) as a_url,
        httpx.Client(timeout=10) as client,
    ):
        urls = (a_url, b_url)

        def accounted() -> int:
            return sum(s["success"] + s["failure"] + s["dropped"] for s in map(exports, urls))

        def settled(expected: int) -> bool:
            return accounted() == expected and all(s["queued"] == 0 for s in map(exports, urls))

        # One request, calmly: how many spans a request produces in A and B together. A batch being exported
        # is neither queued nor counted yet (the first one also waits for the export process to start), so
        # the count is taken once it holds still for a second.
        assert client.get(f"{a_url}/chat").status_code == 200

        def steady() -> int:
            first = accounted()
            if first == 0 or any(s["queued"] for s in map(exports, urls)):
                return 0
            time.sleep(1)
            return first if accounted() == first else 0

        per_request = poll(steady, 30, "the first request's spans exported")
        time.sleep(1)  # nothing else may arrive: checked by the equality below
        assert accounted() == per_request

        sent = [1]
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=10) as loader:
                while not stop.is_set():
                    assert loader.get(f"{a_url}/chat").status_code == 200
                    sent[0] += 1

        thread = threading.Thread(target=load)
        thread.start()
        try:
            poll(lambda: sent[0] > 20, 30, "load running")
            stack.collector.program.stop()
            time.sleep(2)  # the collector is down: the SDKs retry, fail or queue
            stack.collector.program.start()
            poll(lambda: sent[0] > 80, 60, "load after the restart")
        finally:
            stop.set()
            thread.join(30)
        expected = sent[0] * per_request
        poll(lambda: settled(expected), 90, f"{expected} spans ({sent[0]} requests) accounted for")
        totals = {key: sum(exports(url)[key] for url in urls) for key in ("success", "failure", "dropped")}
    assert sum(totals.values()) == expected

    def in_jaeger() -> int:
        traces = {t["traceID"]: t for name in ("chat-service", "tool-service")
                  for t in stack.jaeger.traces(name, limit=sent[0] + 10)}
        return sum(len(t["spans"]) for t in traces.values())

    poll(lambda: in_jaeger() == totals["success"], 60,
         f"Jaeger holding exactly the {totals['success']} spans counted as exported ({totals})")


def log_request(n: int) -> dict[str, Any]:
    """One OTLP/JSON export request carrying one log record."""
    return {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "flood"}}]},
        "scopeLogs": [{"scope": {"name": "flood"}, "logRecords": [
            {"timeUnixNano": str(time.time_ns()), "severityText": "INFO", "body": {"stringValue": f"record {n}"}}]}],
    }]}


def test_records_the_full_queue_refuses_are_visible_to_the_collector_alert(stack: Path3) -> None:
    rule = next(rule for rule in alert_rules() if rule["alert"] == "CollectorLosingTelemetry")
    prometheus = stack.prometheus
    poll(lambda: prometheus.query('up{job="otel-collector"} == 1'), 30, "the collector scraped")
    assert prometheus.query(rule["expr"]) == [], "nothing lost yet"
    stack.logs.program.stop()
    sent = 0
    with httpx.Client(timeout=10) as client:

        def flood() -> list[dict[str, Any]]:
            nonlocal sent
            for _ in range(200):
                client.post(f"{stack.collector.otlp_http}/v1/logs", json=log_request(sent))
                sent += 1
            return prometheus.query(rule["expr"])

        (row,) = poll(flood, 120, "CollectorLosingTelemetry's expression to hold")
    assert row["metric"] == {"job": "otel-collector", "instance": stack.collector.metrics_target}
    assert 0 < float(row["value"][1]) < sent
    lost = collector_counter(stack, "otelcol_exporter_enqueue_failed_log_records")
    assert 0 < lost <= sent
    poll(lambda: [a for a in prometheus.alerts() if a["labels"]["alertname"] == "CollectorLosingTelemetry"
                  and a["state"] in ("pending", "firing")], 30, "CollectorLosingTelemetry pending")
