"""Health endpoints over a real uvicorn socket: status transitions as the window moves, hung and
raising checks, a coordinator first seen after start-up, readiness during shutdown, the token, a
wedged event loop, and 200 concurrent probes while coordinators run.

No assertion on time: the p99 probe latency is reported by ``benchmarks/bench_health.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import victor_otel
from tests.servers import serve
from victor_otel.health import get_health
from victor_otel.registry import get_registry

DEADLINE = 10.0  # seconds any polling loop may wait before the test fails


@pytest.fixture(autouse=True)
def _fresh_health() -> Iterator[None]:
    get_health().reset()
    yield
    get_health().reset()


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def app_with(*routes: Route) -> Starlette:
    return victor_otel.instrument_app(Starlette(routes=list(routes)))


@victor_otel.coordinator("ChatCoordinator")
def chat(fail: bool = False) -> str:
    if fail:
        raise ValueError("the model refused")
    return "ok"


def run_chat(ok: int, errors: int) -> None:
    for _ in range(ok):
        chat()
    for _ in range(errors):
        with pytest.raises(ValueError):
            chat(fail=True)


def window_is_empty(name: str) -> Callable[[], bool]:
    return lambda: get_registry().coordinator(name).stats().calls == 0


def test_pass_warn_fail_pass_as_the_window_moves() -> None:
    victor_otel.init(traces_exporter="none", window_seconds=1, health_cache_ttl=0, health_min_calls=20)
    with serve(app_with()) as url, httpx.Client(base_url=url, timeout=5) as http:

        def probe() -> tuple[int, str, str]:
            response = http.get("/health")
            (reading,) = response.json()["checks"]["ChatCoordinator:error_rate"]
            return response.status_code, response.json()["status"], reading["status"]

        run_chat(100, 0)
        assert probe() == (200, "pass", "pass")
        wait_for(window_is_empty("ChatCoordinator"), "the window to move on")
        run_chat(98, 2)  # 2 %
        assert probe() == (200, "warn", "warn")
        wait_for(window_is_empty("ChatCoordinator"), "the window to move on")
        run_chat(90, 10)  # 10 %
        assert probe() == (503, "fail", "fail")
        wait_for(lambda: probe() == (200, "pass", "pass"), "the failures to leave the window")
        (reading,) = http.get("/health").json()["checks"]["ChatCoordinator:error_rate"]
        assert reading["observedValue"] == 0.0


def test_a_hung_and_a_raising_check_fail_alone() -> None:
    victor_otel.init(traces_exporter="none", health_cache_ttl=0)
    release = threading.Event()
    victor_otel.add_health_check("llm_gateway", lambda: release.wait(30), timeout=0.3, critical=True)
    victor_otel.add_health_check("vector_store", lambda: 1 / 0)
    victor_otel.add_health_check("cache", lambda: True)
    try:
        with serve(app_with()) as url, httpx.Client(base_url=url, timeout=5) as http:
            for _ in range(2):  # the second time, the hung run is reported at once
                response = http.get("/health")
                assert response.status_code == 503
                checks = response.json()["checks"]
                hung, raising = checks["llm_gateway"][0], checks["vector_store"][0]
                assert hung["status"] == raising["status"] == "fail"
                assert "timed out after 0.3 s" in hung["output"] or "still running after" in hung["output"]
                assert raising["output"] == "ZeroDivisionError: division by zero"
                assert checks["cache"][0]["status"] == "pass"
                assert checks["telemetry:lifecycle"][0]["status"] == "pass"
            assert http.get("/health/ready").status_code == 503  # the hung check is critical
            assert http.get("/health/live").status_code == 200
            release.set()
            wait_for(lambda: http.get("/health/ready").status_code == 200, "the hung check to recover")
    finally:
        release.set()


def test_a_coordinator_first_seen_after_start_up() -> None:
    victor_otel.init(traces_exporter="none", health_cache_ttl=0, health_min_calls=5)

    @victor_otel.coordinator("LateCoordinator")
    async def late() -> None:
        raise TimeoutError("tool timed out")

    async def work(request: Request) -> PlainTextResponse:
        try:
            await late()
        except TimeoutError:
            return PlainTextResponse("failed", 502)
        return PlainTextResponse("ok")

    with serve(app_with(Route("/work", work))) as url, httpx.Client(base_url=url, timeout=5) as http:
        assert "LateCoordinator:error_rate" not in http.get("/health").json()["checks"]
        assert http.get("/health").status_code == 200
        for _ in range(10):
            http.get("/work")
        response = http.get("/health")
        assert response.status_code == 503
        assert response.json()["checks"]["LateCoordinator:error_rate"][0]["status"] == "fail"
        metrics = http.get("/metrics").text
        assert 'victor_health_status{check="LateCoordinator:error_rate",coordinator="LateCoordinator"} 0.0' in metrics


class _BlockingExporter(SpanExporter):
    """Holds shutdown() until released: victor_otel.shutdown() stays in its draining phase."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.wait(DEADLINE)


def test_readiness_turns_503_as_soon_as_shutdown_starts() -> None:
    exporter = _BlockingExporter()
    victor_otel.init(traces_exporter="none", span_exporters=[exporter], shutdown_timeout=DEADLINE)
    with serve(app_with()) as url, httpx.Client(base_url=url, timeout=5) as http:
        assert http.get("/health/ready").status_code == 200
        stopping = threading.Thread(target=victor_otel.shutdown, name="shutdown")
        stopping.start()
        try:
            wait_for(lambda: http.get("/health/ready").status_code == 503, "readiness to drop")
            ready = http.get("/health/ready").json()
            assert ready["checks"]["telemetry:lifecycle"][0]["observedValue"] == "draining"
            assert "draining" in ready["output"]
            assert http.get("/health/live").status_code == 200  # draining is not dead
        finally:
            exporter.release.set()
            stopping.join(DEADLINE)
        ready = http.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["telemetry:lifecycle"][0]["observedValue"] == "not initialised"


def test_the_token_over_the_socket() -> None:
    victor_otel.init(traces_exporter="none", health_token="k8s-not-this-one")
    with serve(app_with()) as url, httpx.Client(base_url=url, timeout=5) as http:
        assert http.get("/health/detailed").status_code == 401
        assert http.get("/health/detailed", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert http.get("/health/detailed", headers={"Authorization": "Basic k8s-not-this-one"}).status_code == 401
        detailed = http.get("/health/detailed", headers={"Authorization": "Bearer k8s-not-this-one"})
        assert detailed.status_code == 200 and "resource" in detailed.json()
        assert [http.get(p).status_code for p in ("/health", "/health/ready", "/health/live")] == [200] * 3


def test_liveness_fails_when_the_event_loop_was_wedged() -> None:
    victor_otel.init(traces_exporter="none", health_max_loop_lag=0.3)
    blocking = threading.Event()

    async def block(request: Request) -> PlainTextResponse:
        blocking.set()
        time.sleep(1.0)  # a blocking call inside async code: the loop is wedged meanwhile
        return PlainTextResponse("done")

    with serve(app_with(Route("/block", block))) as url, httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/health/live").status_code == 200  # starts the heartbeat on the server's loop
        blocker = threading.Thread(target=lambda: httpx.get(f"{url}/block", timeout=10))
        blocker.start()
        assert blocking.wait(DEADLINE)
        live = http.get("/health/live")  # answered once the loop is free again
        blocker.join(DEADLINE)
        assert live.status_code == 503
        (lag,) = live.json()["checks"]["eventloop:lag"]
        assert lag["status"] == "fail" and lag["observedValue"] > 0.3
        wait_for(lambda: http.get("/health/live").status_code == 200, "liveness to recover")


def test_200_concurrent_probes_while_coordinators_run() -> None:
    victor_otel.init(traces_exporter="none")
    victor_otel.add_health_check("vector_store", lambda: time.sleep(0.01), critical=True)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            run_chat(50, 0)
            time.sleep(0.001)

    async def storm(url: str) -> list[httpx.Response]:
        paths = ["/health", "/health/ready", "/health/live", "/health/detailed"]
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
            return await asyncio.gather(*(http.get(paths[i % 4]) for i in range(200)))

    workers = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        with serve(app_with()) as url:
            responses = asyncio.run(storm(url))
            metrics = httpx.get(f"{url}/metrics", timeout=5).text
    finally:
        stop.set()
        for worker in workers:
            worker.join(DEADLINE)
    assert [r.status_code for r in responses if r.status_code != 200] == []
    assert {r.json()["status"] for r in responses} <= {"pass", "warn"}
    assert all(r.headers["content-type"] == "application/health+json" for r in responses)
    assert get_registry().coordinator("ChatCoordinator").stats().calls > 0
    assert 'victor_health_status{check="vector_store",coordinator=""} 1.0' in metrics
