"""``victor-otel demo``: starts, serves /metrics with the three coordinators, stops by itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from victor_otel.cli import build_parser


def test_demo_serves_metrics_and_stops_by_itself(tmp_path: Path) -> None:
    traces = tmp_path / "spans.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "victor_otel.cli", "demo", "--port", "0", "--duration", "4",
         "--traces-file", str(traces)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", first)
        assert match, first
        deadline = time.monotonic() + 5
        text = ""
        while time.monotonic() < deadline:  # something meaningful within five seconds
            text = httpx.get(match.group(0), timeout=5).text
            if 'coordinator="AnalysisCoordinator"' in text:
                break
            time.sleep(0.2)
        for name in ("ChatCoordinator", "AnalysisCoordinator", "RetrievalCoordinator"):
            assert f'victor_coordinator_executions_total{{coordinator="{name}"' in text, name
        assert 'victor_coordinator_cache_hits_total{coordinator="RetrievalCoordinator"}' in text
        rest, errors = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert "last 60s | " in rest and "stopped" in rest
    assert traces.read_text().count('"name": "ChatCoordinator.chat"') > 0


@pytest.mark.parametrize("args", [["demo", "--error-rate", "2"], ["demo", "--port", "-1"], ["demo", "--duration", "0"]])
def test_demo_rejects_bad_arguments(args: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(args)
    assert caught.value.code == 2
