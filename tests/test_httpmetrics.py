"""web/httpmetrics.py and web/edge.py: the HTTP server series, pre-aggregated at the edge, equal to what the
OpenTelemetry ASGI / FastAPI instrumentation records (names, units, buckets, bounded attributes, opt-in modes)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import victor_otel
from tests.conftest import scrape
from tests.servers import serve
from victor_otel import bootstrap, context
from victor_otel import instruments as contract
from victor_otel.web import httpmetrics
from victor_otel.web.edge import EdgeMiddleware

DURATION = "http_server_duration_milliseconds"
REQUEST_DURATION = "http_server_request_duration_seconds"
ACTIVE = "http_server_active_requests"


@pytest.fixture
def opt_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set OTEL_SEMCONV_STABILITY_OPT_IN for this test (the series are read again at the next reset)."""

    def set_mode(value: str) -> None:
        monkeypatch.setenv(httpmetrics.STABILITY_OPT_IN, value)
        httpmetrics.get_http_metrics().reset()

    yield set_mode
    monkeypatch.delenv(httpmetrics.STABILITY_OPT_IN, raising=False)
    httpmetrics.get_http_metrics().reset()


def fastapi_app() -> Any:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"item": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unhandled")

    @app.get("/busy")
    async def busy() -> dict[str, float]:
        return {"active": active_now()}

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise HTTPException(503)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def active_now() -> float:
    metric = next(m for m in httpmetrics.get_http_metrics().produce() if m.name == "http.server.active_requests")
    return sum(p.value for p in metric.data.data_points)


def samples_named(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (sample, labels), v in scrape().items() if sample == name}


# -- the contract is the instrumentation's ------------------------------------------------------------


def test_names_units_and_buckets_are_the_instrumentations() -> None:
    from opentelemetry.instrumentation._semconv import HTTP_DURATION_HISTOGRAM_BUCKETS_NEW
    from opentelemetry.sdk.metrics._internal.aggregation import (
        _DEFAULT_EXPLICIT_BUCKET_HISTOGRAM_AGGREGATION_BOUNDARIES as SDK_DEFAULT,
    )
    from opentelemetry.semconv.metrics import MetricInstruments

    assert contract.HTTP_SERVER_DURATION.otel_name == MetricInstruments.HTTP_SERVER_DURATION
    assert contract.HTTP_SERVER_REQUEST_DURATION.otel_name == "http.server.request.duration"
    assert contract.HTTP_SERVER_ACTIVE_REQUESTS.otel_name == MetricInstruments.HTTP_SERVER_ACTIVE_REQUESTS
    assert tuple(SDK_DEFAULT) == contract.HTTP_DURATION_BUCKETS_MS
    assert tuple(HTTP_DURATION_HISTOGRAM_BUCKETS_NEW) == contract.HTTP_DURATION_BUCKETS_S
    assert [s.prometheus_name for s in contract.HTTP_CONTRACT] == [DURATION, REQUEST_DURATION, ACTIVE]


def test_attributes_are_the_instrumentations_bounded_ones() -> None:
    from opentelemetry.instrumentation import _semconv

    bounded = bootstrap.BOUNDED_HTTP_ATTRIBUTES
    old = {a for a in _semconv._server_duration_attrs_old if a in bounded} | {"http.target"}
    assert set(contract.HTTP_SERVER_DURATION.labels) == old
    assert set(contract.HTTP_SERVER_REQUEST_DURATION.labels) == set(_semconv._server_duration_attrs_new)
    active = {a for a in _semconv._server_active_requests_count_attrs_old if a in bounded}
    assert set(contract.HTTP_SERVER_ACTIVE_REQUESTS.labels) == active | set(
        _semconv._server_active_requests_count_attrs_new)


def test_the_series_equal_what_the_fastapi_instrumentation_records() -> None:
    """The same requests through FastAPIInstrumentor (SDK instruments, instrument_app's former View) and
    through instrument_app: the same families, label sets and counts."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import View

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[
        View(instrument_name="http.server.*", attribute_keys=set(bootstrap.BOUNDED_HTTP_ATTRIBUTES))])
    theirs = fastapi_app()
    FastAPIInstrumentor.instrument_app(theirs, meter_provider=provider, tracer_provider=trace.NoOpTracerProvider())
    victor_otel.init(service_name="t", traces_exporter="none")
    ours = victor_otel.instrument_app(fastapi_app())

    def drive(app: Any) -> None:
        with TestClient(app, raise_server_exceptions=False) as client:
            for path in ("/items/1", "/items/2", "/nowhere", "/unavailable", "/boom", "/healthz"):
                client.get(path)
            client.post("/items/3")
            client.request("PURGE", "/items/4")

    def series(metrics: Any) -> dict[tuple[str, frozenset[Any]], int]:
        out = {}
        for m in metrics:
            if m.name in ("http.server.duration", "http.server.active_requests"):
                for p in m.data.data_points:
                    out[(m.name, frozenset(p.attributes.items()))] = getattr(p, "count", None) or int(p.value)
        return out

    drive(theirs)
    drive(ours)
    data = reader.get_metrics_data()
    expected = series(m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
    got = series(httpmetrics.get_http_metrics().produce())
    assert got == expected
    provider.shutdown()


# -- what /metrics shows ------------------------------------------------------------------------------


def test_default_series_names_labels_and_buckets() -> None:
    victor_otel.init(service_name="t", traces_exporter="none")
    app = victor_otel.instrument_app(fastapi_app())
    with TestClient(app) as client:
        for i in range(50):  # route templates: one series however many items
            client.get(f"/items/{i}")
        client.get("/nowhere/at/all")
    durations = samples_named(f"{DURATION}_count")
    route = (("http_flavor", "1.1"), ("http_method", "GET"), ("http_scheme", "http"), ("http_status_code", "200"),
             ("http_target", "/items/{item_id}"))
    unmatched = (("http_flavor", "1.1"), ("http_method", "GET"), ("http_scheme", "http"),
                 ("http_status_code", "404"), ("http_target", ""))
    assert durations == {route: 50.0, unmatched: 1.0}
    buckets = {dict(labels)["le"] for labels in samples_named(f"{DURATION}_bucket")}
    assert buckets == {repr(float(b)) for b in contract.HTTP_DURATION_BUCKETS_MS} | {"+Inf"}
    assert samples_named(f"{DURATION}_sum")[route] == int(samples_named(f"{DURATION}_sum")[route])  # whole ms
    assert samples_named(ACTIVE) == {(("http_flavor", "1.1"), ("http_method", "GET"), ("http_scheme", "http")): 0.0}
    assert not samples_named(f"{REQUEST_DURATION}_count")


@pytest.mark.parametrize("mode", ["http", "http/dup", "gen_ai_latest_experimental, http"])
def test_stable_conventions_on_opt_in(opt_in: Any, mode: str) -> None:
    opt_in(mode)
    victor_otel.init(service_name="t", traces_exporter="none")
    app = victor_otel.instrument_app(fastapi_app())
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/items/1")
        client.get("/boom")
    stable = samples_named(f"{REQUEST_DURATION}_count")
    base = (("http_request_method", "GET"), ("network_protocol_version", "1.1"), ("url_scheme", "http"))
    assert stable == {
        (("error_type", ""), ("http_request_method", "GET"), ("http_response_status_code", "200"),
         ("http_route", "/items/{item_id}"), *base[1:]): 1.0,
        (("error_type", "500"), ("http_request_method", "GET"), ("http_response_status_code", "500"),
         ("http_route", "/boom"), *base[1:]): 1.0,
    }
    buckets = {dict(labels)["le"] for labels in samples_named(f"{REQUEST_DURATION}_bucket")}
    assert buckets == {repr(float(b)) for b in contract.HTTP_DURATION_BUCKETS_S} | {"+Inf"}
    active = set(samples_named(ACTIVE))
    if mode == "http/dup":
        assert bool(samples_named(f"{DURATION}_count"))
        assert active == {(("http_flavor", "1.1"), ("http_method", "GET"), ("http_request_method", "GET"),
                           ("http_scheme", "http"), ("url_scheme", "http"))}
    else:
        assert not samples_named(f"{DURATION}_count")
        assert active == {(("http_request_method", "GET"), ("url_scheme", "http"))}


def test_errors_are_counted_with_their_status() -> None:
    victor_otel.init(service_name="t", traces_exporter="none")
    app = victor_otel.instrument_app(fastapi_app())
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500
        assert client.get("/unavailable").status_code == 503
    statuses = {dict(labels)["http_status_code"]: dict(labels)["http_target"]
                for labels in samples_named(f"{DURATION}_count")}
    assert statuses == {"500": "/boom", "503": "/unavailable"}
    assert active_now() == 0


def test_active_requests_count_the_request_in_flight_and_go_back_to_zero() -> None:
    victor_otel.init(service_name="t", traces_exporter="none")
    app = victor_otel.instrument_app(fastapi_app())
    with serve(app) as url, httpx.Client() as client:
        assert client.get(f"{url}/busy").json() == {"active": 1.0}
        assert client.get(f"{url}/boom").status_code == 500
    assert active_now() == 0


def test_probes_and_scrapes_are_not_counted_but_paths_that_only_start_alike_are(opt_in: Any) -> None:
    victor_otel.init(service_name="t", traces_exporter="none")
    app = victor_otel.instrument_app(fastapi_app(), metrics_path="/scrape")
    with serve(app) as url, httpx.Client() as client:
        for path in ("/scrape", "/health", "/health/ready", "/health/live", "/debug", "/healthz"):
            response = client.get(url + path)
            assert "x-request-id" in response.headers  # request IDs everywhere, metrics not
    targets = {dict(labels)["http_target"] for labels in samples_named(f"{DURATION}_count")}
    assert targets == {"/healthz"}


def test_unknown_methods_and_hosts_stay_bounded() -> None:
    victor_otel.init(service_name="t", traces_exporter="none")
    app = victor_otel.instrument_app(fastapi_app())
    with serve(app) as url, httpx.Client() as client:
        for i in range(20):
            client.request(f"M{i}", f"{url}/items/{i}", headers={"Host": f"h{i}.example"})
    methods = {dict(labels)["http_method"] for labels in samples_named(f"{DURATION}_count")}
    assert methods == {"_OTHER"}


def test_a_starlette_app_and_a_mounted_prefix_get_route_templates() -> None:
    victor_otel.init(service_name="t", traces_exporter="none")

    async def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["item_id"])

    app = victor_otel.instrument_app(Starlette(routes=[Route("/items/{item_id}", item)]))
    with TestClient(app, root_path="/api") as client:
        client.get("/api/items/7")
    targets = {dict(labels)["http_target"] for labels in samples_named(f"{DURATION}_count")}
    assert targets == {"/api/items/{item_id}"}


def test_the_series_reach_a_telemetry_started_after_instrument_app() -> None:
    app = victor_otel.instrument_app(fastapi_app())  # before init(): the edge attaches at the next request
    victor_otel.init(service_name="t", traces_exporter="none")
    with TestClient(app) as client:
        client.get("/items/1")
        text = client.get("/metrics").text
    assert f"{DURATION}_count" in text


def test_the_cardinality_cap_folds_excess_series(caplog: pytest.LogCaptureFixture) -> None:
    m = httpmetrics.HttpServerMetrics(httpmetrics.Conventions(old=True, new=False), limit=3)
    for status in range(200, 210):
        m.end(m.begin("GET", "http", "1.1"), status, "/r", 0.001)
    (duration, _) = m.produce()
    points = duration.data.data_points
    assert len(points) == 4 and sum(p.count for p in points) == 10
    assert points[-1].attributes == {contract.OVERFLOW_ATTRIBUTE: True}
    assert "HTTP server label sets" in caplog.text


# -- the edge: request IDs and trace context --------------------------------------------------------


def test_with_spans_off_no_opentelemetry_middleware_runs_and_trace_context_still_propagates() -> None:
    victor_otel.init(service_name="t", traces_exporter="none")
    app = FastAPI()

    @app.get("/downstream")
    async def downstream() -> dict[str, Any]:
        return {"headers": context.inject({}), "request_id": victor_otel.get_request_id(),
                "trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x")}

    victor_otel.instrument_app(app)
    native = getattr(app, "_telemetry", None)  # FastAPI's own telemetry (recent releases only) is off
    assert native is None or (native["tracing"] is False and native["metrics"] is False)
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    with TestClient(app) as client:
        body = client.get("/downstream", headers={
            "traceparent": f"00-{trace_id}-{parent}-01", "baggage": "request_id=from-upstream,tenant=acme"}).json()
        fresh = client.get("/downstream", headers={"x-request-id": "mine-1"})
    assert body["trace_id"] == trace_id and body["request_id"] == "from-upstream"
    assert body["headers"]["traceparent"].startswith(f"00-{trace_id}-{parent}")
    assert "request_id=from-upstream" in body["headers"]["baggage"]
    assert fresh.headers["x-request-id"] == "mine-1" and fresh.json()["request_id"] == "mine-1"
    stack = app.middleware_stack
    layers = []
    while stack is not None:
        layers.append(type(stack).__module__)
        stack = getattr(stack, "app", None)
    assert isinstance(app.middleware_stack, EdgeMiddleware)
    assert not any(m.startswith("opentelemetry") for m in layers), layers


def test_with_spans_on_the_server_span_stays_and_carries_exemplars(spans: Any) -> None:
    victor_otel.init(service_name="t", traces_exporter="none", span_exporters=[spans])
    app = victor_otel.instrument_app(fastapi_app())
    with TestClient(app) as client:
        response = client.get("/items/1", headers={"x-request-id": "ex-1"})
    assert response.headers["x-request-id"] == "ex-1"
    (server,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.name == "GET /items/{item_id}" and server.attributes["victor.request_id"] == "ex-1"
    (duration, _) = httpmetrics.get_http_metrics().produce()
    (point,) = duration.data.data_points
    assert [(e.trace_id, e.span_id) for e in point.exemplars] == [(server.context.trace_id, server.context.span_id)]
    # no SDK instrument records HTTP metrics any more: one family of each name in a collection
    names = [m.name for rm in victor_otel.current().collect().resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics]
    assert names.count("http.server.duration") == 1 and "http.server.response.size" not in names


def test_request_ids_are_128_random_bits_in_hex() -> None:
    ids = {context.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_the_edge_passes_lifespan_and_websocket_scopes_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    edge = EdgeMiddleware(inner, spans=False)
    for kind in ("lifespan", "websocket"):
        asyncio.run(edge({"type": kind}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"]
    assert propagate.get_global_textmap() is not None


def test_a_plain_json_app_without_routes_matched_has_no_target() -> None:
    victor_otel.init(service_name="t", traces_exporter="none")
    app = victor_otel.instrument_app(Starlette(routes=[Route("/", lambda r: JSONResponse({}))]))
    with TestClient(app) as client:
        client.get("/missing")
    (labels,) = samples_named(f"{DURATION}_count")
    assert "http_target" not in dict(labels) and dict(labels)["http_status_code"] == "404"
