"""The outermost layer ``instrument_app`` puts around an app: HTTP server metrics, the request ID's echo,
and with spans off the request ID and trace context themselves, in one pure ASGI layer.

With spans on, the stack is ``EdgeMiddleware`` -> the OpenTelemetry server middleware (the server span,
its metrics turned off) -> ... -> :class:`~victor_otel.web.requestid.RequestIdMiddleware` inside the span.
With spans off there is no span to make, so no OpenTelemetry middleware at all: this layer extracts the
incoming trace context (``traceparent``, ``baggage``, whatever the global propagator reads), chooses the
request ID, attaches both for the request (logs carry them, outgoing calls propagate them: the request's
trace goes on downstream) and records the metrics. Either way the edge sees every response, the 500 an
unhandled error becomes included, and adds ``X-Request-ID`` to it.

Paths under ``excluded`` (``/metrics``, ``/health``, ``/debug``) get request IDs but no metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import Token
from time import perf_counter
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate

from victor_otel import bootstrap
from victor_otel.context import with_request_id
from victor_otel.web import httpmetrics
from victor_otel.web.requestid import HEADER_BYTES, SCOPE_KEY, Exchange, choose_request_id, with_header

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _decode(value: bytes) -> str:
    """A header value as the OpenTelemetry ASGI getter decodes it."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("unicode_escape")


def route_template(scope: Scope) -> str | None:
    """The matched route's template with the root path (``/api/items/{item_id}``), ``None`` when no route
    matched: read from the scope the router filled in, as the OpenTelemetry ASGI instrumentation reads it."""
    path_format = getattr(scope.get("route"), "path_format", None)
    if path_format:
        return f"{scope.get('root_path', '')}{path_format}"
    return None


class EdgeMiddleware:
    """One pure ASGI layer at the edge of an app; see the module's docstring.

    ``spans``: whether an OpenTelemetry server middleware and :class:`RequestIdMiddleware` run further in
    (then they choose the request ID); ``excluded``: paths (and everything under them) without metrics.
    """

    def __init__(self, app: ASGIApp, *, spans: bool, excluded: Iterable[str] = ()) -> None:
        self.app = app
        self.spans = spans
        self.metrics = httpmetrics.get_http_metrics()
        self._excluded = frozenset(excluded)
        self._excluded_prefixes = tuple(p.rstrip("/") + "/" for p in self._excluded)
        self._attached_to: Any = None
        self._textmap: Any = None
        self._fields: frozenset[bytes] = frozenset()

    def _excludes(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        return path in self._excluded or path.startswith(self._excluded_prefixes)

    def _attach_metrics(self) -> None:
        """Merge the HTTP series into the running telemetry's collections (a new one after every init())."""
        telemetry = bootstrap.current()
        if telemetry is not None:
            httpmetrics.attach(telemetry)
        self._attached_to = telemetry

    def _own_context(self, scope: Scope, exchange: Exchange) -> Token[Context]:
        """Spans off: extract the incoming trace context, choose the request ID, attach both; the token."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._textmap:
            self._fields = frozenset(f.lower().encode("latin-1") for f in textmap.fields)
            self._textmap = textmap
        header = None
        carrier: dict[str, str] | None = None
        fields = self._fields
        for name, value in scope.get("headers", ()):
            if name == HEADER_BYTES:
                if header is None:
                    header = bytes(value)
            elif name in fields:
                if carrier is None:
                    carrier = {}
                carrier.setdefault(name.decode("latin-1"), _decode(value))  # the first, as the getter's
        parent = textmap.extract(carrier) if carrier is not None else None
        request_id = exchange.request_id = choose_request_id(header, parent)
        return otel_context.attach(with_request_id(request_id, parent))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        if bootstrap.current() is not self._attached_to:
            self._attach_metrics()
        exchange = Exchange()
        token = None if self.spans else self._own_context(scope, exchange)
        inner = {**scope, SCOPE_KEY: exchange}  # a copy: ASGI layers do not change their caller's scope

        async def edge_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                if exchange.request_id is not None:
                    message = with_header(message, exchange.request_id)
            await send(message)

        metrics = self.metrics
        active = None
        if not self._excludes(scope):
            active = metrics.begin(httpmetrics.method_label(scope.get("method", "")), scope.get("scheme", ""),
                                   scope.get("http_version", ""))
        try:
            await self.app(inner, receive, edge_send)
        except Exception:
            if exchange.status is None:
                exchange.status = 500  # what the server answers for an unhandled error no layer turned into one
            raise
        finally:
            if active is not None:
                span = exchange.span
                exemplar = None
                if span is not None:
                    ctx = span.get_span_context()
                    if ctx.trace_flags.sampled:
                        exemplar = (ctx.trace_id, ctx.span_id)
                metrics.end(active, exchange.status, route_template(inner), perf_counter() - start, exemplar)
            if token is not None:
                otel_context.detach(token)
