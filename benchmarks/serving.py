"""App servers for the benchmarks that load a real server (``bench_load``, ``bench_edge``): one uvicorn
process per set-up on 127.0.0.1, and a keep-alive HTTP/1.1 client that costs next to nothing.

:func:`start_server` starts ``uvicorn --factory <module>:<factory>``, :func:`wait_ready` polls a path until it
answers, :func:`stop_server` stops it (SIGTERM, then SIGKILL of its process group); :func:`served` is the
three as a context manager. :func:`get` sends one GET on an open connection (httpx's pool, not the server,
becomes the bottleneck at 50 concurrent requests on 2 cores).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(target: str, env: dict[str, str], port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``uvicorn --factory target`` (``module:function``) on a free loopback port; the process and its URL."""
    port = free_port() if port is None else port
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", target, "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def wait_ready(process: subprocess.Popen[bytes], url: str, path: str, timeout: float = 30.0) -> None:
    """Poll ``url + path`` until it answers (any status); raise if the process exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{url}{path}", timeout=1)
            return
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server of {process.args!r} did not start") from None
            time.sleep(0.1)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL of the process group after 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@contextmanager
def served(target: str, env: dict[str, str], ready_path: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """:func:`start_server`, :func:`wait_ready`, and :func:`stop_server` on the way out."""
    process, url = start_server(target, env)
    try:
        wait_ready(process, url, ready_path)
        yield process, url
    finally:
        stop_server(process)


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str) -> int:
    """One keep-alive HTTP/1.1 GET on an open connection; returns the status."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def chat_clients(url: str, number: int, concurrency: int) -> list[float]:
    """``number`` GETs of ``/chat?message=<i>`` from ``concurrency`` keep-alive connections, shared out evenly;
    the latency of each (seconds). Any answer but 200 fails the round."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []

    async def client(first: int, count: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for i in range(first, first + count):
            start = time.perf_counter()
            status = await get(reader, writer, f"/chat?message={i}")
            latencies.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"/chat answered {status}")
        writer.close()

    share, rest = divmod(number, concurrency)
    counts = [share + (1 if c < rest else 0) for c in range(concurrency)]
    await asyncio.gather(*(client(sum(counts[:c]), n) for c, n in enumerate(counts)))
    return latencies
