"""Every ASGI piece: ``instrument_app(app)`` (server spans, HTTP metrics and request IDs at the edge, drain
on SIGTERM) and the routes it adds: ``/metrics`` (:mod:`.metrics`), ``/health*`` (:mod:`.health`) and
``/debug``. The layers around the app: :mod:`.edge` (outermost), :mod:`.requestid`, :mod:`.httpmetrics`."""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import NoOpMeterProvider

from victor_otel import bootstrap, debugpages
from victor_otel.errors import VictorOtelConfigError, VictorOtelInitError
from victor_otel.web import httpmetrics, lifespan
from victor_otel.web.edge import EdgeMiddleware
from victor_otel.web.health import health_endpoint, setup_health_endpoints
from victor_otel.web.metrics import metrics_endpoint
from victor_otel.web.requestid import RequestIdMiddleware

#: Paths (and everything under them) that get no HTTP server metrics and no server span: probes and
#: scrapes would drown both.
EXCLUDED_PATHS = ("/metrics", "/health", "/debug")
#: The same for the OpenTelemetry instrumentation, which searches the URL for each (a regular expression):
#: ``/health`` covers ``/health/ready`` and the others.
EXCLUDED_URLS = ",".join(EXCLUDED_PATHS)
#: The ASGI instrumentation's per-message ``http send`` / ``http receive`` spans: three spans a request
#: that say little the server span does not, and cost most of its per-request overhead.
EXCLUDED_SPANS: list[Any] = ["receive", "send"]


def instrument_app(app: Any, *, metrics_path: str = "/metrics") -> Any:
    """Add ``/metrics`` and the health endpoints to a Starlette or FastAPI app and trace its requests;
    returns ``app``.

    >>> from starlette.applications import Starlette
    >>> import victor_otel
    >>> app = victor_otel.instrument_app(Starlette())
    >>> sorted(r.path for r in app.routes)
    ['/debug', '/debug/{page:path}', '/health', '/health/detailed', '/health/live', '/health/ready', '/metrics']
    """
    _check_app(app)
    if getattr(app.state, "victor_otel_instrumented", False):
        return app  # calling it twice must not add routes or middleware twice
    app.state.victor_otel_instrumented = True
    app.add_route(metrics_path, metrics_endpoint(), methods=["GET", "HEAD"], include_in_schema=False)
    router = getattr(app, "router", None)
    if router is not None and hasattr(router, "lifespan_context"):
        # SIGTERM: readiness 503 first, drain_seconds later the server stops; then spans and logs are flushed.
        router.lifespan_context = lifespan.lifespan(router.lifespan_context)
    setup_health_endpoints(app)
    _add_debug_pages(app)
    telemetry = bootstrap.current()
    if telemetry is not None:
        httpmetrics.attach(telemetry)
    # Spans unless init() ran with tracing off (before init(), the global provider decides later, as before).
    spans = telemetry is None or telemetry.tracer_provider is not None
    _turn_off_fastapi_telemetry(app)
    if spans:
        tracer_provider = telemetry.tracer_provider if telemetry is not None else None
        # The server span only: the HTTP metrics are the edge's (pre-aggregated), not SDK instruments.
        no_metrics = NoOpMeterProvider()
        # Added before the server-span middleware, so it runs inside it: the request ID lands on that span.
        app.add_middleware(RequestIdMiddleware)
        if _is_fastapi(app):
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            FastAPIInstrumentor.instrument_app(
                app, tracer_provider=tracer_provider, meter_provider=no_metrics, excluded_urls=EXCLUDED_URLS,
                exclude_spans=EXCLUDED_SPANS,
            )
        else:
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

            app.add_middleware(
                OpenTelemetryMiddleware,
                tracer_provider=tracer_provider,
                meter_provider=no_metrics,
                excluded_urls=EXCLUDED_URLS,
                exclude_spans=EXCLUDED_SPANS,
            )
    _add_edge(app, spans=spans, excluded=(*EXCLUDED_PATHS, metrics_path))
    return app


#: What to install when Starlette is missing (it is a dependency; FastAPI comes with the demo extra).
WEB_EXTRA = "pip install 'victor-otel[demo]' (FastAPI and uvicorn) or pip install starlette"


def _check_app(app: Any) -> None:
    """One clear error for the everyday mistakes: Starlette missing, or an app that is not an ASGI one of
    Starlette or FastAPI."""
    try:
        import starlette  # noqa: F401
    except ImportError:
        raise VictorOtelInitError(f"instrument_app() needs Starlette or FastAPI, which is not installed: {WEB_EXTRA}") \
            from None
    if not (hasattr(app, "add_route") and hasattr(app, "add_middleware") and hasattr(app, "state")):
        raise VictorOtelConfigError(
            f"instrument_app(): {type(app).__module__}.{type(app).__qualname__} is not a Starlette or FastAPI "
            "application; pass one (for another framework, route victor_otel.metrics_endpoint() yourself)"
        )


def _add_debug_pages(app: Any) -> None:
    """``/debug`` and below (victor_otel.debugpages); they answer 404 while ``debug_pages`` is off."""
    from starlette.requests import Request
    from starlette.responses import Response

    async def debug(request: Request) -> Response:
        rest = request.path_params.get("page", "")  # not url.path: the app may be mounted under a prefix
        page = debugpages.respond(
            request.method, f"{debugpages.PREFIX}/{rest}", request.url.query, request.headers.get("authorization")
        )
        return Response(page.body, page.status, headers=page.headers, media_type=page.content_type)

    prefix = debugpages.PREFIX
    for path in (prefix, prefix + "/{page:path}"):
        app.add_route(path, debug, methods=["GET", "HEAD"], include_in_schema=False)


def _add_edge(app: Any, *, spans: bool, excluded: tuple[str, ...]) -> None:
    """Wrap the app's middleware stack, once it is built, in :class:`EdgeMiddleware` (outermost: it sees
    the 500 that Starlette's ``ServerErrorMiddleware`` makes of an unhandled error). Called after every
    other change to ``build_middleware_stack`` (``FastAPIInstrumentor`` patches it)."""
    build = app.build_middleware_stack

    def build_with_edge() -> Any:
        return EdgeMiddleware(build(), spans=spans, excluded=excluded)

    app.build_middleware_stack = build_with_edge


def _turn_off_fastapi_telemetry(app: Any) -> None:
    """FastAPI's own OpenTelemetry (``FastAPI(telemetry=...)``, FastAPI 0.16x) would record the same
    requests again: a second server span and SDK-instrument HTTP metrics once init() installed global
    providers. ``app._telemetry`` is its configuration dict (checked on FastAPI 0.165); older releases
    have none and nothing is done."""
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict):
        config.update(tracing=False, metrics=False, logs=False)


def _is_fastapi(app: Any) -> bool:
    try:
        from fastapi import FastAPI
    except ImportError:
        return False
    return isinstance(app, FastAPI)


__all__ = ["EXCLUDED_PATHS", "EXCLUDED_SPANS", "EXCLUDED_URLS", "RequestIdMiddleware", "health_endpoint",
           "instrument_app", "metrics_endpoint", "setup_health_endpoints"]
