"""Load: 1,000 concurrent requests to the demo app while Prometheus-style scrapes and probes hit it.

No request fails, no scrape or probe fails, and the counts are exact: 1,000 executions and 1,000 server
requests on /metrics, 1,000 coordinator spans at the collector and none dropped. The latency overhead
against the same app without instrumentation is measured by ``benchmarks/bench_load.py``, not here.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.serving import metric, samples, serve
from tests.faults import FaultServer, wait_for

pytestmark = pytest.mark.e2e

REQUESTS = 1000
CHAT = {"coordinator": "ChatCoordinator", "method": "chat"}


async def load_with_scrapes_and_probes(url: str) -> tuple[list[httpx.Response], list[int], list[float]]:
    """Fire REQUESTS requests at once; meanwhile scrape /metrics and probe /health/* until they are done."""
    limits = httpx.Limits(max_connections=REQUESTS + 10, max_keepalive_connections=REQUESTS + 10)
    # The scraper opens a connection per request: with the client's loop this busy, an idle keep-alive
    # connection can outlive uvicorn's 5 s keep-alive timeout, and reusing it would be the test's own failure.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client, \
            httpx.AsyncClient(limits=fresh, timeout=30) as side:
        statuses: list[int] = []
        scraped: list[float] = []
        done = asyncio.Event()

        async def scrape_and_probe() -> None:
            while not done.is_set():
                response = await side.get(f"{url}/metrics")
                statuses.append(response.status_code)
                scraped.append(metric(response.text, "victor_coordinator_executions_total", **CHAT) or 0.0)
                for path in ("/health/live", "/health/ready", "/health"):
                    statuses.append((await side.get(url + path)).status_code)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(scrape_and_probe())
        responses = await asyncio.gather(*(client.get(f"{url}/chat", params={"message": f"m{i}"})
                                           for i in range(REQUESTS)))
        done.set()
        await watcher
        return list(responses), statuses, scraped


def test_thousand_concurrent_requests_with_scrapes_and_probes(tmp_path: Path) -> None:
    with FaultServer() as collector:
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "VICTOR_OTEL_MAX_QUEUE_SIZE": "50000",  # every span must arrive: the test counts them
        }
        command = [sys.executable, "-m", "uvicorn", "--factory", "tests.e2e.demo_app:app_factory",
                   "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning", "--backlog", "4096"]
        with serve(command, env=env, log=tmp_path / "demo.log", ready_path="/health/ready") as served:
            responses, statuses, scraped = asyncio.run(load_with_scrapes_and_probes(served.url))
            assert [r.status_code for r in responses] == [200] * REQUESTS
            assert all(r.json()["answer"] == f"echo: m{i}" for i, r in enumerate(responses))
            assert statuses and set(statuses) == {200}, sorted(set(statuses))
            assert scraped == sorted(scraped) and scraped[-1] <= REQUESTS  # monotonic, never over-counted

            text = httpx.get(f"{served.url}/metrics").text
            assert metric(text, "victor_coordinator_executions_total", **CHAT) == REQUESTS
            assert metric(text, "victor_coordinator_errors_total", **CHAT) == 0
            assert metric(text, "victor_coordinator_latency_seconds_count", **CHAT) == REQUESTS
            served_chat = sum(value for (name, labels), value in samples(text).items()
                              if name == "http_server_duration_milliseconds_count"
                              and ("http_target", "/chat") in labels)
            assert served_chat == REQUESTS
            wait_for(lambda: collector.span_names.count("ChatCoordinator.chat") == REQUESTS, timeout=30,
                     what=f"{REQUESTS} coordinator spans at the collector")
            text = httpx.get(f"{served.url}/metrics").text
            assert metric(text, "victor_otel_exported_total", signal="traces", outcome="dropped") == 0
            assert metric(text, "victor_otel_exported_total", signal="traces", outcome="failure") == 0
