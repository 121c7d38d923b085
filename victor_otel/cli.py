"""``victor-otel``: the command line.

- ``victor-otel demo``: a demo app with three coordinators under synthetic load, serving ``/metrics``, with
  a live one-line summary (calls, errors, p95) on a terminal and one plain line a second otherwise.
- ``victor-otel check``: the effective configuration and where each value came from, validated; the OTLP
  endpoint and the metrics port tried. Exit status 0 when everything is fine, 1 when a check fails, 2 for
  a bad value.
- ``victor-otel metrics``: the metric contract as a table, as JSON (``--json``) or Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import http.client
import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from victor_otel import config, instruments
from victor_otel.errors import VictorOtelConfigError

#: Exit statuses of ``victor-otel check`` (2 is also argparse's for a bad command line).
EXIT_OK, EXIT_PROBLEM, EXIT_BAD_VALUE = 0, 1, 2

# -- terminal output -------------------------------------------------------------------------------

_STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
CLEAR_LINE = "\r\x1b[2K"


def color_enabled(stream: TextIO) -> bool:
    """Colour only for a person: a terminal, ``NO_COLOR`` unset (https://no-color.org), not ``TERM=dumb``."""
    isatty = getattr(stream, "isatty", None)
    return bool(
        isatty is not None and isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    )


def styled(text: str, style: str | None, color: bool) -> str:
    if not color or not style:
        return text
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"


Segment = tuple[str, str | None]  # (text, style)


def _fit(segments: Sequence[Segment], width: int) -> list[Segment]:
    """Cut the segments to ``width`` visible characters, ending in ``…`` when something was cut off
    (a wrapped line could not be rewritten in place)."""
    if sum(len(text) for text, _ in segments) <= width:
        return list(segments)
    fitted: list[Segment] = []
    room = width - 1
    for text, style in segments:
        if room <= 0:
            break
        fitted.append((text[:room], style))
        room -= len(text[:room])
    fitted.append(("…", None))
    return fitted


class StatusLine:
    """One summary line: rewritten in place on a terminal, appended as plain lines otherwise."""

    def __init__(self, stream: TextIO, *, live: bool | None = None, color: bool | None = None) -> None:
        self.stream = stream
        isatty = getattr(stream, "isatty", None)
        self.live = bool(isatty is not None and isatty()) if live is None else live
        self.color = color_enabled(stream) if color is None else color
        self._pending = False

    def show(self, segments: Sequence[Segment]) -> None:
        if self.live:
            width = max(shutil.get_terminal_size().columns - 1, 10)
            text = "".join(styled(t, s, self.color) for t, s in _fit(segments, width))
            self.stream.write(CLEAR_LINE + text)
            self._pending = True
        else:
            self.stream.write("".join(t for t, _ in segments) + "\n")
        self.stream.flush()

    def done(self) -> None:
        """End the live line so that what follows starts on a line of its own."""
        if self._pending:
            self.stream.write("\n")
            self.stream.flush()
            self._pending = False


# -- argument types --------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0 (0: no synthetic load)")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return value


def flag(option: config.Option) -> str:
    """The ``victor-otel check`` flag of a setting: ``service_name`` -> ``--service-name``."""
    return "--" + option.name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    from victor_otel._version import __version__

    parser = argparse.ArgumentParser(
        prog="victor-otel",
        description="victor_otel command line: run the demo, check a configuration, list the metric contract.",
        epilog="Run 'victor-otel COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"victor-otel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run a demo app with three coordinators under synthetic load, serving /metrics and /debug",
        description="Run a FastAPI app with three instrumented coordinators (one failing sometimes, one "
        "slow, one with a cache) under a synthetic load, serving /metrics on HOST:PORT. Every second it "
        "prints the calls, errors and p95 latency of each coordinator over the sliding window: one line "
        "rewritten in place on a terminal (coloured unless NO_COLOR is set), one plain line per second "
        "otherwise. Ctrl-C stops it.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=8000, help="port to bind (default: 8000; 0 = any free)")
    demo.add_argument("--duration", type=_positive, default=None, help="stop after this many seconds")
    demo.add_argument("--error-rate", type=_probability, default=0.05,
                      help="probability that ChatCoordinator.chat fails (default: 0.05)")
    demo.add_argument("--slow-seconds", type=_positive, default=0.5,
                      help="typical latency of AnalysisCoordinator (default: 0.5)")
    demo.add_argument("--rate", type=_non_negative, default=20.0,
                      help="synthetic requests per second (default: 20; 0: none)")
    demo.add_argument("--traces-file", default=None,
                      help="where spans go, appended (default: a file in the temp directory, started afresh "
                           "each run with the previous run's kept as .1; '-' for stdout)")

    check = commands.add_parser(
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
    check.add_argument("--timeout", type=_positive, default=2.0,
                       help="seconds to wait for the OTLP endpoint (default: 2)")
    settings = check.add_argument_group("settings (as init() arguments)")
    for option in config.OPTIONS:
        settings.add_argument(
            flag(option), dest=option.name, metavar="VALUE", default=None,
            help=f"{option.doc} Environment: {', '.join(option.env)}.".replace("%", "%%"),
        )

    metrics = commands.add_parser(
        "metrics",
        help="print the metric contract: every family, its type, labels and unit",
        description="Print every metric family victor_otel produces (the names alerts and dashboards use) "
        "with its type, labels, unit and meaning, as a table, as JSON for tooling, or as Markdown.",
    )
    shape = metrics.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="a JSON list of objects, one per family")
    shape.add_argument("--markdown", action="store_true", help="the Markdown table of the README")
    return parser


# -- demo ------------------------------------------------------------------------------------------


#: The extra that brings what ``victor-otel demo`` needs beyond the core dependencies.
DEMO_EXTRA = "pip install 'victor-otel[demo]'"


def _port_taken(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound because something listens there already."""
    if port == 0:
        return False
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return False  # uvicorn will say what is wrong with the host
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def run_demo(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as error:
        print(f"victor-otel demo: {error.name} is not installed; the demo needs the demo extra: {DEMO_EXTRA}",
              file=sys.stderr)
        return EXIT_BAD_VALUE
    if _port_taken(args.host, args.port):
        print(f"victor-otel demo: port {args.port} on {args.host} is already in use; choose another with "
              f"--port (for example --port {args.port + 1 if args.port < 65535 else 8000}, or --port 0 for any "
              "free port)", file=sys.stderr)
        return EXIT_BAD_VALUE

    import victor_otel
    from victor_otel.demo import create_app, default_traces_file, start_traces_file

    traces_file = args.traces_file or os.environ.get("VICTOR_OTEL_TRACES_FILE") or default_traces_file()
    if traces_file == default_traces_file():
        start_traces_file(traces_file)  # the demo's own file: this run's spans, and the previous run's in .1
    telemetry = victor_otel.init(
        service_name=os.environ.get("OTEL_SERVICE_NAME") or "victor-demo",
        traces_file=None if traces_file == "-" else traces_file,
        traces_exporter="console" if traces_file == "-" else None,  # '-': standard output, asked for
        # The demo is for looking: /debug on unless VICTOR_OTEL_DEBUG_PAGES says otherwise.
        debug_pages=None if os.environ.get("VICTOR_OTEL_DEBUG_PAGES", "").strip() else True,
    )
    app = create_app(error_rate=args.error_rate, slow_seconds=args.slow_seconds, load_rate=args.rate)
    config_ = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config_)
    status = StatusLine(sys.stdout)
    window = telemetry.settings.window_seconds

    async def main() -> None:
        serve = asyncio.create_task(server.serve())
        while not server.started:
            if serve.done():
                await serve  # raises the start-up error (port in use, ...)
                return
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{port}/metrics"
        print(f"victor_otel demo: {styled(url, 'bold', status.color)}  (spans: {traces_file})", flush=True)
        debug_url = f"http://{host}:{port}/debug"
        print(f"victor_otel demo: traces and coordinators at {styled(debug_url, 'bold', status.color)}", flush=True)
        started = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            while not serve.done():
                await asyncio.sleep(1.0)
                elapsed = time.monotonic() - started
                status.show(summary_segments(window, elapsed if status.live else None, args.duration))
                if args.duration is not None and elapsed >= args.duration:
                    server.should_exit = True
                    break
        await serve

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        status.done()
        victor_otel.shutdown()
    print("victor_otel demo: stopped", flush=True)
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def summary_segments(
    window: float = 60.0, elapsed: float | None = None, duration: float | None = None
) -> list[Segment]:
    """``last 60s | 156 calls, 1 error, slowest p95 960ms | ChatCoordinator: 98 calls, 1 error, p95 47ms | ...``

    Totals first (they stay visible when a terminal cuts the line), then each coordinator over the sliding
    window. ``elapsed`` (the live display) prefixes the time running, out of ``duration`` when set.
    """
    from victor_otel.registry import get_registry

    segments: list[Segment] = []
    if elapsed is not None:
        clock = f"{elapsed:.0f}s" + (f"/{duration:g}s" if duration is not None else "")
        segments.append((f"[{clock}] ", "dim"))
    segments.append((f"last {window:g}s", "dim"))
    stats = [(state.name, state.stats()) for state in get_registry().all_coordinators()]
    if not stats:
        return [*segments, (" | no calls yet", None)]
    calls = sum(s.calls for _, s in stats)
    errors = sum(s.errors for _, s in stats)
    slowest = max((s.p95 for _, s in stats if s.p95 is not None), default=None)
    segments += [
        (f" | {_count(calls, 'call')}, ", "bold"),
        (_count(errors, "error"), "red" if errors else "green"),
        (f", slowest p95 {_ms(slowest)}", "bold"),
    ]
    for name, s in stats:
        segments += [
            (" | ", None),
            (name, "cyan"),
            (f": {_count(s.calls, 'call')}, ", None),
            (_count(s.errors, "error"), "red" if s.errors else None),
            (f", p95 {_ms(s.p95)}", None),
        ]
    return segments


def _summary_line() -> str:
    return "".join(text for text, _ in summary_segments())


# -- check -----------------------------------------------------------------------------------------

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
_STATUS_STYLE = {OK: "green", WARN: "yellow", FAIL: "red", SKIP: "dim"}


@dataclasses.dataclass(frozen=True)
class Finding:
    """The result of one check: ``ok``, ``warn`` (works, but probably not what you meant), ``FAIL``, ``skip``."""

    status: str
    subject: str
    detail: str


def _is_secret(name: str) -> bool:
    declared: frozenset[str] = getattr(config, "_SECRETS", frozenset())
    hidden = {f.name for f in dataclasses.fields(config.Settings) if not f.repr}
    return name in declared or name in hidden


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

    shared: str | None = getattr(settings, "multiproc_dir", None)  # the multi-worker setting, where declared
    if shared:
        findings.append(_check_directory(shared))

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


# -- metrics ---------------------------------------------------------------------------------------


def contract_as_json() -> list[dict[str, Any]]:
    """The metric contract as plain data (``victor-otel metrics --json``)."""
    return [
        {
            "name": spec.prometheus_name,
            "otel_name": spec.otel_name,
            "type": spec.kind.value,
            "unit": spec.unit,
            "labels": list(spec.labels),
            "description": spec.description,
            "buckets": list(spec.buckets) if spec.buckets is not None else None,
            "samples": list(spec.sample_names),
        }
        for spec in instruments.CONTRACT
    ]


def run_metrics(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.json:
        print(json.dumps(contract_as_json(), indent=2), file=out)
        return EXIT_OK
    if args.markdown:
        out.write(instruments.markdown_table())
        return EXIT_OK
    color = color_enabled(out)
    header = ("NAME", "TYPE", "LABELS", "UNIT", "DESCRIPTION")
    rows = [
        (spec.prometheus_name, spec.kind.value, ",".join(spec.labels) or "-", spec.unit or "-", spec.description)
        for spec in instruments.CONTRACT
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    for index, row in enumerate((header, *rows)):
        cells = [f"{cell:<{width}}" for cell, width in zip(row[:4], widths, strict=True)]
        line = "  ".join([*cells, row[4]])
        print(styled(line, "bold", color) if index == 0 else line, file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can be caught, not at interpreter exit
        return status
    except BrokenPipeError:
        # The reader went away (``victor-otel metrics | head``): stop quietly, as other commands do. Standard
        # output is pointed at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


#: Exit status when standard output was closed by its reader (128 + SIGPIPE, as a shell reports it).
EXIT_BROKEN_PIPE = 141


def _main(argv: Sequence[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    if args.command == "check":
        return run_check(args)
    if args.command == "metrics":
        return run_metrics(args)
    return EXIT_BAD_VALUE  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
