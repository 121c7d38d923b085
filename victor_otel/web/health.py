"""The health routes for Starlette / FastAPI: one endpoint per scope, ``setup_health_endpoints(app)``."""

from __future__ import annotations

import json
import logging
from typing import Any

from victor_otel import auth, bootstrap, startup
from victor_otel.checks.model import FAIL, MEDIA_TYPE, Scope
from victor_otel.checks.runner import get_health
from victor_otel.errors import VictorOtelConfigError

_logger = logging.getLogger("victor_otel")


def _problem(status: int, title: str, detail: str) -> Any:
    from starlette.responses import Response

    body = json.dumps({"title": title, "status": status, "detail": detail})
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = auth.challenge("victor_otel health", token="set")
    return Response(body, status, media_type="application/problem+json", headers=headers)


def _authorized(authorization: str | None) -> bool | None:
    """Whether the ``Authorization`` header opens ``/health/detailed``; ``None``: cannot tell."""
    try:
        token = bootstrap.settings_in_force(strict=True).health_token
    except VictorOtelConfigError:
        return None  # fail closed: a token may be configured
    return auth.check(authorization, token=token)


def health_endpoint(scope: Scope) -> Any:
    """A Starlette endpoint for one scope: ``app.add_route("/health/ready", health_endpoint("ready"))``."""
    from starlette.requests import Request
    from starlette.responses import Response

    if scope not in ("live", "ready", "overall", "detailed"):
        raise VictorOtelConfigError(f"scope: {scope!r} is not valid; accepted: live | ready | overall | detailed")

    async def health(request: Request) -> Response:
        if scope == "detailed":
            allowed = _authorized(request.headers.get("authorization"))
            if not allowed:
                detail = (
                    "send 'Authorization: Bearer <VICTOR_OTEL_HEALTH_TOKEN>'" if allowed is False
                    else "the health settings are invalid; fix them (see victor_otel.init())"
                )
                response: Response = _problem(401, "Unauthorized", detail)
                return response
        try:
            if scope != "live":  # the seed's endpoints worked without init(): initialise as /metrics does
                startup.current_or_first_init()
            report = await get_health().evaluate(scope)
            if scope != "detailed" and _authorized(request.headers.get("authorization")) is not True:
                report = report.without_coordinator_names()  # names stay behind the token; probes get statuses
            body, status = report.to_json(), report.http_status
        except Exception as exc:  # a probe must get an answer, never a 500
            _logger.exception("victor_otel: health evaluation failed")
            output = f"health evaluation failed: {type(exc).__name__}: {exc}"
            body = json.dumps({"status": FAIL, "output": output}).encode()
            status = 503
        return Response(body, status, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-store"})

    return health


def setup_health_endpoints(app: Any, *, prefix: str = "/health") -> Any:
    """Add ``/health``, ``/health/ready``, ``/health/live``, ``/health/detailed`` to a Starlette or
    FastAPI app; returns ``app``. Calling it again adds nothing.

    >>> from starlette.applications import Starlette
    >>> app = setup_health_endpoints(Starlette())
    >>> [r.path for r in app.routes]
    ['/health', '/health/ready', '/health/live', '/health/detailed']
    """
    if getattr(app.state, "victor_otel_health", False):
        return app
    app.state.victor_otel_health = True
    scopes: tuple[tuple[str, Scope], ...] = (
        ("", "overall"), ("/ready", "ready"), ("/live", "live"), ("/detailed", "detailed"),
    )
    for suffix, scope in scopes:
        app.add_route(prefix + suffix, health_endpoint(scope), methods=["GET", "HEAD"], include_in_schema=False)
    return app
