"""The seed's quick-start lines, unchanged, over a real uvicorn socket."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import victor_otel
from tests.conftest import scrape, value
from tests.servers import serve
from victor_otel import get_coordinator_metrics_collector, get_prometheus_exporter


def test_seed_quick_start_over_a_real_socket() -> None:
    # The seed never called init(): the exporter initialises with defaults on first use.
    victor_otel.init(traces_exporter="none")
    app = FastAPI()
    exporter = get_prometheus_exporter()
    app.add_route("/metrics", exporter.get_endpoint())  # exactly the seed's line

    collector = get_coordinator_metrics_collector()
    with collector.track_coordinator("ChatCoordinator"):
        pass
    collector.track_execution("ChatCoordinator", duration_ms=2500.0, success=False)
    collector.track_execution("ToolCoordinator", duration_ms=10.0, success=False, error_type="Timeout")
    collector.record_cache_hit("ChatCoordinator")
    collector.record_cache_miss("ChatCoordinator")
    collector.record_analytics_event("tool_called", count=2)

    with serve(app) as url:
        response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    text = response.text
    assert "# TYPE victor_coordinator_executions_total counter" in text
    assert 'victor_coordinator_executions_total{coordinator="ChatCoordinator",method="execute"} 2.0' in text
    assert (
        'victor_coordinator_errors_by_type_total{coordinator="ChatCoordinator",error_type="ExecutionFailed",'
        'method="execute"} 1.0' in text
    )
    assert 'error_type="Timeout"' in text
    assert 'victor_coordinator_cache_hits_total{coordinator="ChatCoordinator"} 1.0' in text
    assert 'victor_analytics_events_total{event="tool_called"} 2.0' in text
    assert 'victor_coordinator_latency_seconds_bucket{coordinator="ChatCoordinator",le="2.5",method="execute"}' in text


def test_seed_exporter_without_init_initialises_with_defaults(monkeypatch: Any) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert victor_otel.current() is None
    assert "victor_coordinator_uptime_seconds" in get_prometheus_exporter().export_metrics()
    assert victor_otel.current() is not None


def test_seed_standalone_server() -> None:
    victor_otel.init(traces_exporter="none")
    exporter = get_prometheus_exporter()
    server = exporter.start_server(host="127.0.0.1", port=0)
    try:
        get_coordinator_metrics_collector().track_execution("Chat", 5.0)
        text = httpx.get(server.url, timeout=5).text
        assert 'victor_coordinator_executions_total{coordinator="Chat",method="execute"} 1.0' in text
    finally:
        exporter.stop_server()


def test_track_coordinator_async_and_stats() -> None:
    victor_otel.init(traces_exporter="none")
    collector = get_coordinator_metrics_collector()

    async def main() -> None:
        async with collector.track_coordinator("ChatCoordinator", "chat"):
            await asyncio.sleep(0)

    asyncio.run(main())
    collector.track_execution("ChatCoordinator", duration_ms=100, success=False)
    collector.record_cache_hit("ChatCoordinator")
    stats = collector.get_coordinator_stats("ChatCoordinator")
    assert stats["executions"] == 2
    assert stats["errors"] == 1
    assert stats["error_rate"] == 0.5
    assert stats["cache_hit_rate"] == 1.0
    assert stats["p99_seconds"] is not None
    assert set(collector.get_coordinator_stats()) == {"ChatCoordinator"}
    assert value(scrape(), "victor_coordinator_executions_total", coordinator="ChatCoordinator", method="chat") == 1


@pytest.mark.parametrize("bad", [-1, "fast", float("nan"), True])
def test_track_execution_rejects_bad_durations(bad: Any) -> None:
    with pytest.raises(victor_otel.VictorOtelConfigError, match="duration_ms"):
        get_coordinator_metrics_collector().track_execution("Chat", bad)


def test_a_named_error_type_reaches_the_metric_and_the_execution_log() -> None:
    import io
    import json

    victor_otel.init(traces_exporter="none")
    stream = io.StringIO()
    victor_otel.setup_coordinator_logging(level="INFO", format_type="json", stream=stream)
    try:
        get_coordinator_metrics_collector().track_execution("Tool", 12.0, success=False, error_type="Timeout")
    finally:
        victor_otel.teardown_coordinator_logging()
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["level"] == "ERROR" and record["error_type"] == "Timeout"
    assert value(scrape(), "victor_coordinator_errors_by_type_total", coordinator="Tool", method="execute",
                 error_type="Timeout") == 1


def test_the_seed_exporter_alone_exports_health_statuses_from_its_first_scrape(monkeypatch: Any) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    get_coordinator_metrics_collector().track_execution("ChatCoordinator", 5.0)
    text = get_prometheus_exporter().export_metrics()  # no init(), no probe before
    assert 'victor_health_status{check="ChatCoordinator:error_rate",coordinator="ChatCoordinator"} 1.0' in text


def test_stats_have_no_ratio_over_an_empty_window(telemetry: Any) -> None:
    collector = get_coordinator_metrics_collector()
    collector.track_execution("Calls", duration_ms=5.0, success=False)
    collector.record_cache_miss("CacheOnly")
    calls, cache_only = collector.get_coordinator_stats("Calls"), collector.get_coordinator_stats("CacheOnly")
    assert calls["error_rate"] == 1.0 and calls["cache_hit_rate"] is None  # no lookup: unknown, not 0 %
    assert cache_only["cache_hit_rate"] == 0.0 and cache_only["error_rate"] is None  # no call: unknown
