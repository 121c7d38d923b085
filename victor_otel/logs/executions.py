"""The execution records: one record per call of a decorated coordinator (the decorators' execution hook),
success at DEBUG, slow at WARNING, failure at ERROR, while the span is current."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from victor_otel.decorators import error_type_of
from victor_otel.logs.records import _PREFIX, COORDINATOR_LOGGER


class _Policy:
    """The levels of execution records, set by ``setup_coordinator_logging()``."""

    success_level = logging.DEBUG  # the level of a successful execution's record
    slow_seconds = 1.0  # from this duration on, a successful execution is logged at WARNING (inf: never)


policy = _Policy()
_execution_loggers: dict[str, logging.Logger] = {}
#: The parent logger, where records of coordinators past the cardinality cap go. Looked up once:
#: ``logging.getLogger`` takes the logging module's lock, which calls past the cap must not take each time
#: (a logger, once made, lives as long as the process, so the reference never goes stale).
_parent_logger = logging.getLogger(COORDINATOR_LOGGER)
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
    return _parent_logger, True


def log_execution(site: Any, duration: float, exc: BaseException | None) -> None:
    """The decorators' execution hook: one record per execution, at almost no cost when disabled."""
    logger = _execution_loggers.get(site.coordinator)
    named = False
    if logger is None:
        logger, named = _execution_logger(site)
    if exc is None or not isinstance(exc, Exception):
        level = policy.success_level if duration < policy.slow_seconds else logging.WARNING
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


def chained(previous: Callable[[Any, float, BaseException | None], None]) -> Callable[..., None]:
    def hook(site: Any, duration: float, exc: BaseException | None) -> None:
        previous(site, duration, exc)
        log_execution(site, duration, exc)

    hook.__victor_otel_logs__ = True  # type: ignore[attr-defined]
    return hook
