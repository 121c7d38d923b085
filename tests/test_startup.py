"""startup: the one wiring point, the one lazy start, the one reset."""

from __future__ import annotations

import io
import logging
import threading

import pytest

import victor_otel
from victor_otel import bootstrap, decorators, startup
from victor_otel.checks.runner import get_health
from victor_otel.redaction import Redactor, get_redactor
from victor_otel.registry import get_registry


def test_init_wires_health_into_every_collection() -> None:
    telemetry = startup.init(service_name="wired", traces_exporter="none")
    assert get_health().produce in telemetry.producers
    body, _ = startup.render(telemetry=telemetry)
    assert b'victor_health_status{check="telemetry:lifecycle"' in body


def test_a_route_served_before_init_starts_the_whole_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "lazy")
    assert bootstrap.current() is None
    body, _ = startup.render()  # as /metrics and the seed's exporter do
    telemetry = bootstrap.current()
    assert telemetry is not None and telemetry.settings.service_name == "lazy"
    assert get_health().produce in telemetry.producers  # wired as init() wires, not the providers alone
    assert b"victor_health_status" in body


def test_the_lazy_start_happens_once_under_concurrent_first_requests() -> None:
    seen: list[bootstrap.Telemetry] = []
    barrier = threading.Barrier(8)

    def first_request() -> None:
        barrier.wait()
        seen.append(startup.current_or_init())

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and len({id(t) for t in seen}) == 1


def test_health_routes_do_not_restart_a_stopped_process_but_metrics_do() -> None:
    victor_otel.init(service_name="stopping", traces_exporter="none")
    victor_otel.shutdown()
    assert startup.current_or_first_init() is None  # readiness must say "stopped", not start again
    assert bootstrap.current() is None
    assert startup.current_or_init() is bootstrap.current() is not None  # the seed's /metrics always answers


def test_reset_puts_every_process_wide_state_back() -> None:
    victor_otel.init(service_name="dirty", traces_exporter="none")

    @victor_otel.coordinator("DirtyCoordinator")
    class Dirty:
        def run(self) -> int:
            return 1

    Dirty().run()
    victor_otel.add_health_check("cache", lambda: True)
    victor_otel.set_health_thresholds("DirtyCoordinator", latency_p95_warn=1.0)
    victor_otel.setup_coordinator_logging(stream=io.StringIO(), redact_patterns=[r"project-\d+"])
    assert get_registry().coordinators and decorators._runtime.on_execution is not None
    assert get_redactor().text("project-7") != "project-7"

    startup.reset()

    assert bootstrap.current() is None
    assert not get_registry().coordinators
    assert not victor_otel.remove_health_check("cache")  # gone already
    assert get_health().thresholds("DirtyCoordinator") == get_health().thresholds()
    assert decorators._runtime.on_execution is None
    assert not logging.getLogger("victor.coordinators").handlers
    assert get_redactor().text("project-7") == Redactor().text("project-7") == "project-7"


def test_run_within_gives_up_on_work_that_hangs_and_reports_work_that_finished() -> None:
    release = threading.Event()
    assert bootstrap.run_within(0.05, "test-hang", lambda: release.wait(5)) is False
    release.set()
    assert bootstrap.run_within(5.0, "test-quick", lambda: None) is True
