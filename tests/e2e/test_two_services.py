"""Two real services on loopback sockets: A (FastAPI) calls B (Starlette) through an instrumented httpx client.

Each service is its own process (its own TracerProvider, service name, JSON log file and span file), as in
production. One request to A must give one trace ID and one request ID in both services' logs and spans;
hostile ``X-Request-ID`` values must never reach a log. This file is also the services' program:
``python test_two_services.py serve <name> <log> <spans> [downstream-url]``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = re.compile(r"^[0-9a-f]{32}$")
HOSTILE = [
    b'{"level":"ERROR","duration_ms":99999}',
    b'x", "level": "ERROR", "y": "',
    b"{{braces}} and 'quotes'",
    "ünïcödé-✓-请求".encode(),
    b"A" * 10_240,
]


# -- the services ---------------------------------------------------------------------------------


def serve(name: str, log_file: str, spans_file: str, downstream: str | None) -> None:  # pragma: no cover
    import socket

    import uvicorn
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    import victor_otel

    # E2E_OTLP (tests/e2e/test_collector_*.py): spans and log records are also pushed over OTLP to
    # OTEL_EXPORTER_OTLP_ENDPOINT; with "1" the span file stays, as the record of what the process produced;
    # with "only" OTLP is the one span exporter, so that export_stats() counts its spans alone.
    otlp = os.environ.get("E2E_OTLP")
    traces: str | list[str] = {"1": ["console", "otlp"], "only": "otlp"}.get(otlp or "", "console")
    victor_otel.init(
        service_name=name, environment="e2e", traces_exporter=traces, traces_file=spans_file,
        logs_exporter="otlp" if otlp else None, metrics_exporter="none",
    )
    victor_otel.setup_coordinator_logging(
        level="INFO", format_type="json", output_file=log_file, success_level="INFO"
    )
    HTTPXClientInstrumentor().instrument()
    app: Any
    if downstream is not None:  # service A: FastAPI, calls B
        from fastapi import FastAPI

        app = FastAPI()
        logger = victor_otel.get_coordinator_logger("ChatCoordinator")

        @victor_otel.coordinator("ChatCoordinator")
        class Chat:
            async def answer(self) -> dict[str, Any]:
                logger.info("asking the tool service", extra={"api_key": "sk-e2e0123456789abcdefghij"})
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"{downstream}/tool")
                return {"a": victor_otel.get_request_id(), "b": response.json()}

        chat = Chat()

        @app.get("/chat")
        async def chat_route() -> dict[str, Any]:
            return await chat.answer()

    else:  # service B: plain Starlette
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        tool_logger = victor_otel.get_coordinator_logger("ToolCoordinator")

        @victor_otel.instrument(coordinator="ToolCoordinator", method="run")
        def run_tool() -> str:
            tool_logger.info("running the tool")
            return "done"

        async def tool(request: Request) -> JSONResponse:
            return JSONResponse({"request_id": victor_otel.get_request_id(), "result": run_tool()})

        app = Starlette(routes=[Route("/tool", tool)])
    victor_otel.instrument_app(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)  # the test reads the port from here
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler it found: exit cleanly,
    # so that atexit runs victor_otel.shutdown() and the spans are flushed to the file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])


# -- the test -------------------------------------------------------------------------------------


@contextmanager
def service(tmp: Path, name: str, downstream: str | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    args = [sys.executable, __file__, "serve", name, str(tmp / f"{name}.log"), str(tmp / f"{name}.spans")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_PROPAGATORS": "", **(env or {})}
    process = subprocess.Popen(
        [*args, *([downstream] if downstream else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            process.kill()
            raise AssertionError(f"{name} did not start: {line}{process.communicate(timeout=10)[1]}")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 0, stderr


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def hexid(value: str) -> str:
    return value.removeprefix("0x")


@pytest.mark.e2e
def test_one_trace_and_one_request_id_across_two_services(tmp_path: Path) -> None:
    with (
        service(tmp_path, "tool-service") as b_url,
        service(tmp_path, "chat-service", b_url) as a_url,
        httpx.Client(timeout=10) as client,
    ):
        given = client.get(f"{a_url}/chat", headers={"X-Request-ID": "e2e-req-1"})
        generated = client.get(f"{a_url}/chat")
        hostile = [client.get(f"{a_url}/chat", headers={"X-Request-ID": value}) for value in HOSTILE]

    # responses: the ID is echoed by A and was seen by A's code and by B's
    assert given.status_code == 200 and given.headers["x-request-id"] == "e2e-req-1"
    assert given.json() == {"a": "e2e-req-1", "b": {"request_id": "e2e-req-1", "result": "done"}}
    new_id = generated.headers["x-request-id"]
    assert GENERATED.match(new_id) and generated.json()["b"]["request_id"] == new_id
    hostile_ids = [r.headers["x-request-id"] for r in hostile]
    assert all(r.status_code == 200 and GENERATED.match(i) and r.json()["b"]["request_id"] == i
               for r, i in zip(hostile, hostile_ids, strict=True))

    a_logs, b_logs = read_json_lines(tmp_path / "chat-service.log"), read_json_lines(tmp_path / "tool-service.log")
    a_spans = read_json_lines(tmp_path / "chat-service.spans")
    b_spans = read_json_lines(tmp_path / "tool-service.spans")
    for request_id in ("e2e-req-1", new_id, *hostile_ids):
        records = [r for r in a_logs + b_logs if r["request_id"] == request_id]
        assert {r["service"] for r in records} == {"chat-service", "tool-service"}
        assert {r["coordinator"] for r in records} == {"ChatCoordinator", "ToolCoordinator"}
        # one trace: every log record and every span of this request, in both services
        trace_ids = {r["trace_id"] for r in records}
        assert len(trace_ids) == 1 and None not in trace_ids
        (trace_id,) = trace_ids
        spans = [s for s in a_spans + b_spans if hexid(s["context"]["trace_id"]) == trace_id]
        services = {s["resource"]["attributes"]["service.name"] for s in spans}
        assert services == {"chat-service", "tool-service"}
        servers = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
        assert len(servers) == 2 and {s["attributes"]["victor.request_id"] for s in servers} == {request_id}
        assert {s["name"] for s in spans} >= {"ChatCoordinator.answer", "ToolCoordinator.run"}
        # each execution record carries the span that timed it
        for record in records:
            if record.get("outcome") == "success":
                span = next(s for s in spans if hexid(s["context"]["span_id"]) == record["span_id"])
                assert span["name"] == f"{record['coordinator']}.{record['method']}"

    raw = (tmp_path / "chat-service.log").read_bytes() + (tmp_path / "tool-service.log").read_bytes()
    for value in HOSTILE:
        assert value not in raw and json.dumps(value.decode("latin-1"))[1:-1].encode() not in raw
    assert b"sk-e2e" not in raw and raw.count(b'"api_key":"[REDACTED]"') == 2 + len(HOSTILE)


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) >= 5 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        raise SystemExit(__doc__)
