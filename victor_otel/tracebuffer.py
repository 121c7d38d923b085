"""Recent traces in bounded memory, with the log records written during them, for the ``/debug`` pages.

:class:`TraceBuffer` is a ``SpanProcessor`` whose ``on_end`` only appends the span to a queue: every
:data:`BATCH` spans (and before every read) the calling thread sorts the queue in one pass. Spans wait
for their trace's local root; when it has ended, the trace is complete and kept in three bounded places,
as OpenTelemetry's zPages do with their latency buckets:

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
import collections
import contextlib
import functools
import itertools
import logging
import operator
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from victor_otel import forking

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
#: Spans queued by ``on_end`` before they are sorted (a per-span cost of a few list operations, paid by
#: the thread whose span completes the batch).
BATCH = 2048

_BOUNDS_NS = tuple(int(bound * 1e9) for bound in LATENCY_BOUNDS)
COORDINATOR_ATTRIBUTE = "victor.coordinator"
REQUEST_ID_ATTRIBUTE = "victor.request_id"


@dataclass
class LogEntry:
    """One log record written while a span of the trace was current (formatted when shown)."""

    record: logging.LogRecord
    span_id: int
    exception: str | None = None


class TraceRecord:
    """One complete trace as recorded in this process.

    What the buffer needs to keep it (root, time range, outcome) is set when the trace completes; the
    coordinators and the request ID are read from the spans when first asked for (off the hot path).
    """

    __slots__ = ("_summary", "dropped_logs", "dropped_spans", "end_ns", "failed", "homes", "logs", "root",
                 "spans", "start_ns", "trace_id")

    def __init__(self, trace_id: int, root: ReadableSpan, spans: list[ReadableSpan], logs: list[LogEntry],
                 dropped_spans: int = 0, dropped_logs: int = 0) -> None:
        self.trace_id = trace_id
        self.root = root
        self.spans = spans
        self.logs = logs
        self.dropped_spans = dropped_spans
        self.dropped_logs = dropped_logs
        self.start_ns = root.start_time or 0
        self.end_ns = root.end_time or self.start_ns
        error = StatusCode.ERROR
        self.failed = any(span.status.status_code is error for span in spans)
        #: In how many of the buffer's groups this record is (it is forgotten at 0).
        self.homes = 0
        self._summary: tuple[tuple[str, ...], str | None] | None = None

    @property
    def duration(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    @property
    def trace_id_hex(self) -> str:
        return format(self.trace_id, "032x")

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def coordinators(self) -> tuple[str, ...]:
        return self._summarise()[0]

    @property
    def request_id(self) -> str | None:
        return self._summarise()[1]

    def _summarise(self) -> tuple[tuple[str, ...], str | None]:
        summary = self._summary
        if summary is None:
            coordinators: dict[str, None] = {}
            request_id = None
            for span in self.spans:
                attributes = span.attributes or {}
                coordinator = attributes.get(COORDINATOR_ATTRIBUTE)
                if isinstance(coordinator, str):
                    coordinators[coordinator] = None
                rid = attributes.get(REQUEST_ID_ATTRIBUTE)
                if request_id is None and isinstance(rid, str):
                    request_id = rid
            summary = self._summary = (tuple(coordinators), request_id)
        return summary

    def merge(self, spans: list[ReadableSpan], logs: list[LogEntry], dropped_spans: int, dropped_logs: int) -> None:
        """Add the spans of another local root of this trace (a trace that came back to this process)."""
        room = max(MAX_SPANS - len(self.spans), 0)
        self.spans.extend(spans[:room])
        self.dropped_spans += dropped_spans + max(len(spans) - room, 0)
        room = max(MAX_LOGS - len(self.logs), 0)
        self.logs.extend(logs[:room])
        self.dropped_logs += dropped_logs + max(len(logs) - room, 0)
        for span in spans:
            self.start_ns = min(self.start_ns, span.start_time or self.start_ns)
            self.end_ns = max(self.end_ns, span.end_time or self.end_ns)
        self.failed = self.failed or any(span.status.status_code is StatusCode.ERROR for span in spans)
        self._summary = None


def _getters() -> tuple[Callable[[Any], Any], ...]:
    """Readers of a ``ReadableSpan``'s parent, status code, start and end time and context, for
    :meth:`TraceBuffer.drain`, which maps them over a whole batch.

    The SDK returns each field from a Python property (a function call each); read from the slots behind
    those properties, a ``map`` over a batch runs without one Python call per span, which is what keeps the
    recording within its budget (the P1 debug benchmark). Checked on opentelemetry-sdk 1.43 and 1.45
    (``_parent``, ``_status._status_code``, ``_start_time``, ``_end_time``, ``_context``); an SDK without
    them, or where they disagree with the properties, gets the public properties: slower, the same result.
    """
    private = ("_parent", "_status._status_code", "_start_time", "_end_time", "_context")
    public = ("parent", "status.status_code", "start_time", "end_time", "context")
    probe = ReadableSpan(name="probe", start_time=1, end_time=2)
    try:
        if all(operator.attrgetter(a)(probe) == operator.attrgetter(b)(probe)
               for a, b in zip(private, public, strict=True)):
            return tuple(operator.attrgetter(name) for name in private)
    except AttributeError:
        pass
    return tuple(operator.attrgetter(name) for name in public)


_PARENT, _STATUS_CODE, _START, _END, _CONTEXT = _getters()
_BUCKET_OF = functools.partial(bisect.bisect_left, _BOUNDS_NS)
_IS_ERROR = functools.partial(operator.is_, StatusCode.ERROR)


@dataclass
class _Pending:
    spans: list[ReadableSpan] = field(default_factory=list)
    dropped_spans: int = 0
    failed: bool = False


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
        _BUFFERS.add(self)
        #: Ended spans not sorted yet. ``deque.append`` and ``popleft`` are atomic: no lock on the hot path.
        self._queue: deque[ReadableSpan] = deque()
        self._pending: dict[int, _Pending] = {}
        self._logs: dict[int, list[LogEntry]] = {}
        self._dropped_logs: dict[int, int] = {}
        self._recent: deque[TraceRecord] = deque(maxlen=RECENT)
        self._failed: deque[TraceRecord] = deque(maxlen=FAILED)
        self._buckets = [deque[TraceRecord](maxlen=PER_BUCKET) for _ in range(len(LATENCY_BOUNDS) + 1)]
        #: Every kept record by trace ID (each is in one to three of the groups above).
        self._kept: dict[int, TraceRecord] = {}
        self._previous_factory: Callable[..., logging.LogRecord] | None = None
        self._factory: Callable[..., logging.LogRecord] | None = None

    # -- spans -------------------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        queue.append(span)
        if len(queue) >= BATCH:
            self.drain()

    def drain(self) -> None:
        """Sort the queued spans into pending and kept traces (one thread at a time)."""
        with self._lock:
            queue = self._queue
            count = len(queue)
            if not count:
                return
            spans = list(map(deque.popleft, itertools.repeat(queue, count)))  # atomic pops, in C
            parents = list(map(_PARENT, spans))
            if parents.count(None) == count:  # only roots (spans of their own traces): no per-span loop
                self._file_roots(spans)
                return
            roots: list[ReadableSpan] = []
            pending, kept = self._pending, self._kept
            error = StatusCode.ERROR
            for span, parent in zip(spans, parents, strict=True):
                if parent is None or parent.is_remote:
                    roots.append(span)
                    continue
                trace_id = _CONTEXT(span).trace_id
                record = kept.get(trace_id)
                if record is not None:  # it ended after its root (a span left running): join its trace
                    record.merge([span], [], 0, 0)
                    continue
                waiting = pending.get(trace_id)
                if waiting is None:
                    if len(pending) >= MAX_PENDING:
                        del pending[next(iter(pending))]
                    waiting = pending[trace_id] = _Pending()
                if len(waiting.spans) < MAX_SPANS:
                    waiting.spans.append(span)
                else:
                    waiting.dropped_spans += 1
                if _STATUS_CODE(span) is error:
                    waiting.failed = True
            if roots:
                self._file_roots(roots)

    def _file_roots(self, roots: list[ReadableSpan]) -> None:
        """Keep the complete traces worth keeping (under the lock). Of a batch only the last :data:`RECENT`,
        the last :data:`FAILED` failed and the last :data:`PER_BUCKET` of each latency bucket can stay, so
        only those are built; the others are classified by ``map`` over the batch, never one by one."""
        count = len(roots)
        buckets = list(map(_BUCKET_OF, map(operator.sub, map(_END, roots), map(_START, roots))))
        failed = list(itertools.compress(range(count), map(_IS_ERROR, map(_STATUS_CODE, roots))))
        waiting: list[_Pending | None] = [None] * count
        pending, logs = self._pending, self._logs
        if pending or logs:  # traces with children or log records: their entries leave with them
            for index, context in enumerate(map(_CONTEXT, roots)):
                waiting[index] = found = pending.pop(context.trace_id, None) if pending else None
                if found is not None and found.failed and index not in failed:
                    failed.append(index)
            failed.sort()
        chosen = set(range(max(count - RECENT, 0), count))
        chosen.update(failed[-FAILED:])
        backwards = buckets[::-1]
        for bucket, n in collections.Counter(buckets).items():
            position = -1
            for _ in range(min(n, PER_BUCKET)):  # the last PER_BUCKET of this bucket
                position = backwards.index(bucket, position + 1)
                chosen.add(count - 1 - position)
        for index in sorted(chosen):  # oldest first, so that the latest stay
            root = roots[index]
            trace_id = _CONTEXT(root).trace_id
            found = waiting[index]
            spans = [root] if found is None else [*found.spans, root]
            dropped = found.dropped_spans if found is not None else 0
            if len(spans) > MAX_SPANS:
                dropped += len(spans) - MAX_SPANS
                spans = spans[:MAX_SPANS]
            entries = logs.pop(trace_id, None) if logs else None
            record = TraceRecord(trace_id, root, spans, entries or [], dropped, self._dropped_logs.pop(trace_id, 0))
            self._keep(record, buckets[index])
        if logs:  # the records of traces that were not kept
            for context in map(_CONTEXT, roots):
                if logs.pop(context.trace_id, None) is not None:
                    self._dropped_logs.pop(context.trace_id, None)

    def _keep(self, record: TraceRecord, bucket: int) -> None:
        """File a complete trace (under the lock): recent, its latency bucket, failed."""
        known = self._kept.get(record.trace_id)
        if known is not None:  # a second local root of a trace already kept: one trace, more spans
            known.merge(record.spans, record.logs, record.dropped_spans, record.dropped_logs)
            return
        self._kept[record.trace_id] = record
        self._file(self._recent, record)
        self._file(self._buckets[bucket], record)
        if record.failed:
            self._file(self._failed, record)

    def _file(self, group: deque[TraceRecord], record: TraceRecord) -> None:
        if len(group) == group.maxlen:
            leaving = group[0]
            leaving.homes -= 1
            if leaving.homes == 0:
                del self._kept[leaving.trace_id]
        group.append(record)
        record.homes += 1

    # -- reading -----------------------------------------------------------------------------------

    def traces(self) -> list[TraceRecord]:
        """Every kept trace once, the latest first."""
        self.drain()
        with self._lock:
            records = list(self._kept.values())
        records.sort(key=lambda r: r.start_ns, reverse=True)
        return records

    def get(self, trace_id: int) -> TraceRecord | None:
        self.drain()
        with self._lock:
            return self._kept.get(trace_id)

    def bucket_counts(self) -> list[int]:
        """How many traces each latency bucket holds now (for the page's summary)."""
        self.drain()
        with self._lock:
            return [len(bucket) for bucket in self._buckets]

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._pending.clear()
            self._logs.clear()
            self._dropped_logs.clear()
            self._kept.clear()
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
        trace_id = context.trace_id
        with self._lock:
            kept = self._kept.get(trace_id)
            if kept is not None:  # written after its trace was filed
                kept.merge([], [entry], 0, 0)
                return
            logs = self._logs
            entries = logs.get(trace_id)
            if entries is None:
                if len(logs) >= MAX_PENDING:  # traces that were never kept: forget the oldest
                    forgotten = next(iter(logs))
                    del logs[forgotten]
                    self._dropped_logs.pop(forgotten, None)
                entries = logs[trace_id] = []
            if len(entries) < MAX_LOGS:
                entries.append(entry)
            else:
                self._dropped_logs[trace_id] = self._dropped_logs.get(trace_id, 0) + 1

    # -- SpanProcessor -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.uninstall_log_capture()
        self.drain()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


#: Every live buffer, for the fork hook.
_BUFFERS: weakref.WeakSet[TraceBuffer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child records its own traces (the parent's are the parent's), under locks of its own: another
    thread may have held one at the fork."""
    for buffer in list(_BUFFERS):
        buffer._lock = threading.Lock()
        buffer.clear()


forking.on_fork(after_in_child=_after_fork_in_child)


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
