"""Shared helpers of the bundle's end-to-end tests (this module holds no test).

The bundle is what ships beside the package: ``collector/``, ``alerts/``, ``dashboards/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_FILE = REPO / "alerts" / "prometheus_alerts.yml"
RULE_TESTS = sorted((REPO / "alerts" / "tests").glob("*.yml"))
RUNBOOK = REPO / "alerts" / "runbook.md"
DASHBOARD = REPO / "dashboards" / "victor-coordinators.json"
PROMETHEUS_CONFIG = REPO / "collector" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO / "collector" / "alertmanager" / "alertmanager.yml"
COMPOSE_FILE = REPO / "collector" / "docker-compose.yml"
COLLECTOR_CONFIG = REPO / "collector" / "otel-collector.yaml"

#: Debian package that provides each binary (CI installs them in .ci/install).
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
    "docker-compose": "docker-compose",
}


def tool(name: str) -> str:
    """Path of a required binary. Skips only outside CI; under CI a missing binary fails."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed: apt-get install {PACKAGES.get(name, name)}"
    if "CI" in os.environ:
        pytest.fail(f"{message} (CI must run every end-to-end test)")
    pytest.skip(message)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root; the assertion message carries its output."""
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES_FILE.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "record" in rule]


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def prometheus_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expr) of every Prometheus query of the dashboard."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            if uid == "${datasource}" and "expr" in target:
                yield panel["title"], target["refId"], target["expr"]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            anchor = github_anchor(match.group(1))
            n = counts.get(anchor, 0)
            counts[anchor] = n + 1
            anchors.add(anchor if n == 0 else f"{anchor}-{n}")
    return anchors




SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
VICTOR_NAME = re.compile(r"(?<![\w:])victor_[a-z0-9_]*[a-z0-9](?![\w:])")
RECORDED_NAME = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression uses: selectors, every victor_* name, every level:metric:op name."""
    names = set(VICTOR_NAME.findall(expr)) | set(RECORDED_NAME.findall(expr))
    names |= {name for name in SELECTOR.findall(expr) if name not in ("by", "without", "on", "ignoring")}
    return names
