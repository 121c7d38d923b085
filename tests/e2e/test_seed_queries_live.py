"""The seed's three troubleshooting queries, run with curl as its README prints them, against a real Prometheus.

The service (``tests/e2e/incident_app.py``) has three coordinators with exact numbers: ChatCoordinator.chat
fails 10 % of its calls and averages 0.245 s (100 ms, 3 s on every 20th call), ToolCoordinator.run 0.05 s,
RetrievalCoordinator.retrieve 0.02 s with 80 % cache hits. The commands are read from
``tests/seed/victor-monitoring-README.md``, never retyped: as pasted they fail (``[5m]`` is a curl glob),
with ``-g`` added and the test's Prometheus address they must give one correct value per coordinator and
method. The ratios are single divisions again: ``errors_total`` has the labels of ``executions_total``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.otel_stack import binary
from tests.e2e.test_bundle_support import REPO, tool
from tests.e2e.test_prometheus_live import JOB, get, poll, stop
from tests.faults import free_port

pytestmark = pytest.mark.e2e

SEED = REPO / "tests" / "seed" / "victor-monitoring-README.md"
SEED_PROMETHEUS = "http://localhost:9090"


def seed_curl_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", SEED.read_text(), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("curl ")]


def curl(command: str, prometheus_url: str, glob_off: bool) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command.replace(SEED_PROMETHEUS, prometheus_url))
    assert argv[0] == "curl"
    argv = [tool("curl"), "-sS", *(["-g"] if glob_off else []), *argv[1:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def result(completed: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], float]:
    assert completed.returncode == 0, completed.stderr
    body = json.loads(completed.stdout)
    assert body["status"] == "success", body
    values: dict[tuple[str, str], float] = {}
    for sample in body["data"]["result"]:
        key = (sample["metric"].get("coordinator", ""), sample["metric"].get("method", ""))
        assert key not in values, f"two samples for {key}: the query does not give one value per series"
        values[key] = float(sample["value"][1])
    return values


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("seed-queries")
    app_port, prom_port = free_port(), free_port()
    processes = []
    try:
        env = {**os.environ, "INCIDENT_PORT": str(app_port), "INCIDENT_ERROR_EVERY": "10"}
        with (workdir / "app.log").open("wb") as out:
            processes.append(subprocess.Popen([sys.executable, "-m", "tests.e2e.incident_app"], cwd=REPO, env=env,
                                              stdout=out, stderr=subprocess.STDOUT))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        with (workdir / "prometheus.log").open("wb") as out:
            processes.append(subprocess.Popen([
                binary("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ], stdout=out, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{prom_port}"
        poll(lambda: get(f"{url}/-/ready").strip(), 60, "Prometheus ready")
        # Ten seconds of scrapes: every 5-minute rate then covers hundreds of calls.
        poll(lambda: json.loads(get(f"{url}/api/v1/query?query=count_over_time(up[1m])%20>=%2010"))["data"]["result"],
             90, "ten scrapes of the service")
        yield url
    finally:
        for process in reversed(processes):
            stop(process)


def test_the_seed_prints_three_prometheus_queries() -> None:
    commands = seed_curl_commands()
    assert len(commands) == 3
    assert all(SEED_PROMETHEUS in command for command in commands)


def test_as_pasted_curl_reads_the_range_as_a_glob(prometheus_url: str) -> None:
    completed = curl(seed_curl_commands()[0], prometheus_url, glob_off=False)
    assert completed.returncode != 0 and "range" in completed.stderr.lower(), completed


def test_error_ratio_is_one_value_per_coordinator_and_method(prometheus_url: str) -> None:
    ratios = result(curl(seed_curl_commands()[0], prometheus_url, glob_off=True))
    assert set(ratios) == {("ChatCoordinator", "chat"), ("ToolCoordinator", "run"),
                           ("RetrievalCoordinator", "retrieve")}
    assert ratios[("ChatCoordinator", "chat")] == pytest.approx(0.10, abs=0.02)
    assert ratios[("ToolCoordinator", "run")] == 0 and ratios[("RetrievalCoordinator", "retrieve")] == 0


def test_mean_latency_is_one_value_per_coordinator_and_method(prometheus_url: str) -> None:
    means = result(curl(seed_curl_commands()[1], prometheus_url, glob_off=True))
    assert set(means) == {("ChatCoordinator", "chat"), ("ToolCoordinator", "run"), ("RetrievalCoordinator", "retrieve")}
    assert means[("ChatCoordinator", "chat")] == pytest.approx((19 * 0.1 + 3.0) / 20, abs=0.03)
    assert means[("ToolCoordinator", "run")] == pytest.approx(0.05)
    assert means[("RetrievalCoordinator", "retrieve")] == pytest.approx(0.02)


def test_cache_hit_rate_only_where_there_are_lookups(prometheus_url: str) -> None:
    rates: dict[Any, float] = result(curl(seed_curl_commands()[2], prometheus_url, glob_off=True))
    # No sample for the coordinators without a cache lookup: "0 % hits" would be a lie.
    assert set(rates) == {("RetrievalCoordinator", "")}
    assert rates[("RetrievalCoordinator", "")] == pytest.approx(0.8, abs=0.05)


def test_the_migration_guide_gives_the_working_commands() -> None:
    guide = (REPO / "docs" / "migration.md").read_text()
    for command in seed_curl_commands():
        query = command.split("query=", 1)[1].rstrip("'")
        assert f"curl -g '{SEED_PROMETHEUS}/api/v1/query?query={query}'" in guide, query
