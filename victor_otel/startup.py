"""The one wiring point: :func:`init` assembles the telemetry of a process, and :func:`current_or_init`
starts it from the environment where the seed's API needed no set-up call.

``bootstrap.init()`` builds the providers (with fork and SIGTERM handling); around them this module adds
the multi-process mode, the standalone metrics server, LLM calls and health's metric, in that order,
each once. :func:`victor_otel.init` is this :func:`init` with its keywords spelled out. Nothing else
attaches itself: a route served before any ``init()`` (``/metrics``, ``/health*``, the seed's exporter)
comes here through :func:`current_or_init`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from victor_otel import bootstrap, exposition, multiprocess
from victor_otel.checks.runner import get_health
from victor_otel.config import Settings
from victor_otel.llm.wiring import setup as setup_llm
from victor_otel.logs import teardown_coordinator_logging
from victor_otel.registry import get_registry

_lazy_lock = threading.Lock()


def init(span_exporters: Sequence[SpanExporter] = (), **arguments: Any) -> bootstrap.Telemetry:
    """The telemetry of this process, built and wired once; see :func:`victor_otel.init` for the arguments."""
    settings = Settings.from_sources(arguments)
    if settings.multiproc_dir and not settings.disabled:
        multiprocess.check_directory(settings.multiproc_dir)  # refused before anything is built
    telemetry = bootstrap.init(span_exporters, **arguments)  # providers, fork and SIGTERM handling (idempotent)
    try:
        if (not settings.disabled and settings.multiproc_dir and telemetry.prometheus_registry is not None
                and telemetry.multiprocess is None):
            multiprocess.enable_multiprocess(telemetry)
        if (settings.metrics_port is not None and telemetry.prometheus_registry is not None
                and telemetry.metrics_server is None):
            telemetry.metrics_server = exposition.start_metrics_server(
                settings.metrics_port, settings.metrics_host, telemetry=telemetry)
        setup_llm(telemetry)  # LLM metrics, prices (a bad table raises here), content capture, the clients
    except BaseException:
        bootstrap.shutdown(timeout=1.0)  # nothing half-started stays behind (a taken port, say)
        raise
    get_health().attach(telemetry)  # victor_health_status in every collection from now on
    return telemetry


def current_or_init() -> bootstrap.Telemetry:
    """The running telemetry, else :func:`init` from the environment: what ``/metrics``, :func:`render` and
    the seed's exporter do, as the seed's exporter worked without a set-up call."""
    telemetry = bootstrap.current()
    if telemetry is not None:
        return telemetry
    with _lazy_lock:
        return bootstrap.current() or init()


def current_or_first_init() -> bootstrap.Telemetry | None:
    """The running telemetry; if ``init()`` never ran in this process, :func:`init` from the environment;
    ``None`` after ``shutdown()``: what the health routes do, so that the seed's
    ``setup_health_endpoints(app)`` alone answers ready at its first probe while a stopped process stays
    stopped (and says so)."""
    telemetry = bootstrap.current()
    if telemetry is not None or bootstrap.initialised_once():  # no lock: shutdown() holds bootstrap's
        return telemetry
    with _lazy_lock:
        if (telemetry := bootstrap.current()) is not None or bootstrap.initialised_once():
            return telemetry
        return init()


def render(accept: str | None = None, telemetry: bootstrap.Telemetry | None = None) -> tuple[bytes, str]:
    """:func:`victor_otel.exposition.render`, initialising from the environment first if needed."""
    return exposition.render(accept, telemetry if telemetry is not None else current_or_init())


def start_metrics_server(
    port: int = 9464, host: str = "127.0.0.1", telemetry: bootstrap.Telemetry | None = None
) -> exposition.MetricsServer:
    """:func:`victor_otel.exposition.start_metrics_server`, initialising from the environment first if needed."""
    return exposition.start_metrics_server(port, host, telemetry if telemetry is not None else current_or_init())


def reset() -> None:
    """Shut down, then put every process-wide state back as a new process has it: the coordinator series,
    health's user checks and per-coordinator thresholds, the logging set-up and the redactor in force.

    The state lives with the module that owns it (one object each: ``registry.get_registry()``,
    ``checks.runner.get_health()``, ``logs.setup``, ``redaction``); this is the one place that knows them
    all. Tests call it between cases.
    """
    bootstrap.shutdown()
    get_registry().reset()
    get_health().reset()
    teardown_coordinator_logging()  # also puts the default redactor back in force
