"""The two formatters: JSON for aggregators, coloured text for development."""

from __future__ import annotations

import json
import logging
import logging.handlers
from typing import Any

from victor_otel.logs.records import CORE_FIELDS, _json_default, _sanitize, dumps, prepare

# -- formatters ---------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: the fields of :data:`CORE_FIELDS`, ``duration_ms``, extras, ``exception``.

    ``timestamp`` is RFC 3339 in UTC with milliseconds (``2025-01-31T12:00:00.123Z``); ``level`` is
    the Python level name. Output is ASCII (other characters are ``\\u`` escapes), so no value can break
    a line or the encoding of the file.
    """

    def format(self, record: logging.LogRecord) -> str:
        return dumps(prepare(record))


_COLORS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_RESET = "\x1b[0m"
_TEXT_FIELDS = ("duration_ms", "request_id", "trace_id", "span_id")
_TEXT_SKIP = frozenset((*CORE_FIELDS, "duration_ms", "exception", "stack_info"))


def _printable(text: str) -> str:
    """``text`` on one line: control and other invisible characters escaped (``\\n``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _text_value(value: Any) -> str:
    if type(value) is str and value and value.isprintable() and not any(c in value for c in ' "='):
        return value
    return _printable(json.dumps(_sanitize(value), ensure_ascii=False, default=_json_default))


class TextFormatter(logging.Formatter):
    """One readable line per record for development; a traceback follows on the next lines.

    ``2025-01-31T12:00:00.123Z INFO     [ChatCoordinator] Processing request user_id=u-1 request_id=...``

    ``color``: colour the level (``None``: never; :func:`color_enabled` tells when a stream deserves it).
    """

    def __init__(self, color: bool | None = None) -> None:
        super().__init__()
        self.color = bool(color)

    def format(self, record: logging.LogRecord) -> str:
        data = prepare(record)
        level = data["level"]
        shown_level = f"{level:<8}"
        if self.color:
            shown_level = f"{_COLORS.get(level, '')}{shown_level}{_RESET}"
        parts = [f"{data['timestamp']} {shown_level} [{_printable(data['coordinator'] or data['logger'])}]"]
        parts.append(_printable(data["message"]))
        for key in _TEXT_FIELDS:
            if data.get(key) is not None:
                parts.append(f"{key}={_text_value(data[key])}")
        for key, value in data.items():
            if key not in _TEXT_SKIP:
                parts.append(f"{_printable(key)}={_text_value(value)}")
        line = " ".join(parts)
        exception = data.get("exception")
        if exception is not None:
            stack = exception["stack_trace"] or f"{exception['type']}: {exception['message']}"
            line += "\n" + "\n".join("    " + _printable(part) for part in stack.split("\n"))
        if "stack_info" in data:
            line += "\n" + "\n".join("    " + _printable(part) for part in data["stack_info"].split("\n"))
        return line


# -- the OpenTelemetry log bridge --------------------------------------------------------------------
