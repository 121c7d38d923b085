"""Draining and flushing in-process: the SIGTERM handlers victor_otel installs, and flush() within its budget.

The end-to-end proof with real processes and signals is ``tests/e2e/test_faults.py``.
"""

from __future__ import annotations

import asyncio
import io
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import victor_otel
from tests.faults import FaultServer
from victor_otel import Lifecycle, bootstrap
from victor_otel.web import lifespan


@pytest.fixture(autouse=True)
def _restore_sigterm() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def test_the_app_lifespan_puts_a_drain_step_before_the_servers_handler_and_removes_it() -> None:
    victor_otel.init(service_name="drain", traces_exporter="none", drain_seconds=0.2)
    calls: list[int] = []

    def server_handler(signum: int, frame: Any) -> None:  # what uvicorn installs while it serves
        calls.append(signum)

    signal.signal(signal.SIGTERM, server_handler)
    app = victor_otel.instrument_app(FastAPI())

    async def serve() -> None:  # the lifespan runs in the main thread, as under uvicorn
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://app"
        ) as client:
            handler = signal.getsignal(signal.SIGTERM)
            assert getattr(handler, "_victor_otel_drain", False) and callable(handler)
            assert (await client.get("/health/ready")).status_code == 200
            handler(signal.SIGTERM, None)  # what the kernel does on SIGTERM
            assert (await client.get("/health/ready")).status_code == 503  # out of rotation...
            assert (await client.get("/health/live")).status_code == 200  # ...alive and still serving
            assert calls == []  # the server is told to stop only after drain_seconds
            deadline = time.monotonic() + 5
            while not calls and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert calls == [signal.SIGTERM]

    asyncio.run(serve())
    assert victor_otel.current().lifecycle is Lifecycle.DRAINING  # type: ignore[union-attr]
    assert signal.getsignal(signal.SIGTERM) is server_handler  # the app stopped: its handler went with it


def test_a_test_client_lifespan_in_another_thread_touches_no_signal() -> None:
    victor_otel.init(service_name="drain", traces_exporter="none")
    before = signal.getsignal(signal.SIGTERM)
    with TestClient(victor_otel.instrument_app(FastAPI())) as client:
        assert client.get("/health/ready").status_code == 200
        assert signal.getsignal(signal.SIGTERM) is before


def test_init_installs_a_flush_on_sigterm_only_where_there_is_no_handler() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    victor_otel.init(service_name="drain", traces_exporter="none")
    installed = signal.getsignal(signal.SIGTERM)
    assert callable(installed) and installed is not signal.SIG_DFL
    victor_otel.shutdown()

    def mine(signum: int, frame: Any) -> None:
        pass

    signal.signal(signal.SIGTERM, mine)
    victor_otel.init(service_name="drain", traces_exporter="none")
    assert signal.getsignal(signal.SIGTERM) is mine  # the application's own handler is left alone


def test_no_signal_handler_is_touched_from_another_thread() -> None:
    results: list[bool] = []
    victor_otel.init(service_name="drain", traces_exporter="none")
    thread = threading.Thread(
        target=lambda: results.extend([lifespan.wrap_sigterm(), bootstrap.install_exit_handler()]))
    thread.start()
    thread.join()
    assert results == [False, False]


def test_flush_exports_what_is_buffered_and_keeps_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    with FaultServer() as collector:
        telemetry = victor_otel.init(service_name="drain", traces_exporter="otlp", otlp_endpoint=collector.url)
        with victor_otel.track("DrainCoordinator", "step"):
            pass
        assert collector.span_names == []
        assert bootstrap.flush(timeout=5) is True
        assert collector.span_names == ["DrainCoordinator.step"]
        assert telemetry.lifecycle is Lifecycle.READY  # a flush is not a shutdown


def test_flush_gives_up_within_its_budget_on_a_hanging_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    with FaultServer(mode="hang") as collector:
        victor_otel.init(service_name="drain", traces_exporter="otlp", otlp_endpoint=collector.url,
                         export_timeout=30)
        with victor_otel.track("DrainCoordinator", "step"):
            pass
        began = time.monotonic()
        assert bootstrap.flush(timeout=0.5) is False
        assert time.monotonic() - began < 0.5 + 1.0
        assert victor_otel.shutdown(timeout=0.5) is False


def test_an_abandoned_shutdown_still_accounts_for_every_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """success + failure + dropped == created, after a shutdown that gave up too: the queued items are
    dropped, the batch in flight failed (before: 24,000 created, 21,952 accounted, the rest 'queued')."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64")
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "10")
    monkeypatch.setenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "64")
    calls = 3_000  # past the 2,048-item queues: some dropped when full, some queued, one batch hanging
    with FaultServer(mode="hang") as collector:
        telemetry = victor_otel.init(service_name="drain", traces_exporter="otlp", logs_exporter="otlp",
                                     otlp_endpoint=collector.url, export_timeout=30)
        victor_otel.setup_coordinator_logging(level="INFO", success_level="INFO", stream=io.StringIO())
        try:
            for _ in range(calls):
                with victor_otel.track("DrainCoordinator", "step"):
                    pass
            assert victor_otel.shutdown(timeout=0.5) is False
        finally:
            victor_otel.teardown_coordinator_logging()
        stats = telemetry.export_stats()
    for signal_name in ("traces", "logs"):
        counts = stats[signal_name]
        assert counts["queued"] == 0, counts
        assert counts["success"] + counts["failure"] + counts["dropped"] == calls, counts
        assert counts["failure"] >= 1 and counts["dropped"] >= 1, counts
    assert stats["traces"]["last_error"] == "abandoned at shutdown"


def test_one_budget_for_the_whole_exit(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The app's lifespan flush and the interpreter's exit shutdown do not each spend shutdown_timeout
    against the same hanging collector (uvicorn's exit took 11.4 s for a 5 s budget)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    budget = 1.0
    with FaultServer(mode="hang") as collector:
        victor_otel.init(service_name="drain", traces_exporter="otlp", otlp_endpoint=collector.url,
                         export_timeout=30, shutdown_timeout=budget)
        with victor_otel.track("DrainCoordinator", "step"):
            pass
        assert bootstrap.flush() is False  # the lifespan's flush spends the budget
        began = time.monotonic()
        with caplog.at_level("WARNING", logger="victor_otel"):
            assert victor_otel.shutdown() is False  # the exit's shutdown does not wait again
        assert time.monotonic() - began < budget / 2
    assert "one shutdown_timeout for the whole exit" in caplog.text


def test_a_shutdown_after_the_collector_recovered_gets_its_whole_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    with FaultServer(mode="hang") as collector:
        telemetry = victor_otel.init(service_name="drain", traces_exporter="otlp", otlp_endpoint=collector.url,
                                     export_timeout=2.0, shutdown_timeout=1.0)
        with victor_otel.track("DrainCoordinator", "before"):
            pass
        assert bootstrap.flush() is False
        collector.mode = "ok"
        assert telemetry.stalled_since_last_flush()
        with victor_otel.track("DrainCoordinator", "after"):
            pass
        assert bootstrap.flush(timeout=10) is True  # the hanging request timed out; the rest went through
        assert not telemetry.stalled_since_last_flush()
        assert victor_otel.shutdown() is True


def test_init_outside_the_main_thread_says_once_that_sigterm_will_not_flush(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    monkeypatch.setattr(bootstrap, "_warned_off_main_thread", False)

    def init_and_stop() -> None:
        victor_otel.init(service_name="thread", traces_exporter="none")
        victor_otel.shutdown()

    with caplog.at_level("WARNING", logger="victor_otel"):
        for _ in range(3):
            thread = threading.Thread(target=init_and_stop)
            thread.start()
            thread.join()
    warnings = [r for r in caplog.records if "outside the main thread" in r.getMessage()]
    assert len(warnings) == 1 and "victor_otel.shutdown()" in warnings[0].getMessage()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
