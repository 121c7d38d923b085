"""Shutdown of real processes: on SIGTERM readiness turns 503 first, buffered spans and logs are flushed
within the shutdown timeout and the process exits; nothing is lost when the collector is up, and a
collector that hangs cannot keep the process alive past its budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.serving import ROOT, serve, uvicorn_command
from tests.faults import FaultServer, wait_for

pytestmark = pytest.mark.e2e

REQUESTS = 50
DRAIN = 2.0
SHUTDOWN_TIMEOUT = 4.0


@pytest.fixture
def collector() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def environment(collector: FaultServer) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing leaves before shutdown: it all has to be flushed
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2048",  # (a full batch would leave at once: 64 spans by default)
        "OTEL_BLRP_SCHEDULE_DELAY": "60000",
        "VICTOR_OTEL_DRAIN_SECONDS": str(DRAIN),
        "VICTOR_OTEL_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "WORKERS_APP_LOG_LEVEL": "DEBUG",
    }


class Prober(threading.Thread):
    """Polls /health/ready and /work every 50 ms, recording (seconds since start, path, status or error)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: list[tuple[float, str, int | str]] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self.stop.wait(0.05):
                for path in ("/health/ready", "/work"):
                    try:
                        status: int | str = client.get(self.url + path).status_code
                    except httpx.HTTPError as error:
                        status = type(error).__name__
                    self.seen.append((time.monotonic() - self.start_time, path, status))


def test_sigterm_turns_readiness_503_then_flushes_everything_and_exits(
    tmp_path: Path, collector: FaultServer
) -> None:
    with serve(uvicorn_command(workers=1), env=environment(collector), log=tmp_path / "app.log",
               ready_path="/health/ready") as served:
        for _ in range(REQUESTS):
            assert httpx.get(f"{served.url}/work").status_code == 200
        assert collector.span_names == []  # all still buffered in the process
        prober = Prober(served.url)
        prober.start()
        wait_for(lambda: len(prober.seen) >= 4, what="the prober running")
        sent = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        code = served.process.wait(DRAIN + SHUTDOWN_TIMEOUT + 10)
        exited_after = time.monotonic() - sent
        prober.stop.set()
        prober.join()
    assert code in (0, -signal.SIGTERM), served.output()
    assert exited_after < DRAIN + SHUTDOWN_TIMEOUT + 5
    ready = [(t, status) for t, path, status in prober.seen if path == "/health/ready"]
    first_503 = next(t for t, status in ready if status == 503)
    served_while_draining = [status for t, path, status in prober.seen if path == "/work" and t >= first_503]
    assert all(status == 200 for t, status in ready if t < first_503)
    assert 200 in served_while_draining  # draining: out of rotation, still answering
    # Nothing lost: every coordinator span, every server span and every execution log record arrived.
    handled = [n for n in collector.span_names if n == "WorkerCoordinator.handle"]
    assert len(handled) >= REQUESTS + served_while_draining.count(200) - 1
    assert len(handled) == len([s for t, p, s in prober.seen if p == "/work" and s == 200]) + REQUESTS
    records = [b for b in collector.log_bodies if isinstance(b, str) and "handle" in b]
    assert len(records) == len(handled), collector.log_bodies[:5]


def test_a_hanging_collector_cannot_hold_the_process_past_its_budget(
    tmp_path: Path, collector: FaultServer
) -> None:
    collector.mode = "hang"
    env = {**environment(collector), "VICTOR_OTEL_DRAIN_SECONDS": "0", "VICTOR_OTEL_EXPORT_TIMEOUT": "30"}
    with serve(uvicorn_command(workers=1), env=env, log=tmp_path / "app.log") as served:
        for _ in range(REQUESTS):
            assert httpx.get(f"{served.url}/work").status_code == 200
        sent = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        code = served.process.wait(60)
        exited_after = time.monotonic() - sent
    assert code in (0, -signal.SIGTERM), served.output()
    # One budget for the whole exit, whatever the 30 s export timeout says: the lifespan flush gives up
    # after shutdown_timeout and the exit's shutdown does not wait again (before: twice the budget).
    assert exited_after < SHUTDOWN_TIMEOUT * 1.5, served.output()
    assert collector.count("traces") >= 1


SCRIPT = textwrap.dedent("""
    import sys, time
    import victor_otel

    victor_otel.init(service_name="plain-worker")

    @victor_otel.instrument(coordinator="JobCoordinator", method="run")
    def run(i):
        return i

    for i in range(int(sys.argv[1])):
        run(i)
    print("ready", flush=True)
    time.sleep(60)
""")


def test_a_plain_process_flushes_on_sigterm_then_dies_of_it(tmp_path: Path, collector: FaultServer) -> None:
    env = {**os.environ, **environment(collector)}
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(REQUESTS)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
        process.send_signal(signal.SIGTERM)
        code = process.wait(SHUTDOWN_TIMEOUT + 10)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == -signal.SIGTERM  # as it would without victor_otel: supervisors see the same exit
    assert collector.span_names.count("JobCoordinator.run") == REQUESTS


BUSY_SCRIPT = textwrap.dedent("""
    import os, signal, time
    import victor_otel
    from victor_otel.registry import get_registry

    victor_otel.init(service_name="busy-worker")

    @victor_otel.instrument(coordinator="JobCoordinator", method="run")
    def run(i):
        return i

    run(0)
    series, _ = get_registry().method_series("JobCoordinator", "run")
    with series.lock:  # in the middle of recording a call, as a busy process always nearly is
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the lock collection needs
        time.sleep(0.1)
    while True:  # still busy until the flush ends the process
        run(1)
""")


def test_sigterm_in_a_busy_process_sends_the_final_metrics_without_waiting_out_the_budget(
    collector: FaultServer,
) -> None:
    """A signal handler runs in the main thread wherever it stopped, maybe holding a lock the flush needs:
    the handler that waited for the flush made it wait its whole budget and lose the final metrics."""
    budget = 20.0
    env = {**os.environ, **environment(collector), "OTEL_METRICS_EXPORTER": "otlp",
           "OTEL_METRIC_EXPORT_INTERVAL": "600000", "VICTOR_OTEL_SHUTDOWN_TIMEOUT": str(budget)}
    began = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", BUSY_SCRIPT], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        code = process.wait(budget + 15)
    finally:
        if process.poll() is None:
            process.kill()
    took = time.monotonic() - began
    output = process.stdout.read().decode() if process.stdout else ""
    assert code == -signal.SIGTERM, output
    assert took < budget / 2, output  # the flush did not wait out its budget on a lock
    assert collector.total("victor.coordinator.executions", coordinator="JobCoordinator") >= 1, output
    assert "JobCoordinator.run" in collector.span_names
