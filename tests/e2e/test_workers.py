"""Many workers: the totals users see for one load are exact, under uvicorn and gunicorn (--preload too).

Each test serves ``tests/e2e/workers_app.py`` with 4 worker processes on 127.0.0.1, sends 400 requests
over fresh connections (so that the kernel spreads them over the workers), then checks both supported
ways of reading the totals:

- multi-process ``/metrics`` (``VICTOR_OTEL_MULTIPROC_DIR``): every scrape, whichever worker answers it,
  shows exactly 400 executions;
- OTLP push per worker: a local OTLP/HTTP sink (``tests/faults.py``) sums the cumulative counters over
  ``service.instance.id`` and gets exactly 400, every worker with an id of its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.serving import gunicorn_command, hammer, metric, serve, uvicorn_command
from tests.faults import FaultServer, wait_for

pytestmark = pytest.mark.e2e

REQUESTS = 400
EXECUTIONS = "victor_coordinator_executions_total"
LABELS = {"coordinator": "WorkerCoordinator", "method": "handle"}


@pytest.fixture
def sink() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def environment(tmp_path: Path, sink: FaultServer) -> dict[str, str]:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    return {
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
        "VICTOR_OTEL_MULTIPROC_DIR": str(directory),
        "VICTOR_OTEL_SHUTDOWN_TIMEOUT": "5",
    }


def check_exact_totals(url: str, sink: FaultServer, directory: Path) -> None:
    responses = asyncio.run(hammer(f"{url}/work", REQUESTS))
    assert [r.status_code for r in responses] == [200] * REQUESTS
    pids = {r.json()["pid"] for r in responses}
    assert len(pids) >= 2, "the load should have reached several workers"

    # Multi-process /metrics: converges within a snapshot interval, then every worker says 400.
    def scraped() -> float | None:
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            return metric(client.get(f"{url}/metrics").text, EXECUTIONS, **LABELS)

    wait_for(lambda: scraped() == REQUESTS, timeout=20, what=f"/metrics showing {REQUESTS} executions")
    answered_by = set()
    for _ in range(12):
        text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text
        assert metric(text, EXECUTIONS, **LABELS) == REQUESTS
        assert metric(text, "victor_coordinator_latency_seconds_count", **LABELS) == REQUESTS
        answered_by.update(re.findall(r'service_instance_id="([^"]+)"', text))
    snapshots = list(directory.glob("victor-otel-*.json"))
    assert len(snapshots) >= 4, [p.name for p in snapshots]  # one per worker (and the master's with --preload)

    # OTLP per worker: the sink sums the latest cumulative value over service.instance.id.
    try:
        wait_for(lambda: sink.total("victor.coordinator.executions", **LABELS) == REQUESTS, timeout=20,
                 what=f"the OTLP sink summing {REQUESTS} executions")
    except AssertionError as error:
        per_instance = {i: {n: v for n, v in sums.items() if n[0] == "victor.coordinator.executions"}
                        for i, sums in sink.metric_sums().items()}
        raise AssertionError(f"{error}; per instance: {per_instance}; pids served: {sorted(pids)}") from None
    reporting = [i for i, sums in sink.metric_sums().items()
                 if any(name == "victor.coordinator.executions" for name, _ in sums)]
    assert len(reporting) == len(set(reporting)) >= len(pids)  # each worker that served has an id of its own
    assert len(sink.instances) >= 4


def test_uvicorn_workers_totals_are_exact(tmp_path: Path, sink: FaultServer) -> None:
    env = environment(tmp_path, sink)
    with serve(uvicorn_command(workers=4), env=env, log=tmp_path / "uvicorn.log") as served:
        check_exact_totals(served.url, sink, Path(env["VICTOR_OTEL_MULTIPROC_DIR"]))


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_uvicorn_workers_totals_are_exact(tmp_path: Path, sink: FaultServer, preload: bool) -> None:
    env = environment(tmp_path, sink)
    with serve(gunicorn_command(workers=4, preload=preload), env=env, log=tmp_path / "gunicorn.log") as served:
        check_exact_totals(served.url, sink, Path(env["VICTOR_OTEL_MULTIPROC_DIR"]))
