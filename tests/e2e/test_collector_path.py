"""The collector path, live: two services push OTLP to our collector running the shipped config, which routes
traces to Jaeger v2 (in Tempo's place), logs to VictoriaLogs (in Loki's place) and its own metrics to a
Prometheus 3 scrape. Everything is read back through the stores' own query APIs.

The services are tests/e2e/test_two_services.py's (A, FastAPI, calls B, Starlette) with ``E2E_OTLP=1``: they
push spans and log records over OTLP/HTTP and keep writing their span and JSON log files, which count what
each process produced.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.otel_stack import Path3, collector_path, poll, running
from tests.e2e.test_two_services import hexid, read_json_lines, service

pytestmark = pytest.mark.e2e

REQUEST_ID = "collector-req-1"
API_KEY = "sk-e2e0123456789abcdefghij"  # what service A logs as api_key (test_two_services.serve)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path3]:
    path = collector_path(tmp_path_factory.mktemp("collector-path"))
    with running(*path.programs()):
        yield path


def otlp_env(stack: Path3) -> dict[str, str]:
    """The services' environment: OTLP/HTTP to the collector, short batch delays."""
    return {"E2E_OTLP": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": stack.collector.otlp_http,
            "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200"}


def tag(span: dict[str, Any], key: str) -> Any:
    return next((t["value"] for t in span["tags"] if t["key"] == key), None)


def ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    chain = []
    while True:
        parents = [ref["spanID"] for ref in span.get("references", []) if ref["refType"] == "CHILD_OF"]
        if not parents or parents[0] not in by_id:
            return chain
        span = by_id[parents[0]]
        chain.append(span)


@pytest.fixture(scope="module")
def one_request(stack: Path3, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One request to A (which calls B); both services stopped (flushed) afterwards."""
    tmp = tmp_path_factory.mktemp("services")
    env = otlp_env(stack)
    with (
        service(tmp, "tool-service", env=env) as b_url,
        service(tmp, "chat-service", b_url, env=env) as a_url,
        httpx.Client(timeout=10) as client,
    ):
        response = client.get(f"{a_url}/chat", headers={"X-Request-ID": REQUEST_ID})
    assert response.status_code == 200 and response.json()["b"]["request_id"] == REQUEST_ID
    spans = read_json_lines(tmp / "chat-service.spans") + read_json_lines(tmp / "tool-service.spans")
    logs = read_json_lines(tmp / "chat-service.log") + read_json_lines(tmp / "tool-service.log")
    (trace_id,) = {r["trace_id"] for r in logs if r.get("request_id") == REQUEST_ID}
    return {"trace_id": trace_id, "spans": [s for s in spans if hexid(s["context"]["trace_id"]) == trace_id],
            "logs": [r for r in logs if r.get("request_id") == REQUEST_ID]}


def test_one_request_is_one_trace_in_jaeger(stack: Path3, one_request: dict[str, Any]) -> None:
    produced = one_request["spans"]

    def complete() -> dict[str, Any] | None:
        trace = stack.jaeger.trace(one_request["trace_id"])
        return trace if trace and len(trace["spans"]) == len(produced) else None

    trace = poll(complete, 60, f"the request's {len(produced)} spans in Jaeger")
    spans, processes = trace["spans"], trace["processes"]
    service_of = {s["spanID"]: processes[s["processID"]]["serviceName"] for s in spans}
    assert set(service_of.values()) == {"chat-service", "tool-service"}
    assert {s["spanID"] for s in spans} == {hexid(s["context"]["span_id"]) for s in produced}
    by_id = {s["spanID"]: s for s in spans}
    servers = [s for s in spans if tag(s, "span.kind") == "server"]
    assert sorted(service_of[s["spanID"]] for s in servers) == ["chat-service", "tool-service"]
    assert {tag(s, "victor.request_id") for s in servers} == {REQUEST_ID}
    roots = [s for s in spans if not ancestors(s, by_id)]
    assert len(roots) == 1 and roots[0] in servers and service_of[roots[0]["spanID"]] == "chat-service"
    for name, owner in (("ChatCoordinator.answer", "chat-service"), ("ToolCoordinator.run", "tool-service")):
        (span,) = [s for s in spans if s["operationName"] == name]
        server = next(s for s in servers if service_of[s["spanID"]] == owner)
        assert server in ancestors(span, by_id), f"{name} is not under {owner}'s server span"
    # B's server span descends from A's coordinator span (A called B inside ChatCoordinator.answer).
    b_server = next(s for s in servers if service_of[s["spanID"]] == "tool-service")
    assert "ChatCoordinator.answer" in {s["operationName"] for s in ancestors(b_server, by_id)}


def test_the_requests_log_records_are_in_victorialogs_correlated_and_redacted(
    stack: Path3, one_request: dict[str, Any]
) -> None:
    trace_id, written = one_request["trace_id"], one_request["logs"]
    assert len(written) >= 2

    def stored() -> list[dict[str, Any]] | None:
        rows = stack.logs.query(f'request_id:="{REQUEST_ID}"')
        return rows if len(rows) == len(written) else None

    rows = poll(stored, 60, f"{len(written)} log records of {REQUEST_ID} in VictoriaLogs")
    assert {row["trace_id"] for row in rows} == {trace_id}
    assert {row["service.name"] for row in rows} == {"chat-service", "tool-service"}
    assert sorted(row["_msg"] for row in rows) == sorted(r["message"] for r in written)
    assert {row["span_id"] for row in rows} <= {hexid(s["context"]["span_id"]) for s in one_request["spans"]}
    # The same records by trace ID: the trace-to-logs link Grafana follows.
    assert len(stack.logs.query(f'trace_id:="{trace_id}"')) == len(written)
    raw = json.dumps(rows)
    assert API_KEY not in raw and "sk-e2e" not in raw
    assert [row["api_key"] for row in rows if "api_key" in row] == ["[REDACTED]"]


def test_the_collectors_own_metrics_are_scraped(stack: Path3, one_request: dict[str, Any]) -> None:
    prometheus = stack.prometheus

    def counter(name: str) -> str:  # OpenMetrics scrapes add _total to the counters, text ones do not
        return f'{{__name__=~"{name}(_total)?",job="otel-collector"}}'

    def accepted() -> list[dict[str, Any]]:
        return prometheus.query(f"sum({counter('otelcol_receiver_accepted_spans')}) >= {len(one_request['spans'])}")

    poll(accepted, 30, "the collector's accepted spans in Prometheus")
    def sent() -> bool:
        rows = prometheus.query(f"sum by (exporter) ({counter('otelcol_exporter_sent_spans')})")
        return {row["metric"]["exporter"]: float(row["value"][1]) for row in rows} == {
            "otlp_grpc/tempo": len(one_request["spans"])}

    poll(sent, 30, f"otlp_grpc/tempo reporting {len(one_request['spans'])} spans sent")
    poll(lambda: prometheus.query(f"sum({counter('otelcol_exporter_sent_log_records')}) >= {len(one_request['logs'])}"),
         30, "the log records sent")
    assert prometheus.query('up{job="otel-collector"} == 1')
