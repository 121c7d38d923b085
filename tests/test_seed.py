"""The seed's document works verbatim after the mechanical rename users do (``victor.observability`` ->
``victor_otel`` in every import): every import resolves, every snippet runs and does what the document
says, without an ``init()`` the seed never had, and nothing of victor_otel's lands on standard output.

``tests/seed/victor-monitoring-README.md`` is the seed's README as migrating users have it. The snippets
are read from it, never retyped; the only other changes are the test's own: the one production path
(``/var/log/...``) points into the test's directory, and ``uvicorn.run`` binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

import victor_otel
from tests.conftest import require_tool
from tests.faults import free_port
from tests.servers import serve
from victor_otel.logs import teardown_coordinator_logging

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "tests" / "seed" / "victor-monitoring-README.md"
SEED_LOG = "/var/log/victor/coordinators.log"


def renamed(code: str) -> str:
    """What ``sed 's/victor\\.observability/victor_otel/g'`` makes of the seed's code."""
    return code.replace("victor.observability", "victor_otel")


def seed_blocks(lang: str) -> list[str]:
    return [block for found, block in re.findall(r"```(\w*)\n(.*?)```", SEED.read_text(), re.S) if found == lang]


def python_snippet(marker: str) -> str:
    """The seed's Python block containing ``marker``, renamed."""
    (block,) = [block for block in seed_blocks("python") if marker in block]
    return renamed(block)


def seed_imports() -> list[tuple[str, list[str]]]:
    """(module, names) of every ``from ... import ...`` in the seed's Python blocks, renamed."""
    found = []
    for block in seed_blocks("python"):
        for node in ast.walk(ast.parse(renamed(block))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("victor_otel"):
                found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_the_seed_document_is_the_one_users_have() -> None:
    # Its snippets are what the other tests run: they must still be there.
    assert len(seed_blocks("python")) == 3
    assert {module for module, _ in seed_imports()} == {
        "victor_otel", "victor_otel.health", "victor_otel.coordinator_logging",
    }


def test_every_import_of_the_seed_resolves_after_the_rename() -> None:
    for module, names in seed_imports():
        imported = importlib.import_module(module)
        assert [name for name in names if not hasattr(imported, name)] == [], module
    # The modules its contents list names: victor.observability.<module> becomes victor_otel.<module>.
    listed = re.findall(r"\*\*(\w+)\.py\*\*", SEED.read_text())
    assert listed == ["prometheus_metrics", "health", "coordinator_logging"]
    for name in listed:
        importlib.import_module(f"victor_otel.{name}")
    from victor_otel import compat, logs, prometheus_metrics

    assert prometheus_metrics.get_prometheus_exporter is compat.get_prometheus_exporter  # one implementation
    assert importlib.import_module("victor_otel.coordinator_logging").get_coordinator_logger is (
        logs.get_coordinator_logger
    )


_BIND_LOOPBACK = """
import os, uvicorn
_run = uvicorn.run
def _loopback(app, **kwargs):
    kwargs.update(host="127.0.0.1", port=int(os.environ["SEED_PORT"]), log_level="warning")
    _run(app, **kwargs)
uvicorn.run = _loopback
"""


def test_quick_start_1_serves_metrics_without_init(tmp_path: Path) -> None:
    snippet = python_snippet("get_prometheus_exporter()")
    assert 'uvicorn.run(app, host="0.0.0.0", port=8000)' in snippet
    script = tmp_path / "quick_start_1.py"
    script.write_text(_BIND_LOOPBACK + snippet)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VICTOR_OTEL_"))}
    process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env={**env, "SEED_PORT": str(port)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                body = response.text
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert response.status_code == 200, body
        assert "# TYPE victor_coordinator_uptime_seconds gauge" in body
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    assert out == b"", "the application's standard output is the application's"


SEED_STYLE_APP = """
from victor_otel import get_coordinator_metrics_collector, get_prometheus_exporter

get_prometheus_exporter().export_metrics()  # a first scrape: the seed's exporter initialises victor_otel
collector = get_coordinator_metrics_collector()
for i in range(50):
    with collector.track_coordinator("ChatCoordinator"):
        pass
    collector.track_execution("ToolCoordinator", duration_ms=12.0, success=i % 10 != 0)
text = get_prometheus_exporter().export_metrics()
assert 'victor_coordinator_executions_total{coordinator="ChatCoordinator",method="execute"} 50.0' in text, text
"""


def test_nothing_of_victor_otel_is_printed_without_init(tmp_path: Path) -> None:
    # Before: the implicit init() of the seed's exporter printed every span on standard output.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VICTOR_OTEL_"))}
    result = subprocess.run([sys.executable, "-c", SEED_STYLE_APP], cwd=tmp_path, env=env, capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    assert b"trace_id" not in result.stderr
    # Asked for, spans are printed.
    result = subprocess.run([sys.executable, "-c", SEED_STYLE_APP], cwd=tmp_path, capture_output=True, timeout=60,
                            env={**env, "OTEL_TRACES_EXPORTER": "console"}, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.count(b'"name": "ChatCoordinator.execute"') == 50


def test_init_says_once_where_spans_go(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="victor_otel")
    victor_otel.init(service_name="seed", traces_exporter=None, traces_file=str(tmp_path / "spans.jsonl"))
    victor_otel.init(service_name="seed", traces_file=str(tmp_path / "spans.jsonl"))  # the same: silent
    said = [r.getMessage() for r in caplog.records if "spans" in r.getMessage()]
    assert said == [f"victor_otel: spans are appended to {tmp_path / 'spans.jsonl'}"]
    victor_otel.shutdown()
    caplog.clear()
    victor_otel.init(service_name="seed", traces_exporter="none")
    (message,) = [r.getMessage() for r in caplog.records if "spans" in r.getMessage()]
    assert "none are made" in message and "OTEL_TRACES_EXPORTER=otlp" in message


def test_quick_start_2_health_is_ready_at_its_first_probe_without_init(tmp_path: Path) -> None:
    snippet = python_snippet("setup_health_endpoints(app)")
    assert "/metrics" not in snippet.replace("# GET", "")  # nothing scrapes: readiness cannot wait for it
    script = tmp_path / "quick_start_2.py"
    script.write_text(_BIND_LOOPBACK + snippet + "\nuvicorn.run(app)\n")  # the snippet leaves serving to you
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VICTOR_OTEL_"))}
    process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env={**env, "SEED_PORT": str(port)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # the first request is the readiness probe itself
            try:
                ready = httpx.get(f"{url}/health/ready", timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, "the snippet's app did not start"
                time.sleep(0.1)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "pass"
        for path in ("/health", "/health/live", "/health/detailed"):
            response = httpx.get(url + path, timeout=5)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"].startswith("application/health+json")
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    assert out == b""


def test_health_routes_do_not_bring_a_stopped_process_back() -> None:
    from starlette.applications import Starlette

    victor_otel.init(service_name="seed", traces_exporter="none")
    victor_otel.shutdown()
    app = victor_otel.setup_health_endpoints(Starlette())
    with serve(app) as url:
        assert httpx.get(f"{url}/health/ready").status_code == 503
        assert httpx.get(f"{url}/health/live").status_code == 200
    assert victor_otel.current() is None


def test_quick_start_3_logs_json_with_top_level_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snippet = python_snippet("setup_coordinator_logging(")
    assert SEED_LOG in snippet
    log_file = tmp_path / "victor" / "coordinators.log"
    log_file.parent.mkdir()
    try:
        exec(compile(snippet.replace(SEED_LOG, str(log_file)), "seed-quick-start-3", "exec"), {})
        logging.getLogger("victor.coordinators.ChatCoordinator").info("after the text set-up")
    finally:
        teardown_coordinator_logging()
    # The production set-up wrote JSON lines, extras at top level (the seed's jq commands read them).
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert records == []  # the snippet's own record went through the development set-up called second
    err = capsys.readouterr().err
    assert "Processing request" in err and "after the text set-up" in err


def test_quick_start_3_production_set_up_alone(tmp_path: Path) -> None:
    """The production half of the snippet, as a service runs it: JSON records in the file."""
    snippet = python_snippet("setup_coordinator_logging(")
    production = snippet.split("# Or development mode")[0] + textwrap.dedent(snippet.split("# Get logger")[1])
    log_file = tmp_path / "coordinators.log"
    try:
        exec(compile(production.replace(SEED_LOG, str(log_file)), "seed-quick-start-3", "exec"), {})
    finally:
        teardown_coordinator_logging()
    (record,) = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert record["level"] == "INFO" and record["message"] == "Processing request"
    assert record["request_id"] == "abc-123" and record["user_id"] == "user@example.com"
    assert record["coordinator"] == "ChatCoordinator"


# -- the seed's own mistakes, and the fixes the migration guide gives ----------------------------------

GUIDE = ROOT / "docs" / "migration.md"


def test_the_seeds_alertmanager_config_is_invalid_and_the_guides_fix_is_valid(tmp_path: Path) -> None:
    amtool = require_tool("amtool")
    (seed_config,) = seed_blocks("yaml")[1:]  # the second YAML block: alertmanager.yml
    assert "receiver: 'default'" in seed_config
    before, after = re.findall(r"```yaml\n(# (?:before|after).*?)```", GUIDE.read_text(), re.S)
    assert before.split("\n", 1)[1] == seed_config, "the guide's 'before' is the seed's file"
    for text, valid in ((seed_config, False), (after, True)):
        path = tmp_path / "alertmanager.yml"
        path.write_text(text)
        checked = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60,
                                 check=False)
        assert (checked.returncode == 0) is valid, checked.stdout + checked.stderr
        if not valid:
            assert 'undefined receiver "default"' in checked.stdout + checked.stderr


def test_jq_then_tail_keeps_lines_not_records_unless_compact(tmp_path: Path) -> None:
    require_tool("jq")
    log_file = tmp_path / "coordinators.log"
    victor_otel.setup_coordinator_logging(level="INFO", format_type="json", output_file=str(log_file))
    try:
        logger = victor_otel.get_coordinator_logger("ChatCoordinator")
        for i in range(60):
            logger.error("call %d failed", i, extra={"request_id": f"req-{i}"})
    finally:
        teardown_coordinator_logging()
    seed = next(line for block in seed_blocks("bash") for line in block.splitlines() if "tail -50" in line)
    seed = seed.strip().replace(SEED_LOG, str(log_file))

    def records(command: str) -> list[str]:
        out = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60,
                             check=True).stdout
        return [line for line in out.splitlines() if line.strip()]

    as_printed = records(seed)
    assert len(as_printed) == 50 and not all(line.startswith("{") for line in as_printed)  # lines, not records
    fixed = seed.replace("jq '", "jq -c '")  # the guide's fix
    assert "`jq -c 'select(.level == \"ERROR\")' coordinators.log \\| tail -50`" in GUIDE.read_text()
    last = [json.loads(line) for line in records(fixed)]
    assert [r["request_id"] for r in last] == [f"req-{i}" for i in range(10, 60)]  # the last 50 records
