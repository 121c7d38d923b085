"""Health checks: thresholds, evaluation, and the response format of ``/health*``.

The public face of health, under the seed's module name (``victor.observability.health``): the
checks live in :mod:`victor_otel.checks`, the routes in :mod:`victor_otel.web.health`.

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

from victor_otel.checks.model import (
    COORDINATOR_FIELDS,
    DEFAULT_THRESHOLDS,
    FAIL,
    MEDIA_TYPE,
    PASS,
    STATUS_VALUES,
    WARN,
    CheckResult,
    HealthReport,
    Scope,
    Status,
    Thresholds,
)
from victor_otel.checks.runner import (
    CheckFunction,
    Health,
    add_health_check,
    check_health,
    get_health,
    remove_health_check,
    set_health_thresholds,
)
from victor_otel.web.health import health_endpoint, setup_health_endpoints

__all__ = [
    "COORDINATOR_FIELDS",
    "DEFAULT_THRESHOLDS",
    "FAIL",
    "MEDIA_TYPE",
    "PASS",
    "STATUS_VALUES",
    "WARN",
    "CheckFunction",
    "CheckResult",
    "Health",
    "HealthReport",
    "Scope",
    "Status",
    "Thresholds",
    "add_health_check",
    "check_health",
    "get_health",
    "health_endpoint",
    "remove_health_check",
    "set_health_thresholds",
    "setup_health_endpoints",
]
