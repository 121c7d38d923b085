"""Counting what leaves the process: exported, failed and dropped spans, log records and metric points.

Every exporter ``init()`` builds is wrapped in a counting exporter, and every batch processor's drop
accounting is wrapped too, so that one counter tells what happened to each item handed to the SDK::

    victor_otel_exported_total{signal="traces|logs|metrics", outcome="success|failure|dropped"}

``success``: the exporter accepted the batch. ``failure``: the exporter gave up on the batch (endpoint
down, timeout, 4xx/5xx after its retries) and its items are lost. ``dropped``: the batch processor's
queue was full (or the item ended after shutdown), so the item never reached an exporter. The same
numbers, with the queue's length and capacity and the last failure, come from
``victor_otel.current().export_stats()`` (``/health/detailed`` shows them).

A wrapper never lets an exporter's exception reach the SDK's thread (it counts it as a failure), and
after ``os.fork()`` it rebuilds network exporters in the child so that no HTTP connection is shared
with the parent.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

from victor_otel import _sdk
from victor_otel import instruments as contract
from victor_otel.offload import bounded_attributes, bounded_list
from victor_otel.redaction import REDACTED, Redactor, get_redactor, names_a_secret

_logger = logging.getLogger("victor_otel")

SIGNALS = ("traces", "logs", "metrics")
OUTCOME_SUCCESS = "success"
OUTCOME_FAILURE = "failure"
OUTCOME_DROPPED = "dropped"
OUTCOMES = (OUTCOME_SUCCESS, OUTCOME_FAILURE, OUTCOME_DROPPED)
#: A failing exporter is reported in the log at most this often (the SDK logs each failure itself).
_WARN_EVERY = 60.0


class SignalStats:
    """Counts for one signal. Updated from the SDK's export threads and the application's threads."""

    def __init__(self, signal: str) -> None:
        self.signal = signal
        #: Set by :func:`count_drops`: the processor's queue length and capacity.
        self.queue_length: Callable[[], int] | None = None
        self.queue_capacity: int | None = None
        #: Set by :func:`count_drops`: empties the processor's queue, returning how many items it held.
        self.drain_queue: Callable[[], int] | None = None
        self._zero()

    def _zero(self) -> None:
        self.start_ns = time.time_ns()
        self._lock = threading.Lock()
        self.success = 0
        self.failure = 0
        self.dropped = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self._last_warning = 0.0

    def exported(self, items: int) -> None:
        with self._lock:
            self.success += items
            self.consecutive_failures = 0
            self.last_success = time.time()

    def failed(self, items: int, error: str) -> None:
        now = time.time()
        with self._lock:
            self.failure += items
            self.consecutive_failures += 1
            self.last_error = error
            self.last_failure = now
            warn = now - self._last_warning >= _WARN_EVERY
            if warn:
                self._last_warning = now
        if warn:
            _logger.warning(
                "victor_otel: exporting %s failed (%s); %d item(s) lost. The application is not affected; "
                "victor_otel_exported_total{outcome=\"failure\"} counts the losses.",
                self.signal, error, items,
            )

    def drop(self, items: int) -> None:
        with self._lock:
            self.dropped += items

    def snapshot(self) -> dict[str, Any]:
        queue_length = self.queue_length
        try:
            queued = queue_length() if queue_length is not None else None
        except Exception:  # a changed SDK internal must not break a health check
            queued = None
        with self._lock:
            return {
                OUTCOME_SUCCESS: self.success,
                OUTCOME_FAILURE: self.failure,
                OUTCOME_DROPPED: self.dropped,
                "queued": queued,
                "queue_capacity": self.queue_capacity,
                "consecutive_failures": self.consecutive_failures,
                "last_error": self.last_error,
                "last_success": self.last_success,
                "last_failure": self.last_failure,
            }


class ExportStats:
    """The per-signal counts of one :class:`~victor_otel.bootstrap.Telemetry`.

    >>> stats = ExportStats()
    >>> stats.signal("traces").exported(3)
    >>> stats.snapshot()["traces"]["success"]
    3
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signals: dict[str, SignalStats] = {}

    def signal(self, name: str) -> SignalStats:
        """The counts of ``name`` (one of :data:`SIGNALS`), created on first use."""
        if name not in SIGNALS:
            raise ValueError(f"signal: {name!r} is not one of {', '.join(SIGNALS)}")
        with self._lock:
            stats = self._signals.get(name)
            if stats is None:
                stats = self._signals[name] = SignalStats(name)
            return stats

    def signals(self) -> list[SignalStats]:
        """The counts of every signal with an exporter."""
        with self._lock:
            return list(self._signals.values())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{signal: {success, failure, dropped, queued, queue_capacity, consecutive_failures,
        last_error, last_success, last_failure}}`` for every signal with an exporter."""
        with self._lock:
            signals = list(self._signals.values())
        return {s.signal: s.snapshot() for s in signals}

    def reset_after_fork(self) -> None:
        """In a forked child: start from zero (the parent reports its own counts) with fresh locks."""
        self._lock = threading.Lock()
        for stats in self._signals.values():
            stats._zero()

    def produce(self) -> list[Metric]:
        """``victor.otel.exported`` as an SDK ``Metric`` (a producer for the readers)."""
        now_ns = time.time_ns()
        points = []
        for signal, counts in self.snapshot().items():
            start = self._signals[signal].start_ns
            for outcome in OUTCOMES:
                points.append(
                    NumberDataPoint({"signal": signal, "outcome": outcome}, start, now_ns, counts[outcome])
                )
        if not points:
            return []
        spec = contract.EXPORTED
        data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True)
        return [Metric(name=spec.otel_name, description=spec.description, unit=spec.unit, data=data)]


def _error_name(error: BaseException) -> str:
    # The class name only: messages can carry URLs with credentials or payload fragments.
    return type(error).__name__


#: ``last_error`` of the batches a shutdown gave up on.
ABANDONED = "abandoned at shutdown"


class _Counting:
    """Holds the wrapped exporter, counts each export's outcome exactly once, and for network exporters
    knows how to build a fresh one after fork."""

    def __init__(self, inner: Any, stats: SignalStats, rebuild: Callable[[], Any] | None) -> None:
        self.inner = inner
        self.stats = stats
        self._rebuild = rebuild
        self._reset_counting()

    def _reset_counting(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[int, int] = {}  # export number -> items, until its outcome is counted
        self._exports = 0
        self._abandoned = False

    def _counted(self, items: int, export: Callable[[], bool]) -> bool:
        """Run one export of ``items`` items; count its outcome once (never raises)."""
        if self._abandoned:
            self.stats.failed(items, ABANDONED)
            return False
        with self._lock:
            self._exports += 1
            number = self._exports
            self._in_flight[number] = items
        error = "export failed"
        try:
            ok = export()
        except Exception as exc:
            ok, error = False, _error_name(exc)
        with self._lock:
            unsettled = self._in_flight.pop(number, None) is not None
        if unsettled:  # else abandon() counted it already
            if ok:
                self.stats.exported(items)
            else:
                self.stats.failed(items, error)
        return ok

    def abandon(self) -> None:
        """Shutdown gave up on this exporter: the batches in flight count as failed now (the process is
        exiting and would never count them), every later export fails at once, and the exporter's
        retries stop."""
        self._abandoned = True
        with self._lock:
            pending = list(self._in_flight.values())
            self._in_flight.clear()
        for items in pending:
            self.stats.failed(items, ABANDONED)
        try:
            abort = getattr(self.inner, "abort", None)  # an exporter that can stop at once (offload.ExportProcess)
            abort() if abort is not None else self.inner.shutdown()
        except Exception:
            _logger.debug("victor_otel: aborting an exporter failed", exc_info=True)

    def reinit_after_fork(self) -> None:
        """Replace a network exporter inherited from the parent (its connections are the parent's)."""
        self._reset_counting()
        if self._rebuild is not None:
            self.inner = self._rebuild()


def _redacted_value(value: Any, redactor: Redactor) -> Any:
    if type(value) is str:
        return redactor.text(value)
    if isinstance(value, (tuple, list)) and any(type(v) is str for v in value):
        return tuple(redactor.text(v) if type(v) is str else v for v in value)
    return value


def _redacted_attributes(attributes: Any, dropped: int, redactor: Redactor) -> Any:
    """``attributes`` with every string redacted (and every value of a key naming a secret), or the
    same object when nothing had to change. ``dropped``: the SDK's count of attributes over its limit."""
    if not attributes:
        return attributes
    changed: dict[str, Any] | None = None
    for key, value in attributes.items():
        new = REDACTED if names_a_secret(key) else _redacted_value(value, redactor)
        if new != value:
            if changed is None:
                changed = dict(attributes)
            changed[key] = new
    if changed is None:
        return attributes
    return bounded_attributes(changed, dropped)


def redacted_span(span: ReadableSpan, redactor: Redactor | None = None) -> ReadableSpan:
    """``span`` with its name, attributes, events, links and status redacted: a copy, or ``span``
    itself when it holds no secret (the common case costs a few substring tests per string).

    Every span victor_otel exports goes through this, whoever recorded it: the server spans of the
    FastAPI / ASGI instrumentation record an escaping exception's raw message and stack trace and the
    raw query string (``http.url``, ``http.target``), which the decorators' own redaction never sees.
    Dropped counts (attributes, events, links over the SDK's limits) are kept.
    """
    redactor = redactor or get_redactor()
    changed = False
    attributes = span.attributes
    clean_attributes = _redacted_attributes(attributes, span.dropped_attributes, redactor)
    changed |= clean_attributes is not attributes
    events = []
    for event in span.events:
        clean = _redacted_attributes(event.attributes, getattr(event.attributes, "dropped", 0), redactor)
        if clean is not event.attributes:
            changed = True
            event = Event(event.name, clean, event.timestamp)
        events.append(event)
    links = []
    for link in span.links:
        clean = _redacted_attributes(link.attributes, getattr(link.attributes, "dropped", 0), redactor)
        if clean is not link.attributes:
            changed = True
            link = Link(link.context, clean)
        links.append(link)
    status = span.status
    if status.description:
        description = redactor.text(status.description)
        if description != status.description:
            changed = True
            status = Status(status.status_code, description)
    name = redactor.text(span.name)
    if not changed and name == span.name:
        return span
    return ReadableSpan(
        name=name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=clean_attributes if clean_attributes is not attributes
        else bounded_attributes(dict(span.attributes or {}), span.dropped_attributes),
        events=bounded_list(events, span.dropped_events), links=bounded_list(links, span.dropped_links),
        kind=span.kind, status=status, start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class CountingSpanExporter(_Counting, SpanExporter):
    """A span exporter that counts each batch's outcome and never raises; spans leave redacted
    (:func:`redacted_span`)."""

    def __init__(self, inner: SpanExporter, stats: SignalStats, rebuild: Callable[[], SpanExporter] | None = None):
        _Counting.__init__(self, inner, stats, rebuild)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        def export() -> bool:
            redactor = get_redactor()
            return self.inner.export([redacted_span(span, redactor) for span in spans]) is SpanExportResult.SUCCESS

        return SpanExportResult.SUCCESS if self._counted(len(spans), export) else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception:
            _logger.debug("victor_otel: span exporter shutdown failed", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self.inner.force_flush(timeout_millis))
        except Exception:
            return False


class CountingLogExporter(_Counting, LogRecordExporter):
    """A log record exporter that counts each batch's outcome and never raises."""

    def __init__(
        self, inner: LogRecordExporter, stats: SignalStats, rebuild: Callable[[], LogRecordExporter] | None = None
    ):
        _Counting.__init__(self, inner, stats, rebuild)

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        def export() -> bool:
            # Older exporters return the deprecated LogExportResult: compare by name.
            return getattr(self.inner.export(batch), "name", None) == "SUCCESS"

        ok = self._counted(len(batch), export)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception:
            _logger.debug("victor_otel: log exporter shutdown failed", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self.inner.force_flush(timeout_millis))
        except Exception:
            return False


def count_points(data: MetricsData) -> int:
    """The number of data points in ``data`` (what a metric export carries)."""
    return sum(
        len(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )


class CountingMetricExporter(_Counting, MetricExporter):
    """A metric exporter that counts the data points of each export and never raises."""

    def __init__(
        self, inner: MetricExporter, stats: SignalStats, rebuild: Callable[[], MetricExporter] | None = None
    ):
        _Counting.__init__(self, inner, stats, rebuild)
        temporality, aggregation = _sdk.exporter_preferences(inner)
        MetricExporter.__init__(self, preferred_temporality=temporality, preferred_aggregation=aggregation)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        def export() -> bool:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            return result is MetricExportResult.SUCCESS

        ok = self._counted(count_points(metrics_data), export)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        try:
            return bool(self.inner.force_flush(timeout_millis=timeout_millis))
        except Exception:
            return False

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        try:
            self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)
        except Exception:
            _logger.debug("victor_otel: metric exporter shutdown failed", exc_info=True)


class _DropCounter:
    """Stands in for a batch processor's internal metrics object and counts its drops.

    The SDK's ``BatchProcessor`` calls ``drop_items`` when an item is lost before export: emitted after
    shutdown, or the queue was full. The latter is only approximately true (the export thread may
    take a batch between its check and its append), so when the queue itself counts (a
    :class:`_CountingQueue`), only the former are counted here.
    """

    def __init__(self, inner: Any, stats: SignalStats, queue_counts: bool) -> None:
        self._inner = inner
        self._stats = stats
        self._queue_counts = queue_counts

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        self._inner.register_queue_size(get_queue_size)

    # The SDK's signatures changed between releases (1.43: drop_items(count), finish_items(count, error);
    # 1.45: drop_items(count, error_type="queue_full"), finish_items(count)): whatever comes is passed on.
    def drop_items(self, count: int, *args: Any, **kwargs: Any) -> None:
        error_type = args[0] if args else kwargs.get("error_type", "queue_full")
        if error_type != "queue_full" or not self._queue_counts:
            self._stats.drop(count)
        self._inner.drop_items(count, *args, **kwargs)

    def finish_items(self, count: int, *args: Any, **kwargs: Any) -> None:
        self._inner.finish_items(count, *args, **kwargs)


class _CountingQueue(collections.deque):  # type: ignore[type-arg]
    """The batch processor's bounded queue, counting exactly the items it pushes out when full.

    ``appendleft`` on a full ``deque(maxlen=n)`` discards the oldest item; one lock around it and the
    export thread's ``pop`` makes "was it full?" exact. It costs one uncontended lock per span.
    """

    def __init__(self, items: Iterable[Any], maxlen: int, stats: SignalStats) -> None:
        super().__init__(items, maxlen)
        self._stats = stats
        self._lock = threading.Lock()
        _QUEUES[:] = [ref for ref in _QUEUES if ref() is not None] + [weakref.ref(self)]

    def appendleft(self, item: Any) -> None:
        with self._lock:
            full = len(self) == self.maxlen
            super().appendleft(item)
        if full:
            self._stats.drop(1)

    def pop(self, *args: Any) -> Any:
        with self._lock:
            return super().pop(*args)

    def drain(self) -> int:
        """Empty the queue; the number of items it held."""
        with self._lock:
            items = len(self)
            self.clear()
        return items


_QUEUES: list[weakref.ref[_CountingQueue]] = []


def reinit_after_fork() -> None:
    """In a forked child: new locks for the queues (another thread may have held one at the fork)."""
    for ref in list(_QUEUES):
        queue = ref()
        if queue is not None:
            queue._lock = threading.Lock()


def count_drops(processor: Any, stats: SignalStats) -> bool:
    """Count the drops of a ``BatchSpanProcessor`` / ``BatchLogRecordProcessor`` into ``stats``.

    Returns ``False`` (and logs once) when the installed SDK is shaped differently: the exported and
    failed counts still work, drops are then not counted.
    """
    found = _sdk.batch_queue(processor)
    if found is None:
        _logger.warning(
            "victor_otel: this opentelemetry-sdk's batch processor is unknown to victor_otel; dropped %s are "
            "not counted (exported and failed ones are)", stats.signal,
        )
        return False
    batch, queue, inner, capacity = found
    queue_counts = False
    if type(queue) is collections.deque and queue.maxlen is not None and not queue:
        queue = _CountingQueue((), queue.maxlen, stats)
        _sdk.replace_batch_queue(batch, queue)
        queue_counts = True
    if not isinstance(inner, _DropCounter):
        _sdk.replace_drop_metrics(batch, _DropCounter(inner, stats, queue_counts))
    stats.queue_length = queue.__len__
    stats.queue_capacity = capacity
    if isinstance(queue, _CountingQueue):
        stats.drain_queue = queue.drain
    return True


def abandon(exporters: Iterable[_Counting], stats: ExportStats) -> None:
    """A shutdown ran out of time: account for everything it leaves behind, so that ``success + failure +
    dropped`` still equals what was handed to the SDK. Queued items (they never reached an exporter) are
    dropped; batches in flight failed; exporters stop retrying."""
    for signal in stats.signals():
        drain = signal.drain_queue
        if drain is not None:
            try:
                signal.drop(drain())
            except Exception:  # a changed SDK internal must not break a shutdown
                _logger.debug("victor_otel: draining an export queue failed", exc_info=True)
    for exporter in exporters:
        exporter.abandon()
