from __future__ import annotations

import io

import pytest

from victor_otel import cli
from victor_otel.terminal import STYLES, color_enabled, is_terminal, styled


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def person(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A terminal a person reads: NO_COLOR unset, a TERM that takes colour."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    return monkeypatch


def test_colour_only_on_a_terminal(person: pytest.MonkeyPatch) -> None:
    assert color_enabled(_Terminal()) is True
    assert color_enabled(io.StringIO()) is False
    assert color_enabled(object()) is False  # no isatty at all


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("NO_COLOR", "1", False),
    ("NO_COLOR", "", True),  # https://no-color.org: set and not empty
    ("TERM", "dumb", False),
])
def test_no_color_and_a_dumb_terminal(person: pytest.MonkeyPatch, name: str, value: str, expected: bool) -> None:
    person.setenv(name, value)
    assert color_enabled(_Terminal()) is expected


class _Closed(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def test_a_closed_stream_is_no_terminal(person: pytest.MonkeyPatch) -> None:
    closed = _Closed()
    assert is_terminal(closed) is False
    assert color_enabled(closed) is False


def test_styled_wraps_in_the_style_only_when_coloured() -> None:
    assert styled("x", "red", True) == f"\x1b[{STYLES['red']}mx\x1b[0m"
    assert styled("x", "red", False) == "x"
    assert styled("x", None, True) == "x"


def test_the_command_line_uses_the_one_rule() -> None:
    from victor_otel.cli import check, metrics, output

    for module in (cli, check, metrics, output):
        assert module.color_enabled is color_enabled, module.__name__
