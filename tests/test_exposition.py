"""/metrics: rendering (text, OpenMetrics, concurrent scrapes), the app route and the standalone server.

What the families count is tested in tests/test_registry.py, the contract itself in tests/test_instruments.py.
"""

from __future__ import annotations

import threading
import urllib.request
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

import victor_otel
from tests.conftest import record


def test_process_gauges_have_no_coordinator_label(telemetry: Any) -> None:
    record("A", "m", 0.1)
    record("B", "m", 0.1)
    families = {f.name: f for f in text_string_to_metric_families(victor_otel.render()[0].decode())}
    for name in ("victor_coordinator_memory_bytes", "victor_coordinator_cpu_percent",
                 "victor_coordinator_uptime_seconds"):
        (sample,) = families[name].samples
        assert sample.labels == {}
    assert families["victor_coordinator_memory_bytes"].samples[0].value > 1_000_000


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
