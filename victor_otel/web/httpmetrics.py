"""HTTP server metrics, pre-aggregated: the series the OpenTelemetry ASGI instrumentation records, without
an OpenTelemetry synchronous instrument per request.

The instrumentation records ``http.server.duration`` and adds to ``http.server.active_requests`` through
SDK instruments: about 20 us a request of attribute dictionaries, hashing and locks. Here a finished
request adds to the counters of its :class:`_Series` (found by one tuple lookup) under one lock, as
:mod:`victor_otel.registry` does for the coordinator families, and :meth:`HttpServerMetrics.produce` turns
them into SDK points when a reader collects. Names, units, buckets and attributes are the
instrumentation's (:data:`victor_otel.instruments.HTTP_CONTRACT`), bounded as ``instrument_app`` always
bounded them: method (unknown methods become ``_OTHER``), scheme, protocol version, status code and the
route template, never the raw path or the Host header. ``OTEL_SEMCONV_STABILITY_OPT_IN`` is honoured as
the instrumentation honours it: ``http`` gives ``http.server.request.duration`` (seconds, stable
attribute names) in place of ``http.server.duration``; ``http/dup`` gives both.

>>> m = HttpServerMetrics(Conventions(old=True, new=False))
>>> active = m.begin("GET", "http", "1.1")
>>> m.end(active, 200, "/items/{item_id}", 0.012)
>>> [(metric.name, metric.unit) for metric in m.produce()]
[('http.server.duration', 'ms'), ('http.server.active_requests', '{request}')]
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.util.http import sanitize_method

from victor_otel import instruments as contract
from victor_otel.instruments import (
    HTTP_DURATION_BUCKETS_MS,
    HTTP_DURATION_BUCKETS_S,
    OVERFLOW_ATTRIBUTE,
    Kind,
    histogram_point,
    number_point,
    sdk_metric,
)
from victor_otel.registry import get_registry

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import Metric

    from victor_otel.bootstrap import Telemetry

_logger = logging.getLogger("victor_otel")

#: The variable the OpenTelemetry instrumentations read (comma-separated; ``http`` or ``http/dup``).
STABILITY_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
#: Series per family before the excess folds into one ``otel.metric.overflow`` series: the SDK's default
#: cardinality limit, which bounded these series when SDK instruments recorded them.
CARDINALITY_LIMIT = 2000
#: Methods kept as they are (the instrumentation's list); any other becomes ``_OTHER`` (sanitize_method).
_KNOWN = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")}
_N_MS = len(HTTP_DURATION_BUCKETS_MS) + 1
_N_S = len(HTTP_DURATION_BUCKETS_S) + 1


@dataclass(frozen=True)
class Conventions:
    """Which HTTP semantic conventions to emit: the old ones (default), the stable ones, or both."""

    old: bool
    new: bool


def conventions(environ: Mapping[str, str] | None = None) -> Conventions:
    """The conventions ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for, read as the instrumentation reads it.

    >>> conventions({}), conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental,http"})
    (Conventions(old=True, new=False), Conventions(old=False, new=True))
    >>> conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, http/dup"})
    Conventions(old=True, new=True)
    """
    tokens = {t.strip() for t in (os.environ if environ is None else environ).get(STABILITY_OPT_IN, "").split(",")}
    if "http/dup" in tokens:
        return Conventions(old=True, new=True)
    return Conventions(old="http" not in tokens, new="http" in tokens)


def method_label(method: str) -> str:
    """The request method as a bounded label: a known method, else ``_OTHER``.

    >>> method_label("GET"), method_label("get"), method_label("M42")
    ('GET', 'GET', '_OTHER')
    """
    return _KNOWN.get(method) or sanitize_method(method)


class _Series:
    """One label set of the duration histogram(s): count, sums, buckets and per-bucket exemplars."""

    __slots__ = ("count", "exemplars_ms", "exemplars_s", "ms_buckets", "ms_sum", "new_attributes",
                 "old_attributes", "s_buckets", "s_sum", "start_ns")

    def __init__(self, old_attributes: dict[str, Any], new_attributes: dict[str, Any]) -> None:
        self.old_attributes = old_attributes
        self.new_attributes = new_attributes
        self.start_ns = time.time_ns()
        self.count = 0
        self.ms_sum = 0
        self.s_sum = 0.0
        self.ms_buckets = [0] * _N_MS
        self.s_buckets = [0] * _N_S
        #: Per bucket, the latest traced request that fell in it: (value, trace_id, span_id, time_ns).
        self.exemplars_ms: list[tuple[float, int, int, int] | None] = [None] * _N_MS
        self.exemplars_s: list[tuple[float, int, int, int] | None] = [None] * _N_S


class _Active:
    """One label set of ``http.server.active_requests``."""

    __slots__ = ("attributes", "key", "start_ns", "value")

    def __init__(self, attributes: dict[str, Any], key: tuple[str, str, str]) -> None:
        self.attributes = attributes
        self.key = key  # (method, scheme, flavor): the start of the duration series' key
        self.start_ns = time.time_ns()
        self.value = 0


class HttpServerMetrics:
    """The process's HTTP server series. Use :func:`get_http_metrics`; it resets with the registry."""

    def __init__(self, conventions_in_force: Conventions | None = None, limit: int = CARDINALITY_LIMIT) -> None:
        self.limit = limit
        self._fixed = conventions_in_force
        self.reset()

    def reset(self) -> None:
        """Drop every series and read ``OTEL_SEMCONV_STABILITY_OPT_IN`` again (after a fork, in tests)."""
        self.conventions = self._fixed or conventions()
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str, int | None, str | None], _Series] = {}
        self._active: dict[tuple[str, str, str], _Active] = {}
        self._overflow_series: _Series | None = None
        self._overflow_active: _Active | None = None
        self._warned = False

    # -- the request path -----------------------------------------------------------------------

    def begin(self, method: str, scheme: str, flavor: str) -> _Active:
        """One more request in flight; pass what this returns to :meth:`end`."""
        key = (method, scheme, flavor)
        active = self._active.get(key)
        if active is None:
            active = self._new_active(key)
        with self._lock:
            active.value += 1
        return active

    def end(
        self, active: _Active, status: int | None, route: str | None, seconds: float,
        exemplar: tuple[int, int] | None = None,
    ) -> None:
        """The request of ``active`` finished with ``status`` (``None``: no response was sent) on ``route``
        (the route template, ``None`` when no route matched) after ``seconds``; ``exemplar``: the
        (trace_id, span_id) of its sampled server span."""
        method, scheme, flavor = active.key
        key = (method, scheme, flavor, status, route)
        series = self._series.get(key)
        if series is None:
            series = self._new_series(key)
        seconds = max(seconds, 0.0)
        conv = self.conventions
        if conv.old:
            ms = round(seconds * 1000)  # whole milliseconds, as the instrumentation records them
            ms_bucket = bisect_left(HTTP_DURATION_BUCKETS_MS, ms)
        if conv.new:
            s_bucket = bisect_left(HTTP_DURATION_BUCKETS_S, seconds)
        with self._lock:
            active.value -= 1
            series.count += 1
            if conv.old:
                series.ms_sum += ms
                series.ms_buckets[ms_bucket] += 1
            if conv.new:
                series.s_sum += seconds
                series.s_buckets[s_bucket] += 1
        if exemplar is not None:  # one list item assignment, atomic under the GIL
            now_ns = time.time_ns()
            if conv.old:
                series.exemplars_ms[ms_bucket] = (ms, exemplar[0], exemplar[1], now_ns)
            if conv.new:
                series.exemplars_s[s_bucket] = (seconds, exemplar[0], exemplar[1], now_ns)

    def _new_active(self, key: tuple[str, str, str]) -> _Active:
        method, scheme, flavor = key
        attributes: dict[str, Any] = {}
        if self.conventions.old:
            attributes.update(_present({"http.method": method, "http.scheme": scheme, "http.flavor": flavor}))
        if self.conventions.new:
            attributes.update(_present({"http.request.method": method, "url.scheme": scheme}))
        with self._lock:
            active = self._active.get(key)
            if active is None:
                if len(self._active) >= self.limit:
                    self._warn()
                    if self._overflow_active is None:
                        self._overflow_active = _Active({OVERFLOW_ATTRIBUTE: True}, key)
                    return self._overflow_active
                active = self._active[key] = _Active(attributes, key)
            return active

    def _new_series(self, key: tuple[str, str, str, int | None, str | None]) -> _Series:
        method, scheme, flavor, status, route = key
        old = _present({"http.method": method, "http.scheme": scheme, "http.flavor": flavor,
                        "http.status_code": status, "http.target": route})
        new = _present({"http.request.method": method, "url.scheme": scheme, "network.protocol.version": flavor,
                        "http.response.status_code": status, "http.route": route})
        if status is not None and (status < 100 or status >= 500):
            new["error.type"] = str(status)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= self.limit:
                    self._warn()
                    if self._overflow_series is None:
                        self._overflow_series = _Series({OVERFLOW_ATTRIBUTE: True}, {OVERFLOW_ATTRIBUTE: True})
                    return self._overflow_series
                series = self._series[key] = _Series(old, new)
            return series

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            _logger.warning(
                "victor_otel: more than %d HTTP server label sets; the excess is folded into one series labelled "
                "%s=true (route templates keep this bounded: is a path mounted without routes?)",
                self.limit, OVERFLOW_ATTRIBUTE,
            )

    # -- collection -------------------------------------------------------------------------------

    def produce(self) -> list[Metric]:
        """The HTTP server families that have data, as OpenTelemetry SDK ``Metric`` objects."""
        from opentelemetry.sdk.metrics import Exemplar

        now_ns = time.time_ns()
        with self._lock:
            series = [*self._series.values(), *filter(None, [self._overflow_series])]
            counts = [(s, s.count, s.ms_sum, list(s.ms_buckets), s.s_sum, list(s.s_buckets)) for s in series]
            active = [(a, a.value) for a in (*self._active.values(), *filter(None, [self._overflow_active]))]

        def exemplars(cells: list[tuple[float, int, int, int] | None]) -> list[Any]:
            return [Exemplar(None, value, at, span_id=span_id, trace_id=trace_id)
                    for value, trace_id, span_id, at in filter(None, list(cells))]

        out: list[Metric] = []
        if self.conventions.old and counts:
            out.append(contract.metric(contract.HTTP_SERVER_DURATION, [
                histogram_point(contract.HTTP_SERVER_DURATION, s.old_attributes, s.start_ns, now_ns, buckets, n,
                                total, exemplars(s.exemplars_ms))
                for s, n, total, buckets, _, _ in counts
            ]))
        if self.conventions.new and counts:
            out.append(contract.metric(contract.HTTP_SERVER_REQUEST_DURATION, [
                histogram_point(contract.HTTP_SERVER_REQUEST_DURATION, s.new_attributes, s.start_ns, now_ns,
                                buckets, n, total, exemplars(s.exemplars_s))
                for s, n, _, _, total, buckets in counts
            ]))
        if active:
            spec = contract.HTTP_SERVER_ACTIVE_REQUESTS
            # An UpDownCounter, as the instrumentation created it: a non-monotonic cumulative sum.
            out.append(sdk_metric(Kind.COUNTER, spec.otel_name, spec.unit, spec.description, [
                number_point(a.attributes, a.start_ns, now_ns, value) for a, value in active
            ], monotonic=False))
        return out


def _present(attributes: dict[str, Any]) -> dict[str, Any]:
    """Without the attributes that have no value (the instrumentation leaves them out)."""
    return {k: v for k, v in attributes.items() if v is not None and v != ""}


_METRICS = HttpServerMetrics()
get_registry().on_reset(_METRICS.reset)  # reset with the registry (tests, and a forked child's own counts)


def get_http_metrics() -> HttpServerMetrics:
    """The process-wide HTTP server series every ``instrument_app`` edge records into."""
    return _METRICS


def attach(telemetry: Telemetry) -> None:
    """Merge the HTTP server series into every collection of ``telemetry`` (once)."""
    if _METRICS.produce not in telemetry.producers:
        telemetry.add_producer(_METRICS.produce)
