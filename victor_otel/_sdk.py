"""Every use of an OpenTelemetry SDK private attribute or module, in one place, each with why.

victor_otel builds on public OpenTelemetry APIs except here. Each function below names the private
attribute it touches, why no public API does the job, and what happens when a release changes it (every
caller degrades to a documented loss, never a crash). Checked on opentelemetry-sdk 1.43.0 (the oldest
supported, ``pyproject.toml``) through 1.45.2; CI runs the whole suite against both ends of that range.
The logs signal's own homes (``opentelemetry._logs``, ``opentelemetry.sdk._logs``) are where the SDK keeps
it while it is in development: those imports stay where they are used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

#: The SDK releases these accesses were checked on (CI runs the suite on both ends).
CHECKED_ON = ("1.43.0", "1.45.2")


# -- batch processors (spans, log records): drops and queue --------------------------------------


def batch_queue(processor: Any) -> tuple[Any, Any, Any, int | None] | None:
    """``(batch, queue, drop_metrics, max_queue_size)`` of a ``BatchSpanProcessor`` /
    ``BatchLogRecordProcessor``, or ``None`` when the SDK is shaped differently.

    Why: the SDK counts what its bounded queue drops only into its own self-observability metrics
    (``_batch_processor._metrics.drop_items``), which nothing public exposes, and the queue length has no
    public getter; ``victor_otel_exported_total{outcome="dropped"}`` and ``export_stats()["queued"]`` need
    both. When missing: drops are not counted (a warning says so once); exports still are. The drop
    metrics' signatures differ between releases (1.43: ``drop_items(count)``, ``finish_items(count,
    error)``; 1.45: ``drop_items(count, error_type)``, ``finish_items(count)``; 1.43 drops items emitted
    after shutdown without a call): our stand-in passes on whatever it is given.
    """
    batch = getattr(processor, "_batch_processor", None)
    metrics = getattr(batch, "_metrics", None)
    queue = getattr(batch, "_queue", None)
    if batch is None or metrics is None or queue is None or not hasattr(metrics, "drop_items"):
        return None
    return batch, queue, metrics, getattr(batch, "_max_queue_size", None)


def replace_batch_queue(batch: Any, queue: Any) -> None:
    """Put our counting deque in place of the batch processor's (same type, same bound)."""
    batch._queue = queue


def replace_drop_metrics(batch: Any, metrics: Any) -> None:
    """Put our drop counter in front of the batch processor's self-observability metrics."""
    batch._metrics = metrics


# -- metric exporters and readers --------------------------------------------------------------------


def exporter_preferences(exporter: Any) -> tuple[Any, Any]:
    """A metric exporter's preferred temporality and aggregation, for a wrapper that must declare the same.

    Why: ``MetricExporter`` takes them in its constructor and keeps them private; a wrapper reading them
    is the only way to keep what the wrapped exporter asked for (OTLP: cumulative, as configured).
    """
    return exporter._preferred_temporality, exporter._preferred_aggregation


def fork_locks(meter_provider: Any, readers: list[Any]) -> list[Any]:
    """The metric pipeline's locks a fork must not split: each periodic reader's export lock, then the
    meter provider's collection lock (the order the SDK's threads never hold them in together).

    Why: a collection or a push in progress in another thread at a fork leaves the child with these locks
    taken for ever (``gunicorn --preload`` with a short OTLP interval hung); the SDK registers no at-fork
    handler for them. When missing: nothing is held (the old risk, no crash).
    """
    locks = [reader._export_lock for reader in readers if hasattr(reader, "_export_lock")]
    consumer = getattr(meter_provider, "_measurement_consumer", None)
    collection_lock = getattr(consumer, "_lock", None)
    if collection_lock is not None:
        locks.append(collection_lock)
    return locks


def renew_reader_after_fork(reader: Any) -> None:
    """In a forked child: a new export lock for a periodic reader, and the Prometheus collector's cached
    ``target_info`` dropped so that it is rebuilt with the child's ``service.instance.id``.

    Why: the SDK restarts the periodic reader's thread after a fork but keeps its export lock, which the
    parent's thread may hold mid-push; ``PrometheusMetricReader`` caches ``target_info`` (and queued
    collections) on its private collector.
    """
    if hasattr(reader, "_export_lock"):
        reader._export_lock = threading.Lock()
    collector = getattr(reader, "_collector", None)
    if collector is not None and hasattr(collector, "_target_info"):
        collector._target_info = None
        metrics_datas = getattr(collector, "_metrics_datas", None)
        if metrics_datas is not None:
            metrics_datas.clear()


def child_resource(resource: Any) -> Any:
    """In a forked child: ``resource`` (the one object every provider of ours holds) with the child's own
    ``service.instance.id``, changed in place.

    Why private: a Resource that providers already hold cannot be changed through the API. SDK 1.45's
    providers refresh their Resource after a fork with the id ``ServiceInstanceIdResourceDetector`` keeps
    per pid; 1.43's MeterProvider does not, so its OTLP pushes and ``target_info`` kept the parent's id
    (N workers, one instance: sums over instances went wrong). The detector's id is used here too, so every
    provider of either release agrees.
    """
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.resources import ServiceInstanceIdResourceDetector

    attributes = dict(resource.attributes)
    attributes.update(ServiceInstanceIdResourceDetector().detect().attributes)
    resource._attributes = BoundedAttributes(attributes=attributes, immutable=True)
    return resource


# -- private modules -----------------------------------------------------------------------------------


def prometheus_name_mapping() -> tuple[Callable[[str], str], Callable[[str], str]]:
    """``(sanitize_full_name, map_unit)`` of opentelemetry-exporter-prometheus, so that the metric contract
    names families exactly as the exporter renders them (its ``_mapping`` module is the only source)."""
    from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_full_name

    return sanitize_full_name, map_unit


def otlp_log_exporter() -> Any:
    """The OTLP/HTTP log exporter class (the exporter package keeps it in ``_log_exporter`` while the logs
    signal is in development)."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter


__all__ = [
    "CHECKED_ON",
    "batch_queue",
    "child_resource",
    "exporter_preferences",
    "fork_locks",
    "otlp_log_exporter",
    "prometheus_name_mapping",
    "renew_reader_after_fork",
    "replace_batch_queue",
    "replace_drop_metrics",
]


# -- the export process -----------------------------------------------------------------------------


def suppress_instrumentation() -> None:
    """Mark the current context so that instrumentations record nothing (``_SUPPRESS_INSTRUMENTATION_KEY``,
    what the SDK's batch processors attach around every export). The export process (``offload``) runs it
    once: an application started under ``opentelemetry-instrument`` passes its auto-instrumentation on to
    the child through ``PYTHONPATH``, and the child's HTTP posts must not become spans of their own. A
    release without the key: nothing is suppressed (at worst a client span per batch, from the child)."""
    from opentelemetry import context

    key = getattr(context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
    if key is not None:
        context.attach(context.set_value(key, True))
