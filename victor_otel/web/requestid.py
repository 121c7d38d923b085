"""Request IDs at the HTTP edge: which ID a request gets, and :class:`RequestIdMiddleware`.

The ID is the incoming ``X-Request-ID`` when it is a sane token (:func:`victor_otel.context.valid_request_id`),
else the ``request_id`` that arrived in baggage when sane, else a new one. Anything else in the header is
ignored: it never reaches a log. ``instrument_app`` uses :class:`RequestIdMiddleware` inside the server span
when spans are on; with spans off :class:`victor_otel.web.edge.EdgeMiddleware` chooses the ID itself with
the same :func:`choose_request_id`. Both write it to the response through an :class:`Exchange` the edge
leaves in the ASGI scope, so that responses written outside them (an unhandled error's 500) carry it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from victor_otel.context import (
    HEADER,
    MAX_LENGTH,
    SPAN_ATTRIBUTE,
    get_request_id,
    new_request_id,
    valid_request_id,
    with_request_id,
)

if TYPE_CHECKING:  # annotations only: importing Starlette is not needed to use these
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: ``X-Request-ID`` as ASGI spells header names.
HEADER_BYTES = HEADER.lower().encode("ascii")
#: Where the edge leaves its :class:`Exchange` in the ASGI scope.
SCOPE_KEY = "victor_otel.edge"


class Exchange:
    """What the layers of one request tell the edge: the request ID chosen, the server span, the status."""

    __slots__ = ("request_id", "span", "status")

    def __init__(self) -> None:
        self.request_id: str | None = None
        self.span: Any = None
        self.status: int | None = None


def choose_request_id(header: bytes | None, context: Context | None = None) -> str:
    """The request's ID: ``header`` (the raw ``X-Request-ID``) when sane, else the baggage's in ``context``
    (default: the current one) when sane, else a new one.

    >>> choose_request_id(b"abc-1"), len(choose_request_id(b"not sane!"))
    ('abc-1', 32)
    """
    if header is not None and len(header) <= MAX_LENGTH:
        chosen = valid_request_id(header.decode("latin-1"))
        if chosen is not None:
            return chosen
    return get_request_id(context) or new_request_id()


def header_request_id(headers: Any) -> bytes | None:
    """The first ``X-Request-ID`` of ASGI ``headers``, raw."""
    for name, value in headers:
        if name == HEADER_BYTES:
            return bytes(value)
    return None


def with_header(message: Message, request_id: str) -> Message:
    """``message`` (an ``http.response.start``) with ``X-Request-ID: request_id`` in place of any other."""
    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER_BYTES]
    headers.append((HEADER_BYTES, request_id.encode("ascii")))
    return {**message, "headers": headers}


class RequestIdMiddleware:
    """ASGI middleware: choose the request ID, put it in baggage and on the server span, echo it.

    Place it inside the OpenTelemetry server middleware (``instrument_app`` does), so that the server
    span is current and the incoming ``traceparent`` / ``baggage`` are already extracted. Alone (no
    edge around it) it echoes the ID itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(header_request_id(scope.get("headers", ())))
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(SPAN_ATTRIBUTE, request_id)
        exchange = scope.get(SCOPE_KEY)
        if isinstance(exchange, Exchange):
            exchange.request_id = request_id  # the edge adds the header, even to error responses
            exchange.span = span
            inner_send = send
        else:

            async def inner_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = with_header(message, request_id)
                await send(message)

        token = otel_context.attach(with_request_id(request_id))
        try:
            await self.app(scope, receive, inner_send)
        finally:
            otel_context.detach(token)
