"""Several worker processes behind one port: multi-process ``/metrics`` snapshots and their sum.

Every worker writes its counters to ``multiproc_dir``; whichever worker answers a scrape sums every
snapshot per label set (a dead worker's included), recomputing the window gauges from summed counts.
Draining on SIGTERM (``web/lifespan.py``) and ``bootstrap.flush()`` are tested with the rest of shutdown in
tests/test_reliability_shutdown.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import victor_otel
from tests.conftest import CountedWork, in_child, record, scrape, value
from victor_otel import multiprocess

EXECUTIONS = "victor_coordinator_executions_total"
LATENCY_COUNT = "victor_coordinator_latency_seconds_count"


_counted = CountedWork("WorkerCoordinator")
work, fail, executions = _counted.work, _counted.fail, _counted.executions


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
                "errors": value(seen, "victor_coordinator_errors_by_type_total", coordinator="WorkerCoordinator",
                                method="work", error_type="ValueError")}

    result = in_child(worker)
    # The child saw the parent's counts (read from the parent's snapshot) plus its own.
    assert result == {"executions": 6 + 9, "errors": 1 + 2}
    samples = scrape()  # the parent, after the child is gone: a dead worker's counts are kept
    assert executions(samples) == 15
    assert value(samples, LATENCY_COUNT, coordinator="WorkerCoordinator", method="work") == 15
    assert value(samples, "victor_coordinator_errors_by_type_total", coordinator="WorkerCoordinator", method="work",
                 error_type="ValueError") == 3
    assert value(samples, "victor_coordinator_errors_total", coordinator="WorkerCoordinator", method="work") == 3
    # Window gauges are recomputed from summed counts: 3 errors out of 15 calls.
    assert value(samples, "victor_coordinator_error_rate", coordinator="WorkerCoordinator") == pytest.approx(3 / 15)
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



def points(metrics: list[Any], name: str) -> list[Any]:
    return [p for m in metrics if m.name == name for p in m.data.data_points]


def test_histograms_are_summed_bucket_by_bucket_and_process_gauges_are_the_answering_workers(
    tmp_path: Path,
) -> None:
    telemetry = victor_otel.init(service_name="workers", traces_exporter="none", multiproc_dir=str(tmp_path))
    assert telemetry.multiprocess is not None
    for duration in (0.001, 0.3, 7.0):
        record("Chat", "chat", duration)
    own = telemetry.multiprocess.snapshot()
    other = json.loads(json.dumps(own))  # another worker that made the same calls
    for gauge in other["gauges"]:
        gauge[-1] = -1.0  # its memory, CPU and uptime describe that worker, not the one answering
    merged = multiprocess.merge_snapshots(own, [other], window_seconds=60.0)
    (latency,) = points(merged, "victor.coordinator.latency")
    (own_latency,) = points(multiprocess.merge_snapshots(own, [], window_seconds=60.0), "victor.coordinator.latency")
    assert latency.count == 6 and latency.sum == pytest.approx(2 * (0.001 + 0.3 + 7.0))
    assert list(latency.bucket_counts) == [2 * n for n in own_latency.bucket_counts]
    (executions_point,) = points(merged, "victor.coordinator.executions")
    assert executions_point.value == 6
    (throughput,) = points(merged, "victor.coordinator.throughput")
    (window,) = own["windows"]  # [attributes, calls, errors, hits, misses, seconds the window covers]
    assert throughput.value == pytest.approx(6 / window[-1])  # recomputed from the summed window counts
    for name in ("victor.coordinator.memory", "victor.coordinator.cpu", "victor.coordinator.uptime"):
        assert all(p.value != -1.0 for p in points(merged, name)), name


def test_a_snapshot_with_other_buckets_is_not_added(tmp_path: Path) -> None:
    telemetry = victor_otel.init(service_name="workers", traces_exporter="none", multiproc_dir=str(tmp_path))
    assert telemetry.multiprocess is not None
    record("Chat", "chat", 0.3)
    own = telemetry.multiprocess.snapshot()
    other = json.loads(json.dumps(own))
    for histogram in other["histograms"]:  # a worker of another version, with other bucket bounds
        histogram[-2] = [1.0, 2.0]
        histogram[-1] = [5, 0, 0]
    merged = multiprocess.merge_snapshots(own, [other], window_seconds=60.0)
    (latency,) = points(merged, "victor.coordinator.latency")
    assert latency.count == 1  # its counters still add up where they can be added
    (executions_point,) = points(merged, "victor.coordinator.executions")
    assert executions_point.value == 2


def test_the_directory_is_created_and_probed(tmp_path: Path) -> None:
    path = multiprocess.check_directory(str(tmp_path / "a" / "b"))
    assert path.is_dir() and list(path.iterdir()) == []  # the probe file is gone
