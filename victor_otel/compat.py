"""The seed's ``victor.observability`` names, as thin shims over the OpenTelemetry design.

Existing code keeps working unchanged::

    collector = get_coordinator_metrics_collector()
    with collector.track_coordinator("ChatCoordinator"):
        ...
    exporter = get_prometheus_exporter()
    app.add_route("/metrics", exporter.get_endpoint())
"""

from __future__ import annotations

from typing import Any

from victor_otel import bootstrap, decorators
from victor_otel.errors import VictorOtelConfigError
from victor_otel.exposition import MetricsServer
from victor_otel.registry import get_registry
from victor_otel.startup import render, start_metrics_server
from victor_otel.web.metrics import metrics_endpoint


class ExecutionFailed(Exception):
    """Stands for an error reported through ``track_execution(..., success=False)``.

    Its name is the ``error_type`` label (of the metric and the execution log record) unless the call
    names one.
    """

    def __init__(self, error_type: str | None = None) -> None:
        super().__init__(error_type or "execution failed")
        if error_type is not None:
            self.victor_error_type = error_type


class CoordinatorMetricsCollector:
    """The seed's collector API; every call lands in the same registry as the decorators."""

    def track_coordinator(self, coordinator: str, operation: str = "execute") -> decorators.track:
        """Context manager timing a block (sync ``with`` or ``async with``)."""
        return decorators.track(coordinator, operation)

    def track_execution(
        self,
        coordinator: str,
        duration_ms: float,
        success: bool = True,
        method: str = "execute",
        error_type: str | None = None,
        **_ignored: Any,
    ) -> None:
        """Record an execution timed elsewhere (``duration_ms`` in milliseconds)."""
        if isinstance(duration_ms, bool) or not isinstance(duration_ms, (int, float)) or not duration_ms >= 0:
            raise VictorOtelConfigError(
                f"duration_ms: {duration_ms!r} is not valid; accepted: a number >= 0"
            )
        site = decorators.CallSite(
            decorators._check_name("coordinator", coordinator), decorators._check_name("method", method)
        )
        if error_type is not None:
            decorators._check_name("error_type", error_type)
        site.finish(None, None, duration_ms / 1000.0, None if success else ExecutionFailed(error_type))

    def record_cache_hit(self, coordinator: str) -> None:
        decorators.record_cache_hit(coordinator)

    def record_cache_miss(self, coordinator: str) -> None:
        decorators.record_cache_miss(coordinator)

    def record_analytics_event(self, event: str, count: int = 1) -> None:
        decorators.record_event(event, count)

    def get_coordinator_stats(self, coordinator: str | None = None) -> dict[str, Any]:
        """Lifetime counts and sliding-window rates, per coordinator (or for one).

        ``error_rate`` / ``cache_hit_rate`` are ``None`` while the window holds no call / no cache lookup.
        """
        registry = get_registry()
        stats: dict[str, Any] = {}
        for state in registry.all_coordinators():
            if coordinator is not None and state.name != coordinator:
                continue
            series = [s for s in list(registry.series.values()) if s.coordinator is state]
            window = state.stats()
            executions = sum(s.count for s in series)
            stats[state.name] = {
                "executions": executions,
                "errors": sum(sum(s.errors.values()) for s in series),
                "cancelled": sum(s.cancelled for s in series),
                "total_duration_seconds": sum(s.sum for s in series),
                "cache_hits": state.cache_hits,
                "cache_misses": state.cache_misses,
                "window_seconds": window.seconds,
                "throughput": window.throughput,
                "error_rate": window.error_rate,
                "cache_hit_rate": window.cache_hit_rate,
                "p50_seconds": window.p50,
                "p95_seconds": window.p95,
                "p99_seconds": window.p99,
            }
        return stats[coordinator] if coordinator is not None and coordinator in stats else stats


_collector = CoordinatorMetricsCollector()


def get_coordinator_metrics_collector() -> CoordinatorMetricsCollector:
    """The process-wide collector of the seed API."""
    return _collector


class PrometheusExporter:
    """The seed's exporter: ``get_endpoint()`` for Starlette / FastAPI, ``start_server()`` standalone."""

    def __init__(self) -> None:
        self._server: MetricsServer | None = None

    def get_endpoint(self) -> Any:
        """An endpoint for exactly ``app.add_route("/metrics", exporter.get_endpoint())``."""
        return metrics_endpoint()

    def export_metrics(self) -> str:
        """The current exposition text."""
        return render()[0].decode()

    def start_server(self, host: str = "127.0.0.1", port: int = 9090) -> MetricsServer:
        """Serve ``/metrics`` from a background thread; returns the running server."""
        self._server = start_metrics_server(port, host, telemetry=bootstrap.current())
        return self._server

    def stop_server(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


_exporter: PrometheusExporter | None = None


def get_prometheus_exporter() -> PrometheusExporter:
    """The process-wide exporter of the seed API."""
    global _exporter
    if _exporter is None:
        _exporter = PrometheusExporter()
    return _exporter
