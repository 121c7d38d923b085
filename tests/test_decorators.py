"""Every decorator shape, outcomes, spans and context, read back from spans and /metrics."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import sys
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import victor_otel
from tests.conftest import scrape, value
from victor_otel import VictorOtelConfigError

EXEC = "victor_coordinator_executions_total"
ERRORS = "victor_coordinator_errors_total"
BY_TYPE = "victor_coordinator_errors_by_type_total"
CANCELLED = "victor_coordinator_cancelled_total"


def executions(coordinator: str, method: str) -> float | None:
    return value(scrape(), EXEC, coordinator=coordinator, method=method)


@victor_otel.coordinator("ChatCoordinator")
class ChatCoordinator:
    """A coordinator with every shape of method."""

    def plan(self, goal: str) -> str:
        """Plan a goal."""
        return f"plan:{goal}"

    async def chat(self, msg: str) -> str:
        await asyncio.sleep(0)
        return f"re:{msg}"

    def words(self, text: str) -> Any:
        yield from text.split()

    async def stream(self, text: str) -> Any:
        for word in text.split():
            await asyncio.sleep(0)
            yield word

    def fail(self) -> None:
        raise KeyError("missing")

    @staticmethod
    def pure(x: int) -> int:
        return x * 2

    @classmethod
    def build(cls, n: int) -> int:
        return n + 1

    def _private(self) -> str:
        return "not instrumented"


def test_class_decorator_instruments_every_public_method(telemetry: Any) -> None:
    c = ChatCoordinator()
    assert c.plan("x") == "plan:x"
    assert asyncio.run(c.chat("hi")) == "re:hi"
    assert list(c.words("a b c")) == ["a", "b", "c"]

    async def consume() -> list[str]:
        return [w async for w in c.stream("d e")]

    assert asyncio.run(consume()) == ["d", "e"]
    assert ChatCoordinator.pure(2) == 4 and c.pure(3) == 6
    assert ChatCoordinator.build(1) == 2
    assert c._private() == "not instrumented"
    samples = scrape()
    for method in ("plan", "chat", "words", "stream", "build"):
        assert value(samples, EXEC, coordinator="ChatCoordinator", method=method) == 1, method
    assert value(samples, EXEC, coordinator="ChatCoordinator", method="pure") == 2
    assert value(samples, EXEC, coordinator="ChatCoordinator", method="_private") is None


def test_shapes_and_metadata_are_preserved() -> None:
    assert inspect.iscoroutinefunction(ChatCoordinator.chat)
    assert inspect.isasyncgenfunction(ChatCoordinator.stream)
    assert inspect.isgeneratorfunction(ChatCoordinator.words)
    assert not inspect.iscoroutinefunction(ChatCoordinator.plan)
    assert ChatCoordinator.plan.__doc__ == "Plan a goal."
    assert ChatCoordinator.plan.__name__ == "plan"
    assert str(inspect.signature(ChatCoordinator.plan)) == "(self, goal: 'str') -> 'str'"
    assert isinstance(inspect.getattr_static(ChatCoordinator, "pure"), staticmethod)
    assert isinstance(inspect.getattr_static(ChatCoordinator, "build"), classmethod)


def test_bare_decorator_names_after_the_class(telemetry: Any) -> None:
    @victor_otel.coordinator
    class ToolCoordinator:
        def run(self) -> int:
            return 1

    ToolCoordinator().run()
    assert executions("ToolCoordinator", "run") == 1


def test_instrument_and_coordinator_on_functions(telemetry: Any) -> None:
    @victor_otel.instrument(coordinator="ToolCoordinator", method="run")
    def run_tool(name: str) -> str:
        return name

    @victor_otel.instrument(coordinator="ToolCoordinator")
    async def fetch() -> int:
        return 3

    @victor_otel.coordinator("MemoryCoordinator")
    def remember() -> str:
        return "ok"

    assert run_tool("x") == "x"
    assert asyncio.run(fetch()) == 3
    assert remember() == "ok"
    assert executions("ToolCoordinator", "run") == 1
    assert executions("ToolCoordinator", "fetch") == 1
    assert executions("MemoryCoordinator", "remember") == 1


def test_bound_methods_partials_and_callable_objects(telemetry: Any) -> None:
    class Greeter:
        def __init__(self) -> None:
            self.greeting = "hello"

        def greet(self, name: str) -> str:
            return f"{self.greeting} {name}"

    class Adder:
        def __call__(self, a: int, b: int) -> int:
            return a + b

    class AsyncAdder:
        async def __call__(self, a: int) -> int:
            return a + 1

    bound = victor_otel.instrument("Misc", "greet")(Greeter().greet)
    part = victor_otel.instrument("Misc", "partial")(functools.partial(lambda a, b: a * b, 3))
    obj = victor_otel.instrument("Misc", "add")(Adder())
    aobj = victor_otel.instrument("Misc", "aadd")(AsyncAdder())
    assert bound("bob") == "hello bob"
    assert part(4) == 12
    assert obj(1, 2) == 3
    assert inspect.iscoroutinefunction(aobj)
    assert asyncio.run(aobj(1)) == 2
    for method in ("greet", "partial", "add", "aadd"):
        assert executions("Misc", method) == 1, method


def test_slotted_class_methods(telemetry: Any) -> None:
    @victor_otel.coordinator("Slotted")
    class Slotted:
        __slots__ = ("n",)

        def __init__(self) -> None:
            self.n = 2

        def double(self) -> int:
            return self.n * 2

    assert Slotted().double() == 4
    assert executions("Slotted", "double") == 1


def test_decorating_twice_counts_once(telemetry: Any) -> None:
    def f() -> int:
        return 1

    twice = victor_otel.instrument("Twice", "f")(victor_otel.instrument("Twice", "f")(f))
    twice()
    assert executions("Twice", "f") == 1


def test_exception_is_reraised_unchanged_and_counted(telemetry: Any, spans: InMemorySpanExporter) -> None:
    c = ChatCoordinator()
    with pytest.raises(KeyError) as caught:
        c.fail()
    original = caught.value
    # The same object, with the user's frame still in its traceback.
    frames = []
    tb = original.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert frames[-1] == "fail"
    samples = scrape()
    assert value(samples, ERRORS, coordinator="ChatCoordinator", method="fail") == 1
    assert value(samples, BY_TYPE, coordinator="ChatCoordinator", method="fail", error_type="KeyError") == 1
    assert value(samples, EXEC, coordinator="ChatCoordinator", method="fail") == 1
    (span,) = spans.get_finished_spans()
    assert span.name == "ChatCoordinator.fail"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "KeyError"
    assert [e.name for e in span.events] == ["exception"]


def test_same_exception_object_propagates(telemetry: Any) -> None:
    error = RuntimeError("boom")

    @victor_otel.instrument("Errors", "raise_it")
    async def raise_it() -> None:
        raise error

    with pytest.raises(RuntimeError) as caught:
        asyncio.run(raise_it())
    assert caught.value is error


def test_cancellation_is_not_an_error(telemetry: Any, spans: InMemorySpanExporter) -> None:
    started = asyncio.Event()

    @victor_otel.instrument("Slow", "wait")
    async def wait() -> None:
        started.set()
        await asyncio.sleep(60)

    async def main() -> None:
        task = asyncio.create_task(wait())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    samples = scrape()
    assert value(samples, CANCELLED, coordinator="Slow", method="wait") == 1
    assert value(samples, ERRORS, coordinator="Slow", method="wait") == 0
    assert not [k for k in samples if k[0] == BY_TYPE]
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None and span.attributes["victor.outcome"] == "cancelled"


def test_nested_calls_make_parent_and_child_spans(telemetry: Any, spans: InMemorySpanExporter) -> None:
    @victor_otel.instrument("Tool", "inner")
    def inner() -> int:
        return 1

    @victor_otel.instrument("Chat", "outer")
    async def outer() -> int:
        return inner() + 1

    assert asyncio.run(outer()) == 2
    by_name = {s.name: s for s in spans.get_finished_spans()}
    child, parent = by_name["Tool.inner"], by_name["Chat.outer"]
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id


def test_generator_restores_callers_context_at_every_yield(telemetry: Any, spans: InMemorySpanExporter) -> None:
    seen_inside: list[int] = []

    @victor_otel.instrument("Gen", "items")
    def items() -> Any:
        for i in range(3):
            seen_inside.append(trace.get_current_span().get_span_context().span_id)
            yield i

    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        caller_id = caller.get_span_context().span_id
        for _ in items():
            assert trace.get_current_span().get_span_context().span_id == caller_id
    gen_span = next(s for s in spans.get_finished_spans() if s.name == "Gen.items")
    assert set(seen_inside) == {gen_span.context.span_id}
    assert gen_span.parent is not None and gen_span.parent.span_id == caller_id


def test_async_generator_restores_callers_context(telemetry: Any, spans: InMemorySpanExporter) -> None:
    @victor_otel.instrument("Gen", "aitems")
    async def aitems() -> Any:
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    async def main() -> None:
        before = trace.get_current_span()
        async for _ in aitems():
            assert trace.get_current_span() is before

    asyncio.run(main())
    assert [s.name for s in spans.get_finished_spans()] == ["Gen.aitems"]


def test_generator_send_throw_and_return_value(telemetry: Any) -> None:
    @victor_otel.instrument("Gen", "echo")
    def echo() -> Any:
        received = []
        try:
            while True:
                received.append((yield len(received)))
        except ValueError:
            yield "handled"
        return received

    gen = echo()
    assert next(gen) == 0
    assert gen.send("a") == 1
    assert gen.throw(ValueError()) == "handled"
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == ["a"]
    assert executions("Gen", "echo") == 1


def test_abandoned_generators_end_their_spans(telemetry: Any, spans: InMemorySpanExporter) -> None:
    @victor_otel.instrument("Gen", "endless")
    def endless() -> Any:
        while True:
            yield 1

    @victor_otel.instrument("Gen", "aendless")
    async def aendless() -> Any:
        while True:
            yield 1

    gen = endless()
    next(gen)
    del gen
    gc.collect()

    async def main() -> None:
        agen = aendless()
        await agen.__anext__()
        await agen.aclose()

    asyncio.run(main())
    finished = {s.name: s for s in spans.get_finished_spans()}
    for name in ("Gen.endless", "Gen.aendless"):
        assert finished[name].attributes is not None
        assert finished[name].attributes["victor.outcome"] == "cancelled"
    samples = scrape()
    assert value(samples, CANCELLED, coordinator="Gen", method="endless") == 1
    assert value(samples, CANCELLED, coordinator="Gen", method="aendless") == 1


def test_generator_error_mid_stream(telemetry: Any, spans: InMemorySpanExporter) -> None:
    @victor_otel.instrument("Gen", "broken")
    async def broken() -> Any:
        yield 1
        raise ConnectionError("stream cut")

    async def main() -> list[int]:
        out = []
        async for item in broken():
            out.append(item)
        return out

    with pytest.raises(ConnectionError):
        asyncio.run(main())
    assert value(scrape(), BY_TYPE, coordinator="Gen", method="broken", error_type="ConnectionError") == 1
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


def test_track_sync_and_async(telemetry: Any, spans: InMemorySpanExporter) -> None:
    with victor_otel.track("Chat", "retrieve") as span:
        assert span is not None and span.is_recording()

    async def main() -> None:
        async with victor_otel.track("Chat", "retrieve"):
            pass
        with pytest.raises(TimeoutError):
            async with victor_otel.track("Chat", "retrieve"):
                raise TimeoutError

    asyncio.run(main())
    samples = scrape()
    assert value(samples, EXEC, coordinator="Chat", method="retrieve") == 3
    assert value(samples, ERRORS, coordinator="Chat", method="retrieve") == 1
    assert value(samples, BY_TYPE, coordinator="Chat", method="retrieve", error_type="TimeoutError") == 1
    assert [s.name for s in spans.get_finished_spans()] == ["Chat.retrieve"] * 3


def test_no_spans_when_tracing_is_off() -> None:
    victor_otel.init(traces_exporter="none")

    @victor_otel.instrument("Quiet", "call")
    def call() -> Any:
        return trace.get_current_span()

    assert call() is trace.INVALID_SPAN
    assert executions("Quiet", "call") == 1


def test_calls_before_init_are_counted() -> None:
    @victor_otel.instrument("Early", "call")
    def call() -> int:
        return 1

    call()
    victor_otel.init(traces_exporter="none")
    call()
    assert executions("Early", "call") == 2


@pytest.mark.parametrize("bad", ["", "x" * 129, "line\nbreak", 42, None])
def test_bad_names_are_rejected(bad: Any) -> None:
    with pytest.raises(VictorOtelConfigError, match="coordinator"):
        victor_otel.instrument(bad)
    with pytest.raises(VictorOtelConfigError):
        victor_otel.track("Chat", bad) if bad is not None else victor_otel.track(bad)


def test_recorders(telemetry: Any) -> None:
    victor_otel.record_cache_hit("Cache")
    victor_otel.record_cache_hit("Cache")
    victor_otel.record_cache_miss("Cache")
    victor_otel.record_event("tool_called", 3)
    victor_otel.record_event("tool_called")
    samples = scrape()
    assert value(samples, "victor_coordinator_cache_hits_total", coordinator="Cache") == 2
    assert value(samples, "victor_coordinator_cache_misses_total", coordinator="Cache") == 1
    assert value(samples, "victor_coordinator_cache_hit_rate", coordinator="Cache") == pytest.approx(2 / 3)
    assert value(samples, "victor_analytics_events_total", event="tool_called") == 4
    with pytest.raises(VictorOtelConfigError, match="count"):
        victor_otel.record_event("tool_called", -1)


def test_threads_count_exactly(telemetry: Any) -> None:
    import threading

    @victor_otel.instrument("Threads", "work")
    def work() -> None:
        pass

    def loop() -> None:
        for _ in range(2000):
            work()

    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=loop) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(0.005)
    samples = scrape()
    assert value(samples, EXEC, coordinator="Threads", method="work") == 16000
    assert value(samples, "victor_coordinator_latency_seconds_count", coordinator="Threads", method="work") == 16000


def test_bare_instrument_says_the_coordinator_name_is_missing() -> None:
    with pytest.raises(victor_otel.VictorOtelConfigError, match="the coordinator name is missing") as caught:

        @victor_otel.instrument  # type: ignore[arg-type]
        def plan() -> None:
            pass

    assert '@victor_otel.instrument("ChatCoordinator")' in str(caught.value)
