"""The built-in checks: coordinators against their thresholds, the process, the exporters, the lifecycle
and the event loop. Synchronous and cheap; :class:`BuiltinChecks` caches them for ``health_cache_ttl``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import math
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

from victor_otel import bootstrap, process
from victor_otel._version import __version__
from victor_otel.checks.model import FAIL, PASS, WARN, CheckResult, Status, Thresholds, iso, rounded
from victor_otel.config import Settings
from victor_otel.registry import Registry
from victor_otel.window import WindowStats

_logger = logging.getLogger("victor_otel")

#: The thresholds in force for one coordinator, given the global ones (per-coordinator overrides).
ThresholdsFor = Callable[[str, Thresholds], Thresholds]

class Heartbeat:
    """A task ticking every ``interval`` on one loop; how late a tick runs is how blocked the loop was.

    A handler that runs proves the loop is alive now; the heartbeat tells whether it was wedged just
    before (the tick overdue now, or a late tick within the last ``hold`` seconds).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_lag: float) -> None:
        self.max_lag = max_lag
        self.interval = min(1.0, max_lag / 4)
        self.due = time.monotonic() + self.interval
        self.stall = 0.0
        self.stall_at = -math.inf
        self.task = loop.create_task(self._beat(), name="victor-otel-heartbeat")

    async def _beat(self) -> None:
        while True:
            self.due = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            late = now - self.due
            if late >= self.stall or now - self.stall_at > self.max_lag:
                self.stall, self.stall_at = late, now

    def lag(self, now: float) -> float:
        recent = self.stall if now - self.stall_at <= self.max_lag else 0.0
        return max(0.0, now - self.due, recent)


# -- the evaluator ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    versions = {"victor_otel": __version__, "python": platform.python_version()}
    for dist in ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-prometheus"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return versions


def export_stats(telemetry: bootstrap.Telemetry | None) -> dict[str, dict[str, Any]] | None:
    """``telemetry.export_stats()`` (per-signal export counts) when this Telemetry keeps them."""
    export_stats = getattr(telemetry, "export_stats", None)
    if not callable(export_stats):
        return None
    try:
        stats = export_stats()
    except Exception:  # a health check must not break on a bug elsewhere
        _logger.exception("victor_otel: export_stats() failed")
        return None
    return stats if isinstance(stats, dict) else None


def _grade(value: float, warn: float, fail: float) -> Status:
    return FAIL if value > fail else WARN if value > warn else PASS


def coordinator_checks(name: str, stats: WindowStats, t: Thresholds, window: float) -> list[CheckResult]:
    component = name.replace(":", "_")  # a key has one colon
    enough = stats.calls >= t.min_calls
    rate = stats.error_rate or 0.0  # no call in the window: none failed ("0.0% of 0 calls")
    rate_status = FAIL if rate > t.error_rate_fail and enough else WARN if rate > t.error_rate_warn else PASS
    p95 = stats.p95
    if p95 is None:
        latency_status: Status = PASS
    else:
        latency_status = FAIL if p95 > t.latency_p95_fail and enough else WARN if p95 > t.latency_p95_warn else PASS
    few = "" if enough else f"; fewer than {t.min_calls} calls, so it cannot fail"
    return [
        CheckResult(
            f"{component}:error_rate", rate_status, name, "component", round(rate, 6), "ratio",
            f"{rate:.1%} of {stats.calls} calls failed in the last {window:g} s (warn above "
            f"{t.error_rate_warn:.1%}, fail above {t.error_rate_fail:.1%}){few}", coordinator=name,
        ),
        CheckResult(
            f"{component}:latency_p95", latency_status, name, "component", rounded(p95), "s",
            f"p95 latency {p95 or 0:.2f} s over {stats.calls} calls in the last {window:g} s (warn above "
            f"{t.latency_p95_warn:g} s, fail above {t.latency_p95_fail:g} s){few}", coordinator=name,
        ),
    ]


_LIFECYCLE_OUTPUT = {
    bootstrap.Lifecycle.STARTING: "init() has not finished",
    bootstrap.Lifecycle.DRAINING: "shutdown() in progress: draining, take this instance out of rotation",
    bootstrap.Lifecycle.STOPPED: "stopped: shutdown() has finished",
}


def lifecycle_check(telemetry: bootstrap.Telemetry | None) -> CheckResult:
    if telemetry is None:
        return CheckResult(
            "telemetry:lifecycle", FAIL, "victor_otel", "component", "not initialised", None,
            "victor_otel.init() has not run (or shutdown() has finished)", critical=True,
        )
    state = telemetry.lifecycle
    return CheckResult(
        "telemetry:lifecycle", PASS if state is bootstrap.Lifecycle.READY else FAIL, "victor_otel", "component",
        state.value, None, _LIFECYCLE_OUTPUT.get(state), critical=True,
    )


def lag_check(lag: float, max_lag: float) -> CheckResult:
    return CheckResult(
        "eventloop:lag", FAIL if lag > max_lag else PASS, "eventloop", "system", round(lag, 3), "s",
        f"the event loop was blocked for {lag:.2f} s (fail above {max_lag:g} s)",
    )


class BuiltinChecks:
    """The coordinator, process and export checks of one process, computed at most once per
    ``health_cache_ttl`` (and again when the registry or the Telemetry changed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: tuple[float, tuple[int, int], list[CheckResult], dict[str, Any]] | None = None
        self._changes: dict[str, tuple[int, float | None]] = {}

    def reset(self) -> None:
        with self._lock:
            self._cache = None
            self._changes.clear()

    def invalidate(self) -> None:
        """Compute afresh at the next evaluation (the thresholds changed)."""
        with self._lock:
            self._cache = None

    def renew_lock(self) -> None:
        self._lock = threading.Lock()  # in a forked child: a collection may have held it at the fork

    def evaluate(
        self, registry: Registry, telemetry: bootstrap.Telemetry | None, settings: Settings,
        thresholds_for: ThresholdsFor,
    ) -> tuple[list[CheckResult], dict[str, Any]]:
        """The checks and, per coordinator, the statistics ``/health/detailed`` shows."""
        now = time.monotonic()
        generation = (id(telemetry), registry.generation)
        with self._lock:
            cached = self._cache
        if cached is not None and cached[1] == generation and now - cached[0] < settings.health_cache_ttl:
            return cached[2], cached[3]
        checks, coordinators = self._compute(registry, telemetry, settings, thresholds_for)
        with self._lock:
            self._cache = (now, generation, checks, coordinators)
        return checks, coordinators

    def _compute(
        self, registry: Registry, telemetry: bootstrap.Telemetry | None, settings: Settings,
        thresholds_for: ThresholdsFor,
    ) -> tuple[list[CheckResult], dict[str, Any]]:
        base = Thresholds.from_settings(settings)
        lifetime: dict[str, list[int]] = {}
        for series in list(registry.series.values()):
            with series.lock:
                count, errors = series.count, sum(series.errors.values())
            totals = lifetime.setdefault(series.coordinator.name, [0, 0])
            totals[0] += count
            totals[1] += errors
        checks: list[CheckResult] = []
        coordinators: dict[str, Any] = {}
        thresholds_doc: dict[Thresholds, dict[str, Any]] = {}  # one dict per distinct set
        for state in registry.all_coordinators():
            stats = state.stats()
            thresholds = thresholds_for(state.name, base)
            checks.extend(coordinator_checks(state.name, stats, thresholds, registry.window_seconds))
            executions, errors = lifetime.get(state.name, [0, 0])
            coordinators[state.name] = {
                "executions": executions,
                "errors": errors,
                "windowSeconds": registry.window_seconds,
                "windowCalls": stats.calls,
                "windowErrors": stats.errors,
                "errorRate": rounded(stats.error_rate),
                "throughput": rounded(stats.throughput),
                "cacheHitRate": rounded(stats.cache_hit_rate),
                "latencySeconds": {"p50": rounded(stats.p50), "p95": rounded(stats.p95), "p99": rounded(stats.p99)},
                "thresholds": thresholds_doc.setdefault(thresholds, vars(thresholds).copy()),
            }
        checks.extend(self._process_checks(base))
        checks.extend(self._export_checks(telemetry, settings.window_seconds))
        return checks, coordinators

    def _process_checks(self, t: Thresholds) -> list[CheckResult]:
        reading = process.sampler().sample()  # the same readings as the process gauges
        rss, percent = reading.rss_bytes, reading.cpu_percent
        gib = 1024**3
        memory = _grade(rss, t.memory_warn_bytes, t.memory_fail_bytes)
        cpu = WARN if percent > t.cpu_warn_percent else PASS
        return [
            CheckResult(
                "process:memory", memory, "process", "system", rss, "bytes",
                f"resident memory {rss / gib:.2f} GiB (warn above {t.memory_warn_bytes / gib:g} GiB, "
                f"fail above {t.memory_fail_bytes / gib:g} GiB)",
            ),
            CheckResult(
                "process:cpu", cpu, "process", "system", round(percent, 1), "percent",
                f"CPU {percent:.0f} % of one core (warn above {t.cpu_warn_percent:g} %)",
            ),
        ]

    def _export_checks(self, telemetry: bootstrap.Telemetry | None, window: float) -> list[CheckResult]:
        """Telemetry lost within the window warns; it never fails: the application itself is fine."""
        stats = export_stats(telemetry)
        if stats is None:
            return []
        now = time.monotonic()
        dropped = sum(int(s.get("dropped") or 0) for s in stats.values())
        failed = sum(int(s.get("failure") or 0) for s in stats.values())
        failing = any(s.get("consecutive_failures") for s in stats.values())
        last_at, last_error = max(
            ((float(s.get("last_failure") or 0), s.get("last_error")) for s in stats.values()),
            key=lambda pair: pair[0], default=(0.0, None),
        )
        failed_age = time.time() - last_at if last_at else None
        dropped_age = self._age_of_change("dropped", dropped, now)
        drop_recent = dropped_age is not None and dropped_age <= window
        fail_recent = failing or (failed_age is not None and failed_age <= window)
        return [
            CheckResult(
                "telemetry:dropped", WARN if drop_recent else PASS, "telemetry", "component", dropped, "items",
                f"spans or log records dropped (export queue full) {dropped_age or 0:.0f} s ago; "
                f"{dropped} since start",
            ),
            CheckResult(
                "telemetry:export_errors", WARN if fail_recent else PASS, "telemetry", "component", failed, "items",
                f"exporting failed {failed_age or 0:.0f} s ago ({last_error}); {failed} item(s) lost since start",
            ),
        ]

    def _age_of_change(self, kind: str, total: int, now: float) -> float | None:
        """Seconds since ``total`` last grew, as far as this process has watched it."""
        with self._lock:
            previous, changed_at = self._changes.get(kind, (0, None))
            if total < previous:  # counting started again (a new Telemetry)
                previous, changed_at = 0, None
            if total > previous:
                changed_at = now
            self._changes[kind] = (total, changed_at)
        return None if changed_at is None else now - changed_at


def details(
    telemetry: bootstrap.Telemetry | None, settings: Settings, coordinators: dict[str, Any]
) -> dict[str, Any]:
    resource = {} if telemetry is None else {
        str(k): list(v) if isinstance(v, tuple) else v for k, v in telemetry.resource.attributes.items()
    }
    return {
        "lifecycle": "not initialised" if telemetry is None else telemetry.lifecycle.value,
        "uptimeSeconds": None if telemetry is None else round(telemetry.uptime, 3),
        "startedAt": None if telemetry is None else iso(telemetry.started_at),
        "versions": {"service": settings.resolved_version, **versions()},
        "resource": resource,
        "thresholds": vars(Thresholds.from_settings(settings)).copy(),
        "coordinators": coordinators,
        "exports": export_stats(telemetry),
    }

