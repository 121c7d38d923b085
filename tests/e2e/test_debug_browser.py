"""The /debug pages in a real headless Chromium (Debian's ``chromium``, driven by Playwright pointed at
that executable: Playwright never downloads a browser here). Each page loads without a console error or
a failed request, the waterfall of a known trace shows its spans in order, the filter form narrows the
list, and a screenshot of each page is kept under :data:`ARTIFACTS` (the path is printed).

``UPDATE_DOCS=1`` also rewrites ``docs/debug-trace.png``, the screenshot docs/debug-pages.md shows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

import victor_otel
from tests.conftest import require_tool
from tests.servers import serve
from tests.test_debugpages import make_calls, start

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("VICTOR_OTEL_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "victor-otel-artifacts")
DOCS_SCREENSHOT = ROOT / "docs" / "debug-trace.png"


def chromium() -> str:
    """Debian's chromium binary (the /usr/bin/chromium wrapper script sets flags Playwright does not need)."""
    wrapper = require_tool("chromium")
    binary = Path("/usr/lib/chromium/chromium")
    return str(binary) if binary.exists() else wrapper


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is required in CI (the test extra installs it)")
        pytest.skip("playwright is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def site() -> Iterator[str]:
    start()
    make_calls()
    with serve(victor_otel.instrument_app(Starlette())) as base:
        yield base


class Watched:
    """A page whose console errors, uncaught exceptions and failed requests are collected."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1100, "height": 620})
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type in ("error", "warning")
                     and self.problems.append(f"console {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))

    def open(self, url: str) -> Any:
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.status == 200, url
        return response

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"debug-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path


def test_coordinators_page_in_chromium(browser: Any, site: str) -> None:
    watched = Watched(browser)
    watched.open(site + "/debug")
    cells = watched.page.locator("#coordinators tbody tr td").all_inner_texts()
    assert cells[:3] == ["ChatCoordinator", "6", "2"]
    watched.shot("coordinators")
    assert watched.problems == []


def test_filter_narrows_the_trace_list_in_chromium(browser: Any, site: str) -> None:
    watched = Watched(browser)
    watched.open(site + "/debug/traces")
    page = watched.page
    assert page.locator("#traces tr.trace").count() == 2
    watched.shot("traces")
    page.select_option("select[name=outcome]", "error")
    with page.expect_navigation():
        page.click("#filters button[type=submit]")
    assert "outcome=error" in page.url
    assert page.locator("#traces tr.trace").count() == 1
    assert page.locator("select[name=outcome]").input_value() == "error"  # the form shows the filter in force
    assert watched.problems == []


def test_waterfall_of_a_known_trace_in_chromium(browser: Any, site: str) -> None:
    watched = Watched(browser)
    watched.open(site + "/debug/traces?outcome=error")
    page = watched.page
    with page.expect_navigation():
        page.click("#traces tr.trace a")
    names = page.locator("#waterfall .row").evaluate_all("rows => rows.map(r => r.dataset.spanName)")
    assert names == ["ChatCoordinator.plan", "ChatCoordinator.retrieve", "ChatCoordinator.answer"]
    # On the time axis: each bar starts no earlier than the one above it, inside the track.
    lefts = page.locator("#waterfall .bar").evaluate_all("bars => bars.map(b => b.getBoundingClientRect().left)")
    assert lefts == sorted(lefts)
    assert page.locator("#logs tr.log").count() == 1
    assert page.locator("script").count() == 0
    page.locator("#waterfall details").last.evaluate("d => d.open = true")  # the failed span's details
    assert "ValueError" in page.locator("#waterfall details").last.inner_text()
    path = watched.shot("trace")
    assert path.stat().st_size > 0
    if os.environ.get("UPDATE_DOCS"):  # docs/debug-pages.md's picture: the successful trace, its first span opened
        watched.open(site + "/debug/traces?outcome=ok")
        with page.expect_navigation():
            page.click("#traces tr.trace a")
        page.locator("#waterfall details").first.evaluate("d => d.open = true")
        page.set_viewport_size({"width": 1000, "height": 470})
        page.screenshot(path=str(DOCS_SCREENSHOT))
    assert watched.problems == []
    assert shutil.which("chromium") is not None
