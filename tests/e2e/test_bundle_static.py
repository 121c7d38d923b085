"""The bundle's files checked by the real tools and against the metric contract.

promtool (config, rules, rule unit tests), amtool, docker-compose, then what no tool checks: metric
names against ``victor_otel.instruments``, runbook anchors, thresholds, the dashboard's structure and
the collector's pipelines.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.e2e.test_bundle_support import (
    ALERTMANAGER_CONFIG,
    COLLECTOR_CONFIG,
    COMPOSE_FILE,
    PROMETHEUS_CONFIG,
    RULE_TESTS,
    RULES_FILE,
    RUNBOOK,
    alert_rules,
    load_dashboard,
    metric_names,
    prometheus_targets,
    recording_rules,
    run,
    runbook_anchors,
    tool,
)
from victor_otel.instruments import LATENCY_BUCKETS, by_prometheus_name

pytestmark = pytest.mark.e2e

#: The seed's 18 alerts and their severities (SEED_FACTS.md): names users route and silence on.
SEED_ALERTS = {
    "HighErrorRate": "warning", "CriticalErrorRate": "critical", "HighLatency": "warning",
    "CriticalLatency": "critical", "LowCacheHitRate": "warning", "CacheMissBurst": "warning",
    "CoordinatorUnavailable": "critical", "NotScraping": "critical", "HighMemory": "warning",
    "CriticalMemory": "critical", "LowThroughput": "info", "ThroughputDrop": "warning",
    "Degraded": "warning", "Unhealthy": "critical", "HighCPUUsage": "warning", "ServiceDown": "critical",
    "AnalyticsEventSpike": "info", "NoAnalyticsEvents": "warning",
}

#: Thresholds the alerts share with the health checks (warn / fail levels) and the runbook table.
THRESHOLDS = {
    "HighErrorRate": 0.05, "CriticalErrorRate": 0.15,
    "HighLatency": 5, "CriticalLatency": 15,
    "HighMemory": 2 * 1024**3, "CriticalMemory": 4 * 1024**3,
    "HighCPUUsage": 80,
}

#: Names outside the contract that the bundle may use.
EXTRA_NAMES = {"victor_health_status", "up", "target_info"}

def runbook_promql() -> list[str]:
    return re.findall(r"```promql\n(.*?)```", RUNBOOK.read_text(), flags=re.S)


# --- the real tools -----------------------------------------------------------------------------

def test_promtool_accepts_the_bundled_prometheus_config() -> None:
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    result = run(tool("promtool"), "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "alerts/tests/*.yml is empty"
    result = run(tool("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_pages_critical_alerts_with_a_key_from_outside_the_file() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    routes = config["route"]["routes"]
    pager = next(route for route in routes if 'severity="critical"' in route.get("matchers", []))
    receiver = next(r for r in config["receivers"] if r["name"] == pager["receiver"])
    pagerduty = receiver["pagerduty_configs"][0]
    assert "routing_key_file" in pagerduty and "routing_key" not in pagerduty
    assert config["route"]["receiver"] == "default"
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert "PAGERDUTY_ROUTING_KEY" in compose["services"]["alertmanager"]["environment"]


def test_docker_compose_accepts_the_stack() -> None:
    result = run(tool("docker-compose"), "-f", str(COMPOSE_FILE), "config", "-q")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_images_are_pinned_and_prometheus_receives_otlp() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert set(services) >= {"app", "otel-collector", "prometheus", "alertmanager", "grafana", "loki", "tempo"}
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: {image} is not pinned to a release"
    assert services["prometheus"]["image"].startswith("prom/prometheus:v3.")
    assert "--web.enable-otlp-receiver" in services["prometheus"]["command"]


# --- the collector ------------------------------------------------------------------------------

def with_defaults(text: str) -> str:
    """The collector config as the compose stack runs it: every ``${env:NAME:-default}`` at its default."""
    return re.sub(r"\$\{env:[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


def test_collector_pipelines() -> None:
    config = yaml.safe_load(with_defaults(COLLECTOR_CONFIG.read_text()))
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        assert pipeline["processors"][0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert pipeline["receivers"] == ["otlp"]
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    exporters = config["exporters"]
    assert pipelines["traces"]["exporters"] == ["otlp_grpc/tempo"]
    assert pipelines["logs"]["exporters"] == ["otlp_http/loki"]
    assert exporters["otlp_http/loki"]["endpoint"].endswith("/otlp")
    assert exporters["otlp_http/prometheus"]["endpoint"].endswith("/api/v1/otlp")
    for name, exporter in exporters.items():
        assert name.split("/")[0] in {"otlp_grpc", "otlp_http"}, f"{name}: deprecated or removed component"
        assert exporter["sending_queue"]["batch"], f"{name}: no batching"
    assert "batch" not in config.get("processors", {}), "the batch processor is deprecated"
    assert "health_check" in config["service"]["extensions"]
    assert config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]["port"] == 8888
    scrape_jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    assert {"victor-coordinators", "otel-collector"} <= scrape_jobs


# --- alerts -------------------------------------------------------------------------------------

def test_seed_alerts_keep_their_names_and_severities() -> None:
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
    assert {name: severities.get(name) for name in SEED_ALERTS} == SEED_ALERTS


def test_no_two_alerts_share_an_expression() -> None:
    exprs = [" ".join(rule["expr"].split()) for rule in alert_rules()]
    assert len(exprs) == len(set(exprs))


def test_every_alert_is_documented_and_labelled() -> None:
    anchors = runbook_anchors()
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        url = annotations["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path.endswith("alerts/runbook.md"), url
        assert anchor in anchors, f"{rule['alert']}: {url} points at no heading of alerts/runbook.md"
        assert anchor == rule["alert"].lower(), f"{rule['alert']}: its section is #{rule['alert'].lower()}"


def test_runbook_internal_links_resolve() -> None:
    anchors = runbook_anchors()
    links = re.findall(r"\]\(#([^)]+)\)", RUNBOOK.read_text())
    assert links
    assert sorted(set(links) - anchors) == []


def test_coordinator_alerts_exclude_test_coordinators_and_aggregate_by_coordinator() -> None:
    for rule in alert_rules() + recording_rules():
        expr = rule["expr"]
        for selector in re.findall(r"victor_coordinator_\w+\{[^}]*\}", expr):
            if "coordinator" in selector.split("{")[1] or "by (coordinator" in expr:
                assert 'coordinator!~".*Test.*"' in selector, f"{rule.get('alert') or rule['record']}: {selector}"
        if "/" in expr and "victor_coordinator" in expr:
            assert re.search(r"sum by \(coordinator", expr), rule.get("alert") or rule["record"]


def _threshold(expr: str) -> float:
    match = re.search(r"[<>]=?\s*([0-9.*\s]+)\s*$", expr.strip())
    assert match, expr
    value = 1.0
    for factor in match.group(1).split("*"):
        value *= float(factor)
    return value


def test_thresholds_match_the_health_checks() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {name: _threshold(rules[name]["expr"]) for name in THRESHOLDS} == THRESHOLDS
    # The latency thresholds are bucket boundaries, so the histogram answers them exactly.
    assert {5.0, 15.0} <= set(LATENCY_BUCKETS)
    assert "histogram_quantile(0.95" in rules["HighLatency"]["expr"]
    table = RUNBOOK.read_text()
    for text in ("> 1 %", "> 5 %", "> 15 %", "> 5 s", "> 15 s", "> 2 GiB", "> 4 GiB", "> 80 %"):
        assert text in table, f"runbook thresholds table lacks {text!r}"


# --- names against the metric contract ----------------------------------------------------------

def allowed_names() -> set[str]:
    return set(by_prometheus_name()) | EXTRA_NAMES | {rule["record"] for rule in recording_rules()}


@pytest.mark.parametrize("source", ["alerts", "dashboard", "runbook"])
def test_every_metric_name_is_in_the_contract(source: str) -> None:
    exprs: list[str]
    if source == "alerts":
        exprs = [rule["expr"] for rule in alert_rules() + recording_rules()]
    elif source == "dashboard":
        exprs = [expr for _, _, expr in prometheus_targets(load_dashboard())]
        exprs += [var["query"]["query"] for var in load_dashboard()["templating"]["list"] if var["type"] == "query"]
    else:
        exprs = runbook_promql()
    assert exprs
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used, source
    assert sorted(used - allowed_names()) == []


# --- the dashboard ------------------------------------------------------------------------------

SEED_PANELS = [
    "Throughput by coordinator", "Error rate by coordinator", "Latency (p50 / p95 / p99, mean)", "Memory",
    "CPU", "Cache hit rate", "Cache hits and misses per second", "Errors per second", "Service status",
    "Uptime", "Analytics events distribution",
]


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "victor-coordinators"
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert [title for title in SEED_PANELS if title not in titles] == []
    assert "Health checks" in titles
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance", "coordinator"} <= set(variables)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
    for title, ref, expr in prometheus_targets(dashboard):
        assert "job=~\"$job\"" in expr and "instance=~\"$instance\"" in expr, f"{title} {ref}"
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window in ("$__rate_interval", "$__range"), f"{title} {ref}: hard-coded window [{window}]"
    latency = next(p for p in dashboard["panels"] if p["title"].startswith("Latency"))
    quantiles = {q for t in latency["targets"] for q in re.findall(r"histogram_quantile\((0\.\d+)", t["expr"])}
    assert quantiles == {"0.5", "0.95", "0.99"}
    assert any(t.get("exemplar") for t in latency["targets"])
    as_text = json.dumps(dashboard)
    assert "tempo" in as_text and "span.victor.coordinator" in as_text, "no link to traces"


def test_grafana_links_metrics_traces_and_logs() -> None:
    provisioning = COMPOSE_FILE.parent / "grafana" / "provisioning" / "datasources" / "datasources.yml"
    datasources = {ds["uid"]: ds for ds in yaml.safe_load(provisioning.read_text())["datasources"]}
    assert datasources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "tempo"
    assert datasources["tempo"]["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert datasources["loki"]["jsonData"]["derivedFields"][0]["datasourceUid"] == "tempo"
