"""context.py: request IDs as trace context (validation, baggage, helpers, the ASGI middleware)."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import victor_otel
from victor_otel import context, logs
from victor_otel.web import requestid

GENERATED = re.compile(r"^[0-9a-f]{32}$")
HOSTILE = [
    b"abc\ndef",
    b"abc\r\nX-Evil: 1",
    b"a" * 10_240,
    "ünïcödé-✓-请求".encode(),
    b'"quoted"',
    b"{braces}",
    b'{"level":"ERROR","duration_ms":99999}',
    b'x", "level": "ERROR',
    b"'; DROP TABLE requests; --",
    b"a" * 129,
    b"with space",
    b"nul\x00byte",
    b"",
]


@pytest.fixture(autouse=True)
def _restore_propagator() -> Iterator[None]:
    before = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(before)
    logs.teardown_coordinator_logging()


# -- validation and helpers -----------------------------------------------------------------------


@given(st.text(max_size=200))
def test_only_sane_tokens_are_accepted(value: str) -> None:
    accepted = context.valid_request_id(value)
    sane = 0 < len(value) <= 128 and re.fullmatch(r"[A-Za-z0-9._:-]+", value) is not None
    assert accepted == (value if sane else None)


@given(st.text(alphabet="abcXYZ019._:-", min_size=1, max_size=128))
def test_every_token_of_the_alphabet_is_accepted(value: str) -> None:
    assert context.valid_request_id(value) == value


def test_non_strings_and_trailing_newlines_are_refused() -> None:
    for value in (None, 12, b"abc", "abc\n", ["abc"]):
        assert context.valid_request_id(value) is None
    assert GENERATED.match(context.new_request_id())


def test_request_context_sets_reuses_or_generates() -> None:
    assert victor_otel.get_request_id() is None
    with victor_otel.request_context("outer-1") as outer:
        assert outer == "outer-1" == victor_otel.get_request_id()
        with victor_otel.request_context() as inner:
            assert inner == "outer-1"  # no ID given: the one in force is kept
        with victor_otel.request_context("bad id\n") as kept:
            assert kept == "outer-1"  # an ID that is not a sane token is ignored
        with victor_otel.request_context("inner-2") as inner:
            assert inner == "inner-2" == victor_otel.get_request_id()
        assert victor_otel.get_request_id() == "outer-1"
    assert victor_otel.get_request_id() is None
    with victor_otel.request_context() as fresh, victor_otel.request_context('{"x": 1}') as replaced:
        assert GENERATED.match(fresh) and replaced == fresh


async def test_request_context_is_async_and_isolated_between_tasks() -> None:
    async def job(request_id: str) -> list[str | None]:
        seen = []
        async with victor_otel.request_context(request_id):
            for _ in range(3):
                seen.append(victor_otel.get_request_id())
                await asyncio.sleep(0)
        return seen

    first, second = await asyncio.gather(job("job-a"), job("job-b"))
    assert first == ["job-a"] * 3 and second == ["job-b"] * 3
    assert victor_otel.get_request_id() is None


def test_inject_and_extract_carry_trace_and_request_id_through_a_queue(spans: InMemorySpanExporter) -> None:
    victor_otel.init(service_name="t", traces_exporter="none", span_exporters=[spans])
    tracer = trace.get_tracer("test")
    with victor_otel.request_context("queued-1"), tracer.start_as_current_span("produce") as span:
        message = {"payload": 1, "headers": victor_otel.inject({})}
    headers = message["headers"]
    assert isinstance(headers, dict) and set(headers) == {"traceparent", "baggage"}
    assert "request_id=queued-1" in headers["baggage"]

    out = io.StringIO()
    victor_otel.setup_coordinator_logging(stream=out)
    with victor_otel.request_context(parent=victor_otel.extract(headers)) as request_id:
        assert request_id == "queued-1"
        assert trace.get_current_span().get_span_context().trace_id == span.get_span_context().trace_id
        victor_otel.get_coordinator_logger("Worker").info("consumed")
    record = json.loads(out.getvalue())
    assert record["request_id"] == "queued-1"
    assert record["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_extract_drops_a_hostile_request_id() -> None:
    carried = victor_otel.extract({"baggage": "request_id=%7B%22level%22%3A%22ERROR%22%7D,tenant=acme"})
    assert victor_otel.get_request_id(carried) is None
    with victor_otel.request_context(parent=carried) as request_id:
        assert GENERATED.match(request_id)


def test_init_installs_tracecontext_and_baggage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    propagate.set_global_textmap(context.TraceContextTextMapPropagator())
    victor_otel.init(service_name="t", traces_exporter="none")
    assert {"traceparent", "baggage"} <= set(propagate.get_global_textmap().fields)


def test_otel_propagators_set_by_the_user_win(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = context.TraceContextTextMapPropagator()
    propagate.set_global_textmap(mine)
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext")
    victor_otel.init(service_name="t", traces_exporter="none")
    assert propagate.get_global_textmap() is mine


# -- the ASGI middleware --------------------------------------------------------------------------


def starlette_app() -> Any:
    async def index(request: Request) -> JSONResponse:
        victor_otel.get_coordinator_logger("Edge").info("handled", extra={"path": request.url.path})
        return JSONResponse({"request_id": victor_otel.get_request_id()})

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("unhandled")

    return Starlette(routes=[Route("/", index), Route("/boom", boom)])


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    async def index() -> dict[str, str | None]:
        victor_otel.get_coordinator_logger("Edge").info("handled", extra={"path": "/"})
        return {"request_id": victor_otel.get_request_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unhandled")

    return app


APPS: dict[str, Callable[[], Any]] = {"starlette": starlette_app, "fastapi": fastapi_app}


async def call(app: Any, headers: list[tuple[bytes, bytes]], path: str = "/") -> tuple[int, dict[bytes, bytes], Any]:
    """One request straight through the ASGI app (bytes no HTTP client would send are allowed)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except RuntimeError as exc:  # Starlette re-raises unhandled errors after sending the 500
        assert str(exc) == "unhandled"
    start = next(m for m in sent if m["type"] == "http.response.start")
    response_headers: dict[bytes, bytes] = {}
    for name, value in start["headers"]:
        assert name.lower() not in response_headers, f"duplicate header {name!r}"
        response_headers[name.lower()] = value
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], response_headers, json.loads(body) if start["status"] == 200 else None


def server_spans(spans: InMemorySpanExporter) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]


@pytest.fixture(params=sorted(APPS))
def app(request: pytest.FixtureRequest, spans: InMemorySpanExporter) -> Any:
    victor_otel.init(service_name="edge", traces_exporter="none", span_exporters=[spans])
    return victor_otel.instrument_app(APPS[request.param]())


async def test_a_sane_request_id_is_used_echoed_and_put_on_the_server_span(
    app: Any, spans: InMemorySpanExporter
) -> None:
    out = io.StringIO()
    victor_otel.setup_coordinator_logging(stream=out)
    for request_id in ("abc-123", "svc:req.1_2-3", "a" * 128):
        status, headers, body = await call(app, [(b"x-request-id", request_id.encode())])
        assert status == 200 and headers[b"x-request-id"] == request_id.encode()
        assert body == {"request_id": request_id}
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    expected = ["abc-123", "svc:req.1_2-3", "a" * 128]
    servers = server_spans(spans)
    assert [r["request_id"] for r in records] == expected
    assert [s.attributes["victor.request_id"] for s in servers] == expected
    assert [r["trace_id"] for r in records] == [format(s.context.trace_id, "032x") for s in servers]


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda v: repr(v[:24]))
async def test_hostile_header_values_never_reach_a_log(app: Any, spans: InMemorySpanExporter, hostile: bytes) -> None:
    out = io.StringIO()
    victor_otel.setup_coordinator_logging(stream=out, format_type="json")
    status, headers, body = await call(app, [(b"x-request-id", hostile)])
    assert status == 200
    generated = headers[b"x-request-id"].decode()
    assert GENERATED.match(generated) and body == {"request_id": generated}
    text = out.getvalue()
    assert text.count("\n") == 1 and json.loads(text)["request_id"] == generated
    decoded = hostile.decode("latin-1")
    if len(decoded) > 3:
        assert decoded not in text and json.dumps(decoded)[1:-1] not in text
    (span,) = server_spans(spans)
    assert span.attributes["victor.request_id"] == generated


async def test_request_id_arriving_in_baggage_is_used_when_no_header(app: Any) -> None:
    _, headers, body = await call(app, [(b"baggage", b"request_id=from-upstream,tenant=acme")])
    assert headers[b"x-request-id"] == b"from-upstream" and body == {"request_id": "from-upstream"}
    _, headers, body = await call(app, [(b"baggage", b"request_id=%7Bevil%7D")])
    assert GENERATED.match(headers[b"x-request-id"].decode())
    _, headers, _ = await call(app, [(b"x-request-id", b"header-wins"), (b"baggage", b"request_id=from-baggage")])
    assert headers[b"x-request-id"] == b"header-wins"


async def test_unhandled_errors_still_echo_the_request_id(app: Any) -> None:
    status, headers, _ = await call(app, [(b"x-request-id", b"err-1")], path="/boom")
    assert status == 500 and headers[b"x-request-id"] == b"err-1"
    status, headers, _ = await call(app, [], path="/boom")
    assert status == 500 and GENERATED.match(headers[b"x-request-id"].decode())


async def test_the_middleware_alone_does_everything() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": [(b"x-request-id", b"spoofed")]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        assert victor_otel.get_request_id() == "solo-1"

    middleware = requestid.RequestIdMiddleware(inner)
    status, headers, _ = await call(middleware, [(b"x-request-id", b"solo-1")])
    assert status == 204 and headers[b"x-request-id"] == b"solo-1"
    assert victor_otel.get_request_id() is None


def test_a_client_cannot_fill_the_log_through_the_baggage_header(caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's propagator wrote an oversized baggage header whole to the log once per request (211 KB for
    4 requests), and every malformed entry: a client could fill the server's log."""
    import httpx

    from tests.servers import serve

    monkeypatch.setattr(context, "_reported", set())
    victor_otel.init(service_name="t", traces_exporter="none")
    app = Starlette(routes=[Route("/rid", lambda request: JSONResponse({"rid": context.get_request_id()}))])
    victor_otel.instrument_app(app)
    marker = "FILLTHELOG"
    oversized = ",".join(f"k{i}={marker}{'x' * 40}" for i in range(1_200))  # ~60 KB
    malformed = ",".join(f"{marker}{i} no equals sign" for i in range(50))
    with caplog.at_level("INFO"), serve(app) as url, httpx.Client() as client:
        for _ in range(4):
            assert client.get(f"{url}/rid", headers={"baggage": oversized}).status_code == 200
            assert client.get(f"{url}/rid", headers={"baggage": malformed}).status_code == 200
        carried = client.get(f"{url}/rid", headers={"baggage": "request_id=req-7,bad entry"}).json()
    assert carried == {"rid": "req-7"}  # the valid entries of a header still count
    logged = "".join(r.getMessage() for r in caplog.records)
    assert marker not in logged and len(logged) < 2_000
    ours = [r.getMessage() for r in caplog.records if r.name == "victor_otel" and "baggage" in r.getMessage()]
    assert len(ours) == 2 and any("bytes" in m for m in ours) and any("malformed" in m for m in ours)
