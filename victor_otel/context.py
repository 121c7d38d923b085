"""Request IDs as trace context: one ID per request, carried in W3C baggage beside ``traceparent``.

The request ID lives in the OpenTelemetry context as the baggage entry ``request_id``, so everything that
propagates trace context (the instrumented httpx client, :func:`inject` / :func:`extract` for queues)
carries it to the next service, and every log record written in the request carries it too.

At the HTTP edge (:mod:`victor_otel.web.requestid`, :mod:`victor_otel.web.edge`, both added by
``instrument_app``) ``X-Request-ID`` is accepted only when it is a sane token (at most 128 characters of
``[A-Za-z0-9._:-]``), else the one that arrived in baggage is taken, else one is generated; the ID goes
into baggage and on the server span (``victor.request_id``) and is echoed in the response's
``X-Request-ID``.

Everything that is not HTTP uses :func:`request_context`:

>>> from victor_otel import request_context, get_request_id, inject, extract
>>> with request_context("job-42"):
...     get_request_id()
'job-42'
>>> with request_context("job-42"):
...     headers = inject({})              # put on the queue message beside the payload
>>> sorted(headers)
['baggage']
>>> with request_context(parent=extract(headers)) as request_id:   # in the consumer
...     request_id
'job-42'
>>> get_request_id() is None
True
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any

from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Getter, TextMapPropagator, default_getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

#: The baggage entry (and log field) holding the request ID.
BAGGAGE_KEY = "request_id"
#: The HTTP header accepted at the edge and echoed in responses.
HEADER = "X-Request-ID"
#: The server span attribute holding the request ID.
SPAN_ATTRIBUTE = "victor.request_id"
MAX_LENGTH = 128

_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_logger = logging.getLogger("victor_otel")

_quiet = contextvars.ContextVar("victor_otel_quiet_baggage", default=False)
_baggage_logger = logging.getLogger("opentelemetry.baggage.propagation")


class _QuietBaggage(logging.Filter):
    """Drops the SDK propagator's records while :class:`QuietBaggagePropagator` extracts."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _quiet.get():
            return True
        _report_once("malformed", "a malformed baggage entry was skipped")
        return False


class QuietBaggagePropagator(W3CBaggagePropagator):
    """W3C baggage that never writes what a client sent to the log.

    The SDK's propagator logs an oversized header whole (a client filled a server's log with 211 KB in four
    requests) and every malformed entry. Here an oversized header is ignored before it is parsed, malformed
    entries are skipped silently, and the first of each is reported once, by size, on ``victor_otel``.
    """

    def __init__(self) -> None:
        super().__init__()
        if not any(isinstance(f, _QuietBaggage) for f in _baggage_logger.filters):
            _baggage_logger.addFilter(_QuietBaggage())

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        values = getter.get(carrier, self._BAGGAGE_HEADER_NAME)
        header = next(iter(values), None) if values else None
        if header and len(header) > self._MAX_HEADER_LENGTH // 4 and len(header.encode()) > self._MAX_HEADER_LENGTH:
            _report_once("oversized", f"a baggage header of {len(header.encode())} bytes (the limit is "
                         f"{self._MAX_HEADER_LENGTH}) was ignored")
            return otel_context.get_current() if context is None else context
        token = _quiet.set(True)
        try:
            return super().extract(carrier, context, getter)
        finally:
            _quiet.reset(token)


_reported: set[str] = set()


def _report_once(kind: str, message: str) -> None:
    if kind not in _reported:
        _reported.add(kind)
        _logger.warning("victor_otel: %s; such headers are ignored without a word from now on", message)


#: tracecontext + baggage, the propagator ``init()`` installs globally; inject / extract always use it.
PROPAGATOR: TextMapPropagator = CompositePropagator(
    [TraceContextTextMapPropagator(), QuietBaggagePropagator()]
)


def valid_request_id(value: object) -> str | None:
    """``value`` if it is a sane request ID (at most 128 characters of ``[A-Za-z0-9._:-]``), else ``None``.

    >>> valid_request_id("abc-123"), valid_request_id('{"level": "ERROR"}'), valid_request_id("x" * 129)
    ('abc-123', None, None)
    """
    if type(value) is str and len(value) <= MAX_LENGTH and _SANE.fullmatch(value) is not None:
        return value
    return None


def new_request_id() -> str:
    """A fresh request ID: 32 random hexadecimal characters (128 random bits; ``os.urandom`` costs about
    half of ``uuid4().hex``, which spends its time building a UUID object)."""
    return os.urandom(16).hex()


def get_request_id(context: Context | None = None) -> str | None:
    """The request ID of the current (or given) context, or ``None`` outside any request."""
    return valid_request_id(baggage.get_baggage(BAGGAGE_KEY, context))


def with_request_id(request_id: str, context: Context | None = None) -> Context:
    """``context`` (default: the current one) with ``request_id`` in its baggage."""
    return baggage.set_baggage(BAGGAGE_KEY, request_id, context)


def inject(carrier: MutableMapping[str, str] | None = None, context: Context | None = None) -> MutableMapping[str, str]:
    """Write the current trace context and baggage (request ID included) into ``carrier``; return it.

    For queue messages, job payloads and HTTP clients that are not instrumented: the headers are the
    W3C ones (``traceparent``, ``tracestate``, ``baggage``).
    """
    carrier = {} if carrier is None else carrier
    PROPAGATOR.inject(carrier, context)
    return carrier


def extract(carrier: Any) -> Context:
    """The context carried by ``carrier`` (a mapping of headers): remote parent span and baggage.

    A request ID that is not a sane token is dropped (the next :func:`request_context` makes a new one).
    Use it with ``request_context(parent=extract(headers))``, or ``opentelemetry.context.attach``.
    """
    context = PROPAGATOR.extract(carrier)
    carried = baggage.get_baggage(BAGGAGE_KEY, context)
    if carried is not None and valid_request_id(carried) is None:
        context = baggage.remove_baggage(BAGGAGE_KEY, context)
    return context


class request_context:
    """Run a block inside a request: the request ID goes into baggage (and so into logs and outgoing calls).

    ``request_id``: used when it is a sane token; otherwise (or when ``None``) the one already in the
    context is kept, else a new one is generated. ``parent``: a context to run in, typically
    ``extract(headers)`` from a queue message. Works with ``with`` and ``async with``; the value bound
    by ``as`` is the request ID in force.

    >>> async def handle():
    ...     async with request_context() as request_id:
    ...         return request_id == get_request_id()
    >>> import asyncio; asyncio.run(handle())
    True
    """

    __slots__ = ("_parent", "_request_id", "_token")

    def __init__(self, request_id: str | None = None, *, parent: Context | None = None) -> None:
        self._request_id = request_id
        self._parent = parent
        self._token: object = None

    def __enter__(self) -> str:
        base = otel_context.get_current() if self._parent is None else self._parent
        request_id = valid_request_id(self._request_id) or get_request_id(base) or new_request_id()
        self._token = otel_context.attach(with_request_id(request_id, base))
        return request_id

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]

    async def __aenter__(self) -> str:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)
