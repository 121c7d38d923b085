"""The hot-path recorder: what each family counts, the cardinality cap, exemplars, reset.

``registry.py`` keeps pre-aggregated per-coordinator state; these tests read it back as a scrape (through
the ``capotel`` fixture) or as the OpenTelemetry points ``produce()`` hands the readers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import victor_otel
from tests.conftest import record, scrape, value
from victor_otel.instruments import LATENCY_BUCKETS, OVERFLOW_VALUE
from victor_otel.registry import get_registry
from victor_otel.testing import CapturedTelemetry

LAT = "victor_coordinator_latency_seconds"


def test_exact_counters_and_histogram_buckets(capotel: CapturedTelemetry) -> None:
    durations = [0.001, 0.005, 0.007, 0.3, 4.9, 5.0, 5.1, 16.0, 200.0]
    for d in durations:
        record("Chat", "chat", d)
    record("Chat", "chat", 0.02, "ValueError")
    samples = scrape()
    assert value(samples, "victor_coordinator_executions_total", coordinator="Chat", method="chat") == 10
    assert value(samples, "victor_coordinator_errors_total", coordinator="Chat", method="chat") == 1
    assert value(samples, "victor_coordinator_errors_by_type_total", coordinator="Chat", method="chat",
                 error_type="ValueError") == 1
    total = sum(durations) + 0.02
    assert value(samples, "victor_coordinator_duration_seconds_total", coordinator="Chat",
                 method="chat") == pytest.approx(total)
    assert value(samples, f"{LAT}_sum", coordinator="Chat", method="chat") == pytest.approx(total)
    assert value(samples, f"{LAT}_count", coordinator="Chat", method="chat") == 10
    all_durations = [*durations, 0.02]
    for bound in LATENCY_BUCKETS:
        expected = sum(1 for d in all_durations if d <= bound)  # le is inclusive
        got = value(samples, f"{LAT}_bucket", coordinator="Chat", method="chat", le=str(bound))
        assert got == expected, bound
    assert value(samples, f"{LAT}_bucket", coordinator="Chat", method="chat", le="+Inf") == 10


def test_errors_have_the_labels_of_executions_so_a_ratio_is_one_division(capotel: CapturedTelemetry) -> None:
    for error in (None, None, "ValueError", "KeyError"):
        record("Chat", "chat", 0.01, error)
    record("Chat", "plan", 0.01)
    samples = scrape()
    errors = {labels: v for (name, labels), v in samples.items() if name == "victor_coordinator_errors_total"}
    executions = {labels: v for (name, labels), v in samples.items()
                  if name == "victor_coordinator_executions_total"}
    assert errors.keys() == executions.keys()  # every series, 0 included: the seed's division matches 1:1
    assert {dict(labels)["method"]: errors[labels] / executions[labels] for labels in errors} == {
        "chat": 0.5, "plan": 0.0,
    }
    by_type = {dict(labels)["error_type"]: v for (name, labels), v in samples.items()
               if name == "victor_coordinator_errors_by_type_total"}
    assert by_type == {"ValueError": 1, "KeyError": 1}
    assert sum(by_type.values()) == value(samples, "victor_coordinator_errors_total", coordinator="Chat",
                                          method="chat")


def test_a_ratio_over_an_empty_window_has_no_sample(capotel: CapturedTelemetry) -> None:
    record("Calls", "m", 0.01)  # calls, no cache lookup
    victor_otel.record_cache_hit("CacheOnly")  # a cache lookup, no call
    samples = scrape()
    assert value(samples, "victor_coordinator_error_rate", coordinator="Calls") == 0.0
    assert value(samples, "victor_coordinator_cache_hit_rate", coordinator="Calls") is None  # not "0 % hits"
    assert value(samples, "victor_coordinator_cache_hit_rate", coordinator="CacheOnly") == 1.0
    assert value(samples, "victor_coordinator_error_rate", coordinator="CacheOnly") is None  # not "no errors"
    assert value(samples, "victor_coordinator_throughput", coordinator="CacheOnly") == 0.0  # 0 calls/s is true


@pytest.mark.capotel(window_seconds=2)
def test_window_rates_are_windowed_and_bounded(capotel: CapturedTelemetry) -> None:
    for _ in range(10):
        record("Chat", "chat", 0.01, "ValueError")
    samples = scrape()
    assert value(samples, "victor_coordinator_error_rate", coordinator="Chat") == 1.0
    assert 0 < (value(samples, "victor_coordinator_throughput", coordinator="Chat") or 0) <= 10
    # The window forgets: inject a later clock instead of sleeping.
    state = get_registry().coordinator("Chat")
    later = state.window.snapshot(time.monotonic() + 5)
    assert later.calls == 0 and later.error_rate is None


def test_cardinality_cap_folds_into_one_overflow_series(caplog: Any) -> None:
    victor_otel.init(traces_exporter="none", cardinality_limit=5)  # no spans: the blocks below stay open
    caplog.set_level(logging.WARNING, logger="victor_otel")
    for i in range(50):
        victor_otel.track("Chat", f"method_{i}").__enter__()
    for i in range(50):
        with victor_otel.track("Chat", f"method_{i}"):
            pass
    samples = scrape()
    exec_series = [k for k in samples if k[0] == "victor_coordinator_executions_total"]
    assert len(exec_series) == 6  # the cap plus one overflow series
    overflow = value(samples, "victor_coordinator_executions_total", coordinator="_overflow",
                     method="_overflow", otel_metric_overflow="true")
    assert overflow == 45
    assert sum(samples[k] for k in exec_series) == 50
    warnings = [r for r in caplog.records if "more than 5 label sets" in r.getMessage()]
    assert len(warnings) == 1
    # The coordinator's own window still sees every call (health stays right).
    assert get_registry().coordinator("Chat").stats().calls == 50


def test_traced_calls_become_exemplars_of_their_latency_bucket(capotel: CapturedTelemetry) -> None:
    @victor_otel.instrument("Chat", "chat")
    def chat(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    chat(False)
    with pytest.raises(ValueError):
        chat(True)
    metrics = [
        m for rm in capotel.telemetry.collect().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == "victor.coordinator.latency"
    ]
    (point,) = metrics[0].data.data_points
    by_span = {s.context.span_id: s for s in capotel.spans()}
    # Both calls fall in the first bucket: the latest (the failed one) is its exemplar.
    (exemplar,) = point.exemplars
    span = by_span[exemplar.span_id]
    assert exemplar.trace_id == span.context.trace_id
    assert span.attributes is not None and span.attributes["victor.outcome"] == "error"
    assert exemplar.value <= LATENCY_BUCKETS[0]


def test_no_exemplars_without_tracing() -> None:
    telemetry = victor_otel.init(traces_exporter="none")
    victor_otel.instrument("Chat", "chat")(lambda: None)()
    (point,) = next(
        m for rm in telemetry.collect().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == "victor.coordinator.latency"
    ).data.data_points
    assert list(point.exemplars) == []



def test_a_call_site_binds_its_series_once_and_rebinds_after_a_reset(capotel: CapturedTelemetry) -> None:
    @victor_otel.instrument("Chat", "chat")
    def chat() -> None:
        pass

    registry = get_registry()
    first, _ = registry.method_series("Chat", "chat")
    assert registry.method_series("Chat", "chat")[0] is first  # bound once: the hot path looks nothing up
    chat()
    chat()
    assert first.count == 2
    generation = registry.generation
    registry.reset()
    assert registry.generation == generation + 1
    assert registry.all_coordinators() == [] and registry.series == {} and registry.events == {}
    assert capotel.metric("victor_coordinator_executions_total", coordinator="Chat") == 0.0
    chat()  # the decorator's cached series belongs to the old generation: it re-binds
    assert registry.method_series("Chat", "chat")[0] is not first
    assert capotel.metric("victor_coordinator_executions_total", coordinator="Chat", method="chat") == 1


def test_configure_sets_the_cap_and_the_window_and_drops_what_was_recorded() -> None:
    registry = get_registry()
    limit, window_seconds = registry.limit, registry.window_seconds
    try:
        record("Chat", "chat", 0.1)
        registry.configure(2, 5.0)
        assert (registry.limit, registry.window_seconds) == (2, 5.0)
        assert registry.all_coordinators() == []
        assert registry.coordinator("Chat").window.seconds == 5.0
    finally:
        registry.configure(limit, window_seconds)


@pytest.mark.capotel(cardinality_limit=3)
def test_coordinators_past_the_cap_share_one_overflow_state(capotel: CapturedTelemetry) -> None:
    registry = get_registry()
    states = [registry.coordinator(f"C{i}") for i in range(10)]
    assert [s.name for s in states[:3]] == ["C0", "C1", "C2"]
    assert {id(s) for s in states[3:]} == {id(states[3])} and states[3].name == OVERFLOW_VALUE
    assert [s.name for s in registry.all_coordinators()] == ["C0", "C1", "C2", OVERFLOW_VALUE]
    assert registry.coordinator("C0") is states[0]  # admitted names keep their own state
    assert len(capotel.logs(level="WARNING", logger="victor_otel", message="more than 3 label sets")) == 1


@pytest.mark.capotel(cardinality_limit=2)
def test_events_past_the_cap_fold_into_one_overflow_series(capotel: CapturedTelemetry) -> None:
    for i in range(5):
        victor_otel.record_event(f"event_{i}", count=i + 1)
    victor_otel.record_event("event_0")  # an admitted name keeps counting in its own series
    assert capotel.metric("victor_analytics_events_total", event="event_0") == 2
    assert capotel.metric("victor_analytics_events_total", event="event_1") == 2
    assert capotel.metric("victor_analytics_events_total", event=OVERFLOW_VALUE) == 3 + 4 + 5
    assert capotel.metric("victor_analytics_events_total") == 1 + 2 + 3 + 4 + 5 + 1  # nothing is lost


@pytest.mark.capotel(cardinality_limit=2)
def test_error_types_past_the_cap_fold_and_the_error_count_stays_exact(capotel: CapturedTelemetry) -> None:
    for error in ("ValueError", "KeyError", "OSError", "TimeoutError", "ValueError"):
        record("Chat", "chat", 0.01, error)
    by_type = "victor_coordinator_errors_by_type_total"
    assert capotel.metric(by_type, error_type="ValueError") == 2
    assert capotel.metric(by_type, error_type="KeyError") == 1
    assert capotel.metric(by_type, error_type=OVERFLOW_VALUE) == 2
    assert capotel.metric(by_type) == capotel.metric("victor_coordinator_errors_total") == 5


def test_cache_lookups_count_per_coordinator_and_feed_the_window(capotel: CapturedTelemetry) -> None:
    for _ in range(3):
        victor_otel.record_cache_hit("Chat")
    victor_otel.record_cache_miss("Chat")
    assert capotel.metric("victor_coordinator_cache_hits_total", coordinator="Chat") == 3
    assert capotel.metric("victor_coordinator_cache_misses_total", coordinator="Chat") == 1
    assert capotel.metric("victor_coordinator_cache_hit_rate", coordinator="Chat") == 0.75


def test_record_success_counts_what_record_counts(capotel: CapturedTelemetry) -> None:
    registry = get_registry()
    slow, _ = registry.method_series("Slow", "m")  # the general path
    fast, _ = registry.method_series("Fast", "m")  # the success path every decorated call takes
    for d in (0.001, 0.02, 0.3, 7.0, 100.0):
        slow.record(d)
        fast.record_success(d)
    assert (fast.count, fast.sum, fast.buckets, fast.errors) == (slow.count, slow.sum, slow.buckets, slow.errors)
    assert registry.coordinator("Fast").stats() == registry.coordinator("Slow").stats()
    assert fast.exemplar_items() == []  # no trace: no exemplar


@pytest.mark.capotel(cardinality_limit=1)
def test_record_success_past_the_cap_feeds_the_callers_own_window(capotel: CapturedTelemetry) -> None:
    registry = get_registry()
    registry.method_series("Chat", "chat")
    overflow, own = registry.method_series("Chat", "other")  # past the series cap, an admitted coordinator
    assert own is registry.coordinator("Chat") and overflow.attributes["method"] == OVERFLOW_VALUE
    overflow.record_success(0.01, own)
    assert overflow.count == 1 and own.stats().calls == 1


def test_exemplars_keep_the_latest_call_per_bucket_with_its_wall_time(capotel: CapturedTelemetry) -> None:
    series, _ = get_registry().method_series("Chat", "chat")
    before = time.time_ns()
    series.record_success(0.001, None, trace_id=1, span_id=11)
    series.record_success(0.002, None, trace_id=2, span_id=12)  # same bucket: the latest wins
    series.record_success(0.3, None, trace_id=3, span_id=13)
    series.offer_exemplar(9.0, trace_id=4, span_id=14)  # the path of a failed or cancelled call
    after = time.time_ns()
    assert [(v, t, s) for v, t, s, _ in series.exemplar_items()] == [(0.002, 2, 12), (0.3, 3, 13), (9.0, 4, 14)]
    time.sleep(0.05)  # collected later: the wall time is still the call's, not the scrape's
    (point,) = next(
        m for rm in capotel.telemetry.collect().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == "victor.coordinator.latency"
    ).data.data_points
    assert [e.span_id for e in point.exemplars] == [12, 13, 14]
    slack = 5_000_000  # the monotonic -> wall conversion at collection: float rounding, two clock reads
    for exemplar in point.exemplars:
        assert before - slack <= exemplar.time_unix_nano <= after + slack


@pytest.mark.capotel(cardinality_limit=3)
def test_calls_past_the_cap_take_no_registry_lock(capotel: CapturedTelemetry) -> None:
    import threading

    collector = victor_otel.get_coordinator_metrics_collector()
    for i in range(3):
        collector.track_execution(f"Admitted{i}", 1.0)
    collector.track_execution("Past", 1.0)  # the first call past a cap warns, once, under the lock
    for i in range(4):
        collector.track_execution("Admitted1", 1.0, success=False, error_type=f"Warm{i}")
    for i in range(4):
        victor_otel.record_event(f"event_{i}")  # three admitted, the fourth opens the overflow cell
    registry = get_registry()
    errors: list[BaseException] = []

    def calls(thread: int) -> None:
        try:
            for i in range(200):
                collector.track_execution(f"Past{thread}_{i}", 1.0)
                collector.track_execution("Admitted0", 1.0, method=f"new_{thread}_{i}")  # past the series cap
                collector.track_execution("Admitted1", 1.0, success=False, error_type=f"E{thread}_{i}")
                victor_otel.record_event(f"event_{thread}_{i}")  # past the events' cap
                victor_otel.record_event("event_0")  # an admitted event
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with registry._lock:  # held for the whole run: a call that wanted it would never finish
        threads = [threading.Thread(target=calls, args=(t,), daemon=True) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        stuck = [t for t in threads if t.is_alive()]
    assert not stuck and not errors
    executions = "victor_coordinator_executions_total"
    # one overflow series for new coordinators and new methods of admitted ones alike
    assert capotel.metric(executions, coordinator=OVERFLOW_VALUE) == 1 + 4 * 400
    assert capotel.metric(executions) == 3 + 1 + 4 + 4 * 600  # every call counted
    by_type = "victor_coordinator_errors_by_type_total"
    assert capotel.metric(by_type, error_type=OVERFLOW_VALUE) == 1 + 4 * 200
    events = "victor_analytics_events_total"
    assert capotel.metric(events, event=OVERFLOW_VALUE) == 1 + 4 * 200
    assert capotel.metric(events, event="event_0") == 1 + 4 * 200
    assert len(registry.coordinators) == 3 and len(registry.series) == 3
    assert registry.coordinator("Admitted0").stats().calls == 1 + 4 * 200  # its own window saw its calls
    warned = [w.record.getMessage() for w in capotel.logs(level="WARNING", message="more than 3 label sets")]
    for family in ("coordinator;", "executions_total;", "errors_by_type_total;"):  # each once, before the run
        assert sum(f"for {family}" in m or f"_{family}" in m for m in warned) == 1, (family, warned)
