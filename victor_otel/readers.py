"""The SDK's metric readers with victor_otel's pre-aggregated metrics merged in at collection.

The OpenTelemetry Python SDK has no MetricProducer: the coordinator families (``registry.produce()``),
the export counts, health's and the LLM series are merged into what a reader collected by one mixin, so
the exporters (Prometheus text, OTLP, console) render them like any other metric.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    Metric,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PrometheusMetric

from victor_otel._version import __version__

SCOPE = InstrumentationScope("victor_otel", __version__)
_logger = logging.getLogger("victor_otel")

#: Functions returning extra ``Metric`` objects merged into every collection (the registry's, health's).
Producer = Callable[[], Sequence[Metric]]


class _MergesProducers:
    """Mixin for a MetricReader: merge pre-aggregated metrics into what the SDK collected."""

    _producers: tuple[Producer, ...] = ()
    _resource: Resource = Resource.get_empty()
    #: Producers replaced for this reader only: in multi-process mode /metrics sums every worker's
    #: registry (victor_otel.multiprocess) while OTLP pushes stay per process.
    _replacements: Mapping[Producer, Producer] = MappingProxyType({})

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        extra: list[Metric] = []
        for produce in self._producers:
            try:
                extra.extend(self._replacements.get(produce, produce)())
            except Exception:  # a producer bug must never break a scrape or an export
                _logger.exception("victor_otel: a metric producer failed; its metrics are skipped")
        super()._receive_metrics(  # type: ignore[misc]
            merge_metrics(metrics_data, extra, self._resource), timeout_millis=timeout_millis, **kwargs
        )


def merge_metrics(data: MetricsData | None, extra: list[Metric], resource: Resource) -> MetricsData:
    """Return ``data`` with ``extra`` added under the victor_otel instrumentation scope."""
    if not extra:
        return data or MetricsData(resource_metrics=[])
    if data is None or not data.resource_metrics:
        scope = ScopeMetrics(scope=SCOPE, metrics=extra, schema_url="")
        return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[scope], schema_url="")])
    first, *rest = data.resource_metrics
    # One ScopeMetrics per scope: the process gauges already come under victor_otel's own meter, and the
    # OTLP encoder keeps one block per scope (a second one with the same scope lost the gauges on the wire).
    scopes = list(first.scope_metrics)
    for i, existing in enumerate(scopes):
        if (existing.scope.name, existing.scope.version) == (SCOPE.name, SCOPE.version):
            scopes[i] = ScopeMetrics(scope=existing.scope, metrics=[*existing.metrics, *extra],
                                     schema_url=existing.schema_url)
            break
    else:
        scopes.append(ScopeMetrics(scope=SCOPE, metrics=extra, schema_url=""))
    merged = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
    return MetricsData(resource_metrics=[merged, *rest])


class VictorPrometheusReader(_MergesProducers, PrometheusMetricReader):
    """The OTel Prometheus reader, on a private registry, with our pre-aggregated metrics merged in."""

    _stopped = False

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        # Both our shutdown() and a foreign MeterProvider's may stop the reader: the second is a no-op.
        if not self._stopped:
            self._stopped = True
            super().shutdown(timeout_millis, **kwargs)


class VictorPeriodicReader(_MergesProducers, PeriodicExportingMetricReader):
    """The periodic (OTLP / console) reader with our pre-aggregated metrics merged in."""


class VictorInMemoryReader(_MergesProducers, InMemoryMetricReader):
    """An in-memory reader with our pre-aggregated metrics merged in (for tests)."""


class SerialRegistry(CollectorRegistry):
    """A prometheus_client registry whose collections never overlap.

    The OTel Prometheus collector queues what its reader collected and drains the queue while
    rendering: two concurrent scrapes would take each other's data (one of them rendering nothing).
    Every path to the text (our endpoint, the standalone server) goes through this lock.
    """

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self._serial = threading.Lock()

    def collect(self) -> Iterator[PrometheusMetric]:
        with self._serial:
            return iter(list(super().collect()))

    def renew_lock(self) -> None:
        """In a forked child: a scrape may have held the lock at the fork."""
        self._serial = threading.Lock()


