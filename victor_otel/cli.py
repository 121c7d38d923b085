"""``victor-otel``: the command line (``victor-otel demo``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="victor-otel", description="victor_otel command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a demo app with three coordinators under synthetic load, serving /metrics",
        description="Run a FastAPI app with three instrumented coordinators (one failing sometimes, one "
        "slow, one with a cache) under a synthetic load, serving /metrics on HOST:PORT. Ctrl-C stops it.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=8000, help="port to bind (default: 8000; 0 = any free)")
    demo.add_argument("--duration", type=_positive, default=None, help="stop after this many seconds")
    demo.add_argument("--error-rate", type=_probability, default=0.05,
                      help="probability that ChatCoordinator.chat fails (default: 0.05)")
    demo.add_argument("--slow-seconds", type=_positive, default=0.5,
                      help="typical latency of AnalysisCoordinator (default: 0.5)")
    demo.add_argument("--rate", type=float, default=20.0, help="synthetic requests per second (default: 20)")
    demo.add_argument("--traces-file", default=None,
                      help="where spans go (default: a file in the temp directory; '-' for stdout)")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    import uvicorn

    import victor_otel
    from victor_otel.demo import create_app, default_traces_file

    traces_file = args.traces_file or os.environ.get("VICTOR_OTEL_TRACES_FILE") or default_traces_file()
    victor_otel.init(
        service_name=os.environ.get("OTEL_SERVICE_NAME") or "victor-demo",
        traces_file=None if traces_file == "-" else traces_file,
    )
    app = create_app(error_rate=args.error_rate, slow_seconds=args.slow_seconds, load_rate=args.rate)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def main() -> None:
        serve = asyncio.create_task(server.serve())
        while not server.started:
            if serve.done():
                await serve  # raises the start-up error (port in use, ...)
                return
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"victor_otel demo: http://{host}:{port}/metrics  (spans: {traces_file})", flush=True)
        started = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            while not serve.done():
                await asyncio.sleep(1.0)
                print(_summary_line(), flush=True)
                if args.duration is not None and time.monotonic() - started >= args.duration:
                    server.should_exit = True
                    break
        await serve

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        victor_otel.shutdown()
    print("victor_otel demo: stopped", flush=True)
    return 0


def _summary_line() -> str:
    from victor_otel.registry import get_registry

    parts = []
    for state in get_registry().all_coordinators():
        stats = state.stats()
        p95 = f"{stats.p95 * 1000:.0f}ms" if stats.p95 is not None else "-"
        parts.append(f"{state.name}: {stats.calls} calls, {stats.errors} errors, p95 {p95}")
    return "last 60s | " + (" | ".join(parts) if parts else "no calls yet")


def main(argv: Sequence[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
