"""P6: a decorated call costs the same whether the OTLP endpoint answers or not.

Both sides run ``init(traces_exporter="otlp", metrics_exporter="otlp")`` (spans through the batch
processor, metrics pushed every 200 ms) and time the same decorated call:

- ours: the endpoint is unreachable, a loopback port nothing listens on (connections are refused);
- anchor: a tiny local OTLP/HTTP sink (``http.server`` answering 200 to every POST) on loopback.

Rounds alternate the two set-ups (``init`` ... calls ... ``shutdown(timeout=1)``). Target: ratio <= 1.1.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from time import perf_counter
from typing import Any

import victor_otel
from benchmarks.harness import Result, compare_rounds, ratio_result, rounds_for
from victor_otel.registry import get_registry

LIMIT = 1.1


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    """A local OTLP/HTTP endpoint that accepts everything; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, name="bench-otlp-sink", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def unreachable_endpoint() -> str:
    """A loopback URL nothing listens on (a port just released by the kernel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Refused exports log a warning per retry; they are expected here.
    loggers = [logging.getLogger(n) for n in ("opentelemetry", "victor_otel")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _time_with(endpoint: str, number: int) -> float:
    victor_otel.shutdown()
    get_registry().reset()
    victor_otel.init(
        service_name="bench", traces_exporter="otlp", metrics_exporter="otlp", otlp_endpoint=endpoint,
        metric_export_interval=200, shutdown_timeout=1,
    )

    @victor_otel.instrument("BenchCoordinator", "step")
    def step(x: int) -> int:
        return x

    for _ in range(number // 10):
        step(1)
    start = perf_counter()
    for _ in range(number):
        step(1)
    elapsed = (perf_counter() - start) / number
    victor_otel.shutdown(timeout=1)
    return elapsed


def run(quick: bool) -> list[Result]:
    rounds = rounds_for(quick)
    number = 100 if quick else 3_000
    with _quiet(), otlp_sink() as reachable:
        unreachable = unreachable_endpoint()

        def one_round(i: int) -> tuple[float, float]:
            if i % 2:
                anchor = _time_with(reachable, number)
                ours = _time_with(unreachable, number)
            else:
                ours = _time_with(unreachable, number)
                anchor = _time_with(reachable, number)
            return ours, anchor

        try:
            c = compare_rounds(one_round, rounds)
        finally:
            victor_otel.shutdown(timeout=1)
            get_registry().reset()
    return [ratio_result("P6", "call, OTLP endpoint unreachable vs reachable", c, LIMIT)]
