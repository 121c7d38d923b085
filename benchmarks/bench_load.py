"""L1: latency of the demo's ``/chat`` under concurrent load, instrumented against the same app bare.

Two uvicorn processes on 127.0.0.1 serve the same FastAPI app, a ``ChatCoordinator.chat`` that awaits 2 ms of
pretend I/O:

- ours: :func:`instrumented_app`, ``init()`` + the coordinator decorated + ``instrument_app`` (server spans,
  request IDs, ``/metrics``, health), every span exported over OTLP/HTTP to a local sink;
- anchor: :func:`bare_app`, the same handler without victor_otel.

Rounds alternate the order of the apps. A round sends ``N`` requests from ``CONCURRENCY`` concurrent
keep-alive clients while ``/metrics`` is scraped every second and ``/health/ready`` probed every 0.5 s (as
Prometheus and a load balancer would; on the bare app these paths answer 404). Figures: the p99 and p50 of the
latency the clients see (wall clock: waiting is what is measured), the same without spans (a third server
with ``OTEL_TRACES_EXPORTER=none``: what spans cost), and the server time per request at saturation
(``SATURATION`` clients: 1 / throughput). Targets are reported by ``python -m benchmarks``, never asserted.

Run alone: ``python -m benchmarks --only load`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from benchmarks.harness import Result, compare_rounds, ratio_result, rounds_for
from benchmarks.serving import chat_clients, get, served

CONCURRENCY = 8  # moderate load: the bare app is far from saturated on 2 cores
SATURATION = 50
LIMIT_P99 = 1.25
LIMIT_P50 = 1.25
LIMIT_COST = 1.5
IO_SECONDS = 0.002


def _chat_app(instrumented: bool) -> Any:
    from fastapi import FastAPI

    class ChatCoordinator:
        async def chat(self, message: str) -> str:
            await asyncio.sleep(IO_SECONDS)
            return f"echo: {message}"

    if instrumented:
        import victor_otel

        victor_otel.init(service_name="bench-load")  # exporters from the environment the bench sets
        ChatCoordinator = victor_otel.coordinator("ChatCoordinator")(ChatCoordinator)
    coordinator = ChatCoordinator()
    app = FastAPI()

    @app.get("/chat")
    async def chat(message: str = "hello") -> dict[str, str]:
        return {"answer": await coordinator.chat(message)}

    if instrumented:
        import victor_otel

        victor_otel.instrument_app(app)
    return app


def instrumented_app() -> Any:
    """The app with victor_otel (``uvicorn --factory benchmarks.bench_load:instrumented_app``)."""
    return _chat_app(True)


def bare_app() -> Any:
    """The same app without victor_otel."""
    return _chat_app(False)


@contextmanager
def _server(factory: str, env: dict[str, str]) -> Iterator[str]:
    with served(f"benchmarks.bench_load:{factory}", env, ready_path="/chat") as (_, url):
        yield url


async def _load(url: str, number: int) -> list[float]:
    """``number`` GETs of /chat from CONCURRENCY keep-alive connections, with scrapes and probes meanwhile;
    the latency of each (seconds)."""
    host, port = url.removeprefix("http://").split(":")
    done = asyncio.Event()

    async def scrape_and_probe() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        tick = 0
        while not done.is_set():
            if tick % 2 == 0:
                await get(reader, writer, "/metrics")
            await get(reader, writer, "/health/ready")
            tick += 1
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)
        writer.close()

    watcher = asyncio.create_task(scrape_and_probe())
    try:
        return await chat_clients(url, number, CONCURRENCY)
    finally:
        done.set()
        await watcher


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]


def _seconds_per_request(url: str, number: int) -> float:
    """Wall time per request with SATURATION concurrent clients: the server's cost per request."""
    global CONCURRENCY
    moderate, CONCURRENCY = CONCURRENCY, SATURATION
    try:
        start = time.perf_counter()
        asyncio.run(_load(url, number))
        return (time.perf_counter() - start) / number
    finally:
        CONCURRENCY = moderate


def run(quick: bool) -> list[Result]:
    from benchmarks.bench_export import otlp_sink

    rounds = rounds_for(quick)
    number = 200 if quick else 2000
    figures: dict[str, list[tuple[float, float, float]]] = {"full": [], "no_spans": [], "bare": []}
    with otlp_sink() as sink:
        full_env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
                    "OTEL_METRICS_EXPORTER": "prometheus"}
        with _server("instrumented_app", full_env) as full, \
                _server("instrumented_app", {"OTEL_TRACES_EXPORTER": "none"}) as no_spans, \
                _server("bare_app", {}) as bare:
            urls = {"full": full, "no_spans": no_spans, "bare": bare}
            for url in urls.values():  # warm up: imports, first spans, connections
                asyncio.run(_load(url, number // 4))
            for i in range(rounds):
                for side in (list(urls) if i % 2 == 0 else list(reversed(urls))):
                    p50, p99 = _percentiles(asyncio.run(_load(urls[side], number)))
                    figures[side].append((p50, p99, _seconds_per_request(urls[side], number)))

    def pairs(side: str, index: int) -> Any:
        return compare_rounds(lambda i: (figures[side][i][index], figures["bare"][i][index]), rounds)

    full_p99, full_p50 = pairs("full", 1), pairs("full", 0)
    note = (f"{number} requests, {CONCURRENCY} concurrent clients, /chat awaits {IO_SECONDS * 1000:g} ms; "
            f"+{(full_p99.ours - full_p99.anchor) * 1000:.1f} ms at p99, "
            f"+{(full_p50.ours - full_p50.anchor) * 1000:.1f} ms at p50")
    return [
        ratio_result("load p99", "p99 of /chat under load + scrapes/probes, instrumented (spans over OTLP) vs bare",
                     full_p99, LIMIT_P99, note),
        ratio_result("load p50", "p50 of the same", full_p50, LIMIT_P50, note),
        ratio_result("load p99 no spans", "p99, instrumented without spans (OTEL_TRACES_EXPORTER=none) vs bare",
                     pairs("no_spans", 1), LIMIT_P99),
        ratio_result("load cost", f"server time per request at saturation ({SATURATION} clients), instrumented vs bare",
                     pairs("full", 2), LIMIT_COST, "1 / throughput: CPU the server spends per request"),
    ]


if __name__ == "__main__":
    from benchmarks.__main__ import table

    print(table(run("--quick" in sys.argv), markdown="--markdown" in sys.argv))
