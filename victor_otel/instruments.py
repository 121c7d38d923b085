"""The metric contract: every name, type, unit, label set and bucket, declared once as data.

Code, docs and tests read this module; dashboards, alerts and the runbook are checked against it.
OpenTelemetry names are chosen so that both the Prometheus exporter and Prometheus' OTLP
translation produce the same series names, the ones users' alerts already use
(``victor.coordinator.executions`` with unit ``{call}`` becomes ``victor_coordinator_executions_total``).
Gauges carry no unit that would add a suffix (``1`` would add ``_ratio`` on the OTLP path).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from victor_otel import _sdk


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
        """The family name as Prometheus shows it (``_total`` included for counters)."""
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
        """Every sample name the family renders (``_bucket``, ``_sum``, ``_count`` for histograms)."""
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
