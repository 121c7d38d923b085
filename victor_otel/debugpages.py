"""The ``/debug`` pages: coordinators, recent traces and one trace as a waterfall, as server-rendered HTML.

Framework-neutral: :func:`respond` takes a method, a path, a query string and an ``Authorization``
header and returns a :class:`Page`; ``web.instrument_app`` serves it as a Starlette route and the
standalone metrics server (``exposition``) from its WSGI app. No JavaScript: links, a GET form and
``<details>`` elements do everything, and the Content-Security-Policy forbids scripts altogether.

Everything shown is escaped (span names, attribute values and log messages come from users and
clients) and redacted as on export: spans through :func:`victor_otel.exporting.redacted_span`, log
messages through the redactor in force. The pages are served when ``debug_pages`` says so (see
:attr:`victor_otel.config.Settings.debug_pages_enabled`), behind ``health_token`` when it is set, as
``/health/detailed`` is.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from victor_otel import auth, bootstrap
from victor_otel.config import Settings
from victor_otel.exporting import redacted_span
from victor_otel.redaction import get_redactor
from victor_otel.registry import Registry
from victor_otel.tracebuffer import LATENCY_BOUNDS, TraceBuffer, TraceRecord, matching
from victor_otel.window import quantile

#: Where the pages live, in the application and on the standalone server.
PREFIX = "/debug"
#: Security headers of every page: no script may run even if something escaped the escaping.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
HTML = "text/html; charset=utf-8"
_MAX_FILTER = 128  # characters of a filter value taken from the query string
_OUTCOMES = ("", "ok", "error")


@dataclass(frozen=True)
class Page:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = HTML


def enabled(settings: Settings) -> bool:
    return settings.debug_pages_enabled


def authorized(authorization: str | None, settings: Settings) -> bool:
    """Like ``/health/detailed``: open without ``health_token``, else ``Authorization: Bearer <token>``.

    >>> s = Settings.from_sources({"health_token": "t0k"}, {})
    >>> authorized("Bearer t0k", s), authorized("Bearer no", s), authorized(None, Settings())
    (True, False, True)
    """
    return auth.check(authorization, token=settings.health_token)


def respond(
    method: str, path: str, query: str, authorization: str | None, telemetry: bootstrap.Telemetry | None = None
) -> Page:
    """The page for one request under :data:`PREFIX` (404 when the pages are off)."""
    telemetry = telemetry or bootstrap.current()
    if telemetry is None or not enabled(telemetry.settings):
        return _page(404, "Not found", "<p>The /debug pages are off (VICTOR_OTEL_DEBUG_PAGES).</p>", None)
    settings = telemetry.settings
    if not authorized(authorization, settings):
        page = _page(401, "Unauthorized", "<p>Send 'Authorization: Bearer &lt;VICTOR_OTEL_HEALTH_TOKEN&gt;'.</p>",
                     settings)
        challenge = auth.challenge("victor_otel debug", token=settings.health_token)
        return Page(401, page.body, {**page.headers, "WWW-Authenticate": challenge})
    if method not in ("GET", "HEAD"):
        page = _page(405, "Method not allowed", "<p>GET only.</p>", settings)
        return Page(405, page.body, {**page.headers, "Allow": "GET, HEAD"})
    params = urllib.parse.parse_qs(query, keep_blank_values=False, max_num_fields=20)

    def param(name: str) -> str:
        return (params.get(name) or [""])[0].strip()[:_MAX_FILTER]

    buffer: TraceBuffer | None = getattr(telemetry, "trace_buffer", None)
    rest = path[len(PREFIX):].rstrip("/") if path.startswith(PREFIX) else None
    if rest == "":
        return _page(200, "Coordinators", coordinators_html(telemetry.registry), settings)
    if rest == "/traces":
        body = traces_html(buffer, telemetry.registry, param("coordinator"), param("outcome"), param("request_id"))
        return _page(200, "Traces", body, settings)
    if rest is not None and rest.startswith("/traces/"):
        trace_hex = rest[len("/traces/"):]
        record = _lookup(buffer, trace_hex)
        if record is None:
            return _page(404, "Trace not found",
                         f"<p>No trace {_e(trace_hex[:64])} is kept here (any more).</p>", settings)
        title = f"Trace {get_redactor().text(record.name)}"
        return _page(200, title, trace_html(record, settings.debug_trace_url), settings)
    return _page(404, "Not found", "<p>No such page.</p>", settings)


def _lookup(buffer: TraceBuffer | None, trace_hex: str) -> TraceRecord | None:
    if buffer is None or len(trace_hex) != 32:
        return None
    try:
        return buffer.get(int(trace_hex, 16))
    except ValueError:
        return None


# -- rendering -------------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f7f8fa}
nav{background:#1d2330;color:#fff;padding:.6em 1em}nav a{color:#cfe1ff;margin-right:1.2em}
main{padding:1em}h1{font-size:1.3em;margin:.2em 0 .6em}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff}th,td{padding:.25em .7em;border-bottom:1px solid #e3e6ec;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.err{color:#b3261e;font-weight:600}.ok{color:#1e7b34}
.muted{color:#6b7280}form{margin:.5em 0 1em}form>*{margin-right:.6em}
.cols{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:1em}
.wf{background:#fff;border:1px solid #e3e6ec}.row{display:grid;grid-template-columns:minmax(14em,38%) 1fr;
border-bottom:1px solid #f0f1f4}.label{padding:.2em .5em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.track{position:relative;height:1.6em}.bar{position:absolute;top:.35em;height:.9em;background:#5b8def;border-radius:2px;
min-width:2px}.bar.error{background:#d9453c}.dur{position:absolute;top:.2em;font-size:.8em;color:#374151;white-space:nowrap}
details{padding:0 .5em .4em}summary{cursor:pointer;color:#374151}pre{white-space:pre-wrap;word-break:break-all;
background:#f3f4f6;padding:.4em;margin:.2em 0;max-height:20em;overflow:auto}
.logs td{vertical-align:top;font-size:.9em}.kv td:first-child{color:#4b5563}
"""


def _e(value: object) -> str:
    """Escaped text for HTML content and quoted attribute values."""
    return escape(str(value), quote=True)


def _page(status: int, title: str, body: str, settings: Settings | None) -> Page:
    service = f" · {_e(settings.service_name)}" if settings is not None else ""
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)} · victor_otel</title>'
        f"<style>{_STYLE}</style></head><body>"
        f'<nav><strong>victor_otel</strong>{service} &nbsp; <a href="{PREFIX}">coordinators</a>'
        f'<a href="{PREFIX}/traces">traces</a></nav><main><h1>{_e(title)}</h1>{body}</main></body></html>'
    )
    return Page(status, html.encode("utf-8"), dict(HEADERS))


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def _ratio(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "—"


def _traces_link(coordinator: str, text: str) -> str:
    query = urllib.parse.urlencode({"coordinator": coordinator})
    return f'<a href="{PREFIX}/traces?{_e(query)}">{_e(text)}</a>'


def coordinators_html(registry: Registry) -> str:
    """Per coordinator over the window, then per method since start."""
    now = time.monotonic()
    rows = []
    for state in sorted(registry.all_coordinators(), key=lambda c: c.name):
        with state.lock:
            stats = state.window.snapshot(now)
        lookups = stats.cache_hits + stats.cache_misses
        rows.append(
            f"<tr><td>{_traces_link(state.name, state.name)}</td><td class=n>{stats.calls}</td>"
            f"<td class=n>{stats.errors}</td><td class=n>{_ratio(stats.errors, stats.calls)}</td>"
            f"<td class=n>{_seconds(stats.p50)}</td><td class=n>{_seconds(stats.p95)}</td>"
            f"<td class=n>{_seconds(stats.p99)}</td><td class=n>{stats.throughput:.2f}</td>"
            f"<td class=n>{_ratio(stats.cache_hits, lookups)}</td></tr>"
        )
    if not rows:
        return "<p class=muted>No coordinator has been called yet.</p>"
    window = f"{registry.window_seconds:g} s"
    methods = []
    for (coordinator, method), series in sorted(registry.series.items()):
        with series.lock:
            count, cancelled, buckets = series.count, series.cancelled, list(series.buckets)
            errors = sum(series.errors.values())
        methods.append(
            f"<tr><td>{_e(coordinator)}</td><td>{_e(method)}</td><td class=n>{count}</td><td class=n>{errors}</td>"
            f"<td class=n>{cancelled}</td><td class=n>{_ratio(errors, count)}</td>"
            f"<td class=n>{_seconds(quantile(0.5, buckets))}</td><td class=n>{_seconds(quantile(0.95, buckets))}</td>"
            f"<td class=n>{_seconds(quantile(0.99, buckets))}</td></tr>"
        )
    return (
        f"<h2>Over the last {_e(window)}</h2><table id=coordinators><thead><tr><th>coordinator</th>"
        "<th class=n>calls</th><th class=n>errors</th><th class=n>error ratio</th><th class=n>p50</th>"
        "<th class=n>p95</th><th class=n>p99</th><th class=n>calls/s</th><th class=n>cache hit ratio</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<h2>Per method, since start</h2><table id=methods><thead><tr><th>coordinator</th><th>method</th>"
        "<th class=n>calls</th><th class=n>errors</th><th class=n>cancelled</th><th class=n>error ratio</th>"
        "<th class=n>p50</th><th class=n>p95</th><th class=n>p99</th>"
        f"</tr></thead><tbody>{''.join(methods)}</tbody></table>"
        "<p class=muted>Percentiles are estimated from the latency histogram's buckets, as PromQL's "
        "histogram_quantile does.</p>"
    )


def _options(values: Iterable[str], selected: str) -> str:
    return "".join(
        f'<option value="{_e(v)}"{" selected" if v == selected else ""}>{_e(v or "any")}</option>' for v in values
    )


def traces_html(
    buffer: TraceBuffer | None, registry: Registry, coordinator: str, outcome: str, request_id: str
) -> str:
    """The kept traces, the latest first, narrowed by the filters given."""
    if buffer is None:
        return ("<p class=muted>No trace is recorded: tracing is off (OTEL_TRACES_EXPORTER=none) or the "
                "application installed its own TracerProvider.</p>")
    records = buffer.traces()
    names = sorted({c.name for c in registry.all_coordinators()} | {c for r in records for c in r.coordinators})
    outcome = outcome if outcome in _OUTCOMES else ""
    form = (
        f'<form method=get action="{PREFIX}/traces" id=filters>'
        f'<label>coordinator <select name=coordinator>{_options(["", *names], coordinator)}</select></label>'
        f'<label>outcome <select name=outcome>{_options(_OUTCOMES, outcome)}</select></label>'
        f'<label>request ID <input name=request_id value="{_e(request_id)}" size=24></label>'
        '<button type=submit>Filter</button></form>'
    )
    shown = matching(records, coordinator or None, outcome or None, request_id or None)
    rows = []
    redact = get_redactor().text
    for record in shown:
        started = time.strftime("%H:%M:%S", time.localtime(record.start_ns / 1e9))
        millis = f".{record.start_ns // 1_000_000 % 1000:03d}"
        state = '<span class=err>error</span>' if record.failed else '<span class=ok>ok</span>'
        rows.append(
            f'<tr class=trace data-trace-id="{record.trace_id_hex}"><td>{started}{millis}</td>'
            f'<td><a href="{PREFIX}/traces/{record.trace_id_hex}">{_e(redact(record.name))}</a></td>'
            f"<td>{_e(', '.join(record.coordinators))}</td><td class=n>{_seconds(record.duration)}</td>"
            f"<td class=n>{len(record.spans)}</td><td>{state}</td><td>{_e(record.request_id or '')}</td></tr>"
        )
    kept = buffer.bucket_counts()
    bounds = ["≤ " + _seconds(b) for b in LATENCY_BOUNDS] + ["> " + _seconds(LATENCY_BOUNDS[-1])]
    buckets = ", ".join(f"{_e(b)}: {n}" for b, n in zip(bounds, kept, strict=True) if n)
    table = (
        "<table id=traces><thead><tr><th>started</th><th>root span</th><th>coordinators</th>"
        "<th class=n>duration</th><th class=n>spans</th><th>outcome</th><th>request ID</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows else "<p class=muted id=empty>No kept trace matches.</p>"
    )
    return (
        f"{form}<p class=muted>{len(shown)} of {len(records)} kept traces. The latest traces, the latest failed "
        f"ones and the latest of each latency bucket are kept (by latency: {buckets or 'none yet'}), so slow and "
        f"failed traces stay longer than the rest.</p>{table}"
    )


def _tree(spans: Sequence[ReadableSpan]) -> list[tuple[int, ReadableSpan]]:
    """The spans depth-first, children by start time, with their depth."""
    ids = {s.context.span_id for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: s.start_time or 0)
    ordered: list[tuple[int, ReadableSpan]] = []
    stack = [(0, s) for s in reversed(children.get(None, []))]
    while stack:
        depth, span = stack.pop()
        ordered.append((depth, span))
        span_id = span.context.span_id if span.context is not None else None
        stack.extend((depth + 1, child) for child in reversed(children.get(span_id, [])))
    return ordered


def _attributes_table(attributes: Any) -> str:
    if not attributes:
        return ""
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_show(v))}</td></tr>" for k, v in attributes.items())
    return f"<table class=kv>{rows}</table>"


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value)
    return str(value)


def trace_html(record: TraceRecord, trace_url: str | None) -> str:
    """One trace: the span tree on a time axis with each span's details, and the trace's log records."""
    t0, total = record.start_ns, max(record.end_ns - record.start_ns, 1)
    redactor = get_redactor()
    rows = []
    for depth, raw in _tree(record.spans):
        span = redacted_span(raw, redactor)
        start, end = span.start_time or t0, span.end_time or record.end_ns
        left = (start - t0) / total * 100
        width = max((end - start) / total * 100, 0.0)
        error = span.status.status_code is StatusCode.ERROR
        duration = _seconds((end - start) / 1e9)
        events = "".join(
            f"<div class=event><strong>{_e(ev.name)}</strong> at +{_seconds((ev.timestamp - t0) / 1e9)}"
            f"{_event_body(ev.attributes)}</div>"
            for ev in span.events
        )
        status = (
            f"<p class=err>{_e(span.status.status_code.name)}: {_e(span.status.description or '')}</p>" if error else ""
        )
        label_left = min(left + width, 85.0)
        rows.append(
            f'<div class="row span{" error" if error else ""}" data-span-name="{_e(span.name)}" data-depth="{depth}">'
            f'<div class=label style="padding-left:{0.5 + depth * 1.1:.1f}em" title="{_e(span.name)}">'
            f"{_e(span.name)}</div>"
            f'<div class=track><div class="bar{" error" if error else ""}" style="left:{left:.3f}%;width:{width:.3f}%">'
            f'</div><span class=dur style="left:{label_left:.3f}%">&nbsp;{_e(duration)}</span></div></div>'
            f"<details><summary>{_e(span.name)}: {_e(_kind(span))}, {len(span.attributes or {})} attributes, "
            f"{len(span.events)} events</summary>{status}{_attributes_table(span.attributes)}{events}</details>"
        )
    logs = _logs_html(record, redactor)
    link = ""
    if trace_url:
        href = trace_url.replace("{trace_id}", record.trace_id_hex)
        link = f' · <a href="{_e(href)}" rel="noopener noreferrer" id=tempo>open in Grafana / Tempo</a>'
    state = '<span class=err>error</span>' if record.failed else '<span class=ok>ok</span>'
    dropped = f" ({record.dropped_spans} more spans not kept)" if record.dropped_spans else ""
    return (
        f"<p>trace <code>{record.trace_id_hex}</code> · {_seconds(record.duration)} · {len(record.spans)} spans"
        f"{dropped} · {state}"
        + (f" · request ID <code>{_e(record.request_id)}</code>" if record.request_id else "")
        + f"{link}</p><div class=cols><section><h2>Spans</h2><div class=wf id=waterfall>{''.join(rows)}</div>"
        f"</section><section><h2>Logs</h2>{logs}</section></div>"
    )


def _kind(span: ReadableSpan) -> str:
    return span.kind.name.lower() if span.kind is not None else "internal"


def _event_body(attributes: Any) -> str:
    if not attributes:
        return ""
    stack = attributes.get("exception.stacktrace")
    rest = {k: v for k, v in attributes.items() if k != "exception.stacktrace"}
    body = _attributes_table(rest)
    if stack:
        body += f"<pre>{_e(stack)}</pre>"
    return body


def _logs_html(record: TraceRecord, redactor: Any) -> str:
    if not record.logs:
        return ("<p class=muted>No log record was written during this trace (records below a logger's level "
                "are never created).</p>")
    rows = []
    for entry in record.logs:
        log = entry.record
        try:
            message = log.getMessage()
        except Exception:  # a bad format string in the application: show the template
            message = str(log.msg)
        offset = _seconds(max(0.0, log.created - record.start_ns / 1e9))
        exception = f"<pre>{_e(redactor.text(entry.exception))}</pre>" if entry.exception else ""
        level = "err" if log.levelno >= 40 else ""
        rows.append(
            f"<tr class=log><td class=n>+{_e(offset)}</td><td class=\"{level}\">{_e(log.levelname)}</td>"
            f"<td>{_e(log.name)}</td><td>{_e(redactor.text(message))}{exception}</td></tr>"
        )
    dropped = f"<p class=muted>{record.dropped_logs} more records not kept.</p>" if record.dropped_logs else ""
    return (
        "<table class=logs id=logs><thead><tr><th class=n>at</th><th>level</th><th>logger</th><th>message</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{dropped}"
    )
