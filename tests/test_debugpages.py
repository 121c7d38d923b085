"""The /debug pages through Starlette's TestClient and over real sockets: content, filters, the
waterfall's order, escaping, redaction, the token and the off switch."""

from __future__ import annotations

import logging
import re
import urllib.error
import urllib.request
from html import unescape
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.testclient import TestClient

import victor_otel
from tests.servers import serve
from victor_otel import debugpages
from victor_otel.config import Settings
from victor_otel.errors import VictorOtelConfigError

HOSTILE = '<script>alert("x")</script>'
SECRET = "sk-0123456789abcdefghijklmnop"


def start(**settings: Any) -> victor_otel.Telemetry:
    return victor_otel.init(service_name="debug-test", traces_exporter="none",
                            span_exporters=[InMemorySpanExporter()], **settings)


def make_calls() -> None:
    """One successful trace (plan -> retrieve -> answer) and one failed one, with a log record each."""
    logger = logging.getLogger("test.debugpages")
    logger.setLevel(logging.INFO)

    @victor_otel.coordinator("ChatCoordinator")
    class Chat:
        def plan(self, goal: str) -> str:
            logger.info("planning %s with api_key=%s", goal, SECRET)
            self.retrieve(goal)
            return self.answer(goal)

        def retrieve(self, goal: str) -> str:
            return goal

        def answer(self, goal: str) -> str:
            if goal == HOSTILE:
                raise ValueError(f"bad goal {goal}")
            return goal

    chat = Chat()
    chat.plan("weather")
    with pytest.raises(ValueError):
        chat.plan(HOSTILE)


def rows(html: str, cls: str) -> list[str]:
    return re.findall(rf'<tr class={cls} data-trace-id="([0-9a-f]{{32}})"', html)


@pytest.fixture
def client() -> Any:
    start()
    make_calls()
    with TestClient(victor_otel.instrument_app(Starlette())) as c:
        yield c


def test_coordinators_page_shows_calls_errors_and_percentiles(client: TestClient) -> None:
    response = client.get("/debug")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    row = re.search(r'<tr><td><a href="/debug/traces\?coordinator=ChatCoordinator">ChatCoordinator</a></td>'
                    r"<td class=n>(\d+)</td><td class=n>(\d+)</td><td class=n>([\d.]+)%</td>", html)
    assert row is not None, html
    assert (int(row[1]), int(row[2])) == (6, 2)  # plan, retrieve, answer twice; plan and answer failed once
    assert float(row[3]) == pytest.approx(33.3, abs=0.1)
    methods = re.findall(
        r"<tr><td>ChatCoordinator</td><td>(\w+)</td><td class=n>(\d+)</td><td class=n>(\d+)</td>", html
    )
    assert sorted(methods) == [("answer", "2", "1"), ("plan", "2", "1"), ("retrieve", "2", "0")]


def test_traces_list_and_its_filters(client: TestClient) -> None:
    everything = rows(client.get("/debug/traces").text, "trace")
    failed = rows(client.get("/debug/traces", params={"outcome": "error"}).text, "trace")
    ok = rows(client.get("/debug/traces", params={"outcome": "ok"}).text, "trace")
    assert len(everything) == 2 and len(failed) == 1 and len(ok) == 1
    assert set(failed) | set(ok) == set(everything)
    assert rows(client.get("/debug/traces", params={"coordinator": "NoSuch"}).text, "trace") == []
    assert len(rows(client.get("/debug/traces", params={"coordinator": "ChatCoordinator"}).text, "trace")) == 2


def test_request_id_filter_finds_the_request(client: TestClient) -> None:
    app = client.app

    async def hello(request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        make_calls_once = victor_otel.instrument("ToolCoordinator", "run")(lambda: "ran")
        return PlainTextResponse(make_calls_once())

    app.add_route("/hello", hello)  # type: ignore[attr-defined]
    client.get("/hello", headers={"X-Request-ID": "req-123"})
    client.get("/hello", headers={"X-Request-ID": "req-456"})
    found = rows(client.get("/debug/traces", params={"request_id": "req-123"}).text, "trace")
    assert len(found) == 1
    page = client.get(f"/debug/traces/{found[0]}").text
    assert "req-123" in page and "ToolCoordinator.run" in page


def test_waterfall_shows_spans_in_tree_order_with_events_and_logs_redacted_and_escaped(client: TestClient) -> None:
    (failed,) = rows(client.get("/debug/traces", params={"outcome": "error"}).text, "trace")
    html = client.get(f"/debug/traces/{failed}").text
    names = [unescape(n) for n in re.findall(r'data-span-name="([^"]*)"', html)]
    assert names == ["ChatCoordinator.plan", "ChatCoordinator.retrieve", "ChatCoordinator.answer"]
    depths = re.findall(r'data-depth="(\d+)"', html)
    assert depths == ["0", "1", "1"]
    assert "exception" in html and "ValueError" in html
    assert HOSTILE not in html and "<script" not in html
    assert "&lt;script&gt;" in html  # shown, escaped
    assert SECRET not in html, "the log message's secret is redacted"
    assert "planning" in html  # the trace's log record beside the waterfall


def test_unknown_and_malformed_trace_ids_are_404(client: TestClient) -> None:
    assert client.get("/debug/traces/" + "0" * 32).status_code == 404
    response = client.get("/debug/traces/" + HOSTILE)
    assert response.status_code == 404 and HOSTILE not in response.text
    assert client.get("/debug/nothing").status_code == 404


def test_grafana_link_when_configured() -> None:
    start(debug_trace_url="http://localhost:3000/explore?trace={trace_id}&x=1")
    make_calls()
    with TestClient(victor_otel.instrument_app(Starlette())) as c:
        (trace_id, _) = rows(c.get("/debug/traces").text, "trace")
        html = c.get(f"/debug/traces/{trace_id}").text
    assert f'href="http://localhost:3000/explore?trace={trace_id}&amp;x=1"' in html


def test_trace_url_must_hold_the_trace_id_placeholder() -> None:
    with pytest.raises(VictorOtelConfigError, match="debug_trace_url"):
        Settings.from_sources({"debug_trace_url": "http://localhost:3000/explore"})
    with pytest.raises(VictorOtelConfigError, match="debug_trace_url"):
        Settings.from_sources({"debug_trace_url": "javascript:alert({trace_id})"})


def test_health_token_protects_the_pages() -> None:
    start(health_token="t0ken")
    with TestClient(victor_otel.instrument_app(Starlette())) as c:
        refused = c.get("/debug")
        assert refused.status_code == 401 and "Bearer" in refused.headers["www-authenticate"]
        assert "t0ken" not in refused.text
        assert c.get("/debug", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/debug/traces", headers={"Authorization": "Bearer t0ken"}).status_code == 200


def test_off_unless_enabled_when_traces_leave_over_otlp() -> None:
    assert Settings.from_sources({}, {}).debug_pages_enabled  # the embedded default
    assert not Settings.from_sources({"traces_exporter": "otlp"}, {}).debug_pages_enabled
    assert Settings.from_sources({"traces_exporter": "otlp", "debug_pages": True}, {}).debug_pages_enabled
    assert not Settings.from_sources({}, {"VICTOR_OTEL_DEBUG_PAGES": "false"}).debug_pages_enabled
    with pytest.raises(VictorOtelConfigError, match="VICTOR_OTEL_DEBUG_PAGES"):
        Settings.from_sources({}, {"VICTOR_OTEL_DEBUG_PAGES": "sometimes"})
    telemetry = start(debug_pages=False)
    assert telemetry.trace_buffer is None  # nothing recorded either
    with TestClient(victor_otel.instrument_app(Starlette())) as c:
        assert c.get("/debug").status_code == 404


def test_the_pages_create_no_traces_of_their_own(client: TestClient) -> None:
    before = len(rows(client.get("/debug/traces").text, "trace"))
    for _ in range(3):
        client.get("/debug")
    assert len(rows(client.get("/debug/traces").text, "trace")) == before


def test_pages_over_a_real_socket_in_the_app() -> None:
    start()
    make_calls()
    with (
        serve(victor_otel.instrument_app(Starlette())) as base,
        urllib.request.urlopen(base + "/debug/traces?outcome=error", timeout=10) as response,
    ):
        html = response.read().decode()
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert len(rows(html, "trace")) == 1


def test_pages_on_the_standalone_metrics_server() -> None:
    telemetry = start(metrics_port=0)
    make_calls()
    base = telemetry.metrics_server.url.removesuffix("/metrics")
    with urllib.request.urlopen(base + "/debug", timeout=10) as response:
        assert "ChatCoordinator" in response.read().decode()
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        assert b"victor_coordinator_executions_total" in response.read()
    request = urllib.request.Request(base + "/debug", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405


def test_standalone_pages_only_on_loopback_unless_a_token_guards_them() -> None:
    from victor_otel.exposition import _loopback

    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost")
    assert not _loopback("0.0.0.0") and not _loopback("10.1.2.3") and not _loopback("example.org")


def test_the_embedded_default_keeps_traces_for_the_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """``init()`` with nothing configured: no exporter, yet the pages show the traces (kept in memory)."""
    for variable in ("OTEL_TRACES_EXPORTER", "VICTOR_OTEL_TRACES_FILE", "VICTOR_OTEL_DEBUG_PAGES"):
        monkeypatch.delenv(variable, raising=False)
    telemetry = victor_otel.init(service_name="embedded")
    assert telemetry.settings.traces_exporter == ("none",) and telemetry.trace_buffer is not None
    make_calls()
    page = debugpages.respond("GET", "/debug/traces", "", None)
    assert page.status == 200
    assert len(rows(page.body.decode(), "trace")) == 2  # the successful plan and the failed one


def test_traces_switched_off_by_name_make_no_span_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VICTOR_OTEL_DEBUG_PAGES", raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    telemetry = victor_otel.init(service_name="no-spans")
    assert telemetry.tracer_provider is None and telemetry.trace_buffer is None
    assert telemetry.settings.debug_pages_enabled  # the coordinator pages stay


def test_respond_before_init_is_404() -> None:
    assert debugpages.respond("GET", "/debug", "", None).status == 404


def test_secrets_in_span_names_attributes_and_events_never_reach_a_page() -> None:
    telemetry = start()
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span(f"call with api_key={SECRET}") as span:
        span.set_attribute("http.url", f"https://user:hunter2pass@example.org/x?token={SECRET}")
        span.set_attribute("authorization", "Bearer abcdefghijklmnopqrstuvwxyz012345")
        span.add_event("retry", {"detail": f"key {SECRET}"})
    with TestClient(victor_otel.instrument_app(Starlette())) as c:
        listing = c.get("/debug/traces").text
        (trace_id,) = rows(listing, "trace")
        page = c.get(f"/debug/traces/{trace_id}").text
    for html in (listing, page):
        assert SECRET not in html and "hunter2pass" not in html and "abcdefghijklmnopqrstuvwxyz012345" not in html
    assert "[REDACTED]" in page and "retry" in page
