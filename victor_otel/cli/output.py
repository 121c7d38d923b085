"""How the commands write to a terminal: :class:`StatusLine`, one summary line rewritten in place."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import TextIO

from victor_otel.terminal import color_enabled, is_terminal, styled

CLEAR_LINE = "\r\x1b[2K"

Segment = tuple[str, str | None]  # (text, style)


def _fit(segments: Sequence[Segment], width: int) -> list[Segment]:
    """Cut the segments to ``width`` visible characters, ending in ``…`` when something was cut off
    (a wrapped line could not be rewritten in place)."""
    if sum(len(text) for text, _ in segments) <= width:
        return list(segments)
    fitted: list[Segment] = []
    room = width - 1
    for text, style in segments:
        if room <= 0:
            break
        fitted.append((text[:room], style))
        room -= len(text[:room])
    fitted.append(("…", None))
    return fitted


class StatusLine:
    """One summary line: rewritten in place on a terminal, appended as plain lines otherwise."""

    def __init__(self, stream: TextIO, *, live: bool | None = None, color: bool | None = None) -> None:
        self.stream = stream
        self.live = is_terminal(stream) if live is None else live
        self.color = color_enabled(stream) if color is None else color
        self._pending = False

    def show(self, segments: Sequence[Segment]) -> None:
        if self.live:
            width = max(shutil.get_terminal_size().columns - 1, 10)
            text = "".join(styled(t, s, self.color) for t, s in _fit(segments, width))
            self.stream.write(CLEAR_LINE + text)
            self._pending = True
        else:
            self.stream.write("".join(t for t, _ in segments) + "\n")
        self.stream.flush()

    def done(self) -> None:
        """End the live line so that what follows starts on a line of its own."""
        if self._pending:
            self.stream.write("\n")
            self.stream.flush()
            self._pending = False

