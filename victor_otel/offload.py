"""Spans encoded and sent by a child process: the application's process hands batches over a pipe.

Turning a batch of spans into OTLP protobuf and posting it is pure Python work of the export thread:
about 40 us per span, all of it holding the GIL, so a batch of 64 spans took the event loop's GIL away
for milliseconds at a time (the interpreter only takes it back every ``sys.getswitchinterval()``, 5 ms).
That, not the spans themselves, is what set the p99 of requests under load. Here the export thread
turns each span into a tuple of plain values (``marshal``, about 4 us a span), writes it to a child
process (``python -m victor_otel.offload``) and waits for the child's answer, with the GIL released;
the child rebuilds the spans and exports them with the same ``OTLPSpanExporter``, so the bytes on the
wire are the ones the exporter would have sent from the application's process.

:class:`ExportProcess` is a ``SpanExporter``: one batch at a time, answered ``SUCCESS`` or ``FAILURE``
when the collector (through the child) answered, so queueing, drops and ``victor_otel_exported_total``
mean what they mean with the exporter in-process. The child is started at the first export (``init()``
waits for nothing), again after a fork in each forked process, and again after it died (a batch it
held counts as failed). When it cannot start (not a POSIX system, no usable Python executable, or three deaths in a
minute), the batches are exported in-process, as before, after one warning; so is a batch holding a value
``marshal`` cannot carry (none the SDK's attribute rules let through).

``VICTOR_OTEL_EXPORT_PROCESS=false`` keeps the export in-process.

>>> record = span_record(_example_span())
>>> span_from_record(record, [({"service.name": "demo"}, "")], [("demo", None, None, None)]).name
'ChatCoordinator.chat'
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList

from victor_otel import forking

_logger = logging.getLogger("victor_otel")

_HEADER = struct.Struct(">I")
#: How long a child may take to import and build its exporter before the batch goes in-process.
START_TIMEOUT = 30.0
#: Beyond the exporter's own timeout, how long the application's process waits for a batch's answer
#: before it gives the child up (killed; the batch counts as failed).
ANSWER_MARGIN = 5.0
#: A child that died this many times within ``_DEATH_WINDOW`` seconds is not started again.
_MAX_DEATHS, _DEATH_WINDOW = 3, 60.0

Record = tuple[Any, ...]


# -- spans as plain values, and back -------------------------------------------------------------------


def _context(context: Any) -> Record | None:
    if context is None:
        return None
    state = context.trace_state
    return (
        context.trace_id, context.span_id, context.is_remote, int(context.trace_flags),
        tuple(state.items()) if state else None,
    )


def _values(attributes: Any) -> dict[str, Any] | None:
    return dict(attributes) if attributes else None


def span_record(span: ReadableSpan, resource: int = 0, scope: int = 0) -> Record:
    """``span`` as a tuple of values ``marshal`` carries (ints, strings, tuples, dicts): what crosses the
    pipe. ``resource`` and ``scope``: indexes into the batch's tables of resources and scopes."""
    events = tuple(
        (event.name, event.timestamp, _values(event.attributes), event.dropped_attributes) for event in span.events
    ) or None
    links = tuple(
        (_context(link.context), _values(link.attributes), link.dropped_attributes) for link in span.links
    ) or None
    status = span.status
    return (
        span.name, _context(span.context), _context(span.parent), span.kind.value, span.start_time, span.end_time,
        _values(span.attributes), span.dropped_attributes, events, span.dropped_events, links, span.dropped_links,
        status.status_code.value, status.description, resource, scope,
    )


def _scope_record(scope: Any) -> Record | None:
    if scope is None:
        return None
    attributes = getattr(scope, "attributes", None)
    return (scope.name, scope.version, scope.schema_url, dict(attributes) if attributes else None)


def batch_record(spans: Sequence[ReadableSpan]) -> Record:
    """A batch: its resources and instrumentation scopes once each, then its spans."""
    resources: list[Record] = []
    scopes: list[Record | None] = []
    resource_index: dict[int, int] = {}
    scope_index: dict[int, int] = {}
    records = []
    for span in spans:
        resource = span.resource
        r = resource_index.get(id(resource))
        if r is None:
            r = resource_index[id(resource)] = len(resources)
            resources.append((dict(resource.attributes), resource.schema_url))
        scope = span.instrumentation_scope
        s = scope_index.get(id(scope))
        if s is None:
            s = scope_index[id(scope)] = len(scopes)
            scopes.append(_scope_record(scope))
        records.append(span_record(span, r, s))
    return ("spans", resources, scopes, records)


def _span_context(record: Record | None) -> Any:
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    if record is None:
        return None
    trace_id, span_id, is_remote, flags, state = record
    return SpanContext(trace_id, span_id, is_remote, TraceFlags(flags), TraceState(list(state)) if state else None)


def bounded_attributes(attributes: Mapping[str, Any] | None, dropped: int) -> BoundedAttributes:
    """``attributes`` in the SDK's container, with the count the limits dropped: what a ``ReadableSpan``,
    an ``Event`` or a ``Link`` reads its ``dropped_attributes`` from (a plain dict reads as 0)."""
    bounded = BoundedAttributes(maxlen=None, attributes=attributes, immutable=True)
    bounded.dropped = dropped
    return bounded


def bounded_list(items: Sequence[Any], dropped: int) -> BoundedList[Any]:
    """``items`` (events, links) in the SDK's container, with the count the limits dropped (what
    ``ReadableSpan.dropped_events`` / ``dropped_links`` read)."""
    bounded: BoundedList[Any] = BoundedList(None)
    bounded.extend(items)
    bounded.dropped = dropped
    return bounded


def span_from_record(record: Record, resources: Sequence[Any], scopes: Sequence[Any]) -> ReadableSpan:
    """The ``ReadableSpan`` :func:`span_record` was made from (what the exporter reads of it, dropped
    counts included). ``resources`` / ``scopes``: the batch's tables, as records or already built."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    (name, context, parent, kind, start, end, attributes, dropped, events, dropped_events, links, dropped_links,
     code, description, r, s) = record
    resource = resources[r]
    if not isinstance(resource, Resource):
        resource = Resource(resource[0], resource[1] or None)
    scope = scopes[s]
    if scope is not None and not isinstance(scope, InstrumentationScope):
        scope = _scope(scope)
    return ReadableSpan(
        name=name, context=_span_context(context), parent=_span_context(parent), resource=resource,
        attributes=bounded_attributes(attributes, dropped),
        events=bounded_list([
            Event(event_name, bounded_attributes(event_attributes, event_dropped), timestamp)
            for event_name, timestamp, event_attributes, event_dropped in events or ()
        ], dropped_events),
        links=bounded_list([
            Link(_span_context(link_context), bounded_attributes(link_attributes, link_dropped))
            for link_context, link_attributes, link_dropped in links or ()
        ], dropped_links),
        kind=SpanKind(kind), status=Status(StatusCode(code), description), start_time=start, end_time=end,
        instrumentation_scope=scope,
    )


def _scope(record: Record) -> Any:
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    name, version, schema_url, attributes = record
    if attributes is None:
        return InstrumentationScope(name, version, schema_url)
    return InstrumentationScope(name, version, schema_url, attributes)


# -- frames: a 4-byte length, then marshal --------------------------------------------------------------


def _frame(value: Any) -> bytes:
    payload = marshal.dumps(value)
    return _HEADER.pack(len(payload)) + payload


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    """Write ``data`` to the non-blocking ``fd`` by ``deadline`` (``time.monotonic()``); ``TimeoutError``
    (an ``OSError``) when the reader stopped reading: a hung child must not hold the export thread for ever."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the export process stopped reading") from None
            select.select([], [fd], [], remaining)
            continue
        view = view[written:]


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = b""
    while len(data) < size:  # an unbuffered pipe returns what has arrived so far
        more = stream.read(size - len(data))
        if not more:
            return None
        data += more
    return data


def read_frame(stream: IO[bytes]) -> Any:
    """The next value on ``stream``, or ``None`` at its end."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    payload = _read_exactly(stream, _HEADER.unpack(header)[0])
    return None if payload is None else marshal.loads(payload)


# -- the application's side ----------------------------------------------------------------------------


def child_environment() -> dict[str, str]:
    """The application's environment, with ``PYTHONPATH`` set to its ``sys.path``: the child imports what this
    process imports, from the same places (victor_otel may be on a path the application added at run time),
    except ``opentelemetry-instrument``'s sitecustomize (the child must not instrument itself)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        path for path in sys.path if path and not path.rstrip("/").endswith("auto_instrumentation")
    )
    return env


class _Child:
    """One running child: its process and the two ends of the pipes this process holds."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "victor_otel.offload"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=child_environment(), close_fds=True,
            bufsize=0,
            start_new_session=True,  # a Ctrl-C at the terminal must not kill it before the last batch
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.to_child = self.process.stdin.fileno()
        os.set_blocking(self.to_child, False)  # writes wait in select(), with a deadline
        self.from_child = self.process.stdout

    def hello(self, endpoint: str, timeout: float) -> bool:
        """Tell it what to build; ``True`` once it says it is ready (``False``: it did not start)."""
        try:
            _write_all(self.to_child, _frame(("hello", endpoint, timeout)), time.monotonic() + START_TIMEOUT)
            answer = self.answer(START_TIMEOUT)
        except (OSError, ValueError):  # it exited before reading
            return False
        return answer is not None and answer[0] == "ready"

    def answer(self, timeout: float) -> Any:
        """The child's next frame, or ``None`` if it ended or said nothing within ``timeout`` seconds."""
        ready, _, _ = select.select([self.from_child], [], [], max(timeout, 0.0))
        return read_frame(self.from_child) if ready else None

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=5)
        except Exception:  # already gone
            pass
        self.close()

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


class ExportProcess(SpanExporter):
    """A ``SpanExporter`` whose batches are encoded and posted by a child process (see the module).

    ``endpoint`` and ``timeout`` are the OTLP/HTTP exporter's (the child builds
    ``OTLPSpanExporter(endpoint=..., timeout=...)``; the ``OTEL_EXPORTER_OTLP_*`` environment variables
    reach it). ``in_process``: builds the same exporter in this process, used when no child can run.
    """

    def __init__(self, endpoint: str, timeout: float, in_process: Callable[[], SpanExporter]) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._in_process = in_process
        self._inner: SpanExporter | None = None  # the in-process exporter, built when first needed
        self._given_up = False  # no child is started any more: every batch goes in-process
        self._child: _Child | None = None
        self._lock = threading.Lock()
        self._deaths: list[float] = []
        self.starts = 0  # children started (a restart after a death or a fork counts)
        self._shut_down = False
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        """The child's process ID while one runs."""
        child = self._child
        return child.process.pid if child is not None else None

    @property
    def in_process(self) -> bool:
        """``True`` once batches are exported in this process (no child could run)."""
        return self._given_up

    def state(self) -> dict[str, Any]:
        """``{"pid", "starts", "in_process"}``: what ``Telemetry.export_stats()`` shows of it (``pid`` is
        ``None`` before the first batch and while none runs)."""
        return {"pid": self.pid, "starts": self.starts, "in_process": self.in_process}

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        with self._lock:
            if not self._given_up:
                try:
                    frame = _frame(batch_record(spans))
                except ValueError:  # a value marshal cannot carry (the SDK let it through): send it from here
                    return self._exporter().export(spans)
                child = self._running_child()
                if child is not None:
                    return self._send(child, frame)
            return self._exporter().export(spans)

    def _send(self, child: _Child, frame: bytes) -> SpanExportResult:
        try:
            _write_all(child.to_child, frame, time.monotonic() + self.timeout + ANSWER_MARGIN)
            answer = child.answer(self.timeout + ANSWER_MARGIN)
        except (OSError, ValueError):  # the pipe broke: the child died
            answer = None
        if answer is None or answer[0] != "done":
            self._lost(child, "the export process did not answer" if child.process.poll() is None
                       else f"the export process exited ({child.process.returncode})")
            return SpanExportResult.FAILURE
        for level, name, message in answer[2]:  # the exporter's own messages, through this process's logging
            logging.getLogger(name).log(level, "%s", message)
        return SpanExportResult.SUCCESS if answer[1] else SpanExportResult.FAILURE

    def _running_child(self) -> _Child | None:
        child = self._child
        if child is not None:
            if child.process.poll() is None:
                return child
            # It died between two batches (killed, out of memory): nothing of ours was in it; start another.
            _logger.warning("victor_otel: the export process exited (%s); starting another",
                            child.process.returncode)
            child.close()
            self._child = None
            self._died()
        if os.name != "posix":  # select() on pipes, non-blocking pipes, sessions
            return self._give_up("it needs a POSIX system")
        if not _usable_executable():
            return self._give_up(f"there is no Python executable to start it with ({sys.executable!r})")
        while len(self._deaths) < _MAX_DEATHS:
            try:
                child = _Child()
            except OSError as exc:
                return self._give_up(f"it could not be started ({type(exc).__name__}: {exc})")
            if child.hello(self.endpoint, self.timeout):
                self._child = child
                self.starts += 1
                return child
            child.kill()
            self._died()
        return self._give_up(f"it stopped {len(self._deaths)} times within a minute (its errors are on standard "
                             "error)")

    def _lost(self, child: _Child, why: str) -> None:
        if not self._shut_down:  # (after abort(), the kill was ours)
            _logger.warning("victor_otel: %s; its batch is lost and counted as failed, a new one starts with "
                            "the next batch", why)
        child.kill()
        self._child = None
        self._died()

    def _died(self) -> None:
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < _DEATH_WINDOW] + [now]

    def _give_up(self, why: str) -> _Child | None:
        """Export from this process from now on (one warning); ``None``, the child there is not."""
        _logger.warning("victor_otel: spans are exported from the application's process: the export process "
                        "is not used because %s", why)
        self._given_up = True
        return None

    def _exporter(self) -> SpanExporter:
        if self._inner is None:
            self._inner = self._in_process()
        return self._inner

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: each batch is answered before the next is sent."""
        inner = self._inner
        return bool(inner.force_flush(timeout_millis)) if inner is not None else True

    def abort(self) -> None:
        """Stop now (a shutdown ran out of time): the child is killed with the batch it holds, whose
        export then fails at once; no batch is sent after this."""
        self._shut_down = True
        child = self._child
        if child is not None:
            child.kill()

    def shutdown(self) -> None:
        """Ask the child to finish and exit (it has no batch left: each is answered before the next is
        sent)."""
        if self._shut_down:
            return
        self._shut_down = True
        child = self._child
        if child is not None:
            try:
                _write_all(child.to_child, _frame(("exit",)), time.monotonic() + self.timeout + ANSWER_MARGIN)
                child.process.wait(timeout=self.timeout + ANSWER_MARGIN)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            child.kill()
        inner = self._inner
        if inner is not None:
            inner.shutdown()

    def forget_after_fork(self) -> None:
        """In a forked process: the child belongs to the parent; close this copy of its pipes (so that it
        sees the end of its input when the parent closes its own) and start another one when needed."""
        child = self._child
        self._child = None
        self._lock = threading.Lock()
        if child is not None:
            child.close()


_LIVE: weakref.WeakSet[ExportProcess] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for exporter in list(_LIVE):
        exporter.forget_after_fork()


forking.on_fork(after_in_child=_forget_after_fork)


def _usable_executable() -> bool:
    """A Python interpreter to start (an embedding server's ``sys.executable`` is itself, or empty)."""
    executable = sys.executable
    return bool(executable) and os.path.basename(executable).startswith(("python", "pypy")) \
        and os.access(executable, os.X_OK)


# -- the child ------------------------------------------------------------------------------------------


def main() -> int:
    """The child: read batches from standard input, export each, answer on standard output."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it stops when told to, or when its input ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not reach the answers
    forwarded = _Forwarded()
    root = logging.getLogger()
    root.addHandler(forwarded)
    root.setLevel(logging.WARNING)
    requests = sys.stdin.buffer
    hello = read_frame(requests)
    if hello is None or hello[0] != "hello":
        return 2
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from victor_otel import _sdk

    _sdk.suppress_instrumentation()
    exporter = OTLPSpanExporter(endpoint=hello[1], timeout=hello[2])
    answers.write(_frame(("ready",)))
    resources: dict[bytes, Any] = {}
    scopes: dict[bytes, Any] = {}
    while True:
        request = read_frame(requests)
        if request is None or request[0] == "exit":
            break
        _, resource_records, scope_records, records = request
        try:
            batch_resources = [_cached(resources, record, _resource) for record in resource_records]
            batch_scopes = [None if record is None else _cached(scopes, record, _scope) for record in scope_records]
            spans = [span_from_record(record, batch_resources, batch_scopes) for record in records]
            ok = exporter.export(spans) is SpanExportResult.SUCCESS
        except Exception:
            logging.getLogger("victor_otel").exception("a batch could not be exported")
            ok = False
        answers.write(_frame(("done", ok, forwarded.take())))
    exporter.shutdown()  # type: ignore[no-untyped-call]
    for level, name, message in forwarded.take():  # nothing left to answer: standard error
        print(f"victor_otel export process: {logging.getLevelName(level)} {name}: {message}", file=sys.stderr)
    return 0


class _Forwarded(logging.Handler):
    """The child's log records (the exporter's retries and refusals, at WARNING and above), kept until the
    next answer carries them to the application's process, which logs them under the same logger names
    through its own logging configuration, as if the exporter had run there."""

    LIMIT = 100  # per batch: the exporter writes a handful

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str, str]] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.LIMIT:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self._formatter.formatException(record.exc_info)
            self.records.append((record.levelno, record.name, message))

    def take(self) -> list[tuple[int, str, str]]:
        records, self.records = self.records, []
        return records


def _cached(cache: dict[bytes, Any], record: Record, build: Callable[[Record], Any]) -> Any:
    """Resources and scopes are the same from batch to batch: built once (keyed by their marshal form)."""
    key = marshal.dumps(record)
    value = cache.get(key)
    if value is None:
        if len(cache) > 1000:
            cache.clear()
        value = cache[key] = build(record)
    return value


def _resource(record: Record) -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource(record[0], record[1] or None)


def _example_span() -> ReadableSpan:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import SpanContext

    return ReadableSpan(
        name="ChatCoordinator.chat", context=SpanContext(1, 2, False), resource=Resource({"service.name": "demo"}),
        attributes={"victor.outcome": "success"}, start_time=1, end_time=2,
    )


if __name__ == "__main__":
    sys.exit(main())
