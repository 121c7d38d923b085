"""The OpenTelemetry log bridge: records through the ``LoggerProvider`` that ``init()`` built."""

from __future__ import annotations

import logging
import logging.handlers
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry._logs import LogRecord, SeverityNumber

from victor_otel import bootstrap
from victor_otel.logs.records import dumps, prepare

# -- the OpenTelemetry log bridge --------------------------------------------------------------------

_BRIDGE_SKIP = frozenset(("timestamp", "level", "logger", "message", "service", "environment", "trace_id", "span_id"))


def _severity(levelno: int) -> SeverityNumber:
    if levelno < logging.DEBUG:
        return SeverityNumber.TRACE
    for threshold, number in (
        (logging.CRITICAL, SeverityNumber.FATAL),
        (logging.ERROR, SeverityNumber.ERROR),
        (logging.WARNING, SeverityNumber.WARN),
        (logging.INFO, SeverityNumber.INFO),
    ):
        if levelno >= threshold:
            return number
    return SeverityNumber.DEBUG


_OTEL_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_NOT_BRIDGED = ("opentelemetry", "victor_otel")


class OTelBridgeHandler(logging.Handler):
    """Sends records through the ``LoggerProvider`` that ``init()`` built (``OTEL_LOGS_EXPORTER``).

    The body is the redacted message; attributes are the record's fields (``coordinator``,
    ``request_id``, ``duration_ms``, the extras, ``exception.*``); trace context comes from the current
    context. Does nothing while no provider exists (before ``init()``, or with the exporter ``none``).
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._provider: Any = None
        self._loggers: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        telemetry = bootstrap.current()
        provider = telemetry.logger_provider if telemetry is not None else None
        if provider is None or record.name.startswith(_NOT_BRIDGED):
            return  # the exporters' own diagnostics must not feed the pipeline that reports them
        try:
            if provider is not self._provider:
                self._provider, self._loggers = provider, {}
            otel_logger = self._loggers.get(record.name)
            if otel_logger is None:
                otel_logger = self._loggers[record.name] = provider.get_logger(record.name)
            data = prepare(record)
            attributes: dict[str, Any] = {}
            for key, value in data.items():
                if key in _BRIDGE_SKIP or value is None:
                    continue
                if key == "exception":
                    attributes["exception.type"] = value["type"]
                    attributes["exception.message"] = value["message"]
                    attributes["exception.stacktrace"] = value["stack_trace"]
                elif type(value) in (str, int, float, bool):
                    attributes[key] = value
                else:
                    attributes[key] = dumps({"v": value})[5:-1]
            otel_logger.emit(
                LogRecord(
                    timestamp=int(record.created * 1e9),
                    observed_timestamp=time.time_ns(),
                    context=otel_context.get_current(),
                    severity_text=_OTEL_SEVERITY_TEXT.get(record.levelname, record.levelname),
                    severity_number=_severity(record.levelno),
                    body=data["message"],
                    attributes=attributes,
                )
            )
        except Exception:
            self.handleError(record)


# -- set-up -------------------------------------------------------------------------------------------
