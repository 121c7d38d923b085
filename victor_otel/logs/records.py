"""What every structured record carries: the core fields (service, trace and span IDs, the request ID,
the coordinator), extras made JSON-safe and redacted, :func:`prepare` and :func:`dumps`."""

from __future__ import annotations

import datetime
import enum
import itertools
import json
import logging
import logging.handlers
import math
import time
import traceback
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

from victor_otel import bootstrap
from victor_otel.context import BAGGAGE_KEY, valid_request_id
from victor_otel.redaction import REDACTED, get_redactor, names_a_secret

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
