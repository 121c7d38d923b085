"""LLM telemetry with the real openai and anthropic clients against a local server speaking their APIs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import victor_otel
from victor_otel import VictorOtelConfigError
from victor_otel.instruments import GENAI_DURATION_BUCKETS, GENAI_TOKEN_BUCKETS
from victor_otel.llm import PriceTable, semconv
from victor_otel.llm.clients import instrument_clients, uninstrument_clients

from .conftest import scrape, value
from .llm_server import (
    ANTHROPIC_USAGE,
    EMBEDDING_TOKENS,
    OPENAI_USAGE,
    RESPONSES_USAGE,
    TEXT,
    base_url,
    llm_server,
)
from .test_reliability_fork import in_child

PRICES = {
    "gpt-4o": {"input": 2.5, "output": 10.0, "cached_input": 1.25},
    "anthropic/claude-x": {"input": 3.0, "output": 15.0, "cached_input": 0.3},
}
MESSAGES = [{"role": "user", "content": "my password=hunter2, say hello"}]


def openai_cost(calls: int = 1) -> float:
    prompt, completion, cached = OPENAI_USAGE
    return calls * ((prompt - cached) * 2.5 + cached * 1.25 + completion * 10.0) / 1e6


def anthropic_cost(calls: int = 1) -> float:
    plain, output, read = ANTHROPIC_USAGE
    return calls * (plain * 3.0 + read * 0.3 + output * 15.0) / 1e6


@pytest.fixture
def server() -> Iterator[Any]:
    with llm_server() as running:
        yield running


@pytest.fixture
def llm(spans: InMemorySpanExporter) -> Iterator[victor_otel.Telemetry]:
    telemetry = victor_otel.init(
        service_name="test", traces_exporter="none", span_exporters=[spans], instrument_llm=True,
        llm_prices=PRICES,
    )
    yield telemetry
    uninstrument_clients()


def clients(server: Any) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    # retries off: every failure is one request, so "counted once" is exact
    return (
        openai.OpenAI(base_url=base_url(server) + "/v1", api_key="test", max_retries=0),
        anthropic.Anthropic(base_url=base_url(server), api_key="test", max_retries=0),
    )


@victor_otel.coordinator("ChatCoordinator", kind="agent")
class ChatCoordinator:
    def __init__(self, server: Any) -> None:
        self.openai, self.anthropic = clients(server)

    def ask_openai(self, stream: bool = False) -> str:
        if not stream:
            response = self.openai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            return response.choices[0].message.content or ""
        chunks = self.openai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    def ask_anthropic(self, stream: bool = False) -> str:
        if not stream:
            message = self.anthropic.messages.create(model="claude-x", max_tokens=50, messages=MESSAGES)
            return "".join(block.text for block in message.content if block.type == "text")
        events = self.anthropic.messages.create(model="claude-x", max_tokens=50, messages=MESSAGES, stream=True)
        return "".join(e.delta.text for e in events if e.type == "content_block_delta")

    def fail(self, provider: str, model: str) -> None:
        if provider == "openai":
            for _ in self.openai.chat.completions.create(model=model, messages=MESSAGES, stream=True):
                pass
        else:
            for _ in self.anthropic.messages.create(model=model, max_tokens=5, messages=MESSAGES, stream=True):
                pass


def test_openai_plain_and_streamed_calls_count_tokens_cost_and_first_token(llm: Any, server: Any,
                                                                          spans: InMemorySpanExporter) -> None:
    chat = ChatCoordinator(server)
    assert chat.ask_openai() == "".join(TEXT)
    assert chat.ask_openai(stream=True) == "".join(TEXT)
    samples = scrape()
    labels = {"coordinator": "ChatCoordinator", "provider": "openai", "model": "gpt-4o"}
    assert value(samples, "victor_llm_requests_total", **labels, operation="chat") == 2
    assert value(samples, "victor_llm_errors_total", **labels, operation="chat") == 0
    prompt, completion, cached = OPENAI_USAGE
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="input") == 2 * prompt
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="output") == 2 * completion
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="cached_input") == 2 * cached
    assert value(samples, "victor_llm_cost_usd_total", **labels) == pytest.approx(openai_cost(2))
    assert value(samples, "victor_llm_request_duration_seconds_count", **labels, operation="chat") == 2
    assert value(samples, "victor_llm_time_to_first_token_seconds_count", **labels, operation="chat") == 1

    finished = spans.get_finished_spans()
    coordinator_spans = [s for s in finished if s.name.startswith("ChatCoordinator.ask_openai")]
    llm_spans = [s for s in finished if s.name == "chat gpt-4o"]
    assert len(coordinator_spans) == 2 and len(llm_spans) == 2
    for parent, child in zip(coordinator_spans, llm_spans, strict=True):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
        assert child.kind is SpanKind.CLIENT
        attrs = child.attributes or {}
        assert attrs[semconv.OPERATION_NAME] == "chat" and attrs[semconv.PROVIDER_NAME] == "openai"
        assert attrs[semconv.REQUEST_MODEL] == "gpt-4o"
        assert attrs[semconv.RESPONSE_MODEL] == "gpt-4o-2024-08-06"
        assert attrs[semconv.INPUT_TOKENS] == prompt and attrs[semconv.OUTPUT_TOKENS] == completion
        assert attrs[semconv.FINISH_REASONS] == ("stop",)
        assert semconv.INPUT_MESSAGES not in attrs  # content capture is off by default
    assert semconv.TIME_TO_FIRST_CHUNK in (llm_spans[1].attributes or {})
    agent = coordinator_spans[0].attributes or {}
    assert agent[semconv.OPERATION_NAME] == semconv.INVOKE_AGENT
    assert agent[semconv.AGENT_NAME] == "ChatCoordinator"


def test_anthropic_plain_and_streamed_calls_count_cached_input_and_cost(llm: Any, server: Any) -> None:
    chat = ChatCoordinator(server)
    assert chat.ask_anthropic() == "".join(TEXT)
    assert chat.ask_anthropic(stream=True) == "".join(TEXT)
    samples = scrape()
    labels = {"coordinator": "ChatCoordinator", "provider": "anthropic", "model": "claude-x"}
    plain, output, read = ANTHROPIC_USAGE
    assert value(samples, "victor_llm_requests_total", **labels, operation="chat") == 2
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="input") == 2 * (plain + read)
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="output") == 2 * output
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="cached_input") == 2 * read
    assert value(samples, "victor_llm_cost_usd_total", **labels) == pytest.approx(anthropic_cost(2))
    assert value(samples, "victor_llm_time_to_first_token_seconds_count", **labels, operation="chat") == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("model", "error_type"),
    [("fail-429", "RateLimitError"), ("fail-500", "InternalServerError"), ("broken", None)],
)
def test_errors_are_counted_once_with_their_type(
    llm: Any, server: Any, spans: InMemorySpanExporter, provider: str, model: str, error_type: str | None
) -> None:
    chat = ChatCoordinator(server)
    with pytest.raises(Exception) as raised:
        chat.fail(provider, model)
    assert len(server.hits) == 1  # one request reached the server
    expected = error_type or type(raised.value).__name__
    samples = scrape()
    labels = {"coordinator": "ChatCoordinator", "provider": provider, "model": model, "operation": "chat"}
    assert value(samples, "victor_llm_requests_total", **labels) == 1
    assert value(samples, "victor_llm_errors_total", **labels) == 1
    assert value(samples, "victor_llm_errors_by_type_total", **labels, error_type=expected) == 1
    (span,) = [s for s in spans.get_finished_spans() if s.name == f"chat {model}"]
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[semconv.ERROR_TYPE] == expected


def llm_span(spans: InMemorySpanExporter, name: str) -> Any:
    (span,) = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def test_openai_chat_stream_without_stream_options_still_counts_tokens_and_hides_the_usage_chunk(
    llm: Any, server: Any
) -> None:
    client, _ = clients(server)

    @victor_otel.coordinator("Chat")
    def ask(**options: Any) -> list[Any]:
        return list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **options))

    chunks = ask()
    # the caller's loop sees what the API sends without include_usage: every chunk has a choice
    assert len(chunks) == len(TEXT) and all(c.choices for c in chunks)
    assert server.hits[-1][2]["stream_options"] == {"include_usage": True}  # asked for by the wrapper
    # the caller's own stream_options are left alone: no usage is sent, none is counted
    assert len(ask(stream_options={"include_usage": False})) == len(TEXT)
    assert server.hits[-1][2]["stream_options"] == {"include_usage": False}
    # and asked for by the caller, the usage chunk is the caller's
    assert len(ask(stream_options={"include_usage": True})) == len(TEXT) + 1
    labels = {"coordinator": "Chat", "provider": "openai", "model": "gpt-4o"}
    samples = scrape()
    assert value(samples, "victor_llm_requests_total", **labels, operation="chat") == 3
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="input") == 2 * OPENAI_USAGE[0]
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="output") == 2 * OPENAI_USAGE[1]


async def test_openai_embeddings_sync_and_async(llm: Any, server: Any, spans: InMemorySpanExporter) -> None:
    client, _ = clients(server)
    aclient = openai.AsyncOpenAI(base_url=base_url(server) + "/v1", api_key="t", max_retries=0)

    @victor_otel.coordinator("Indexer")
    async def index() -> int:
        one = client.embeddings.create(model="text-embedding-3-small", input="hello")
        two = await aclient.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        with pytest.raises(openai.RateLimitError):
            await aclient.embeddings.create(model="fail-429", input="x")
        return len(one.data) + len(two.data)

    assert await index() == 3
    labels = {"coordinator": "Indexer", "provider": "openai", "model": "text-embedding-3-small"}
    samples = scrape()
    assert value(samples, "victor_llm_requests_total", **labels, operation="embeddings") == 2
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="input") == 2 * EMBEDDING_TOKENS
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="output") == 0
    assert value(samples, "victor_llm_errors_by_type_total", coordinator="Indexer", provider="openai",
                 model="fail-429", operation="embeddings", error_type="RateLimitError") == 1
    spans_by_name = [s for s in spans.get_finished_spans() if s.name == "embeddings text-embedding-3-small"]
    assert len(spans_by_name) == 2
    attrs = spans_by_name[0].attributes or {}
    assert attrs[semconv.OPERATION_NAME] == "embeddings" and attrs[semconv.INPUT_TOKENS] == EMBEDDING_TOKENS
    assert semconv.OUTPUT_TOKENS not in attrs
    assert llm_span(spans, "embeddings fail-429").status.status_code is StatusCode.ERROR


async def test_openai_responses_plain_and_streamed(llm: Any, server: Any, spans: InMemorySpanExporter) -> None:
    client, _ = clients(server)
    aclient = openai.AsyncOpenAI(base_url=base_url(server) + "/v1", api_key="t", max_retries=0)

    @victor_otel.coordinator("Responder")
    async def respond() -> list[str]:
        plain = client.responses.create(model="gpt-4o", input="hi")
        texts = [plain.output_text]
        events = [e for e in client.responses.create(model="gpt-4o", input="hi", stream=True)]
        texts.append("".join(e.delta for e in events if e.type == "response.output_text.delta"))
        stream = await aclient.responses.create(model="gpt-4o", input="hi", stream=True)
        texts.append("".join([e.delta async for e in stream if e.type == "response.output_text.delta"]))
        return texts

    assert await respond() == ["".join(TEXT)] * 3
    prompt, output, cached = RESPONSES_USAGE
    labels = {"coordinator": "Responder", "provider": "openai", "model": "gpt-4o"}
    samples = scrape()
    assert value(samples, "victor_llm_requests_total", **labels, operation="chat") == 3
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="input") == 3 * prompt
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="output") == 3 * output
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="cached_input") == 3 * cached
    assert value(samples, "victor_llm_cost_usd_total", **labels) == pytest.approx(
        3 * ((prompt - cached) * 2.5 + cached * 1.25 + output * 10.0) / 1e6
    )
    assert value(samples, "victor_llm_time_to_first_token_seconds_count", **labels, operation="chat") == 2
    for span in [s for s in spans.get_finished_spans() if s.name == "chat gpt-4o"]:
        attrs = span.attributes or {}
        assert attrs[semconv.RESPONSE_MODEL] == "gpt-4o-2024-08-06" and attrs[semconv.FINISH_REASONS] == ("stop",)
        assert attrs[semconv.INPUT_TOKENS] == prompt and attrs[semconv.OUTPUT_TOKENS] == output


async def test_openai_stream_helpers_are_counted_through_the_wrapped_create(llm: Any, server: Any) -> None:
    # openai's chat.completions.stream() and responses.stream() call the resource's create(stream=True), which
    # the wrapper instruments: the helpers need no wrapper of their own (checked on openai 3.57).
    client, _ = clients(server)
    aclient = openai.AsyncOpenAI(base_url=base_url(server) + "/v1", api_key="t", max_retries=0)

    @victor_otel.coordinator("Helpers")
    async def helpers() -> list[str]:
        texts = []
        with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as chat:
            texts.append(chat.get_final_completion().choices[0].message.content or "")
        async with aclient.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as achat:
            texts.append("".join([e.delta async for e in achat if e.type == "content.delta"]))
        with client.responses.stream(model="gpt-4o", input="hi") as response:
            texts.append(response.get_final_response().output_text)
        async with aclient.responses.stream(model="gpt-4o", input="hi") as aresponse:
            texts.append((await aresponse.get_final_response()).output_text)
        return texts

    assert await helpers() == ["".join(TEXT)] * 4
    labels = {"coordinator": "Helpers", "provider": "openai", "model": "gpt-4o"}
    samples = scrape()
    assert value(samples, "victor_llm_requests_total", **labels, operation="chat") == 4
    assert value(samples, "victor_llm_errors_total", **labels, operation="chat") == 0
    assert value(samples, "victor_llm_time_to_first_token_seconds_count", **labels, operation="chat") == 4
    chat_input, chat_output, _ = OPENAI_USAGE
    responses_input, responses_output, _ = RESPONSES_USAGE
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="input") == (
        2 * chat_input + 2 * responses_input)
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="output") == (
        2 * chat_output + 2 * responses_output)


def test_openai_responses_broken_stream_is_one_error(llm: Any, server: Any, spans: InMemorySpanExporter) -> None:
    client, _ = clients(server)
    with pytest.raises(Exception) as raised:
        for _ in client.responses.create(model="broken", input="hi", stream=True):
            pass
    labels = {"coordinator": "_none", "provider": "openai", "model": "broken", "operation": "chat"}
    samples = scrape()
    assert value(samples, "victor_llm_requests_total", **labels) == 1
    assert value(samples, "victor_llm_errors_by_type_total", **labels, error_type=type(raised.value).__name__) == 1
    assert (llm_span(spans, "chat broken").attributes or {})[semconv.ERROR_TYPE] == type(raised.value).__name__


def test_anthropic_messages_stream_helper(llm: Any, server: Any, spans: InMemorySpanExporter) -> None:
    _, client = clients(server)

    @victor_otel.coordinator("Writer")
    def write() -> tuple[str, int]:
        with client.messages.stream(model="claude-x", max_tokens=50, messages=MESSAGES) as stream:
            text = "".join(stream.text_stream)
        with client.messages.stream(model="claude-x", max_tokens=50, messages=MESSAGES) as stream:
            final = stream.get_final_message()
        with client.messages.stream(model="claude-x", max_tokens=50, messages=MESSAGES) as stream:
            for _event in stream:
                break  # left early: counted, not an error
        with pytest.raises(anthropic.RateLimitError), client.messages.stream(
            model="fail-429", max_tokens=5, messages=MESSAGES
        ):
            pass
        return text, final.usage.output_tokens

    assert write() == ("".join(TEXT), ANTHROPIC_USAGE[1])
    plain, output, read = ANTHROPIC_USAGE
    labels = {"coordinator": "Writer", "provider": "anthropic", "model": "claude-x"}
    samples = scrape()
    assert value(samples, "victor_llm_requests_total", **labels, operation="chat") == 3
    assert value(samples, "victor_llm_errors_total", **labels, operation="chat") == 0
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="output") == 2 * output + 1  # early: 1
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="cached_input") == 3 * read
    assert value(samples, "victor_llm_time_to_first_token_seconds_count", **labels, operation="chat") == 2
    assert value(samples, "victor_llm_errors_by_type_total", coordinator="Writer", provider="anthropic",
                 model="fail-429", operation="chat", error_type="RateLimitError") == 1
    streamed = [s for s in spans.get_finished_spans() if s.name == "chat claude-x"]
    assert len(streamed) == 3
    writer = next(s for s in spans.get_finished_spans() if s.name.startswith("Writer."))
    for span in streamed:
        attrs = span.attributes or {}
        assert span.parent is not None and span.parent.span_id == writer.context.span_id
        assert attrs[semconv.REQUEST_STREAM] is True and attrs[semconv.INPUT_TOKENS] == plain + read
    assert [(s.attributes or {}).get("victor.outcome") for s in streamed] == [None, None, "cancelled"]


async def test_anthropic_messages_stream_helper_async(llm: Any, server: Any) -> None:
    client = anthropic.AsyncAnthropic(base_url=base_url(server), api_key="t", max_retries=0)

    @victor_otel.coordinator("AsyncWriter")
    async def write() -> str:
        async with client.messages.stream(model="claude-x", max_tokens=50, messages=MESSAGES) as stream:
            text = "".join([piece async for piece in stream.text_stream])
        async with client.messages.stream(model="claude-x", max_tokens=50, messages=MESSAGES) as stream:
            await stream.get_final_message()
        return text

    assert await write() == "".join(TEXT)
    labels = {"coordinator": "AsyncWriter", "provider": "anthropic", "model": "claude-x"}
    samples = scrape()
    assert value(samples, "victor_llm_requests_total", **labels, operation="chat") == 2
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="output") == 2 * ANTHROPIC_USAGE[1]
    assert value(samples, "victor_llm_cost_usd_total", **labels) == pytest.approx(anthropic_cost(2))
    assert value(samples, "victor_llm_time_to_first_token_seconds_count", **labels, operation="chat") == 2


async def test_async_clients_and_streams(llm: Any, server: Any) -> None:
    aopenai = openai.AsyncOpenAI(base_url=base_url(server) + "/v1", api_key="t", max_retries=0)
    aanthropic = anthropic.AsyncAnthropic(base_url=base_url(server), api_key="t", max_retries=0)

    @victor_otel.coordinator("AsyncChat")
    async def ask() -> None:
        await aopenai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = await aopenai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        async for _ in stream:
            pass
        events = await aanthropic.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES, stream=True)
        async for _ in events:
            pass

    await ask()
    samples = scrape()
    openai_labels = {"coordinator": "AsyncChat", "provider": "openai", "model": "gpt-4o"}
    assert value(samples, "victor_llm_requests_total", **openai_labels, operation="chat") == 2
    assert value(samples, "victor_llm_cost_usd_total", **openai_labels) == pytest.approx(openai_cost(2))
    assert value(samples, "victor_llm_time_to_first_token_seconds_count", **openai_labels, operation="chat") == 1
    anthropic_labels = {"coordinator": "AsyncChat", "provider": "anthropic", "model": "claude-x"}
    assert value(samples, "victor_llm_cost_usd_total", **anthropic_labels) == pytest.approx(anthropic_cost())


def test_manual_calls_sync_and_async_outside_and_inside_coordinators(telemetry: Any) -> None:
    with victor_otel.llm_call(provider="bedrock", model="titan", operation="text_completion") as call:
        call.record_usage(input_tokens=10, output_tokens=2)

    @victor_otel.coordinator("Planner")
    async def plan() -> None:
        async with victor_otel.llm_call(provider="openai", model="o3", stream=True) as call:
            call.first_token()
            call.first_token()  # only the first counts
            call.record_usage(input_tokens=5, output_tokens=1, cached_input_tokens=4)

    asyncio.run(plan())
    samples = scrape()
    assert value(samples, "victor_llm_requests_total", coordinator="_none", provider="bedrock", model="titan",
                 operation="text_completion") == 1
    assert value(samples, "victor_llm_time_to_first_token_seconds_count", coordinator="Planner", provider="openai",
                 model="o3", operation="chat") == 1
    assert value(samples, "victor_llm_tokens_total", coordinator="Planner", provider="openai", model="o3",
                 token_type="cached_input") == 4


@pytest.mark.parametrize("tracing", [{"traces_exporter": "none"}, {"sampler": "always_off"}],
                         ids=["tracing-off", "span-not-sampled"])
def test_the_coordinator_label_is_the_enclosing_coordinator_without_a_recorded_span(tracing: Any) -> None:
    victor_otel.init(service_name="test", **tracing)  # no span_exporters: no recorded span at all

    def ask(model: str) -> None:
        with victor_otel.llm_call(provider="openai", model=model):
            pass

    @victor_otel.coordinator("Outer")
    def outer() -> None:
        ask("m-outer")
        inner()
        ask("m-outer")  # back in Outer once Inner returned

    @victor_otel.coordinator("Inner")
    def inner() -> None:
        ask("m-inner")

    @victor_otel.coordinator("Streamer")
    def stream() -> Iterator[int]:
        ask("m-gen")
        yield 1
        ask("m-gen")

    @victor_otel.coordinator("Waiter")
    async def wait() -> None:
        await asyncio.sleep(0)
        ask("m-async")

    outer()
    for _ in stream():
        ask("m-between")  # the caller's code between two items is not the generator's coordinator
    asyncio.run(wait())
    with victor_otel.track("Tracked", "block"):
        ask("m-track")
    ask("m-none")
    samples = scrape()
    expected = {("Outer", "m-outer"): 2, ("Inner", "m-inner"): 1, ("Streamer", "m-gen"): 2,
                ("_none", "m-between"): 1, ("Waiter", "m-async"): 1, ("Tracked", "m-track"): 1,
                ("_none", "m-none"): 1}
    for (coordinator, model), count in expected.items():
        assert value(samples, "victor_llm_requests_total", coordinator=coordinator, provider="openai", model=model,
                     operation="chat") == count, (coordinator, model)


def test_calls_from_many_threads_are_counted_exactly_while_scrapes_fold_them(telemetry: Any) -> None:
    import threading

    from victor_otel.llm.recording import FOLD_EVERY

    threads, per_thread = 4, 3 * FOLD_EVERY + 7  # every thread crosses several folds on its own path
    start = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        start.wait()
        for n in range(per_thread):
            with pytest.raises(TimeoutError) if n % 10 == 0 else nullcontext(), victor_otel.llm_call(
                provider="openai", model="gpt-4o", coordinator="Busy"
            ) as call:
                call.record_usage(input_tokens=3, output_tokens=1)
                if n % 10 == 0:
                    raise TimeoutError

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    while any(w.is_alive() for w in workers):
        scrape()  # collections fold while the threads append
    samples = scrape()
    total = threads * per_thread
    errors = threads * len(range(0, per_thread, 10))
    labels = {"coordinator": "Busy", "provider": "openai", "model": "gpt-4o"}
    assert value(samples, "victor_llm_requests_total", **labels, operation="chat") == total
    assert value(samples, "victor_llm_request_duration_seconds_count", **labels, operation="chat") == total
    assert value(samples, "victor_llm_errors_total", **labels, operation="chat") == errors
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="input") == 3 * total


def test_unknown_model_counts_tokens_no_cost_and_says_so_once(
    telemetry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        with victor_otel.llm_call(provider="openai", model="mystery") as call:
            call.record_usage(input_tokens=7, output_tokens=1)
    samples = scrape()
    labels = {"coordinator": "_none", "provider": "openai", "model": "mystery"}
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="input") == 21
    assert value(samples, "victor_llm_cost_usd_total", **labels) == 0
    assert [r.getMessage() for r in caplog.records].count(
        next(r.getMessage() for r in caplog.records if "no price for model 'mystery'" in r.getMessage())
    ) == 1


def test_prices_from_yaml_and_bad_tables_name_the_setting(tmp_path: Any) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("gpt-4o: {input: 2.5, output: 10}\n")
    table = PriceTable.parse(str(path))
    assert table.cost("openai", "gpt-4o", input_tokens=1_000_000, output_tokens=0, cached_input_tokens=500_000) == 2.5
    for bad in ({"m": {"input": -1, "output": 1}}, {"m": {"input": 1}}, {"m": {"input": 1, "output": 1, "x": 2}}, 7):
        with pytest.raises(VictorOtelConfigError, match="llm_prices"):
            PriceTable.parse(bad)
    with pytest.raises(VictorOtelConfigError, match="llm_prices"):
        victor_otel.init(traces_exporter="none", llm_prices=str(tmp_path / "missing.yaml"))


def test_a_price_file_named_by_the_environment_names_its_variable(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file is read after the settings are parsed: the error still says which variable to fix.
    monkeypatch.setenv("VICTOR_OTEL_LLM_PRICES", "0")
    with pytest.raises(VictorOtelConfigError, match=r"^llm_prices \(VICTOR_OTEL_LLM_PRICES\): cannot read '0'"):
        victor_otel.init(traces_exporter="none")
    (tmp_path / "prices.yaml").write_text("gpt-4o: {input: 2.5}\n")
    monkeypatch.setenv("VICTOR_OTEL_LLM_PRICES", str(tmp_path / "prices.yaml"))
    with pytest.raises(VictorOtelConfigError, match=r"^llm_prices \(VICTOR_OTEL_LLM_PRICES\): gpt-4o: keys"):
        victor_otel.init(traces_exporter="none")


def test_genai_prices_package_as_a_source() -> None:
    pytest.importorskip("genai_prices")
    table = PriceTable.parse("genai-prices")
    cost = table.cost("openai", "gpt-4o", input_tokens=1000, output_tokens=100, cached_input_tokens=200)
    assert cost is not None and cost > 0


def test_content_capture_is_redacted_truncated_and_off_by_default(server: Any, spans: InMemorySpanExporter,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    victor_otel.init(traces_exporter="none", span_exporters=[spans], instrument_llm=True,
                     llm_capture_content=True)
    try:
        caplog.set_level(logging.INFO, logger="victor_otel.llm")
        ChatCoordinator(server).ask_openai(stream=True)
    finally:
        uninstrument_clients()
    (span,) = [s for s in spans.get_finished_spans() if s.name == "chat gpt-4o"]
    attrs = span.attributes or {}
    assert "say hello" in attrs[semconv.INPUT_MESSAGES] and "hunter2" not in attrs[semconv.INPUT_MESSAGES]
    assert "".join(TEXT) in attrs[semconv.OUTPUT_MESSAGES]
    logged = [r for r in caplog.records if r.name == "victor_otel.llm"]
    assert logged and all("hunter2" not in str(r.__dict__) for r in logged)
    from victor_otel.llm.calls import CONTENT_MAX_CHARS, content_text

    assert len(content_text(["x" * (CONTENT_MAX_CHARS * 2)])) == CONTENT_MAX_CHARS


def test_capture_setting_reads_the_official_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_and_event")
    assert victor_otel.Settings.from_sources().llm_capture_content is True
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "false")
    assert victor_otel.Settings.from_sources().llm_capture_content is False


def test_stability_opt_in_drops_the_previous_attributes(monkeypatch: pytest.MonkeyPatch,
                                                       spans: InMemorySpanExporter) -> None:
    victor_otel.init(traces_exporter="none", span_exporters=[spans])
    with victor_otel.llm_call(provider="openai", model="a"):
        pass
    victor_otel.shutdown()
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    later = InMemorySpanExporter()  # a shut-down exporter keeps what it had and takes nothing more
    victor_otel.init(traces_exporter="none", span_exporters=[later])
    with victor_otel.llm_call(provider="openai", model="b"):
        pass
    finished = [*spans.get_finished_spans(), *later.get_finished_spans()]
    by_name = {s.name: s.attributes or {} for s in finished}
    assert by_name["chat a"][semconv.SYSTEM] == "openai"
    assert semconv.SYSTEM not in by_name["chat b"] and by_name["chat b"][semconv.PROVIDER_NAME] == "openai"


def genai_metrics(telemetry: victor_otel.Telemetry) -> dict[str, Any]:
    """The gen_ai.* metrics of one collection through the pushing side (the in-memory reader)."""
    data = telemetry.collect()
    return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name.startswith("gen_ai.")}


def test_otlp_side_gets_the_conventions_instruments_with_their_buckets() -> None:
    # a pushing exporter (console here, OTLP in production) turns the token-usage histograms on
    telemetry = victor_otel.init(traces_exporter="none", metrics_exporter="prometheus,console",
                                 metric_export_interval=86_400_000)
    with victor_otel.llm_call(provider="openai", model="gpt-4o", stream=True) as call:
        call.first_token()
        call.record_usage(input_tokens=100, output_tokens=20)
    with victor_otel.llm_call(provider="openai", model="gpt-4o") as call:
        call.record_usage(input_tokens=3000, output_tokens=1)
    genai = genai_metrics(telemetry)
    usage = genai["gen_ai.client.token.usage"].data.data_points
    assert {p.attributes[semconv.TOKEN_TYPE]: (p.sum, p.count) for p in usage} == {
        "input": (3100, 2), "output": (21, 2)
    }
    (inputs,) = [p for p in usage if p.attributes[semconv.TOKEN_TYPE] == "input"]
    assert list(inputs.explicit_bounds) == list(GENAI_TOKEN_BUCKETS)
    # 100 falls in (64, 256], 3000 in (1024, 4096]
    assert inputs.bucket_counts[GENAI_TOKEN_BUCKETS.index(256)] == 1
    assert inputs.bucket_counts[GENAI_TOKEN_BUCKETS.index(4096)] == 1
    (duration,) = genai["gen_ai.client.operation.duration"].data.data_points
    assert list(duration.explicit_bounds) == list(GENAI_DURATION_BUCKETS) and duration.count == 2
    assert semconv.ERROR_TYPE not in duration.attributes
    assert genai["gen_ai.client.operation.time_to_first_chunk"].data.data_points[0].count == 1
    body = victor_otel.render()[0].decode()
    assert "gen_ai_client" not in body  # /metrics shows the same data under victor_llm_* only
    assert "victor_llm_requests_total" in body


def test_failed_calls_carry_error_type_on_the_conventions_duration(telemetry: Any) -> None:
    for error in (TimeoutError, TimeoutError, KeyError):
        with pytest.raises(error), victor_otel.llm_call(provider="openai", model="gpt-4o"):
            raise error()
    with victor_otel.llm_call(provider="openai", model="gpt-4o"):
        pass
    points = genai_metrics(telemetry)["gen_ai.client.operation.duration"].data.data_points
    by_error = {p.attributes.get(semconv.ERROR_TYPE): p.count for p in points}
    assert by_error == {None: 1, "TimeoutError": 2, "KeyError": 1}
    assert all(sum(p.bucket_counts) == p.count for p in points)
    # /metrics keeps one duration histogram of every call, and the errors apart
    samples = scrape()
    labels = {"coordinator": "_none", "provider": "openai", "model": "gpt-4o", "operation": "chat"}
    assert value(samples, "victor_llm_request_duration_seconds_count", **labels) == 4
    assert value(samples, "victor_llm_errors_total", **labels) == 3
    assert "gen_ai.client.token.usage" not in genai_metrics(telemetry)  # nothing pushes: not kept


def test_label_sets_beyond_the_cap_fold_into_the_overflow_series(spans: InMemorySpanExporter) -> None:
    victor_otel.init(traces_exporter="none", cardinality_limit=2)
    for model in ("a", "b", "c", "d"):
        with victor_otel.llm_call(provider="openai", model=model):
            pass
    samples = scrape()
    assert value(samples, "victor_llm_requests_total", coordinator="_overflow", provider="_overflow",
                 model="_overflow", operation="_overflow", otel_metric_overflow="true") == 2


def test_spend_rate_over_the_budget_warns_in_health() -> None:
    victor_otel.init(traces_exporter="none", llm_prices=PRICES, llm_budget_usd_per_hour=0.001)
    with victor_otel.llm_call(provider="openai", model="gpt-4o", coordinator="Spender") as call:
        call.record_usage(input_tokens=100_000, output_tokens=0)
    report = asyncio.run(victor_otel.check_health())
    (check,) = [c for c in report.checks if c.key == "llm:spend_rate"]
    assert check.status == "warn" and "Spender" in (check.output or "")
    assert "victor_llm_budget_usd_per_hour 0.001" in victor_otel.render()[0].decode()


def test_instrumenting_twice_wraps_once(llm: Any) -> None:
    before = openai.resources.chat.completions.Completions.create
    instrument_clients()
    assert openai.resources.chat.completions.Completions.create is before
    uninstrument_clients()
    assert not hasattr(openai.resources.chat.completions.Completions.create, "__victor_otel_original__")


@victor_otel.coordinator("SearchTool", kind="tool")
def search(query: str) -> str:
    return query


def test_tool_coordinators_are_execute_tool_spans(telemetry: Any, spans: InMemorySpanExporter) -> None:
    search("x")
    (span,) = spans.get_finished_spans()
    attrs = span.attributes or {}
    assert attrs[semconv.OPERATION_NAME] == semconv.EXECUTE_TOOL and attrs[semconv.TOOL_NAME] == "SearchTool"
    assert attrs["victor.coordinator"] == "SearchTool"


@pytest.mark.capotel(instrument_llm=True, llm_prices=PRICES)
def test_capotel_helpers_for_llm_calls(capotel: Any, server: Any) -> None:
    try:
        ChatCoordinator(server).ask_openai()
        with pytest.raises(openai.RateLimitError):
            ChatCoordinator(server).fail("openai", "fail-429")
    finally:
        uninstrument_clients()
    (span,) = capotel.llm_spans(provider="openai", model="gpt-4o")
    assert span.attributes[semconv.INPUT_TOKENS] == OPENAI_USAGE[0]
    assert capotel.llm_requests(coordinator="ChatCoordinator") == 2
    assert capotel.llm_errors(coordinator="ChatCoordinator") == 1
    assert capotel.llm_errors(error_type="RateLimitError") == 1
    assert capotel.llm_tokens("cached_input", model="gpt-4o") == OPENAI_USAGE[2]
    assert capotel.llm_cost(model="gpt-4o") == pytest.approx(openai_cost())


def test_a_forked_child_counts_its_own_calls(telemetry: Any) -> None:
    import os

    with victor_otel.llm_call(provider="openai", model="gpt-4o", coordinator="Parent"):
        pass
    pid = os.fork()
    if pid == 0:  # the child: the parent's calls are not its own
        from victor_otel.llm import get_recorder

        os._exit(0 if not get_recorder().series else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert value(scrape(), "victor_llm_requests_total", coordinator="Parent", provider="openai", model="gpt-4o",
                 operation="chat") == 1


def test_multi_process_metrics_sum_every_workers_model_calls(tmp_path: Any) -> None:
    victor_otel.init(service_name="workers", traces_exporter="none", multiproc_dir=str(tmp_path), llm_prices=PRICES)
    labels = {"coordinator": "Chat", "provider": "openai", "model": "gpt-4o"}

    def calls(n: int, failures: int) -> None:
        for _ in range(n):
            with victor_otel.llm_call(provider="openai", model="gpt-4o", coordinator="Chat") as call:
                call.record_usage(input_tokens=1000, output_tokens=10)
        for _ in range(failures):
            with pytest.raises(TimeoutError), victor_otel.llm_call(provider="openai", model="gpt-4o",
                                                                   coordinator="Chat"):
                raise TimeoutError

    calls(3, 1)  # the parent: 4 requests, 1 error
    # a scrape writes this process's snapshot (the writer also does, every second)
    assert value(scrape(), "victor_llm_requests_total", **labels, operation="chat") == 4

    def worker() -> dict[str, Any]:
        calls(5, 2)
        seen = scrape()
        victor_otel.shutdown()  # its last snapshot stays behind
        return {"requests": value(seen, "victor_llm_requests_total", **labels, operation="chat")}

    # the worker, a real forked process, sees the parent's calls (from its snapshot) and its own
    assert in_child(worker) == {"requests": 4 + 7}
    samples = scrape()  # the parent, after the worker exited: its counts are kept
    assert value(samples, "victor_llm_requests_total", **labels, operation="chat") == 11
    assert value(samples, "victor_llm_errors_total", **labels, operation="chat") == 3
    assert value(samples, "victor_llm_errors_by_type_total", **labels, operation="chat", error_type="TimeoutError") == 3
    assert value(samples, "victor_llm_tokens_total", **labels, token_type="input") == 8 * 1000
    assert value(samples, "victor_llm_cost_usd_total", **labels) == pytest.approx(8 * (1000 * 2.5 + 10 * 10.0) / 1e6)
    assert value(samples, "victor_llm_request_duration_seconds_count", **labels, operation="chat") == 11
    body = victor_otel.render()[0].decode()
    assert body.count("# TYPE victor_llm_requests_total counter") == 1  # one family, summed: not one per process


def test_only_the_pushing_readers_get_the_conventions_instruments(spans: InMemorySpanExporter) -> None:
    from victor_otel.llm import get_recorder
    from victor_otel.readers import VictorPeriodicReader, VictorPrometheusReader

    telemetry = victor_otel.init(traces_exporter="none", metrics_exporter="prometheus,console",
                                 metric_export_interval=86_400_000)
    readers = {type(reader): reader for reader in telemetry.readers}
    genai = get_recorder().produce_genai
    assert genai in readers[VictorPeriodicReader]._producers
    assert genai not in readers[VictorPrometheusReader]._producers
    assert get_recorder().produce in readers[VictorPrometheusReader]._producers


def test_a_bad_price_table_leaves_nothing_initialised(tmp_path: Any) -> None:
    with pytest.raises(VictorOtelConfigError, match="llm_prices"):
        victor_otel.init(traces_exporter="none", llm_prices={"gpt-4o": {"input": "cheap", "output": 1}})
    assert victor_otel.current() is None
