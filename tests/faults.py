"""A fault-injecting OTLP/HTTP endpoint on 127.0.0.1 for tests: a collector that behaves badly on demand.

>>> with FaultServer() as server:
...     server.mode = "error"      # every request answers 500 (ok | error | throttle | hang | flap)
...     server.stop()              # nothing listens: connection refused
...     server.start()             # the same port again

In ``ok`` mode it decodes what it receives (spans, log records, metric points) and keeps it, so that a
test can check that nothing was lost or counted twice: :meth:`FaultServer.metric_sums` gives, per
``service.instance.id``, the latest cumulative value of every counter series, as a collector would.
"""

from __future__ import annotations

import gzip
import random
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

MODES = ("ok", "error", "throttle", "hang", "flap")
#: A hanging request is released after this many seconds at most (or when the server stops).
HANG_LIMIT = 30.0

Labels = tuple[tuple[str, str], ...]


def _value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts (or for 'the collector is down').

    Taken below the kernel's ephemeral range: a port the kernel hands out for ``bind(0)`` may be given to
    an outgoing connection (a scrape, an OTLP export) before the server the test starts binds it, which made
    the collector fail at start-up with 'address already in use'.
    """
    low = max(_ephemeral_low(), 11_000)
    for _ in range(200):
        port = random.randrange(10_000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # the low range is crowded: fall back to the kernel's choice
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        signal = self.path.rstrip("/").rsplit("/", 1)[-1]  # traces | logs | metrics
        status = owner._answer(signal)
        owner._count_request(signal, status)
        if status == 0:  # hang: never answer; the client's timeout is what ends it
            owner._release.wait(HANG_LIMIT)
            self.close_connection = True
            return
        if status == 200:
            response = owner._accept(signal, body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(response)))
            self.end_headers()
            self.wfile.write(response)
            return
        self.send_response(status)
        if status == 429 and owner.retry_after is not None:
            self.send_header("Retry-After", str(owner.retry_after))
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FaultServer


class FaultServer:
    """An OTLP/HTTP receiver whose behaviour (``mode``) tests switch at any time."""

    def __init__(self, port: int = 0, mode: str = "ok") -> None:
        self.port = port
        self.mode = mode
        #: Seconds sent in ``Retry-After`` with 429 (``None``: no header).
        self.retry_after: int | None = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._flap = 0
        self.requests: Counter[tuple[str, int]] = Counter()
        self.span_names: list[str] = []
        self.span_instances: list[str] = []
        self.span_attributes: list[dict[str, Any]] = []
        #: Every span as a dict: name, attributes, status (message), instance, events (name, attributes).
        self.spans: list[dict[str, Any]] = []
        self.log_bodies: list[Any] = []
        self.log_attributes: list[dict[str, Any]] = []
        self.metric_points = 0
        self._sums: dict[str, dict[tuple[str, Labels], float]] = {}
        self.instances: set[str] = set()

    # -- control -----------------------------------------------------------------------------------

    def __enter__(self) -> FaultServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen (again, on the same port once it had one)."""
        if self._server is not None:
            return
        self._release.clear()
        deadline = time.monotonic() + 10
        while True:
            try:
                server = _Server(("127.0.0.1", self.port), _Handler)
                break
            except OSError:  # the port of a stopped server can linger a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: new connections are refused (the collector is down)."""
        server, self._server = self._server, None
        self._release.set()  # let hanging requests go
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- behaviour ---------------------------------------------------------------------------------

    def _answer(self, signal: str) -> int:
        mode = self.mode
        if mode == "ok":
            return 200
        if mode == "error":
            return 500
        if mode == "throttle":
            return 429
        if mode == "hang":
            return 0
        with self._lock:  # flap: ok, 500, ok, 500...
            self._flap += 1
            return 200 if self._flap % 2 else 500

    def _count_request(self, signal: str, status: int) -> None:
        with self._lock:
            self.requests[(signal, status)] += 1

    def _accept(self, signal: str, body: bytes) -> bytes:
        if signal == "traces":
            traces = ExportTraceServiceRequest.FromString(body)
            with self._lock:
                for rs in traces.resource_spans:
                    instance = str(_attributes(rs.resource.attributes).get("service.instance.id"))
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            self.span_names.append(span.name)
                            self.span_instances.append(instance)
                            self.span_attributes.append(_attributes(span.attributes))
                            self.spans.append({
                                "name": span.name, "attributes": _attributes(span.attributes),
                                "status": span.status.message, "instance": instance,
                                "events": [{"name": e.name, "attributes": _attributes(e.attributes)}
                                           for e in span.events],
                            })
            return ExportTraceServiceResponse().SerializeToString()
        if signal == "logs":
            logs = ExportLogsServiceRequest.FromString(body)
            with self._lock:
                for rl in logs.resource_logs:
                    for sl in rl.scope_logs:
                        for record in sl.log_records:
                            self.log_bodies.append(_value(record.body))
                            self.log_attributes.append(_attributes(record.attributes))
            return ExportLogsServiceResponse().SerializeToString()
        request = ExportMetricsServiceRequest.FromString(body)
        with self._lock:
            for rm in request.resource_metrics:
                instance = str(_attributes(rm.resource.attributes).get("service.instance.id"))
                self.instances.add(instance)
                sums = self._sums.setdefault(instance, {})
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        points = getattr(metric, kind).data_points if kind else []
                        self.metric_points += len(points)
                        if kind != "sum":
                            continue
                        for point in points:
                            labels = tuple(sorted((k, str(v)) for k, v in _attributes(point.attributes).items()))
                            value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                            sums[(metric.name, labels)] = value  # cumulative: the latest is the total
        return ExportMetricsServiceResponse().SerializeToString()

    # -- what arrived ------------------------------------------------------------------------------

    def count(self, signal: str, status: int | None = None) -> int:
        with self._lock:
            return sum(n for (s, code), n in self.requests.items() if s == signal and status in (None, code))

    def metric_sums(self) -> dict[str, dict[tuple[str, Labels], float]]:
        """Per ``service.instance.id``: {(metric name, labels): latest cumulative value}."""
        with self._lock:
            return {instance: dict(sums) for instance, sums in self._sums.items()}

    def total(self, metric: str, **labels: str) -> float:
        """The sum over instances of the series of ``metric`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(
            value
            for sums in self.metric_sums().values()
            for (name, series), value in sums.items()
            if name == metric and want <= set(series)
        )


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
