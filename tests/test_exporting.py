"""What leaves the process: every exported item counted once by outcome, every span redacted on its way.

``exporting.py`` wraps the exporters ``init()`` builds (counting success and failure) and the batch
processors' drop accounting; ``victor_otel_exported_total{signal,outcome}`` and
``Telemetry.export_stats()`` report the counts. Faults over real sockets (a collector down, hanging,
throttling, flapping) are in tests/test_reliability_exporters.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import victor_otel
from victor_otel.exporting import (
    ABANDONED,
    OUTCOMES,
    CountingSpanExporter,
    ExportStats,
    SignalStats,
    redacted_span,
)
from victor_otel.testing import CapturedTelemetry

SECRET_PASSWORD = "hunter2-do-not-leak"


class Refusing(SpanExporter):
    """An exporter whose collector answers every export with a failure."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


def emit(exporter: SpanExporter, n: int) -> None:
    """End ``n`` spans through a synchronous processor, one export each."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for i in range(n):
        with tracer.start_as_current_span(f"span {i}"):
            pass


def test_signal_stats_count_each_outcome_and_remember_the_last_error() -> None:
    stats = SignalStats("traces")
    stats.exported(3)
    stats.failed(2, "OSError")
    stats.failed(1, "TimeoutError")
    stats.drop(4)
    snapshot = stats.snapshot()
    assert (snapshot["success"], snapshot["failure"], snapshot["dropped"]) == (3, 3, 4)
    assert snapshot["consecutive_failures"] == 2 and snapshot["last_error"] == "TimeoutError"
    assert snapshot["queued"] is None and snapshot["queue_capacity"] is None  # no processor attached
    stats.exported(1)
    assert stats.snapshot()["consecutive_failures"] == 0


def test_export_stats_produce_one_point_per_signal_and_outcome() -> None:
    stats = ExportStats()
    assert stats.produce() == []  # no exporter, no family
    stats.signal("traces").exported(5)
    stats.signal("logs").drop(2)
    (metric,) = stats.produce()
    assert metric.name == "victor.otel.exported"
    values = {(p.attributes["signal"], p.attributes["outcome"]): p.value for p in metric.data.data_points}
    assert values == {
        ("traces", "success"): 5, ("traces", "failure"): 0, ("traces", "dropped"): 0,
        ("logs", "success"): 0, ("logs", "failure"): 0, ("logs", "dropped"): 2,
    }
    assert set(OUTCOMES) == {"success", "failure", "dropped"}
    with pytest.raises(ValueError, match="signal"):
        stats.signal("profiles")


def test_a_counting_exporter_counts_every_export_once_by_outcome() -> None:
    accepted, refused = SignalStats("traces"), SignalStats("traces")
    inner = InMemorySpanExporter()
    emit(CountingSpanExporter(inner, accepted), 3)
    emit(CountingSpanExporter(Refusing(), refused), 2)
    assert len(inner.get_finished_spans()) == 3
    assert (accepted.success, accepted.failure) == (3, 0)
    assert (refused.success, refused.failure, refused.last_error) == (0, 2, "export failed")


def test_an_abandoned_exporter_fails_at_once_and_says_why() -> None:
    stats = SignalStats("traces")
    inner = InMemorySpanExporter()
    counting = CountingSpanExporter(inner, stats)
    counting.abandon()  # what shutdown does past its budget
    emit(counting, 2)
    assert inner.get_finished_spans() == ()
    assert (stats.failure, stats.last_error) == (2, ABANDONED)


def test_the_running_telemetry_reports_what_its_exporters_exported(capotel: CapturedTelemetry) -> None:
    @victor_otel.instrument("Chat", "chat")
    def chat() -> None:
        pass

    for _ in range(3):
        chat()
    assert len(capotel.spans("Chat.chat")) == 3
    assert capotel.telemetry.export_stats()["traces"]["success"] == 3
    assert capotel.metric("victor_otel_exported_total", signal="traces", outcome="success") == 3
    assert capotel.metric("victor_otel_exported_total", signal="traces", outcome="failure") == 0


def test_exported_spans_keep_their_shape_and_dropped_counts(spans: InMemorySpanExporter) -> None:
    """Redaction at export copies only a span that holds a secret, and keeps what the SDK dropped."""
    monkey_limits = {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "3"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in monkey_limits.items():
            mp.setenv(k, v)
        victor_otel.init(service_name="sec", traces_exporter="none", span_exporters=[spans])
        tracer = victor_otel.current().tracer  # type: ignore[union-attr]
        with tracer.start_as_current_span("plain", attributes={"a": "1", "b": 2}):
            pass
        with tracer.start_as_current_span("secret") as span:
            for i in range(5):
                span.set_attribute(f"k{i}", f"token={SECRET_PASSWORD}")
            span.add_event("retry", {"url": f"https://u:{SECRET_PASSWORD}@db/x", "n": 1})
    plain, secret = spans.get_finished_spans()
    assert redacted_span(plain) is plain  # nothing to redact: not copied
    assert secret.dropped_attributes == 2 and len(secret.attributes) == 3
    assert all(v == "token=[REDACTED]" for v in secret.attributes.values())
    assert dict(secret.events[0].attributes) == {"url": "https://u:[REDACTED]@db/x", "n": 1}
    assert secret.context == secret.get_span_context() and secret.parent is None and secret.kind.name == "INTERNAL"
