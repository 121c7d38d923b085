"""Fork safety and the multi-process /metrics mode, with real os.fork() children.

A child forked after ``init()`` (gunicorn ``--preload``) counts from zero, has its own
``service.instance.id`` and its own OTLP connection, cannot deadlock on a lock another thread held at
the fork, and in multi-process mode every worker's counters are summed by whichever process answers
``/metrics``, a dead worker's included.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import victor_otel
from tests.conftest import scrape, value
from tests.faults import FaultServer, wait_for
from victor_otel import bootstrap, multiprocess, process
from victor_otel.registry import get_registry

EXECUTIONS = "victor_coordinator_executions_total"
LATENCY_COUNT = "victor_coordinator_latency_seconds_count"


@victor_otel.instrument(coordinator="ForkCoordinator", method="work")
def work(i: int) -> int:
    if i < 0:
        raise ValueError("negative")
    return i


def fail() -> None:
    with contextlib.suppress(ValueError):
        work(-1)


def executions(samples: dict[Any, float] | None = None) -> float | None:
    return value(samples or scrape(), EXECUTIONS, coordinator="ForkCoordinator", method="work")


def in_child(body: Callable[[], dict[str, Any]], timeout: float = 30.0) -> dict[str, Any]:
    """Run ``body`` in a forked child; return what it returned (JSON), fail if it hangs or crashes."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(body()).encode())
            code = 0
        except BaseException as error:  # report, do not raise into pytest's stack
            os.write(write_end, json.dumps({"error": repr(error)}).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung (a lock held at fork time?)")
        time.sleep(0.02)
    with os.fdopen(read_end, "rb") as pipe:
        result: dict[str, Any] = json.loads(pipe.read() or b"{}")
    assert "error" not in result, result.get("error")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return result


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
        }

    result = in_child(child)
    assert result["instance"] != parent_id and len(result["instance"]) == 36
    assert result["instance"] in result["target_info"][0]
    assert result["same_exporter"] is False  # a fresh HTTP session: no connection shared with the parent
    assert result["before"] is None and result["after"] == 2  # the parent's 3 calls are the parent's
    assert result["exported"]["success"] == 2 and result["exported"]["failure"] == 0
    assert result["pid_gauge"] != os.getpid()  # memory and CPU gauges follow the child
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


# -- multi-process /metrics -------------------------------------------------------------------------


def test_every_workers_counts_are_summed_whichever_process_answers(tmp_path: Path) -> None:
    telemetry = victor_otel.init(service_name="workers", traces_exporter="none", multiproc_dir=str(tmp_path))
    for i in range(5):
        work(i)
    fail()  # one error in the parent
    assert executions() == 6  # a scrape writes this process's snapshot (the writer also does, every second)

    def worker() -> dict[str, Any]:
        for i in range(7):
            work(i)
        for _ in range(2):
            fail()
        seen = scrape()
        victor_otel.shutdown()  # exits: its last snapshot stays behind
        return {"executions": executions(seen),
                "errors": value(seen, "victor_coordinator_errors_by_type_total", coordinator="ForkCoordinator",
                                method="work", error_type="ValueError")}

    result = in_child(worker)
    # The child saw the parent's counts (read from the parent's snapshot) plus its own.
    assert result == {"executions": 6 + 9, "errors": 1 + 2}
    samples = scrape()  # the parent, after the child is gone: a dead worker's counts are kept
    assert executions(samples) == 15
    assert value(samples, LATENCY_COUNT, coordinator="ForkCoordinator", method="work") == 15
    assert value(samples, "victor_coordinator_errors_by_type_total", coordinator="ForkCoordinator", method="work",
                 error_type="ValueError") == 3
    assert value(samples, "victor_coordinator_errors_total", coordinator="ForkCoordinator", method="work") == 3
    # Window gauges are recomputed from summed counts: 3 errors out of 15 calls.
    assert value(samples, "victor_coordinator_error_rate", coordinator="ForkCoordinator") == pytest.approx(3 / 15)
    assert len(list(tmp_path.glob("victor-otel-*.json"))) == 2
    assert telemetry.multiprocess is not None


def test_a_corrupt_or_foreign_snapshot_is_ignored(tmp_path: Path) -> None:
    victor_otel.init(service_name="workers", traces_exporter="none", multiproc_dir=str(tmp_path))
    (tmp_path / "victor-otel-1-garbage.json").write_text("{not json")
    (tmp_path / "victor-otel-2-foreign.json").write_text(json.dumps({"format": 1, "sums": [["x"]]}))
    (tmp_path / "victor-otel-3-list.json").write_text("[]")
    work(1)
    assert executions() == 1


def test_stale_snapshots_keep_their_counters_but_leave_the_window(tmp_path: Path) -> None:
    own = {"sums": [], "histograms": [], "gauges": [], "windows": [[{"coordinator": "C"}, 10, 1, 0, 0, 60.0]],
           "written": time.time()}
    stale = {"sums": [["victor.coordinator.executions", "{call}", "d", {"coordinator": "C", "method": "m"}, 1, 40,
                       True]],
             "histograms": [], "gauges": [], "windows": [[{"coordinator": "C"}, 30, 30, 0, 0, 60.0]],
             "written": time.time() - 3600}
    metrics = {m.name: m for m in multiprocess.merge_snapshots(own, [stale], window_seconds=60.0)}
    assert metrics["victor.coordinator.executions"].data.data_points[0].value == 40
    (rate,) = metrics["victor.coordinator.error_rate"].data.data_points
    assert rate.value == pytest.approx(0.1)  # the stale worker's 30 errors are out of the window


def test_an_unwritable_multiproc_dir_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(victor_otel.VictorOtelConfigError, match="multiproc_dir"):
        victor_otel.init(service_name="workers", traces_exporter="none", multiproc_dir=str(blocker / "sub"))
    assert victor_otel.current() is None
