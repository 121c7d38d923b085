"""The hot-path recorder: pre-aggregated coordinator state, and its OpenTelemetry data points.

OpenTelemetry's synchronous instruments cost ~19 us a call here (attribute hashing, several locks,
exemplar sampling). A coordinator call instead updates a :class:`MethodSeries` bound once per call
site, under one lock, with a handful of integer additions. At collection time :meth:`Registry.produce`
turns that state into standard SDK ``Metric`` objects (``Sum``, ``Histogram``, ``Gauge``) that the
readers in :mod:`victor_otel.bootstrap` merge into what the MeterProvider collected, so that the
Prometheus and OTLP exporters render them as usual (the role the OTel spec gives a MetricProducer).

Cardinality is bounded here: at most ``limit`` coordinators, ``limit`` (coordinator, method) series,
``limit`` error label sets and ``limit`` analytics events; the excess folds into one overflow series
marked ``otel.metric.overflow=true``, and a warning is logged once per family.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from victor_otel import forking
from victor_otel import instruments as contract
from victor_otel.instruments import (
    LATENCY_BUCKETS,
    OVERFLOW_ATTRIBUTE,
    OVERFLOW_VALUE,
    MetricSpec,
    histogram_point,
    metrics,
    number_point,
)
from victor_otel.window import Window, WindowStats

if TYPE_CHECKING:  # the SDK's data classes are needed at collection time only: importing them is slow
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, Metric, NumberDataPoint

_logger = logging.getLogger("victor_otel")
_N_BUCKETS = len(LATENCY_BUCKETS) + 1


class CoordinatorState:
    """One coordinator: its lock (shared by all its series), window and cache counters."""

    __slots__ = ("attributes", "cache_hits", "cache_misses", "lock", "name", "start_ns", "window")

    def __init__(self, name: str, window_seconds: float, overflow: bool = False) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.window = Window(window_seconds)
        self.cache_hits = 0
        self.cache_misses = 0
        self.start_ns = time.time_ns()
        self.attributes: dict[str, Any] = {"coordinator": name}
        if overflow:
            self.attributes[OVERFLOW_ATTRIBUTE] = True

    def record_cache(self, hit: bool) -> None:
        now = time.monotonic()
        with self.lock:
            if hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1
            self.window.add_cache(now, hit)

    def stats(self) -> WindowStats:
        now = time.monotonic()
        with self.lock:
            return self.window.snapshot(now)


class MethodSeries:
    """Counters and the latency histogram of one (coordinator, method) pair."""

    __slots__ = (
        "attributes", "buckets", "cancelled", "coordinator", "count", "errors", "exemplars", "lock", "method",
        "registry", "start_ns", "sum", "window",
    )

    def __init__(
        self, registry: Registry, coordinator: CoordinatorState, method: str, overflow: bool = False
    ) -> None:
        self.registry = registry
        self.coordinator = coordinator
        self.method = method
        self.lock = coordinator.lock
        self.window = coordinator.window
        self.count = 0
        self.cancelled = 0
        self.sum = 0.0
        self.buckets = [0] * _N_BUCKETS
        #: Per bucket, the latest traced call that fell in it, as four items of one flat list (bucket i at
        #: 4 * i): seconds, trace_id (0: none yet), span_id, and the monotonic time of the call. Written under
        #: the series' lock with the counts, so that no tuple is made per call and a scrape never sees half
        #: of one; the call's wall time is worked out at collection from the monotonic clock the call
        #: already read for its window (one clock read less per traced call).
        self.exemplars: list[float] = [0.0] * (4 * _N_BUCKETS)
        self.errors: dict[str, int] = {}
        self.start_ns = time.time_ns()
        self.attributes: dict[str, Any] = {"coordinator": coordinator.name, "method": method}
        if overflow:
            self.attributes[OVERFLOW_ATTRIBUTE] = True

    def offer_exemplar(self, duration: float, trace_id: int, span_id: int) -> None:
        """Keep this traced call as its bucket's exemplar (the latest wins), linking latency to a trace."""
        i = 4 * bisect_left(LATENCY_BUCKETS, duration)
        now = monotonic()
        with self.lock:
            self.exemplars[i:i + 4] = duration, trace_id, span_id, now

    def record_success(
        self, duration: float, window: CoordinatorState | None = None, trace_id: int = 0, span_id: int = 0
    ) -> None:
        """:meth:`record` for a call that succeeded, with its exemplar when ``trace_id`` is given (a sampled
        span): the hot path of every decorated call, one bucket search and one clock read for both."""
        bucket = bisect_left(LATENCY_BUCKETS, duration)
        now = monotonic()
        with self.lock:
            self.count += 1
            self.sum += duration
            self.buckets[bucket] += 1
            if trace_id:
                exemplars, i = self.exemplars, 4 * bucket
                exemplars[i] = duration
                exemplars[i + 1] = trace_id
                exemplars[i + 2] = span_id
                exemplars[i + 3] = now
            if window is None:
                self.window.add_bucket(now, bucket, False)
        if window is not None:
            with window.lock:
                window.window.add_bucket(now, bucket, False)

    def exemplar_items(self) -> list[tuple[float, int, int, float]]:
        """The exemplars kept, as (seconds, trace_id, span_id, monotonic time) in bucket order."""
        with self.lock:
            flat = list(self.exemplars)
        return [
            (flat[i], int(flat[i + 1]), int(flat[i + 2]), flat[i + 3]) for i in range(0, len(flat), 4) if flat[i + 1]
        ]

    def record(
        self,
        duration: float,
        error_type: str | None = None,
        cancelled: bool = False,
        window: CoordinatorState | None = None,
    ) -> None:
        """Count one execution. ``window``: the caller's own coordinator when this is the overflow series."""
        # The bucket and the clock are read outside the lock; inside it, only additions.
        bucket = bisect_left(LATENCY_BUCKETS, duration)
        now = monotonic()
        failed = error_type is not None
        with self.lock:
            self.count += 1
            self.sum += duration
            self.buckets[bucket] += 1
            if cancelled:
                self.cancelled += 1
            elif error_type is not None:
                errors = self.errors
                if error_type in errors:
                    errors[error_type] += 1
                else:
                    key = self.registry.admit_error_type(error_type)
                    errors[key] = errors.get(key, 0) + 1
            if window is None:
                self.window.add_bucket(now, bucket, failed)
        if window is not None:
            with window.lock:
                window.window.add_bucket(now, bucket, failed)


class Registry:
    """Process-wide pre-aggregated state. Use :func:`get_registry`; tests may :meth:`reset` it."""

    def __init__(self, limit: int = 1000, window_seconds: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._on_reset: list[Callable[[], None]] = []
        self.configure(limit, window_seconds)

    def on_reset(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every reset (another module's state that is reset with the registry)."""
        self._on_reset.append(callback)

    def configure(self, limit: int, window_seconds: float) -> None:
        """Set the cardinality cap and window length, dropping everything recorded so far."""
        with self._lock:
            self.limit = limit
            self.window_seconds = window_seconds
            self.coordinators: dict[str, CoordinatorState] = {}
            self.series: dict[tuple[str, str], MethodSeries] = {}
            self.events: dict[str, list[int]] = {}
            self._events_lock = threading.Lock()  # the counts' additions (collection reads under _lock)
            self.events_start_ns = time.time_ns()
            self._error_label_sets = 0
            self._warned: set[str | MetricSpec] = set()
            self._overflow_used = False
            self._overflow_coordinator = CoordinatorState(OVERFLOW_VALUE, window_seconds, overflow=True)
            self._overflow_series = MethodSeries(self, self._overflow_coordinator, OVERFLOW_VALUE, True)
            #: Bumped on every reset; call sites re-bind their cached series when it changes.
            self.generation = getattr(self, "generation", 0) + 1
        for callback in self._on_reset:
            callback()

    def reset(self) -> None:
        self.configure(self.limit, self.window_seconds)

    def after_fork_in_child(self) -> None:
        """A forked child counts its own calls (the parent's are the parent's), under locks of its own:
        another thread may have held one at the fork."""
        self._lock = threading.Lock()
        self.reset()

    def warn_overflow(self, family: MetricSpec) -> None:
        """Say once that ``family`` (another module's) reached the cardinality limit."""
        with self._lock:
            self._warn_once(family)

    def _warn_once(self, family: str | MetricSpec) -> None:
        # Past the cap this runs on every call: the family's name is only computed for the warning.
        if family not in self._warned:
            self._warned.add(family)
            if isinstance(family, MetricSpec):
                family = family.prometheus_name
            _logger.warning(
                "victor_otel: more than %d label sets for %s; the excess is folded into one series "
                "labelled %s=true. Unbounded values (request or user IDs) must not be labels; raise "
                "VICTOR_OTEL_CARDINALITY_LIMIT only if the values are bounded.",
                self.limit, family, OVERFLOW_ATTRIBUTE,
            )

    def _past_cap(self, family: str | MetricSpec) -> None:
        """A call past ``family``'s cap: warn once. The registry lock is taken only until the warning is out."""
        if family not in self._warned:
            with self._lock:
                self._warn_once(family)

    def coordinator(self, name: str) -> CoordinatorState:
        state = self.coordinators.get(name)
        if state is not None:
            return state
        if len(self.coordinators) >= self.limit:
            # Full, and full until a reset replaces the dict: a call with a new name past the cap takes no
            # registry-wide lock (unbounded names would otherwise serialise every thread's calls on it).
            self._past_cap("coordinator")
            self._overflow_used = True
            return self._overflow_coordinator
        with self._lock:
            state = self.coordinators.get(name)
            if state is None:
                if len(self.coordinators) >= self.limit:
                    self._warn_once("coordinator")
                    self._overflow_used = True
                    return self._overflow_coordinator
                state = self.coordinators[name] = CoordinatorState(name, self.window_seconds)
            return state

    def method_series(self, coordinator: str, method: str) -> tuple[MethodSeries, CoordinatorState | None]:
        """The series for one call site, and the window to feed separately when it is the overflow series."""
        key = (coordinator, method)
        series = self.series.get(key)
        if series is not None:
            return series, None
        state = self.coordinator(coordinator)
        overflow = self._overflow_coordinator
        if state is overflow or len(self.series) >= self.limit:  # past a cap: no lock, as in coordinator()
            self._past_cap(contract.EXECUTIONS)
            return self._overflow_series, (None if state is overflow else state)
        with self._lock:
            series = self.series.get(key)
            if series is not None:
                return series, None
            if len(self.series) >= self.limit:
                self._warn_once(contract.EXECUTIONS)
                return self._overflow_series, state
            series = self.series[key] = MethodSeries(self, state, method)
            return series, None

    def admit_error_type(self, error_type: str) -> str:
        """Count a new error label set, or fold it into ``_overflow`` past the cap."""
        if self._error_label_sets >= self.limit:  # full until a reset: no lock past the cap
            self._past_cap(contract.ERRORS_BY_TYPE)
            return OVERFLOW_VALUE
        with self._lock:
            if self._error_label_sets >= self.limit:
                self._warn_once(contract.ERRORS_BY_TYPE)
                return OVERFLOW_VALUE
            self._error_label_sets += 1
            return error_type

    def record_event(self, name: str, count: int) -> None:
        """Count ``count`` events named ``name``: under the events' own lock, never the registry's once the
        name has its cell (or, past the cap, once the overflow cell exists)."""
        cell = self.events.get(name)
        if cell is None:
            cell = self._event_cell(name)
        with self._events_lock:
            cell[0] += count

    def _event_cell(self, name: str) -> list[int]:
        if len(self.events) >= self.limit:  # full until a reset: no registry lock past the cap
            self._past_cap(contract.ANALYTICS_EVENTS)
            overflow = self.events.get(OVERFLOW_VALUE)
            if overflow is not None:
                return overflow
        with self._lock:
            cell = self.events.get(name)
            if cell is None:
                if len(self.events) >= self.limit:
                    self._warn_once(contract.ANALYTICS_EVENTS)
                    cell = self.events.setdefault(OVERFLOW_VALUE, [0])
                else:
                    cell = self.events[name] = [0]
            return cell

    def all_coordinators(self) -> list[CoordinatorState]:
        states = list(self.coordinators.values())
        if self._overflow_used:
            states.append(self._overflow_coordinator)
        return states

    def _all_series(self) -> list[MethodSeries]:
        series = list(self.series.values())
        if self._overflow_series.count:
            series.append(self._overflow_series)
        return series

    # -- collection --------------------------------------------------------------------------------

    def produce(self) -> list[Metric]:
        """Every family of the contract that has data, as OpenTelemetry SDK ``Metric`` objects."""
        from opentelemetry.sdk.metrics import Exemplar

        now_ns = time.time_ns()
        now = time.monotonic()
        executions: list[NumberDataPoint] = []
        cancelled: list[NumberDataPoint] = []
        durations: list[NumberDataPoint] = []
        errors: list[NumberDataPoint] = []
        errors_by_type: list[NumberDataPoint] = []
        latency: list[HistogramDataPoint] = []
        for s in self._all_series():
            with s.lock:
                count, total, buckets = s.count, s.sum, list(s.buckets)
                n_cancelled, error_counts = s.cancelled, list(s.errors.items())
            attrs, start = s.attributes, s.start_ns
            exemplars = [  # the call's wall time: now, less the monotonic time elapsed since the call
                Exemplar(None, value, now_ns - int((now - at) * 1e9), span_id=span_id, trace_id=trace_id)
                for value, trace_id, span_id, at in s.exemplar_items()
            ]
            executions.append(number_point(attrs, start, now_ns, count))
            durations.append(number_point(attrs, start, now_ns, total))
            if n_cancelled:
                cancelled.append(number_point(attrs, start, now_ns, n_cancelled))
            # errors_total on every series, 0 included, with the executions' labels: a ratio is one division.
            errors.append(number_point(attrs, start, now_ns, sum(n for _, n in error_counts)))
            for error_type, n in error_counts:
                errors_by_type.append(number_point({**attrs, "error_type": error_type}, start, now_ns, n))
            latency.append(histogram_point(contract.LATENCY, attrs, start, now_ns, buckets, count, total, exemplars))
        hits: list[NumberDataPoint] = []
        misses: list[NumberDataPoint] = []
        hit_rate: list[NumberDataPoint] = []
        throughput: list[NumberDataPoint] = []
        error_rate: list[NumberDataPoint] = []
        for c in self.all_coordinators():
            with c.lock:
                n_hits, n_misses = c.cache_hits, c.cache_misses
                stats = c.window.snapshot(now)
            attrs = c.attributes
            if n_hits or n_misses:
                hits.append(number_point(attrs, c.start_ns, now_ns, n_hits))
                misses.append(number_point(attrs, c.start_ns, now_ns, n_misses))
            # A ratio over an empty window has no sample (not 0): see window.ratio().
            if (cache_hit_rate := stats.cache_hit_rate) is not None:
                hit_rate.append(number_point(attrs, 0, now_ns, cache_hit_rate))
            throughput.append(number_point(attrs, 0, now_ns, stats.throughput))
            if (window_error_rate := stats.error_rate) is not None:
                error_rate.append(number_point(attrs, 0, now_ns, window_error_rate))
        with self._lock:
            event_counts = [(name, cell[0]) for name, cell in self.events.items()]
        events = [
            number_point(
                {"event": name, **({OVERFLOW_ATTRIBUTE: True} if name == OVERFLOW_VALUE else {})},
                self.events_start_ns, now_ns, n,
            )
            for name, n in event_counts
        ]
        return metrics((
            (contract.EXECUTIONS, executions), (contract.ERRORS, errors),
            (contract.ERRORS_BY_TYPE, errors_by_type), (contract.CANCELLED, cancelled),
            (contract.DURATION, durations), (contract.LATENCY, latency),
            (contract.CACHE_HITS, hits), (contract.CACHE_MISSES, misses),
            (contract.CACHE_HIT_RATE, hit_rate), (contract.THROUGHPUT, throughput),
            (contract.ERROR_RATE, error_rate), (contract.ANALYTICS_EVENTS, events),
        ))


_REGISTRY = Registry()
forking.on_fork(after_in_child=_REGISTRY.after_fork_in_child)


def get_registry() -> Registry:
    """The process-wide registry every decorator and recorder writes to."""
    return _REGISTRY
