"""Health checks: thresholds, evaluation, and the response format of ``/health*``.

Four endpoints, following Kubernetes probe conventions::

    setup_health_endpoints(app)      # also done by instrument_app(app)

- ``/health/live``: can this process serve? Only the event-loop heartbeat decides: never a
  downstream, never a coordinator's error rate. It fails when the loop was blocked longer than
  ``health_max_loop_lag`` seconds (within the last as many seconds).
- ``/health/ready``: 200 once ``init()`` has finished and while no *critical* check fails; 503 from the
  moment ``shutdown()`` starts (drain). A route of :func:`setup_health_endpoints` probed before any
  ``init()`` in the process initialises from the environment first, as the seed's endpoints (and the
  seed's ``/metrics``) needed no set-up call; :func:`check_health` does not.
- ``/health``: the overall status, the worst of every check (so it fails whenever readiness fails).
- ``/health/detailed``: ``/health`` plus per-coordinator statistics, versions, uptime and the
  Resource; closed behind ``Authorization: Bearer <token>`` when ``health_token`` is set.

Responses are ``application/health+json`` (the IETF draft "Health Check Response Format for HTTP
APIs"): ``status`` pass | warn | fail (HTTP 200, 200, 503), ``version``, ``serviceId``,
``description``, ``output`` (what is wrong, omitted on pass) and ``checks`` keyed
``component:measurement``:

==============================  =============================================================
key                             what
==============================  =============================================================
``<Coordinator>:error_rate``    errors / calls over the window (warn > 1 %, fail > 5 %)
``<Coordinator>:latency_p95``   p95 latency over the window, seconds (warn > 5 s, fail > 15 s)
``process:memory``              resident memory, bytes (warn > 2 GiB, fail > 4 GiB)
``process:cpu``                 CPU use, percent of one core (warn > 80 %, never fails)
``eventloop:lag``               worst event-loop stall recently, seconds (liveness)
``telemetry:lifecycle``         starting | ready | draining | stopped (readiness)
``telemetry:dropped``           spans / logs dropped (export queue full) within the window: warn
``telemetry:export_errors``     exports failing (OTLP unreachable...) within the window: warn
                                (both from ``Telemetry.export_stats()``)
``<name>``                      a check added with :func:`add_health_check`
==============================  =============================================================

A coordinator's error rate and latency cannot fail on fewer than ``min_calls`` calls in the window
(they can warn). The defaults are :data:`DEFAULT_THRESHOLDS`, read from the settings declared in
:mod:`victor_otel.config`, the same numbers as the alert rules. Each check's status is also the gauge
``victor_health_status{check="<key>"}`` (1 pass, 0.5 warn, 0 fail), with ``coordinator="<name>"`` on
the coordinator checks so that alert rules select and exclude coordinators as they do elsewhere.

Checks run concurrently, each under its timeout. A check that hangs or raises fails alone, with the
reason in ``output``; a hung synchronous check is never started twice (its thread cannot be killed),
later evaluations report it at once. Results are reused for ``health_cache_ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib.metadata
import inspect
import json
import logging
import math
import platform
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from opentelemetry.sdk.metrics.export import Gauge, Metric, NumberDataPoint

from victor_otel import auth, bootstrap, forking, process
from victor_otel import instruments as contract
from victor_otel._version import __version__
from victor_otel.config import _ORDERED, OPTIONS, Settings
from victor_otel.errors import VictorOtelConfigError
from victor_otel.instruments import OVERFLOW_ATTRIBUTE, OVERFLOW_VALUE
from victor_otel.registry import Registry, get_registry
from victor_otel.window import WindowStats

_logger = logging.getLogger("victor_otel")

Status = Literal["pass", "warn", "fail"]
Scope = Literal["live", "ready", "overall", "detailed"]
PASS: Status = "pass"
WARN: Status = "warn"
FAIL: Status = "fail"
_RANK: dict[str, int] = {PASS: 0, WARN: 1, FAIL: 2}

#: The value of ``victor_health_status`` for each status.
STATUS_VALUES: Mapping[str, float] = {PASS: 1.0, WARN: 0.5, FAIL: 0.0}

#: The media type of every health response.
MEDIA_TYPE = "application/health+json"

_OPTIONS = {option.name: option for option in OPTIONS}
_MAX_OUTPUT = 500


def _default(field_name: str) -> Any:
    return _OPTIONS["health_" + field_name].default


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a check warns or fails. Rates are ratios (0.01 = 1 %), latencies seconds, memory bytes.

    Every value above its threshold (strictly) warns or fails. Each field is also the setting
    ``health_<field>`` (``VICTOR_OTEL_HEALTH_<FIELD>``), which gives its default.

    >>> Thresholds().error_rate_fail, Thresholds(error_rate_fail=0.1).error_rate_fail
    (0.05, 0.1)
    """

    error_rate_warn: float = _default("error_rate_warn")
    error_rate_fail: float = _default("error_rate_fail")
    min_calls: int = _default("min_calls")
    latency_p95_warn: float = _default("latency_p95_warn")
    latency_p95_fail: float = _default("latency_p95_fail")
    memory_warn_bytes: int = _default("memory_warn_bytes")
    memory_fail_bytes: int = _default("memory_fail_bytes")
    cpu_warn_percent: float = _default("cpu_warn_percent")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            # The settings' own parsers: the same accepted values, the same messages.
            object.__setattr__(self, f.name, _OPTIONS["health_" + f.name].parse(f.name, getattr(self, f.name)))
        for low_setting, high_setting in _ORDERED:  # each warn threshold at most its fail one
            low, high = low_setting.removeprefix("health_"), high_setting.removeprefix("health_")
            if getattr(self, low) > getattr(self, high):
                raise VictorOtelConfigError(
                    f"{low}: {getattr(self, low)!r} is not valid; accepted: at most {high} ({getattr(self, high)!r})"
                )

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        """The global thresholds of a :class:`~victor_otel.config.Settings`."""
        return cls(**{f.name: getattr(settings, "health_" + f.name) for f in dataclasses.fields(cls)})


#: The default thresholds: error rate warn > 1 % / fail > 5 % (with at least ``min_calls`` calls),
#: p95 latency warn > 5 s / fail > 15 s, memory warn > 2 GiB / fail > 4 GiB, CPU warn > 80 %.
#: The alert rules use the same numbers; tests check them against this constant.
DEFAULT_THRESHOLDS = Thresholds()

#: The fields :func:`set_health_thresholds` may override per coordinator (the rest are process-wide).
COORDINATOR_FIELDS: tuple[str, ...] = (
    "error_rate_warn", "error_rate_fail", "min_calls", "latency_p95_warn", "latency_p95_fail",
)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One reading of one check: an element of a ``checks`` list in the response."""

    key: str
    status: Status
    component_id: str
    component_type: str
    observed_value: Any = None
    observed_unit: str | None = None
    output: str | None = None
    time: float = dataclasses.field(default_factory=time.time)
    #: Readiness depends on it (user checks added with ``critical=True``).
    critical: bool = False
    #: The coordinator a coordinator check is about (the ``coordinator`` label of the metric).
    coordinator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The IETF object; ``output`` only when something is wrong, as the draft asks."""
        doc: dict[str, Any] = {
            "componentId": self.component_id,
            "componentType": self.component_type,
            "observedValue": self.observed_value,
        }
        if self.observed_unit is not None:
            doc["observedUnit"] = self.observed_unit
        doc["status"] = self.status
        doc["time"] = _iso(self.time)
        if self.output and self.status != PASS:
            doc["output"] = self.output
        return doc


@dataclasses.dataclass(frozen=True)
class HealthReport:
    """The result of one evaluation; :meth:`to_json` is the response body."""

    scope: Scope
    status: Status
    checks: tuple[CheckResult, ...]
    version: str
    service_id: str
    description: str
    details: Mapping[str, Any] | None = None

    @property
    def http_status(self) -> int:
        """200 for pass and warn, 503 for fail."""
        return 503 if self.status == FAIL else 200

    def check(self, key: str) -> CheckResult | None:
        """The (worst) result of the check ``key``, if it was evaluated."""
        found = [c for c in self.checks if c.key == key]
        return max(found, key=lambda c: _RANK[c.status]) if found else None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": self.status, "version": self.version}
        problems = [f"{c.key}: {c.output or c.status}" for c in self.checks if c.status != PASS]
        if problems:
            doc["output"] = "; ".join(problems)
        doc["serviceId"] = self.service_id
        doc["description"] = self.description
        checks: dict[str, list[dict[str, Any]]] = {}
        for c in self.checks:
            checks.setdefault(c.key, []).append(c.to_dict())
        doc["checks"] = checks
        if self.details:
            doc.update(self.details)
        return doc

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str).encode()

    def without_coordinator_names(self) -> HealthReport:
        """This report with the coordinator checks folded into one per measurement
        (``coordinators:error_rate``, ``coordinators:latency_p95``), same statuses, no names: what
        ``/health`` and ``/health/ready`` answer without the token when ``health_token`` is set."""
        kept = [c for c in self.checks if c.coordinator is None]
        measures: dict[str, list[CheckResult]] = {}
        for c in self.checks:
            if c.coordinator is not None:
                measures.setdefault(c.key.rpartition(":")[2], []).append(c)
        for measure, results in measures.items():
            statuses = [r.status for r in results]
            kept.append(CheckResult(
                f"coordinators:{measure}", _worst(results), "coordinators", "component", len(results), "coordinators",
                f"{statuses.count(FAIL)} failing and {statuses.count(WARN)} warning of {len(results)} coordinators "
                "(names and values on /health/detailed, with the token)",
                time=max(r.time for r in results),
            ))
        return dataclasses.replace(self, checks=tuple(kept))


@functools.lru_cache(maxsize=256)  # readings of one evaluation share their time
def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _worst(results: list[CheckResult]) -> Status:
    return max((r.status for r in results), key=_RANK.__getitem__, default=PASS)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


# -- user checks ------------------------------------------------------------------------------------

CheckFunction = Callable[[], Any]


def _is_async(fn: Callable[..., Any]) -> bool:
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    if inspect.isfunction(target) or inspect.ismethod(target):
        return False
    return inspect.iscoroutinefunction(type(target).__call__)  # a callable object with ``async def __call__``


class _Run:
    """One execution of a user check in flight: a thread (sync) or a task (async)."""

    __slots__ = ("future", "started", "task")

    def __init__(
        self,
        started: float,
        future: concurrent.futures.Future[CheckResult] | None = None,
        task: asyncio.Task[CheckResult] | None = None,
    ) -> None:
        self.started = started
        self.future = future
        self.task = task

    def done(self) -> bool:
        if self.task is not None:
            return self.task.done()
        assert self.future is not None
        return self.future.done()


class _UserCheck:
    __slots__ = (
        "async_runs", "component", "component_type", "critical", "fn", "is_async", "last", "last_at", "name",
        "sync_run", "timeout",
    )

    def __init__(
        self, name: str, fn: CheckFunction, critical: bool, timeout: float | None, component_type: str
    ) -> None:
        self.name = name
        self.component = name.partition(":")[0]
        self.fn = fn
        self.critical = critical
        self.timeout = timeout
        self.component_type = component_type
        self.is_async = _is_async(fn)
        self.last: CheckResult | None = None
        self.last_at = -math.inf
        self.sync_run: _Run | None = None
        # An asyncio task belongs to one loop: one run in flight per loop.
        self.async_runs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Run] = weakref.WeakKeyDictionary()


def _check_key(what: str, name: object) -> str:
    parts = name.split(":") if isinstance(name, str) else []
    if (
        not isinstance(name, str) or not name or len(name) > 128 or not name.isprintable()
        or len(parts) > 2 or not all(part.strip() for part in parts)
    ):
        raise VictorOtelConfigError(
            f"{what}: {name!r} is not valid; accepted: 'component' or 'component:measurement', printable, "
            "at most 128 characters (for example 'vector_store' or 'vector_store:connections')"
        )
    return name


def _interpret(value: Any) -> tuple[Status, Any, str | None, str | None]:
    """(status, observedValue, observedUnit, output) from what a user check returned."""
    if value is None or value is True:
        return PASS, None, None, None
    if value is False:
        return FAIL, None, None, "the check returned False"
    if isinstance(value, str) and value in _RANK:
        return value, None, None, None  # type: ignore[return-value]
    if isinstance(value, Mapping):
        status = value.get("status", PASS)
        if status not in _RANK:
            raise ValueError(f"returned status {status!r}; accepted: pass | warn | fail")
        output = value.get("output")
        unit = value.get("observedUnit")
        return status, value.get("observedValue"), None if unit is None else str(unit), (
            None if output is None else str(output)
        )
    raise TypeError(
        f"returned a {type(value).__name__}; accepted: None or True (pass), False (fail), 'pass' | 'warn' | "
        "'fail', or a mapping with status / observedValue / observedUnit / output"
    )


# -- event-loop heartbeat (liveness) ----------------------------------------------------------------


class _Heartbeat:
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
def _versions() -> dict[str, str]:
    versions = {"victor_otel": __version__, "python": platform.python_version()}
    for dist in ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-prometheus"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return versions


def _settings(telemetry: bootstrap.Telemetry | None) -> Settings:
    if telemetry is not None:
        return telemetry.settings
    try:
        return Settings.from_sources()
    except VictorOtelConfigError:
        return Settings()  # init() will name the bad variable; health keeps answering meanwhile


class Health:
    """The process-wide health state: user checks, per-coordinator thresholds, caches, heartbeats.

    Use :func:`get_health`; tests may :meth:`reset` it.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._checks: dict[str, _UserCheck] = {}
        self._overrides: dict[str, dict[str, Any]] = {}
        self._builtin_cache: tuple[float, tuple[int, int], list[CheckResult], dict[str, Any]] | None = None
        self._heartbeats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Heartbeat] = (
            weakref.WeakKeyDictionary()
        )
        self._changes: dict[str, tuple[int, float | None]] = {}

    @property
    def registry(self) -> Registry:
        return self._registry or get_registry()

    def reset(self) -> None:
        """Forget user checks, per-coordinator thresholds and cached results."""
        with self._lock:
            self._checks.clear()
            self._overrides.clear()
            self._builtin_cache = None
            self._changes.clear()

    def attach(self, telemetry: bootstrap.Telemetry) -> None:
        """Publish ``victor_health_status`` through ``telemetry``'s readers (idempotent)."""
        with self._lock:
            if self.produce not in telemetry.producers:
                telemetry.add_producer(self.produce)

    # -- configuration ------------------------------------------------------------------------------

    def add_check(
        self,
        name: str,
        check: CheckFunction,
        *,
        critical: bool = False,
        timeout: float | None = None,
        component_type: str = "component",
    ) -> None:
        """See :func:`add_health_check`."""
        _check_key("name", name)
        if not callable(check):
            raise VictorOtelConfigError(f"check: {check!r} is not valid; accepted: a callable taking no argument")
        if not isinstance(critical, bool):
            raise VictorOtelConfigError(f"critical: {critical!r} is not valid; accepted: True or False")
        if timeout is not None:
            timeout = _OPTIONS["health_check_timeout"].parse("timeout", timeout)
        if not isinstance(component_type, str) or not component_type.strip():
            raise VictorOtelConfigError(
                f"component_type: {component_type!r} is not valid; accepted: component | datastore | system "
                "(or a URI)"
            )
        with self._lock:
            self._checks[name] = _UserCheck(name, check, critical, timeout, component_type)

    def remove_check(self, name: str) -> bool:
        """Remove a user check; ``False`` if there was none by that name."""
        with self._lock:
            return self._checks.pop(name, None) is not None

    def set_thresholds(self, coordinator: str, **overrides: Any) -> Thresholds:
        """See :func:`set_health_thresholds`."""
        if not isinstance(coordinator, str) or not coordinator:
            raise VictorOtelConfigError(f"coordinator: {coordinator!r} is not valid; accepted: a coordinator name")
        unknown = sorted(set(overrides) - set(COORDINATOR_FIELDS))
        if unknown:
            raise VictorOtelConfigError(
                f"{', '.join(unknown)}: not a per-coordinator threshold; accepted: {', '.join(COORDINATOR_FIELDS)}"
            )
        effective = dataclasses.replace(self._global_thresholds(), **overrides)  # validates
        with self._lock:
            if overrides:
                self._overrides[coordinator] = dict(overrides)
            else:
                self._overrides.pop(coordinator, None)
            self._builtin_cache = None
        return effective

    def thresholds(self, coordinator: str | None = None) -> Thresholds:
        """The thresholds in force, globally or for one coordinator."""
        base = self._global_thresholds()
        return base if coordinator is None else self._for(coordinator, base)

    def _global_thresholds(self) -> Thresholds:
        return Thresholds.from_settings(_settings(bootstrap.current()))

    def _for(self, coordinator: str, base: Thresholds) -> Thresholds:
        overrides = self._overrides.get(coordinator)
        if not overrides:
            return base
        try:
            return dataclasses.replace(base, **overrides)
        except VictorOtelConfigError as exc:  # the global settings changed under a per-coordinator override
            _logger.warning("victor_otel: health thresholds of %s ignored: %s", coordinator, exc)
            return base

    # -- evaluation ---------------------------------------------------------------------------------

    async def evaluate(self, scope: Scope = "overall") -> HealthReport:
        """Evaluate the checks of ``scope`` (live | ready | overall | detailed) on the running loop."""
        if scope not in ("live", "ready", "overall", "detailed"):
            raise VictorOtelConfigError(f"scope: {scope!r} is not valid; accepted: live | ready | overall | detailed")
        loop = asyncio.get_running_loop()
        telemetry = bootstrap.current()
        if telemetry is not None:
            self.attach(telemetry)
        settings = _settings(telemetry)
        loop_check = self._loop_check(loop, settings)
        results: list[CheckResult] = []
        details: dict[str, Any] | None = None
        if scope == "live":
            results.append(loop_check)
        else:
            results.append(_lifecycle_check(telemetry))
            with self._lock:
                user = [c for c in self._checks.values() if c.critical or scope != "ready"]
            if scope != "ready":
                builtin, coordinators = self._builtin(telemetry, settings)
                results.extend(builtin)
                results.append(loop_check)
                if scope == "detailed":
                    details = self._details(telemetry, settings, coordinators)
            results.extend(await asyncio.gather(*(self._run(c, settings, loop) for c in user)))
        return HealthReport(
            scope=scope,
            status=_worst(results),
            checks=tuple(results),
            version=settings.resolved_version,
            service_id=settings.service_name,
            description=f"{settings.service_name} ({settings.resolved_environment}), checked by victor_otel",
            details=details,
        )

    def _loop_check(self, loop: asyncio.AbstractEventLoop, settings: Settings) -> CheckResult:
        max_lag = settings.health_max_loop_lag
        with self._lock:
            _forget_closed(self._heartbeats)
            beat = self._heartbeats.get(loop)
            if beat is None or beat.task.done() or beat.max_lag != max_lag:
                if beat is not None:
                    beat.task.cancel()
                beat = self._heartbeats[loop] = _Heartbeat(loop, max_lag)
        return _lag_check(beat.lag(time.monotonic()), max_lag)

    # -- user checks: each in its thread or task, under its timeout, one run in flight at a time --

    async def _run(self, check: _UserCheck, settings: Settings, loop: asyncio.AbstractEventLoop) -> CheckResult:
        timeout = check.timeout if check.timeout is not None else settings.health_check_timeout
        now = time.monotonic()
        with self._lock:
            if check.last is not None and now - check.last_at < settings.health_cache_ttl:
                return check.last
            run = check.async_runs.get(loop) if check.is_async else check.sync_run
            if run is None or run.done():
                run = self._start(check, loop, now)
        remaining = run.started + timeout - now
        if remaining <= 0:  # a previous run is hung: say so at once rather than wait again
            return self._record(check, self._failure(
                check, f"still running after {now - run.started:.1f} s (timeout {timeout:g} s)"))
        try:
            if run.task is not None:
                done, _ = await asyncio.wait({run.task}, timeout=remaining)
                if done and not run.task.cancelled():
                    return run.task.result()
                run.task.cancel()
            else:
                assert run.future is not None
                waiter: asyncio.Future[CheckResult] = loop.create_future()
                run.future.add_done_callback(functools.partial(_relay, loop, waiter))
                done, _ = await asyncio.wait({waiter}, timeout=remaining)
                if done:
                    return waiter.result()
                waiter.cancel()
        except Exception as exc:  # never let one check break the endpoint
            return self._record(check, self._failure(check, f"{type(exc).__name__}: {exc}"))
        return self._record(check, self._failure(check, f"timed out after {timeout:g} s"))

    def _start(self, check: _UserCheck, loop: asyncio.AbstractEventLoop, now: float) -> _Run:
        if check.is_async:
            _forget_closed(check.async_runs)
            run = _Run(now, task=loop.create_task(self._call_async(check), name=f"victor-otel-health:{check.name}"))
            check.async_runs[loop] = run
            return run
        future: concurrent.futures.Future[CheckResult] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        run = _Run(now, future=future)
        check.sync_run = run
        threading.Thread(
            target=self._call_sync, args=(check, future), name=f"victor-otel-health:{check.name}", daemon=True
        ).start()
        return run

    def _call_sync(self, check: _UserCheck, future: concurrent.futures.Future[CheckResult]) -> None:
        start = time.perf_counter()
        try:
            value = check.fn()
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()
                raise TypeError(
                    "returned an awaitable from a plain function: register the `async def` function itself"
                )
            result = self._result(check, value, time.perf_counter() - start)
        except BaseException as exc:  # whatever the check raised is its failure
            result = self._failure(check, f"{type(exc).__name__}: {exc}")
        future.set_result(self._record(check, result))

    async def _call_async(self, check: _UserCheck) -> CheckResult:
        start = time.perf_counter()
        try:
            value = check.fn()
            if inspect.isawaitable(value):
                value = await value
            result = self._result(check, value, time.perf_counter() - start)
        except asyncio.CancelledError:
            raise  # timed out: the waiter has recorded it
        except Exception as exc:
            result = self._failure(check, f"{type(exc).__name__}: {exc}")
        return self._record(check, result)

    def _result(self, check: _UserCheck, value: Any, duration: float) -> CheckResult:
        try:
            status, observed, unit, output = _interpret(value)
        except (TypeError, ValueError) as exc:
            return self._failure(check, str(exc))
        if observed is None and unit is None:
            observed, unit = round(duration * 1000, 3), "ms"  # the check's own response time
        return CheckResult(
            check.name, status, check.component, check.component_type, _json_safe(observed), unit,
            None if output is None else output[:_MAX_OUTPUT], critical=check.critical,
        )

    def _failure(self, check: _UserCheck, output: str) -> CheckResult:
        return CheckResult(
            check.name, FAIL, check.component, check.component_type, None, None, output[:_MAX_OUTPUT],
            critical=check.critical,
        )

    def _record(self, check: _UserCheck, result: CheckResult) -> CheckResult:
        with self._lock:
            check.last, check.last_at = result, time.monotonic()
        return result

    # -- built-in checks: coordinators, process, exporters (synchronous, cheap, cached) ------------

    def _builtin(
        self, telemetry: bootstrap.Telemetry | None, settings: Settings
    ) -> tuple[list[CheckResult], dict[str, Any]]:
        now = time.monotonic()
        generation = (id(telemetry), self.registry.generation)
        with self._lock:
            cached = self._builtin_cache
        if cached is not None and cached[1] == generation and now - cached[0] < settings.health_cache_ttl:
            return cached[2], cached[3]
        checks, coordinators = self._compute_builtin(telemetry, settings)
        with self._lock:
            self._builtin_cache = (now, generation, checks, coordinators)
        return checks, coordinators

    def _compute_builtin(
        self, telemetry: bootstrap.Telemetry | None, settings: Settings
    ) -> tuple[list[CheckResult], dict[str, Any]]:
        registry = self.registry
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
            thresholds = self._for(state.name, base)
            checks.extend(_coordinator_checks(state.name, stats, thresholds, registry.window_seconds))
            executions, errors = lifetime.get(state.name, [0, 0])
            coordinators[state.name] = {
                "executions": executions,
                "errors": errors,
                "windowSeconds": registry.window_seconds,
                "windowCalls": stats.calls,
                "windowErrors": stats.errors,
                "errorRate": _round(stats.error_rate),
                "throughput": _round(stats.throughput),
                "cacheHitRate": _round(stats.cache_hit_rate),
                "latencySeconds": {"p50": _round(stats.p50), "p95": _round(stats.p95), "p99": _round(stats.p99)},
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
        stats = _export_stats(telemetry)
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

    def _details(
        self, telemetry: bootstrap.Telemetry | None, settings: Settings, coordinators: dict[str, Any]
    ) -> dict[str, Any]:
        resource = {} if telemetry is None else {
            str(k): list(v) if isinstance(v, tuple) else v for k, v in telemetry.resource.attributes.items()
        }
        return {
            "lifecycle": "not initialised" if telemetry is None else telemetry.lifecycle.value,
            "uptimeSeconds": None if telemetry is None else round(telemetry.uptime, 3),
            "startedAt": None if telemetry is None else _iso(telemetry.started_at),
            "versions": {"service": settings.resolved_version, **_versions()},
            "resource": resource,
            "thresholds": vars(Thresholds.from_settings(settings)).copy(),
            "coordinators": coordinators,
            "exports": _export_stats(telemetry),
        }

    # -- the metric ---------------------------------------------------------------------------------

    def produce(self) -> list[Metric]:
        """``victor_health_status{check}``: built-in checks read now, user checks as last evaluated."""
        telemetry = bootstrap.current()
        settings = _settings(telemetry)
        results = [_lifecycle_check(telemetry), *self._builtin(telemetry, settings)[0]]
        now = time.monotonic()
        with self._lock:
            beats = [b for b in self._heartbeats.values() if not b.task.done()]
            results.extend(c.last for c in self._checks.values() if c.last is not None)
        if beats:
            results.append(_lag_check(max(b.lag(now) for b in beats), settings.health_max_loop_lag))
        worst: dict[str, CheckResult] = {}
        for r in results:
            if r.key not in worst or _RANK[r.status] > _RANK[worst[r.key].status]:
                worst[r.key] = r
        now_ns = time.time_ns()
        # Bounded like the coordinator families: at most the cardinality limit of coordinator label sets
        # (the process, telemetry and user checks are few and fixed by code), failing ones first (an alert
        # must name them); the excess folds into one overflow series holding the worst status it hides.
        limit = self.registry.limit
        coordinators = sorted((r for r in worst.values() if r.coordinator is not None),
                              key=lambda r: (-_RANK[r.status], r.key))
        kept = [r for r in worst.values() if r.coordinator is None] + coordinators[:limit]
        folded = coordinators[limit:]
        points = [
            NumberDataPoint(
                {"check": r.key, **({"coordinator": r.coordinator} if r.coordinator is not None else {})},
                0, now_ns, STATUS_VALUES[r.status],
            )
            for r in kept
        ]
        if folded:
            self.registry.warn_overflow(contract.HEALTH_STATUS)
            points.append(NumberDataPoint(
                {"check": OVERFLOW_VALUE, "coordinator": OVERFLOW_VALUE, OVERFLOW_ATTRIBUTE: True},
                0, now_ns, STATUS_VALUES[_worst(folded)],
            ))
        spec = contract.HEALTH_STATUS
        return [Metric(name=spec.otel_name, description=spec.description, unit=spec.unit, data=Gauge(points))]


def _export_stats(telemetry: bootstrap.Telemetry | None) -> dict[str, dict[str, Any]] | None:
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


def _forget_closed(per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]) -> None:
    """Drop the entries of closed loops (their values hold the loop: weak keys alone never let go)."""
    for loop in [loop for loop in per_loop if loop.is_closed()]:
        del per_loop[loop]


def _relay(
    loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[CheckResult], done: concurrent.futures.Future[CheckResult]
) -> None:
    """Hand a thread's result to a waiter on ``loop`` (which may have closed meanwhile)."""

    def deliver() -> None:
        if not waiter.done():
            waiter.set_result(done.result())

    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
        loop.call_soon_threadsafe(deliver)


def _grade(value: float, warn: float, fail: float) -> Status:
    return FAIL if value > fail else WARN if value > warn else PASS


def _coordinator_checks(name: str, stats: WindowStats, t: Thresholds, window: float) -> list[CheckResult]:
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
            f"{component}:latency_p95", latency_status, name, "component", _round(p95), "s",
            f"p95 latency {p95 or 0:.2f} s over {stats.calls} calls in the last {window:g} s (warn above "
            f"{t.latency_p95_warn:g} s, fail above {t.latency_p95_fail:g} s){few}", coordinator=name,
        ),
    ]


_LIFECYCLE_OUTPUT = {
    bootstrap.Lifecycle.STARTING: "init() has not finished",
    bootstrap.Lifecycle.DRAINING: "shutdown() in progress: draining, take this instance out of rotation",
    bootstrap.Lifecycle.STOPPED: "stopped: shutdown() has finished",
}


def _lifecycle_check(telemetry: bootstrap.Telemetry | None) -> CheckResult:
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


def _lag_check(lag: float, max_lag: float) -> CheckResult:
    return CheckResult(
        "eventloop:lag", FAIL if lag > max_lag else PASS, "eventloop", "system", round(lag, 3), "s",
        f"the event loop was blocked for {lag:.2f} s (fail above {max_lag:g} s)",
    )


_HEALTH = Health()


def _renew_lock_after_fork() -> None:
    _HEALTH._lock = threading.Lock()  # a collection may have held it at the fork


forking.on_fork(after_in_child=_renew_lock_after_fork)


def get_health() -> Health:
    """The process-wide :class:`Health` every endpoint, function and the metric read."""
    return _HEALTH


# -- the public functions ---------------------------------------------------------------------------


def add_health_check(
    name: str,
    check: CheckFunction,
    *,
    critical: bool = False,
    timeout: float | None = None,
    component_type: str = "component",
) -> None:
    """Add (or replace) a check: a sync or ``async`` callable taking no argument.

    It returns ``None`` / ``True`` (pass), ``False`` (fail), ``"pass" | "warn" | "fail"``, or a mapping
    with the IETF fields ``status``, ``observedValue``, ``observedUnit``, ``output``; raising fails it
    with the exception in ``output``. Without an observed value, the check's own duration (ms) is
    reported. ``name`` is its key: ``component`` or ``component:measurement``. ``critical=True``: readiness
    fails while it fails. ``timeout``: seconds (default: the ``health_check_timeout`` setting). Sync
    checks run in a thread of their own, so a blocking client is fine.

    >>> add_health_check("vector_store", lambda: True, critical=True, timeout=2.0)
    >>> remove_health_check("vector_store")
    True
    """
    _HEALTH.add_check(name, check, critical=critical, timeout=timeout, component_type=component_type)


def remove_health_check(name: str) -> bool:
    """Remove a check added with :func:`add_health_check`; ``False`` if there was none."""
    return _HEALTH.remove_check(name)


def set_health_thresholds(coordinator: str, **thresholds: Any) -> Thresholds:
    """Override some thresholds for one coordinator; returns the thresholds now in force for it.

    Accepted: ``error_rate_warn``, ``error_rate_fail``, ``min_calls``, ``latency_p95_warn``,
    ``latency_p95_fail``; the others come from the settings. No keyword: back to the global ones.

    >>> set_health_thresholds("AnalysisCoordinator", latency_p95_warn=30.0, latency_p95_fail=60.0).latency_p95_fail
    60.0
    >>> set_health_thresholds("AnalysisCoordinator").latency_p95_fail
    15.0
    """
    return _HEALTH.set_thresholds(coordinator, **thresholds)


async def check_health(scope: Scope = "overall") -> HealthReport:
    """Evaluate health as the endpoint of ``scope`` would (live | ready | overall | detailed).

    >>> import asyncio
    >>> asyncio.run(check_health("live")).status
    'pass'
    """
    return await _HEALTH.evaluate(scope)


def _problem(status: int, title: str, detail: str) -> Any:
    from starlette.responses import Response

    body = json.dumps({"title": title, "status": status, "detail": detail})
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = auth.challenge("victor_otel health", token="set")
    return Response(body, status, media_type="application/problem+json", headers=headers)


def _authorized(authorization: str | None) -> bool | None:
    """Whether the ``Authorization`` header opens ``/health/detailed``; ``None``: cannot tell."""
    telemetry = bootstrap.current()
    if telemetry is not None:
        token = telemetry.settings.health_token
    else:
        try:
            token = Settings.from_sources().health_token
        except VictorOtelConfigError:
            return None  # fail closed: a token may be configured
    return auth.check(authorization, token=token)


def health_endpoint(scope: Scope) -> Any:
    """A Starlette endpoint for one scope: ``app.add_route("/health/ready", health_endpoint("ready"))``."""
    from starlette.requests import Request
    from starlette.responses import Response

    if scope not in ("live", "ready", "overall", "detailed"):
        raise VictorOtelConfigError(f"scope: {scope!r} is not valid; accepted: live | ready | overall | detailed")

    async def health(request: Request) -> Response:
        if scope == "detailed":
            allowed = _authorized(request.headers.get("authorization"))
            if not allowed:
                detail = (
                    "send 'Authorization: Bearer <VICTOR_OTEL_HEALTH_TOKEN>'" if allowed is False
                    else "the health settings are invalid; fix them (see victor_otel.init())"
                )
                response: Response = _problem(401, "Unauthorized", detail)
                return response
        try:
            if scope != "live":  # the seed's endpoints worked without init(): initialise as /metrics does
                bootstrap.current_or_default()
            report = await _HEALTH.evaluate(scope)
            if scope != "detailed" and _authorized(request.headers.get("authorization")) is not True:
                report = report.without_coordinator_names()  # names stay behind the token; probes get statuses
            body, status = report.to_json(), report.http_status
        except Exception as exc:  # a probe must get an answer, never a 500
            _logger.exception("victor_otel: health evaluation failed")
            output = f"health evaluation failed: {type(exc).__name__}: {exc}"
            body = json.dumps({"status": FAIL, "output": output}).encode()
            status = 503
        return Response(body, status, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-store"})

    return health


def setup_health_endpoints(app: Any, *, prefix: str = "/health") -> Any:
    """Add ``/health``, ``/health/ready``, ``/health/live``, ``/health/detailed`` to a Starlette or
    FastAPI app; returns ``app``. Calling it again adds nothing.

    >>> from starlette.applications import Starlette
    >>> app = setup_health_endpoints(Starlette())
    >>> [r.path for r in app.routes]
    ['/health', '/health/ready', '/health/live', '/health/detailed']
    """
    if getattr(app.state, "victor_otel_health", False):
        return app
    app.state.victor_otel_health = True
    scopes: tuple[tuple[str, Scope], ...] = (
        ("", "overall"), ("/ready", "ready"), ("/live", "live"), ("/detailed", "detailed"),
    )
    for suffix, scope in scopes:
        app.add_route(prefix + suffix, health_endpoint(scope), methods=["GET", "HEAD"], include_in_schema=False)
    telemetry = bootstrap.current()
    if telemetry is not None:
        _HEALTH.attach(telemetry)
    return app
