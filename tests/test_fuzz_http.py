"""Hostile HTTP over a real socket: X-Request-ID, traceparent and baggage headers that are oversized, malformed,
unicode or injection attempts, and odd methods and paths on /metrics and /health/*. The server never answers
5xx, never echoes an unsafe request ID, counts every served call exactly once, and keeps serving."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import victor_otel
from tests.servers import serve
from victor_otel.registry import get_registry

SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def served_calls() -> int:
    series = get_registry().series.get(("EdgeCoordinator", "answer"))
    return series.count if series is not None else 0


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def url(spans: InMemorySpanExporter) -> Iterator[str]:
    victor_otel.init(service_name="edge", traces_exporter="none", span_exporters=[spans])

    @victor_otel.coordinator("EdgeCoordinator")
    class EdgeCoordinator:
        async def answer(self) -> str:
            return "ok"

    coordinator = EdgeCoordinator()
    app = FastAPI()

    @app.get("/chat")
    async def chat() -> dict[str, str]:
        return {"answer": await coordinator.answer()}

    victor_otel.instrument_app(app)
    with serve(app) as base:
        yield base


def header_value(max_size: int = 300) -> st.SearchStrategy[bytes]:
    """What h11 lets a client put in a header (no control character but tab, no surrounding whitespace); the
    control characters themselves go over a raw socket in the tests below."""
    text = st.one_of(
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=max_size),
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=max_size),
        st.sampled_from([
            "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "00-" + "f" * 32 + "-" + "f" * 16 + "-ff",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-xyz-abc-01", "-".join(["00"] * 200),
            "request_id=" + "a" * 5000, "request_id=%00%0d%0a", "request_id=../../etc/passwd",
            "k=v;prop=1;" * 200, "=,=,=", "request_id=<script>alert(1)</script>", "'; DROP TABLE spans; --",
            "${jndi:ldap://127.0.0.1/a}", "\u202eevil", "a" * 20_000, "req-ok_1.2:3",
        ]),
    )
    return text.map(lambda s: bytes(c for c in s.encode("utf-8") if c >= 0x20 and c != 0x7F).strip(b" \t"))


TRACEPARENTS = st.builds(
    lambda t, s, f: f"00-{t:032x}-{s:016x}-{f:02x}",
    st.integers(min_value=1, max_value=2**128 - 1), st.integers(min_value=1, max_value=2**64 - 1),
    st.sampled_from([0, 1]),
)


@FUZZ
@given(request_id=header_value(), traceparent=st.one_of(header_value(), TRACEPARENTS),
       baggage=header_value())
def test_hostile_request_id_traceparent_and_baggage_headers(
    url: str, spans: InMemorySpanExporter, request_id: bytes, traceparent: Any, baggage: bytes
) -> None:
    before = served_calls()
    spans.clear()
    headers = {"X-Request-ID": request_id, "traceparent": traceparent, "baggage": baggage}
    response = httpx.get(f"{url}/chat", headers=headers)
    assert response.status_code in (200, 400, 431), response.text
    if response.status_code != 200:
        assert served_calls() == before  # refused by the HTTP parser: the app never ran
        return
    assert response.json() == {"answer": "ok"}
    assert served_calls() == before + 1
    echoed = response.headers["x-request-id"]
    assert SANE_ID.fullmatch(echoed)
    if SANE_ID.fullmatch(request_id.decode("latin-1")):
        assert echoed == request_id.decode("latin-1")
    if isinstance(traceparent, str) and traceparent.endswith("-01"):
        (inner,) = [s for s in spans.get_finished_spans() if s.name == "EdgeCoordinator.answer"]
        assert f"{inner.context.trace_id:032x}" == traceparent[3:35]  # joined the caller's trace


METHODS = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-_", min_size=1, max_size=40),
)
PATHS = st.tuples(
    st.sampled_from(["/metrics", "/health", "/health/", "/health/live", "/health/ready", "/health/detailed",
                     "/health/../metrics", "//metrics", "/metrics/", "/HEALTH", "/health/%2e%2e/metrics"]),
    st.one_of(st.just(""), st.text(max_size=60).map(quote), st.sampled_from(
        ["?format=openmetrics", "?%%%", "/../../../etc/passwd", "?" + "a=b&" * 500, "%00", "/%ff%fe", ";x=1"]
    )),
).map(lambda parts: parts[0] + parts[1])


@FUZZ
@given(method=METHODS, path=PATHS, accept=st.one_of(st.none(), header_value(100)))
def test_odd_methods_and_paths_on_metrics_and_health_never_fail(
    url: str, method: str, path: str, accept: bytes | None
) -> None:
    headers = {} if accept is None else {"Accept": accept}
    try:
        response = httpx.request(method, url + path, headers=headers, timeout=10)
    except httpx.InvalidURL:
        return  # the client refused to send it
    assert response.status_code < 500, (method, path, response.status_code, response.text[:200])


def test_known_endpoints_answer_as_documented(url: str) -> None:
    assert httpx.get(f"{url}/metrics").status_code == 200
    assert httpx.get(f"{url}/metrics", headers={"Accept": "application/openmetrics-text"}).text.endswith("# EOF\n")
    for path in ("/health", "/health/live", "/health/ready", "/health/detailed"):
        assert httpx.get(url + path).status_code == 200, path
    assert httpx.post(f"{url}/metrics").status_code == 405


RAW_REQUESTS = [
    b"GET /chat HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\r\nX-Request-ID: b\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: x\r\nX-Request-ID: ok\r\n\tfolded\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: x\r\nX-Request-ID: id\x00nul\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: x\r\nX-Request-ID: id\rSet-Cookie: a=b\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: x\r\ntraceparent: 00-\xff\xfe-\x80-01\r\nbaggage: request_id=\xc3\x28\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: " + b"a" * 60_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"G\xc3\xa9T /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET http://evil.example/metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health/detailed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello
    b"\r\n\r\n\r\n",
]


@pytest.mark.parametrize("raw", RAW_REQUESTS, ids=range(len(RAW_REQUESTS)))
def test_malformed_requests_on_the_wire_get_no_5xx_and_the_server_keeps_serving(url: str, raw: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert status < 500, answer[:300]
        echoed = re.search(rb"(?i)\r\nx-request-id: ([^\r]*)\r\n", answer)
        assert echoed is None or SANE_ID.fullmatch(echoed.group(1).decode("latin-1"))
        assert b"set-cookie" not in answer.lower()
    assert httpx.get(f"{url}/chat").status_code == 200  # still serving
