"""Structured logs correlated with traces: JSON and text formatters, redaction, set-up, the OTel log bridge.

>>> import io, json
>>> from victor_otel import setup_coordinator_logging, get_coordinator_logger, teardown_coordinator_logging
>>> out = io.StringIO()
>>> _ = setup_coordinator_logging(level="INFO", format_type="json", stream=out)
>>> get_coordinator_logger("ChatCoordinator").info(
...     "Processing request", extra={"user_id": "u-1", "api_key": "sk-abcdefghijklmnopqrstuv"})
>>> record = json.loads(out.getvalue())
>>> record["level"], record["coordinator"], record["message"], record["user_id"], record["api_key"]
('INFO', 'ChatCoordinator', 'Processing request', 'u-1', '[REDACTED]')
>>> teardown_coordinator_logging()

One JSON object per line, with the fields of :data:`CORE_FIELDS` first (``request_id`` from the baggage of
the current context, ``trace_id`` / ``span_id`` from the current span, ``null`` when absent), then
``duration_ms`` where timed, every ``extra=`` field at top level, and ``exception`` last. Everything is
redacted (:class:`Redactor`) before it is written or exported.

The package: :mod:`.records` (what a record carries), :mod:`.formatters`, :mod:`.bridge` (the OTel log
bridge), :mod:`.setup` (set-up, teardown and the execution records).
"""

from __future__ import annotations

from victor_otel.logs.bridge import OTelBridgeHandler
from victor_otel.logs.formatters import JsonFormatter, TextFormatter
from victor_otel.logs.records import COORDINATOR_LOGGER, CORE_FIELDS, dumps, prepare
from victor_otel.logs.setup import get_coordinator_logger, setup_coordinator_logging, teardown_coordinator_logging
from victor_otel.redaction import REDACTED, Redactor, get_redactor, redact
from victor_otel.terminal import color_enabled

__all__ = [
    "COORDINATOR_LOGGER",
    "CORE_FIELDS",
    "REDACTED",
    "JsonFormatter",
    "OTelBridgeHandler",
    "Redactor",
    "TextFormatter",
    "color_enabled",
    "dumps",
    "get_coordinator_logger",
    "get_redactor",
    "prepare",
    "redact",
    "setup_coordinator_logging",
    "teardown_coordinator_logging",
]
