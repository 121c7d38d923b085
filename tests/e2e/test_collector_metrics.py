"""Pushed metrics are scraped metrics: one demo process, two paths, two Prometheus 3 instances.

The demo (``victor_otel.cli demo``, synthetic load with errors) runs with ``OTEL_METRICS_EXPORTER=prometheus,otlp``:
the same MeterProvider is rendered on ``/metrics`` (scraped every second by Prometheus "scraped", job
victor-coordinators) and pushed every second over OTLP to our collector, which sends it to Prometheus
"pushed"'s OTLP receiver. Both load the shipped rules. At one evaluation time, every alert expression and
every dashboard query must give both the same series (labels but ``job`` / ``instance``, which name the
path: the scrape job and target there, ``service.name`` and ``service.instance.id`` here) and the same values
within what the one-second offset between a scrape and a push can move them.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.otel_stack import (
    Path3,
    Program,
    Prometheus,
    collector_path,
    http_get,
    poll,
    prometheus,
    rules_every_second,
    running,
)
from tests.e2e.test_bundle_support import (
    alert_rules,
    load_dashboard,
    load_rules,
    prometheus_targets,
    recording_rules,
)
from tests.e2e.test_prometheus_live import DASHBOARD_VARIABLES
from tests.faults import free_port
from victor_otel.instruments import CONTRACT

pytestmark = pytest.mark.e2e

JOB = "victor-coordinators"
#: Labels that name the path, not the data.
PATH_LABELS = {"job", "instance"}
#: Alerts about the scrape itself: ``up`` exists on the scraped path only, so on a pushed-only
#: deployment NotScraping holds and ServiceDown never can (docs/deployment.md says so).
SCRAPE_ONLY = {"NotScraping": "absent(up{...}): no scrape job on the pushed path",
               "ServiceDown": "up == 0: no scrape job on the pushed path"}
#: The same for the dashboard: a query on ``up`` (Service status) has no data on the pushed path.
UP = re.compile(r"(?<![\w:])up\b")
#: Families whose value is measured at collection time, not counted: the scrape and the push collect at
#: different moments, so their values differ by nature (CPU since the previous collection, whichever
#: reader made it); only their series must be the same.
MEASURED_AT_COLLECTION = ("victor_coordinator_cpu_percent", "victor_coordinator_uptime_seconds",
                          "victor_coordinator_memory_bytes",
                          # calls / seconds observed, while the window is younger than its 60 s: a push
                          # and a scrape up to a second apart over ~25 s of a random load differed by 17 %
                          # once (scraped 4.33, pushed 3.61); its series are still compared
                          "victor_coordinator_throughput")
#: Seconds of samples both Prometheus instances hold before the comparison (one sample a second).
HISTORY = 20
#: A scrape and a push are up to one interval (1 s) apart; over windows of ~1 minute of a ~20 calls/s
#: workload that moves a rate or a ratio by a few percent.
RELATIVE_TOLERANCE = 0.15
ABSOLUTE_TOLERANCE = 0.05


@dataclass
class TwoPaths:
    scraped: Prometheus
    pushed: Prometheus
    path: Path3
    demo: Program


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoPaths]:
    workdir = tmp_path_factory.mktemp("pushed-vs-scraped")
    rules = rules_every_second(workdir, load_rules())
    path = collector_path(workdir, rule_files=[rules], scrape_collector=False)  # only the app's data in "pushed"
    port = free_port()
    scraped = prometheus(workdir, "scraped", rule_files=[rules], scrape_configs=[
        {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}])
    demo = Program(
        "demo",
        [sys.executable, "-m", "victor_otel.cli", "demo", "--port", str(port), "--rate", "20", "--error-rate", "0.2",
         "--traces-file", "-"],
        workdir / "demo.log",
        env={"OTEL_METRICS_EXPORTER": "prometheus,otlp", "OTEL_TRACES_EXPORTER": "none",
             "OTEL_EXPORTER_OTLP_ENDPOINT": path.collector.otlp_http, "OTEL_METRIC_EXPORT_INTERVAL": "1000",
             "OTEL_SERVICE_NAME": "victor-demo", "NO_COLOR": "1",
             # victor_otel_exported_total{signal="traces"} steps once a span batch is exported: every 5 s by
             # default, a few hundred spans at once, so a scrape and a push a second apart could straddle a
             # step larger than the tolerance (one CI run: scraped 1530, pushed 1148). Batches every 200 ms
             # make the steps ~15 spans, like the other counters' per-second growth.
             "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200"},
        ready_url=f"http://127.0.0.1:{port}/metrics",
    )
    with running(*path.programs(), scraped.program, demo):
        two = TwoPaths(scraped, path.prometheus, path, demo)
        for name, store in (("scraped", scraped), ("pushed", path.prometheus)):
            # rate() needs two samples, the cache families need both hits and misses: wait for all.
            # HISTORY seconds of samples on both, so that a rate's extrapolation over a series younger than its
            # window hardly depends on where the first scrape or push fell.
            poll(lambda store=store: store.query(
                f"count_over_time(victor_coordinator_cache_hits_total[5m]) >= {HISTORY}"), HISTORY + 60,
                f"{name}: {HISTORY} s of samples")
        yield two


def normalised(rows: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], float]:
    """Series by their labels but the path's; ``le`` as a number: a Prometheus 3 scrape writes the bucket
    bound 5 as ``le="5.0"``, its OTLP receiver as ``le="5"`` (so the rules match ``le=~"5|5\\.0"``)."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for row in rows:
        key = tuple(sorted((k, repr(float(v)) if k == "le" else v) for k, v in row["metric"].items()
                           if k not in PATH_LABELS))
        assert key not in found, f"two series differ only by job/instance: {key}"
        found[key] = float(row["value"][1])
    return found


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)


#: The dashboard's variables, with a $__range inside the HISTORY both instances hold: over a longer range
#: increase() extrapolates to where each path's first sample happens to be, and the scrape and the push
#: start at different moments (a 20 % difference on a busy machine), which says nothing about the names.
COMPARED_VARIABLES = {**DASHBOARD_VARIABLES, "$__range": "10s"}


def substitute(expr: str) -> str:
    for variable, value in COMPARED_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def same_answer(two: TwoPaths, what: str, expr: str, at: float) -> tuple[int, list[str]]:
    """Compare one expression on both paths; returns (series count, problems)."""
    scraped = normalised(two.scraped.query(expr, at))
    pushed = normalised(two.pushed.query(expr, at))
    if scraped.keys() != pushed.keys():
        return len(scraped), [f"{what}: series differ: scraped only {sorted(scraped.keys() - pushed.keys())}, "
                              f"pushed only {sorted(pushed.keys() - scraped.keys())}"]
    if any(name in expr for name in MEASURED_AT_COLLECTION):
        return len(scraped), []
    wrong = [f"{what}: {dict(key)} scraped {scraped[key]} pushed {pushed[key]}"
             for key in scraped
             if dict(key).get("__name__") not in MEASURED_AT_COLLECTION and not close(scraped[key], pushed[key])]
    return len(scraped), wrong


def test_pushed_metrics_land_under_exactly_the_scraped_names(paths: TwoPaths) -> None:
    def names(store: Prometheus) -> set[str]:
        return {row["metric"]["__name__"] for row in store.query('{__name__=~"victor_.+"}')}

    scraped, pushed = names(paths.scraped), names(paths.pushed)
    contract = {name for spec in CONTRACT for name in spec.sample_names}
    assert {"victor_coordinator_executions_total", "victor_coordinator_latency_seconds_bucket",
            "victor_coordinator_duration_seconds_total"} <= scraped
    assert scraped <= contract, sorted(scraped - contract)
    # The bucket bounds are the same numbers, written differently (see normalised()).
    assert paths.scraped.query('victor_coordinator_latency_seconds_bucket{le="5.0"}')
    assert paths.pushed.query('victor_coordinator_latency_seconds_bucket{le="5"}')
    # The process gauges included: they once came under a second ScopeMetrics of the same scope, which the
    # OTLP encoder dropped (one block per scope); readers.merge_metrics now merges them into one.
    assert set(MEASURED_AT_COLLECTION) <= pushed
    assert pushed == scraped, f"scraped only: {sorted(scraped - pushed)}, pushed only: {sorted(pushed - scraped)}"


def test_every_series_has_the_same_labels_on_both_paths(paths: TwoPaths) -> None:
    at = time.time() - 2
    count, problems = same_answer(paths, "every victor_ series", '{__name__=~"victor_.+"}', at)
    assert count > 20
    assert problems == [], "\n".join(problems)


def test_every_alert_expression_gives_the_same_answer_pushed_and_scraped(paths: TwoPaths) -> None:
    at = time.time() - 2
    problems: list[str] = []
    non_empty = 0
    for rule in alert_rules():
        if rule["alert"] in SCRAPE_ONLY:
            continue
        count, wrong = same_answer(paths, rule["alert"], rule["expr"], at)
        problems += wrong
        non_empty += count > 0
    for rule in recording_rules():
        count, wrong = same_answer(paths, rule["record"], rule["expr"], at)
        problems += wrong
    assert problems == [], "\n".join(problems)
    assert non_empty >= 3, "a 20 % error rate makes several alerts hold on both paths"


def test_every_dashboard_query_gives_the_same_answer_pushed_and_scraped(paths: TwoPaths) -> None:
    at = time.time() - 2
    dashboard = load_dashboard()
    problems: list[str] = []
    answered = 0
    for title, ref, raw in prometheus_targets(dashboard):
        if UP.search(raw):
            assert paths.scraped.query(substitute(raw), at) and not paths.pushed.query(substitute(raw), at)
            continue
        count, wrong = same_answer(paths, f"{title} {ref}", substitute(raw), at)
        problems += wrong
        answered += count > 0
    assert problems == [], "\n".join(problems)
    assert answered >= len(list(prometheus_targets(dashboard))) // 2


def test_the_scrape_only_alerts_tell_the_paths_apart(paths: TwoPaths) -> None:
    not_scraping = next(rule["expr"] for rule in alert_rules() if rule["alert"] == "NotScraping")
    assert paths.scraped.query(not_scraping) == []
    assert paths.pushed.query(not_scraping), "NotScraping holds on a pushed-only Prometheus"
    assert http_get(f"{paths.pushed.url}/-/ready")
