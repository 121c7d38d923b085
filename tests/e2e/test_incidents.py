"""Alert semantics as incidents: the runbook's table, promtool's scenarios and Alertmanager's inhibit rules agree.

``alerts/tests/incidents_test.yml`` runs each incident through the rules with promtool (its
``promql_expr_test`` lists exactly the alerts firing an hour into the incident, and every critical alert
raised at any time). This module reads those expectations, applies the inhibit rules of
``collector/alertmanager/alertmanager.yml`` to them, and checks that ``alerts/runbook.md#incidents`` is
exactly that table, that each incident pages at most once, and that the most severe alert notified is the
level the seed's README sets. promtool itself runs in test_bundle_static.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.e2e.test_bundle_support import ALERTMANAGER_CONFIG, REPO, RUNBOOK, alert_rules

pytestmark = pytest.mark.e2e

INCIDENTS = REPO / "alerts" / "tests" / "incidents_test.yml"
SEVERITIES = ("critical", "warning", "info")

#: The scenarios the runbook must cover, and the most severe notification each may send: the levels of the
#: seed's README (warning: > 5 % errors, > 5 s, < 50 % hits, > 2 GiB, > 80 % CPU; critical: > 15 % errors,
#: > 15 s, > 4 GiB, service down, coordinator unavailable). None: nothing at all.
LEVELS: dict[str, str | None] = {
    "healthy": None,
    "2 % errors": "info",
    "10 % errors": "warning",
    "20 % errors": "critical",
    "p95 at 8 s": "warning",
    "p95 at 20 s": "critical",
    "memory at 3 GiB": "warning",
    "memory at 5 GiB": "critical",
    "CPU at 90 %": "warning",
    "cache hit rate at 30 %": "warning",
    "one coordinator down": "critical",
    "service down": "critical",
    "scrape target gone": "critical",
    "idle": "info",
    "fresh start": None,
    "cache cold": None,
}


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    labels: tuple[tuple[str, str], ...]

    def label(self, key: str) -> str:
        return dict(self.labels).get(key, "")


@dataclass(frozen=True)
class Incident:
    name: str
    what: str
    firing: tuple[Alert, ...]  # an hour into the incident
    paged: tuple[Alert, ...]  # every critical alert that fired at any time


def _labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', text))


def _alert(text: str) -> Alert:
    labels = _labels(text.split("{", 1)[1])
    labels.pop("alertstate", None)
    return Alert(labels["alertname"], labels["severity"], tuple(sorted(labels.items())))


def load_incidents() -> list[Incident]:
    text = INCIDENTS.read_text()
    what = dict(re.findall(r"^  # ([^:\n]+): (.+)$", text, re.M))
    incidents = []
    for case in yaml.safe_load(text)["tests"]:
        name = case["name"].removeprefix("incident: ")
        tests = {t["expr"]: t for t in case["promql_expr_test"]}
        firing = tests['ALERTS{alertstate="firing"}']["exp_samples"]
        critical = 'max_over_time(ALERTS{alertstate="firing",severity="critical"}'
        (paged_expr,) = [e for e in tests if e.startswith(critical)]
        incidents.append(Incident(
            name, what[name],
            tuple(_alert(s["labels"]) for s in firing),
            tuple(_alert("ALERTS" + s["labels"]) for s in tests[paged_expr]["exp_samples"]),
        ))
    return incidents


def _matches(alert: Alert, matchers: list[str]) -> bool:
    for matcher in matchers:
        key, op, value = re.fullmatch(r'(\w+)(=~|!=|=)"(.*)"', matcher).groups()  # type: ignore[union-attr]
        actual = alert.label(key)
        ok = re.fullmatch(value, actual) is not None if op == "=~" else (actual == value) == (op == "=")
        if not ok:
            return False
    return True


def muted(firing: tuple[Alert, ...]) -> set[Alert]:
    """The firing alerts Alertmanager inhibits: a rule's source fires with the same ``equal`` labels."""
    rules: list[dict[str, Any]] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["inhibit_rules"]
    return {
        target for target in firing for rule in rules
        if _matches(target, rule["target_matchers"]) and any(
            source != target and _matches(source, rule["source_matchers"])
            and all(source.label(key) == target.label(key) for key in rule.get("equal", []))
            for source in firing
        )
    }


def _names(alerts: Any) -> str:
    return ", ".join(sorted({a.name for a in alerts})) or "—"


def table(incidents: list[Incident]) -> str:
    """The runbook's incident table, as the scenarios and the inhibit rules make it."""
    rows = ["| incident | what happens | firing after an hour | muted by Alertmanager | pages |",
            "|---|---|---|---|---|"]
    for incident in incidents:
        firing = sorted({(SEVERITIES.index(a.severity), a.name, a.severity) for a in incident.firing})
        fires = ", ".join(f"{name} ({severity})" for _, name, severity in firing) or "—"
        pages = f"{len(incident.paged)}" + (f": {_names(incident.paged)}" if incident.paged else "")
        rows.append(f"| {incident.name} | {incident.what} | {fires} | {_names(muted(incident.firing))} | {pages} |")
    return "\n".join(rows) + "\n"


def test_every_incident_of_the_issue_is_a_promtool_scenario() -> None:
    assert [incident.name for incident in load_incidents()] == list(LEVELS)


def test_the_runbook_table_is_what_the_scenarios_and_the_inhibit_rules_give() -> None:
    expected = table(load_incidents())
    assert expected in RUNBOOK.read_text(), "alerts/runbook.md#incidents differs; it must read:\n" + expected


def test_one_incident_pages_at_most_once() -> None:
    for incident in load_incidents():
        assert len({(a.name, a.labels) for a in incident.paged}) <= 1, incident.name
        # What fires critical an hour in is what paged; a muted alert never pages.
        critical = {a for a in incident.firing if a.severity == "critical"} - muted(incident.firing)
        assert critical <= set(incident.paged), incident.name


def test_the_most_severe_notification_is_the_readme_level() -> None:
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
    for incident in load_incidents():
        for alert in incident.firing:
            assert alert.severity == severities[alert.name], (incident.name, alert.name)
        notified = [a.severity for a in set(incident.firing) - muted(incident.firing)]
        notified += [a.severity for a in incident.paged]
        worst = min(notified, key=SEVERITIES.index) if notified else None
        assert worst == LEVELS[incident.name], incident.name


def test_muted_alerts_leave_one_notification_per_signal() -> None:
    # At 10 % errors the fast and slow budget burns are muted by HighErrorRate: one warning, no page.
    incidents = {incident.name: incident for incident in load_incidents()}
    ten = incidents["10 % errors"]
    assert {a.name for a in set(ten.firing) - muted(ten.firing)} == {"HighErrorRate"}
    twenty = incidents["20 % errors"]
    assert {a.name for a in set(twenty.firing) - muted(twenty.firing)} == {"CriticalErrorRate"}
