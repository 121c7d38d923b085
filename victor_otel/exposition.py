"""Rendering ``/metrics`` and the standalone metrics server.

The text comes from ``opentelemetry-exporter-prometheus``: its reader translates the collected OTel
data into prometheus_client families on a private registry, which prometheus_client renders in the
Prometheus text format or, when the scraper asks for it, OpenMetrics.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder, make_wsgi_app

from victor_otel import auth, bootstrap, debugpages
from victor_otel.config import Settings, _number
from victor_otel.errors import VictorOtelInitError

_logger = logging.getLogger("victor_otel")


def _telemetry(telemetry: bootstrap.Telemetry | None) -> bootstrap.Telemetry:
    if telemetry is not None or (telemetry := bootstrap.current()) is not None:
        return telemetry
    raise VictorOtelInitError("/metrics needs victor_otel.init() first (victor_otel.render() calls it for you)")


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


def authorized(authorization: str | None, settings: Settings) -> bool:
    """Whether an ``Authorization`` header opens ``/metrics``: always when neither ``metrics_token`` nor
    ``metrics_basic_auth`` is set, else a matching ``Bearer`` token or ``Basic`` credentials.

    >>> s = Settings.from_sources({"metrics_token": "s3cret"}, {})
    >>> authorized("Bearer s3cret", s), authorized("Bearer guess", s), authorized(None, s)
    (True, False, False)
    """
    return auth.check(authorization, token=settings.metrics_token, basic=settings.metrics_basic_auth)


def challenge(settings: Settings) -> str:
    """The ``WWW-Authenticate`` value of a 401 from ``/metrics``."""
    return auth.challenge("metrics", token=settings.metrics_token, basic=settings.metrics_basic_auth)


UNAUTHORIZED = b"401 Unauthorized: /metrics needs the credentials set in VICTOR_OTEL_METRICS_TOKEN or _BASIC_AUTH\n"


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

    Binds to the loopback address unless told otherwise: metrics reveal internals. Requires the
    credentials of ``metrics_token`` / ``metrics_basic_auth`` when they are set; answers GET (and OPTIONS).
    """
    port = _number(int, 0, 65535)("port", port)
    telemetry = _telemetry(telemetry)

    class Server(_BoundedServer):
        pass

    # An IPv6 address needs an AF_INET6 socket (as prometheus_client's own server does it).
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    Server.address_family, address = family, str(sockaddr[0])
    app = _guarded(make_wsgi_app(_prometheus_registry(telemetry)), telemetry.settings)
    if telemetry.settings.debug_pages_enabled:
        if _loopback(host) or telemetry.settings.health_token:
            app = _with_debug_pages(app, telemetry)
        else:
            _logger.info("victor_otel: no /debug pages on the metrics server at %s: it is not bound to the "
                         "loopback address and VICTOR_OTEL_HEALTH_TOKEN is not set", host)
    server = make_server(address, port, app, Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="victor-otel-metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread, host)


#: Connections the standalone server serves at once; more are closed as soon as they are accepted.
MAX_CONNECTIONS = 32
#: Seconds a connection may stay silent (before or within its request) before it is closed.
IDLE_TIMEOUT = 10.0
#: Pause of the accept loop after the process ran out of file descriptors (instead of spinning).
_ACCEPT_BACKOFF = 0.1


class _BoundedServer(ThreadingWSGIServer):
    """prometheus_client's thread-per-connection server, bounded: at most :data:`MAX_CONNECTIONS` at once
    (each a thread and a file descriptor), idle ones closed after :data:`IDLE_TIMEOUT`, and an accept loop
    that backs off instead of spinning when the process is out of file descriptors (so idle clients can
    neither exhaust the application's descriptors nor a core)."""

    request_queue_size = 128  # the listen backlog: a burst of connections is accepted, not SYN-retried

    def server_activate(self) -> None:
        super().server_activate()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went silent (timed out) or away is no news; socketserver would print a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            _logger.debug("victor_otel: the metrics server failed a request", exc_info=True)

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(_ACCEPT_BACKOFF)  # the listening socket stays readable: do not spin on it
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the bound: closed at once, never a thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _QuietHandler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(IDLE_TIMEOUT)  # read per connection, so that it can be lowered

    def log_message(self, format: str, *args: Any) -> None:
        pass


_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _with_debug_pages(app: _WSGIApp, telemetry: bootstrap.Telemetry) -> _WSGIApp:
    """``app`` with ``/debug`` and below served by victor_otel.debugpages (behind its own token check)."""
    from http import HTTPStatus

    prefix = debugpages.PREFIX

    def debug(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path != prefix and not path.startswith(prefix + "/"):
            return app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        page = debugpages.respond(
            method, path, environ.get("QUERY_STRING", ""), environ.get("HTTP_AUTHORIZATION"), telemetry
        )
        start_response(f"{page.status} {HTTPStatus(page.status).phrase}", [
            ("Content-Type", page.content_type), ("Content-Length", str(len(page.body))), *page.headers.items(),
        ])
        return [b"" if method == "HEAD" else page.body]

    return debug


def _guarded(app: _WSGIApp, settings: Settings) -> _WSGIApp:
    """prometheus_client's WSGI app behind the credentials check (it answers GET and OPTIONS only)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "OPTIONS"):
            start_response("405 Method Not Allowed", [("Allow", "OPTIONS, GET"), ("Content-Length", "0")])
            return [b""]
        if not authorized(environ.get("HTTP_AUTHORIZATION"), settings):
            start_response("401 Unauthorized", [
                ("WWW-Authenticate", challenge(settings)), ("Content-Type", "text/plain; charset=utf-8"),
                ("Cache-Control", "no-store"), ("Content-Length", str(len(UNAUTHORIZED))),
            ])
            return [UNAUTHORIZED]
        return app(environ, start_response)

    return guarded
