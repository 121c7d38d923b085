"""Building and tearing down the OpenTelemetry providers, readers and exporters from settings.

``init()`` is idempotent (same settings: the same :class:`Telemetry`; different ones: a clear error) and
never silently replaces a provider the host application installed: a foreign SDK ``TracerProvider`` is
reused as it is, a foreign SDK ``MeterProvider`` gets our readers added, anything else is refused.
Nothing here runs at import time.
"""

from __future__ import annotations

import atexit
import enum
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Protocol

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from victor_otel import _sdk, decorators, forking, process
from victor_otel import instruments as contract
from victor_otel._version import __version__
from victor_otel.config import Settings, check_sdk_environment
from victor_otel.context import PROPAGATOR
from victor_otel.errors import VictorOtelConfigError, VictorOtelInitError
from victor_otel.exporting import (
    CountingLogExporter,
    CountingMetricExporter,
    CountingSpanExporter,
    ExportStats,
    abandon,
    count_drops,
)
from victor_otel.exporting import reinit_after_fork as reinit_exporting_after_fork
from victor_otel.offload import ExportProcess
from victor_otel.readers import (
    Producer,
    SerialRegistry,
    VictorInMemoryReader,
    VictorPeriodicReader,
    VictorPrometheusReader,
    _MergesProducers,
    merge_metrics,
)
from victor_otel.registry import Registry, get_registry

if TYPE_CHECKING:  # the logs SDK is imported only when a logs exporter is configured
    from opentelemetry.sdk._logs import LoggerProvider

    from victor_otel.tracebuffer import TraceBuffer  # imported only when the /debug pages are on

_logger = logging.getLogger("victor_otel")

class Lifecycle(str, enum.Enum):
    """Where the process is; readiness follows it (ready only when READY)."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class _LineSpanExporter(ConsoleSpanExporter):
    """Console exporter writing one compact JSON object per span (greppable, jq-able)."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__(out=out, formatter=lambda span: span.to_json(indent=None) + os.linesep)
        self._file = out

    def shutdown(self) -> None:
        if self._file not in (sys.stdout, sys.stderr):
            self._file.close()


class Closeable(Protocol):
    """What the telemetry stops at shutdown (the standalone metrics server)."""

    def close(self) -> None: ...


class Snapshots(Protocol):
    """The multi-process snapshot writer (:class:`victor_otel.multiprocess.Multiprocess`), as the telemetry
    drives it: a last snapshot at shutdown, a file of its own after fork, one now for ``flush()``."""

    def close(self) -> None: ...

    def reinit_after_fork(self) -> None: ...

    def write(self) -> dict[str, Any]: ...


class Telemetry:
    """What ``init()`` built: the settings, providers, readers, and the process lifecycle.

    >>> import victor_otel
    >>> t = victor_otel.init(service_name="doc", traces_exporter="none")
    >>> t.settings.service_name, t.lifecycle.value
    ('doc', 'ready')
    >>> victor_otel.shutdown()
    True
    """

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.started_at = time.time()
        self._started_monotonic = time.monotonic()
        self.lifecycle = Lifecycle.STARTING
        self.resource = build_resource(settings)
        #: Ours, or the application's own (any API TracerProvider: then victor_otel never flushes it).
        self.tracer_provider: Any = None
        self.meter_provider: MeterProvider | None = None
        self.logger_provider: LoggerProvider | None = None
        self.tracer: trace.Tracer | None = None
        self.prometheus_registry: SerialRegistry | None = None
        self.readers: list[MetricReader] = []
        self.metrics_server: Closeable | None = None
        #: The /debug pages' recent traces (victor_otel.tracebuffer) when they are on and tracing is ours.
        self.trace_buffer: TraceBuffer | None = None
        #: What happened to every span, log record and metric point handed to an exporter.
        self.exports = ExportStats()
        self.producers: list[Producer] = [registry.produce, self.exports.produce]
        self.push_producers: list[Producer] = []
        #: The multi-process snapshot writer (victor_otel.multiprocess) when multiproc_dir is set.
        self.multiprocess: Snapshots | None = None
        self._exporters: list[Any] = []  # the counting wrappers, aborted when shutdown runs out of time
        self._owned_tracer_provider = False
        self._owned_meter_provider = False
        #: When the last flush ran out of its budget (``time.time()``); ``None`` once one finished.
        self.flush_stalled_at: float | None = None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started_monotonic

    def stalled_since_last_flush(self) -> bool:
        """Whether the last flush ran out of its budget and no exporter succeeded since."""
        stalled = self.flush_stalled_at
        if stalled is None:
            return False
        return not any((s.last_success or 0.0) > stalled for s in self.exports.signals())

    def export_stats(self) -> dict[str, dict[str, Any]]:
        """Per signal (traces, logs, metrics) with an exporter: items exported (``success``), lost by the
        exporter (``failure``) and dropped before it (``dropped``), the queue's length and capacity,
        ``consecutive_failures``, ``last_error`` (an error class name), ``last_success`` /
        ``last_failure`` (Unix times). The same counts as ``victor_otel_exported_total``. With OTLP spans
        sent by the export process, ``traces`` also holds ``export_process``: its ``pid``, how many
        ``starts`` and whether batches now go ``in_process``.

        >>> import victor_otel
        >>> t = victor_otel.init(service_name="doc", traces_exporter="none")
        >>> t.export_stats()
        {}
        >>> victor_otel.shutdown()
        True
        """
        stats = self.exports.snapshot()
        for exporter in self._exporters:
            if isinstance(exporter.inner, ExportProcess) and exporter.stats.signal in stats:
                stats[exporter.stats.signal]["export_process"] = exporter.inner.state()
        return stats

    def add_producer(self, producer: Producer, *, push_only: bool = False) -> None:
        """Merge ``producer()``'s metrics into every later collection (used by health). ``push_only``: only
        into what the pushing readers send (OTLP, console, in-memory), never into /metrics (used by the
        GenAI conventions' instruments, whose data /metrics shows under victor_llm_* names)."""
        (self.push_producers if push_only else self.producers).append(producer)
        for reader in self.readers:
            if isinstance(reader, _MergesProducers):
                reader._producers = tuple(self.producers)
                if not isinstance(reader, VictorPrometheusReader):
                    reader._producers += tuple(self.push_producers)

    def collect(self) -> MetricsData:
        """Collect everything once through a throw-away in-memory view (for tests and the CLI)."""
        if self.meter_provider is None:
            return merge_metrics(None, [m for p in self.producers for m in p()], self.resource)
        reader = next((r for r in self.readers if isinstance(r, VictorInMemoryReader)), None)
        if reader is not None:
            return reader.get_metrics_data() or MetricsData(resource_metrics=[])
        return merge_metrics(None, [m for p in self.producers for m in p()], self.resource)

    # -- process gauges (observable: read at collection time, never on the hot path) --------------

    def _observe_memory(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(process.sampler().sample().rss_bytes)

    def _observe_cpu(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(process.sampler().sample().cpu_percent)

    def _observe_uptime(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.uptime)


def build_resource(settings: Settings) -> Resource:
    attributes: dict[str, Any] = dict(settings.resource_attributes)
    attributes.update(
        {
            "service.name": settings.service_name,
            "service.version": settings.resolved_version,
            "deployment.environment.name": settings.resolved_environment,
            "service.instance.id": attributes.get("service.instance.id") or str(uuid.uuid4()),
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.language": "python",
            "telemetry.distro.name": "victor_otel",
            "telemetry.distro.version": __version__,
        }
    )
    return Resource.create(attributes)


def _sampler(settings: Settings) -> sampling.Sampler:
    ratio = sampling.TraceIdRatioBased(settings.sampler_arg)
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio),
    }[settings.sampler]


def _otlp(signal: str) -> Any:
    try:
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter
        return _sdk.otlp_log_exporter()
    except ImportError:
        raise VictorOtelConfigError(
            f"OTEL_{signal.upper()}_EXPORTER=otlp needs the OTLP exporter: pip install 'victor-otel[otlp]'"
        ) from None


def _span_exporters(settings: Settings) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in settings.traces_exporter:
        if name == "console":
            out = open(settings.traces_file, "a", buffering=1) if settings.traces_file else sys.stdout  # noqa: SIM115
            exporters.append(_LineSpanExporter(out))
        elif name == "otlp":
            exporters.append(_otlp_span_exporter(settings))
    return exporters


def _otlp_span_exporter(settings: Settings) -> SpanExporter:
    """The OTLP span exporter: in a child process (``offload.ExportProcess``) unless ``export_process`` is off."""
    if not settings.export_process:
        return _otlp_exporter("traces", settings)  # type: ignore[no-any-return]
    try:
        installed = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ImportError:
        installed = False
    if not installed:
        _otlp("traces")  # the same clear error as in-process: the exporter is not installed
    return ExportProcess(
        f"{settings.otlp_endpoint}/v1/traces", settings.export_timeout, lambda: _otlp_exporter("traces", settings)
    )


def spans_destination(settings: Settings, extra: int = 0) -> str:
    """Where spans go with these settings, in one sentence (``init()`` logs it once).

    >>> spans_destination(Settings.from_sources({"traces_exporter": "none"}, {}))  # doctest: +ELLIPSIS
    'spans: none are made (no traces exporter configured; OTEL_TRACES_EXPORTER=otlp sends them ...'
    >>> spans_destination(Settings.from_sources({}, {}))  # doctest: +ELLIPSIS
    'spans: the latest kept in memory for the /debug pages only (no traces exporter configured; ...'
    """
    places = []
    for name in settings.traces_exporter:
        if name == "console":
            places.append(f"appended to {settings.traces_file}" if settings.traces_file
                          else "printed to standard output (OTEL_TRACES_EXPORTER=console)")
        elif name == "otlp":
            places.append(f"sent over OTLP to {settings.otlp_endpoint}/v1/traces")
    if extra:
        places.append(f"handed to the {extra} exporter(s) / processor(s) passed to init()")
    if not places and settings.debug_traces:
        return ("spans: the latest kept in memory for the /debug pages only (no traces exporter configured; "
                "OTEL_TRACES_EXPORTER=otlp sends them to a collector, VICTOR_OTEL_TRACES_FILE=<path> writes them "
                "to a file, OTEL_TRACES_EXPORTER=none makes none)")
    if not places:
        return ("spans: none are made (no traces exporter configured; OTEL_TRACES_EXPORTER=otlp sends them to "
                "a collector, VICTOR_OTEL_TRACES_FILE=<path> writes them to a file, OTEL_TRACES_EXPORTER=console "
                "prints them)")
    return "spans are " + "; ".join(places)


def _otlp_exporter(signal: str, settings: Settings) -> Any:
    """An OTLP/HTTP exporter whose every export, retries included, ends within ``export_timeout``."""
    return _otlp(signal)(endpoint=f"{settings.otlp_endpoint}/v1/{signal}", timeout=settings.export_timeout)


def _rebuild(exporter: Any, signal: str, settings: Settings) -> Callable[[], Any] | None:
    """How a forked child gets its own network exporter (None: the exporter is safe to share)."""
    if isinstance(exporter, ExportProcess):  # the child process is the parent's: the forked one starts its own
        return lambda: _otlp_span_exporter(settings)
    if type(exporter).__module__.startswith("opentelemetry.exporter.otlp"):
        return lambda: _otlp_exporter(signal, settings)
    return None


#: Spans per export batch unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says otherwise (the SDK's default is 512).
#: The batch thread encodes a whole batch holding the GIL: 512 spans stall the event loop for milliseconds
#: at a time, which is what set the p99 of requests under load; 64 spread the same work in short slices
#: (16, 32, 64 and 512 measured side by side: 64 had the lowest p99 and nearly the lowest CPU; see
#: docs/performance.md, "The HTTP edge").
SPAN_BATCH_SIZE = 64
#: Log records per export batch unless OTEL_BLRP_MAX_EXPORT_BATCH_SIZE says otherwise (the SDK's default).
LOG_BATCH_SIZE = 512


def _counted_batch(
    telemetry: Telemetry, signal: str, exporter: Any, counting: Any, processor: Any, batch_variable: str,
    default_batch: int,
) -> Any:
    """``exporter`` wrapped to count what it exports, behind a bounded batch processor whose drops count too."""
    settings = telemetry.settings
    stats = telemetry.exports.signal(signal)
    counted = counting(exporter, stats, _rebuild(exporter, signal, settings))
    telemetry._exporters.append(counted)
    batch = processor(
        counted,
        max_queue_size=settings.max_queue_size,
        max_export_batch_size=_batch_size(settings, batch_variable, default_batch),
    )
    count_drops(batch, stats)
    return batch


def _batch_size(settings: Settings, variable: str, default: int) -> int:
    """The export batch size (its own OTEL_* variable, else ``default``), never above max_queue_size."""
    try:
        batch = int(os.environ.get(variable, "") or default)
    except ValueError:
        batch = default
    return max(1, min(batch, settings.max_queue_size))


def _metric_readers(settings: Settings, telemetry: Telemetry) -> list[MetricReader]:
    readers: list[MetricReader] = []
    for name in settings.metrics_exporter:
        reader: MetricReader
        if name == "prometheus":
            telemetry.prometheus_registry = SerialRegistry()
            reader = VictorPrometheusReader(
                scope_info_enabled=False, registry=telemetry.prometheus_registry
            )
        elif name == "otlp":
            exporter = _otlp_exporter("metrics", settings)
            counted = CountingMetricExporter(
                exporter, telemetry.exports.signal("metrics"), _rebuild(exporter, "metrics", settings)
            )
            telemetry._exporters.append(counted)
            reader = VictorPeriodicReader(counted, export_interval_millis=settings.metric_export_interval)
        elif name == "console":
            counted = CountingMetricExporter(ConsoleMetricExporter(), telemetry.exports.signal("metrics"))
            telemetry._exporters.append(counted)
            reader = VictorPeriodicReader(counted, export_interval_millis=settings.metric_export_interval)
        else:
            continue
        readers.append(reader)
    readers.append(VictorInMemoryReader())  # backs Telemetry.collect() for tests, health and the CLI
    for reader in readers:
        assert isinstance(reader, _MergesProducers)
        reader._producers = tuple(telemetry.producers)
        reader._resource = telemetry.resource
    return readers


# -- the process-wide state ---------------------------------------------------------------------

_lock = threading.RLock()
_current: Telemetry | None = None

_installed: set[int] = set()  # ids of providers we set as the global ones
_atexit_registered = False
_initialised_once = False  # init() has built a Telemetry in this process (a stopped process stays stopped)


def current() -> Telemetry | None:
    """The running :class:`Telemetry`, or ``None`` before ``init()`` / after ``shutdown()``."""
    return _current


def settings_in_force(*, strict: bool = False) -> Settings:
    """The running Telemetry's settings; before ``init()``, those of the environment.

    A bad value in the environment gives the defaults (``init()`` will name it; what reads the
    settings meanwhile keeps working), or raises :class:`VictorOtelConfigError` with ``strict=True``
    (what must fail closed, such as a check of credentials).
    """
    telemetry = _current
    if telemetry is not None:
        return telemetry.settings
    try:
        return Settings.from_sources()
    except VictorOtelConfigError:
        if strict:
            raise
        return Settings()


def initialised_once() -> bool:
    """Whether ``init()`` has built a Telemetry in this process (even one shut down since)."""
    return _initialised_once


def init(
    span_exporters: Sequence[SpanExporter] = (), *, span_processors: Sequence[SpanProcessor] = (), **arguments: Any
) -> Telemetry:
    """Build tracing, metrics and logs; see :func:`victor_otel.init` for the arguments.

    The providers only: :func:`victor_otel.init` is the one wiring point that adds health, the
    multi-process mode, fork and SIGTERM handling and the standalone metrics server around them.

    ``span_exporters`` are added with a synchronous processor (tests use an in-memory exporter); they
    are not settings, so they take no part in the idempotence check. ``span_processors`` are added as
    they are (the benchmarks use a ``BatchSpanProcessor`` to a discarding exporter); like
    ``span_exporters`` they switch tracing on and are not settings.
    """
    global _current, _atexit_registered, _initialised_once
    settings = Settings.from_sources(arguments)
    with _lock:
        if _current is not None and _current.lifecycle in (Lifecycle.STARTING, Lifecycle.READY):
            if _current.settings == settings:
                return _current
            raise VictorOtelInitError(
                "victor_otel is already initialised with other settings ("
                + "; ".join(_current.settings.differences(settings))
                + "). Call victor_otel.shutdown() first, or pass the same settings."
            )
        registry = get_registry()
        if (registry.limit, registry.window_seconds) != (settings.cardinality_limit, settings.window_seconds):
            registry.configure(settings.cardinality_limit, settings.window_seconds)
        telemetry = Telemetry(settings, registry)
        if not settings.disabled:
            check_sdk_environment()  # a bad OTEL_* variable the SDK reads: our error, not the SDK's crash
            _build_traces(telemetry, span_exporters, span_processors)
            if settings.debug_pages_enabled and telemetry._owned_tracer_provider:
                _record_for_debug_pages(telemetry)
            _build_metrics(telemetry)
            _build_logs(telemetry)
            install_exit_handler()  # SIGTERM without a handler: flush, then die of it as before
        telemetry.lifecycle = Lifecycle.READY
        _current = telemetry
        _initialised_once = True
        _set_tracer(telemetry.tracer)
        if not settings.disabled:
            _set_propagator()
        if not _atexit_registered:
            atexit.register(_shutdown_at_exit)
            _atexit_registered = True
        return telemetry


def _record_for_debug_pages(telemetry: Telemetry) -> None:
    """Keep recent traces and their log records in bounded memory for the /debug pages."""
    from victor_otel.tracebuffer import TraceBuffer

    buffer = TraceBuffer()
    telemetry.tracer_provider.add_span_processor(buffer)  # shut down with the provider
    buffer.install_log_capture()
    telemetry.trace_buffer = buffer


def _set_propagator() -> None:
    """tracecontext + baggage globally, so request IDs travel beside traceparent; OTEL_PROPAGATORS wins."""
    if os.environ.get("OTEL_PROPAGATORS", "").strip():
        return
    propagate.set_global_textmap(PROPAGATOR)


def _set_tracer(tracer: trace.Tracer | None) -> None:
    decorators._runtime.tracer = tracer


def _build_traces(
    telemetry: Telemetry, extra: Sequence[SpanExporter], processors: Sequence[SpanProcessor] = ()
) -> None:
    settings = telemetry.settings
    existing = trace.get_tracer_provider()
    foreign = not isinstance(existing, trace.ProxyTracerProvider) and id(existing) not in _installed
    if foreign:
        # The host application owns tracing: use its provider (and its exporters) as it is.
        _logger.info("victor_otel: reusing the TracerProvider the application installed (%r)", existing)
        telemetry.tracer_provider = existing
    elif settings.traces_exporter == ("none",) and not extra and not processors and not settings.debug_traces:
        _logger.info("victor_otel: %s", spans_destination(settings, 0))
        return  # tracing off: the decorators create no span at all
    else:
        _logger.info("victor_otel: %s", spans_destination(settings, len(extra) + len(processors)))
        provider = TracerProvider(
            resource=telemetry.resource, sampler=_sampler(settings), shutdown_on_exit=False
        )
        for exporter in _span_exporters(settings):
            provider.add_span_processor(_counted_batch(
                telemetry, "traces", exporter, CountingSpanExporter, BatchSpanProcessor,
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", SPAN_BATCH_SIZE,
            ))
        for exporter in extra:
            counted = CountingSpanExporter(exporter, telemetry.exports.signal("traces"))
            provider.add_span_processor(SimpleSpanProcessor(counted))
        for processor in processors:
            provider.add_span_processor(processor)
        telemetry.tracer_provider = provider
        telemetry._owned_tracer_provider = True
        if isinstance(existing, trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
            _installed.add(id(provider))
    telemetry.tracer = telemetry.tracer_provider.get_tracer("victor_otel", __version__)


#: The labels the HTTP server metrics keep (instrument_app's FastAPI / ASGI instrumentation). The others
#: (http.host, http.server_name, net.host.name, net.host.port) come from the client's Host header: a
#: client sending random hosts would create a series per request.
BOUNDED_HTTP_ATTRIBUTES = frozenset({
    "http.method", "http.scheme", "http.status_code", "http.flavor", "http.target", "http.route",
    "http.request.method", "http.response.status_code", "network.protocol.version", "url.scheme", "error.type",
})


def _bounded_views() -> list[View]:
    return [View(instrument_name="http.server.*", attribute_keys=set(BOUNDED_HTTP_ATTRIBUTES))]


def _build_metrics(telemetry: Telemetry) -> None:
    settings = telemetry.settings
    readers = _metric_readers(settings, telemetry)
    existing = metrics.get_meter_provider()
    proxy = type(existing).__name__ == "_ProxyMeterProvider"
    if not proxy and id(existing) not in _installed:
        if not isinstance(existing, MeterProvider):
            raise VictorOtelInitError(
                f"the application installed a MeterProvider victor_otel cannot add readers to ({existing!r}); "
                "install an opentelemetry-sdk MeterProvider, or let victor_otel.init() install one"
            )
        _logger.info("victor_otel: adding our metric readers to the application's MeterProvider")
        for reader in readers:
            existing.add_metric_reader(reader)
        telemetry.meter_provider = existing
    else:
        provider = MeterProvider(
            resource=telemetry.resource, metric_readers=readers, shutdown_on_exit=False, views=_bounded_views()
        )
        telemetry.meter_provider = provider
        telemetry._owned_meter_provider = True
        if proxy:
            metrics.set_meter_provider(provider)
            _installed.add(id(provider))
    telemetry.readers = readers
    meter = telemetry.meter_provider.get_meter("victor_otel", __version__)
    for spec, callback in (
        (contract.MEMORY, telemetry._observe_memory),
        (contract.CPU, telemetry._observe_cpu),
        (contract.UPTIME, telemetry._observe_uptime),
    ):
        meter.create_observable_gauge(spec.otel_name, [callback], unit=spec.unit, description=spec.description)


def _build_logs(telemetry: Telemetry) -> None:
    settings = telemetry.settings
    if settings.logs_exporter == ("none",):
        return
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter

    provider = LoggerProvider(resource=telemetry.resource, shutdown_on_exit=False)
    for name in settings.logs_exporter:
        exporter = _otlp_exporter("logs", settings) if name == "otlp" else ConsoleLogRecordExporter()
        provider.add_log_record_processor(_counted_batch(
            telemetry, "logs", exporter, CountingLogExporter, BatchLogRecordProcessor,
            "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", LOG_BATCH_SIZE,
        ))
    telemetry.logger_provider = provider


def shutdown(timeout: float | None = None) -> bool:
    """Drain, flush and stop everything ``init()`` started, within ``timeout`` seconds.

    Readiness turns to draining first. Returns ``False`` when flushing did not finish in time: the rest
    is abandoned rather than blocking the application's exit, and counted (queued items as ``dropped``,
    batches in flight as ``failure``), so that ``export_stats()`` still adds up. One budget for the whole
    exit: after a flush that ran out of its budget (the app's lifespan end against a hanging collector)
    with nothing exported since, shutdown does not wait for the same exporters again.
    """
    global _current
    with _lock:
        telemetry = _current
        if telemetry is None:
            return True
        telemetry.lifecycle = Lifecycle.DRAINING
        budget = telemetry.settings.shutdown_timeout if timeout is None else timeout
        if timeout is None and telemetry.stalled_since_last_flush():
            _logger.warning(
                "victor_otel: the last flush ran out of its budget and nothing was exported since; shutdown "
                "does not wait for the exporters again (one shutdown_timeout for the whole exit)"
            )
            budget = 0.0
        abandoned = threading.Event()

        def stop() -> None:
            deadline_ms = max(int(budget * 1000), 100)  # local readers need a moment even with no budget
            try:
                if telemetry.multiprocess is not None:
                    telemetry.multiprocess.close()  # the last snapshot: this worker's counts outlive it
                if telemetry.metrics_server is not None:
                    telemetry.metrics_server.close()
                # shutdown() alone, not force_flush() first: a batch processor's shutdown refuses new items,
                # then exports what it holds; its force_flush exports until its queue is empty, which a
                # process still busy making spans (SIGTERM arrives while it works) never lets happen.
                if telemetry._owned_tracer_provider:
                    telemetry.tracer_provider.shutdown()
                if telemetry.logger_provider is not None:
                    telemetry.logger_provider.shutdown()
                if telemetry._owned_meter_provider and telemetry.meter_provider is not None:
                    telemetry.meter_provider.shutdown(timeout_millis=deadline_ms)
                elif telemetry.meter_provider is not None:
                    for reader in telemetry.readers:
                        telemetry.meter_provider.remove_metric_reader(reader)
                        reader.shutdown()
            except Exception:
                if abandoned.is_set():  # the exporters were stopped under it: expected, not news
                    _logger.debug("victor_otel: shutting down after the budget ran out", exc_info=True)
                else:
                    _logger.exception("victor_otel: error while shutting down")

        finished = run_within(budget, "victor-otel-shutdown", stop)
        if not finished:
            _logger.warning("victor_otel: shutdown did not finish within %.1f s; abandoning the flush", budget)
            abandoned.set()
            abandon(telemetry._exporters, telemetry.exports)
        telemetry.lifecycle = Lifecycle.STOPPED
        _current = None
        _set_tracer(None)
        return finished


def run_within(budget: float, name: str, work: Callable[[], None]) -> bool:
    """Run ``work`` in a daemon thread and wait for it at most ``budget`` seconds; ``False`` if it is still
    running then (it is left to finish, or not, on its own: an exporter stuck on a dead collector must
    not hold the application's exit). Every flush and shutdown goes through it."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    return done.wait(budget)


def flush(timeout: float | None = None) -> bool:
    """Export what is buffered (spans, logs, metrics, the multi-process snapshot) within ``timeout``
    seconds (default ``shutdown_timeout``), without stopping anything. ``False`` if it ran out of time."""
    telemetry = _current
    if telemetry is None:
        return True
    budget = telemetry.settings.shutdown_timeout if timeout is None else timeout

    def run() -> None:
        millis = int(budget * 1000)
        try:
            if telemetry.multiprocess is not None:
                telemetry.multiprocess.write()
            for provider in (telemetry.tracer_provider if telemetry._owned_tracer_provider else None,
                             telemetry.logger_provider, telemetry.meter_provider):
                if provider is not None:
                    provider.force_flush(millis)
        except Exception:
            _logger.exception("victor_otel: flushing failed")

    started = time.time()
    finished = run_within(budget, "victor-otel-flush", run)
    telemetry.flush_stalled_at = None if finished else started  # shutdown() then spends no second budget
    return finished


# -- the process around the telemetry: SIGTERM and fork -----------------------------------------------


def start_draining() -> None:
    """Readiness turns 503 (``Lifecycle.DRAINING``): the first step of every shutdown path."""
    telemetry = _current
    if telemetry is not None and telemetry.lifecycle in (Lifecycle.STARTING, Lifecycle.READY):
        telemetry.lifecycle = Lifecycle.DRAINING


_warned_off_main_thread = False


def install_exit_handler() -> bool:
    """When SIGTERM would kill the process outright (no handler), flush first, then die of it as before.

    Called by ``init()``; a handler the application or its server installed is left alone. The handler
    itself only hands over to a thread: it runs in the main thread between two bytecodes, maybe inside a
    lock the flush needs (a decorated call's series, the registry), so it must never wait. A second
    SIGTERM ends the process at once. Outside the main thread no handler can be installed: that is said
    once, on the ``victor_otel`` logger.
    """
    global _warned_off_main_thread
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    if threading.current_thread() is not threading.main_thread():
        if not _warned_off_main_thread:
            _warned_off_main_thread = True
            _logger.warning(
                "victor_otel: init() ran outside the main thread, where no signal handler can be installed: "
                "SIGTERM will end this process without flushing spans and logs. Call victor_otel.init() "
                "from the main thread, or call victor_otel.shutdown() from your own SIGTERM handler."
            )
        return False

    def flush_then_die(signum: int, frame: FrameType | None) -> None:
        start_draining()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        threading.Thread(target=_shutdown_then_die, name="victor-otel-sigterm").start()

    signal.signal(signal.SIGTERM, flush_then_die)
    return True


def _shutdown_then_die() -> None:
    try:
        shutdown()
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # the default action now: the exit a supervisor expects


#: The metric pipeline's locks held across a fork (taken in this order, released in the reverse one).
_held_at_fork: list[Any] = []


def _before_fork() -> None:
    """Hold the metric pipeline's locks while forking, so that nothing is half-way through in the child.

    A periodic reader (or a scrape) collecting in another thread at the moment of the fork would leave the
    child with the SDK's collection lock (and the storage locks under it) taken for ever, and a push in
    progress holds the reader's export lock while our producers (registry, health...) take their own locks:
    the child's first scrape or push would hang (seen with ``gunicorn --preload`` and a 200 ms OTLP
    interval). Bounded: a push stuck on a hanging collector delays a fork by at most
    :data:`victor_otel.forking.FORK_WAIT` seconds, and is then forked through (the child gets new export
    locks anyway).
    """
    telemetry = _current
    if telemetry is None:
        return
    deadline = time.monotonic() + forking.FORK_WAIT
    for lock in _sdk.fork_locks(telemetry.meter_provider, telemetry.readers):
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _held_at_fork.append(lock)


def _release_held() -> None:
    while _held_at_fork:
        _held_at_fork.pop().release()


def _after_fork_in_child() -> None:
    """A forked child (``gunicorn --preload``) makes the telemetry it inherited its own: counts from zero,
    a ``service.instance.id`` of its own, its own OTLP connections, new locks, process gauges on its pid."""
    global _lock
    _release_held()  # taken by the forking thread, which is this child's only thread
    _lock = threading.RLock()  # another thread may have held it (init() / shutdown()) at the fork
    telemetry = _current
    if telemetry is None:
        return
    telemetry._started_monotonic = time.monotonic()
    telemetry.started_at = time.time()
    telemetry.exports.reset_after_fork()
    reinit_exporting_after_fork()
    telemetry.resource = _sdk.child_resource(telemetry.resource)
    for reader in telemetry.readers:
        if isinstance(reader, _MergesProducers):
            reader._resource = telemetry.resource
        _sdk.renew_reader_after_fork(reader)
    for counted in telemetry._exporters:
        counted.reinit_after_fork()
    if telemetry.prometheus_registry is not None:
        telemetry.prometheus_registry.renew_lock()
    # The standalone server's thread lives in the parent: the child must not try to stop it.
    telemetry.metrics_server = None
    if telemetry.multiprocess is not None:
        telemetry.multiprocess.reinit_after_fork()


forking.on_fork(before=_before_fork, after_in_parent=_release_held, after_in_child=_after_fork_in_child)


def _shutdown_at_exit() -> None:
    if _current is not None:
        shutdown()
