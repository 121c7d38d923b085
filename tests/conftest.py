"""Shared fixtures: a fresh victor_otel per test, spans in memory, /metrics parsed back."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import victor_otel
from victor_otel import startup
from victor_otel.decorators import current_coordinator
from victor_otel.registry import get_registry


def require_tool(name: str) -> str:
    """The path of a real tool; skip without it locally, fail in CI (CI installs every tool)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (.ci/install installs it)")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    startup.reset()
    yield
    startup.reset()
    # a test that entered track() without leaving it (on purpose) leaves its coordinator running
    current_coordinator.set(None)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(spans: InMemorySpanExporter) -> victor_otel.Telemetry:
    """victor_otel initialised with spans captured in memory (no console output)."""
    return victor_otel.init(service_name="test", traces_exporter="none", span_exporters=[spans])


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Render /metrics and parse it with prometheus_client's parser: {(sample, labels): value}."""
    body, _ = victor_otel.render()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def record(coordinator: str, method: str, duration: float, error: str | None = None) -> None:
    """Record one execution with an exact duration, as the decorators do."""
    series, window = get_registry().method_series(coordinator, method)
    series.record(duration, error, False, window)


class CountedWork:
    """A decorated ``work(i)`` on ``coordinator`` (negative ``i`` raises), for the multi-process and fork
    tests: ``work``, ``fail`` (one counted error) and ``executions`` (its executions_total in a scrape)."""

    def __init__(self, coordinator: str) -> None:
        self.coordinator = coordinator

        @victor_otel.instrument(coordinator=coordinator, method="work")
        def work(i: int) -> int:
            if i < 0:
                raise ValueError("negative")
            return i

        self.work = work

    def fail(self) -> None:
        with contextlib.suppress(ValueError):
            self.work(-1)

    def executions(self, samples: dict[Any, float] | None = None) -> float | None:
        return value(samples or scrape(), "victor_coordinator_executions_total", coordinator=self.coordinator,
                     method="work")


def in_child(body: Callable[[], dict[str, Any]], timeout: float = 30.0) -> dict[str, Any]:
    """Run ``body`` in a forked child; return what it returned (JSON), fail if it hangs or crashes."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(body()).encode())
            code = 0
        except BaseException as error:  # report, do not raise into pytest's stack
            os.write(write_end, json.dumps({"error": repr(error)}).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung (a lock held at fork time?)")
        time.sleep(0.02)
    with os.fdopen(read_end, "rb") as pipe:
        result: dict[str, Any] = json.loads(pipe.read() or b"{}")
    assert "error" not in result, result.get("error")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return result
