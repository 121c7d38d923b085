"""Rendering ``/metrics`` and the standalone metrics server.

The text comes from ``opentelemetry-exporter-prometheus``: its reader translates the collected OTel
data into prometheus_client families on a private registry, which prometheus_client renders in the
Prometheus text format or, when the scraper asks for it, OpenMetrics.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, start_http_server

from victor_otel import bootstrap
from victor_otel.errors import VictorOtelInitError


def _telemetry(telemetry: bootstrap.Telemetry | None = None) -> bootstrap.Telemetry:
    # The seed's exporter worked without any set-up call: initialise with defaults when needed.
    return telemetry or bootstrap.current() or bootstrap.init()


def _prometheus_registry(telemetry: bootstrap.Telemetry) -> CollectorRegistry:
    if telemetry.prometheus_registry is None:
        raise VictorOtelInitError(
            "/metrics needs the Prometheus reader: set OTEL_METRICS_EXPORTER to include 'prometheus' "
            f"(now {','.join(telemetry.settings.metrics_exporter)!r})"
        )
    return telemetry.prometheus_registry


def render(accept: str | None = None, telemetry: bootstrap.Telemetry | None = None) -> tuple[bytes, str]:
    """Collect once and return ``(body, content_type)``, OpenMetrics if ``accept`` asks for it.

    >>> import victor_otel
    >>> _ = victor_otel.init(service_name="doc", traces_exporter="none")
    >>> body, content_type = render()
    >>> content_type.startswith("text/plain"), b"# TYPE victor_coordinator_uptime_seconds gauge" in body
    (True, True)
    >>> victor_otel.shutdown()
    """
    telemetry = _telemetry(telemetry)
    if telemetry.settings.disabled:
        return b"", "text/plain; version=0.0.4; charset=utf-8"
    registry = _prometheus_registry(telemetry)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def metrics_endpoint() -> Any:
    """A Starlette endpoint serving ``/metrics``: ``app.add_route("/metrics", metrics_endpoint())``."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response

    async def metrics(request: Request) -> Response:
        # Rendering is CPU work of a few milliseconds: keep it off the event loop.
        body, content_type = await run_in_threadpool(render, request.headers.get("accept"))
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    return metrics


class MetricsServer:
    """A running standalone ``/metrics`` server (prometheus_client's, on our registry)."""

    def __init__(self, server: Any, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    port: int = 9464, host: str = "127.0.0.1", telemetry: bootstrap.Telemetry | None = None
) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` from a background thread (``port=0``: any free port).

    Binds to the loopback address unless told otherwise: metrics reveal internals.
    """
    from victor_otel.config import _number

    port = _number(int, 0, 65535)("port", port)
    telemetry = _telemetry(telemetry)
    server, thread = start_http_server(port, addr=host, registry=_prometheus_registry(telemetry))
    return MetricsServer(server, thread, host)
