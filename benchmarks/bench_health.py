"""Probe latency of the health endpoints under storms of concurrent probes, while coordinators run.

    python -m benchmarks.bench_health [--rounds 10] [--concurrency 200] [--coordinators 10]

A server process (uvicorn, one worker, as in a pod) serves ``instrument_app``'s routes with a sync and
an async user check registered, while two threads of that process keep ``--coordinators`` coordinators
busy. This process fires rounds of ``--concurrency`` simultaneous probes, each on its own connection
as kubelets and load balancers do, spread over ``/health``, ``/health/ready``, ``/health/live`` and
``/health/detailed``; every other round it fires as many at ``/ping``, a bare JSON route of the same
server: the anchor, so that the figures say what health adds to serving any request at that
concurrency on this machine. Prints p50 / p95 / p99 / max per endpoint and the errors (anything but
HTTP 200). ``python -m benchmarks`` shows the p99 beside the anchor's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import Result

PATHS = ("/health", "/health/ready", "/health/live", "/health/detailed")
ROOT = Path(__file__).resolve().parents[1]
#: What health may add to the p99 of a bare route under the same storm (a ratio of p99s).
TARGET_RATIO = 3.0


# -- the server process -----------------------------------------------------------------------------


def serve(coordinators: int) -> None:
    """In the server process: print the port once listening, serve until stdin closes."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    import victor_otel

    victor_otel.init(service_name="bench", traces_exporter="none")

    async def llm_gateway() -> None:
        await asyncio.sleep(0.005)

    victor_otel.add_health_check("llm_gateway", llm_gateway, critical=True)
    victor_otel.add_health_check("vector_store", lambda: time.sleep(0.005), critical=True)

    async def ping(request: Any) -> JSONResponse:
        return JSONResponse({"status": "pass"})

    app = victor_otel.instrument_app(Starlette(routes=[Route("/ping", ping)]))
    sites = [victor_otel.track(f"Coordinator{i}", "run") for i in range(coordinators)]

    def load() -> None:
        while True:
            for site in sites:
                with site:
                    pass
            time.sleep(0.001)

    for _ in range(2):
        threading.Thread(target=load, daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    print(server.servers[0].sockets[0].getsockname()[1], flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.should_exit = True
    thread.join(10)


# -- the client side --------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def storms(url: str, rounds: int, concurrency: int) -> tuple[dict[str, list[float]], int]:
    """Alternate a health storm and a /ping storm, ``rounds`` times each."""
    latencies: dict[str, list[float]] = defaultdict(list)
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)

    async def probe(http: httpx.AsyncClient, path: str, keep: bool = True) -> None:
        nonlocal errors
        started = time.perf_counter()
        response = await http.get(path)
        elapsed = time.perf_counter() - started
        if keep:
            latencies[path].append(elapsed)
            errors += response.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        for path in (*PATHS, "/ping"):  # warm-up: heartbeat, psutil, first check runs, imports
            await probe(http, path, keep=False)
        for i in range(2 * rounds):
            if i % 2:
                await asyncio.gather(*(probe(http, "/ping") for _ in range(concurrency)))
            else:
                first = i // 2 * concurrency  # rotate, so that every endpoint is probed at any concurrency
                await asyncio.gather(*(probe(http, PATHS[(first + j) % len(PATHS)]) for j in range(concurrency)))
    return latencies, errors


def measure(rounds: int, concurrency: int, coordinators: int) -> tuple[dict[str, list[float]], int]:
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_health", "--serve", "--coordinators", str(coordinators)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        return asyncio.run(storms(f"http://127.0.0.1:{port}", rounds, concurrency))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def run(quick: bool) -> list[Result]:
    """For ``python -m benchmarks``: the p99 of health probes against the bare route's, same storms."""
    rounds = 2 if quick else 10
    latencies, errors = measure(rounds, 200, 10)
    health = [v for path in PATHS for v in latencies[path]]
    ours, anchor = quantile(health, 0.99), quantile(latencies["/ping"], 0.99)
    return [
        Result(
            case="health", what="p99 of 200 concurrent health probes (coordinators busy) vs a bare route",
            ours=ours, anchor=anchor, ratio=ours / anchor, target=f"<= {TARGET_RATIO:g}",
            passed=errors == 0 and ours / anchor <= TARGET_RATIO, rounds=rounds,
            note=f"{errors} errors; p50 {quantile(health, 0.5) * 1000:.0f} ms",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Probe latency of the health endpoints under probe storms.")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--coordinators", type=int, default=10)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.coordinators)
        return 0
    latencies, errors = measure(args.rounds, args.concurrency, args.coordinators)
    print(f"{args.rounds} rounds x {args.concurrency} concurrent probes (new connection each), "
          f"{args.coordinators} busy coordinators in the server process")
    print(f"{'endpoint':<20}{'probes':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    health = [v for path in PATHS for v in latencies[path]]
    rows = [*((p, latencies[p]) for p in PATHS), ("all health", health), ("/ping (anchor)", latencies["/ping"])]
    for path, values in rows:
        if not values:
            continue
        print(
            f"{path:<20}{len(values):>8}{quantile(values, 0.50) * 1000:>10.1f}{quantile(values, 0.95) * 1000:>10.1f}"
            f"{quantile(values, 0.99) * 1000:>10.1f}{max(values) * 1000:>10.1f}"
        )
    print(f"errors (not HTTP 200): {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
