"""H1-H3: the cost of the HTTP edge, against OpenTelemetry's own instrumentation and prometheus-fastapi-instrumentator.

Five set-ups of the same FastAPI app (``GET /chat`` calls ``ChatCoordinator.chat``, which awaits 2 ms of
pretend I/O), each in its own uvicorn process on 127.0.0.1, spans over OTLP/HTTP to a local sink that
answers 200:

- ``bare``: FastAPI alone;
- ``otel``: OpenTelemetry's own ``FastAPIInstrumentor`` (its server span and HTTP metrics), the same
  coordinator span written by hand (``victor.coordinator``, ``victor.method``, ``victor.outcome``), a
  ``PrometheusMetricReader``, a ``BatchSpanProcessor`` to the OTLP/HTTP exporter (SDK defaults);
- ``ours``: ``victor_otel.init(traces_exporter="otlp")`` + ``instrument_app`` + ``@instrument``;
- ``ours_inproc``: the same with ``VICTOR_OTEL_EXPORT_PROCESS=false`` (spans encoded and posted by the
  server's own export thread, as before the export process);
- ``ours_nospans``: the same with ``traces_exporter="none"`` (metrics, request IDs, health);
- ``pfi``: ``prometheus-fastapi-instrumentator`` + a prometheus_client counter and histogram by hand
  around the coordinator call.

The figure is the server's CPU time per request (its threads' and its export process's, read before and
after a batch of requests from 8 concurrent keep-alive clients): what the server spends, whoever else runs on the
machine. Rounds visit the set-ups in rotating order; ratios are per round, against anchors measured in the
same round. Targets (``python -m benchmarks`` reports them, nothing asserts them):

- H1: ``ours`` CPU per request <= 1.0x ``otel``;
- H2: ``ours_nospans`` overhead above ``bare`` <= ``pfi``'s overhead above ``bare``;
- H3: p99 latency of ``ours`` at 8 clients <= 3x ``bare``'s.

Run alone: ``python -m benchmarks --only edge`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from benchmarks.harness import Comparison, Result, compare_rounds, info_result, ratio_result
from benchmarks.serving import chat_clients, served

CONCURRENCY = 8
IO_SECONDS = 0.002
#: Rounds of a full run (each round loads every set-up once); --quick runs 2.
ROUNDS = 5
REQUESTS = 3000
QUICK_REQUESTS = 150
LIMIT_H1 = 1.0
LIMIT_H2 = 1.0
LIMIT_H3 = 3.0
SETUPS = ("bare", "otel", "ours", "ours_inproc", "ours_nospans", "pfi")
DESCRIPTIONS = {
    "bare": "bare FastAPI",
    "otel": "OTel's FastAPIInstrumentor + the coordinator span by hand + PrometheusMetricReader",
    "ours": 'victor_otel init(traces_exporter="otlp") + instrument_app + @instrument',
    "ours_inproc": "the same, spans encoded and sent in the server's process (export_process=false)",
    "ours_nospans": 'victor_otel, traces_exporter="none"',
    "pfi": "prometheus-fastapi-instrumentator + prometheus_client counter/histogram by hand",
}


class _Chat:
    async def chat(self, message: str) -> str:
        await asyncio.sleep(IO_SECONDS)
        return f"echo: {message}"


def _app(call: Callable[[str], Any]) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/chat")
    async def chat(message: str = "hello") -> dict[str, str]:
        return {"answer": await call(message)}

    return app


def bare_app() -> Any:
    """FastAPI alone."""
    return _app(_Chat().chat)


def otel_app() -> Any:
    """OpenTelemetry's own instrumentation, what a user would write without victor_otel."""
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from prometheus_client import make_asgi_app

    resource = Resource.create({"service.name": "bench-edge-otel"})
    tracer_provider = TracerProvider(resource=resource)
    endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
    metrics.set_meter_provider(meter_provider)
    tracer = tracer_provider.get_tracer("bench")
    inner = _Chat()

    async def chat(message: str) -> str:
        with tracer.start_as_current_span("ChatCoordinator.chat", attributes={
            "victor.coordinator": "ChatCoordinator", "victor.method": "chat", "victor.outcome": "success",
        }):
            return await inner.chat(message)

    app = _app(chat)
    app.mount("/metrics", make_asgi_app())
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, meter_provider=meter_provider,
                                       excluded_urls="/metrics")
    return app


def ours_app() -> Any:
    """victor_otel: exporters from the environment the bench sets (spans over OTLP, or none)."""
    import victor_otel

    victor_otel.init(service_name="bench-edge")
    chat = victor_otel.instrument(coordinator="ChatCoordinator", method="chat")(_Chat().chat)
    return victor_otel.instrument_app(_app(chat))


def pfi_app() -> Any:
    """prometheus-fastapi-instrumentator, and the coordinator's counter and histogram by hand."""
    from prometheus_client import Counter, Histogram
    from prometheus_fastapi_instrumentator import Instrumentator

    calls = Counter("coordinator_executions", "calls", ["coordinator", "method"]).labels("ChatCoordinator", "chat")
    latency = Histogram("coordinator_latency_seconds", "latency", ["coordinator", "method"]).labels(
        "ChatCoordinator", "chat")
    inner = _Chat()

    async def chat(message: str) -> str:
        start = time.perf_counter()
        try:
            return await inner.chat(message)
        finally:
            calls.inc()
            latency.observe(time.perf_counter() - start)

    app = _app(chat)
    Instrumentator().instrument(app).expose(app)
    return app


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (victor_otel's export process), from /proc/*/stat."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _server_cpu(pid: int) -> float:
    """CPU seconds of the server and of the processes it started: the export process's work is the
    server's, wherever it runs."""
    total = _cpu(pid)
    for child in _children(pid):
        with contextlib.suppress(Exception):  # it ended between the listing and the reading
            total += _cpu(child)
    return total


def _cpu(pid: int) -> float:
    """CPU seconds the process's threads have run: the sum of /proc/<pid>/task/*/schedstat (nanoseconds;
    /proc/<pid>/stat counts 10 ms ticks, too coarse for a quick run), else psutil's user + system."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError):
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)


async def _load(url: str, number: int) -> list[float]:
    """``number`` GETs of /chat from CONCURRENCY keep-alive connections; the latency of each (seconds)."""
    return await chat_clients(url, number, CONCURRENCY)


def _batch(pid: int, url: str, number: int) -> tuple[float, float]:
    """Server CPU seconds per request and the p99 latency of one batch."""
    before = _server_cpu(pid)
    latencies = asyncio.run(_load(url, number))
    cpu = (_server_cpu(pid) - before) / number
    return cpu, statistics.quantiles(latencies, n=100, method="inclusive")[98]


def measure(quick: bool) -> dict[str, list[tuple[float, float]]]:
    """Per set-up, one (CPU per request, p99) per round."""
    from benchmarks.bench_export import otlp_sink

    rounds = 2 if quick else ROUNDS
    number = QUICK_REQUESTS if quick else REQUESTS
    figures: dict[str, list[tuple[float, float]]] = {s: [] for s in SETUPS}
    with otlp_sink() as sink, ExitStack() as stack:
        common = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_METRICS_EXPORTER": "prometheus",
                  "OTEL_LOGS_EXPORTER": "none"}
        envs = {
            "bare": {}, "otel": common, "pfi": {},
            "ours": {**common, "OTEL_TRACES_EXPORTER": "otlp"},
            "ours_inproc": {**common, "OTEL_TRACES_EXPORTER": "otlp", "VICTOR_OTEL_EXPORT_PROCESS": "false"},
            "ours_nospans": {**common, "OTEL_TRACES_EXPORTER": "none"},
        }
        factories = {"ours_nospans": "ours_app", "ours_inproc": "ours_app"}
        servers = {
            setup: stack.enter_context(served(f"benchmarks.bench_edge:{factories.get(setup, setup + '_app')}",
                                              envs[setup], ready_path="/chat"))
            for setup in SETUPS
        }
        for _, url in servers.values():  # warm up: imports, first spans, connections
            asyncio.run(_load(url, max(number // 5, 100)))  # >= 64 spans: the export process starts
        time.sleep(1.0)  # and is ready before the first round counts anyone's CPU
        for i in range(rounds):
            order = SETUPS[i % len(SETUPS):] + SETUPS[:i % len(SETUPS)]
            for setup in (order if i % 2 == 0 else tuple(reversed(order))):
                process, url = servers[setup]
                figures[setup].append(_batch(process.pid, url, number))
    return figures


def _comparison(ours: list[float], anchor: list[float]) -> Comparison:
    """Round by round pairs of figures, summarised as every case's are (medians, median of the ratios)."""
    return compare_rounds(lambda i: (ours[i], anchor[i]), len(ours))


def table(figures: dict[str, list[tuple[float, float]]]) -> str:
    """The per-set-up figures as a Markdown table (CPU per request and p99, medians; x bare per round)."""
    bare = [cpu for cpu, _ in figures["bare"]]
    rows = ["| set-up | server CPU per request | x bare | p99 at 8 clients |", "|---|---|---|---|"]
    for setup in SETUPS:
        cpu = [c for c, _ in figures[setup]]
        x_bare = statistics.median(c / b for c, b in zip(cpu, bare, strict=True))
        p99 = statistics.median(p for _, p in figures[setup])
        rows.append(f"| {DESCRIPTIONS[setup]} | {statistics.median(cpu) * 1e6:.0f} us | {x_bare:.2f} | "
                    f"{p99 * 1e3:.1f} ms |")
    return "\n".join(rows)


def run(quick: bool) -> list[Result]:
    figures = measure(quick)
    print(table(figures), flush=True)
    cpu = {s: [c for c, _ in figures[s]] for s in SETUPS}
    p99 = {s: [p for _, p in figures[s]] for s in SETUPS}
    # what each adds to bare in the same round (floored: a negative difference is noise)
    ours_over = [max(o - b, 1e-9) for o, b in zip(cpu["ours_nospans"], cpu["bare"], strict=True)]
    pfi_over = [max(p - b, 1e-9) for p, b in zip(cpu["pfi"], cpu["bare"], strict=True)]
    h2 = _comparison(ours_over, pfi_over)
    n = QUICK_REQUESTS if quick else REQUESTS
    note = f"server CPU per request, {n} requests a round, {CONCURRENCY} keep-alive clients"
    return [
        ratio_result("H1", "instrument_app + @instrument, spans over OTLP, vs OTel's FastAPIInstrumentor + the "
                     "same span by hand", _comparison(cpu["ours"], cpu["otel"]), LIMIT_H1, note),
        ratio_result("H2", "metrics only: overhead above bare vs prometheus-fastapi-instrumentator's", h2, LIMIT_H2,
                     note),
        ratio_result("H3", f"p99 at {CONCURRENCY} concurrent clients, spans over OTLP, vs bare",
                     _comparison(p99["ours"], p99["bare"]), LIMIT_H3,
                     f"/chat awaits {IO_SECONDS * 1000:g} ms; wall clock"),
        info_result("H3 in-process", "the same with export_process=false (spans encoded in the server's "
                    "process)", _comparison(p99["ours_inproc"], p99["bare"])),
        info_result("H1 in-process", "CPU per request with export_process=false, vs OTel's instrumentation",
                    _comparison(cpu["ours_inproc"], cpu["otel"])),
    ]


if __name__ == "__main__":
    from benchmarks.__main__ import table as results_table

    print(results_table(run("--quick" in sys.argv), markdown="--markdown" in sys.argv))
