"""The README's metric contract table is the declaration's own output, and its two commands exist.

The configuration table lives in docs/configuration.md (tests/test_docs.py holds it to the declaration).
"""

from __future__ import annotations

import re
from pathlib import Path

from victor_otel import instruments

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_metric_contract_table_matches_the_declaration() -> None:
    assert instruments.markdown_table() in README


def test_the_two_commands_are_there_and_ci_runs_the_readme_test_command() -> None:
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[demo]' && victor-otel demo" in README
    assert "sudo apt-get install -y python3-venv" in README
    assert "bash .ci/run" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash .ci/install" in ci and "bash .ci/test" in ci
    for script in ("install", "test"):  # a fresh Debian has python3 but no `python` command
        text = (ROOT / ".ci" / script).read_text()
        assert ". .ci/python" in text, script
        assert not re.search(r"^\s*python\s", text, re.MULTILINE), script
    assert "python3 -m venv" in (ROOT / ".ci" / "python").read_text()
