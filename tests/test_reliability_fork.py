"""Fork safety, with real os.fork() children.

A child forked after ``init()`` (gunicorn ``--preload``) counts from zero, has its own
``service.instance.id`` and its own OTLP connection, and cannot deadlock on a lock another thread held at
the fork. The multi-process ``/metrics`` mode is tested in tests/test_multiprocess.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import victor_otel
from tests.conftest import CountedWork, in_child
from tests.faults import FaultServer, wait_for
from victor_otel import bootstrap, process
from victor_otel.registry import get_registry

EXECUTIONS = "victor_coordinator_executions_total"
LATENCY_COUNT = "victor_coordinator_latency_seconds_count"


_counted = CountedWork("ForkCoordinator")
work, fail, executions = _counted.work, _counted.fail, _counted.executions


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultServer]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    with FaultServer() as server:
        yield server


def test_a_forked_child_counts_from_zero_with_its_own_identity_and_connection(collector: FaultServer) -> None:
    telemetry = victor_otel.init(service_name="fork", traces_exporter="otlp", otlp_endpoint=collector.url,
                                 export_timeout=2.0)
    for i in range(3):
        work(i)
    wait_for(lambda: telemetry.export_stats()["traces"]["success"] == 3, what="the parent's 3 spans")
    parent_id = telemetry.resource.attributes["service.instance.id"]
    parent_exporter = telemetry._exporters[0].inner

    def child() -> dict[str, Any]:
        before = executions()
        for i in range(2):
            work(i)
        telemetry.tracer_provider.force_flush()
        return {
            "instance": telemetry.resource.attributes["service.instance.id"],
            "target_info": [line for line in victor_otel.render()[0].decode().splitlines()
                            if line.startswith("target_info")],
            "same_exporter": telemetry._exporters[0].inner is parent_exporter,
            "before": before, "after": executions(), "exported": telemetry.export_stats()["traces"],
            "pid_gauge": process.sampler().pid,
            "export_process": telemetry._exporters[0].inner.pid,
        }

    result = in_child(child)
    assert result["instance"] != parent_id and len(result["instance"]) == 36
    assert result["instance"] in result["target_info"][0]
    assert result["same_exporter"] is False  # a fresh HTTP session: no connection shared with the parent
    assert result["before"] is None and result["after"] == 2  # the parent's 3 calls are the parent's
    assert result["exported"]["success"] == 2 and result["exported"]["failure"] == 0
    assert result["pid_gauge"] != os.getpid()  # memory and CPU gauges follow the child
    # Each process has its own export process: the child never wrote to its parent's.
    assert parent_exporter.pid is not None and result["export_process"] not in (None, parent_exporter.pid)
    wait_for(lambda: len(collector.span_names) == 5, what="3 + 2 spans at the collector")
    assert sorted(collector.span_instances) == sorted([parent_id] * 3 + [result["instance"]] * 2)
    # The parent is untouched.
    assert telemetry.resource.attributes["service.instance.id"] == parent_id
    assert executions() == 3 and telemetry.export_stats()["traces"]["success"] == 3


@contextlib.contextmanager
def held_by_another_thread(*locks: Any) -> Iterator[None]:
    """``locks`` taken by another thread for the duration of the block (and so at any fork in it)."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    try:
        yield
    finally:
        release.set()
        holder.join()


def test_a_lock_held_by_another_thread_at_fork_time_does_not_hang_the_child() -> None:
    victor_otel.init(service_name="fork", traces_exporter="none")
    work(1)

    def child() -> dict[str, Any]:
        get_registry().reset()  # needs the registry lock
        work(2)
        return {"after": executions(), "shutdown": victor_otel.shutdown(timeout=2)}  # needs bootstrap's

    with held_by_another_thread(bootstrap._lock, get_registry()._lock):
        result = in_child(child, timeout=20)
    assert result == {"after": 1, "shutdown": True}


def test_a_collection_under_way_at_fork_time_does_not_hang_the_childs_scrapes() -> None:
    # gunicorn --preload with a short OTLP interval: the parent's periodic reader collects while the
    # arbiter forks. The SDK's collection lock is held across the fork (briefly waited for), and the
    # health producer's lock is renewed in the child.
    from victor_otel.health import get_health

    telemetry = victor_otel.init(service_name="fork", traces_exporter="none")
    work(1)
    consumer_lock = telemetry.meter_provider._measurement_consumer._lock
    holding, release = threading.Event(), threading.Event()

    def collect_slowly() -> None:
        with consumer_lock:
            holding.set()
            time.sleep(0.5)  # a collection that is still going when the fork starts

    def produce_health() -> None:
        with get_health()._lock:  # held across the fork: the child must not inherit it taken
            release.wait(10)

    threads = [threading.Thread(target=collect_slowly), threading.Thread(target=produce_health)]
    for thread in threads:
        thread.start()
    holding.wait(5)
    try:
        result = in_child(lambda: {"scraped": b"victor_health_status" in victor_otel.render()[0]}, timeout=20)
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert result == {"scraped": True}


@pytest.mark.parametrize("initialised", [False, True], ids=["without-init", "after-init"])
def test_a_write_under_way_at_fork_time_does_not_hang_the_childs_first_record(tmp_path: Path,
                                                                                 initialised: bool) -> None:
    # setup_coordinator_logging's file handler and threads making decorated calls: a thread writing at the
    # moment of the fork held the handler's lock (or the file's buffer lock under it), and the child's first
    # decorated call hung there for ever (1 in 20 to 8 in 30 forks before the fix). With the lock held in
    # our hands across the fork, no thread is half-way through a write.
    if initialised:
        victor_otel.init(service_name="fork", traces_exporter="none")
    log = tmp_path / "coordinators.jsonl"
    victor_otel.setup_coordinator_logging(level="DEBUG", success_level="INFO", output_file=log)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            work(1)

    threads = [threading.Thread(target=busy) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(25):
            time.sleep(0.01)
            assert in_child(lambda: {"n": work(7)}, timeout=10) == {"n": 7}
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        victor_otel.teardown_coordinator_logging()
    lines = log.read_text().splitlines()
    assert sum('"method":"work"' in line for line in lines) >= 25  # parent and children kept writing
    assert all(json.loads(line)["message"].startswith("ForkCoordinator.work") for line in lines)


def test_a_coordinator_lock_held_at_fork_time_without_init_does_not_hang_the_child() -> None:
    # The seed's way: decorators and collectors without init(). The registry renews its locks in the child.
    work(1)
    series, _ = get_registry().method_series("ForkCoordinator", "work")
    with held_by_another_thread(series.lock, get_registry()._lock):
        result = in_child(lambda: {"n": work(3), "after": executions()}, timeout=10)
    assert result == {"n": 3, "after": 1}  # the child counts its own call only


def test_the_fork_hooks_leave_the_parent_untouched() -> None:
    from victor_otel import forking

    victor_otel.init(service_name="fork", traces_exporter="none")
    work(1)
    assert forking._registered and bootstrap._after_fork_in_child in forking._after_in_child
    forking._run_before()
    forking._run_parent()  # what a fork does in the parent: hold, then release
    assert executions() == 1 and not bootstrap._held_at_fork
