"""auth.py: the one credentials check behind /metrics, /health/detailed and the debug pages."""

from __future__ import annotations

import base64

import pytest

from victor_otel import auth


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(
    ("header", "token", "credentials", "allowed"),
    [
        (None, None, None, True),  # nothing configured: open
        ("Bearer anything", None, None, True),
        (None, "t0ken", None, False),
        ("Bearer t0ken", "t0ken", None, True),
        ("bearer   t0ken  ", "t0ken", None, True),  # scheme case and spaces as RFC 7235 allows
        ("Bearer t0ke", "t0ken", None, False),
        ("Bearer t0ken", None, "prom:pw", False),  # a token where only Basic is configured
        (basic("prom:pw"), None, "prom:pw", True),
        (basic("prom:pw:with:colons"), None, "prom:pw:with:colons", True),
        (basic("prom:guess"), None, "prom:pw", False),
        ("Basic not*base64", None, "prom:pw", False),
        (basic("prom:pw"), "t0ken", "prom:pw", True),  # either configured scheme opens
        ("Digest x", "t0ken", "prom:pw", False),
        ("Bearer \u00e9t\u00e9", "t0ken", None, False),  # non-ASCII never raises
    ],
)
def test_check(header: str | None, token: str | None, credentials: str | None, allowed: bool) -> None:
    assert auth.check(header, token=token, basic=credentials) is allowed


def test_challenge_names_every_configured_scheme() -> None:
    both = auth.challenge("metrics", token="t", basic="u:p")
    assert both == 'Bearer realm="metrics", Basic realm="metrics", charset="UTF-8"'
    assert auth.challenge("health", token="t") == 'Bearer realm="health"'
