"""The README and docs/ stay true: every code block runs, the configuration reference is generated, links resolve.

Code blocks (fenced, in ``README.md`` and ``docs/*.md``):

- ``python`` blocks run, each in a fresh interpreter in an empty directory, with no ``OTEL_*`` /
  ``VICTOR_OTEL_*`` variable from the shell except ``OTEL_TRACES_EXPORTER=none``;
- a ``python`` block preceded by ``<!-- snippet: pytest -->`` is a test file: it runs under pytest, with
  the ``capotel`` plugin loaded through the installed entry point, as in a user's project;
- a ``bash`` block preceded by ``<!-- snippet: run -->`` runs under ``bash -euo pipefail`` (cheap, safe
  commands only: no servers, no installs, no network);
- a ``python`` block may be preceded by a hidden prelude, run first, for what the reader already has
  (an ``app``, a queue)::

      <!-- snippet: setup
      from fastapi import FastAPI
      app = FastAPI()
      -->

- any block preceded by ``<!-- snippet: skip (why) -->`` is skipped, visibly: pytest counts it among the
  skipped tests with its reason (``pytest -rs`` lists them), and there may be at most
  :data:`MAX_SKIPPED` of them. A block naming a system path (``"/var/..."``, ``"/etc/..."``) must be
  skipped: a snippet never writes outside its own directory;
- other blocks (``bash`` without the marker, ``yaml``, ``text``, ...) are shown, not executed.

A failure names the file, the line and the block's first line. Regenerate docs/configuration.md after
adding a setting with ``UPDATE_DOCS=1 python -m pytest tests/test_docs.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from victor_otel import cli, config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = ("python", "py", "python3")
SHELL = ("bash", "sh", "shell")
#: Opt-outs are for blocks that cannot run on their own (a server that never returns, files of a
#: production host); raise this only with a reason every reader would accept.
MAX_SKIPPED = 6
TIMEOUT = 120

_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<kind>[a-z]+)\s*(?:\((?P<reason>[^)]*)\))?\s*-->\s*$")
_SETUP = re.compile(r"^\s*<!--\s*snippet:\s*setup\s*$")
_SYSTEM_PATH = re.compile(r"[\"']/(?:var|etc|usr|opt|srv|root|home)/")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None = None
    reason: str = ""
    setup: str = ""

    @property
    def where(self) -> str:
        return f"{_shown(self.path)}:{self.line}"

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.code.splitlines() if line.strip()), "")

    def describe(self) -> str:
        return f"{self.where} (block starting {self.first_line!r})"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def parse(path: Path) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown file with their markers, and the problems found with markers."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    marker: tuple[str, str, int] | None = None
    setup: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if _SETUP.match(line):
            index += 1
            while index < len(lines) and lines[index].strip() != "-->":
                setup.append(lines[index])
                index += 1
            index += 1
            continue
        found = _MARKER.match(line)
        if found:
            if marker is not None:
                problems.append(f"{_shown(path)}:{marker[2]}: snippet marker not followed by a code block")
            marker = (found["kind"], (found["reason"] or "").strip(), index + 1)
            index += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            if line.strip() and (marker is not None or setup):
                where = marker[2] if marker is not None else index + 1
                problems.append(f"{_shown(path)}:{where}: snippet marker not followed by a code block")
                marker, setup = None, []
            index += 1
            continue
        opening, indent, start = fence["fence"], len(fence["indent"]), index + 1
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(opening):
            body.append(lines[index][indent:] if lines[index][:indent].strip() == "" else lines[index])
            index += 1
        kind, reason = (marker[0], marker[1]) if marker else (None, "")
        code = textwrap.dedent("\n".join(body)) + "\n"
        blocks.append(Block(path, start, fence["lang"].lower(), code, kind, reason, textwrap.dedent("\n".join(setup))))
        marker, setup = None, []
        index += 1
    if marker is not None:
        problems.append(f"{_shown(path)}:{marker[2]}: snippet marker not followed by a code block")
    return blocks, problems


def all_blocks() -> list[Block]:
    return [block for path in DOCS for block in parse(path)[0]]


BLOCKS = all_blocks()
PYTHON_BLOCKS = [b for b in BLOCKS if b.lang in PYTHON]
SHELL_BLOCKS = [b for b in BLOCKS if b.lang in SHELL and b.marker in ("run", "skip")]


def snippet_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "VICTOR_OTEL_")) and k not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")
    }
    env["OTEL_TRACES_EXPORTER"] = "none"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _fail(block: Block, result: subprocess.CompletedProcess[str]) -> None:
    output = (result.stdout + result.stderr).strip().splitlines()
    pytest.fail(
        f"{block.describe()} failed (exit status {result.returncode}):\n" + "\n".join(output[-30:]),
        pytrace=False,
    )


def _run(block: Block, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, env=snippet_env(), capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.describe()} did not finish within {TIMEOUT} s (a server? mark it "
                    "<!-- snippet: skip (why) -->)", pytrace=False)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.where for b in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    if block.marker == "skip":
        pytest.skip(f"{block.describe()}: {block.reason}")
    if _SYSTEM_PATH.search(block.code):
        pytest.fail(f"{block.describe()} names a system path: mark it <!-- snippet: skip (why) --> or use a "
                    "relative path (snippets run in a temporary directory)", pytrace=False)
    code = f"{block.setup}\n{block.code}" if block.setup else block.code
    if block.marker == "pytest":
        (tmp_path / "test_snippet.py").write_text(code)
        result = _run(block, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_snippet.py"],
                      tmp_path)
        if result.returncode != 0 or " passed" not in result.stdout:
            _fail(block, result)
        return
    (tmp_path / "snippet.py").write_text(code)
    result = _run(block, [sys.executable, "snippet.py"], tmp_path)
    if result.returncode != 0:
        _fail(block, result)


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.where for b in SHELL_BLOCKS])
def test_shell_block_runs(block: Block, tmp_path: Path) -> None:
    if block.marker == "skip":
        pytest.skip(f"{block.describe()}: {block.reason}")
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "''", block.code)
    commands = {m.group(1) for m in re.finditer(r"(?:^|\||&&|;)\s*(?:\w+=\S*\s+)*([\w.-]+)", unquoted, re.MULTILINE)}
    missing = sorted(
        c for c in commands if not c.startswith("-") and shutil.which(c, path=snippet_env()["PATH"]) is None
    )
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{block.describe()} needs {', '.join(missing)} (CI installs every tool)", pytrace=False)
        pytest.skip(f"{block.describe()} needs {', '.join(missing)}, not installed here")
    result = _run(block, ["bash", "-euo", "pipefail", "-c", block.code], tmp_path)
    if result.returncode != 0:
        _fail(block, result)


def test_snippet_markers_are_few_and_explained() -> None:
    problems = [problem for path in DOCS for problem in parse(path)[1]]
    for block in BLOCKS:
        if block.marker not in (None, "skip", "pytest", "run"):
            problems.append(f"{block.describe()}: unknown snippet marker {block.marker!r} (skip | pytest | run)")
        if block.marker == "skip" and not block.reason:
            problems.append(f"{block.describe()}: a skip needs its reason: <!-- snippet: skip (why) -->")
        if block.marker == "pytest" and block.lang not in PYTHON:
            problems.append(f"{block.describe()}: 'pytest' marks a python block")
        if block.setup and block.lang not in PYTHON:
            problems.append(f"{block.describe()}: a setup prelude goes before a python block")
        if block.marker == "run" and block.lang not in SHELL:
            problems.append(f"{block.describe()}: 'run' marks a bash block (python blocks always run)")
    assert not problems, "\n".join(problems)
    skipped = [f"{b.describe()}: {b.reason}" for b in BLOCKS if b.marker == "skip"]
    assert len(skipped) <= MAX_SKIPPED, (
        f"{len(skipped)} code blocks opt out of running (at most {MAX_SKIPPED}); make some runnable:\n"
        + "\n".join(skipped)
    )
    assert PYTHON_BLOCKS, "no python block found: is the parser broken?"


def test_the_parser_reports_where_a_block_starts(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# t\n\n<!-- snippet: skip (starts a server) -->\n```python\nimport uvicorn\n```\n\n"
                    "- a list\n\n  ```bash\n  victor-otel metrics\n  ```\n\n"
                    "<!-- snippet: setup\napp = object()\n-->\n```python\nprint(app)\n```\n")
    blocks, problems = parse(page)
    assert problems == []
    assert [(b.line, b.lang, b.marker, b.reason, b.code, b.setup) for b in blocks] == [
        (4, "python", "skip", "starts a server", "import uvicorn\n", ""),
        (10, "bash", None, "", "victor-otel metrics\n", ""),
        (17, "python", None, "", "print(app)\n", "app = object()"),
    ]
    assert blocks[0].describe() == "page.md:4 (block starting 'import uvicorn')"


# -- the configuration reference ----------------------------------------------------------------------

CONFIGURATION = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- generated from victor_otel.config.OPTIONS by tests/test_docs.py: do not edit by hand -->"
END = "<!-- end of generated reference -->"


def _default(option: config.Option) -> str:
    default = option.default
    if isinstance(default, tuple):
        default = ",".join(default)
    return "unset" if default in (None, {}) else f"`{default}`"


def configuration_reference() -> str:
    """An index, then one entry per setting, from the declaration: meaning, variables, default, ``check`` flag."""
    parts = ["## Every setting", "", "| setting | environment (first wins) | default |", "|---|---|---|"]
    for option in config.OPTIONS:
        variables = ", ".join(f"`{var}`" for var in option.env)
        parts.append(f"| [`{option.name}`](#{option.name}) | {variables} | {_default(option)} |")
    parts.append("")
    for option in config.OPTIONS:
        variables = ", then ".join(f"`{var}`" for var in option.env)
        parts += [
            f"### `{option.name}`",
            "",
            option.doc,
            "",
            f"- argument: `victor_otel.init({option.name}=...)`",
            f"- environment: {variables}",
            f"- default: {_default(option)}",
            f"- inspect: `victor-otel check {cli.flag(option)} VALUE`",
            "",
        ]
    return "\n".join(parts) + "\n"


def test_configuration_reference_is_generated_from_the_declaration() -> None:
    text = CONFIGURATION.read_text()
    assert BEGIN in text and END in text, f"{CONFIGURATION.name} lost its generated-section markers"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    expected = f"{head}{BEGIN}\n{configuration_reference()}{END}{tail}"
    if text != expected and os.environ.get("UPDATE_DOCS"):
        CONFIGURATION.write_text(expected)
        return
    assert text == expected, (
        "docs/configuration.md is out of date with victor_otel.config.OPTIONS; regenerate it with "
        "UPDATE_DOCS=1 python -m pytest tests/test_docs.py"
    )


# -- links and the architecture page --------------------------------------------------------------------

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    found: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        found.add(slug)
    return found


def test_relative_links_resolve() -> None:
    broken = []
    for path in DOCS:
        for target in _LINK.findall(path.read_text()):
            if urllib.parse.urlsplit(target).scheme or target.startswith("mailto:"):
                continue
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            if not destination.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_architecture_names_every_module_and_no_other() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    modules = {p.name for p in (ROOT / "victor_otel").glob("*.py")}
    described = set(re.findall(r"^\| `(\w+\.py)` \|", text, re.MULTILINE))
    assert modules - described == set(), (
        f"docs/architecture.md does not describe {sorted(modules - described)}: add a row to its module table"
    )
    assert described - modules == set(), f"docs/architecture.md describes missing modules {sorted(described - modules)}"
    for package in sorted(d for d in (ROOT / "victor_otel").iterdir() if (d / "__init__.py").exists()):
        row = re.search(rf"^\| `{package.name}/` \|(.*)$", text, re.MULTILINE)
        assert row, f"docs/architecture.md has no row for the package {package.name}/"
        names = {m.name for m in package.glob("*.py")} - {"__init__.py"}
        missing = sorted(name for name in names if f"`{name}`" not in row[1])
        assert not missing, f"docs/architecture.md's row of {package.name}/ does not name {missing}"


def test_metric_names_in_the_docs_are_in_the_contract() -> None:
    from victor_otel import instruments

    known = set(instruments.by_prometheus_name()) | {spec.prometheus_name for spec in instruments.CONTRACT}
    unknown = []
    for path in DOCS:
        pattern = r"(?<![:\w])victor_(?:coordinator|analytics|health|llm)_\w+|\bvictor_otel_\w+_total\b"
        for name in set(re.findall(pattern, path.read_text())):
            if name not in known:
                unknown.append(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown, (
        "metric names that victor_otel does not produce (recording rules are written rule:name:range):\n"
        + "\n".join(sorted(unknown))
    )


def test_troubleshooting_leads_from_every_alert_to_its_runbook_section() -> None:
    yaml = pytest.importorskip("yaml")
    rules = yaml.safe_load((ROOT / "alerts" / "prometheus_alerts.yml").read_text())
    alerts = [rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    missing = [a for a in alerts if f"[{a}](../alerts/runbook.md#{a.lower()})" not in text]
    assert not missing, f"docs/troubleshooting.md has no row linking these alerts to the runbook: {missing}"
