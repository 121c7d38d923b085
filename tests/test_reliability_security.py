"""Security over real sockets: loopback binds, credentials on /metrics and /health/detailed, redaction of
what leaves the process (logs, span events, exception messages), and no unbounded value as a label."""

from __future__ import annotations

import base64
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import victor_otel
from tests.faults import FaultServer, free_port, wait_for
from tests.servers import serve
from victor_otel import cli
from victor_otel.config import Settings

TOKEN = "metrics-token-0123456789"
BASIC = ("prometheus", "s3cret:with:colons")
HEALTH_TOKEN = "health-token-9876543210"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def app_with_routes() -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def user(user_id: str) -> dict[str, str]:
        return {"user": user_id}

    victor_otel.instrument_app(app)
    return app


# -- binds ------------------------------------------------------------------------------------------


def test_standalone_servers_bind_the_loopback_address_by_default() -> None:
    assert Settings.from_sources({}, {}).metrics_host == "127.0.0.1"
    telemetry = victor_otel.init(service_name="sec", traces_exporter="none", metrics_port=0)
    server = telemetry.metrics_server
    assert server is not None and server._server.server_address[0] == "127.0.0.1"
    assert httpx.get(server.url).status_code == 200
    standalone = victor_otel.start_metrics_server(0)
    try:
        assert standalone._server.server_address[0] == "127.0.0.1" and standalone.url.startswith("http://127.0.0.1:")
    finally:
        standalone.close()
    assert cli.build_parser().parse_args(["demo"]).host == "127.0.0.1"


# -- /metrics credentials ---------------------------------------------------------------------------


@pytest.fixture(params=["standalone", "app"])
def metrics_url(request: pytest.FixtureRequest) -> Iterator[str]:
    victor_otel.init(service_name="sec", traces_exporter="none", metrics_token=TOKEN,
                     metrics_basic_auth=":".join(BASIC))
    if request.param == "standalone":
        server = victor_otel.start_metrics_server(0)
        try:
            yield server.url
        finally:
            server.close()
    else:
        with serve(app_with_routes()) as url:
            yield f"{url}/metrics"


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("", 401),
        ("Bearer", 401),
        ("Bearer wrong-token", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"bearer {TOKEN}", 200),
        (f"Bearer {TOKEN}", 200),
        (basic(*BASIC), 200),
        (basic(BASIC[0], "guess"), 401),
        ("Basic !!!not-base64!!!", 401),
        ("Basic " + base64.b64encode(b"\xff\xfe").decode(), 401),
        (f"Token {TOKEN}", 401),
        ("Bearer \u00e9\u00e8".encode("latin-1"), 401),  # not ASCII on the wire
    ],
)
def test_metrics_requires_the_configured_credentials(metrics_url: str, authorization: str | bytes | None,
                                                      status: int) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.get(metrics_url, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert "Bearer" in response.headers["www-authenticate"] and "Basic" in response.headers["www-authenticate"]
        assert b"victor_coordinator" not in response.content and TOKEN not in response.text
    else:
        assert "victor_coordinator_uptime_seconds" in response.text


def test_metrics_answers_only_reads(metrics_url: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for method in ("POST", "PUT", "DELETE", "PATCH", "TRACE"):
        assert httpx.request(method, metrics_url, headers=headers).status_code == 405
    assert httpx.get(metrics_url, headers=headers).status_code == 200


def test_without_credentials_configured_metrics_is_open_and_health_is_not_affected() -> None:
    victor_otel.init(service_name="sec", traces_exporter="none", metrics_token=TOKEN)
    with serve(app_with_routes()) as url:
        assert httpx.get(f"{url}/health/live").status_code == 200  # probes need no metrics credentials
        assert httpx.get(f"{url}/metrics").status_code == 401
    victor_otel.shutdown()
    victor_otel.init(service_name="sec", traces_exporter="none")
    with serve(app_with_routes()) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200


def test_secrets_never_appear_in_messages_or_reprs() -> None:
    telemetry = victor_otel.init(service_name="sec", traces_exporter="none", metrics_token=TOKEN)
    assert TOKEN not in repr(telemetry.settings)
    with pytest.raises(victor_otel.VictorOtelInitError) as error:
        victor_otel.init(service_name="sec", traces_exporter="none", metrics_token="another-token-123")
    assert TOKEN not in str(error.value) and "another-token-123" not in str(error.value)
    assert "metrics_token" in str(error.value) and "***" in str(error.value)
    for bad in ("has a space", "caf\u00e9-token", "x" * 5000):
        with pytest.raises(victor_otel.VictorOtelConfigError, match="metrics_token") as bad_error:
            Settings.from_sources({"metrics_token": bad}, {})
        assert bad not in str(bad_error.value)
    with pytest.raises(victor_otel.VictorOtelConfigError, match="VICTOR_OTEL_METRICS_BASIC_AUTH") as no_user:
        Settings.from_sources({}, {"VICTOR_OTEL_METRICS_BASIC_AUTH": ":only-a-password"})
    assert "only-a-password" not in str(no_user.value)


# -- /health/detailed behind its token, showing what was lost -------------------------------------


def test_health_detailed_needs_its_token_and_shows_dropped_and_failed_exports(monkeypatch: Any) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    down = FaultServer(port=free_port())  # the collector is down
    telemetry = victor_otel.init(service_name="sec", traces_exporter="otlp", otlp_endpoint=down.url,
                                 export_timeout=0.3, max_queue_size=10, health_token=HEALTH_TOKEN)

    @victor_otel.instrument(coordinator="SecCoordinator", method="work")
    def work() -> None:
        pass

    for _ in range(500):
        work()
    wait_for(lambda: telemetry.export_stats()["traces"]["failure"] > 0, what="a failed export")
    with serve(app_with_routes()) as url:
        assert httpx.get(f"{url}/health/detailed").status_code == 401
        assert httpx.get(f"{url}/health/detailed", headers={"Authorization": "Bearer nope"}).status_code == 401
        response = httpx.get(f"{url}/health/detailed", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert HEALTH_TOKEN not in response.text
        exports = body["exports"]["traces"]
        assert exports["dropped"] > 0 and exports["failure"] > 0 and exports["queue_capacity"] == 10
        checks = body["checks"]
        assert checks["telemetry:dropped"][0]["status"] == "warn"
        assert checks["telemetry:export_errors"][0]["status"] == "warn"
        # The summary endpoints stay open (probes carry no token) and never show the numbers' details.
        assert httpx.get(f"{url}/health/ready").status_code == 200


# -- redaction of everything that leaves the process ------------------------------------------------

SECRET_PASSWORD = "hunter2-do-not-leak"
SECRET_KEY = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2"


def test_secrets_are_redacted_in_logs_span_events_and_exception_messages(monkeypatch: Any) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "20")
    stream = io.StringIO()
    with FaultServer() as collector:
        victor_otel.init(service_name="sec", traces_exporter="otlp", logs_exporter="otlp",
                         otlp_endpoint=collector.url, export_timeout=2.0)
        victor_otel.setup_coordinator_logging(level="DEBUG", stream=stream)
        try:
            @victor_otel.coordinator("SecretCoordinator")
            class SecretCoordinator:
                def login(self, password: str) -> None:
                    raise PermissionError(f"login refused: password={password} api_key={SECRET_KEY}")

            with pytest.raises(PermissionError) as raised:
                SecretCoordinator().login(SECRET_PASSWORD)
            assert SECRET_PASSWORD in str(raised.value)  # the application's own exception is untouched
            logger = victor_otel.get_coordinator_logger("SecretCoordinator")
            logger.info("retrying with token=%s", SECRET_PASSWORD, extra={"api_key": SECRET_KEY})
            victor_otel.shutdown()  # flushes spans and logs to the collector
        finally:
            victor_otel.teardown_coordinator_logging()
        exported = json.dumps({"spans": collector.spans, "logs": [collector.log_bodies, collector.log_attributes]},
                              default=str)
    written = stream.getvalue()
    assert collector.spans and collector.log_bodies and written
    (span,) = [s for s in collector.spans if s["name"] == "SecretCoordinator.login"]
    (event,) = span["events"]
    assert "[REDACTED]" in event["attributes"]["exception.message"] and "[REDACTED]" in span["status"]
    for text in (exported, written):
        assert SECRET_PASSWORD not in text and SECRET_KEY not in text


@pytest.mark.parametrize("exporter", ["otlp", "console"])
def test_secrets_never_leave_on_the_server_span(exporter: str, monkeypatch: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """An exception escaping a handler, and a secret in the query string, are recorded by the FastAPI
    instrumentation's server span, not by our decorators: the span still leaves redacted."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    app = FastAPI()

    @app.get("/login")
    async def login(password: str = "") -> None:
        raise RuntimeError(f"upstream refused key {SECRET_KEY} for password={password}")

    with FaultServer() as collector:
        victor_otel.init(service_name="sec", traces_exporter=exporter, otlp_endpoint=collector.url,
                         export_timeout=2.0)
        victor_otel.instrument_app(app)
        with serve(app) as url:
            response = httpx.get(f"{url}/login", params={"password": SECRET_PASSWORD, "q": "7"},
                                 headers={"Authorization": f"Bearer {SECRET_KEY}"})
        assert response.status_code == 500
        victor_otel.shutdown()
        exported = json.dumps(collector.spans, default=str) if exporter == "otlp" else capsys.readouterr().out
    assert "GET /login" in exported and "exception" in exported and "[REDACTED]" in exported
    assert SECRET_PASSWORD not in exported and SECRET_KEY not in exported
    if exporter == "otlp":
        (server_span,) = [s for s in collector.spans if s["name"] == "GET /login"]
        urls = [v for k, v in server_span["attributes"].items() if k in ("http.url", "url.full", "url.query")]
        assert urls and all("password=[REDACTED]" in u and "q=7" in u for u in urls)  # the rest stays readable


# -- unbounded values never become labels -----------------------------------------------------------


def test_request_ids_user_ids_hosts_and_paths_never_become_labels() -> None:
    victor_otel.init(service_name="sec", traces_exporter="none")

    @victor_otel.instrument(coordinator="UserCoordinator", method="load")
    def load(user_id: str) -> str:
        return user_id

    unique = [uuid.uuid4().hex for _ in range(40)]
    with serve(app_with_routes()) as url, httpx.Client() as client:
        for i, marker in enumerate(unique):
            load(marker)
            client.get(f"{url}/users/{marker}", headers={
                "X-Request-ID": f"req-{marker}", "Host": f"{marker}.example", "User-Agent": marker,
                "baggage": f"request_id={marker},user_id={marker}", "Cookie": f"session={marker}",
            })
            client.get(f"{url}/nowhere/{marker}?q={marker}")
            client.request(f"M{i}", f"{url}/users/{marker}")
        text = client.get(f"{url}/metrics").text
    for marker in unique:
        assert marker not in text
    series = [line for line in text.splitlines() if line.startswith("http_server_duration_milliseconds_count")]
    assert 1 <= len(series) <= 6, series  # per status code and method class, never per request
    assert "http_host" not in text and "http_server_name" not in text


def test_the_cardinality_cap_folds_unbounded_coordinator_names(caplog: pytest.LogCaptureFixture) -> None:
    victor_otel.init(service_name="sec", traces_exporter="none", cardinality_limit=5)
    with caplog.at_level(logging.WARNING, logger="victor_otel"):
        for i in range(50):
            with victor_otel.track("CappedCoordinator", f"op{i}"):
                pass
    text = victor_otel.render()[0].decode()
    executions = [line for line in text.splitlines() if line.startswith("victor_coordinator_executions_total")]
    assert len(executions) == 6  # five kept and one overflow series
    assert any('otel_metric_overflow="true"' in line and line.endswith(" 45.0") for line in executions)
    assert "cardinality" in caplog.text.lower() or "label sets" in caplog.text
