"""redaction.py: the shapes secrets hide in, as values and as they reach a JSON log line."""

from __future__ import annotations

import enum
import io
import json
from collections import namedtuple
from typing import Any, NamedTuple

import pytest

import victor_otel
from victor_otel.redaction import REDACTED, Redactor, names_a_secret, redact

SECRET = "hunter2-do-not-leak"
KEY = "sk-" + "Z9y8X7w6V5u4T3s2R1q0P9o8"


class Creds(NamedTuple):
    user: str
    password: str


class Color(enum.Enum):
    LEAK = f"token={SECRET}"


class Mode(str, enum.Enum):
    KEYED = f"api_key={SECRET}"


SHAPES: list[tuple[str, Any]] = [
    ("set", {f"password={SECRET}", "plain"}),
    ("frozenset", frozenset({KEY})),
    ("namedtuple", Creds("ann", SECRET)),
    ("collections.namedtuple", namedtuple("Row", "id secret")(7, SECRET)),
    ("header pairs", [("Authorization", f"Basic {SECRET}"), ("Cookie", f"session={SECRET}"),
                      ("X-Api-Key", SECRET), ("Accept", "json")]),
    ("ASGI byte pairs", [(b"authorization", f"Basic {SECRET}".encode()), (b"accept", b"json")]),
    ("enum", Color.LEAK),
    ("str enum", Mode.KEYED),
    ("url with @ in the password", f"postgres://victor:p@ss{SECRET}@db.internal:5432/app"),
    ("nested", {"calls": [{"headers": [("Set-Cookie", SECRET)]}]}),
]


@pytest.mark.parametrize(("shape", "value"), SHAPES, ids=[s for s, _ in SHAPES])
def test_every_shape_is_redacted_as_a_value(shape: str, value: Any) -> None:
    cleaned = Redactor().value(value)
    text = json.dumps(cleaned)
    assert SECRET not in text and KEY not in text and REDACTED in text


@pytest.mark.parametrize(("shape", "value"), SHAPES, ids=[s for s, _ in SHAPES])
def test_every_shape_is_redacted_in_a_log_line(shape: str, value: Any) -> None:
    out = io.StringIO()
    victor_otel.setup_coordinator_logging(level="INFO", stream=out)
    try:
        victor_otel.get_coordinator_logger("ChatCoordinator").info("call", extra={"payload": value})
    finally:
        victor_otel.teardown_coordinator_logging()
    line = out.getvalue()
    assert json.loads(line)["message"] == "call"
    assert SECRET not in line and KEY not in line


def test_what_is_not_secret_stays_readable() -> None:
    r = Redactor()
    assert r.value(Creds("ann", SECRET)) == {"user": "ann", "password": REDACTED}  # fields by name
    assert r.value([("Accept", "json"), ("max_tokens", 512)]) == [["Accept", "json"], ["max_tokens", 512]]
    assert r.value(("retry", "3")) == ["retry", "3"]
    assert redact("https://victor:p@ss@w0rd@db/x?q=1") == "https://victor:[REDACTED]@db/x?q=1"
    assert redact("mail ann@example.com at https://example.com/@ann") == (
        "mail ann@example.com at https://example.com/@ann"
    )
    assert names_a_secret("X-Api-Key") and names_a_secret("set-cookie") and not names_a_secret("max_tokens")
