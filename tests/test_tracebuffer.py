"""The recent-trace buffer behind the /debug pages: complete traces, bounded memory, slow and failed
traces kept longer, log records of a trace kept with it."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from victor_otel import tracebuffer
from victor_otel.tracebuffer import TraceBuffer, matching


@pytest.fixture
def buffered() -> Iterator[tuple[TracerProvider, TraceBuffer]]:
    provider = TracerProvider()
    buffer = TraceBuffer()
    provider.add_span_processor(buffer)
    yield provider, buffer
    provider.shutdown()


def one_trace(provider: TracerProvider, seconds: float = 0.001, failed: bool = False, children: int = 1,
              coordinator: str = "Chat", at: int = 1_000_000_000) -> int:
    """A trace with explicit timestamps (no sleeping): a root lasting ``seconds`` and its children."""
    tracer = provider.get_tracer("test")
    root = tracer.start_span("root", start_time=at, attributes={"victor.coordinator": coordinator})
    from opentelemetry import trace

    context = trace.set_span_in_context(root)
    for index in range(children):
        child = tracer.start_span(f"child-{index}", context=context, start_time=at + index + 1)
        child.end(end_time=at + index + 2)
    if failed:
        root.set_status(Status(StatusCode.ERROR, "boom"))
    root.end(end_time=at + int(seconds * 1e9))
    return root.get_span_context().trace_id


def test_a_trace_is_kept_once_its_root_ends_with_every_span(buffered: tuple[TracerProvider, TraceBuffer]) -> None:
    provider, buffer = buffered
    trace_id = one_trace(provider, children=3)
    (record,) = buffer.traces()
    assert record.trace_id == trace_id
    assert sorted(s.name for s in record.spans) == ["child-0", "child-1", "child-2", "root"]
    assert record.root is not None and record.root.name == "root"
    assert record.coordinators == ("Chat",) and not record.failed
    assert buffer.get(trace_id) is record


def test_memory_is_bounded_and_slow_and_failed_traces_outlive_fast_ones(
    buffered: tuple[TracerProvider, TraceBuffer],
) -> None:
    provider, buffer = buffered
    slow = one_trace(provider, seconds=5.0)
    failed = one_trace(provider, seconds=0.001, failed=True)
    for _ in range(10 * tracebuffer.RECENT):
        one_trace(provider, seconds=0.001)
    kept = buffer.traces()
    limit = tracebuffer.RECENT + tracebuffer.FAILED + tracebuffer.PER_BUCKET * (len(tracebuffer.LATENCY_BOUNDS) + 1)
    assert len(kept) <= limit
    ids = {r.trace_id for r in kept}
    assert slow in ids, "a slow trace stays in its latency bucket after many fast ones"
    assert failed in ids, "a failed trace stays after many successful ones"
    assert len(matching(kept, outcome="error")) == 1
    assert sum(buffer.bucket_counts()) <= tracebuffer.PER_BUCKET * (len(tracebuffer.LATENCY_BOUNDS) + 1)


def test_spans_per_trace_and_pending_traces_are_bounded(buffered: tuple[TracerProvider, TraceBuffer]) -> None:
    provider, buffer = buffered
    one_trace(provider, children=tracebuffer.MAX_SPANS + 50)
    (record,) = buffer.traces()
    assert len(record.spans) == tracebuffer.MAX_SPANS
    assert record.dropped_spans == 51  # 50 children beyond the cap plus the root, which ends last
    tracer = provider.get_tracer("test")
    from opentelemetry import trace

    roots = [tracer.start_span(f"r{i}") for i in range(tracebuffer.MAX_PENDING + 20)]
    for root in roots:  # children end, their roots never do: pending traces, bounded
        tracer.start_span("c", context=trace.set_span_in_context(root)).end()
    buffer.drain()
    assert len(buffer._pending) == tracebuffer.MAX_PENDING


def test_filters_by_coordinator_outcome_and_request_id(buffered: tuple[TracerProvider, TraceBuffer]) -> None:
    provider, buffer = buffered
    one_trace(provider, coordinator="Chat")
    one_trace(provider, coordinator="Tool", failed=True)
    tracer = provider.get_tracer("test")
    tracer.start_span("req", attributes={"victor.request_id": "req-42"}).end()
    kept = buffer.traces()
    assert [r.coordinators for r in matching(kept, coordinator="Tool")] == [("Tool",)]
    assert [r.failed for r in matching(kept, outcome="ok")] == [False, False]
    assert [r.request_id for r in matching(kept, request_id="req-42")] == ["req-42"]


def test_log_records_written_inside_a_trace_are_kept_with_it(buffered: tuple[TracerProvider, TraceBuffer]) -> None:
    provider, buffer = buffered
    buffer.install_log_capture()
    logger = logging.getLogger("test.tracebuffer")
    logger.setLevel(logging.INFO)
    logger.info("outside any trace")
    with provider.get_tracer("test").start_as_current_span("root") as root:
        logger.info("inside %s", "the trace")
        logger.debug("below the level: never created")
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("failed")
    (record,) = buffer.traces()
    assert [e.record.getMessage() for e in record.logs] == ["inside the trace", "failed"]
    assert record.logs[0].span_id == root.get_span_context().span_id
    assert record.logs[1].exception is not None and "KeyError" in record.logs[1].exception


def test_log_capture_restores_the_record_factory_on_shutdown() -> None:
    before = logging.getLogRecordFactory()
    provider = TracerProvider()
    buffer = TraceBuffer()
    provider.add_span_processor(buffer)
    buffer.install_log_capture()
    assert logging.getLogRecordFactory() is not before
    provider.shutdown()
    assert logging.getLogRecordFactory() is before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_fresh_buffer_even_with_the_lock_held(
    buffered: tuple[TracerProvider, TraceBuffer],
) -> None:
    provider, buffer = buffered
    one_trace(provider)
    assert len(buffer.traces()) == 1
    with buffer._lock:  # held at the fork, as another thread's drain could hold it
        pid = os.fork()
        if pid == 0:  # the child: without a renewed lock, this would wait for ever
            os._exit(0 if buffer.traces() == [] else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the child hung on the buffer's lock")
    assert len(buffer.traces()) == 1  # the parent keeps its own
