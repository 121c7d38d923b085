"""The metric contract: every name, type, unit, label set and bucket, declared once as data.

Code, docs and tests read this module; dashboards, alerts and the runbook are checked against it.
OpenTelemetry names are chosen so that both the Prometheus exporter and Prometheus' OTLP
translation produce the same series names, the ones users' alerts already use
(``victor.coordinator.executions`` with unit ``{call}`` becomes ``victor_coordinator_executions_total``).
Gauges carry no unit that would add a suffix (``1`` would add ``_ratio`` on the OTLP path).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from victor_otel import _sdk

if TYPE_CHECKING:  # the SDK's data classes are needed at collection time only: importing them is slow
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, Metric, NumberDataPoint


class Kind(str, Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


#: Latency buckets in seconds, for LLM coordinator calls (5 ms to 120 s). 5 and 15 are the
#: warn / fail latency thresholds of the health checks and the alerts, so that the histogram
#: answers "how many calls were slower than the threshold" exactly.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0,
)

#: Attribute added to the one series that absorbs label sets beyond the cardinality cap
#: (the OpenTelemetry SDK's own convention, rendered ``otel_metric_overflow="true"``).
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"

#: Label value used for the coordinator / method of the overflow series.
OVERFLOW_VALUE = "_overflow"


@dataclass(frozen=True)
class MetricSpec:
    """One metric family of the contract."""

    otel_name: str
    kind: Kind
    unit: str
    labels: tuple[str, ...]
    description: str
    buckets: tuple[float, ...] | None = None

    @property
    def prometheus_name(self) -> str:
        """The family name as Prometheus shows it (``_total`` included for counters).

        >>> EXECUTIONS.prometheus_name, LATENCY.prometheus_name
        ('victor_coordinator_executions_total', 'victor_coordinator_latency_seconds')
        """
        sanitize_full_name, map_unit = _sdk.prometheus_name_mapping()  # imports the exporter (slow) on first use
        name = sanitize_full_name(self.otel_name)
        unit = map_unit(self.unit)
        if unit and not name.endswith("_" + unit):
            name = f"{name}_{unit}"
        if self.kind is Kind.COUNTER:
            name += "_total"
        return name

    @property
    def sample_names(self) -> tuple[str, ...]:
        """Every sample name the family renders (``_bucket``, ``_sum``, ``_count`` for histograms).

        >>> [name.removeprefix(LATENCY.prometheus_name) for name in LATENCY.sample_names]
        ['_bucket', '_sum', '_count']
        """
        if self.kind is Kind.HISTOGRAM:
            base = self.prometheus_name
            return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
        return (self.prometheus_name,)


EXECUTIONS = MetricSpec(
    "victor.coordinator.executions", Kind.COUNTER, "{call}", ("coordinator", "method"),
    "Coordinator method executions, whatever their outcome.",
)
ERRORS = MetricSpec(
    "victor.coordinator.errors", Kind.COUNTER, "{call}", ("coordinator", "method"),
    "Coordinator method executions that raised; same labels as executions (0 included), so that "
    "errors / executions is one division.",
)
#: The error types live in a family of their own: on ``errors_total`` the ``error_type`` label made
#: ``rate(errors_total) / rate(executions_total)`` match nothing (the seed's first troubleshooting query).
ERRORS_BY_TYPE = MetricSpec(
    "victor.coordinator.errors_by_type", Kind.COUNTER, "{call}", ("coordinator", "method", "error_type"),
    "Coordinator method executions that raised, by error_type (the exception class name); sums to errors.",
)
CANCELLED = MetricSpec(
    "victor.coordinator.cancelled", Kind.COUNTER, "{call}", ("coordinator", "method"),
    "Coordinator method executions that were cancelled or abandoned (not errors).",
)
DURATION = MetricSpec(
    "victor.coordinator.duration", Kind.COUNTER, "s", ("coordinator", "method"),
    "Total time spent in coordinator method executions.",
)
LATENCY = MetricSpec(
    "victor.coordinator.latency", Kind.HISTOGRAM, "s", ("coordinator", "method"),
    "Latency of coordinator method executions, for percentiles.",
    buckets=LATENCY_BUCKETS,
)
CACHE_HITS = MetricSpec(
    "victor.coordinator.cache_hits", Kind.COUNTER, "{hit}", ("coordinator",),
    "Cache hits recorded by coordinators.",
)
CACHE_MISSES = MetricSpec(
    "victor.coordinator.cache_misses", Kind.COUNTER, "{miss}", ("coordinator",),
    "Cache misses recorded by coordinators.",
)
CACHE_HIT_RATE = MetricSpec(
    "victor.coordinator.cache_hit_rate", Kind.GAUGE, "", ("coordinator",),
    "Cache hits / (hits + misses) over the sliding window (0 to 1); no sample while the window holds no lookup.",
)
THROUGHPUT = MetricSpec(
    "victor.coordinator.throughput", Kind.GAUGE, "", ("coordinator",),
    "Executions per second over the sliding window.",
)
ERROR_RATE = MetricSpec(
    "victor.coordinator.error_rate", Kind.GAUGE, "", ("coordinator",),
    "Errors / executions over the sliding window (0 to 1); no sample while the window holds no execution.",
)
MEMORY = MetricSpec(
    "victor.coordinator.memory", Kind.GAUGE, "By", (),
    "Resident memory of this process.",
)
CPU = MetricSpec(
    "victor.coordinator.cpu", Kind.GAUGE, "%", (),
    "CPU use of this process since the previous scrape (100 = one core).",
)
UPTIME = MetricSpec(
    "victor.coordinator.uptime", Kind.GAUGE, "s", (),
    "Seconds since victor_otel.init() in this process.",
)
ANALYTICS_EVENTS = MetricSpec(
    "victor.analytics.events", Kind.COUNTER, "{event}", ("event",),
    "Analytics events recorded with record_event().",
)
HEALTH_STATUS = MetricSpec(
    "victor.health.status", Kind.GAUGE, "", ("check", "coordinator"),
    "Status of each health check (1 pass, 0.5 warn, 0 fail); check is its component:measurement key, "
    "coordinator is set on coordinator checks only.",
)
EXPORTED = MetricSpec(
    "victor.otel.exported", Kind.COUNTER, "{item}", ("signal", "outcome"),
    "Spans, log records and metric points handed to exporters, by signal and outcome: success, failure "
    "(the exporter gave up; lost) or dropped (queue full or after shutdown; lost).",
)

#: Every family victor_otel itself produces, in the order of the README table.
CONTRACT: tuple[MetricSpec, ...] = (
    EXECUTIONS, ERRORS, ERRORS_BY_TYPE, CANCELLED, DURATION, LATENCY,
    CACHE_HITS, CACHE_MISSES, CACHE_HIT_RATE,
    THROUGHPUT, ERROR_RATE,
    MEMORY, CPU, UPTIME,
    ANALYTICS_EVENTS,
    HEALTH_STATUS,
    EXPORTED,
)


# -- contract -> OpenTelemetry SDK data points (collection time, never the hot path) ---------------------


def number_point(attributes: dict[str, Any], start_ns: int, now_ns: int, value: float) -> NumberDataPoint:
    """One point of a counter (``start_ns``: when the series began) or a gauge (``start_ns`` 0)."""
    from opentelemetry.sdk.metrics.export import NumberDataPoint

    return NumberDataPoint(attributes, start_ns, now_ns, value)


def histogram_point(
    spec: MetricSpec, attributes: dict[str, Any], start_ns: int, now_ns: int, bucket_counts: list[int],
    count: int, total: float, exemplars: Sequence[Any] = (),
) -> HistogramDataPoint:
    """One cumulative point of the histogram family ``spec``, on the contract's buckets (no min / max)."""
    from opentelemetry.sdk.metrics.export import HistogramDataPoint

    return HistogramDataPoint(
        attributes=attributes, start_time_unix_nano=start_ns, time_unix_nano=now_ns, count=count, sum=total,
        bucket_counts=bucket_counts, explicit_bounds=list(spec.buckets or ()), min=float("nan"), max=float("nan"),
        exemplars=list(exemplars),
    )


def sdk_metric(
    kind: Kind, name: str, unit: str, description: str, points: Sequence[Any], monotonic: bool = True
) -> Metric:
    """``points`` as one SDK ``Metric`` (cumulative ``Sum`` / ``Histogram``, or ``Gauge``), which the
    Prometheus and OTLP exporters render as they render the SDK's own. Prefer :func:`metric`; this is
    for families read back by name (the multi-process snapshots)."""
    from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Histogram, Metric, Sum

    data: Sum | Gauge | Histogram
    if kind is Kind.COUNTER:
        data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE,
                   is_monotonic=monotonic)
    elif kind is Kind.HISTOGRAM:
        data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
    else:
        data = Gauge(data_points=points)
    return Metric(name=name, description=description, unit=unit, data=data)


def metric(spec: MetricSpec, points: Sequence[Any]) -> Metric:
    """``points`` as the SDK ``Metric`` of the family ``spec``: name, unit, description and kind from the
    contract, nowhere else."""
    return sdk_metric(spec.kind, spec.otel_name, spec.unit, spec.description, points)


def metrics(families: Iterable[tuple[MetricSpec, Sequence[Any]]]) -> list[Metric]:
    """:func:`metric` of every family that has points (a family without any is left out)."""
    return [metric(spec, points) for spec, points in families if points]


def by_prometheus_name() -> dict[str, MetricSpec]:
    """Map every Prometheus sample name of the contract to its family."""
    return {sample: spec for spec in CONTRACT for sample in spec.sample_names}


def markdown_table() -> str:
    """The metric contract as a Markdown table (the README embeds it; a test keeps them equal)."""
    rows = ["| Prometheus name | type | labels | unit | meaning |", "|---|---|---|---|---|"]
    for spec in CONTRACT:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "—"
        rows.append(
            f"| `{spec.prometheus_name}` | {spec.kind.value} | {labels} | {spec.unit or '—'} | {spec.description} |"
        )
    return "\n".join(rows) + "\n"


# -- LLM calls (victor_otel.llm) -------------------------------------------------------------------
# Appended as a block so that other changes to the coordinator families above merge cleanly.

#: Buckets of the GenAI conventions for gen_ai.client.operation.duration and time_to_first_chunk
#: (seconds); the victor_llm_* histograms use the same, so one histogram serves both names.
GENAI_DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
#: Buckets of the GenAI conventions for gen_ai.client.token.usage (tokens per call).
GENAI_TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
#: Alert thresholds of alerts/llm_alerts.yml (and the LLM dashboard's), declared once; tests hold the file to them.
LLM_ERROR_RATIO_ALERT = 0.05
LLM_TTFT_P95_ALERT = 5.0
#: Values of the token_type label.
TOKEN_TYPES: tuple[str, ...] = ("input", "output", "cached_input")

_LLM_LABELS = ("coordinator", "provider", "model", "operation")
LLM_REQUESTS = MetricSpec(
    "victor.llm.requests", Kind.COUNTER, "{request}", _LLM_LABELS,
    "Model calls (LLM requests), whatever their outcome; coordinator is the one in force at the call.",
)
LLM_ERRORS = MetricSpec(
    "victor.llm.errors", Kind.COUNTER, "{request}", _LLM_LABELS,
    "Model calls that failed; same labels as victor_llm_requests_total, so the error ratio is one division.",
)
LLM_ERRORS_BY_TYPE = MetricSpec(
    "victor.llm.errors_by_type", Kind.COUNTER, "{request}", (*_LLM_LABELS, "error_type"),
    "Failed model calls by error_type (the exception class name, e.g. RateLimitError).",
)
LLM_TOKENS = MetricSpec(
    "victor.llm.tokens", Kind.COUNTER, "{token}", ("coordinator", "provider", "model", "token_type"),
    "Tokens of model calls by token_type: input (cached ones included), output, cached_input.",
)
LLM_COST = MetricSpec(
    "victor.llm.cost_usd", Kind.COUNTER, "", ("coordinator", "provider", "model"),
    "Cost of model calls in US dollars, from the price table (models without a price count no cost).",
)
LLM_DURATION = MetricSpec(
    "victor.llm.request.duration", Kind.HISTOGRAM, "s", _LLM_LABELS,
    "Duration of model calls (a stream: until its last chunk), for percentiles.",
    buckets=GENAI_DURATION_BUCKETS,
)
LLM_TTFT = MetricSpec(
    "victor.llm.time_to_first_token", Kind.HISTOGRAM, "s", _LLM_LABELS,
    "Time from a streamed model call's start to its first chunk.",
    buckets=GENAI_DURATION_BUCKETS,
)
LLM_BUDGET = MetricSpec(
    "victor.llm.budget_usd_per_hour", Kind.GAUGE, "", (),
    "The hourly spend budget set with llm_budget_usd_per_hour (absent when unset); the spend alert compares "
    "against it.",
)

#: The LLM families, in the order of the README table (part of CONTRACT below).
LLM_CONTRACT: tuple[MetricSpec, ...] = (
    LLM_REQUESTS, LLM_ERRORS, LLM_ERRORS_BY_TYPE, LLM_TOKENS, LLM_COST, LLM_DURATION, LLM_TTFT, LLM_BUDGET,
)
CONTRACT = (*CONTRACT, *LLM_CONTRACT)

#: The GenAI conventions' client instruments, sent over OTLP only (the victor_llm_* families carry the
#: same data on /metrics), with the buckets the conventions specify.
GENAI_TOKEN_USAGE = MetricSpec(
    "gen_ai.client.token.usage", Kind.HISTOGRAM, "{token}",
    ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.token.type"),
    "Number of input and output tokens used by GenAI clients.", buckets=GENAI_TOKEN_BUCKETS,
)
GENAI_OPERATION_DURATION = MetricSpec(
    "gen_ai.client.operation.duration", Kind.HISTOGRAM, "s",
    ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model"),
    "Duration of GenAI client operation.", buckets=GENAI_DURATION_BUCKETS,
)
GENAI_TIME_TO_FIRST_CHUNK = MetricSpec(
    "gen_ai.client.operation.time_to_first_chunk", Kind.HISTOGRAM, "s",
    ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model"),
    "Time to receive the first chunk of a streamed response.", buckets=GENAI_DURATION_BUCKETS,
)
GENAI_CONTRACT: tuple[MetricSpec, ...] = (GENAI_TOKEN_USAGE, GENAI_OPERATION_DURATION, GENAI_TIME_TO_FIRST_CHUNK)


# -- HTTP server metrics (victor_otel.web.httpmetrics) ---------------------------------------------
# The OpenTelemetry semantic-convention series the ASGI / FastAPI instrumentation used to record, now
# pre-aggregated at the edge: same names, units, buckets and bounded attributes (checked against the
# installed opentelemetry-instrumentation-asgi by tests/test_httpmetrics.py). Not in CONTRACT: which
# families appear depends on OTEL_SEMCONV_STABILITY_OPT_IN, and their names are OpenTelemetry's, not ours.

#: ``http.server.duration`` (ms): the SDK's default explicit bucket boundaries, which the instrumentation
#: left in force (it records whole milliseconds).
HTTP_DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0,
)
#: ``http.server.request.duration`` (s): the stable HTTP conventions' advisory boundaries.
HTTP_DURATION_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
#: The old conventions (the default, and ``http/dup``): ``http.target`` is the route template, present only
#: when a route matched.
HTTP_SERVER_DURATION = MetricSpec(
    "http.server.duration", Kind.HISTOGRAM, "ms",
    ("http.method", "http.scheme", "http.flavor", "http.status_code", "http.target"),
    "Measures the duration of inbound HTTP requests.", buckets=HTTP_DURATION_BUCKETS_MS,
)
#: The stable conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=http`` or ``http/dup``): ``http.route`` only when
#: a route matched, ``error.type`` (the status code) on 5xx responses.
HTTP_SERVER_REQUEST_DURATION = MetricSpec(
    "http.server.request.duration", Kind.HISTOGRAM, "s",
    ("http.request.method", "url.scheme", "network.protocol.version", "http.response.status_code", "http.route",
     "error.type"),
    "Duration of HTTP server requests.", buckets=HTTP_DURATION_BUCKETS_S,
)
#: An UpDownCounter (a non-monotonic sum, a gauge in Prometheus). Labels: ``http.method``, ``http.scheme``,
#: ``http.flavor`` (old conventions) and / or ``http.request.method``, ``url.scheme`` (stable ones).
HTTP_SERVER_ACTIVE_REQUESTS = MetricSpec(
    "http.server.active_requests", Kind.GAUGE, "{request}",
    ("http.method", "http.scheme", "http.flavor", "http.request.method", "url.scheme"),
    "Number of active HTTP server requests.",
)
HTTP_CONTRACT: tuple[MetricSpec, ...] = (HTTP_SERVER_DURATION, HTTP_SERVER_REQUEST_DURATION,
                                         HTTP_SERVER_ACTIVE_REQUESTS)
