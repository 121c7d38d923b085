"""Draining behind a server: the app's lifespan, wrapped by ``instrument_app()``.

At start-up the server's SIGTERM handler is wrapped so that SIGTERM first turns readiness to 503
(``Lifecycle.DRAINING``), keeps serving for ``drain_seconds``, then lets the server stop; at lifespan
shutdown spans, logs and metrics are flushed within ``shutdown_timeout`` (:func:`victor_otel.bootstrap.flush`).
A process without a server gets its SIGTERM handler from :func:`victor_otel.bootstrap.install_exit_handler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

from victor_otel import bootstrap

_logger = logging.getLogger("victor_otel")


def _drain_seconds() -> float:
    telemetry = bootstrap.current()
    return telemetry.settings.drain_seconds if telemetry is not None else 0.0


def wrap_sigterm() -> bool:
    """Put a draining step in front of the current SIGTERM handler (the server's).

    On SIGTERM readiness turns 503 at once; the server's own handler runs ``drain_seconds`` later, so
    that load balancers see the 503 and stop sending before the listener closes. Main thread only;
    returns whether it was installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, "_victor_otel_drain", False) or not callable(previous):
        return False
    server_handler: Callable[[int, FrameType | None], Any] = previous

    def drain(signum: int, frame: FrameType | None) -> None:
        bootstrap.start_draining()
        delay = _drain_seconds()
        if delay <= 0:
            server_handler(signum, frame)
            return
        _logger.info("victor_otel: SIGTERM: readiness is 503; the server stops in %.1f s", delay)
        timer = threading.Timer(delay, server_handler, args=(signum, None))
        timer.daemon = True
        timer.start()

    drain._victor_otel_drain = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, drain)
    return True


def lifespan(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap an ASGI app's lifespan: drain on SIGTERM while serving, flush when the server stops."""

    @contextlib.asynccontextmanager
    async def wrapped(app: Any) -> AsyncIterator[Any]:
        async with original(app) as state:
            previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() \
                else None
            installed = wrap_sigterm()
            try:
                yield state
            finally:
                if installed and getattr(signal.getsignal(signal.SIGTERM), "_victor_otel_drain", False):
                    signal.signal(signal.SIGTERM, previous)  # the app stopped: the handler goes with it
                await asyncio.to_thread(bootstrap.flush)  # the loop keeps running while spans and logs leave

    return wrapped
