"""``victor-otel demo``: a demo app with three coordinators under synthetic load, serving ``/metrics``, with
a live one-line summary (calls, errors, p95) on a terminal and one plain line a second otherwise."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import socket
import sys
import time
from typing import Any

from victor_otel.cli.common import EXIT_BAD_VALUE, EXIT_OK, _positive
from victor_otel.cli.output import Segment, StatusLine
from victor_otel.terminal import styled

#: The extra that brings what ``victor-otel demo`` needs beyond the core dependencies.
DEMO_EXTRA = "pip install 'victor-otel[demo]'"


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0 (0: no synthetic load)")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return value


def add_parser(commands: Any) -> None:
    """Add ``demo`` to the ``victor-otel`` sub-commands."""
    parser = commands.add_parser(
        "demo",
        help="run a demo app with three coordinators under synthetic load, serving /metrics and /debug",
        description="Run a FastAPI app with three instrumented coordinators (one failing sometimes, one "
        "slow, one with a cache) under a synthetic load, serving /metrics on HOST:PORT. Every second it "
        "prints the calls, errors and p95 latency of each coordinator over the sliding window: one line "
        "rewritten in place on a terminal (coloured unless NO_COLOR is set), one plain line per second "
        "otherwise. Ctrl-C stops it.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port to bind (default: 8000; 0 = any free)")
    parser.add_argument("--duration", type=_positive, default=None, help="stop after this many seconds")
    parser.add_argument("--error-rate", type=_probability, default=0.05,
                        help="probability that ChatCoordinator.chat fails (default: 0.05)")
    parser.add_argument("--slow-seconds", type=_positive, default=0.5,
                        help="typical latency of AnalysisCoordinator (default: 0.5)")
    parser.add_argument("--rate", type=_non_negative, default=20.0,
                        help="synthetic requests per second (default: 20; 0: none)")
    parser.add_argument("--traces-file", default=None,
                        help="where spans go, appended (default: a file in the temp directory, started afresh "
                             "each run with the previous run's kept as .1; '-' for stdout)")
    parser.set_defaults(run=run_demo)


def _port_taken(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound because something listens there already."""
    if port == 0:
        return False
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return False  # uvicorn will say what is wrong with the host
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def run_demo(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as error:
        print(f"victor-otel demo: {error.name} is not installed; the demo needs the demo extra: {DEMO_EXTRA}",
              file=sys.stderr)
        return EXIT_BAD_VALUE
    if _port_taken(args.host, args.port):
        print(f"victor-otel demo: port {args.port} on {args.host} is already in use; choose another with "
              f"--port (for example --port {args.port + 1 if args.port < 65535 else 8000}, or --port 0 for any "
              "free port)", file=sys.stderr)
        return EXIT_BAD_VALUE

    import victor_otel
    from victor_otel.demo import create_app, default_traces_file, start_traces_file

    traces_file = args.traces_file or os.environ.get("VICTOR_OTEL_TRACES_FILE") or default_traces_file()
    if traces_file == default_traces_file():
        start_traces_file(traces_file)  # the demo's own file: this run's spans, and the previous run's in .1
    telemetry = victor_otel.init(
        service_name=os.environ.get("OTEL_SERVICE_NAME") or "victor-demo",
        traces_file=None if traces_file == "-" else traces_file,
        traces_exporter="console" if traces_file == "-" else None,  # '-': standard output, asked for
        # The demo is for looking: /debug on unless VICTOR_OTEL_DEBUG_PAGES says otherwise.
        debug_pages=None if os.environ.get("VICTOR_OTEL_DEBUG_PAGES", "").strip() else True,
    )
    app = create_app(error_rate=args.error_rate, slow_seconds=args.slow_seconds, load_rate=args.rate)
    config_ = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config_)
    status = StatusLine(sys.stdout)
    window = telemetry.settings.window_seconds

    async def main() -> None:
        serve = asyncio.create_task(server.serve())
        while not server.started:
            if serve.done():
                await serve  # raises the start-up error (port in use, ...)
                return
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{port}/metrics"
        print(f"victor_otel demo: {styled(url, 'bold', status.color)}  (spans: {traces_file})", flush=True)
        debug_url = f"http://{host}:{port}/debug"
        print(f"victor_otel demo: traces and coordinators at {styled(debug_url, 'bold', status.color)}", flush=True)
        started = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            while not serve.done():
                await asyncio.sleep(1.0)
                elapsed = time.monotonic() - started
                status.show(summary_segments(window, elapsed if status.live else None, args.duration))
                if args.duration is not None and elapsed >= args.duration:
                    server.should_exit = True
                    break
        await serve

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        status.done()
        victor_otel.shutdown()
    print("victor_otel demo: stopped", flush=True)
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def summary_segments(
    window: float = 60.0, elapsed: float | None = None, duration: float | None = None
) -> list[Segment]:
    """``last 60s | 156 calls, 1 error, slowest p95 960ms | ChatCoordinator: 98 calls, 1 error, p95 47ms | ...``

    Totals first (they stay visible when a terminal cuts the line), then each coordinator over the sliding
    window. ``elapsed`` (the live display) prefixes the time running, out of ``duration`` when set.
    """
    from victor_otel.registry import get_registry

    segments: list[Segment] = []
    if elapsed is not None:
        clock = f"{elapsed:.0f}s" + (f"/{duration:g}s" if duration is not None else "")
        segments.append((f"[{clock}] ", "dim"))
    segments.append((f"last {window:g}s", "dim"))
    stats = [(state.name, state.stats()) for state in get_registry().all_coordinators()]
    if not stats:
        return [*segments, (" | no calls yet", None)]
    calls = sum(s.calls for _, s in stats)
    errors = sum(s.errors for _, s in stats)
    slowest = max((s.p95 for _, s in stats if s.p95 is not None), default=None)
    segments += [
        (f" | {_count(calls, 'call')}, ", "bold"),
        (_count(errors, "error"), "red" if errors else "green"),
        (f", slowest p95 {_ms(slowest)}", "bold"),
    ]
    for name, s in stats:
        segments += [
            (" | ", None),
            (name, "cyan"),
            (f": {_count(s.calls, 'call')}, ", None),
            (_count(s.errors, "error"), "red" if s.errors else None),
            (f", p95 {_ms(s.p95)}", None),
        ]
    return segments


def _summary_line() -> str:
    return "".join(text for text, _ in summary_segments())

