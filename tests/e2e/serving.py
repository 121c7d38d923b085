"""Real servers in subprocesses (uvicorn, gunicorn) on 127.0.0.1, for the multi-worker and shutdown tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.faults import free_port

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.e2e.workers_app:app"


def uvicorn_command(workers: int = 4, app: str = APP) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}",
            "--workers", str(workers), "--log-level", "warning"]


def gunicorn_command(workers: int = 4, preload: bool = True, app: str = APP) -> list[str]:
    return [sys.executable, "-W", "ignore::DeprecationWarning", "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker",
            "-w", str(workers), "-b", "127.0.0.1:{port}", "--graceful-timeout", "20", "--log-level", "warning",
            *(["--preload"] if preload else []), app]


class Served:
    """A server process and its base URL."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def serve(command: Sequence[str], *, env: dict[str, str], log: Path, port: int | None = None,
          ready_path: str = "/metrics", start_timeout: float = 40.0) -> Iterator[Served]:
    """Start ``command`` (``{port}`` in it replaced by a free port), wait until it answers, stop it at the end."""
    port = port or free_port()
    argv = [part.replace("{port}", str(port)) for part in command]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    served = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited ({process.returncode}):\n{served.output()}")
            try:
                if httpx.get(served.url + ready_path, timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer within {start_timeout} s:\n{served.output()}")
            time.sleep(0.1)
        yield served
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL (the whole session) if it does not exit in time; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return process.returncode


async def hammer(url: str, n: int, concurrency: int = 20, fresh_connections: bool = True) -> list[httpx.Response]:
    """``n`` GETs of ``url``, ``concurrency`` at a time; with ``fresh_connections`` each request opens its own
    connection, so that the kernel spreads them over the workers instead of keep-alive pinning them."""
    keepalive = 0 if fresh_connections else concurrency
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=keepalive)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one() -> httpx.Response:
            async with semaphore:
                return await client.get(url)

        return list(await asyncio.gather(*(one() for _ in range(n))))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def metric(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))
