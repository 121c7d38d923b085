"""The embedded-default demo: a FastAPI app with three coordinators under a synthetic load.

``victor-otel demo`` runs it; the end-to-end tests scrape it with a real Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from opentelemetry import trace

import victor_otel


class ModelUnavailableError(Exception):
    """The (pretend) model provider refused the request."""


def build_coordinators(error_rate: float, slow_seconds: float, seed: int | None = None) -> dict[str, Any]:
    """The three demo coordinators: one that sometimes fails, one slow, one with a cache."""
    rng = random.Random(seed)

    @victor_otel.coordinator("ChatCoordinator")
    class ChatCoordinator:
        async def chat(self, message: str) -> str:
            await asyncio.sleep(rng.uniform(0.005, 0.05))
            if rng.random() < error_rate:
                raise ModelUnavailableError("model provider returned 503")
            return f"echo: {message}"

        async def stream(self, message: str) -> AsyncIterator[str]:
            for word in message.split():
                await asyncio.sleep(0.002)
                yield word

    @victor_otel.coordinator("AnalysisCoordinator")
    class AnalysisCoordinator:
        async def analyse(self, text: str) -> int:
            await asyncio.sleep(rng.uniform(slow_seconds / 2, slow_seconds * 1.5))
            return len(text)

    @victor_otel.coordinator("RetrievalCoordinator")
    class RetrievalCoordinator:
        def __init__(self) -> None:
            self.cache: dict[int, str] = {}

        async def retrieve(self, key: int) -> str:
            if key in self.cache:
                victor_otel.record_cache_hit("RetrievalCoordinator")
                return self.cache[key]
            victor_otel.record_cache_miss("RetrievalCoordinator")
            await asyncio.sleep(0.01)
            self.cache[key] = f"doc-{key}"
            return self.cache[key]

    return {
        "chat": ChatCoordinator(),
        "analysis": AnalysisCoordinator(),
        "retrieval": RetrievalCoordinator(),
    }


async def synthetic_load(coordinators: dict[str, Any], rate: float, seed: int | None = None) -> None:
    """Call the coordinators about ``rate`` times a second until cancelled."""
    rng = random.Random(seed)
    pending: set[asyncio.Task[Any]] = set()

    tracer = trace.get_tracer("victor_otel.demo")

    async def one_request() -> None:
        # One trace per request (its coordinator calls as children), as a server span would make it.
        with tracer.start_as_current_span("demo request"), contextlib.suppress(ModelUnavailableError):
            await coordinators["retrieval"].retrieve(rng.randint(0, 20))
            await coordinators["chat"].chat("hello victor")
            async for _ in coordinators["chat"].stream("a streamed answer"):
                pass
            if rng.random() < 0.2:
                await coordinators["analysis"].analyse("a long document")
            victor_otel.record_event("request_completed")

    try:
        while True:
            task = asyncio.create_task(one_request())
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(rng.expovariate(rate))
    finally:
        for task in pending:
            task.cancel()


def create_app(
    error_rate: float = 0.05, slow_seconds: float = 0.5, load_rate: float = 20.0, seed: int | None = None
) -> Any:
    """The demo FastAPI app: ``/chat``, ``/metrics`` and, with the health work, ``/health*``."""
    from fastapi import FastAPI

    coordinators = build_coordinators(error_rate, slow_seconds, seed)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        load = asyncio.create_task(synthetic_load(coordinators, load_rate, seed)) if load_rate > 0 else None
        try:
            yield
        finally:
            if load is not None:
                load.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await load

    app = FastAPI(title="victor_otel demo", lifespan=lifespan)

    @app.get("/chat")
    async def chat(message: str = "hello") -> dict[str, str]:
        try:
            return {"answer": await coordinators["chat"].chat(message)}
        except ModelUnavailableError as exc:
            from fastapi import HTTPException

            raise HTTPException(status_code=503, detail=str(exc)) from exc

    victor_otel.instrument_app(app)
    return app


def default_traces_file() -> str:
    return str(Path(tempfile.gettempdir()) / "victor-otel-demo-traces.jsonl")


def start_traces_file(path: str) -> None:
    """Begin a run's spans file afresh, keeping the previous run's as ``<path>.1`` (and no older one), so
    that runs of the demo do not make it grow without bound.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "spans.jsonl")
    >>> for run in ("first", "second", "third"):
    ...     start_traces_file(path)
    ...     _ = open(path, "a").write(run)
    >>> open(path).read(), open(path + ".1").read(), os.path.exists(path + ".2")
    ('third', 'second', False)
    """
    if os.path.exists(path):
        os.replace(path, path + ".1")
