"""Recent traces in bounded memory, with the log records written during them, for the ``/debug`` pages.

:class:`TraceBuffer` is a ``SpanProcessor``: ``on_end`` appends the span to its trace's pending list
(one lock, one dict lookup); when the trace's local root ends, the trace is complete and kept in three
bounded places, as OpenTelemetry's zPages do with their latency buckets:

- the :data:`RECENT` latest traces, whatever they did;
- the :data:`FAILED` latest traces with a span in error;
- per root-latency bucket (:data:`LATENCY_BOUNDS`), the :data:`PER_BUCKET` latest traces: slow traces
  are rare, so their buckets turn over slowly and they stay visible long after the fast ones left.

Memory is bounded by these counts times :data:`MAX_SPANS` spans and :data:`MAX_LOGS` records a trace.
Nothing is redacted or formatted here: the spans are kept as the SDK gave them and the pages redact
them when they are shown (``victor_otel.exporting.redacted_span``), so the hot path pays no redaction.

Log records are captured by a wrapper around the logging record factory (not a handler: a handler on
the root logger would silence ``logging.lastResort``), only for records written while a span of a
recorded trace is current, and only when a logger let them through its level.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

#: Upper bounds (seconds) of the latency buckets of kept traces, zPages' own: 10 us .. 100 s.
LATENCY_BOUNDS = (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
#: Traces kept whatever they did (the latest ones).
RECENT = 50
#: Traces kept per latency bucket (the latest of each bucket).
PER_BUCKET = 10
#: Failed traces kept (the latest ones).
FAILED = 50
#: Spans kept per trace; the excess is counted in ``TraceRecord.dropped_spans``.
MAX_SPANS = 200
#: Log records kept per trace; the excess is counted in ``TraceRecord.dropped_logs``.
MAX_LOGS = 100
#: Traces whose root has not ended yet, kept while they run; the oldest is forgotten past it.
MAX_PENDING = 256

COORDINATOR_ATTRIBUTE = "victor.coordinator"
OUTCOME_ATTRIBUTE = "victor.outcome"
REQUEST_ID_ATTRIBUTE = "victor.request_id"


@dataclass
class LogEntry:
    """One log record written while a span of the trace was current (formatted when shown)."""

    record: logging.LogRecord
    span_id: int
    exception: str | None = None


@dataclass
class TraceRecord:
    """One complete trace as recorded in this process."""

    trace_id: int
    spans: list[ReadableSpan]
    logs: list[LogEntry]
    dropped_spans: int = 0
    dropped_logs: int = 0
    #: Filled by :meth:`summarise`.
    root: ReadableSpan | None = None
    start_ns: int = 0
    end_ns: int = 0
    failed: bool = False
    coordinators: tuple[str, ...] = ()
    request_id: str | None = None

    @property
    def duration(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    @property
    def trace_id_hex(self) -> str:
        return format(self.trace_id, "032x")

    @property
    def name(self) -> str:
        return self.root.name if self.root is not None else "?"

    def summarise(self) -> None:
        """Compute the root, the time range, the outcome, the coordinators and the request ID."""
        spans = self.spans
        ids = {s.context.span_id for s in spans if s.context is not None}
        roots = [s for s in spans if s.parent is None or s.parent.span_id not in ids]
        self.root = min(roots or spans, key=lambda s: s.start_time or 0)
        self.start_ns = min(s.start_time or 0 for s in spans)
        self.end_ns = max(s.end_time or 0 for s in spans)
        coordinators: dict[str, None] = {}
        failed = False
        request_id = None
        for span in spans:
            attributes = span.attributes or {}
            if span.status.status_code is StatusCode.ERROR or attributes.get(OUTCOME_ATTRIBUTE) == "error":
                failed = True
            coordinator = attributes.get(COORDINATOR_ATTRIBUTE)
            if isinstance(coordinator, str):
                coordinators[coordinator] = None
            rid = attributes.get(REQUEST_ID_ATTRIBUTE)
            if request_id is None and isinstance(rid, str):
                request_id = rid
        self.failed, self.coordinators, self.request_id = failed, tuple(coordinators), request_id


@dataclass
class _Pending:
    spans: list[ReadableSpan] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)
    dropped_spans: int = 0
    dropped_logs: int = 0


class TraceBuffer(SpanProcessor):
    """Keeps recent, slow and failed traces in bounded memory (see the module's docstring).

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> provider = TracerProvider()
    >>> buffer = TraceBuffer()
    >>> provider.add_span_processor(buffer)
    >>> with provider.get_tracer("doc").start_as_current_span("root"):
    ...     with provider.get_tracer("doc").start_as_current_span("child"):
    ...         pass
    >>> [[s.name for s in t.spans] for t in buffer.traces()]
    [['child', 'root']]
    >>> provider.shutdown()
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._recent: deque[TraceRecord] = deque(maxlen=RECENT)
        self._failed: deque[TraceRecord] = deque(maxlen=FAILED)
        self._buckets = [deque[TraceRecord](maxlen=PER_BUCKET) for _ in range(len(LATENCY_BOUNDS) + 1)]
        self._previous_factory: Callable[..., logging.LogRecord] | None = None
        self._factory: Callable[..., logging.LogRecord] | None = None

    # -- spans -------------------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        trace_id = context.trace_id
        with self._lock:
            pending = self._pending.get(trace_id)
            if pending is None:
                pending = self._open(trace_id)
            if len(pending.spans) < MAX_SPANS:
                pending.spans.append(span)
            else:
                pending.dropped_spans += 1
        parent = span.parent
        if parent is None or parent.is_remote:  # the local root ended: the trace is complete here
            self._complete(trace_id)

    def _open(self, trace_id: int) -> _Pending:
        """A new pending trace (under the lock), forgetting the oldest past :data:`MAX_PENDING`."""
        if len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        pending = self._pending[trace_id] = _Pending()
        return pending

    def _complete(self, trace_id: int) -> None:
        with self._lock:
            pending = self._pending.pop(trace_id, None)
            if pending is None or not pending.spans:
                return
            record = self._find(trace_id)
            if record is not None:  # a second local root of a trace already kept: one trace, more spans
                room = MAX_SPANS - len(record.spans)
                record.spans.extend(pending.spans[:max(room, 0)])
                record.dropped_spans += pending.dropped_spans + max(len(pending.spans) - max(room, 0), 0)
                record.logs.extend(pending.logs[:max(MAX_LOGS - len(record.logs), 0)])
                record.summarise()
                return
        record = TraceRecord(trace_id, pending.spans, pending.logs, pending.dropped_spans, pending.dropped_logs)
        record.summarise()  # outside the lock: it reads only this record's spans
        with self._lock:
            self._recent.append(record)
            self._buckets[bisect.bisect_left(LATENCY_BOUNDS, record.duration)].append(record)
            if record.failed:
                self._failed.append(record)

    def _find(self, trace_id: int) -> TraceRecord | None:
        for group in (self._recent, self._failed, *self._buckets):
            for record in group:
                if record.trace_id == trace_id:
                    return record
        return None

    # -- reading -----------------------------------------------------------------------------------

    def traces(self) -> list[TraceRecord]:
        """Every kept trace once, the latest first."""
        with self._lock:
            seen: dict[int, TraceRecord] = {}
            for group in (self._recent, self._failed, *self._buckets):
                for record in group:
                    seen.setdefault(record.trace_id, record)
            records = list(seen.values())
        records.sort(key=lambda r: r.start_ns, reverse=True)
        return records

    def get(self, trace_id: int) -> TraceRecord | None:
        with self._lock:
            return self._find(trace_id)

    def bucket_counts(self) -> list[int]:
        """How many traces each latency bucket holds now (for the page's summary)."""
        with self._lock:
            return [len(bucket) for bucket in self._buckets]

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._recent.clear()
            self._failed.clear()
            for bucket in self._buckets:
                bucket.clear()

    # -- log records -------------------------------------------------------------------------------

    def install_log_capture(self) -> None:
        """Wrap the logging record factory so that records written inside a trace are kept with it."""
        if self._factory is not None:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            with contextlib.suppress(Exception):  # telemetry never breaks a log call
                self.offer_log(record)
            return record

        self._previous_factory, self._factory = previous, factory
        logging.setLogRecordFactory(factory)

    def uninstall_log_capture(self) -> None:
        if self._factory is None:
            return
        if logging.getLogRecordFactory() is self._factory and self._previous_factory is not None:
            logging.setLogRecordFactory(self._previous_factory)
        # else: someone wrapped ours since; it stays in their chain, but offers nothing from now on.
        self._factory = None

    def offer_log(self, record: logging.LogRecord) -> None:
        """Keep ``record`` with the trace of the current span, if there is one (bounded per trace)."""
        if self._factory is None:
            return
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return
        exception = None
        if record.exc_info and record.exc_info[0] is not None:
            # Formatted now: keeping the traceback object would keep every frame's locals alive.
            exception = logging.Formatter().formatException(record.exc_info)
        entry = LogEntry(record, context.span_id, exception)
        with self._lock:
            pending = self._pending.get(context.trace_id)
            if pending is None:
                pending = self._open(context.trace_id)
            if len(pending.logs) < MAX_LOGS:
                pending.logs.append(entry)
            else:
                pending.dropped_logs += 1

    # -- SpanProcessor -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.uninstall_log_capture()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def matching(
    records: Iterable[TraceRecord],
    coordinator: str | None = None,
    outcome: str | None = None,
    request_id: str | None = None,
) -> list[TraceRecord]:
    """The records that match every filter given (``outcome``: ``error`` or ``ok``).

    >>> matching([], coordinator="Chat")
    []
    """
    result = []
    for record in records:
        if coordinator and coordinator not in record.coordinators:
            continue
        if outcome == "error" and not record.failed:
            continue
        if outcome == "ok" and record.failed:
            continue
        if request_id and record.request_id != request_id:
            continue
        result.append(record)
    return result
