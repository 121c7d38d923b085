"""Settings: one frozen object built from ``init()`` arguments over environment variables.

Every setting is declared once, as a field of :class:`Settings` made by :func:`setting` (its name is the
``init()`` argument; environment variables, default, parser, documentation); :data:`OPTIONS`,
docs/configuration.md's tables and ``victor-otel check`` are derived from those fields.
Precedence, highest first: an ``init()`` argument, then the ``VICTOR_OTEL_*`` variable, then the
standard ``OTEL_*`` variable, then the default. Every bad value raises :class:`VictorOtelConfigError`
naming the setting and what it accepts.
"""

from __future__ import annotations

import copy
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from victor_otel.errors import VictorOtelConfigError

TRACES_EXPORTERS = ("console", "otlp", "none")
METRICS_EXPORTERS = ("prometheus", "otlp", "console", "none")
LOGS_EXPORTERS = ("otlp", "console", "none")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


def _fail(setting: str, value: object, accepted: str) -> VictorOtelConfigError:
    return VictorOtelConfigError(f"{setting}: {value!r} is not valid; accepted: {accepted}")


def _parse_str(setting: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(setting, value, "a string")
    return value.strip()


def _parse_name(setting: str, value: object) -> str:
    text = _parse_str(setting, value)
    if not text or len(text) > 255 or not text.isprintable():
        raise _fail(setting, value, "a non-empty printable string of at most 255 characters")
    return text


def _parse_optional_str(setting: str, value: object) -> str | None:
    if value is None:
        return None
    text = _parse_str(setting, value)
    return text or None


def _parse_bool(setting: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _fail(setting, value, "true or false")


def _choice_list(accepted: tuple[str, ...]) -> Callable[[str, object], tuple[str, ...]]:
    def parse(setting: str, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            items = [part.strip().lower() for part in value.split(",") if part.strip()]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            items = [v.strip().lower() for v in value]
        else:
            raise _fail(setting, value, "a comma-separated list of " + " | ".join(accepted))
        if not items:
            items = ["none"]
        for item in items:
            if item not in accepted:
                raise _fail(setting, item, " | ".join(accepted) + " (comma-separated)")
        if "none" in items and len(items) > 1:
            raise _fail(setting, value, "'none' alone, or a list without 'none'")
        return tuple(dict.fromkeys(items))

    return parse


def _choice(accepted: tuple[str, ...]) -> Callable[[str, object], str]:
    def parse(setting: str, value: object) -> str:
        text = _parse_str(setting, value).lower()
        if text not in accepted:
            raise _fail(setting, value, " | ".join(accepted))
        return text

    return parse


def _number(
    kind: type, minimum: float, maximum: float, *, min_exclusive: bool = False
) -> Callable[[str, object], Any]:
    def parse(setting: str, value: object) -> Any:
        bound = f"{'>' if min_exclusive else '>='} {minimum} and <= {maximum}"
        accepted = f"{'an integer' if kind is int else 'a number'} {bound}"
        if isinstance(value, bool):
            raise _fail(setting, value, accepted)
        try:
            number = kind(value.strip()) if isinstance(value, str) else kind(value)
        except (TypeError, ValueError, OverflowError):
            raise _fail(setting, value, accepted) from None
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise _fail(setting, value, accepted)
        if number != number or number > maximum or number < minimum or (min_exclusive and number == minimum):
            raise _fail(setting, value, accepted)
        return number

    return parse


def _parse_port(setting: str, value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    port: int = _number(int, 0, 65535)(setting, value)
    return port


def _parse_endpoint(setting: str, value: object) -> str | None:
    text = _parse_optional_str(setting, value)
    if text is None:
        return None
    try:
        parsed = urllib.parse.urlsplit(text)
    except ValueError:  # an unbalanced bracket in the host ("a://[") raises here, not at .hostname
        raise _fail(setting, value, "an http:// or https:// URL such as http://localhost:4318") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise _fail(setting, value, "an http:// or https:// URL such as http://localhost:4318")
    try:
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _fail(setting, value, "an http:// or https:// URL with a valid port") from None
    return text.rstrip("/")


def _parse_debug_pages(setting: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = _parse_str(setting, value).lower()
    if text in _TRUE + _FALSE and text != "":
        return "true" if text in _TRUE else "false"
    if text != "auto":
        raise _fail(setting, value, "auto | true | false")
    return text


def _parse_trace_url(setting: str, value: object) -> str | None:
    """An http(s) URL template holding ``{trace_id}`` (the debug pages' link to Grafana / Tempo)."""
    text = _parse_optional_str(setting, value)
    if text is None:
        return None
    accepted = "an http:// or https:// URL containing {trace_id}, such as http://localhost:3000/explore?left=...{trace_id}..."
    try:
        parsed = urllib.parse.urlsplit(text)
    except ValueError:  # an unbalanced bracket in the host ("a://[") raises here, as in _parse_endpoint
        raise _fail(setting, value, accepted) from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname or "{trace_id}" not in text:
        raise _fail(setting, value, accepted)
    return text


def _parse_attributes(setting: str, value: object) -> dict[str, str]:
    """``key1=value1,key2=value2`` (values percent-decoded, as the OTel spec says) or a mapping."""
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and k for k in value):
            raise _fail(setting, value, "a mapping of non-empty string keys")
        return {k: str(v) for k, v in value.items()}
    text = _parse_str(setting, value)
    result: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise _fail(setting, pair, "comma-separated key=value pairs")
        result[key.strip()] = urllib.parse.unquote(raw.strip())
    return result


def _parse_secret(setting: str, value: object) -> str | None:
    """A token: printable ASCII without spaces. The message never shows the value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if (
        not isinstance(value, str)
        or len(value.strip()) > 4096
        or not all(33 <= ord(c) < 127 for c in value.strip())
    ):
        raise VictorOtelConfigError(
            f"{setting}: the value is not valid (not shown: it is a secret); accepted: at most 4096 printable "
            "ASCII characters without spaces"
        )
    return value.strip()


def _parse_basic_auth(setting: str, value: object) -> str | None:
    secret = _parse_secret(setting, value)
    if secret is not None and not secret.partition(":")[0]:
        raise VictorOtelConfigError(
            f"{setting}: the value is not valid (not shown: it is a secret); accepted: user:password"
        )
    return secret


_CAPTURE_TRUE = ("span_only", "event_only", "span_and_event")


def _parse_capture(setting: str, value: object) -> bool:
    """The GenAI content-capture switch: a boolean, or the official instrumentations' mode names."""
    if isinstance(value, str) and value.strip().lower() in (*_CAPTURE_TRUE, "no_content"):
        return value.strip().lower() != "no_content"
    try:
        return _parse_bool(setting, value)
    except VictorOtelConfigError:
        raise _fail(setting, value, "true | false | span_only | event_only | span_and_event | no_content") from None


def _parse_prices(setting: str, value: object) -> Any:
    if value is None or isinstance(value, Mapping):
        return value
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise _fail(setting, value, "a mapping model -> {input, output, cached_input}, a YAML file's path, or genai-prices")


def _parse_optional_budget(setting: str, value: object) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    budget: float = _number(float, 0.0, 1e12, min_exclusive=True)(setting, value)
    return budget


@dataclass(frozen=True)
class Option:
    """One setting: its ``init()`` argument, environment variables (highest precedence first), default, parser
    and meaning, as its :class:`Settings` field declares them; ``secret``: never shown."""

    name: str
    env: tuple[str, ...]
    default: Any
    parse: Callable[[str, object], Any]
    doc: str
    secret: bool = False

    def label(self) -> str:
        return " / ".join((self.name, *self.env))


_OPTION = "victor_otel.option"  # the key of a field's metadata under which setting() keeps its Option


def setting(
    default: Any,
    *,
    env: tuple[str, ...],
    parse: Callable[[str, object], Any],
    doc: str,
    secret: bool = False,
) -> Any:
    """Declare one setting as a :class:`Settings` field: default, environment variables (first wins), parser, meaning.

    ``secret=True`` keeps the value out of ``repr()`` and shows it as ``'***'`` in messages. :data:`OPTIONS`,
    the documentation and ``victor-otel check`` are derived from these fields.
    """
    metadata = {_OPTION: Option("", env, default, parse, doc, secret)}  # named after the field, in OPTIONS
    if type(default).__hash__ is None:  # a mutable default (a mapping): each Settings gets its own copy
        return field(default_factory=lambda: copy.copy(default), repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


#: Pairs of settings where the first must not exceed the second (a warn threshold and its fail one).
_ORDERED = (
    ("health_error_rate_warn", "health_error_rate_fail"),
    ("health_latency_p95_warn", "health_latency_p95_fail"),
    ("health_memory_warn_bytes", "health_memory_fail_bytes"),
)


@dataclass(frozen=True)
class Settings:
    """The effective configuration. Build it with :meth:`Settings.from_sources`.

    Each setting is declared here once, as a field made by :func:`setting`.
    """

    service_name: str = setting(
        "victor", env=("VICTOR_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"), parse=_parse_name,
        doc="service.name of the Resource.",
    )
    service_version: str | None = setting(
        None, env=("VICTOR_OTEL_SERVICE_VERSION",), parse=_parse_optional_str,
        doc=(
            "service.version of the Resource (default: service.version from OTEL_RESOURCE_ATTRIBUTES, else "
            "'unknown')."
        ),
    )
    environment: str | None = setting(
        None, env=("VICTOR_OTEL_ENVIRONMENT",), parse=_parse_optional_str,
        doc=(
            "deployment.environment.name of the Resource (default: from OTEL_RESOURCE_ATTRIBUTES, else "
            "'development')."
        ),
    )
    resource_attributes: Mapping[str, str] = setting(
        {}, env=("OTEL_RESOURCE_ATTRIBUTES",), parse=_parse_attributes,
        doc="Extra Resource attributes, key=value pairs separated by commas.",
    )
    disabled: bool = setting(
        False, env=("OTEL_SDK_DISABLED",), parse=_parse_bool,
        doc="true: install no provider, export nothing (decorators stay cheap no-ops for telemetry).",
    )
    traces_exporter: tuple[str, ...] = setting(
        None, env=("OTEL_TRACES_EXPORTER",), parse=_choice_list(TRACES_EXPORTERS),
        doc=(
            "Where spans go: console | otlp | none (comma-separated for several). Unset: console into traces_file "
            "when that is set, else none, the latest spans kept in memory for the /debug pages only; none by name: "
            "no span is made. Standard output only when console is asked for without a traces_file."
        ),
    )
    traces_file: str | None = setting(
        None, env=("VICTOR_OTEL_TRACES_FILE",), parse=_parse_optional_str,
        doc=(
            "With the console exporter: append spans to this file (one JSON object per line) instead of standard "
            "output."
        ),
    )
    metrics_exporter: tuple[str, ...] = setting(
        ("prometheus",), env=("OTEL_METRICS_EXPORTER",), parse=_choice_list(METRICS_EXPORTERS),
        doc="prometheus (in-process reader behind /metrics) | otlp (periodic push) | console | none.",
    )
    logs_exporter: tuple[str, ...] = setting(
        ("none",), env=("OTEL_LOGS_EXPORTER",), parse=_choice_list(LOGS_EXPORTERS),
        doc="otlp: also send log records through the OTel log bridge | console | none.",
    )
    otlp_endpoint: str | None = setting(
        "http://localhost:4318", env=("OTEL_EXPORTER_OTLP_ENDPOINT",), parse=_parse_endpoint,
        doc="OTLP/HTTP base URL of the collector; /v1/traces, /v1/metrics, /v1/logs are appended.",
    )
    sampler: str = setting(
        "parentbased_always_on", env=("OTEL_TRACES_SAMPLER",), parse=_choice(SAMPLERS),
        doc="Trace sampler: " + " | ".join(SAMPLERS) + ".",
    )
    sampler_arg: float = setting(
        1.0, env=("OTEL_TRACES_SAMPLER_ARG",), parse=_number(float, 0.0, 1.0),
        doc="Sampling ratio for the traceidratio samplers, 0 to 1.",
    )
    metric_export_interval: int = setting(
        60000, env=("OTEL_METRIC_EXPORT_INTERVAL",), parse=_number(int, 100, 86_400_000),
        doc="Milliseconds between pushes of the otlp / console metrics exporters.",
    )
    metrics_port: int | None = setting(
        None, env=("VICTOR_OTEL_METRICS_PORT",), parse=_parse_port,
        doc="Start the standalone /metrics server on this port at init (0 = any free port; unset = none).",
    )
    metrics_host: str = setting(
        "127.0.0.1", env=("VICTOR_OTEL_METRICS_HOST",), parse=_parse_name,
        doc="Address the standalone /metrics server binds to.",
    )
    cardinality_limit: int = setting(
        1000, env=("VICTOR_OTEL_CARDINALITY_LIMIT",), parse=_number(int, 1, 1_000_000),
        doc="Label sets kept per metric; the excess folds into one overflow series.",
    )
    window_seconds: float = setting(
        60.0, env=("VICTOR_OTEL_WINDOW_SECONDS",), parse=_number(float, 1.0, 86_400.0),
        doc="Length of the sliding window behind throughput, error-rate and hit-rate gauges and health.",
    )
    shutdown_timeout: float = setting(
        5.0, env=("VICTOR_OTEL_SHUTDOWN_TIMEOUT",), parse=_number(float, 0.0, 600.0, min_exclusive=True),
        doc="Seconds shutdown() (and interpreter exit) may spend flushing spans, metrics and logs.",
    )
    export_timeout: float = setting(
        10.0, env=("VICTOR_OTEL_EXPORT_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
        parse=_number(float, 0.0, 600.0, min_exclusive=True),
        doc=(
            "Seconds one OTLP export may take, its retries included (the Python exporter reads "
            "OTEL_EXPORTER_OTLP_TIMEOUT in seconds, not milliseconds)."
        ),
    )
    export_process: bool = setting(
        True, env=("VICTOR_OTEL_EXPORT_PROCESS",), parse=_parse_bool,
        doc=(
            "Encode and send OTLP spans from a child process (python -m victor_otel.offload), keeping that work off "
            "the application's GIL; false: from the application's process."
        ),
    )
    max_queue_size: int = setting(
        2048, env=("VICTOR_OTEL_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_QUEUE_SIZE"), parse=_number(int, 1, 1_000_000),
        doc=(
            "Spans (and, in their own queue, log records) buffered for export; beyond it new ones are dropped and "
            "counted in victor_otel_exported_total{outcome=\"dropped\"}."
        ),
    )
    drain_seconds: float = setting(
        0.0, env=("VICTOR_OTEL_DRAIN_SECONDS",), parse=_number(float, 0.0, 600.0),
        doc=(
            "On SIGTERM, readiness turns 503 at once and the server keeps serving this many seconds before it stops "
            "(set it above the load balancer's probe period)."
        ),
    )
    multiproc_dir: str | None = setting(
        None, env=("VICTOR_OTEL_MULTIPROC_DIR",), parse=_parse_optional_str,
        doc=(
            "Several worker processes behind one port: a directory they share (emptied before the server starts); "
            "every /metrics scrape then sums the counters of all workers."
        ),
    )
    metrics_token: str | None = setting(
        None, env=("VICTOR_OTEL_METRICS_TOKEN",), parse=_parse_secret, secret=True,
        doc="When set, /metrics (app route and standalone server) requires 'Authorization: Bearer <token>'.",
    )
    metrics_basic_auth: str | None = setting(
        None, env=("VICTOR_OTEL_METRICS_BASIC_AUTH",), parse=_parse_basic_auth, secret=True,
        doc="When set (user:password), /metrics also accepts HTTP basic auth with these credentials.",
    )
    # -- debug pages (victor_otel.debugpages) --
    debug_pages: str = setting(
        "auto", env=("VICTOR_OTEL_DEBUG_PAGES",), parse=_parse_debug_pages,
        doc=(
            "/debug pages (coordinators, recent traces, one trace as a waterfall) beside /metrics: true | false | "
            "auto (on when no traces exporter is otlp, the embedded default). Behind health_token when set."
        ),
    )
    debug_trace_url: str | None = setting(
        None, env=("VICTOR_OTEL_DEBUG_TRACE_URL",), parse=_parse_trace_url,
        doc="The /debug trace page links to this URL, {trace_id} replaced (a Grafana / Tempo trace view).",
    )
    # Health thresholds: declared here once; health.DEFAULT_THRESHOLDS and the alert rules follow them.
    health_error_rate_warn: float = setting(
        0.01, env=("VICTOR_OTEL_HEALTH_ERROR_RATE_WARN",), parse=_number(float, 0.0, 1.0),
        doc="Health: a coordinator's error rate over the window above this warns (0 to 1).",
    )
    health_error_rate_fail: float = setting(
        0.05, env=("VICTOR_OTEL_HEALTH_ERROR_RATE_FAIL",), parse=_number(float, 0.0, 1.0),
        doc="Health: a coordinator's error rate over the window above this fails (0 to 1).",
    )
    health_min_calls: int = setting(
        20, env=("VICTOR_OTEL_HEALTH_MIN_CALLS",), parse=_number(int, 1, 1_000_000),
        doc=(
            "Health: calls a coordinator needs in the window before its error rate or latency can fail (fewer can "
            "still warn)."
        ),
    )
    health_latency_p95_warn: float = setting(
        5.0, env=("VICTOR_OTEL_HEALTH_LATENCY_P95_WARN",), parse=_number(float, 0.0, 86_400.0, min_exclusive=True),
        doc="Health: a coordinator's p95 latency over the window above this many seconds warns.",
    )
    health_latency_p95_fail: float = setting(
        15.0, env=("VICTOR_OTEL_HEALTH_LATENCY_P95_FAIL",), parse=_number(float, 0.0, 86_400.0, min_exclusive=True),
        doc="Health: a coordinator's p95 latency over the window above this many seconds fails.",
    )
    health_memory_warn_bytes: int = setting(
        2 * 1024**3, env=("VICTOR_OTEL_HEALTH_MEMORY_WARN_BYTES",), parse=_number(int, 1, 2**60),
        doc="Health: resident memory of the process above this many bytes warns.",
    )
    health_memory_fail_bytes: int = setting(
        4 * 1024**3, env=("VICTOR_OTEL_HEALTH_MEMORY_FAIL_BYTES",), parse=_number(int, 1, 2**60),
        doc="Health: resident memory of the process above this many bytes fails.",
    )
    health_cpu_warn_percent: float = setting(
        80.0, env=("VICTOR_OTEL_HEALTH_CPU_WARN_PERCENT",), parse=_number(float, 0.0, 100_000.0, min_exclusive=True),
        doc="Health: CPU use of the process above this percentage warns (100 = one core; never fails).",
    )
    health_cache_ttl: float = setting(
        1.0, env=("VICTOR_OTEL_HEALTH_CACHE_TTL",), parse=_number(float, 0.0, 3600.0),
        doc="Health: seconds a check result is reused, so that probe storms cost nothing (0 = never).",
    )
    health_check_timeout: float = setting(
        2.0, env=("VICTOR_OTEL_HEALTH_CHECK_TIMEOUT",), parse=_number(float, 0.0, 600.0, min_exclusive=True),
        doc="Health: seconds a user check may take unless add_health_check() gives its own timeout.",
    )
    health_max_loop_lag: float = setting(
        5.0, env=("VICTOR_OTEL_HEALTH_MAX_LOOP_LAG",), parse=_number(float, 0.0, 3600.0, min_exclusive=True),
        doc=(
            "Health: /health/live fails when the event loop was blocked longer than this many seconds (within the "
            "last as many seconds)."
        ),
    )
    health_token: str | None = setting(
        None, env=("VICTOR_OTEL_HEALTH_TOKEN",), parse=_parse_optional_str, secret=True,
        doc=(
            "Health: when set, /health/detailed requires the header 'Authorization: Bearer <token>', and /health and "
            "/health/ready answer without coordinator names unless it is sent."
        ),
    )
    # LLM calls (victor_otel.llm)
    instrument_llm: bool = setting(
        False, env=("VICTOR_OTEL_INSTRUMENT_LLM",), parse=_parse_bool,
        doc=(
            "true: instrument the installed openai and anthropic clients (sync, async, streaming) at init; needs the "
            "llm extra."
        ),
    )
    llm_capture_content: bool = setting(
        False, env=("VICTOR_OTEL_LLM_CAPTURE_CONTENT", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"),
        parse=_parse_capture,
        doc=(
            "true: record prompts and completions of model calls on their spans and in log records, redacted and "
            "truncated (span_only, event_only, span_and_event count as true; no_content as false)."
        ),
    )
    llm_prices: Any = setting(  # noqa: RUF009 - setting() returns a dataclasses.field(), as field() does
        None, env=("VICTOR_OTEL_LLM_PRICES",), parse=_parse_prices,
        doc=(
            "Prices of model calls: a mapping model -> {input, output, cached_input} in US dollars per million "
            "tokens, the path of a YAML file holding one, or genai-prices (the genai-prices package)."
        ),
    )
    llm_budget_usd_per_hour: float | None = setting(
        None, env=("VICTOR_OTEL_LLM_BUDGET_USD_PER_HOUR",), parse=_parse_optional_budget,
        doc=(
            "Hourly LLM spend budget in US dollars: exported as victor_llm_budget_usd_per_hour for the spend alert; "
            "health warns when a coordinator's spend rate over the window exceeds it."
        ),
    )

    #: Where each value came from: ``argument``, the environment variable's name, or ``default``.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.traces_exporter is None:
            # Nothing on the application's standard output unless asked for: spans go to the file when one
            # is named (the demo's), else nowhere until an exporter is configured.
            object.__setattr__(self, "traces_exporter", ("console",) if self.traces_file else ("none",))
        for low, high in _ORDERED:
            if getattr(self, low) > getattr(self, high):
                raise VictorOtelConfigError(
                    f"{low}: {getattr(self, low)!r} is not valid; accepted: at most {high} "
                    f"({getattr(self, high)!r})"
                )

    @classmethod
    def from_sources(
        cls, arguments: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Resolve every option from ``arguments`` (``None`` values are ignored) over ``environ``.

        >>> Settings.from_sources({"service_name": "chat"}, {"OTEL_TRACES_EXPORTER": "none"}).traces_exporter
        ('none',)
        """
        arguments = {k: v for k, v in (arguments or {}).items() if v is not None}
        environ = os.environ if environ is None else environ
        unknown = sorted(set(arguments) - set(_BY_NAME))
        if unknown:
            raise VictorOtelConfigError(
                f"unknown setting(s) {', '.join(unknown)}; accepted: {', '.join(_BY_NAME)}"
            )
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for option in OPTIONS:
            if option.name in arguments:
                values[option.name] = option.parse(option.name, arguments[option.name])
                sources[option.name] = "argument"
                continue
            for var in option.env:
                raw = environ.get(var)
                if raw is not None and raw.strip() != "":
                    values[option.name] = option.parse(var, raw)
                    sources[option.name] = var
                    break
            else:
                values[option.name] = option.default
                sources[option.name] = "default"
        return cls(**values, sources=sources)

    def named(self, name: str) -> str:
        """How an error found after parsing (a file that cannot be read) names setting ``name``: with the
        environment variable it came from, when it did, so that the user knows what to change.

        >>> Settings.from_sources({}, {"VICTOR_OTEL_LLM_PRICES": "prices.yaml"}).named("llm_prices")
        'llm_prices (VICTOR_OTEL_LLM_PRICES)'
        >>> Settings.from_sources({"llm_prices": "prices.yaml"}, {}).named("llm_prices")
        'llm_prices'
        """
        source = self.sources.get(name, "default")
        return name if source in ("argument", "default") else f"{name} ({source})"

    @property
    def resolved_version(self) -> str:
        return self.service_version or self.resource_attributes.get("service.version") or "unknown"

    @property
    def resolved_environment(self) -> str:
        attrs = self.resource_attributes
        return (
            self.environment
            or attrs.get("deployment.environment.name")
            or attrs.get("deployment.environment")
            or "development"
        )

    @property
    def debug_pages_enabled(self) -> bool:
        """Whether the /debug pages are served: ``debug_pages`` true, or auto and no traces exporter is otlp.

        >>> Settings.from_sources({}, {}).debug_pages_enabled
        True
        >>> Settings.from_sources({"traces_exporter": "otlp"}, {}).debug_pages_enabled
        False
        """
        if self.debug_pages == "auto":
            return not self.disabled and "otlp" not in self.traces_exporter
        return self.debug_pages == "true"

    @property
    def debug_traces(self) -> bool:
        """Whether spans are made for the /debug pages even when no exporter takes them: the pages are on,
        and traces were not switched off by name (``OTEL_TRACES_EXPORTER=none``), unless the pages were
        asked for by name too. The embedded default keeps its recent traces in memory this way.

        >>> Settings.from_sources({}, {}).debug_traces
        True
        >>> Settings.from_sources({"traces_exporter": "none"}, {}).debug_traces
        False
        >>> Settings.from_sources({"traces_exporter": "none", "debug_pages": "true"}, {}).debug_traces
        True
        """
        switched_off = self.traces_exporter == ("none",) and self.sources.get("traces_exporter", "default") != "default"
        return self.debug_pages_enabled and (self.debug_pages == "true" or not switched_off)

    def differences(self, other: Settings) -> list[str]:
        """Names and values of the settings that differ, for error messages."""
        def shown(name: str, value: object) -> str:
            return "'***'" if name in _SECRETS and value is not None else repr(value)

        return [
            f"{f.name}: {shown(f.name, getattr(self, f.name))} != {shown(f.name, getattr(other, f.name))}"
            for f in fields(self)
            if f.compare and getattr(self, f.name) != getattr(other, f.name)
        ]


#: Every setting, in the order of the fields of :class:`Settings` that declare them.
OPTIONS: tuple[Option, ...] = tuple(
    replace(f.metadata[_OPTION], name=f.name) for f in fields(Settings) if _OPTION in f.metadata
)
_BY_NAME = {option.name: option for option in OPTIONS}
#: Settings whose values are secrets: shown as '***' in messages.
_SECRETS = frozenset(option.name for option in OPTIONS if option.secret)


#: OpenTelemetry SDK variables that are not settings of ours but that the SDK reads while init() builds
#: the providers (or on every span): some bad values make it raise a bare ValueError there, or an
#: OverflowError in every instrumented call. :func:`check_sdk_environment` rejects them first.
SDK_POSITIVE_INTEGERS = (
    "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BLRP_SCHEDULE_DELAY", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "OTEL_BLRP_EXPORT_TIMEOUT",
    "OTEL_METRIC_EXPORT_TIMEOUT",
)
SDK_LIMITS = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
)
EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")
_SDK_MAXIMUM = 2**31 - 1


def check_sdk_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`VictorOtelConfigError` naming the first OpenTelemetry SDK variable the SDK would choke on.

    >>> check_sdk_environment({"OTEL_BSP_SCHEDULE_DELAY": "0"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    victor_otel.errors.VictorOtelConfigError: OTEL_BSP_SCHEDULE_DELAY: '0' is not valid; accepted: an integer >= 1 ...
    """
    environ = os.environ if environ is None else environ
    for var in SDK_POSITIVE_INTEGERS:
        raw = environ.get(var)
        if raw is not None and raw.strip():
            _number(int, 1, _SDK_MAXIMUM)(var, raw)
    for var in SDK_LIMITS:
        raw = environ.get(var)
        if raw is not None and raw.strip().lower() != "unset":
            _number(int, 0, _SDK_MAXIMUM)(var, raw)
    exemplars = environ.get("OTEL_METRICS_EXEMPLAR_FILTER")
    if exemplars is not None and exemplars not in EXEMPLAR_FILTERS:
        raise _fail("OTEL_METRICS_EXEMPLAR_FILTER", exemplars, " | ".join(EXEMPLAR_FILTERS))
    propagators = environ.get("OTEL_PROPAGATORS")
    if propagators:
        from importlib.metadata import entry_points

        installed = sorted({ep.name for ep in entry_points(group="opentelemetry_propagator")})
        for name in (part.strip() for part in propagators.split(",")):
            if name.lower() == "none":
                break  # the SDK stops reading at 'none'
            if name not in installed:
                raise _fail("OTEL_PROPAGATORS", name, "comma-separated names of installed propagators ("
                            + ", ".join(installed) + ") or none")


def markdown_table() -> str:
    """The configuration reference as a Markdown table (docs/configuration.md embeds it; a test keeps them equal)."""
    rows = [
        "| argument | environment (first wins) | default | meaning |",
        "|---|---|---|---|",
    ]
    for option in OPTIONS:
        default = option.default
        if isinstance(default, tuple):
            default = ",".join(default)
        shown = "—" if default in (None, {}) else f"`{default}`"
        env = ", ".join(f"`{var}`" for var in option.env)
        doc = option.doc.replace("|", "\\|")  # a bare | would end the table cell
        rows.append(f"| `{option.name}` | {env} | {shown} | {doc} |")
    return "\n".join(rows) + "\n"
