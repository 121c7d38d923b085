"""LLM1 / LLM2: the cost of LLM call telemetry (victor_otel.llm) against hand-written and official anchors.

- LLM1: recording one model call's metrics (tracing off): ``llm_call()`` with usage, against what a
  prometheus_client user writes by hand: ``perf_counter`` around the call, then a pre-bound
  ``Counter.labels(...).inc()`` and ``Histogram.labels(...).observe()`` with the same four labels and the
  same buckets. Target: ratio <= 1.0.
- LLM2: one ``openai`` ``chat.completions.create`` (the real client, over an in-process HTTP transport so
  that no socket noise hides the overheads), tracing on (BatchSpanProcessor to a discarding exporter):
  what our instrumentation adds to the bare call, against what the official
  ``opentelemetry-instrumentation-openai-v2`` adds on the same providers. Each round times the bare call,
  the call under the official instrumentation and the call under ours. Target: ratio of the added costs
  <= 1.15.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from time import perf_counter
from typing import Any

from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, Counter, Histogram

import victor_otel
from benchmarks.bench_decorator import DiscardingSpanExporter
from benchmarks.harness import CPU, Result, _time_calls, compare, compare_rounds, ratio_result, rounds_for
from victor_otel import bootstrap
from victor_otel.instruments import GENAI_DURATION_BUCKETS
from victor_otel.registry import get_registry

L1_LIMIT, L2_LIMIT = 1.0, 1.15
LABELS = ("Chat", "openai", "gpt-4o", "chat")
PRICES = {"gpt-4o": {"input": 2.5, "output": 10.0}}


def _fresh(**settings: Any) -> bootstrap.Telemetry:
    victor_otel.shutdown()
    get_registry().reset()
    return bootstrap.init(**settings)


def _ours_l1() -> Callable[[], None]:
    def call() -> None:
        with victor_otel.llm_call("openai", "gpt-4o", coordinator="Chat") as c:
            c.record_usage(input_tokens=1200, output_tokens=80)

    return call


def _anchor_l1() -> Callable[[], None]:
    registry = CollectorRegistry()
    names = ("coordinator", "provider", "model", "operation")
    requests = Counter("bench_llm_requests", "calls", names, registry=registry).labels(*LABELS)
    latency = Histogram(
        "bench_llm_seconds", "latency", names, buckets=GENAI_DURATION_BUCKETS, registry=registry
    ).labels(*LABELS)

    def call() -> None:
        start = perf_counter()
        requests.inc()
        latency.observe(perf_counter() - start)

    return call


_COMPLETION = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280},
}).encode()


def _openai_client() -> Any:
    import openai

    try:  # recent openai releases ship their own httpx fork
        httpx: Any = importlib.import_module("httpx2")
    except ImportError:
        httpx = importlib.import_module("httpx")

    def answer(request: Any) -> Any:
        return httpx.Response(200, content=_COMPLETION, headers={"content-type": "application/json"})

    http_client = httpx.Client(transport=httpx.MockTransport(answer))
    return openai.OpenAI(api_key="bench", base_url="http://llm.invalid/v1", http_client=http_client, max_retries=0)


def _l2(quick: bool, rounds: int) -> Result:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    from victor_otel.llm.clients import instrument_clients, uninstrument_clients

    telemetry = _fresh(
        service_name="bench", traces_exporter="none", sampler="always_on",
        span_processors=[BatchSpanProcessor(DiscardingSpanExporter())],
    )
    client = _openai_client()
    messages = [{"role": "user", "content": "hi"}]

    def call() -> None:
        client.chat.completions.create(model="gpt-4o", messages=messages)

    number = 20 if quick else 300
    official = OpenAIInstrumentor()
    _time_calls(call, number // 5 + 1, CPU)  # warm-up of the client itself

    def round_pair(i: int) -> tuple[float, float]:
        bare = _time_calls(call, number, CPU)
        official.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
        try:
            with_official = _time_calls(call, number, CPU)
        finally:
            official.uninstrument()
        instrument_clients()
        try:
            with_ours = _time_calls(call, number, CPU)
        finally:
            uninstrument_clients()
        # what each adds to the bare call (floored: a negative difference is noise)
        return max(with_ours - bare, 1e-9), max(with_official - bare, 1e-9)

    c = compare_rounds(round_pair, rounds)
    return ratio_result(
        "LLM2", "openai call: what our instrumentation adds vs what openai-v2 adds", c, L2_LIMIT,
        note="figures are the added cost per call",
    )


def run(quick: bool) -> list[Result]:
    rounds = rounds_for(quick)
    results: list[Result] = []
    try:
        # victor_otel.init(), not bootstrap.init(): the price table is applied (each call is priced)
        victor_otel.shutdown()
        get_registry().reset()
        victor_otel.init(service_name="bench", traces_exporter="none", llm_prices=PRICES)
        c = compare(_ours_l1(), _anchor_l1(), number=200 if quick else 20_000, rounds=rounds)
        results.append(ratio_result("LLM1", "LLM call metrics vs prometheus_client inc + observe", c, L1_LIMIT))
        try:
            importlib.import_module("opentelemetry.instrumentation.openai_v2")
            importlib.import_module("openai")
        except ImportError as exc:
            results.append(Result("LLM2", f"skipped: {exc}", 0.0, None, f"<= {L2_LIMIT:g}", False, 0))
        else:
            results.append(_l2(quick, rounds))
    finally:
        victor_otel.shutdown()
        get_registry().reset()
    return results
