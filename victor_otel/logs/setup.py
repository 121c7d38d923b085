"""``setup_coordinator_logging()`` / ``teardown_coordinator_logging()``, and the execution records of
decorated coordinators (the decorators' execution hook)."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from victor_otel import decorators, forking
from victor_otel.errors import VictorOtelConfigError
from victor_otel.logs import executions
from victor_otel.logs.bridge import OTelBridgeHandler
from victor_otel.logs.formatters import JsonFormatter, TextFormatter
from victor_otel.logs.records import _PREFIX, COORDINATOR_LOGGER, _Constants
from victor_otel.redaction import Redactor, use_redactor
from victor_otel.terminal import color_enabled


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
    executions.policy.success_level = success
    executions.policy.slow_seconds = math.inf if slow_threshold_ms is None else slow_threshold_ms / 1000.0
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
        decorators._runtime.on_execution = executions.log_execution
    else:
        decorators._runtime.on_execution = executions.chained(current)
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
        if hook is executions.log_execution or getattr(hook, "__victor_otel_logs__", False):
            decorators._runtime.on_execution = _setup.previous_hook
        _setup.hooked = False
        _setup.previous_hook = None
    use_redactor(None)
