"""``/metrics`` as a Starlette route: ``app.add_route("/metrics", metrics_endpoint())``."""

from __future__ import annotations

from typing import Any

from victor_otel import exposition, startup


def metrics_endpoint() -> Any:
    """A Starlette endpoint serving ``/metrics``: ``app.add_route("/metrics", metrics_endpoint())``.

    With ``metrics_token`` / ``metrics_basic_auth`` set, a request without those credentials gets 401.
    """
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response

    def serve(accept: str | None, authorization: str | None) -> tuple[int, bytes, str, dict[str, str]]:
        telemetry = startup.current_or_init()
        settings = telemetry.settings
        if not exposition.authorized(authorization, settings):
            headers = {"WWW-Authenticate": exposition.challenge(settings)}
            return 401, exposition.UNAUTHORIZED, "text/plain; charset=utf-8", headers
        body, content_type = exposition.render(accept, telemetry)
        return 200, body, content_type, {}

    async def metrics(request: Request) -> Response:
        # Rendering is CPU work of a few milliseconds: keep it off the event loop.
        status, body, content_type, headers = await run_in_threadpool(
            serve, request.headers.get("accept"), request.headers.get("authorization")
        )
        return Response(body, status_code=status, media_type=content_type,
                        headers={"Cache-Control": "no-store", **headers})

    return metrics
