"""The export process (victor_otel.offload): spans cross the pipe unchanged, the child's answers are the
batches' outcomes, and whatever happens to the child, spans keep leaving or are counted as lost."""

from __future__ import annotations

import logging
import marshal
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

import victor_otel
from tests.faults import FaultServer, wait_for
from victor_otel import offload
from victor_otel.offload import ExportProcess


def _spans() -> list[ReadableSpan]:
    """Spans with everything OTLP carries: kinds, a remote parent with a trace state, events, links,
    every attribute type, an error status, and counts of what the limits dropped."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({"service.name": "offload", "deployment.environment": "test"}, "https://schema/1"),
        span_limits=SpanLimits(max_span_attributes=6, max_events=2, max_links=1, max_event_attributes=1),
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("victor_otel", "1.2.3", schema_url="https://schema/2")
    other = provider.get_tracer("another.scope")
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7, True,
                         TraceFlags(TraceFlags.SAMPLED), TraceState([("vendor", "value"), ("other", "x")]))
    linked = SpanContext(0x1234, 0x5678, False, TraceFlags(0))
    with tracer.start_as_current_span(
        "GET /chat", context=set_span_in_context(NonRecordingSpan(remote)), kind=SpanKind.SERVER,
        links=[Link(linked, {"link.reason": "retry"}), Link(linked)],
        attributes={"http.method": "GET", "http.status_code": 500, "ratio": 0.25, "flag": True,
                    "tags": ("a", "b"), "numbers": (1, 2, 3), "over.one": "x", "over.two": "y"},
    ) as server:
        server.add_event("first", {"k": "v", "dropped": 1}, timestamp=123)
        with other.start_as_current_span("ChatCoordinator.chat") as inner:
            inner.record_exception(ValueError("boom: secret=hunter2"))
            inner.set_status(Status(StatusCode.ERROR, "ValueError: boom"))
        server.add_event("second")
        server.add_event("third: over the limit")
    return list(memory.get_finished_spans())


def _round_trip(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """What the child rebuilds from what the application's process writes."""
    _, resources, scopes, records = marshal.loads(marshal.dumps(offload.batch_record(spans)))
    built_resources = [offload._cached({}, record, offload._resource) for record in resources]
    built_scopes = [None if record is None else offload._scope(record) for record in scopes]
    return [offload.span_from_record(record, built_resources, built_scopes) for record in records]


def test_spans_rebuilt_in_the_child_encode_to_the_same_otlp_bytes() -> None:
    spans = _spans()
    assert spans[1].dropped_attributes == 2 and spans[1].dropped_events == 1 and spans[1].dropped_links == 1
    rebuilt = _round_trip(spans)
    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()
    server = rebuilt[1]
    assert server.parent is not None and server.parent.is_remote
    assert server.parent.trace_state.to_header() == "vendor=value,other=x"
    assert (server.dropped_attributes, server.dropped_events, server.dropped_links) == (2, 1, 1)
    assert rebuilt[0].status.status_code is StatusCode.ERROR
    assert rebuilt[0].events[0].name == "exception" and rebuilt[0].events[0].dropped_attributes == 3


def test_a_change_in_any_field_changes_the_bytes() -> None:
    # The comparison above can fail: a span that lost its links (or anything else) does not encode the same.
    spans = _spans()
    rebuilt = _round_trip(spans)
    rebuilt[1]._links = ()
    assert encode_spans(rebuilt).SerializeToString() != encode_spans(spans).SerializeToString()


@pytest.fixture
def collector() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def _exporter(url: str, timeout: float = 5.0) -> ExportProcess:
    return ExportProcess(f"{url}/v1/traces", timeout, lambda: OTLPSpanExporter(endpoint=f"{url}/v1/traces"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_batches_reach_the_collector_through_a_child_process_that_exits_at_shutdown(collector: FaultServer) -> None:
    exporter = _exporter(collector.url)
    assert exporter.pid is None  # nothing started before the first batch
    assert exporter.export(_spans()) is SpanExportResult.SUCCESS
    pid = exporter.pid
    assert pid is not None and pid != os.getpid() and _alive(pid)
    assert exporter.export(_spans()) is SpanExportResult.SUCCESS
    assert exporter.pid == pid  # one child for every batch
    assert collector.span_names == ["ChatCoordinator.chat", "GET /chat"] * 2
    exporter.shutdown()
    assert not _alive(pid)
    assert exporter.export(_spans()) is SpanExportResult.FAILURE  # after shutdown, nothing leaves


def test_the_collectors_refusal_is_the_batchs_outcome(collector: FaultServer) -> None:
    collector.mode = "error"  # 500 (retried until the timeout by older exporters)
    exporter = _exporter(collector.url, timeout=1.0)
    try:
        assert exporter.export(_spans()) is SpanExportResult.FAILURE
        collector.mode = "ok"
        assert exporter.export(_spans()) is SpanExportResult.SUCCESS
        assert collector.count("traces", 500) >= 1 and collector.count("traces", 200) == 1
    finally:
        exporter.shutdown()


def test_the_exporters_messages_are_logged_in_the_applications_process(
    collector: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    collector.mode = "throttle"  # 429: the exporter logs each retry
    exporter = _exporter(collector.url, timeout=1.5)
    try:
        with caplog.at_level(logging.WARNING):
            assert exporter.export(_spans()) is SpanExportResult.FAILURE
        retries = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter.otlp.proto.http")]
        assert retries and all(r.levelno >= logging.WARNING for r in retries)
        assert any("Too Many Requests" in r.getMessage() or "429" in r.getMessage() for r in retries)
    finally:
        exporter.shutdown()


def test_a_child_killed_between_batches_is_replaced_and_no_batch_is_lost(
    collector: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = _exporter(collector.url)
    try:
        assert exporter.export(_spans()) is SpanExportResult.SUCCESS
        first = exporter.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not _alive(first) or exporter._child.process.poll() is not None,  # type: ignore[union-attr]
                 what="the child gone")
        with caplog.at_level(logging.WARNING, logger="victor_otel"):
            assert exporter.export(_spans()) is SpanExportResult.SUCCESS
        assert exporter.pid not in (None, first) and exporter.starts == 2
        assert "the export process exited" in caplog.text
        assert len(collector.span_names) == 4
    finally:
        exporter.shutdown()


def test_a_child_killed_during_a_batch_fails_that_batch_only(collector: FaultServer) -> None:
    collector.mode = "hang"
    exporter = _exporter(collector.url, timeout=30.0)
    try:
        outcome: list[SpanExportResult] = []
        thread = threading.Thread(target=lambda: outcome.append(exporter.export(_spans())))
        thread.start()
        wait_for(lambda: collector.count("traces") >= 1, what="the batch at the collector")
        began = time.monotonic()
        os.kill(exporter.pid, signal.SIGKILL)  # type: ignore[arg-type]
        thread.join(10)
        assert outcome == [SpanExportResult.FAILURE] and time.monotonic() - began < 5
        collector.mode = "ok"
        assert exporter.export(_spans()) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def test_abort_stops_a_batch_stuck_on_a_hanging_collector_at_once(collector: FaultServer) -> None:
    collector.mode = "hang"
    exporter = _exporter(collector.url, timeout=30.0)
    outcome: list[SpanExportResult] = []
    thread = threading.Thread(target=lambda: outcome.append(exporter.export(_spans())))
    thread.start()
    wait_for(lambda: collector.count("traces") >= 1, what="the batch at the collector")
    pid = exporter.pid
    began = time.monotonic()
    exporter.abort()
    thread.join(10)
    assert outcome == [SpanExportResult.FAILURE] and time.monotonic() - began < 5
    assert pid is not None and not _alive(pid)


def test_a_child_that_stops_reading_is_given_up_within_the_deadline(
    collector: FaultServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A child that says it is ready, then never reads again (hung): a batch larger than the pipe's buffer
    # cannot be written; the export fails by the deadline, the child is killed, the next one is started.
    ready = tmp_path / "ready.frame"
    ready.write_bytes(offload._frame(("ready",)))
    hung = tmp_path / "python-hung"
    hung.write_text(f"#!/bin/sh\ncat '{ready}'\nexec sleep 600\n")
    hung.chmod(hung.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(offload.sys, "executable", str(hung))
    monkeypatch.setattr(offload, "ANSWER_MARGIN", 0.5)
    exporter = _exporter(collector.url, timeout=0.5)
    batch = _spans() * 300  # about 300 KB, over a pipe's 64 KB
    began = time.monotonic()
    assert exporter.export(batch) is SpanExportResult.FAILURE
    assert time.monotonic() - began < 5
    assert exporter.pid is None and len(exporter._deaths) == 1
    exporter.abort()


def test_a_batch_marshal_cannot_carry_goes_in_process_and_the_next_goes_through_the_child(
    collector: FaultServer,
) -> None:
    class Opaque:  # no SDK attribute rule lets this through; a hand-made ReadableSpan can carry anything
        def __str__(self) -> str:
            return "opaque"

    odd = ReadableSpan(name="odd", context=SpanContext(1, 2, False), attributes={"odd": Opaque()},  # type: ignore[dict-item]
                       start_time=1, end_time=2)
    exporter = _exporter(collector.url)
    try:
        exporter.export([odd])  # its outcome is the in-process exporter's
        assert exporter.pid is None and not exporter.in_process
        assert exporter.export(_spans()) is SpanExportResult.SUCCESS
        assert exporter.pid is not None and not exporter.in_process
    finally:
        exporter.shutdown()


def test_without_a_python_to_start_the_batches_leave_from_this_process(
    collector: FaultServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(offload.sys, "executable", "")  # an embedding server (uWSGI): no interpreter to run
    exporter = _exporter(collector.url)
    with caplog.at_level(logging.WARNING, logger="victor_otel"):
        assert exporter.export(_spans()) is SpanExportResult.SUCCESS
    assert exporter.in_process and exporter.pid is None
    assert "no Python executable" in caplog.text and caplog.text.count("exported from the application") == 1
    assert len(collector.span_names) == 2
    exporter.shutdown()


def test_a_child_that_never_starts_is_tried_three_times_then_given_up(
    collector: FaultServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "python-broken"
    broken.write_text("#!/bin/sh\necho 'cannot import' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(offload.sys, "executable", str(broken))
    exporter = _exporter(collector.url)
    with caplog.at_level(logging.WARNING, logger="victor_otel"):
        assert exporter.export(_spans()) is SpanExportResult.SUCCESS  # in-process, the batch is not lost
    assert exporter.in_process and len(exporter._deaths) == 3
    assert "stopped 3 times within a minute" in caplog.text
    assert len(collector.span_names) == 2
    exporter.shutdown()


def test_init_exports_otlp_spans_through_the_child_unless_told_not_to(collector: FaultServer) -> None:
    telemetry = victor_otel.init(service_name="offload", traces_exporter="otlp", otlp_endpoint=collector.url,
                                 metrics_exporter="none")
    exporter = telemetry._exporters[0].inner
    assert isinstance(exporter, ExportProcess)

    @victor_otel.instrument("OffloadCoordinator", "work")
    def work() -> None:
        pass

    for _ in range(3):
        work()
    telemetry.tracer_provider.force_flush()
    assert collector.span_names == ["OffloadCoordinator.work"] * 3
    stats = telemetry.export_stats()["traces"]
    assert stats["success"] == 3
    assert stats["export_process"] == {"pid": exporter.pid, "starts": 1, "in_process": False}
    pid = exporter.pid
    victor_otel.shutdown()
    assert pid is not None and not _alive(pid)

    telemetry = victor_otel.init(service_name="offload", traces_exporter="otlp", otlp_endpoint=collector.url,
                                 metrics_exporter="none", export_process=False)
    assert isinstance(telemetry._exporters[0].inner, OTLPSpanExporter)


def test_the_child_imports_from_this_process_path_but_never_auto_instruments_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    auto = "/venv/lib/python3.11/site-packages/opentelemetry/instrumentation/auto_instrumentation"
    monkeypatch.setattr(offload.sys, "path", ["", str(tmp_path), auto, "/venv/lib/python3.11/site-packages"])
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer x")
    env = offload.child_environment()
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/venv/lib/python3.11/site-packages"]
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == "authorization=Bearer x"
