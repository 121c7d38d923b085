"""init() / shutdown(): idempotence, foreign providers, flushing, the Resource, no work at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import victor_otel
from victor_otel import Lifecycle, VictorOtelInitError


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter (global providers can be set once per process)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )


def test_init_is_idempotent_with_the_same_settings() -> None:
    first = victor_otel.init(service_name="svc", traces_exporter="none")
    assert victor_otel.init(service_name="svc", traces_exporter="none") is first
    assert victor_otel.current() is first
    assert first.lifecycle is Lifecycle.READY


def test_init_with_other_settings_names_the_difference() -> None:
    victor_otel.init(service_name="svc", traces_exporter="none")
    with pytest.raises(VictorOtelInitError, match=r"service_name: 'svc' != 'other'.*shutdown\(\)"):
        victor_otel.init(service_name="other", traces_exporter="none")


def test_init_after_shutdown_starts_afresh() -> None:
    first = victor_otel.init(service_name="svc", traces_exporter="none")
    assert victor_otel.shutdown() is True
    assert first.lifecycle is Lifecycle.STOPPED
    assert victor_otel.current() is None
    second = victor_otel.init(service_name="other", traces_exporter="none")
    assert second is not first


def test_resource_attributes(monkeypatch: Any) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.version=2.0.1,team=agents")
    telemetry = victor_otel.init(service_name="victor", environment="staging", traces_exporter="none")
    attrs = telemetry.resource.attributes
    assert attrs["service.name"] == "victor"
    assert attrs["service.version"] == "2.0.1"
    assert attrs["deployment.environment.name"] == "staging"
    assert attrs["team"] == "agents"
    assert len(str(attrs["service.instance.id"])) == 36
    body = victor_otel.render()[0].decode()
    assert 'service_name="victor"' in body and 'deployment_environment_name="staging"' in body


def test_shutdown_flushes_spans_to_the_traces_file(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    victor_otel.init(traces_file=str(path))

    @victor_otel.instrument("Chat", "chat")
    def chat() -> None:
        pass

    for _ in range(5):
        chat()
    assert victor_otel.shutdown(timeout=5) is True
    lines = path.read_text().splitlines()
    assert len(lines) == 5
    span = json.loads(lines[0])
    assert span["name"] == "Chat.chat"
    assert span["attributes"]["victor.coordinator"] == "Chat"


def test_spans_are_flushed_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    result = run_python(
        f"""
        import victor_otel
        victor_otel.init(traces_file={str(path)!r})
        @victor_otel.coordinator("Chat")
        def chat():
            return 1
        chat(); chat()
        """
    )
    assert result.returncode == 0, result.stderr
    assert len(path.read_text().splitlines()) == 2


def test_shutdown_is_bounded_when_the_collector_is_unreachable() -> None:
    # Port 9 on loopback: nothing listens there; the exporter retries until its own deadline.
    victor_otel.init(traces_exporter="otlp", otlp_endpoint="http://127.0.0.1:9", shutdown_timeout=1)

    @victor_otel.instrument("Chat", "chat")
    def chat() -> int:
        return 1

    for _ in range(10):
        assert chat() == 1  # never raises into the application
    started = time.monotonic()
    victor_otel.shutdown()
    assert time.monotonic() - started < 10  # bounded by the timeout, with generous slack for CI


def test_importing_does_no_work() -> None:
    result = run_python(
        """
        import os, sys, threading
        before = threading.active_count()
        fds = len(os.listdir("/proc/self/fd"))
        import victor_otel
        assert threading.active_count() == before, threading.enumerate()
        assert len(os.listdir("/proc/self/fd")) == fds
        from opentelemetry import trace
        assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
        print("ok")
        """
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_foreign_sdk_tracer_provider_is_reused_not_replaced() -> None:
    result = run_python(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        mine = TracerProvider(); spans = InMemorySpanExporter()
        mine.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(mine)
        import victor_otel
        t = victor_otel.init()
        assert t.tracer_provider is mine and trace.get_tracer_provider() is mine
        victor_otel.instrument("Chat", "chat")(lambda: 1)()
        print([s.name for s in spans.get_finished_spans()])
        """
    )
    assert result.stdout.strip() == "['Chat.chat']", result.stderr


def test_foreign_sdk_meter_provider_gets_our_readers() -> None:
    result = run_python(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        mine = MeterProvider()
        metrics.set_meter_provider(mine)
        counter = mine.get_meter("app").create_counter("app.requests")
        import victor_otel
        t = victor_otel.init(traces_exporter="none")
        counter.add(3)
        assert t.meter_provider is mine
        victor_otel.instrument("Chat", "chat")(lambda: 1)()
        body = victor_otel.render()[0].decode()
        assert "app_requests_total 3.0" in body, body
        assert 'victor_coordinator_executions_total{coordinator="Chat",method="chat"} 1.0' in body
        victor_otel.shutdown()
        print("ok")
        """
    )
    assert result.stdout.strip() == "ok", result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_foreign_non_sdk_meter_provider_is_refused() -> None:
    result = run_python(
        """
        from opentelemetry import metrics
        from opentelemetry.metrics import NoOpMeterProvider
        metrics.set_meter_provider(NoOpMeterProvider())
        import victor_otel
        try:
            victor_otel.init(traces_exporter="none")
        except victor_otel.VictorOtelInitError as e:
            print("refused:", e)
        """
    )
    assert result.stdout.startswith("refused: the application installed a MeterProvider"), result.stderr


def test_otlp_without_the_extra_is_a_clear_error(monkeypatch: Any) -> None:
    import builtins

    real_import = builtins.__import__

    def no_otlp(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry.exporter.otlp"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otlp)
    for name in [name for name in sys.modules if name.startswith("opentelemetry.exporter.otlp")]:
        monkeypatch.delitem(sys.modules, name)  # as if never installed: nothing imported it either
    for export_process in (True, False):  # the export process checks before it starts: the same error
        with pytest.raises(victor_otel.VictorOtelConfigError, match=r"victor-otel\[otlp\]"):
            victor_otel.init(traces_exporter="otlp", export_process=export_process)


def test_one_scope_block_carries_the_process_gauges_and_the_coordinator_families_over_otlp() -> None:
    """The OTLP encoder keeps one block per scope: a second victor_otel block lost the process gauges."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    telemetry = victor_otel.init(service_name="scope", traces_exporter="none")
    with victor_otel.track("ScopeCoordinator", "run"):
        pass
    data = telemetry.collect()
    scopes = [s for r in data.resource_metrics for s in r.scope_metrics if s.scope.name == "victor_otel"]
    assert len(scopes) == 1
    request = encode_metrics(data)
    sent = {m.name for r in request.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert {"victor.coordinator.memory", "victor.coordinator.cpu", "victor.coordinator.uptime",
            "victor.coordinator.executions"} <= sent, sorted(sent)
