"""The LLM part of the bundle: alerts/llm_alerts.yml with its promtool tests and runbook sections, and
dashboards/victor-llm.json, held to the metric contract and its declared thresholds."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from victor_otel import instruments

from .test_bundle_support import (
    PROMETHEUS_CONFIG,
    REPO,
    RUNBOOK,
    metric_names,
    run,
    runbook_anchors,
    tool,
)

#: Names outside the contract that the bundle may use (as in test_bundle_static).
EXTRA_NAMES = {"up", "target_info"}
LLM_RULES = REPO / "alerts" / "llm_alerts.yml"
LLM_RULE_TESTS = REPO / "alerts" / "tests" / "llm_alerts_test.yml"
LLM_DASHBOARD = REPO / "dashboards" / "victor-llm.json"
ALERTS = {"LLMSpendOverBudget": "warning", "LLMSpendSpike": "critical", "LLMHighErrorRatio": "warning",
          "LLMSlowFirstToken": "warning"}


def llm_alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(LLM_RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(LLM_DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    return exprs + [v["query"]["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]


def llm_runbook_promql() -> list[str]:
    section = RUNBOOK.read_text().split("## LLM alerts", 1)[1]
    return re.findall(r"```promql\n(.*?)```", section, flags=re.S)


def test_promtool_accepts_the_llm_rules_and_their_unit_tests_pass() -> None:
    promtool = tool("promtool")
    checked = run(promtool, "check", "rules", str(LLM_RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", str(LLM_RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_prometheus_loads_the_llm_rules() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert "../../alerts/llm_alerts.yml" in config["rule_files"]


def test_every_llm_alert_is_tested_labelled_and_documented() -> None:
    rules = llm_alerts()
    assert {rule["alert"]: rule["labels"]["severity"] for rule in rules} == ALERTS
    tests = LLM_RULE_TESTS.read_text()
    anchors = runbook_anchors()
    for rule in rules:
        name = rule["alert"]
        assert tests.count(f"alertname: {name}") >= 2, f"{name}: needs a firing and a silent case"
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == name.lower() and anchor in anchors, name
        assert 'coordinator!~".*Test.*"' in rule["expr"], f"{name}: test coordinators must be excluded"


def test_thresholds_are_the_declared_ones() -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in llm_alerts()}
    assert by_name["LLMHighErrorRatio"].strip().endswith(f"> {instruments.LLM_ERROR_RATIO_ALERT:g}")
    assert by_name["LLMSlowFirstToken"].strip().endswith(f"> {instruments.LLM_TTFT_P95_ALERT:g}")
    assert "victor_llm_budget_usd_per_hour" in by_name["LLMSpendOverBudget"]
    steps = {p["title"]: p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
             for p in dashboard()["panels"]}
    assert steps["LLM error ratio by coordinator and model"][-1]["value"] == instruments.LLM_ERROR_RATIO_ALERT
    assert steps["Time to first token p95 by model"][-1]["value"] == instruments.LLM_TTFT_P95_ALERT


@pytest.mark.parametrize("source", ["alerts", "dashboard", "runbook"])
def test_every_llm_metric_name_is_in_the_contract(source: str) -> None:
    exprs = {"alerts": [r["expr"] for r in llm_alerts()], "dashboard": dashboard_exprs(),
             "runbook": llm_runbook_promql()}[source]
    assert exprs
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert sorted(used - set(instruments.by_prometheus_name()) - EXTRA_NAMES) == []


def test_llm_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] == "victor-llm"
    titles = [panel["title"] for panel in board["panels"]]
    for wanted in ("Tokens per second by coordinator and model", "Cost per hour by coordinator and model",
                   "Model latency p95 by model", "Time to first token p95 by model",
                   "LLM error ratio by coordinator and model"):
        assert wanted in titles
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance", "coordinator", "model"} <= set(variables)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in board["panels"]:
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert 'job=~"$job"' in expr and 'instance=~"$instance"' in expr, panel["title"]
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", f"{panel['title']}: hard-coded window [{window}]"
