"""Three incidents of the runbook's table through a real Prometheus and a real Alertmanager: what pages.

For each incident the test starts a Victor service with a deterministic incident
(``tests/e2e/incident_app.py``: ChatCoordinator fails exactly 10 % or 20 % of its calls, or the process
dies), a Prometheus scraping it every second and evaluating ``alerts/prometheus_alerts.yml`` every
second, and Debian's Alertmanager (``prometheus-alertmanager``) loaded with
``collector/alertmanager/alertmanager.yml``: its routes and inhibit rules as they ship; only the
receivers point at a webhook of the test (nothing reaches PagerDuty) and the group timers are 1 s. The
rules' ``for`` durations are read as seconds instead of minutes (``for: 5m`` holds for 5 s), their
expressions are unchanged. What would page is read on Alertmanager's API (active, not inhibited, routed
to the ``pager`` receiver) and checked against what the webhook received. Everything waits on HTTP APIs
with deadlines, never on fixed sleeps. Expected, as alerts/runbook.md#incidents declares:

- 10 % errors: HighErrorRate warns, the budget burns are muted, nothing pages (the seed's Unhealthy and a
  critical fast burn paged twice);
- 20 % errors: CriticalErrorRate pages once, HighErrorRate and the burns are muted;
- service down: ServiceDown pages once (not once more per coordinator).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.otel_stack import binary
from tests.e2e.test_bundle_support import ALERTMANAGER_CONFIG, REPO, load_rules, tool
from tests.e2e.test_prometheus_live import JOB, get, poll, stop
from tests.faults import free_port

pytestmark = pytest.mark.e2e

PAGER = "pager"
START_TIMEOUT = 60.0
#: Prometheus 2 hands targets to the scraper ~5 s after start; then rate() needs two scrapes, `for` its
#: seconds, Alertmanager its group_wait: well under a minute.
ALERT_TIMEOUT = 90.0


class Webhook:
    """Alertmanager's notifications, received on 127.0.0.1: receiver name -> payloads."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.setdefault(self.path.strip("/"), []).append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alertnames(self, receiver: str) -> set[str]:
        return {a["labels"]["alertname"] for payload in self.received.get(receiver, []) for a in payload["alerts"]}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    workdir: Path
    app: subprocess.Popen[bytes]
    app_target: str
    prometheus_url: str
    alertmanager_url: str
    webhook: Webhook
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = json.loads(get(f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def prometheus_alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        alerts = json.loads(get(f"{self.prometheus_url}/api/v1/alerts"))["data"]["alerts"]
        return [a for a in alerts if a["state"] == state]

    def alertmanager_alerts(self, **params: str) -> list[dict[str, Any]]:
        url = f"{self.alertmanager_url}/api/v2/alerts?" + urllib.parse.urlencode(params)
        alerts: list[dict[str, Any]] = json.loads(get(url))
        return alerts

    def pages(self) -> list[dict[str, Any]]:
        """What would page now: active (not inhibited, not silenced) alerts routed to the pager receiver."""
        return self.alertmanager_alerts(active="true", inhibited="false", silenced="false", receiver=f"^{PAGER}$")

    def in_alertmanager(self, alertname: str, state: str) -> dict[str, Any] | None:
        """The alert as Alertmanager holds it, if its status is ``state`` (active | suppressed)."""
        for alert in self.alertmanager_alerts():
            if alert["labels"]["alertname"] == alertname and alert["status"]["state"] == state:
                return alert
        return None

    def output(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in self.workdir.glob("*.log"))


def rules_in_seconds(workdir: Path) -> Path:
    """alerts/prometheus_alerts.yml evaluated every second, each `for: Nm` read as N seconds."""
    rules = load_rules()
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                assert rule["for"].endswith("m"), rule
                if rule.get("alert") == "NotScraping":
                    # absent(up) holds until Prometheus' first scrape, which comes 5 s or more after its
                    # start on a busy machine: scaled to seconds it paged at start-up. None of these
                    # incidents removes the target (promtool's scenarios cover that one): keep minutes.
                    continue
                rule["for"] = rule["for"][:-1] + "s"
    path = workdir / "rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def alertmanager_config(workdir: Path, webhook: Webhook) -> Path:
    """The shipped routes and inhibit rules; receivers are the test's webhook, group timers 1 s."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for route in config["route"].get("routes", []):
        route.pop("repeat_interval", None)
    for receiver in config["receivers"]:
        receiver.pop("pagerduty_configs", None)
        receiver["webhook_configs"] = [{"url": f"{webhook.url}/{receiver['name']}", "send_resolved": False}]
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _start(workdir: Path, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    with (workdir / f"{name}.log").open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kwargs)


@pytest.fixture
def incident(tmp_path: Path) -> Iterator[Any]:
    """A function starting the whole stack for one incident (``error_every``: see incident_app)."""
    stacks: list[Stack] = []

    def start(error_every: int) -> Stack:
        prometheus, alertmanager = binary("prometheus"), tool("prometheus-alertmanager")
        processes: list[subprocess.Popen[bytes]] = []
        webhook = Webhook()
        app_port, am_port, prom_port = free_port(), free_port(), free_port()
        env = {**os.environ, "INCIDENT_PORT": str(app_port), "INCIDENT_ERROR_EVERY": str(error_every)}
        app = _start(tmp_path, "app", [sys.executable, "-m", "tests.e2e.incident_app"], cwd=REPO, env=env)
        processes.append(app)
        processes.append(_start(tmp_path, "alertmanager", [
            alertmanager, f"--config.file={alertmanager_config(tmp_path, webhook)}",
            f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=", "--log.level=warn",
        ]))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_in_seconds(tmp_path))],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        processes.append(_start(tmp_path, "prometheus", [
            prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn",
        ]))
        stack = Stack(tmp_path, app, f"127.0.0.1:{app_port}", f"http://127.0.0.1:{prom_port}",
                      f"http://127.0.0.1:{am_port}", webhook, processes)
        stacks.append(stack)
        for url in (stack.prometheus_url, stack.alertmanager_url):
            poll(lambda url=url: get(f"{url}/-/ready").strip(), START_TIMEOUT, f"{url} ready")
        poll(lambda: stack.query(f'rate(victor_coordinator_executions_total{{job="{JOB}"}}[1m]) > 0'),
             START_TIMEOUT, "two scrapes of the incident app")
        return stack

    yield start
    for stack in stacks:
        for process in reversed(stack.processes):
            stop(process)
        stack.webhook.close()


def _age(alert: dict[str, Any]) -> float:
    return time.time() - datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00")).timestamp()


def test_ten_percent_errors_warn_and_page_nobody(incident: Any) -> None:
    stack: Stack = incident(error_every=10)
    high = poll(lambda: stack.in_alertmanager("HighErrorRate", "active"), ALERT_TIMEOUT,
                f"HighErrorRate in Alertmanager\n{stack.output()}")
    assert high["labels"]["coordinator"] == "ChatCoordinator" and high["labels"]["severity"] == "warning"
    # The budget's fast burn (6 % over 6 h and 30 min) fires too, and HighErrorRate mutes it.
    burn = poll(lambda: stack.in_alertmanager("AvailabilityErrorBudgetFastBurn", "suppressed"), ALERT_TIMEOUT,
                "AvailabilityErrorBudgetFastBurn muted")
    assert burn["status"]["inhibitedBy"], burn
    # The health check of ChatCoordinator fails (> 5 %), which made the seed's Unhealthy page; every rule
    # that could page has had its `for` (5 s at most) since the errors started.
    assert stack.query('victor_health_status{check="ChatCoordinator:error_rate"} == 0')
    poll(lambda: _age(high) > 6 and stack.in_alertmanager("HighErrorRate", "active"), ALERT_TIMEOUT,
         "HighErrorRate active for 6 s")
    assert stack.pages() == []
    assert stack.webhook.alertnames(PAGER) == set()
    assert "HighErrorRate" in stack.webhook.alertnames("default")


def test_twenty_percent_errors_page_once(incident: Any) -> None:
    stack: Stack = incident(error_every=5)
    poll(lambda: stack.webhook.alertnames(PAGER), ALERT_TIMEOUT, f"a page\n{stack.output()}")
    poll(lambda: stack.in_alertmanager("HighErrorRate", "suppressed"), ALERT_TIMEOUT, "HighErrorRate muted")
    pages = stack.pages()
    assert [(p["labels"]["alertname"], p["labels"]["coordinator"]) for p in pages] == [
        ("CriticalErrorRate", "ChatCoordinator")
    ]
    assert stack.webhook.alertnames(PAGER) == {"CriticalErrorRate"}
    firing = {a["labels"]["alertname"] for a in stack.prometheus_alerts()}
    assert {"CriticalErrorRate", "HighErrorRate"} <= firing  # Prometheus fires both; Alertmanager pages once


def test_service_down_pages_once(incident: Any) -> None:
    stack: Stack = incident(error_every=0)
    stop(stack.app)
    down = poll(lambda: stack.in_alertmanager("ServiceDown", "active"), ALERT_TIMEOUT,
                f"ServiceDown in Alertmanager\n{stack.output()}")
    assert down["labels"]["job"] == JOB and down["labels"]["severity"] == "critical"
    # CoordinatorUnavailable's `for` is 10 (s here): wait past it; it must not page once per coordinator.
    poll(lambda: _age(down) > 12 and stack.in_alertmanager("ServiceDown", "active"), ALERT_TIMEOUT,
         "ServiceDown active for 12 s")
    assert [p["labels"]["alertname"] for p in stack.pages()] == ["ServiceDown"]
    assert stack.webhook.alertnames(PAGER) == {"ServiceDown"}
    assert not [a for a in stack.prometheus_alerts("pending") + stack.prometheus_alerts()
                if a["labels"]["alertname"] == "CoordinatorUnavailable"]
