"""victor_otel.readers: our pre-aggregated metrics merged into what the SDK's readers collect."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Metric, MetricsData, NumberDataPoint, ResourceMetrics, ScopeMetrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import generate_latest

from victor_otel import instruments as contract
from victor_otel.readers import (
    SCOPE,
    SerialRegistry,
    VictorInMemoryReader,
    VictorPrometheusReader,
    merge_metrics,
)

RESOURCE = Resource.create({"service.name": "readers-test"})
OTHER = InstrumentationScope("someone.else", "1.0")


def gauge(value: float, check: str = "db:ok") -> Metric:
    return contract.metric(contract.HEALTH_STATUS, [NumberDataPoint({"check": check}, 0, 1, value)])


def provider_with(reader: Any) -> MeterProvider:
    """A MeterProvider with one SDK instrument: the SDK hands a reader nothing (and our producers are not
    asked) until some instrument exists; in victor_otel the process gauges are always there."""
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    provider.get_meter("readers-test").create_counter("sdk.counter").add(1)
    return provider


def data(*scopes: ScopeMetrics) -> MetricsData:
    return MetricsData(resource_metrics=[ResourceMetrics(resource=RESOURCE, scope_metrics=list(scopes), schema_url="")])


def test_nothing_to_merge_leaves_the_collection_as_it_is() -> None:
    collected = data(ScopeMetrics(scope=OTHER, metrics=[gauge(1)], schema_url=""))
    assert merge_metrics(collected, [], RESOURCE) is collected
    assert merge_metrics(None, [], RESOURCE).resource_metrics == []


def test_an_empty_collection_gets_one_block_under_our_scope_and_resource() -> None:
    merged = merge_metrics(None, [gauge(1)], RESOURCE)
    (resource_metrics,) = merged.resource_metrics
    assert resource_metrics.resource is RESOURCE
    (scope_metrics,) = resource_metrics.scope_metrics
    assert scope_metrics.scope == SCOPE and [m.name for m in scope_metrics.metrics] == ["victor.health.status"]


def test_our_metrics_join_our_scopes_existing_block_instead_of_a_second_one() -> None:
    # the OTLP encoder keeps one block per scope: a second victor_otel block lost its metrics on the wire
    ours = ScopeMetrics(scope=SCOPE, metrics=[gauge(1, "process:cpu")], schema_url="")
    theirs = ScopeMetrics(scope=OTHER, metrics=[gauge(0.5)], schema_url="")
    merged = merge_metrics(data(theirs, ours), [gauge(0, "db:down")], RESOURCE)
    scopes = merged.resource_metrics[0].scope_metrics
    assert [s.scope.name for s in scopes] == ["someone.else", "victor_otel"]
    checks = [p.attributes["check"] for m in scopes[1].metrics for p in m.data.data_points]
    assert checks == ["process:cpu", "db:down"]
    assert scopes[0] is theirs


def test_without_our_scope_a_block_is_appended_and_other_resources_are_kept() -> None:
    second = ResourceMetrics(resource=Resource.create({"service.name": "other"}), scope_metrics=[], schema_url="")
    collected = data(ScopeMetrics(scope=OTHER, metrics=[gauge(1)], schema_url=""))
    collected = MetricsData(resource_metrics=[*collected.resource_metrics, second])
    merged = merge_metrics(collected, [gauge(0)], RESOURCE)
    assert [s.scope.name for s in merged.resource_metrics[0].scope_metrics] == ["someone.else", "victor_otel"]
    assert merged.resource_metrics[1] is second


def test_a_failing_producer_is_logged_and_the_others_still_reach_the_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> list[Metric]:
        raise RuntimeError("producer bug")

    reader = VictorInMemoryReader()
    reader._producers = (broken, lambda: [gauge(1)])
    reader._resource = RESOURCE
    provider = provider_with(reader)
    try:
        with caplog.at_level(logging.ERROR, logger="victor_otel"):
            collected = reader.get_metrics_data()
    finally:
        provider.shutdown()
    names = [m.name for rm in collected.resource_metrics for s in rm.scope_metrics for m in s.metrics]
    assert names == ["sdk.counter", "victor.health.status"]
    assert "a metric producer failed" in caplog.text


def test_concurrent_scrapes_each_render_every_family() -> None:
    # The OTel Prometheus collector appends what its reader collected to a queue, then drains the queue: a
    # scrape that drains between another's append and its drain takes the other's data, which then renders
    # nothing. The window is a few bytecodes wide (this test did not catch it without the lock on
    # opentelemetry-exporter-prometheus 0.66b2); a tiny switch interval makes threads interleave as often as
    # the interpreter allows, and every scrape must render every family exactly once.
    registry = SerialRegistry()
    reader = VictorPrometheusReader(scope_info_enabled=False, registry=registry)
    reader._producers = (lambda: [gauge(1)],)
    provider = provider_with(reader)
    rendered: list[bytes] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        def scrape() -> None:
            for _ in range(300):
                rendered.append(generate_latest(registry))

        threads = [threading.Thread(target=scrape) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        provider.shutdown()
    assert len(rendered) == 1200
    assert [text for text in rendered if text.count(b"victor_health_status{") != 1 or b"sdk_counter" not in text] == []


def test_a_lock_held_at_fork_is_renewed_in_the_child() -> None:
    registry = SerialRegistry()
    registry._serial.acquire()  # a scrape in another thread at the moment of fork
    registry.renew_lock()
    assert registry._serial.acquire(blocking=False)


def test_stopping_the_prometheus_reader_twice_is_harmless() -> None:
    reader = VictorPrometheusReader(scope_info_enabled=False, registry=SerialRegistry())
    provider: Any = MeterProvider(metric_readers=[reader])
    provider.shutdown()
    reader.shutdown()  # a foreign MeterProvider's shutdown after ours: a no-op, no error
    assert reader._stopped
