"""Shared fixtures: a fresh victor_otel per test, spans in memory, /metrics parsed back."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import victor_otel
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
    victor_otel.shutdown()
    get_registry().reset()
    yield
    victor_otel.shutdown()
    get_registry().reset()
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
