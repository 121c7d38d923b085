"""The package metadata a user expects: the licence file matches the declared licence, the classifiers
name the Python versions ``requires-python`` allows, and the changelog has the current version."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from victor_otel._version import __version__

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; pyproject.toml is read the same way on 3.10 by pip
ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_licence_file_is_the_declared_licence() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"]), "PEP 639: the SPDX field alone"


def test_classifiers_name_the_supported_python_versions() -> None:
    minimum = re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"])
    assert minimum is not None
    versions = sorted(int(m[1]) for c in PROJECT["classifiers"]
                      if (m := re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c)))
    assert versions[0] == int(minimum[1]), "the oldest classifier is requires-python's minimum"
    assert versions == list(range(versions[0], versions[-1] + 1)), "no version skipped"
    assert sys.version_info[1] in versions, "the interpreter the tests run on is a supported one"
    assert "Typing :: Typed" in PROJECT["classifiers"] and (ROOT / "victor_otel" / "py.typed").exists()


def test_project_urls_are_the_repository_the_runbook_links_use() -> None:
    rules = (ROOT / "alerts" / "prometheus_alerts.yml").read_text()
    runbook = re.search(r"runbook_url: \"(https://github\.com/[^/]+/[^/]+)/", rules)
    assert runbook is not None
    urls = PROJECT["urls"]
    assert urls["Homepage"] == runbook[1]
    assert all(url.startswith(runbook[1]) for url in urls.values())
    assert urls["Changelog"].endswith("/CHANGELOG.md") and (ROOT / "CHANGELOG.md").exists()


def test_the_changelog_has_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{__version__}]" in changelog
    assert changelog.index("## [Unreleased]") < changelog.index(f"## [{__version__}]")
