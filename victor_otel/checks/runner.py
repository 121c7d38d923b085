"""Running the checks: the process-wide :class:`Health` (user checks, each in its thread or task under its
timeout; per-coordinator thresholds; the event-loop heartbeats), its metric ``victor_health_status``, and the
public functions that reach it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import inspect
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import Metric, NumberDataPoint

from victor_otel import bootstrap, forking
from victor_otel import instruments as contract
from victor_otel.checks import builtin
from victor_otel.checks.model import (
    COORDINATOR_FIELDS,
    FAIL,
    MAX_OUTPUT,
    OPTIONS_BY_NAME,
    PASS,
    RANK,
    STATUS_VALUES,
    CheckResult,
    HealthReport,
    Scope,
    Status,
    Thresholds,
    json_safe,
    worst,
)
from victor_otel.config import Settings
from victor_otel.errors import VictorOtelConfigError
from victor_otel.instruments import OVERFLOW_ATTRIBUTE, OVERFLOW_VALUE
from victor_otel.registry import Registry, get_registry

_logger = logging.getLogger("victor_otel")


def _settings(telemetry: bootstrap.Telemetry | None) -> Settings:
    return telemetry.settings if telemetry is not None else bootstrap.settings_in_force()


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
    if isinstance(value, str) and value in RANK:
        return value, None, None, None  # type: ignore[return-value]
    if isinstance(value, Mapping):
        status = value.get("status", PASS)
        if status not in RANK:
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


class Health:
    """The process-wide health state: user checks, per-coordinator thresholds, caches, heartbeats.

    Use :func:`get_health`; tests may :meth:`reset` it.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._checks: dict[str, _UserCheck] = {}
        self._overrides: dict[str, dict[str, Any]] = {}
        self._builtins = builtin.BuiltinChecks()
        self._heartbeats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, builtin.Heartbeat] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def registry(self) -> Registry:
        return self._registry or get_registry()

    def reset(self) -> None:
        """Forget user checks, per-coordinator thresholds and cached results."""
        with self._lock:
            self._checks.clear()
            self._overrides.clear()
        self._builtins.reset()

    def renew_locks(self) -> None:
        """In a forked child: a collection may have held a lock at the fork."""
        self._lock = threading.Lock()
        self._builtins.renew_lock()

    def attach(self, telemetry: bootstrap.Telemetry) -> None:
        """Publish ``victor_health_status`` through ``telemetry``'s readers (idempotent); ``startup.init()``
        calls it."""
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
            timeout = OPTIONS_BY_NAME["health_check_timeout"].parse("timeout", timeout)
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
        self._builtins.invalidate()
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
        settings = _settings(telemetry)
        loop_check = self._loop_check(loop, settings)
        results: list[CheckResult] = []
        details: dict[str, Any] | None = None
        if scope == "live":
            results.append(loop_check)
        else:
            results.append(builtin.lifecycle_check(telemetry))
            with self._lock:
                user = [c for c in self._checks.values() if c.critical or scope != "ready"]
            if scope != "ready":
                checks, coordinators = self._builtin(telemetry, settings)
                results.extend(checks)
                results.append(loop_check)
                if scope == "detailed":
                    details = builtin.details(telemetry, settings, coordinators)
            results.extend(await asyncio.gather(*(self._run(c, settings, loop) for c in user)))
        return HealthReport(
            scope=scope,
            status=worst(results),
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
                beat = self._heartbeats[loop] = builtin.Heartbeat(loop, max_lag)
        return builtin.lag_check(beat.lag(time.monotonic()), max_lag)

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
            check.name, status, check.component, check.component_type, json_safe(observed), unit,
            None if output is None else output[:MAX_OUTPUT], critical=check.critical,
        )

    def _failure(self, check: _UserCheck, output: str) -> CheckResult:
        return CheckResult(
            check.name, FAIL, check.component, check.component_type, None, None, output[:MAX_OUTPUT],
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
        return self._builtins.evaluate(self.registry, telemetry, settings, self._for)


    def produce(self) -> list[Metric]:
        """``victor_health_status{check}``: built-in checks read now, user checks as last evaluated."""
        telemetry = bootstrap.current()
        settings = _settings(telemetry)
        results = [builtin.lifecycle_check(telemetry), *self._builtin(telemetry, settings)[0]]
        now = time.monotonic()
        with self._lock:
            beats = [b for b in self._heartbeats.values() if not b.task.done()]
            results.extend(c.last for c in self._checks.values() if c.last is not None)
        if beats:
            results.append(builtin.lag_check(max(b.lag(now) for b in beats), settings.health_max_loop_lag))
        by_key: dict[str, CheckResult] = {}
        for r in results:
            if r.key not in by_key or RANK[r.status] > RANK[by_key[r.key].status]:
                by_key[r.key] = r
        now_ns = time.time_ns()
        # Bounded like the coordinator families: at most the cardinality limit of coordinator label sets
        # (the process, telemetry and user checks are few and fixed by code), failing ones first (an alert
        # must name them); the excess folds into one overflow series holding the worst status it hides.
        limit = self.registry.limit
        coordinators = sorted((r for r in by_key.values() if r.coordinator is not None),
                              key=lambda r: (-RANK[r.status], r.key))
        kept = [r for r in by_key.values() if r.coordinator is None] + coordinators[:limit]
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
                0, now_ns, STATUS_VALUES[worst(folded)],
            ))
        return [contract.metric(contract.HEALTH_STATUS, points)]


_HEALTH = Health()


forking.on_fork(after_in_child=_HEALTH.renew_locks)


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
