"""The health model: statuses, thresholds, one check's result and the report (the IETF response format)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from victor_otel.config import _ORDERED, OPTIONS, Settings
from victor_otel.errors import VictorOtelConfigError

Status = Literal["pass", "warn", "fail"]
Scope = Literal["live", "ready", "overall", "detailed"]
PASS: Status = "pass"
WARN: Status = "warn"
FAIL: Status = "fail"
RANK: dict[str, int] = {PASS: 0, WARN: 1, FAIL: 2}

#: The value of ``victor_health_status`` for each status.
STATUS_VALUES: Mapping[str, float] = {PASS: 1.0, WARN: 0.5, FAIL: 0.0}

#: The media type of every health response.
MEDIA_TYPE = "application/health+json"

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
#: The longest ``output`` a check keeps.
MAX_OUTPUT = 500


def _default(field_name: str) -> Any:
    return OPTIONS_BY_NAME["health_" + field_name].default



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
            object.__setattr__(self, f.name, OPTIONS_BY_NAME["health_" + f.name].parse(f.name, getattr(self, f.name)))
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
        doc["time"] = iso(self.time)
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
        return max(found, key=lambda c: RANK[c.status]) if found else None

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
                f"coordinators:{measure}", worst(results), "coordinators", "component", len(results), "coordinators",
                f"{statuses.count(FAIL)} failing and {statuses.count(WARN)} warning of {len(results)} coordinators "
                "(names and values on /health/detailed, with the token)",
                time=max(r.time for r in results),
            ))
        return dataclasses.replace(self, checks=tuple(kept))


@functools.lru_cache(maxsize=256)  # readings of one evaluation share their time
def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def worst(results: list[CheckResult]) -> Status:
    return max((r.status for r in results), key=RANK.__getitem__, default=PASS)


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def rounded(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


