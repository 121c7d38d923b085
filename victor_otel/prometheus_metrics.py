"""The seed's ``victor.observability.prometheus_metrics`` module, for a mechanical rename of imports.

``sed 's/victor\\.observability/victor_otel/'`` turns the seed's imports into imports of this module; the
names are :mod:`victor_otel.compat`'s (one implementation), so they land in the same metrics:

>>> from victor_otel.prometheus_metrics import get_prometheus_exporter
>>> import victor_otel
>>> get_prometheus_exporter is victor_otel.get_prometheus_exporter
True

New code imports them from ``victor_otel``.
"""

from __future__ import annotations

from victor_otel.compat import (
    CoordinatorMetricsCollector,
    PrometheusExporter,
    get_coordinator_metrics_collector,
    get_prometheus_exporter,
)

__all__ = [
    "CoordinatorMetricsCollector",
    "PrometheusExporter",
    "get_coordinator_metrics_collector",
    "get_prometheus_exporter",
]
