"""victor_otel: OpenTelemetry instrumentation for the Victor LLM agent orchestrator.

>>> import victor_otel
>>> telemetry = victor_otel.init(service_name="victor", traces_exporter="none")
>>> @victor_otel.coordinator("ChatCoordinator")
... class ChatCoordinator:
...     def plan(self, goal):
...         return [goal]
>>> ChatCoordinator().plan("answer")
['answer']
>>> victor_otel.shutdown()
True

Importing this package does no work: no thread, socket or file is created before ``init()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# What every instrumented module needs at import time is imported now; the rest on first use, so that
# ``import victor_otel`` stays cheap (the SDK's exporters, the logs SDK and asyncio load when needed).
from victor_otel._version import __version__ as __version__
from victor_otel.decorators import (
    coordinator,
    instrument,
    record_cache_hit,
    record_cache_miss,
    record_event,
    track,
)
from victor_otel.errors import VictorOtelConfigError, VictorOtelError, VictorOtelInitError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from victor_otel.bootstrap import Lifecycle, Telemetry, current
    from victor_otel.checks.model import HealthReport, Thresholds
    from victor_otel.checks.runner import (
        add_health_check,
        check_health,
        get_health,
        remove_health_check,
        set_health_thresholds,
    )
    from victor_otel.compat import (
        CoordinatorMetricsCollector,
        PrometheusExporter,
        get_coordinator_metrics_collector,
        get_prometheus_exporter,
    )
    from victor_otel.config import Settings
    from victor_otel.context import extract, get_request_id, inject, request_context
    from victor_otel.exposition import MetricsServer
    from victor_otel.llm import LLMCall, llm_call
    from victor_otel.logs import (
        JsonFormatter,
        TextFormatter,
        get_coordinator_logger,
        setup_coordinator_logging,
        teardown_coordinator_logging,
    )
    from victor_otel.redaction import Redactor, redact
    from victor_otel.startup import render, start_metrics_server
    from victor_otel.web import instrument_app, metrics_endpoint, setup_health_endpoints
    from victor_otel.web.requestid import RequestIdMiddleware

#: Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    **dict.fromkeys(("Lifecycle", "Telemetry", "current"), "bootstrap"),
    **dict.fromkeys(
        ("CoordinatorMetricsCollector", "PrometheusExporter", "get_coordinator_metrics_collector",
         "get_prometheus_exporter"),
        "compat",
    ),
    "Settings": "config",
    **dict.fromkeys(("extract", "get_request_id", "inject", "request_context"), "context"),
    "RequestIdMiddleware": "web.requestid",
    "MetricsServer": "exposition",
    **dict.fromkeys(("render", "start_metrics_server"), "startup"),
    **dict.fromkeys(("HealthReport", "Thresholds"), "checks.model"),
    **dict.fromkeys(
        ("add_health_check", "check_health", "get_health", "remove_health_check", "set_health_thresholds"),
        "checks.runner",
    ),
    **dict.fromkeys(
        ("JsonFormatter", "TextFormatter", "get_coordinator_logger", "setup_coordinator_logging",
         "teardown_coordinator_logging"),
        "logs",
    ),
    **dict.fromkeys(("Redactor", "redact"), "redaction"),
    **dict.fromkeys(("instrument_app", "metrics_endpoint", "setup_health_endpoints"), "web"),
    **dict.fromkeys(("LLMCall", "llm_call"), "llm"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'victor_otel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"victor_otel.{module}"), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))




def init(
    service_name: str | None = None,
    *,
    service_version: str | None = None,
    environment: str | None = None,
    resource_attributes: dict[str, str] | None = None,
    disabled: bool | None = None,
    traces_exporter: str | list[str] | None = None,
    traces_file: str | None = None,
    metrics_exporter: str | list[str] | None = None,
    logs_exporter: str | list[str] | None = None,
    otlp_endpoint: str | None = None,
    sampler: str | None = None,
    sampler_arg: float | None = None,
    metric_export_interval: int | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    cardinality_limit: int | None = None,
    window_seconds: float | None = None,
    shutdown_timeout: float | None = None,
    export_timeout: float | None = None,
    export_process: bool | None = None,
    max_queue_size: int | None = None,
    drain_seconds: float | None = None,
    multiproc_dir: str | None = None,
    metrics_token: str | None = None,
    metrics_basic_auth: str | None = None,
    debug_pages: str | bool | None = None,
    debug_trace_url: str | None = None,
    health_error_rate_warn: float | None = None,
    health_error_rate_fail: float | None = None,
    health_min_calls: int | None = None,
    health_latency_p95_warn: float | None = None,
    health_latency_p95_fail: float | None = None,
    health_memory_warn_bytes: int | None = None,
    health_memory_fail_bytes: int | None = None,
    health_cpu_warn_percent: float | None = None,
    health_cache_ttl: float | None = None,
    health_check_timeout: float | None = None,
    health_max_loop_lag: float | None = None,
    health_token: str | None = None,
    instrument_llm: bool | None = None,
    llm_capture_content: bool | None = None,
    llm_prices: Any = None,
    llm_budget_usd_per_hour: float | None = None,
    span_exporters: Sequence[SpanExporter] = (),
) -> Telemetry:
    """Bootstrap tracing, metrics and logs for this process and return the :class:`Telemetry`.

    Every argument left ``None`` comes from its environment variable (``VICTOR_OTEL_*``, then the
    standard ``OTEL_*`` one), else its default; see docs/configuration.md. Calling it again
    with the same settings returns the same object; with other settings it raises
    :class:`VictorOtelInitError`. A bad value raises :class:`VictorOtelConfigError` naming the setting.
    ``span_exporters``: extra span exporters behind a synchronous processor (for example an
    ``InMemorySpanExporter`` in tests); they switch tracing on even with ``traces_exporter="none"``.
    """
    arguments: dict[str, Any] = {
        k: v for k, v in locals().items() if v is not None and k != "span_exporters"
    }
    # The one wiring point, imported on the first call: `import victor_otel` loads the decorators only.
    from victor_otel import startup

    return startup.init(span_exporters, **arguments)


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop everything ``init()`` started within ``timeout`` seconds (default: the setting).

    Returns ``False`` when the flush did not finish in time. Also runs at interpreter exit.
    """
    from victor_otel import bootstrap

    return bootstrap.shutdown(timeout)


__all__ = [
    "CoordinatorMetricsCollector",
    "HealthReport",
    "JsonFormatter",
    "LLMCall",
    "Lifecycle",
    "MetricsServer",
    "PrometheusExporter",
    "Redactor",
    "RequestIdMiddleware",
    "Settings",
    "Telemetry",
    "TextFormatter",
    "Thresholds",
    "VictorOtelConfigError",
    "VictorOtelError",
    "VictorOtelInitError",
    "add_health_check",
    "check_health",
    "coordinator",
    "current",
    "extract",
    "get_coordinator_logger",
    "get_coordinator_metrics_collector",
    "get_health",
    "get_prometheus_exporter",
    "get_request_id",
    "init",
    "inject",
    "instrument",
    "instrument_app",
    "llm_call",
    "metrics_endpoint",
    "record_cache_hit",
    "record_cache_miss",
    "record_event",
    "redact",
    "remove_health_check",
    "render",
    "request_context",
    "set_health_thresholds",
    "setup_coordinator_logging",
    "setup_health_endpoints",
    "shutdown",
    "start_metrics_server",
    "teardown_coordinator_logging",
    "track",
]
