"""/metrics: exact values and buckets, HELP/TYPE on every family, cardinality cap, servers."""

from __future__ import annotations

import logging
import threading
import urllib.request
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

import victor_otel
from tests.conftest import scrape, value
from victor_otel.instruments import CONTRACT, LATENCY_BUCKETS
from victor_otel.registry import get_registry

LAT = "victor_coordinator_latency_seconds"


def record(coordinator: str, method: str, duration: float, error: str | None = None) -> None:
    """Record one execution with an exact duration, as the decorators do."""
    series, window = get_registry().method_series(coordinator, method)
    series.record(duration, error, False, window)


def test_exact_counters_and_histogram_buckets(telemetry: Any) -> None:
    durations = [0.001, 0.005, 0.007, 0.3, 4.9, 5.0, 5.1, 16.0, 200.0]
    for d in durations:
        record("Chat", "chat", d)
    record("Chat", "chat", 0.02, "ValueError")
    samples = scrape()
    assert value(samples, "victor_coordinator_executions_total", coordinator="Chat", method="chat") == 10
    assert value(samples, "victor_coordinator_errors_total", coordinator="Chat", method="chat") == 1
    assert value(samples, "victor_coordinator_errors_by_type_total", coordinator="Chat", method="chat",
                 error_type="ValueError") == 1
    total = sum(durations) + 0.02
    assert value(samples, "victor_coordinator_duration_seconds_total", coordinator="Chat",
                 method="chat") == pytest.approx(total)
    assert value(samples, f"{LAT}_sum", coordinator="Chat", method="chat") == pytest.approx(total)
    assert value(samples, f"{LAT}_count", coordinator="Chat", method="chat") == 10
    all_durations = [*durations, 0.02]
    for bound in LATENCY_BUCKETS:
        expected = sum(1 for d in all_durations if d <= bound)  # le is inclusive
        got = value(samples, f"{LAT}_bucket", coordinator="Chat", method="chat", le=str(bound))
        assert got == expected, bound
    assert value(samples, f"{LAT}_bucket", coordinator="Chat", method="chat", le="+Inf") == 10


def test_every_family_has_help_and_type(telemetry: Any) -> None:
    record("Chat", "chat", 0.1, "ValueError")
    series, _ = get_registry().method_series("Chat", "chat")
    series.record(0.1, None, True)
    victor_otel.record_cache_hit("Chat")
    victor_otel.record_event("e")
    body = victor_otel.render()[0].decode()
    for spec in CONTRACT:
        family = spec.prometheus_name.removesuffix("_total")
        assert f"# HELP {spec.prometheus_name} " in body or f"# HELP {family} " in body, spec.prometheus_name
        kind = spec.kind.value
        assert f"# TYPE {family} {kind}" in body or f"# TYPE {spec.prometheus_name} {kind}" in body
    for line in body.splitlines():
        if line and not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0] in {s for c in CONTRACT for s in c.sample_names} | {
                "target_info"
            }, line


def test_process_gauges_have_no_coordinator_label(telemetry: Any) -> None:
    record("A", "m", 0.1)
    record("B", "m", 0.1)
    families = {f.name: f for f in text_string_to_metric_families(victor_otel.render()[0].decode())}
    for name in ("victor_coordinator_memory_bytes", "victor_coordinator_cpu_percent",
                 "victor_coordinator_uptime_seconds"):
        (sample,) = families[name].samples
        assert sample.labels == {}
    assert families["victor_coordinator_memory_bytes"].samples[0].value > 1_000_000


def test_window_rates_are_windowed_and_bounded() -> None:
    victor_otel.init(traces_exporter="none", window_seconds=2)
    for _ in range(10):
        record("Chat", "chat", 0.01, "ValueError")
    samples = scrape()
    assert value(samples, "victor_coordinator_error_rate", coordinator="Chat") == 1.0
    assert 0 < (value(samples, "victor_coordinator_throughput", coordinator="Chat") or 0) <= 10
    # The window forgets: inject a later clock instead of sleeping.
    state = get_registry().coordinator("Chat")
    later = state.window.snapshot(__import__("time").monotonic() + 5)
    assert later.calls == 0 and later.error_rate is None


def test_errors_have_the_labels_of_executions_so_a_ratio_is_one_division(telemetry: Any) -> None:
    for error in (None, None, "ValueError", "KeyError"):
        record("Chat", "chat", 0.01, error)
    record("Chat", "plan", 0.01)
    samples = scrape()
    errors = {labels: v for (name, labels), v in samples.items() if name == "victor_coordinator_errors_total"}
    executions = {labels: v for (name, labels), v in samples.items()
                  if name == "victor_coordinator_executions_total"}
    assert errors.keys() == executions.keys()  # every series, 0 included: the seed's division matches 1:1
    assert {dict(labels)["method"]: errors[labels] / executions[labels] for labels in errors} == {
        "chat": 0.5, "plan": 0.0,
    }
    by_type = {dict(labels)["error_type"]: v for (name, labels), v in samples.items()
               if name == "victor_coordinator_errors_by_type_total"}
    assert by_type == {"ValueError": 1, "KeyError": 1}
    assert sum(by_type.values()) == value(samples, "victor_coordinator_errors_total", coordinator="Chat",
                                          method="chat")


def test_a_ratio_over_an_empty_window_has_no_sample(telemetry: Any) -> None:
    record("Calls", "m", 0.01)  # calls, no cache lookup
    victor_otel.record_cache_hit("CacheOnly")  # a cache lookup, no call
    samples = scrape()
    assert value(samples, "victor_coordinator_error_rate", coordinator="Calls") == 0.0
    assert value(samples, "victor_coordinator_cache_hit_rate", coordinator="Calls") is None  # not "0 % hits"
    assert value(samples, "victor_coordinator_cache_hit_rate", coordinator="CacheOnly") == 1.0
    assert value(samples, "victor_coordinator_error_rate", coordinator="CacheOnly") is None  # not "no errors"
    assert value(samples, "victor_coordinator_throughput", coordinator="CacheOnly") == 0.0  # 0 calls/s is true


def test_cardinality_cap_folds_into_one_overflow_series(caplog: Any) -> None:
    victor_otel.init(traces_exporter="none", cardinality_limit=5)
    caplog.set_level(logging.WARNING, logger="victor_otel")
    for i in range(50):
        victor_otel.track("Chat", f"method_{i}").__enter__()
    for i in range(50):
        with victor_otel.track("Chat", f"method_{i}"):
            pass
    samples = scrape()
    exec_series = [k for k in samples if k[0] == "victor_coordinator_executions_total"]
    assert len(exec_series) == 6  # the cap plus one overflow series
    overflow = value(samples, "victor_coordinator_executions_total", coordinator="_overflow",
                     method="_overflow", otel_metric_overflow="true")
    assert overflow == 45
    assert sum(samples[k] for k in exec_series) == 50
    warnings = [r for r in caplog.records if "more than 5 label sets" in r.getMessage()]
    assert len(warnings) == 1
    # The coordinator's own window still sees every call (health stays right).
    assert get_registry().coordinator("Chat").stats().calls == 50


def test_openmetrics_when_asked(telemetry: Any) -> None:
    record("Chat", "chat", 0.1)
    body, content_type = victor_otel.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF")


def test_concurrent_scrapes_each_get_everything(telemetry: Any) -> None:
    record("Chat", "chat", 0.1)
    bodies: list[bytes] = []

    def scrape_once() -> None:
        for _ in range(20):
            bodies.append(victor_otel.render()[0])

    threads = [threading.Thread(target=scrape_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(bodies) == 80
    assert all(b"victor_coordinator_executions_total{" in b for b in bodies)


def test_instrument_app_serves_metrics_through_a_test_client(telemetry: Any) -> None:
    app = victor_otel.instrument_app(Starlette())
    victor_otel.instrument_app(app)  # a second call adds nothing
    record("Chat", "chat", 0.1)
    with TestClient(app) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'victor_coordinator_executions_total{coordinator="Chat",method="chat"} 1.0' in response.text
    assert [r.path for r in app.routes].count("/metrics") == 1


def test_standalone_server_over_a_real_socket(telemetry: Any) -> None:
    record("Chat", "chat", 0.1)
    server = victor_otel.start_metrics_server(0)
    try:
        assert server.host == "127.0.0.1"
        with urllib.request.urlopen(server.url, timeout=5) as response:
            text = response.read().decode()
        assert 'victor_coordinator_executions_total{coordinator="Chat",method="chat"} 1.0' in text
        assert httpx.get(server.url, timeout=5).status_code == 200
    finally:
        server.close()


def test_metrics_port_setting_starts_the_server() -> None:
    telemetry = victor_otel.init(traces_exporter="none", metrics_port=0)
    assert telemetry.metrics_server is not None
    url = telemetry.metrics_server.url
    assert "uptime_seconds" in httpx.get(url, timeout=5).text
    victor_otel.shutdown()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)


def test_metrics_need_the_prometheus_reader() -> None:
    victor_otel.init(traces_exporter="none", metrics_exporter="none")
    with pytest.raises(victor_otel.VictorOtelInitError, match="OTEL_METRICS_EXPORTER"):
        victor_otel.render()


def test_disabled_sdk_renders_nothing() -> None:
    victor_otel.init(disabled=True)
    assert victor_otel.render()[0] == b""


def test_traced_calls_become_exemplars_of_their_latency_bucket(telemetry: Any, spans: Any) -> None:
    @victor_otel.instrument("Chat", "chat")
    def chat(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    chat(False)
    with pytest.raises(ValueError):
        chat(True)
    metrics = [
        m for rm in telemetry.collect().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == "victor.coordinator.latency"
    ]
    (point,) = metrics[0].data.data_points
    by_span = {s.context.span_id: s for s in spans.get_finished_spans()}
    # Both calls fall in the first bucket: the latest (the failed one) is its exemplar.
    (exemplar,) = point.exemplars
    span = by_span[exemplar.span_id]
    assert exemplar.trace_id == span.context.trace_id
    assert span.attributes is not None and span.attributes["victor.outcome"] == "error"
    assert exemplar.value <= LATENCY_BUCKETS[0]


def test_no_exemplars_without_tracing() -> None:
    telemetry = victor_otel.init(traces_exporter="none")
    victor_otel.instrument("Chat", "chat")(lambda: None)()
    (point,) = next(
        m for rm in telemetry.collect().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == "victor.coordinator.latency"
    ).data.data_points
    assert list(point.exemplars) == []


def test_a_request_makes_one_server_span_not_per_message_spans(telemetry: Any, spans: Any) -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/chat")
    async def chat() -> dict[str, str]:
        return {"ok": "yes"}

    victor_otel.instrument_app(app)
    with TestClient(app) as client:
        assert client.get("/chat").status_code == 200
        assert client.get("/metrics").status_code == 200  # excluded: no span at all
    assert [s.name for s in spans.get_finished_spans()] == ["GET /chat"]


# -- the standalone server under idle and hostile clients -------------------------------------------


def _own_descriptors() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


def test_the_standalone_server_bounds_connections_and_closes_idle_ones(
    telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread and one descriptor per connection, with no idle timeout, let 160 idle clients exhaust a
    process's descriptors. Connections over the bound are closed at once; idle ones after IDLE_TIMEOUT."""
    import socket
    import time

    from victor_otel import exposition

    monkeypatch.setattr(exposition, "IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(exposition, "MAX_CONNECTIONS", 8)
    server = victor_otel.start_metrics_server(0)
    try:
        baseline = _own_descriptors()
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
        time.sleep(0.2)
        # The clients' own 40 descriptors plus at most the bound on the server side.
        assert _own_descriptors() - baseline <= 40 + 8
        closed = 0
        for sock in idle:
            sock.settimeout(2.0)
            try:
                closed += sock.recv(1) == b""  # over the bound or idle: the server hangs up
            except OSError:
                closed += 1
        assert closed == 40
        for sock in idle:
            sock.close()
        # Still serving once the idle clients are gone.
        assert httpx.get(server.url).status_code == 200
    finally:
        server.close()


FD_LIMIT_SCRIPT = """
import errno, os, resource, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
import victor_otel
victor_otel.init(service_name="fds", traces_exporter="none")
server = victor_otel.start_metrics_server(0)
print(server.port, flush=True)
sys.stdin.readline()  # the test opened its idle connections
failures = 0
cpu = time.process_time()
for _ in range(200):  # the application keeps opening files while the idle clients hold on
    try:
        with open(os.devnull) as f:
            pass
    except OSError as e:
        failures += e.errno == errno.EMFILE
    time.sleep(0.01)
print(failures, round(time.process_time() - cpu, 3), flush=True)
"""


def test_idle_clients_cannot_exhaust_the_applications_descriptors_or_a_core() -> None:
    import socket
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", FD_LIMIT_SCRIPT], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    idle: list[socket.socket] = []
    try:
        port = int(process.stdout.readline())
        for _ in range(160):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        process.stdin.write("go\n")
        process.stdin.flush()
        failures, cpu = process.stdout.readline().split()
        assert process.wait(30) == 0
    finally:
        for sock in idle:
            sock.close()
        if process.poll() is None:
            process.kill()
    assert int(failures) == 0  # the application's own open() never met EMFILE
    assert float(cpu) < 1.0  # 2 s of wall time: the accept loop did not spin at 100 % of a core
