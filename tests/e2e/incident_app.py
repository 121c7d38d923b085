"""A Victor service with three coordinators and a deterministic incident, for the live Prometheus tests.

It records its calls through the seed's API (``get_coordinator_metrics_collector()``), so every ratio is
exact: ChatCoordinator.chat fails on every ``INCIDENT_ERROR_EVERY``-th call (0: never) and takes 3 s on
every 20th call (100 ms otherwise), ToolCoordinator.run takes 50 ms, RetrievalCoordinator.retrieve 20 ms
with 4 cache hits for 1 miss. ``INCIDENT_PORT``: the standalone ``/metrics`` port (127.0.0.1). One tick
every 20 ms: ChatCoordinator every tick, RetrievalCoordinator every 2nd, ToolCoordinator every 5th.
Run as ``python -m tests.e2e.incident_app``; it prints nothing on standard output.
"""

from __future__ import annotations

import os
import time

import victor_otel
from victor_otel import get_coordinator_metrics_collector

TICK = 0.02
SLOW_EVERY = 20
CHAT_MS, SLOW_MS, TOOL_MS, RETRIEVE_MS = 100.0, 3000.0, 50.0, 20.0


def main() -> None:
    error_every = int(os.environ.get("INCIDENT_ERROR_EVERY", "0"))
    victor_otel.init(service_name="incident", traces_exporter="none", metrics_port=int(os.environ["INCIDENT_PORT"]))
    collector = get_coordinator_metrics_collector()
    tick = 0
    next_at = time.monotonic()
    while True:
        tick += 1
        failed = error_every > 0 and tick % error_every == 0
        slow = tick % SLOW_EVERY == 0
        collector.track_execution("ChatCoordinator", duration_ms=SLOW_MS if slow else CHAT_MS, success=not failed,
                                  method="chat", error_type="ModelUnavailableError" if failed else None)
        if tick % 2 == 0:
            collector.track_execution("RetrievalCoordinator", duration_ms=RETRIEVE_MS, method="retrieve")
            if (tick // 2) % 5 == 0:
                collector.record_cache_miss("RetrievalCoordinator")
            else:
                collector.record_cache_hit("RetrievalCoordinator")
        if tick % 5 == 0:
            collector.track_execution("ToolCoordinator", duration_ms=TOOL_MS, method="run")
        next_at += TICK
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    main()
