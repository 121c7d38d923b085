"""A pytest plugin for applications instrumented with victor_otel: the ``capotel`` fixture.

Installed with the package and registered through the ``pytest11`` entry point, so any project that has
``victor-otel`` installed can write::

    def test_chat_is_traced_and_counted(capotel):
        ChatCoordinator().chat("hello")

        span = capotel.span("ChatCoordinator.chat")
        assert span.attributes["victor.outcome"] == "success"
        assert capotel.metric("victor_coordinator_executions_total", coordinator="ChatCoordinator") == 1
        assert capotel.logs(level="ERROR") == []

For the duration of one test, ``capotel`` owns victor_otel: it starts from a fresh state (any earlier
``init()`` shut down, the metric registry emptied, the ``OTEL_*`` / ``VICTOR_OTEL_*`` variables of the
settings ignored), initialises with spans captured in memory, metrics kept in-process behind
:func:`victor_otel.render` and log records captured from the ``logging`` module, and undoes all of it
afterwards. Nothing is exported and no socket is opened. ``init()`` calls made by the code under test
return the capture (their arguments are validated and recorded in :attr:`CapturedTelemetry.init_calls`)
and ``shutdown()`` calls are no-ops, so application start-up code runs unchanged.

Settings for one test: ``@pytest.mark.capotel(service_name="chat", window_seconds=10)``. Disable the
plugin with ``-p no:victor_otel``. What the test itself configures stays its own business: health
checks it adds (``remove_health_check``) and a ``setup_coordinator_logging()`` it calls
(``teardown_coordinator_logging``).
"""

from __future__ import annotations

import difflib
import logging
import signal
import threading
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import victor_otel
from victor_otel import bootstrap, instruments
from victor_otel.config import OPTIONS, Settings
from victor_otel.registry import get_registry

__all__ = ["CapturedTelemetry", "LogEntry", "capotel"]

#: Settings the capture decides itself: what leaves the process, and whether anything is recorded.
FIXED_SETTINGS = ("disabled", "traces_exporter", "metrics_exporter", "logs_exporter", "metrics_port")
#: Loggers the capture listens to besides the root logger (coordinator loggers may not propagate).
LOGGERS = ("victor_otel", "victor.coordinators")
#: The overflow series' extra label as the Prometheus text shows it.
_OVERFLOW_LABEL = instruments.OVERFLOW_ATTRIBUTE.replace(".", "_")
_STANDARD_RECORD_ATTRIBUTES = frozenset(
    (*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime", "taskName", "_victor_otel")
)


@dataclass(frozen=True)
class LogEntry:
    """One captured log record, with the fields victor_otel's JSON formatter writes for it.

    ``fields`` holds ``level``, ``logger``, ``message``, ``coordinator``, ``request_id``, ``trace_id``,
    ``span_id`` (hexadecimal, as in the JSON logs; ``None`` outside a span), ``duration_ms`` where timed
    and every ``extra=`` field, all redacted as they would be written.
    """

    record: logging.LogRecord
    fields: Mapping[str, Any]

    @property
    def level(self) -> str:
        return self.record.levelname

    @property
    def logger(self) -> str:
        return self.record.name

    @property
    def message(self) -> str:
        return str(self.fields.get("message", ""))

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record as a flat dict, computed in the logging thread (trace context is read from it)."""
    try:
        from victor_otel import logs
    except ImportError:  # pragma: no cover - logs.py is part of the package; this keeps the plugin independent
        pass
    else:
        return dict(logs.prepare(record))
    span_context = trace.get_current_span().get_span_context()
    fields: dict[str, Any] = {
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "trace_id": format(span_context.trace_id, "032x") if span_context.is_valid else None,
        "span_id": format(span_context.span_id, "016x") if span_context.is_valid else None,
    }
    fields.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD_RECORD_ATTRIBUTES)
    return fields


class _LogCapture(logging.Handler):
    """Keeps every record that reaches the root logger or one of :data:`LOGGERS`, once."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.entries: list[LogEntry] = []
        self._seen: set[int] = set()  # ids of kept records (kept alive by ``entries``)

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) in self._seen:
            return  # the same record reached us through two loggers
        try:
            fields = _fields_of(record)
        except Exception:  # a broken record must still be visible to the test
            fields = {"level": record.levelname, "logger": record.name, "message": str(record.msg)}
        self._seen.add(id(record))
        self.entries.append(LogEntry(record, fields))

    def clear(self) -> None:
        self.entries.clear()
        self._seen.clear()


class _Forwarder(SpanProcessor):
    """Sends spans of a provider victor_otel did not build for this test to the active capture.

    OpenTelemetry lets a process set its global TracerProvider once; tracers taken from the global API
    (your own ``trace.get_tracer(__name__)``, auto-instrumentations) stay bound to it across tests. One
    forwarder per such provider routes their spans to whichever capture is active, and does nothing
    outside a ``capotel`` test.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        capture = _active
        if capture is not None:
            capture.exporter.export([span])

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


_active: CapturedTelemetry | None = None
_forwarded: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


def _forward_from(provider: object) -> None:
    if provider in _forwarded:
        return
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(_Forwarder())
        _forwarded.add(provider)
    elif not isinstance(provider, trace.ProxyTracerProvider) and not isinstance(provider, trace.NoOpTracerProvider):
        warnings.warn(
            f"capotel cannot capture spans of {provider!r}: it is not an opentelemetry-sdk TracerProvider",
            stacklevel=3,
        )


def _check_labels(name: str, spec: instruments.MetricSpec, wanted: Mapping[str, object]) -> None:
    """Fail on a label the family never has: the sum would be 0 whatever the code did."""
    __tracebackhide__ = True
    allowed = {*spec.labels, _OVERFLOW_LABEL, *(("le",) if name.endswith("_bucket") else ())}
    unknown = sorted(set(wanted) - allowed)
    if unknown:
        having = [
            other.prometheus_name for other in instruments.CONTRACT
            if other.kind is spec.kind and set(unknown) <= set(other.labels)
        ]
        raise AssertionError(
            f"{name} has no label {', '.join(map(repr, unknown))}; its labels: {', '.join(spec.labels) or 'none'}"
            + (f" ({', '.join(unknown)} is a label of {', '.join(having)})" if having else "")
        )


def _labels_match(labels: Mapping[str, str], wanted: Mapping[str, object]) -> bool:
    return all(labels.get(key) == str(value) for key, value in wanted.items())


def _attributes_match(attributes: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    attributes = attributes or {}
    return all(key in attributes and attributes[key] == value for key, value in wanted.items())


@dataclass(repr=False)
class CapturedTelemetry:
    """What the code under test recorded: spans, metrics and logs, with helpers to assert on them."""

    #: The running victor_otel (settings, providers, readers).
    telemetry: bootstrap.Telemetry
    #: Every finished span, in the order they ended.
    exporter: InMemorySpanExporter
    #: Arguments of the ``init()`` calls the code under test made while the capture was active.
    init_calls: list[dict[str, Any]] = field(default_factory=list)
    _logs: _LogCapture = field(default_factory=_LogCapture, repr=False)
    _levels: dict[str, int] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        spans, logs = len(self.exporter.get_finished_spans()), len(self._logs.entries)
        return f"<capotel: {spans} span{'s' * (spans != 1)}, {logs} log record{'s' * (logs != 1)}>"

    # -- spans ------------------------------------------------------------------------------------

    def spans(self, name: str | None = None, attributes: Mapping[str, Any] | None = None) -> list[ReadableSpan]:
        """Finished spans named ``name`` (any name if ``None``) whose attributes include ``attributes``.

        Attribute keys contain dots, hence a mapping: ``capotel.spans(attributes={"victor.outcome": "error"})``.
        """
        wanted = dict(attributes or {})
        return [
            span
            for span in self.exporter.get_finished_spans()
            if (name is None or span.name == name) and _attributes_match(span.attributes, wanted)
        ]

    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> ReadableSpan:
        """The one finished span named ``name`` with these attributes; fails the test otherwise."""
        __tracebackhide__ = True
        found = self.spans(name, attributes)
        if len(found) == 1:
            return found[0]
        condition = f"named {name!r}" + (f" with attributes {dict(attributes)!r}" if attributes else "")
        if not found:
            names = self.span_names()
            hint = difflib.get_close_matches(name, names, n=3)
            raise AssertionError(
                f"no finished span {condition}; captured {len(names)}: {sorted(set(names))!r}"
                + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint else "")
            )
        raise AssertionError(
            f"{len(found)} finished spans {condition}; pass attributes= to pick one, or use capotel.spans()"
        )

    def span_names(self) -> list[str]:
        """Names of every finished span, in the order they ended."""
        return [span.name for span in self.exporter.get_finished_spans()]

    # -- metrics ----------------------------------------------------------------------------------

    def metrics_text(self) -> str:
        """The Prometheus exposition text ``/metrics`` would serve now."""
        from victor_otel.exposition import render

        body, _ = render(telemetry=self.telemetry)
        return body.decode()

    def samples(self, name: str | None = None, /, **labels: object) -> list[Sample]:
        """Samples of ``/metrics`` named ``name`` (a sample name such as ``..._total`` or ``..._bucket``)
        whose labels include ``labels``, parsed with ``prometheus_client.parser``."""
        return [
            sample
            for family in text_string_to_metric_families(self.metrics_text())
            for sample in family.samples
            if (name is None or sample.name == name) and _labels_match(sample.labels, labels)
        ]

    def metric(self, name: str, /, **labels: object) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``, as PromQL's
        ``sum(name{labels})``; ``0.0`` for a known metric with no matching series yet.

        ``capotel.metric("victor_coordinator_errors_total", coordinator="ChatCoordinator")`` counts the
        coordinator's errors over every method; ``capotel.metric("victor_coordinator_errors_by_type_total",
        error_type="TimeoutError")`` counts one exception class. An unknown name, or a label the family
        does not have, fails the test.
        """
        __tracebackhide__ = True
        everything = self.samples()
        contract = instruments.by_prometheus_name()
        known = {sample.name for sample in everything} | set(contract)
        if name not in known:
            hint = difflib.get_close_matches(name, sorted(known), n=3)
            raise AssertionError(
                f"no metric sample named {name!r} in /metrics"
                + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
                + " (Prometheus names: counters end in _total, histograms in _bucket / _sum / _count)"
            )
        spec = contract.get(name)
        if spec is not None:
            _check_labels(name, spec, labels)
        return float(sum(s.value for s in everything if s.name == name and _labels_match(s.labels, labels)))

    # -- logs -------------------------------------------------------------------------------------

    def logs(
        self,
        *,
        level: str | int | None = None,
        logger: str | None = None,
        message: str | None = None,
        **fields: Any,
    ) -> list[LogEntry]:
        """Captured log records, filtered: ``level`` at least this level, ``logger`` this logger or
        one below it, ``message`` contained in the message, and ``fields`` equal to the JSON fields
        (``request_id="abc"``, ``coordinator="ChatCoordinator"``, ``outcome="error"``)."""
        minimum = _levelno(level) if level is not None else None
        found = []
        for entry in self._logs.entries:
            name = entry.record.name
            if minimum is not None and entry.record.levelno < minimum:
                continue
            if logger is not None and name != logger and not name.startswith(logger + "."):
                continue
            if message is not None and message not in entry.message:
                continue
            if any(key not in entry.fields or entry.fields[key] != value for key, value in fields.items()):
                continue
            found.append(entry)
        return found

    def set_log_level(self, level: str | int, logger: str = "") -> None:
        """Let records of ``level`` and above through ``logger`` (root by default) until the test ends."""
        target = logging.getLogger(logger or None)
        self._levels.setdefault(target.name, target.level)
        target.setLevel(_levelno(level))

    # -- all --------------------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget the spans, logs and victor_otel metrics recorded so far (to assert on what follows)."""
        self.exporter.clear()
        self._logs.clear()
        get_registry().reset()


def _levelno(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"level: {level!r} is not a logging level name")
    return number


def _init_arguments(request: pytest.FixtureRequest) -> dict[str, Any]:
    arguments: dict[str, Any] = {"service_name": "test"}
    for marker in reversed(list(request.node.iter_markers("capotel"))):  # closest marker wins
        if marker.args:
            raise pytest.UsageError("@pytest.mark.capotel takes init() arguments by name only")
        arguments.update(marker.kwargs)
    fixed = sorted(set(arguments) & set(FIXED_SETTINGS))
    if fixed:
        raise pytest.UsageError(
            f"@pytest.mark.capotel: {', '.join(fixed)} cannot be set: capotel keeps spans, metrics and logs "
            "in memory and exports nothing"
        )
    return arguments


@pytest.fixture
def capotel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturedTelemetry]:
    """victor_otel initialised for this test with spans, metrics and logs captured in memory."""
    global _active
    if _active is not None:
        raise pytest.UsageError("capotel is already active in this test")
    for option in OPTIONS:  # the test's settings come from the test, not from the shell
        for variable in option.env:
            monkeypatch.delenv(variable, raising=False)
    real_shutdown = bootstrap.shutdown
    real_shutdown()
    get_registry().reset()
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None  # init() may install a handler
    exporter = InMemorySpanExporter()
    telemetry = victor_otel.init(
        span_exporters=[exporter],
        traces_exporter="none",
        metrics_exporter="prometheus",
        logs_exporter="none",
        **_init_arguments(request),
    )
    capture = CapturedTelemetry(telemetry, exporter)
    provider = telemetry.tracer_provider
    own_provider = provider is not None and telemetry._owned_tracer_provider
    if not own_provider:  # the application's own provider: victor_otel reuses it as it is
        _forward_from(provider)
    global_provider = trace.get_tracer_provider()
    if global_provider is not provider:
        _forward_from(global_provider)

    def init_in_test(span_exporters: Sequence[SpanExporter] = (), **arguments: Any) -> bootstrap.Telemetry:
        processors = arguments.pop("span_processors", ())
        Settings.from_sources(arguments)  # a bad value still raises, as it would in production
        capture.init_calls.append(dict(arguments))
        if own_provider:
            for exporter in span_exporters:
                provider.add_span_processor(SimpleSpanProcessor(exporter))
            for processor in processors:
                provider.add_span_processor(processor)
        return telemetry

    def shutdown_in_test(timeout: float | None = None) -> bool:
        return True

    monkeypatch.setattr(bootstrap, "init", init_in_test)
    monkeypatch.setattr(bootstrap, "shutdown", shutdown_in_test)
    handler = capture._logs
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in LOGGERS)]
    for logger in loggers:
        logger.addHandler(handler)
    _active = capture
    try:
        yield capture
    finally:
        _active = None
        for logger in loggers:
            logger.removeHandler(handler)
        for name, level in capture._levels.items():
            logging.getLogger(None if name == "root" else name).setLevel(level)
        real_shutdown()
        get_registry().reset()
        if sigterm is not None and signal.getsignal(signal.SIGTERM) is not sigterm:
            signal.signal(signal.SIGTERM, sigterm)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "capotel(**settings): victor_otel.init() arguments for the capotel fixture of this test "
        "(service_name, window_seconds, cardinality_limit, ...)",
    )
