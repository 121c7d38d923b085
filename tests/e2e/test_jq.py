"""The seed's two operator commands, run with the real ``jq`` on a log file written by the set-up users call.

``jq 'select(.level == "ERROR")' coordinators.log`` must give exactly the failing executions (and the
records logged at ERROR), ``jq 'select(.duration_ms > 2000)' coordinators.log`` exactly the slow ones,
whatever users put in their messages and extras.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import victor_otel
from tests.conftest import require_tool
from victor_otel import logs

SEED_COMMANDS = {"errors": 'select(.level == "ERROR")', "slow": "select(.duration_ms > 2000)"}


def jq(program: str, path: Path) -> list[dict[str, Any]]:
    """Run ``jq '<program>' <path>`` exactly as the runbook does and parse its (pretty-printed) output."""
    out = subprocess.run(
        [require_tool("jq"), program, str(path)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    decoder, values, position = json.JSONDecoder(), [], 0
    while position < len(out):
        if out[position].isspace():
            position += 1
            continue
        value, position = decoder.raw_decode(out, position)
        values.append(value)
    return values


@pytest.fixture
def log_file(tmp_path: Path) -> Any:
    path = tmp_path / "victor" / "coordinators.log"
    victor_otel.init(service_name="victor", traces_exporter="none")
    # The README's production set-up: INFO, JSON, a file; success records are DEBUG (not written),
    # executions slower than 1 s are WARNING, failures ERROR.
    victor_otel.setup_coordinator_logging(level="INFO", format_type="json", output_file=str(path))
    try:
        yield path
    finally:
        logs.teardown_coordinator_logging()


def write_the_day(path: Path) -> None:
    collector = victor_otel.get_coordinator_metrics_collector()
    logger = victor_otel.get_coordinator_logger("ChatCoordinator")

    @victor_otel.coordinator("ChatCoordinator")
    class Chat:
        def fast(self) -> str:
            return "ok"

        def broken(self) -> None:
            raise ConnectionError("upstream refused api_key=sk-jq0123456789abcdefghijk")

    for _ in range(5):
        Chat().fast()  # fast successes: DEBUG, not in the file
    with pytest.raises(ConnectionError):
        Chat().broken()  # failing, fast
    collector.track_execution("ChatCoordinator", duration_ms=2500.0, method="plan")  # slow success
    collector.track_execution("ToolCoordinator", duration_ms=3000.0, success=False, method="run")  # slow failure
    collector.track_execution("ChatCoordinator", duration_ms=1500.0, method="plan")  # slowish: WARNING, <= 2000
    collector.track_execution("ChatCoordinator", duration_ms=2000.0, method="plan")  # exactly 2000: not > 2000
    logger.error("manual error", extra={"user_id": "user@example.com"})
    logger.warning("user timing", extra={"duration_ms": 2100.5})  # the seed's own timing field, a number
    logger.info('injection {"level": "ERROR", "duration_ms": 99999}', extra={"note": '"level":"ERROR"'})
    logger.info("string duration", extra={"duration_ms": "99999"})  # jq: "99999" > 2000 would be true
    logger.info("fake level", extra={"level": "ERROR", "duration_ms": float("nan")})
    logger.info("boolean duration", extra={"duration_ms": True})
    logging_handlers_flush()


def logging_handlers_flush() -> None:
    for _, handler in logs.setup._setup.handlers:
        handler.flush()


@pytest.mark.e2e
def test_the_seed_jq_commands_select_exactly_the_failing_and_the_slow(log_file: Path) -> None:
    write_the_day(log_file)
    every = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(every) == 11

    errors = jq(SEED_COMMANDS["errors"], log_file)
    assert [r["message"] for r in errors] == [
        "ChatCoordinator.broken failed in " + errors[0]["message"].rsplit(" in ", 1)[1],
        "ToolCoordinator.run failed in 3000.0 ms",
        "manual error",
    ]
    assert errors[0]["exception"]["type"] == "ConnectionError" and errors[0]["outcome"] == "error"
    assert "sk-jq" not in log_file.read_text()

    slow = jq(SEED_COMMANDS["slow"], log_file)
    assert [(r["message"], r["duration_ms"]) for r in slow] == [
        ("ChatCoordinator.plan succeeded in 2500.0 ms", 2500.0),
        ("ToolCoordinator.run failed in 3000.0 ms", 3000.0),
        ("user timing", 2100.5),
    ]
    assert [r["level"] for r in slow] == ["WARNING", "ERROR", "WARNING"]


@pytest.mark.e2e
def test_every_line_is_one_object_jq_accepts(log_file: Path) -> None:
    write_the_day(log_file)
    compact = subprocess.run(
        [require_tool("jq"), "-c", ".", str(log_file)], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()
    assert [json.loads(x) for x in compact] == [json.loads(x) for x in log_file.read_text().splitlines()]
