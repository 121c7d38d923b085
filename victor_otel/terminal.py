"""Colour on a terminal: the one rule for when (:func:`color_enabled`) and how (:func:`styled`).

The command line and the text log formatter both ask :func:`color_enabled`, so that ``NO_COLOR`` and
``TERM=dumb`` mean the same everywhere.

>>> import io
>>> color_enabled(io.StringIO())  # not a terminal: a file, a pipe, a test's buffer
False
>>> styled("ok", "green", True)
'\\x1b[32mok\\x1b[0m'
>>> styled("ok", "green", False)
'ok'
"""

from __future__ import annotations

import os

#: ANSI SGR codes of the styles :func:`styled` knows.
STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def is_terminal(stream: object) -> bool:
    """Whether ``stream`` is a terminal (a closed or detached stream is not)."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return bool(isatty())
    except (ValueError, OSError):
        return False


def color_enabled(stream: object) -> bool:
    """Colour only for a person: a terminal, ``NO_COLOR`` unset or empty (https://no-color.org), not ``TERM=dumb``."""
    return is_terminal(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def styled(text: str, style: str | None, color: bool) -> str:
    """``text`` in ``style`` (a key of :data:`STYLES`) when ``color``, else as it is."""
    if not color or not style:
        return text
    return f"\x1b[{STYLES[style]}m{text}\x1b[0m"
