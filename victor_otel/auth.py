"""One credentials check for every protected route (``/metrics``, ``/health/detailed``, the debug pages).

>>> check("Bearer s3cret", token="s3cret"), check("Bearer guess", token="s3cret"), check(None, token=None)
(True, False, True)
>>> import base64
>>> check("Basic " + base64.b64encode(b"prom:pw").decode(), token=None, basic="prom:pw")
True
"""

from __future__ import annotations

import base64
import binascii
import hmac


def check(authorization: str | None, *, token: str | None, basic: str | None = None) -> bool:
    """Whether an ``Authorization`` header opens a route protected by ``token`` (``Bearer``) and / or
    ``basic`` (``user:password``): always when neither is set. Comparisons take constant time."""
    if not token and not basic:
        return True
    scheme, _, given = (authorization or "").strip().partition(" ")
    given = given.strip()
    if token and scheme.lower() == "bearer":
        return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())
    if basic and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(given.encode("ascii"), validate=True)
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(decoded, basic.encode())
    return False


def challenge(realm: str, *, token: str | None, basic: str | None = None) -> str:
    """The ``WWW-Authenticate`` value of a 401 from a route protected by ``token`` and / or ``basic``."""
    schemes = []
    if token:
        schemes.append(f'Bearer realm="{realm}"')
    if basic:
        schemes.append(f'Basic realm="{realm}", charset="UTF-8"')
    return ", ".join(schemes)


__all__ = ["challenge", "check"]
