"""Health: thresholds, check semantics, user checks, caching, the IETF format, the token, the metric.

In-process (``check_health``, Starlette's TestClient, httpx's ASGITransport); the same behaviour over a
real socket is in ``tests/e2e/test_health_socket.py``.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.testclient import TestClient

import victor_otel
from tests.conftest import scrape, value
from victor_otel import Lifecycle, VictorOtelConfigError, health, process
from victor_otel.config import OPTIONS, Settings
from victor_otel.health import DEFAULT_THRESHOLDS, MEDIA_TYPE, Thresholds, check_health, get_health
from victor_otel.registry import get_registry

GiB = 1024**3
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def _fresh_health() -> Iterator[None]:
    get_health().reset()
    yield
    get_health().reset()


def record(coordinator: str, ok: int, errors: int = 0, duration: float = 0.01) -> None:
    """Record executions with exact outcomes and durations, as the decorators do."""
    series, window = get_registry().method_series(coordinator, "run")
    for _ in range(ok):
        series.record(duration, None, False, window)
    for _ in range(errors):
        series.record(duration, "ValueError", False, window)


def health_value(samples: dict[Any, float], check: str) -> float | None:
    """``victor_health_status{check=...}`` whatever its other labels (an empty label is an absent one)."""
    found = [v for (name, labels), v in samples.items()
             if name == "victor_health_status" and ("check", check) in labels]
    assert len(found) <= 1
    return found[0] if found else None


def start(**settings: Any) -> victor_otel.Telemetry:
    return victor_otel.init(**{"traces_exporter": "none", "health_cache_ttl": 0, **settings})


def client(**settings: Any) -> TestClient:
    start(**settings)
    return TestClient(victor_otel.setup_health_endpoints(Starlette()))


# -- thresholds: declared once, as the alert rules ---------------------------------------------------


def test_default_thresholds_are_the_alert_rules_numbers() -> None:
    expected = Thresholds(
        error_rate_warn=0.01, error_rate_fail=0.05, min_calls=20, latency_p95_warn=5.0, latency_p95_fail=15.0,
        memory_warn_bytes=2 * GiB, memory_fail_bytes=4 * GiB, cpu_warn_percent=80.0,
    )
    assert expected == DEFAULT_THRESHOLDS
    # Declared once: every threshold is a setting whose default it is.
    defaults = {option.name: option.default for option in OPTIONS}
    for name, threshold in vars(DEFAULT_THRESHOLDS).items():
        assert defaults["health_" + name] == threshold
    assert Thresholds.from_settings(Settings()) == DEFAULT_THRESHOLDS


def test_thresholds_come_from_init_and_the_environment() -> None:
    environ = {"VICTOR_OTEL_HEALTH_ERROR_RATE_FAIL": "0.2", "VICTOR_OTEL_HEALTH_MEMORY_WARN_BYTES": "1000"}
    settings = Settings.from_sources({"health_latency_p95_fail": 30}, environ)
    thresholds = Thresholds.from_settings(settings)
    assert (thresholds.error_rate_fail, thresholds.memory_warn_bytes, thresholds.latency_p95_fail) == (0.2, 1000, 30)
    start(health_error_rate_warn=0.02)
    assert get_health().thresholds().error_rate_warn == 0.02


def test_bad_thresholds_are_refused_with_the_setting_named() -> None:
    with pytest.raises(VictorOtelConfigError, match=r"health_error_rate_warn: 0\.5 .* at most health_error_rate_fail"):
        Settings.from_sources({"health_error_rate_warn": 0.5})
    with pytest.raises(VictorOtelConfigError, match="VICTOR_OTEL_HEALTH_MIN_CALLS: 'many'"):
        Settings.from_sources(environ={"VICTOR_OTEL_HEALTH_MIN_CALLS": "many"})
    with pytest.raises(VictorOtelConfigError, match=r"latency_p95_warn: 20\.0 .* at most latency_p95_fail"):
        Thresholds(latency_p95_warn=20)
    with pytest.raises(VictorOtelConfigError, match="memory_warn_bytes: not a per-coordinator threshold"):
        victor_otel.set_health_thresholds("Chat", memory_warn_bytes=1)
    with pytest.raises(VictorOtelConfigError, match="error_rate_fail: 2"):
        victor_otel.set_health_thresholds("Chat", error_rate_fail=2)


# -- coordinator checks ---------------------------------------------------------------------------------


async def test_error_rate_pass_warn_fail_and_the_minimum_number_of_calls() -> None:
    start(health_min_calls=20)
    record("Pass", 100)
    record("Warn", 98, 2)  # 2 %
    record("Fail", 90, 10)  # 10 %
    record("Few", 5, 5)  # 50 %, but only 10 calls: it warns, it cannot fail
    report = await check_health()
    statuses = {name: report.check(f"{name}:error_rate").status for name in ("Pass", "Warn", "Fail", "Few")}
    assert statuses == {"Pass": "pass", "Warn": "warn", "Fail": "fail", "Few": "warn"}
    fail = report.check("Fail:error_rate")
    assert fail.observed_value == 0.1 and fail.observed_unit == "ratio" and fail.component_id == "Fail"
    assert "10.0% of 100 calls failed" in fail.output and "fail above 5.0%" in fail.output
    assert "cannot fail" in report.check("Few:error_rate").output
    assert report.status == "fail" and report.http_status == 503


async def test_p95_latency_pass_warn_fail() -> None:
    start(health_min_calls=5)
    record("Fast", 10, duration=1.0)
    record("Slow", 10, duration=7.0)  # p95 in (5, 10]
    record("Stuck", 10, duration=20.0)  # p95 in (15, 30]
    report = await check_health()
    assert [report.check(f"{n}:latency_p95").status for n in ("Fast", "Slow", "Stuck")] == ["pass", "warn", "fail"]
    assert 5 < report.check("Slow:latency_p95").observed_value <= 10
    assert report.check("Slow:latency_p95").observed_unit == "s"


async def test_per_coordinator_thresholds_override_the_global_ones() -> None:
    start(health_min_calls=5)
    record("Analysis", 10, duration=20.0)
    record("Chat", 10, duration=20.0)
    effective = victor_otel.set_health_thresholds("Analysis", latency_p95_warn=30.0, latency_p95_fail=60.0)
    assert (effective.latency_p95_fail, effective.error_rate_fail) == (60.0, 0.05)
    report = await check_health()
    assert report.check("Analysis:latency_p95").status == "pass"
    assert report.check("Chat:latency_p95").status == "fail"
    victor_otel.set_health_thresholds("Analysis")  # back to the global ones
    assert (await check_health()).check("Analysis:latency_p95").status == "fail"


async def test_a_coordinator_first_seen_later_gets_its_checks() -> None:
    start()
    assert (await check_health()).check("Late:error_rate") is None

    @victor_otel.coordinator("Late")
    def late() -> None:
        raise RuntimeError("down")

    for _ in range(30):
        with pytest.raises(RuntimeError):
            late()
    assert (await check_health()).check("Late:error_rate").status == "fail"


async def test_a_colon_in_a_coordinator_name_keeps_keys_two_parted() -> None:
    start()
    record("ns:Chat", 1)
    result = (await check_health()).check("ns_Chat:error_rate")
    assert result is not None and result.component_id == "ns:Chat"


# -- process and exporter checks ------------------------------------------------------------------------


async def test_memory_warns_and_fails_above_its_thresholds() -> None:
    start(health_memory_warn_bytes=1, health_memory_fail_bytes=2**50)
    memory = (await check_health()).check("process:memory")
    assert memory.status == "warn" and memory.observed_unit == "bytes" and memory.observed_value > 1_000_000
    victor_otel.shutdown()
    start(health_memory_warn_bytes=1, health_memory_fail_bytes=2)
    assert (await check_health()).check("process:memory").status == "fail"


async def test_cpu_warns_but_never_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    start()
    monkeypatch.setattr(psutil.Process, "cpu_percent", lambda self, interval=None: 950.0)
    monkeypatch.setattr(process, "CPU_INTERVAL", 0.0)  # measure now, whatever the last reading
    report = await check_health()
    assert report.check("process:cpu").status == "warn" and report.check("process:cpu").observed_value == 950.0
    assert report.status == "warn" and report.http_status == 200


async def test_exporter_trouble_warns_never_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry = start()
    stats: dict[str, dict[str, Any]] = {
        "traces": {"success": 10, "failure": 0, "dropped": 0, "consecutive_failures": 0, "last_failure": None}
    }
    monkeypatch.setattr(telemetry, "export_stats", lambda: stats, raising=False)
    report = await check_health()
    assert report.check("telemetry:dropped").status == "pass"
    assert report.check("telemetry:export_errors").status == "pass"
    stats["traces"].update(failure=5, dropped=3, consecutive_failures=2, last_failure=time.time(),
                           last_error="ConnectionError")
    report = await check_health("detailed")
    assert report.check("telemetry:dropped").status == "warn"
    failing = report.check("telemetry:export_errors")
    assert failing.status == "warn" and failing.observed_value == 5 and "ConnectionError" in failing.output
    assert report.status == "warn" and report.http_status == 200
    assert report.to_dict()["exports"] == stats


class _Refusing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(400)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.skipif(not hasattr(victor_otel.Telemetry, "export_stats"), reason="needs Telemetry.export_stats()")
async def test_a_refusing_otlp_collector_warns(caplog: pytest.LogCaptureFixture) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    caplog.set_level(logging.CRITICAL)  # the exporter's own error log is expected
    try:
        telemetry = start(traces_exporter="otlp", otlp_endpoint=f"http://127.0.0.1:{server.server_port}")

        @victor_otel.coordinator("Chat")
        def chat() -> None:
            pass

        chat()
        await asyncio.to_thread(telemetry.tracer_provider.force_flush)
        report = await check_health()
        assert report.check("telemetry:export_errors").status == "warn"
        assert report.status == "warn"
    finally:
        victor_otel.shutdown()
        server.shutdown()
        server.server_close()


# -- user checks --------------------------------------------------------------------------------------


async def test_user_checks_sync_and_async_with_every_kind_of_answer() -> None:
    start()

    async def async_ok() -> None:
        await asyncio.sleep(0)

    class Pool:
        async def __call__(self) -> dict[str, Any]:
            return {"status": "warn", "observedValue": 95, "observedUnit": "%", "output": "pool nearly full"}

    victor_otel.add_health_check("sync_ok", lambda: True)
    victor_otel.add_health_check("async_ok", async_ok, component_type="datastore")
    victor_otel.add_health_check("pool:utilization", Pool())
    victor_otel.add_health_check("partial", functools.partial(asyncio.sleep, 0))
    victor_otel.add_health_check("says_fail", lambda: "fail")
    victor_otel.add_health_check("false", lambda: False)
    victor_otel.add_health_check("odd", lambda: 42)
    victor_otel.add_health_check("coroutine_from_lambda", lambda: async_ok())
    report = await check_health()
    status = {c.key: c.status for c in report.checks}
    assert status["sync_ok"] == status["async_ok"] == status["partial"] == "pass"
    assert status["pool:utilization"] == "warn" and status["says_fail"] == status["false"] == "fail"
    ok = report.check("sync_ok")
    assert ok.observed_unit == "ms" and ok.observed_value >= 0  # the check's own duration
    assert report.check("async_ok").component_type == "datastore"
    pool = report.check("pool:utilization")
    assert (pool.component_id, pool.observed_value, pool.observed_unit, pool.output) == (
        "pool", 95, "%", "pool nearly full")
    assert "returned a int" in report.check("odd").output
    assert "register the `async def` function itself" in report.check("coroutine_from_lambda").output


async def test_a_raising_check_fails_alone_with_its_reason() -> None:
    start()

    def boom() -> None:
        raise ConnectionError("vector store refused the connection")

    async def aboom() -> None:
        raise KeyError("index")

    victor_otel.add_health_check("vector_store", boom)
    victor_otel.add_health_check("index", aboom)
    victor_otel.add_health_check("cache", lambda: None)
    report = await check_health()
    assert report.check("vector_store").output == "ConnectionError: vector store refused the connection"
    assert report.check("index").output == "KeyError: 'index'"
    assert report.check("cache").status == "pass" and report.check("telemetry:lifecycle").status == "pass"
    assert report.status == "fail"


async def test_a_hung_sync_check_times_out_alone_and_is_never_started_twice() -> None:
    start()
    release = threading.Event()
    calls: list[int] = []

    def hung() -> bool:
        calls.append(1)
        release.wait(10)
        return True

    victor_otel.add_health_check("hung", hung, timeout=0.2)
    victor_otel.add_health_check("fine", lambda: True)
    try:
        first = await check_health()
        assert first.check("hung").status == "fail" and first.check("hung").output == "timed out after 0.2 s"
        assert first.check("fine").status == "pass"
        second = await check_health()  # the thread still hangs: reported at once, not started again
        assert second.check("hung").output.startswith("still running after")
        assert len(calls) == 1
    finally:
        release.set()
    for _ in range(100):  # the hung run finishes: its own result is used from then on
        if (await check_health()).check("hung").status == "pass":
            break
        await asyncio.sleep(0.02)
    assert (await check_health()).check("hung").status == "pass"


async def test_a_hung_async_check_is_cancelled_even_if_it_swallows_cancellation() -> None:
    start()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # ignores the cancellation for a while

    victor_otel.add_health_check("stubborn", stubborn, timeout=0.1)
    report = await check_health()
    assert report.check("stubborn").output == "timed out after 0.1 s"
    assert (await check_health()).check("stubborn").output.startswith("still running after")


async def test_critical_checks_gate_readiness_the_others_only_the_overall_status() -> None:
    start()
    victor_otel.add_health_check("search", lambda: False)  # not critical
    ready = await check_health("ready")
    assert ready.status == "pass" and ready.check("search") is None
    assert (await check_health()).status == "fail"
    victor_otel.add_health_check("database", lambda: False, critical=True)
    ready = await check_health("ready")
    assert ready.status == "fail" and ready.check("database").critical


def test_add_health_check_refuses_bad_arguments() -> None:
    for name in ("", "a:b:c", ":x", "x:", "bad\nname", 3):
        with pytest.raises(VictorOtelConfigError, match="name: "):
            victor_otel.add_health_check(name, lambda: True)  # type: ignore[arg-type]
    with pytest.raises(VictorOtelConfigError, match="check: "):
        victor_otel.add_health_check("x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(VictorOtelConfigError, match="timeout: 0"):
        victor_otel.add_health_check("x", lambda: True, timeout=0)
    with pytest.raises(VictorOtelConfigError, match="critical: "):
        victor_otel.add_health_check("x", lambda: True, critical="yes")  # type: ignore[arg-type]
    assert victor_otel.remove_health_check("x") is False


async def test_results_are_cached_for_the_ttl() -> None:
    victor_otel.init(traces_exporter="none", health_cache_ttl=60)
    calls: list[int] = []
    victor_otel.add_health_check("counted", lambda: calls.append(1))
    for _ in range(20):
        await check_health()
    await asyncio.gather(*(check_health() for _ in range(50)))
    assert len(calls) == 1
    record("Chat", 0, 50)  # the built-in checks are cached as well
    assert (await check_health()).check("Chat:error_rate") is None


async def test_concurrent_evaluations_share_one_run() -> None:
    start()
    calls: list[int] = []

    async def slow() -> None:
        calls.append(1)
        await asyncio.sleep(0.05)

    victor_otel.add_health_check("slow", slow)
    reports = await asyncio.gather(*(check_health() for _ in range(30)))
    assert {r.check("slow").status for r in reports} == {"pass"} and len(calls) == 1


# -- readiness and liveness -------------------------------------------------------------------------------


async def test_readiness_follows_the_lifecycle() -> None:
    before = await check_health("ready")
    assert before.status == "fail" and "init() has not run" in before.check("telemetry:lifecycle").output
    telemetry = start()
    assert (await check_health("ready")).status == "pass"
    telemetry.lifecycle = Lifecycle.DRAINING  # what shutdown() does first (over a socket: the e2e test)
    draining = await check_health("ready")
    assert draining.status == "fail" and draining.check("telemetry:lifecycle").observed_value == "draining"
    assert (await check_health()).status == "fail"  # overall fails whenever readiness does
    telemetry.lifecycle = Lifecycle.READY
    victor_otel.shutdown()
    assert (await check_health("ready")).status == "fail"


async def test_liveness_ignores_downstreams_coordinators_and_lifecycle() -> None:
    victor_otel.add_health_check("database", lambda: False, critical=True)
    record("Chat", 0, 100)
    live = await check_health("live")  # not even initialised
    assert live.status == "pass" and [c.key for c in live.checks] == ["eventloop:lag"]


async def test_liveness_fails_after_the_event_loop_was_blocked() -> None:
    start(health_max_loop_lag=0.2)
    assert (await check_health("live")).status == "pass"  # starts the heartbeat
    time.sleep(0.5)  # wedge this loop on purpose
    live = await check_health("live")
    assert live.status == "fail" and live.check("eventloop:lag").observed_value >= 0.2
    assert "blocked for" in live.check("eventloop:lag").output
    for _ in range(200):  # recovers once the stall is older than health_max_loop_lag
        await asyncio.sleep(0.02)
        if (await check_health("live")).status == "pass":
            break
    assert (await check_health("live")).status == "pass"


# -- HTTP: format, status codes, token, robustness ---------------------------------------------------------


def test_the_ietf_response_format() -> None:
    with client(service_version="1.4.2", environment="prod", health_min_calls=1) as http:
        record("Chat", 98, 2)
        response = http.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPE
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert (body["status"], body["version"], body["serviceId"]) == ("warn", "1.4.2", "victor")
    assert "prod" in body["description"]
    assert body["output"].startswith("Chat:error_rate: 2.0% of 100 calls failed")
    for key, readings in body["checks"].items():
        assert 1 <= len(key.split(":")) <= 2
        for reading in readings:
            assert {"componentId", "componentType", "observedValue", "status", "time"} <= set(reading)
            assert reading["status"] in ("pass", "warn", "fail") and ISO_UTC.match(reading["time"])
            assert ("output" in reading) == (reading["status"] != "pass")  # the draft: no output on pass
    (error_rate,) = body["checks"]["Chat:error_rate"]
    assert error_rate == {
        "componentId": "Chat", "componentType": "component", "observedValue": 0.02, "observedUnit": "ratio",
        "status": "warn", "time": error_rate["time"], "output": error_rate["output"],
    }
    assert {"telemetry:lifecycle", "Chat:latency_p95", "process:memory", "process:cpu",
            "eventloop:lag"} <= set(body["checks"])


def test_http_status_codes_per_endpoint_and_head() -> None:
    with client() as http:
        assert [http.get(p).status_code for p in ("/health", "/health/ready", "/health/live")] == [200, 200, 200]
        assert http.head("/health/ready").status_code == 200
        victor_otel.add_health_check("db", lambda: False, critical=True)
        assert [http.get(p).status_code for p in ("/health", "/health/ready", "/health/live")] == [503, 503, 200]
        assert http.get("/health/ready").json()["status"] == "fail"


def test_detailed_has_statistics_versions_uptime_and_resource() -> None:
    with client(service_version="2.0", resource_attributes={"k8s.pod.name": "victor-0"}) as http:
        record("Chat", 9, 1, duration=0.2)
        get_registry().coordinator("Chat").record_cache(True)
        body = http.get("/health/detailed").json()
    chat = body["coordinators"]["Chat"]
    assert (chat["executions"], chat["errors"], chat["windowCalls"], chat["errorRate"]) == (10, 1, 10, 0.1)
    assert chat["cacheHitRate"] == 1.0 and chat["throughput"] > 0
    assert 0.1 < chat["latencySeconds"]["p50"] <= 0.25 and set(chat["latencySeconds"]) == {"p50", "p95", "p99"}
    assert chat["thresholds"]["error_rate_fail"] == 0.05
    assert body["versions"]["service"] == "2.0" and body["versions"]["victor_otel"] == victor_otel.__version__
    assert body["uptimeSeconds"] >= 0 and ISO_UTC.match(body["startedAt"]) and body["lifecycle"] == "ready"
    assert body["resource"]["k8s.pod.name"] == "victor-0" and body["resource"]["service.name"] == "victor"


def test_the_token_closes_detailed_only() -> None:
    with client(health_token="s3cret-token") as http:
        assert http.get("/health/detailed").status_code == 401
        denied = http.get("/health/detailed", headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
        assert "s3cret" not in denied.text
        allowed = http.get("/health/detailed", headers={"Authorization": "Bearer s3cret-token"})
        assert allowed.status_code == 200 and "coordinators" in allowed.json()
        assert http.get("/health").status_code == 200 and "coordinators" not in http.get("/health").json()
    telemetry = victor_otel.current()
    assert telemetry is not None and "s3cret" not in repr(telemetry.settings)
    assert "s3cret" not in "".join(telemetry.settings.differences(Settings()))


def test_the_token_from_the_environment_applies_even_before_init(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VICTOR_OTEL_HEALTH_TOKEN", "abc")
    with TestClient(victor_otel.setup_health_endpoints(Starlette())) as http:
        assert http.get("/health/detailed").status_code == 401
        assert http.get("/health/detailed", headers={"Authorization": "Bearer abc"}).status_code != 401


def test_an_internal_error_is_a_503_never_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(scope: str = "overall") -> None:
        raise RuntimeError("bug")

    with client() as http:
        monkeypatch.setattr(get_health(), "evaluate", broken)
        response = http.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "fail", "output": "health evaluation failed: RuntimeError: bug"}


async def test_through_httpx_asgi_transport_on_fastapi() -> None:
    start()
    app = victor_otel.instrument_app(FastAPI())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http:
        responses = await asyncio.gather(*(http.get(p) for p in ("/health", "/health/ready", "/health/live")))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(r.headers["content-type"] == MEDIA_TYPE for r in responses)


def test_setup_is_idempotent_and_instrument_app_adds_the_routes() -> None:
    app = Starlette()
    victor_otel.setup_health_endpoints(app)
    victor_otel.instrument_app(app)
    victor_otel.setup_health_endpoints(app)
    paths = [r.path for r in app.routes]  # type: ignore[attr-defined]
    assert sorted(paths) == [
        "/debug", "/debug/{page:path}", "/health", "/health/detailed", "/health/live", "/health/ready", "/metrics",
    ]
    custom = victor_otel.setup_health_endpoints(Starlette(), prefix="/healthz")
    assert next(r.path for r in custom.routes) == "/healthz"  # type: ignore[attr-defined]


def test_the_seed_import_path_still_works() -> None:
    from victor_otel.health import setup_health_endpoints

    assert setup_health_endpoints is victor_otel.setup_health_endpoints


# -- the metric ---------------------------------------------------------------------------------------


def test_health_status_gauge_on_metrics() -> None:
    start(health_min_calls=1)
    samples = scrape()  # no probe yet: the built-in checks are read at collection
    assert health_value(samples, "telemetry:lifecycle") == 1.0
    assert health_value(samples, "process:memory") == 1.0
    record("ChatCoordinator", 98, 2)
    record("ToolCoordinator", 50, 50)
    samples = scrape()
    assert value(samples, "victor_health_status", check="ChatCoordinator:error_rate",
                 coordinator="ChatCoordinator") == 0.5
    assert value(samples, "victor_health_status", check="ToolCoordinator:error_rate",
                 coordinator="ToolCoordinator") == 0.0
    assert value(samples, "victor_health_status", check="ToolCoordinator:latency_p95",
                 coordinator="ToolCoordinator") == 1.0
    victor_otel.add_health_check("vector_store", lambda: False)
    assert health_value(scrape(), "vector_store") is None  # not evaluated yet
    asyncio.run(check_health())
    assert health_value(scrape(), "vector_store") == 0.0
    assert health.STATUS_VALUES == {"pass": 1.0, "warn": 0.5, "fail": 0.0}


def test_health_status_gauge_follows_each_new_telemetry() -> None:
    start()
    victor_otel.shutdown()
    start(service_name="again")
    assert health_value(scrape(), "telemetry:lifecycle") == 1.0


def test_health_status_stays_within_the_cardinality_limit_failing_checks_named_first() -> None:
    """Two checks per coordinator made victor_health_status reach 2,007 label sets for a cap of 1,000."""
    start(health_min_calls=1, cardinality_limit=6)
    for i in range(5):
        record(f"Passing{i}", 10)
    record("Failing", 1, 9)
    samples = scrape()
    sets = [labels for (name, labels), _ in samples.items()
            if name == "victor_health_status" and dict(labels).get("coordinator")]
    assert len(sets) == 6 + 1, sets  # the limit, plus one overflow series
    assert health_value(samples, "Failing:error_rate") == 0.0
    overflow = [v for (name, labels), v in samples.items()
                if name == "victor_health_status" and ("otel_metric_overflow", "true") in labels]
    assert overflow == [1.0]  # the folded checks all pass: the overflow series says so
    record("Failing", 0, 0)
    record("Passing0", 0, 10)  # now failing too: it gets a name back before passing checks do
    assert health_value(scrape(), "Passing0:error_rate") == 0.0


def test_with_a_token_probes_get_statuses_but_no_coordinator_names() -> None:
    """With health_token set, /health listed every coordinator name (513 KB for 2,008 checks)."""
    with client(health_token="s3cret-token", health_min_calls=1) as http:
        for i in range(30):
            record(f"SecretName{i}", 10, 0 if i else 10)
        for path in ("/health", "/health/ready"):
            anonymous = http.get(path)
            assert "SecretName" not in anonymous.text, path
        overall = http.get("/health")
        assert overall.status_code == 503 and overall.json()["status"] == "fail"  # the same verdict
        folded = overall.json()["checks"]["coordinators:error_rate"][0]
        assert folded["status"] == "fail" and folded["observedValue"] == 30
        assert "1 failing and 0 warning of 30" in folded["output"]
        named = http.get("/health", headers={"Authorization": "Bearer s3cret-token"})
        assert "SecretName0:error_rate" in named.json()["checks"]
    victor_otel.shutdown()
    with client(health_min_calls=1) as http:  # no token configured: nothing to hide
        record("OpenName", 10)
        assert "OpenName:error_rate" in http.get("/health").json()["checks"]
