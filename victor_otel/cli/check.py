"""``victor-otel check``: the effective configuration and where each value came from, validated; the OTLP
endpoint and the metrics port tried. Exit status 0 when everything is fine, 1 when a check fails, 2 for
a bad value."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import http.client
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, TextIO

from victor_otel import config
from victor_otel.cli.common import EXIT_BAD_VALUE, EXIT_OK, EXIT_PROBLEM, _positive
from victor_otel.errors import VictorOtelConfigError
from victor_otel.terminal import color_enabled, styled


def flag(option: config.Option) -> str:
    """The ``victor-otel check`` flag of a setting: ``service_name`` -> ``--service-name``."""
    return "--" + option.name.replace("_", "-")


def add_parser(commands: Any) -> None:
    """Add ``check`` to the ``victor-otel`` sub-commands: one flag per setting."""
    parser = commands.add_parser(
        "check",
        usage="victor-otel check [-h] [--timeout SECONDS] [--SETTING VALUE ...]",
        help="print the effective configuration and where each value came from, validate it, "
        "try the OTLP endpoint and the metrics port",
        description="Resolve the configuration as init() would (these options, then the VICTOR_OTEL_* / "
        "OTEL_* environment variables, then the defaults), print each setting with its source, validate "
        "it, try the OTLP endpoint of every signal exported over OTLP (an empty export, with a short "
        "timeout) and whether the standalone metrics port is free. Exit status: 0 fine, 1 a check failed, "
        "2 a bad value.",
        epilog="Each option overrides its environment variable, as an init() argument does; see "
        "docs/configuration.md.",
    )
    parser.add_argument("--timeout", type=_positive, default=2.0,
                        help="seconds to wait for the OTLP endpoint (default: 2)")
    settings = parser.add_argument_group("settings (as init() arguments)")
    for option in config.OPTIONS:
        settings.add_argument(
            flag(option), dest=option.name, metavar="VALUE", default=None,
            help=f"{option.doc} Environment: {', '.join(option.env)}.".replace("%", "%%"),
        )
    parser.set_defaults(run=run_check)


OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
_STATUS_STYLE = {OK: "green", WARN: "yellow", FAIL: "red", SKIP: "dim"}


@dataclasses.dataclass(frozen=True)
class Finding:
    """The result of one check: ``ok``, ``warn`` (works, but probably not what you meant), ``FAIL``, ``skip``."""

    status: str
    subject: str
    detail: str


def _is_secret(name: str) -> bool:
    return name in config._SECRETS


def shown_value(name: str, value: Any) -> str:
    """A setting's value as ``check`` prints it (secrets as ``***``)."""
    if value is None or value == {}:
        return "(unset)"
    if _is_secret(name):
        return "***"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, str) and "@" in value and "://" in value:
        parts = urllib.parse.urlsplit(value)  # a password in a URL stays out of the terminal
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return str(value)


def shown_source(option: config.Option, source: str) -> str:
    return flag(option) if source == "argument" else source


def _headers(signal: str, environ: Mapping[str, str]) -> dict[str, str]:
    """What the OTLP exporter would send: ``OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS`` or ``..._HEADERS``."""
    raw = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS") or environ.get("OTEL_EXPORTER_OTLP_HEADERS")
    headers: dict[str, str] = {}
    for pair in (raw or "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[key.strip()] = urllib.parse.unquote(value.strip())
    return headers


def probe_otlp(url: str, timeout: float, headers: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """POST an empty OTLP/HTTP export (a valid, empty protobuf message) to ``url``: ``(reachable, detail)``."""
    request = urllib.request.Request(
        url, data=b"", method="POST", headers={"Content-Type": "application/x-protobuf", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return True, f"{url} accepted an empty export ({response.status})"
    except urllib.error.HTTPError as exc:
        code = exc.code
        if code in (401, 403):
            return False, (f"{url} refused the export ({code} {exc.reason}): put the credentials the collector "
                           "expects in OTEL_EXPORTER_OTLP_HEADERS")
        if code in (404, 405):
            return False, (f"{url} answered {code} {exc.reason}: something listens there, but not an OTLP/HTTP "
                           "receiver at this path (the collector's OTLP/HTTP port is 4318; 4317 is gRPC)")
        if code in (400, 415):
            return True, f"{url} is an HTTP receiver (it answered {code} to an empty export)"
        return False, f"{url} answered {code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return False, f"{url}: no answer within {timeout:g} s (a firewall, or the wrong host?)"
        if isinstance(reason, ConnectionRefusedError):
            return False, f"{url}: connection refused: is the collector running and listening on this port?"
        if isinstance(reason, socket.gaierror):
            return False, f"{url}: cannot resolve the host name ({reason.strerror})"
        return False, f"{url}: cannot connect ({reason})"
    except TimeoutError:
        return False, f"{url}: no answer within {timeout:g} s"
    except http.client.HTTPException as exc:
        return False, (f"{url}: the answer is not HTTP/1.1 ({type(exc).__name__}): is this the gRPC port "
                       "(4317)? victor_otel exports OTLP over HTTP, by default on port 4318")
    except OSError as exc:
        return False, f"{url}: {exc}"


def probe_port(host: str, port: int) -> tuple[bool, str]:
    """Whether ``host:port`` can be bound now, as the metrics server would bind it: ``(free, detail)``."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return False, f"{where}: cannot resolve {host!r} ({exc.strerror})"
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the metrics server does
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False, (f"{where} is in use: another process listens there (see: ss -ltnp "
                               f"'sport = :{port}'); choose another VICTOR_OTEL_METRICS_PORT or stop it")
            if exc.errno == errno.EACCES:
                return False, f"{where}: permission denied (ports below 1024 need privileges)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return False, f"{where}: {host} is not an address of this machine"
            return False, f"{where}: cannot bind ({exc.strerror or exc})"
    return True, f"{where} is free"


def run_checks(settings: config.Settings, timeout: float, environ: Mapping[str, str]) -> list[Finding]:
    """Every check of ``victor-otel check`` on already-validated settings."""
    findings = [Finding(OK, "settings", "every value is valid")]
    if settings.disabled:
        findings.append(Finding(WARN, "disabled", "OTEL_SDK_DISABLED is true: nothing will be recorded or exported"))

    signals = {
        "traces": settings.traces_exporter,
        "metrics": settings.metrics_exporter,
        "logs": settings.logs_exporter,
    }
    over_otlp = [signal for signal, exporters in signals.items() if "otlp" in exporters]
    if over_otlp:
        try:
            import opentelemetry.exporter.otlp.proto.http  # noqa: F401
        except ImportError:
            findings.append(Finding(FAIL, "OTLP exporter", "not installed: pip install 'victor-otel[otlp]'"))
    endpoint = settings.otlp_endpoint
    explicit = settings.sources.get("otlp_endpoint", "default") != "default"
    if endpoint is None:
        pass
    elif over_otlp:
        for signal in over_otlp:
            reachable, detail = probe_otlp(f"{endpoint}/v1/{signal}", timeout, _headers(signal, environ))
            findings.append(Finding(OK if reachable else FAIL, f"OTLP {signal}", detail))
    elif explicit:
        reachable, detail = probe_otlp(f"{endpoint}/v1/traces", timeout, _headers("traces", environ))
        note = " (no exporter is otlp: the endpoint is not used)"
        findings.append(Finding(OK if reachable else WARN, "OTLP endpoint", detail + note))
    else:
        findings.append(Finding(SKIP, "OTLP endpoint", "not used: no *_exporter is otlp"))

    port = settings.metrics_port
    if port is None:
        findings.append(Finding(SKIP, "metrics port", "unset: no standalone /metrics server (instrument_app(app) "
                                                      "serves /metrics from your app)"))
    elif "prometheus" not in settings.metrics_exporter:
        findings.append(Finding(FAIL, "metrics port", f"{port} is set but metrics_exporter has no 'prometheus' "
                                                      "(now " + ",".join(settings.metrics_exporter) + "): "
                                                      "init() would start no /metrics server"))
    elif port == 0:
        findings.append(Finding(OK, "metrics port", "0: the server takes any free port at init()"))
    else:
        free, detail = probe_port(settings.metrics_host, port)
        findings.append(Finding(OK if free else FAIL, "metrics port", detail))

    traces_file = settings.traces_file
    if traces_file is not None:
        if "console" not in settings.traces_exporter:
            findings.append(Finding(WARN, "traces file", f"{traces_file} is ignored: traces_exporter has no "
                                                         "'console'"))
        else:
            directory = os.path.dirname(os.path.abspath(traces_file))
            if not os.path.isdir(directory):
                findings.append(Finding(FAIL, "traces file", f"{traces_file}: the directory {directory} does not "
                                                             "exist"))
            elif not os.access(directory, os.W_OK) or (
                os.path.exists(traces_file) and not os.access(traces_file, os.W_OK)
            ):
                findings.append(Finding(FAIL, "traces file", f"{traces_file}: not writable by this user"))
            else:
                findings.append(Finding(OK, "traces file", f"spans are appended to {traces_file}"))

    if settings.multiproc_dir:
        findings.append(_check_directory(settings.multiproc_dir))

    ratio_samplers = ("traceidratio", "parentbased_traceidratio")
    if settings.sources.get("sampler_arg", "default") != "default" and settings.sampler not in ratio_samplers:
        findings.append(Finding(WARN, "sampler_arg", f"ignored by the {settings.sampler} sampler (only "
                                                     "traceidratio samplers read it)"))
    return findings


def _check_directory(directory: str) -> Finding:
    """The multi-process directory: writable, or creatable by init() (nothing is created here)."""
    subject = "multiproc dir"
    path = os.path.abspath(directory)
    if os.path.isdir(path):
        if os.access(path, os.W_OK | os.X_OK):
            return Finding(OK, subject, f"{directory} is a writable directory")
        return Finding(FAIL, subject, f"{directory} is not writable by this user")
    if os.path.exists(path):
        return Finding(FAIL, subject, f"{directory} exists and is not a directory")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK):
        return Finding(OK, subject, f"{directory} does not exist yet; init() will create it")
    return Finding(FAIL, subject, f"{directory} does not exist and {parent} is not writable by this user")


def run_check(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    color = color_enabled(out)
    arguments = {option.name: getattr(args, option.name) for option in config.OPTIONS}
    try:
        settings = config.Settings.from_sources(arguments)
    except VictorOtelConfigError as exc:
        given = [
            flag(o) for o in config.OPTIONS if arguments.get(o.name) is not None and str(exc).startswith(o.name + ":")
        ]
        where = f" (from {given[0]})" if given else ""
        print(f"victor-otel check: bad value: {exc}{where}", file=err)
        print("Fix the option or environment variable named above; 'victor-otel check --help' lists them.",
              file=err)
        return EXIT_BAD_VALUE

    rows = [
        (option.name, shown_value(option.name, getattr(settings, option.name)),
         shown_source(option, settings.sources.get(option.name, "default")))
        for option in config.OPTIONS
    ]
    name_width = max(len(r[0]) for r in rows)
    value_width = min(max(len(r[1]) for r in rows), 48)
    print(styled("Configuration", "bold", color) + " (a --option, else its environment variable, else the default)",
          file=out)
    for name, value, source in rows:
        style = None if source == "default" else "cyan"
        print(f"  {name:<{name_width}}  {value:<{value_width}}  {styled(source, style, color)}", file=out)

    findings = run_checks(settings, args.timeout, os.environ)
    print(file=out)
    print(styled("Checks", "bold", color), file=out)
    subject_width = max(len(f.subject) for f in findings)
    for finding in findings:
        status = styled(f"{finding.status:<4}", _STATUS_STYLE[finding.status], color)
        print(f"  {status}  {finding.subject:<{subject_width}}  {finding.detail}", file=out)
    failed = [f for f in findings if f.status == FAIL]
    print(file=out)
    if failed:
        noun = "problem" if len(failed) == 1 else "problems"
        print(styled(f"{len(failed)} {noun}", "red", color) + ": see FAIL above", file=out)
        for finding in failed:
            print(f"victor-otel check: {finding.subject}: {finding.detail}", file=err)
        return EXIT_PROBLEM
    warnings = sum(f.status == WARN for f in findings)
    print(styled("ready", "green", color) + (f" ({warnings} warning{'s' if warnings > 1 else ''})" if warnings else ""),
          file=out)
    return EXIT_OK

