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
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import itertools
import json
import logging
import logging.handlers
import math
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import IO, Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry._logs import LogRecord, SeverityNumber

from victor_otel import bootstrap, decorators, forking
from victor_otel.context import BAGGAGE_KEY, valid_request_id
from victor_otel.decorators import error_type_of
from victor_otel.errors import VictorOtelConfigError
from victor_otel.redaction import REDACTED, Redactor, get_redactor, names_a_secret, redact, use_redactor

#: Top-level fields of every JSON record, in order; ``duration_ms`` and ``exception`` follow when present.
CORE_FIELDS = (
    "timestamp",
    "level",
    "logger",
    "message",
    "service",
    "environment",
    "coordinator",
    "request_id",
    "trace_id",
    "span_id",
)
#: Parent of every coordinator logger: ``get_coordinator_logger("Chat")`` is ``victor.coordinators.Chat``.
COORDINATOR_LOGGER = "victor.coordinators"
#: A user ``extra=`` field named like a core field is renamed with this prefix (core fields always win).
COLLISION_PREFIX = "extra_"

_PREFIX = COORDINATOR_LOGGER + "."
_RESERVED_NAMES = frozenset((*CORE_FIELDS, "duration_ms", "exception"))
# Attributes every LogRecord has, plus what formatters add; whatever else is in __dict__ came from extra=.
_RECORD_ATTRIBUTES = frozenset(
    (*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime", "taskName", "_victor_otel")
)
_PREPARED = "_victor_otel"  # where the prepared dict is cached on a record (shared by our handlers)
# What a name found in a record's __dict__ is, looked up once per record field: a user's extra= field
# (_PLAIN, or _SECRET when its name says it holds a secret), a LogRecord attribute (_SKIP), or a core
# field (_CORE: a user field by that name fills it or is renamed).
_PLAIN, _SECRET, _SKIP, _CORE = 0, 1, 2, 3
_NAME_KINDS: dict[str, int] = {**dict.fromkeys(_RESERVED_NAMES, _CORE), **dict.fromkeys(_RECORD_ATTRIBUTES, _SKIP)}
_STANDARD_COUNT = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
_MAX_DEPTH = 8
_MAX_DEFAULT_TEXT = 10_000

def _name_kind(key: str) -> int:
    """_SECRET or _PLAIN for a user's field name (remembered: field names repeat)."""
    kind = _SECRET if names_a_secret(key) else _PLAIN
    if len(_NAME_KINDS) < 10_000:  # field names are bounded in sane code; stay bounded anyway
        _NAME_KINDS.setdefault(key, kind)
    return kind


# Below this length a string without "=" or ":" cannot hold a default secret (see redaction.py).
_SHORTEST_TOKEN_SECRET = 15


# -- rendering values JSON cannot hold --------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        return get_redactor().text(bytes(obj[:_MAX_DEFAULT_TEXT]).decode("utf-8", "backslashreplace"))
    if isinstance(obj, enum.Enum):
        return _json_default(obj.value) if isinstance(obj.value, (set, bytes)) else obj.value
    if isinstance(obj, (Decimal, uuid.UUID, PurePath)):
        return str(obj)
    try:
        text = str(obj)
    except Exception:
        return f"<unrepresentable {type(obj).__qualname__}>"
    return get_redactor().text(text[:_MAX_DEFAULT_TEXT])


def _sanitize(value: Any, depth: int = 0, seen: frozenset[int] = frozenset()) -> Any:
    """A copy of ``value`` that JSON can hold: finite numbers, string keys, no cycles, bounded depth."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if depth >= _MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if id(value) in seen:
            return "<circular>"
        seen = seen | {id(value)}
        if isinstance(value, dict):
            return {
                (k if isinstance(k, str) else _safe_str(k)): _sanitize(v, depth + 1, seen) for k, v in value.items()
            }
        return [_sanitize(v, depth + 1, seen) for v in value]
    if isinstance(value, str):
        return str(value)
    try:
        return _sanitize(_json_default(value), depth + 1, seen)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


_encode = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_json_default
).encode
# The C encoder behind json.dumps, built once instead of on every call (it holds no per-call state when
# check_circular is off; redaction copies containers, so no cycle reaches it, and a RecursionError
# falls back to _sanitize anyway).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode: Any = (
    _c_make_encoder(None, _json_default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
    if _c_make_encoder is not None
    else None
)


def dumps(data: Mapping[str, Any]) -> str:
    """One line of JSON for ``data``; values JSON cannot hold (NaN, cycles, odd keys) are rendered safely.

    >>> dumps({"duration_ms": float("nan"), "when": __import__("datetime").date(2025, 1, 31)})
    '{"duration_ms":"NaN","when":"2025-01-31"}'
    """
    try:
        if _c_encode is not None:
            return "".join(_c_encode(data, 0))
        return _encode(data)
    except (ValueError, TypeError, RecursionError):
        return _encode(_sanitize(data))


# -- preparing a record (once, whatever the number of handlers) -------------------------------------


class _Constants:
    """Per-process values every record carries, recomputed only when init() / shutdown() changed them."""

    owner: object = object()
    service = "victor"
    environment = "development"


def _refresh_constants() -> None:
    telemetry = bootstrap.current()
    settings = bootstrap.settings_in_force()
    _Constants.service = settings.service_name
    _Constants.environment = settings.resolved_environment
    _Constants.owner = telemetry


_coordinators: dict[str, str | None] = {}
_UNKNOWN: Any = object()


def _coordinator_of(logger_name: str) -> str | None:
    name = logger_name[len(_PREFIX) :] if logger_name.startswith(_PREFIX) else ""
    if len(_coordinators) < 10_000:
        _coordinators[logger_name] = name or None
    return name or None


# (second, "YYYY-MM-DDTHH:MM:SS") of the last record: one tuple, read and replaced whole, so that threads
# logging across a second boundary never pair one second's prefix with another's.
_ts_cache: tuple[int, str] = (-1, "")
_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))


def _context_key(context: otel_context.Context) -> str | None:
    keys = list(context)
    return keys[0] if len(keys) == 1 else None


# The keys under which the OpenTelemetry API keeps the current span and the baggage in a Context,
# found once by asking the API itself: reading them straight from the context dict costs a fraction
# of trace.get_current_span() + baggage.get_baggage() on every record.
_SPAN_KEY = _context_key(trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context()))
_BAGGAGE_CONTEXT_KEY = _context_key(baggage.set_baggage(BAGGAGE_KEY, "x", otel_context.Context()))
_last_trace: tuple[int, str] = (0, "")
_last_request_id: object = None


def _exception_fields(record: logging.LogRecord) -> dict[str, str] | None:
    exc_info = record.exc_info
    if not exc_info or exc_info[1] is None:
        return None
    exc_type, exc, tb = exc_info
    assert exc_type is not None
    try:
        stack = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
    except Exception:
        stack = ""
    return {
        "type": exc_type.__qualname__,
        "message": get_redactor().text(_safe_str(exc)),
        "stack_trace": get_redactor().text(stack),
    }


def prepare(record: logging.LogRecord) -> dict[str, Any]:
    """The record as the redacted, correlated dict that becomes one JSON line (cached on the record).

    Correlation (``trace_id``, ``span_id``, ``request_id``) is read from the current context, so it
    must run in the thread (or task) that logged: our handlers are synchronous.
    """
    global _last_trace, _last_request_id, _ts_cache
    attributes = record.__dict__
    data: dict[str, Any] | None = attributes.get(_PREPARED)
    if data is not None:
        return data
    redactor = get_redactor()
    text = redactor.text
    msg = record.msg
    message = record.getMessage() if record.args else (msg if type(msg) is str else _safe_str(msg))
    if bootstrap._current is not _Constants.owner:
        _refresh_constants()
    name = record.name
    coordinator = _coordinators.get(name, _UNKNOWN)
    if coordinator is _UNKNOWN:
        coordinator = _coordinator_of(name)

    # Correlation, read straight from the context (see _SPAN_KEY).
    ctx = otel_context.get_current()
    span: Any
    entries: Any
    if _SPAN_KEY is not None and _BAGGAGE_CONTEXT_KEY is not None:
        span = ctx.get(_SPAN_KEY)
        entries = ctx.get(_BAGGAGE_CONTEXT_KEY)
        request_id = entries.get(BAGGAGE_KEY) if entries else None
    else:
        span = trace.get_current_span(ctx)
        request_id = baggage.get_baggage(BAGGAGE_KEY, ctx)
    trace_id = span_id = None
    if span is not None:
        span_context = span.get_span_context()
        number = span_context.trace_id
        if number and span_context.span_id:
            last = _last_trace
            if number == last[0]:
                trace_id = last[1]
            else:
                trace_id = format(number, "032x")
                _last_trace = (number, trace_id)
            span_id = format(span_context.span_id, "016x")
    if request_id is not None and request_id is not _last_request_id:
        request_id = valid_request_id(request_id)  # whatever put it in baggage, log only a sane token
        if request_id is not None:
            _last_request_id = request_id

    second = int(record.created)
    cached = _ts_cache
    if second != cached[0]:  # a new second: format its prefix once
        cached = _ts_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    data = {
        "timestamp": cached[1] + _MILLISECONDS[int(record.msecs) % 1000],
        "level": record.levelname,
        "logger": name,
        "message": text(message),
        "service": _Constants.service,
        "environment": _Constants.environment,
        "coordinator": coordinator,
        "request_id": request_id,
        "trace_id": trace_id,
        "span_id": span_id,
    }
    if len(attributes) > _STANDARD_COUNT:
        # extra= fields follow the attributes every LogRecord has; a few added by formatters are skipped.
        name_kinds = _NAME_KINDS
        plain = redactor._defaults and not redactor._extended
        for key, value in itertools.islice(attributes.items(), _STANDARD_COUNT, None):
            name_kind = name_kinds.get(key)
            if name_kind is None:
                name_kind = _name_kind(key)
            if name_kind:
                if name_kind == _SKIP:
                    continue
                if name_kind == _CORE:
                    if _fills_core_field(data, key, value):
                        continue
                    key = COLLISION_PREFIX + key
                    if key in attributes:
                        continue  # the user's own extra_<key> wins over a renamed one
                    name_kind = _name_kind(key)
                if name_kind == _SECRET:
                    data[key] = REDACTED
                    continue
            kind = type(value)
            if kind is str:
                # Short values (IDs, model and tool names) without "=" or ":" cannot hold a default
                # secret: skip the call when no user rule applies either.
                plain_short = plain and len(value) < _SHORTEST_TOKEN_SECRET and "=" not in value and ":" not in value
                data[key] = value if plain_short else text(value)
            elif kind is int or kind is float or kind is bool or value is None:
                data[key] = value
            else:
                data[key] = redactor.value(value)
    if record.exc_info:
        exception = _exception_fields(record)
        if exception is not None:
            data["exception"] = exception
    if record.stack_info:
        data["stack_info"] = text(record.stack_info)
    attributes[_PREPARED] = data
    return data


def _fills_core_field(data: dict[str, Any], key: str, value: Any) -> bool:
    """Let a user field fill a core field that is empty (the seed's ``extra={"request_id": ...}``)."""
    if key == "duration_ms":
        if "duration_ms" not in data and type(value) in (int, float) and math.isfinite(value) and value >= 0:
            data["duration_ms"] = value
            return True
    elif key == "request_id":
        if data["request_id"] is None and valid_request_id(value) is not None:
            data["request_id"] = value
            return True
    elif (
        key == "coordinator"
        and data["coordinator"] is None
        and type(value) is str
        and 0 < len(value) <= 128
        and value.isprintable()
    ):
        data["coordinator"] = get_redactor().text(value)
        return True
    return False


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


def color_enabled(stream: object) -> bool:
    """Whether to colour text logs for ``stream``: a terminal, and ``NO_COLOR`` unset or empty."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):
        return False


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


def get_coordinator_logger(name: str) -> logging.Logger:
    """The logger of coordinator ``name`` (``victor.coordinators.<name>``): its records carry ``coordinator``.

    >>> get_coordinator_logger("ChatCoordinator").name
    'victor.coordinators.ChatCoordinator'
    """
    return logging.getLogger(_PREFIX + decorators._check_name("coordinator", name))


def _level(setting: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        number = logging.getLevelName(value.strip().upper())
        if isinstance(number, int):
            return number
    raise VictorOtelConfigError(
        f"{setting}: {value!r} is not valid; accepted: DEBUG | INFO | WARNING | ERROR | CRITICAL or a number"
    )


class _Setup:
    """What the last ``setup_coordinator_logging`` changed, so that the next one (or teardown) undoes it."""

    def __init__(self) -> None:
        self.handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self.saved: dict[str, tuple[int, bool]] = {}  # logger name -> (level, propagate) before us
        self.previous_hook: Any = None
        self.hooked = False


_setup = _Setup()
_success_level = logging.DEBUG  # the level of a successful execution's record
_slow_seconds = 1.0  # from this duration on, a successful execution is logged at WARNING (inf: never)
_execution_loggers: dict[str, logging.Logger] = {}
_OUTCOME_WORDS = {"success": "succeeded", "error": "failed", "cancelled": "was cancelled"}


def _execution_logger(site: Any) -> tuple[logging.Logger, bool]:
    """The logger of ``site``'s coordinator, and whether the record must name the coordinator itself.

    A ``logging.Logger`` lives as long as the process: one is made only for a coordinator the registry
    admitted under the cardinality cap. Past the cap, records go through the parent logger
    (``victor.coordinators``) with the name as a field, so that unbounded names cost no memory.
    """
    name = site.coordinator
    if name in site.registry.coordinators:
        logger = _execution_loggers[name] = logging.getLogger(_PREFIX + name)
        return logger, False
    return logging.getLogger(COORDINATOR_LOGGER), True


def _log_execution(site: Any, duration: float, exc: BaseException | None) -> None:
    """The decorators' execution hook: one record per execution, at almost no cost when disabled."""
    logger = _execution_loggers.get(site.coordinator)
    named = False
    if logger is None:
        logger, named = _execution_logger(site)
    if exc is None or not isinstance(exc, Exception):
        level = _success_level if duration < _slow_seconds else logging.WARNING
    else:
        level = logging.ERROR
    if not logger.isEnabledFor(level):
        return
    outcome = "success" if exc is None else ("error" if isinstance(exc, Exception) else "cancelled")
    duration_ms = round(duration * 1000.0, 3)
    extra: dict[str, Any] = {"method": site.method, "outcome": outcome, "duration_ms": duration_ms}
    if named:
        extra["coordinator"] = site.coordinator
    exc_info = None
    if outcome == "error":
        assert exc is not None
        extra["error_type"] = error_type_of(exc)
        exc_info = (type(exc), exc, exc.__traceback__)
    record = logger.makeRecord(
        logger.name,
        level,
        "(victor_otel)",
        0,
        "%s.%s %s in %.1f ms",
        (site.coordinator, site.method, _OUTCOME_WORDS[outcome], duration_ms),
        exc_info,
        site.method,
        extra,
    )
    logger.handle(record)


def _chained(previous: Callable[[Any, float, BaseException | None], None]) -> Callable[..., None]:
    def hook(site: Any, duration: float, exc: BaseException | None) -> None:
        previous(site, duration, exc)
        _log_execution(site, duration, exc)

    hook.__victor_otel_logs__ = True  # type: ignore[attr-defined]
    return hook


def setup_coordinator_logging(
    level: str | int = "INFO",
    format_type: str = "json",
    output_file: str | os.PathLike[str] | None = None,
    *,
    levels: Mapping[str, str | int] | None = None,
    stream: IO[str] | None = None,
    root: bool = False,
    propagate: bool = False,
    success_level: str | int = "DEBUG",
    slow_threshold_ms: float | None = 1000.0,
    redact_patterns: Iterable[str | re.Pattern[str]] = (),
    redact_callback: Callable[[str], str] | None = None,
    hash_emails: bool = False,
    hash_salt: str = "",
    color: bool | None = None,
) -> logging.Logger:
    """Configure structured, redacted, trace-correlated logs for coordinators; returns the logger set up.

    - ``level``: level of every coordinator logger; ``levels={"ChatCoordinator": "DEBUG"}`` per coordinator.
    - ``format_type``: ``json`` (one object per line) or ``text`` (one readable line; coloured only on a
      terminal and when ``NO_COLOR`` is unset; ``color`` forces it on or off).
    - ``output_file``: append there (parent directories created) through a ``WatchedFileHandler``, which
      reopens the file after logrotate moves it; otherwise write to ``stream`` (default: standard error).
    - ``root``: also format every other logger's records (handlers go on the root logger, whose level
      becomes ``level``). Without it the root logger is left alone and coordinator records do not
      propagate to it (``propagate=True`` lets them).
    - Executions of decorated coordinators are logged once each: success at ``success_level``
      (default DEBUG), slower than ``slow_threshold_ms`` at WARNING, failure at ERROR with the stack trace;
      fields ``duration_ms``, ``method``, ``outcome``, ``error_type``.
    - Redaction (:class:`Redactor`): the defaults, plus ``redact_patterns``, ``redact_callback``,
      ``hash_emails`` / ``hash_salt``; it applies to every record and to span attributes victor_otel sets.
    - With ``OTEL_LOGS_EXPORTER=otlp`` (or ``console``) at ``init()``, records also go through the OTel
      log bridge, whichever of the two is called first.

    Calling it again replaces the previous set-up (never duplicates handlers);
    :func:`teardown_coordinator_logging` undoes it.
    """
    global _success_level, _slow_seconds
    if format_type not in ("json", "text"):
        raise VictorOtelConfigError(f"format_type: {format_type!r} is not valid; accepted: json | text")
    base_level = _level("level", level)
    per_coordinator = {
        name: _level(f"levels[{name!r}]", value) for name, value in (levels or {}).items()
    }
    success = _level("success_level", success_level)
    if slow_threshold_ms is not None and (
        isinstance(slow_threshold_ms, bool)
        or not isinstance(slow_threshold_ms, (int, float))
        or not slow_threshold_ms >= 0
    ):
        raise VictorOtelConfigError(
            f"slow_threshold_ms: {slow_threshold_ms!r} is not valid; accepted: a number >= 0, or None"
        )
    redactor = Redactor(redact_patterns, callback=redact_callback, hash_emails=hash_emails, hash_salt=hash_salt)
    coordinator_loggers = {name: get_coordinator_logger(name) for name in per_coordinator}

    handler: logging.Handler
    if output_file is not None:
        path = os.fspath(output_file)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise VictorOtelConfigError(f"output_file: cannot open {path!r} for appending ({exc})") from None
        if stream is not None:
            extra_handler: logging.Handler | None = logging.StreamHandler(stream)
        else:
            extra_handler = None
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        extra_handler = None
    handlers = [h for h in (handler, extra_handler) if h is not None]
    for h in handlers:
        if format_type == "json":
            h.setFormatter(JsonFormatter())
        else:
            target = getattr(h, "stream", None)
            h.setFormatter(TextFormatter(color=color_enabled(target) if color is None else color))
    handlers.append(OTelBridgeHandler())

    teardown_coordinator_logging()
    use_redactor(redactor)
    _Constants.owner = object()  # re-read service and environment
    parent = logging.getLogger(COORDINATOR_LOGGER)
    target_logger = logging.getLogger() if root else parent
    touched = [parent, target_logger, *coordinator_loggers.values()]
    for logger in touched:
        _setup.saved.setdefault(logger.name, (logger.level, logger.propagate))
    parent.setLevel(base_level)
    if root:
        target_logger.setLevel(base_level)
    else:
        parent.propagate = propagate
    for name, logger in coordinator_loggers.items():
        logger.setLevel(per_coordinator[name])
    for h in handlers:
        target_logger.addHandler(h)
        _setup.handlers.append((target_logger, h))
    _success_level = success
    _slow_seconds = math.inf if slow_threshold_ms is None else slow_threshold_ms / 1000.0
    _install_hook()
    return target_logger


# -- fork safety --------------------------------------------------------------------------------------
# A thread writing a record at the moment of a fork leaves the child with the handler's lock, or the
# file's own buffer lock under it, taken for ever: the child's first record would hang. The forking
# thread holds our handlers' locks across the fork, so no thread is half-way through a write.
_held_at_fork: list[logging.Handler] = []


def _hold_handlers() -> None:
    deadline = time.monotonic() + forking.FORK_WAIT
    for _, handler in list(_setup.handlers):
        lock = handler.lock
        if lock is not None and lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _held_at_fork.append(handler)


def _release_handlers() -> None:
    while _held_at_fork:
        handler = _held_at_fork.pop()
        with contextlib.suppress(RuntimeError):  # the logging module renewed it in the child already
            handler.release()


forking.on_fork(before=_hold_handlers, after_in_parent=_release_handlers, after_in_child=_release_handlers)


def _install_hook() -> None:
    current = decorators._runtime.on_execution
    _setup.previous_hook = current
    if current is None:
        decorators._runtime.on_execution = _log_execution
    else:
        decorators._runtime.on_execution = _chained(current)
    _setup.hooked = True


def teardown_coordinator_logging() -> None:
    """Undo :func:`setup_coordinator_logging`: remove and close its handlers, restore levels and the hook."""
    for logger, handler in _setup.handlers:
        logger.removeHandler(handler)
        try:
            handler.flush()
            handler.close()
        except Exception:
            pass
    _setup.handlers.clear()
    for name, (level, propagate) in _setup.saved.items():
        logger = logging.getLogger(name) if name != "root" else logging.getLogger()
        logger.setLevel(level)
        logger.propagate = propagate
    _setup.saved.clear()
    if _setup.hooked:
        hook = decorators._runtime.on_execution
        if hook is _log_execution or getattr(hook, "__victor_otel_logs__", False):
            decorators._runtime.on_execution = _setup.previous_hook
        _setup.hooked = False
        _setup.previous_hook = None
    use_redactor(None)


__all__ = [
    "COORDINATOR_LOGGER",
    "CORE_FIELDS",
    "REDACTED",
    "JsonFormatter",
    "OTelBridgeHandler",
    "Redactor",
    "TextFormatter",
    "dumps",
    "get_coordinator_logger",
    "get_redactor",
    "prepare",
    "redact",
    "setup_coordinator_logging",
    "teardown_coordinator_logging",
]
