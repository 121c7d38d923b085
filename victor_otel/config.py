"""Settings: one frozen object built from ``init()`` arguments over environment variables.

Every option is declared once in :data:`OPTIONS` (argument, environment variables, default, parser,
documentation); docs/configuration.md's table and ``victor-otel check`` read the same declaration.
Precedence, highest first: an ``init()`` argument, then the ``VICTOR_OTEL_*`` variable, then the
standard ``OTEL_*`` variable, then the default. Every bad value raises :class:`VictorOtelConfigError`
naming the setting and what it accepts.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
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
    """One setting: its ``init()`` argument, environment variables (highest precedence first)."""

    name: str
    env: tuple[str, ...]
    default: Any
    parse: Callable[[str, object], Any]
    doc: str

    def label(self) -> str:
        return " / ".join((self.name, *self.env))


OPTIONS: tuple[Option, ...] = (
    Option("service_name", ("VICTOR_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"), "victor", _parse_name,
           "service.name of the Resource."),
    Option("service_version", ("VICTOR_OTEL_SERVICE_VERSION",), None, _parse_optional_str,
           "service.version of the Resource (default: service.version from OTEL_RESOURCE_ATTRIBUTES, "
           "else 'unknown')."),
    Option("environment", ("VICTOR_OTEL_ENVIRONMENT",), None, _parse_optional_str,
           "deployment.environment.name of the Resource (default: from OTEL_RESOURCE_ATTRIBUTES, "
           "else 'development')."),
    Option("resource_attributes", ("OTEL_RESOURCE_ATTRIBUTES",), {}, _parse_attributes,
           "Extra Resource attributes, key=value pairs separated by commas."),
    Option("disabled", ("OTEL_SDK_DISABLED",), False, _parse_bool,
           "true: install no provider, export nothing (decorators stay cheap no-ops for telemetry)."),
    Option("traces_exporter", ("OTEL_TRACES_EXPORTER",), None, _choice_list(TRACES_EXPORTERS),
           "Where spans go: console | otlp | none (comma-separated for several). Unset: console into "
           "traces_file when that is set, else none (no span is made); standard output only when console "
           "is asked for without a traces_file."),
    Option("traces_file", ("VICTOR_OTEL_TRACES_FILE",), None, _parse_optional_str,
           "With the console exporter: append spans to this file (one JSON object per line) "
           "instead of standard output."),
    Option("metrics_exporter", ("OTEL_METRICS_EXPORTER",), ("prometheus",), _choice_list(METRICS_EXPORTERS),
           "prometheus (in-process reader behind /metrics) | otlp (periodic push) | console | none."),
    Option("logs_exporter", ("OTEL_LOGS_EXPORTER",), ("none",), _choice_list(LOGS_EXPORTERS),
           "otlp: also send log records through the OTel log bridge | console | none."),
    Option("otlp_endpoint", ("OTEL_EXPORTER_OTLP_ENDPOINT",), "http://localhost:4318", _parse_endpoint,
           "OTLP/HTTP base URL of the collector; /v1/traces, /v1/metrics, /v1/logs are appended."),
    Option("sampler", ("OTEL_TRACES_SAMPLER",), "parentbased_always_on", _choice(SAMPLERS),
           "Trace sampler: " + " | ".join(SAMPLERS) + "."),
    Option("sampler_arg", ("OTEL_TRACES_SAMPLER_ARG",), 1.0, _number(float, 0.0, 1.0),
           "Sampling ratio for the traceidratio samplers, 0 to 1."),
    Option("metric_export_interval", ("OTEL_METRIC_EXPORT_INTERVAL",), 60000, _number(int, 100, 86_400_000),
           "Milliseconds between pushes of the otlp / console metrics exporters."),
    Option("metrics_port", ("VICTOR_OTEL_METRICS_PORT",), None, _parse_port,
           "Start the standalone /metrics server on this port at init (0 = any free port; unset = none)."),
    Option("metrics_host", ("VICTOR_OTEL_METRICS_HOST",), "127.0.0.1", _parse_name,
           "Address the standalone /metrics server binds to."),
    Option("cardinality_limit", ("VICTOR_OTEL_CARDINALITY_LIMIT",), 1000, _number(int, 1, 1_000_000),
           "Label sets kept per metric; the excess folds into one overflow series."),
    Option("window_seconds", ("VICTOR_OTEL_WINDOW_SECONDS",), 60.0, _number(float, 1.0, 86_400.0),
           "Length of the sliding window behind throughput, error-rate and hit-rate gauges and health."),
    Option("shutdown_timeout", ("VICTOR_OTEL_SHUTDOWN_TIMEOUT",), 5.0,
           _number(float, 0.0, 600.0, min_exclusive=True),
           "Seconds shutdown() (and interpreter exit) may spend flushing spans, metrics and logs."),
    Option("export_timeout", ("VICTOR_OTEL_EXPORT_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"), 10.0,
           _number(float, 0.0, 600.0, min_exclusive=True),
           "Seconds one OTLP export may take, its retries included (the Python exporter reads "
           "OTEL_EXPORTER_OTLP_TIMEOUT in seconds, not milliseconds)."),
    Option("max_queue_size", ("VICTOR_OTEL_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_QUEUE_SIZE"), 2048,
           _number(int, 1, 1_000_000),
           "Spans (and, in their own queue, log records) buffered for export; beyond it new ones are "
           "dropped and counted in victor_otel_exported_total{outcome=\"dropped\"}."),
    Option("drain_seconds", ("VICTOR_OTEL_DRAIN_SECONDS",), 0.0, _number(float, 0.0, 600.0),
           "On SIGTERM, readiness turns 503 at once and the server keeps serving this many seconds before "
           "it stops (set it above the load balancer's probe period)."),
    Option("multiproc_dir", ("VICTOR_OTEL_MULTIPROC_DIR",), None, _parse_optional_str,
           "Several worker processes behind one port: a directory they share (emptied before the server "
           "starts); every /metrics scrape then sums the counters of all workers."),
    Option("metrics_token", ("VICTOR_OTEL_METRICS_TOKEN",), None, _parse_secret,
           "When set, /metrics (app route and standalone server) requires 'Authorization: Bearer <token>'."),
    Option("metrics_basic_auth", ("VICTOR_OTEL_METRICS_BASIC_AUTH",), None, _parse_basic_auth,
           "When set (user:password), /metrics also accepts HTTP basic auth with these credentials."),
    # -- debug pages (victor_otel.debugpages) --
    Option("debug_pages", ("VICTOR_OTEL_DEBUG_PAGES",), "auto", _parse_debug_pages,
           "/debug pages (coordinators, recent traces, one trace as a waterfall) beside /metrics: true | false "
           "| auto (on when no traces exporter is otlp, the embedded default). Behind health_token when set."),
    Option("debug_trace_url", ("VICTOR_OTEL_DEBUG_TRACE_URL",), None, _parse_trace_url,
           "The /debug trace page links to this URL, {trace_id} replaced (a Grafana / Tempo trace view)."),
    # Health thresholds: declared here once; health.DEFAULT_THRESHOLDS and the alert rules follow them.
    Option("health_error_rate_warn", ("VICTOR_OTEL_HEALTH_ERROR_RATE_WARN",), 0.01, _number(float, 0.0, 1.0),
           "Health: a coordinator's error rate over the window above this warns (0 to 1)."),
    Option("health_error_rate_fail", ("VICTOR_OTEL_HEALTH_ERROR_RATE_FAIL",), 0.05, _number(float, 0.0, 1.0),
           "Health: a coordinator's error rate over the window above this fails (0 to 1)."),
    Option("health_min_calls", ("VICTOR_OTEL_HEALTH_MIN_CALLS",), 20, _number(int, 1, 1_000_000),
           "Health: calls a coordinator needs in the window before its error rate or latency can fail "
           "(fewer can still warn)."),
    Option("health_latency_p95_warn", ("VICTOR_OTEL_HEALTH_LATENCY_P95_WARN",), 5.0,
           _number(float, 0.0, 86_400.0, min_exclusive=True),
           "Health: a coordinator's p95 latency over the window above this many seconds warns."),
    Option("health_latency_p95_fail", ("VICTOR_OTEL_HEALTH_LATENCY_P95_FAIL",), 15.0,
           _number(float, 0.0, 86_400.0, min_exclusive=True),
           "Health: a coordinator's p95 latency over the window above this many seconds fails."),
    Option("health_memory_warn_bytes", ("VICTOR_OTEL_HEALTH_MEMORY_WARN_BYTES",), 2 * 1024**3,
           _number(int, 1, 2**60), "Health: resident memory of the process above this many bytes warns."),
    Option("health_memory_fail_bytes", ("VICTOR_OTEL_HEALTH_MEMORY_FAIL_BYTES",), 4 * 1024**3,
           _number(int, 1, 2**60), "Health: resident memory of the process above this many bytes fails."),
    Option("health_cpu_warn_percent", ("VICTOR_OTEL_HEALTH_CPU_WARN_PERCENT",), 80.0,
           _number(float, 0.0, 100_000.0, min_exclusive=True),
           "Health: CPU use of the process above this percentage warns (100 = one core; never fails)."),
    Option("health_cache_ttl", ("VICTOR_OTEL_HEALTH_CACHE_TTL",), 1.0, _number(float, 0.0, 3600.0),
           "Health: seconds a check result is reused, so that probe storms cost nothing (0 = never)."),
    Option("health_check_timeout", ("VICTOR_OTEL_HEALTH_CHECK_TIMEOUT",), 2.0,
           _number(float, 0.0, 600.0, min_exclusive=True),
           "Health: seconds a user check may take unless add_health_check() gives its own timeout."),
    Option("health_max_loop_lag", ("VICTOR_OTEL_HEALTH_MAX_LOOP_LAG",), 5.0,
           _number(float, 0.0, 3600.0, min_exclusive=True),
           "Health: /health/live fails when the event loop was blocked longer than this many seconds "
           "(within the last as many seconds)."),
    Option("health_token", ("VICTOR_OTEL_HEALTH_TOKEN",), None, _parse_optional_str,
           "Health: when set, /health/detailed requires the header 'Authorization: Bearer <token>', and "
           "/health and /health/ready answer without coordinator names unless it is sent."),
    # LLM calls (victor_otel.llm)
    Option("instrument_llm", ("VICTOR_OTEL_INSTRUMENT_LLM",), False, _parse_bool,
           "true: instrument the installed openai and anthropic clients (sync, async, streaming) at init; "
           "needs the llm extra."),
    Option("llm_capture_content",
           ("VICTOR_OTEL_LLM_CAPTURE_CONTENT", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"),
           False, _parse_capture,
           "true: record prompts and completions of model calls on their spans and in log records, redacted "
           "and truncated (span_only, event_only, span_and_event count as true; no_content as false)."),
    Option("llm_prices", ("VICTOR_OTEL_LLM_PRICES",), None, _parse_prices,
           "Prices of model calls: a mapping model -> {input, output, cached_input} in US dollars per million "
           "tokens, the path of a YAML file holding one, or genai-prices (the genai-prices package)."),
    Option("llm_budget_usd_per_hour", ("VICTOR_OTEL_LLM_BUDGET_USD_PER_HOUR",), None, _parse_optional_budget,
           "Hourly LLM spend budget in US dollars: exported as victor_llm_budget_usd_per_hour for the spend "
           "alert; health warns when a coordinator's spend rate over the window exceeds it."),
)

_BY_NAME = {option.name: option for option in OPTIONS}
#: Pairs of settings where the first must not exceed the second (a warn threshold and its fail one).
_ORDERED = (
    ("health_error_rate_warn", "health_error_rate_fail"),
    ("health_latency_p95_warn", "health_latency_p95_fail"),
    ("health_memory_warn_bytes", "health_memory_fail_bytes"),
)
#: Settings whose values are secrets: shown as '***' in messages.
_SECRETS = frozenset({"health_token", "metrics_token", "metrics_basic_auth"})


@dataclass(frozen=True)
class Settings:
    """The effective configuration. Build it with :meth:`Settings.from_sources`."""

    service_name: str = "victor"
    service_version: str | None = None
    environment: str | None = None
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False
    traces_exporter: tuple[str, ...] = ("none",)
    traces_file: str | None = None
    metrics_exporter: tuple[str, ...] = ("prometheus",)
    logs_exporter: tuple[str, ...] = ("none",)
    otlp_endpoint: str | None = "http://localhost:4318"
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    metric_export_interval: int = 60000
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    cardinality_limit: int = 1000
    window_seconds: float = 60.0
    shutdown_timeout: float = 5.0
    export_timeout: float = 10.0
    max_queue_size: int = 2048
    drain_seconds: float = 0.0
    multiproc_dir: str | None = None
    metrics_token: str | None = field(default=None, repr=False)  # a secret: never in a repr or a message
    metrics_basic_auth: str | None = field(default=None, repr=False)  # a secret as well
    debug_pages: str = "auto"
    debug_trace_url: str | None = None
    health_error_rate_warn: float = _BY_NAME["health_error_rate_warn"].default
    health_error_rate_fail: float = _BY_NAME["health_error_rate_fail"].default
    health_min_calls: int = _BY_NAME["health_min_calls"].default
    health_latency_p95_warn: float = _BY_NAME["health_latency_p95_warn"].default
    health_latency_p95_fail: float = _BY_NAME["health_latency_p95_fail"].default
    health_memory_warn_bytes: int = _BY_NAME["health_memory_warn_bytes"].default
    health_memory_fail_bytes: int = _BY_NAME["health_memory_fail_bytes"].default
    health_cpu_warn_percent: float = _BY_NAME["health_cpu_warn_percent"].default
    health_cache_ttl: float = _BY_NAME["health_cache_ttl"].default
    health_check_timeout: float = _BY_NAME["health_check_timeout"].default
    health_max_loop_lag: float = _BY_NAME["health_max_loop_lag"].default
    health_token: str | None = field(default=None, repr=False)  # a secret: never in a repr or a message
    instrument_llm: bool = False
    llm_capture_content: bool = False
    llm_prices: Any = None  # a mapping or a path; victor_otel.llm.prices reads it
    llm_budget_usd_per_hour: float | None = None
    #: Where each value came from: ``argument``, the environment variable's name, or ``default``.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
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
        if values["traces_exporter"] is None:
            # Nothing on the application's standard output unless asked for: spans go to the file when one
            # is named (the demo's), else nowhere until an exporter is configured.
            values["traces_exporter"] = ("console",) if values["traces_file"] else ("none",)
        return cls(**values, sources=sources)

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

    def differences(self, other: Settings) -> list[str]:
        """Names and values of the settings that differ, for error messages."""
        def shown(name: str, value: object) -> str:
            return "'***'" if name in _SECRETS and value is not None else repr(value)

        return [
            f"{f.name}: {shown(f.name, getattr(self, f.name))} != {shown(f.name, getattr(other, f.name))}"
            for f in fields(self)
            if f.compare and getattr(self, f.name) != getattr(other, f.name)
        ]


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
