"""The metric contract as data: names, kinds, units, labels, buckets, and what a scrape shows of them.

``instruments.py`` is read by the code, the docs (the README's table), the CLI and the tests; these tests
hold the declaration together and hold a real scrape to it.
"""

from __future__ import annotations

import pytest

import victor_otel
from tests.conftest import record
from victor_otel import config, instruments
from victor_otel.instruments import CONTRACT, GENAI_CONTRACT, LATENCY_BUCKETS, Kind
from victor_otel.llm import get_recorder
from victor_otel.registry import get_registry
from victor_otel.testing import CapturedTelemetry


def test_every_family_has_help_and_type(capotel: CapturedTelemetry) -> None:
    record("Chat", "chat", 0.1, "ValueError")
    series, _ = get_registry().method_series("Chat", "chat")
    series.record(0.1, None, True)
    victor_otel.record_cache_hit("Chat")
    victor_otel.record_event("e")
    with victor_otel.llm_call(provider="openai", model="m", stream=True) as call:  # the LLM families
        call.first_token()
        call.record_usage(input_tokens=1, output_tokens=1)
        call.end(ValueError())
    get_recorder().budget_usd_per_hour = 1.0
    body = victor_otel.render()[0].decode()
    get_recorder().budget_usd_per_hour = None
    for spec in CONTRACT:
        family = spec.prometheus_name.removesuffix("_total")
        assert f"# HELP {spec.prometheus_name} " in body or f"# HELP {family} " in body, spec.prometheus_name
        kind = spec.kind.value
        assert f"# TYPE {family} {kind}" in body or f"# TYPE {spec.prometheus_name} {kind}" in body
    for line in body.splitlines():
        if line and not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0] in {s for c in CONTRACT for s in c.sample_names} | {
                "target_info"
            }, line


def test_every_name_is_declared_once() -> None:
    otel = [spec.otel_name for spec in (*CONTRACT, *GENAI_CONTRACT)]
    assert len(otel) == len(set(otel))
    samples = [sample for spec in CONTRACT for sample in spec.sample_names]
    assert len(samples) == len(set(samples))
    assert instruments.by_prometheus_name().keys() == set(samples)


@pytest.mark.parametrize("spec", CONTRACT, ids=[spec.otel_name for spec in CONTRACT])
def test_prometheus_names_follow_the_exporters_translation(spec: instruments.MetricSpec) -> None:
    name = spec.prometheus_name
    assert name.startswith(spec.otel_name.replace(".", "_"))
    assert name.endswith("_total") == (spec.kind is Kind.COUNTER)
    if spec.unit == "s":
        assert "_seconds" in name
    assert spec.unit != "1"  # it would add _ratio on the OTLP path only: pushed and scraped names would differ
    assert (spec.buckets is not None) == (spec.kind is Kind.HISTOGRAM)
    if spec.kind is Kind.HISTOGRAM:
        assert spec.sample_names == (f"{name}_bucket", f"{name}_sum", f"{name}_count")


def test_the_latency_thresholds_are_bucket_boundaries() -> None:
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))
    assert instruments.LATENCY.buckets == LATENCY_BUCKETS
    defaults = config.Settings()
    assert defaults.health_latency_p95_warn in LATENCY_BUCKETS
    assert defaults.health_latency_p95_fail in LATENCY_BUCKETS


def test_the_markdown_table_has_one_row_per_family_in_order() -> None:
    header, rule, *rows = instruments.markdown_table().splitlines()
    assert header.startswith("| Prometheus name |") and rule == "|---|---|---|---|---|"
    assert [row.split("`")[1] for row in rows] == [spec.prometheus_name for spec in CONTRACT]
    for row, spec in zip(rows, CONTRACT, strict=True):
        assert f"| {spec.kind.value} |" in row and row.endswith(f" {spec.description} |")
