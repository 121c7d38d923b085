"""The README's tables are the declarations' own output, and its two commands exist."""

from __future__ import annotations

from pathlib import Path

from victor_otel import config, instruments

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_configuration_table_matches_the_settings_declaration() -> None:
    assert config.markdown_table() in README


def test_metric_contract_table_matches_the_declaration() -> None:
    assert instruments.markdown_table() in README


def test_the_two_commands_are_there_and_ci_runs_the_readme_test_command() -> None:
    assert "pip install -e '.[demo]' && victor-otel demo" in README
    assert "bash .ci/run" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash .ci/install" in ci and "bash .ci/test" in ci
