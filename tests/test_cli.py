"""The ``victor-otel`` command line: ``demo`` (served, summarised live), ``check`` (sources, probes, exit
statuses) and ``metrics`` (the contract as a table, JSON or Markdown)."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import victor_otel
from victor_otel import cli, config, instruments
from victor_otel.cli import build_parser


def test_demo_serves_metrics_and_stops_by_itself(tmp_path: Path) -> None:
    traces = tmp_path / "spans.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "victor_otel.cli", "demo", "--port", "0", "--duration", "4",
         "--traces-file", str(traces)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", first)
        assert match, first
        debug = re.search(r"http://127\.0\.0\.1:\d+/debug", process.stdout.readline())
        assert debug and debug.group(0) == match.group(0).replace("/metrics", "/debug")
        deadline = time.monotonic() + 5
        text = ""
        while time.monotonic() < deadline:  # something meaningful within five seconds
            text = httpx.get(match.group(0), timeout=5).text
            if 'coordinator="AnalysisCoordinator"' in text:
                break
            time.sleep(0.2)
        for name in ("ChatCoordinator", "AnalysisCoordinator", "RetrievalCoordinator"):
            assert f'victor_coordinator_executions_total{{coordinator="{name}"' in text, name
        assert 'victor_coordinator_cache_hits_total{coordinator="RetrievalCoordinator"}' in text
        pages = httpx.get(debug.group(0), timeout=5)
        assert pages.status_code == 200 and "ChatCoordinator" in pages.text  # the demo turns /debug on
        rest, errors = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert "last 60s | " in rest and "stopped" in rest
    assert traces.read_text().count('"name": "ChatCoordinator.chat"') > 0


@pytest.mark.parametrize("args", [
    ["demo", "--error-rate", "2"], ["demo", "--port", "-1"], ["demo", "--duration", "0"], ["demo", "--rate", "-5"],
    ["demo", "--rate", "nan"],
])
def test_demo_rejects_bad_arguments(args: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(args)
    assert caught.value.code == 2


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "victor_otel.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_the_demos_spans_file_keeps_two_runs_at_most(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path), "VICTOR_OTEL_TRACES_FILE": ""}
    spans = tmp_path / "victor-otel-demo-traces.jsonl"
    runs = []
    for _ in range(3):
        result = run_cli("demo", "--port", "0", "--duration", "1", "--rate", "50", env=env)
        assert result.returncode == 0, result.stderr
        assert str(spans) in result.stdout  # the line that names the file
        runs.append(spans.read_bytes())
        assert runs[-1].count(b'"name": "ChatCoordinator.chat"') > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("victor-otel-demo")) == [
        spans.name, spans.name + ".1",
    ]
    assert (tmp_path / (spans.name + ".1")).read_bytes() == runs[1]  # the previous run, whole
    assert runs[0] not in runs[2], "the third run's file does not hold the first run's spans"


def test_a_negative_rate_is_one_line_not_a_traceback() -> None:
    result = run_cli("demo", "--rate", "-5")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--rate: '-5' is not a number >= 0" in result.stderr


def test_a_taken_port_is_one_line_that_suggests_another() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("demo", "--port", str(port), "--duration", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert f"port {port} on 127.0.0.1 is already in use" in line and "--port" in line


def test_the_demo_without_its_extra_says_which_extra(tmp_path: Path) -> None:
    # A directory early on sys.path that hides uvicorn: what a user without the [demo] extra has.
    (tmp_path / "uvicorn.py").write_text("raise ModuleNotFoundError(\"No module named 'uvicorn'\", name='uvicorn')\n")
    result = run_cli("demo", "--duration", "1", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "uvicorn is not installed" in result.stderr and "pip install 'victor-otel[demo]'" in result.stderr


def test_output_piped_to_head_ends_quietly() -> None:
    # Like `victor-otel metrics | head -0`: the reader is gone before the first line is written (closed
    # here before the interpreter has even started, so the write fails every time).
    process = subprocess.Popen([sys.executable, "-m", "victor_otel.cli", "metrics", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    errors = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "BrokenPipeError" not in errors and "Traceback" not in errors, errors
    assert process.returncode == cli.EXIT_BROKEN_PIPE


def test_main_turns_a_closed_pipe_into_an_exit_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            return os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)

    monkeypatch.setattr(sys, "stdout", Closed())
    assert cli.main(["metrics"]) == cli.EXIT_BROKEN_PIPE


# -- the live summary --------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


SEGMENTS: list[cli.Segment] = [("last 60s", "dim"), (" | ", None), ("Chat", "cyan"), (": 3 calls", None)]


def test_status_line_on_a_terminal_rewrites_one_line_in_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "100")
    out = _Terminal()
    line = cli.StatusLine(out)
    line.show(SEGMENTS)
    line.show(SEGMENTS)
    line.done()
    text = out.getvalue()
    assert text.count(cli.CLEAR_LINE) == 2 and text.count("\n") == 1 and text.endswith("\n")
    assert "\x1b[36mChat\x1b[0m" in text


@pytest.mark.parametrize(("name", "value"), [("NO_COLOR", "1"), ("TERM", "dumb")])
def test_no_colour_when_asked(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv(name, value)
    out = _Terminal()
    cli.StatusLine(out).show(SEGMENTS)
    assert out.getvalue() == cli.CLEAR_LINE + "last 60s | Chat: 3 calls"  # still live, no colour


def test_status_line_elsewhere_prints_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    line = cli.StatusLine(out)
    line.show(SEGMENTS)
    line.show(SEGMENTS)
    line.done()
    assert out.getvalue() == "last 60s | Chat: 3 calls\n" * 2


def test_a_live_line_never_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "20")
    out = _Terminal()
    cli.StatusLine(out, color=False).show(SEGMENTS * 3)
    visible = out.getvalue().removeprefix(cli.CLEAR_LINE)
    assert len(visible) == 19 and visible.endswith("…")


def test_summary_counts_calls_errors_and_p95_per_coordinator() -> None:
    site = victor_otel.instrument(coordinator="ChatCoordinator", method="chat")

    @site
    def chat(fail: bool) -> None:
        if fail:
            raise ValueError

    chat(False)
    with pytest.raises(ValueError):
        chat(True)
    line = cli._summary_line()
    assert line.startswith("last 60s | 2 calls, 1 error, slowest p95 ")
    assert "| ChatCoordinator: 2 calls, 1 error, p95 " in line
    live = "".join(text for text, _ in cli.summary_segments(60, elapsed=3.2, duration=10))
    assert live.startswith("[3s/10s] last 60s | ")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_demo_on_a_terminal_shows_one_live_line(tmp_path: Path) -> None:
    import pty

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    process = subprocess.Popen(
        [sys.executable, "-m", "victor_otel.cli", "demo", "--port", "0", "--duration", "2",
         "--traces-file", str(tmp_path / "spans.jsonl")],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE,
        env={**env, "TERM": "xterm", "COLUMNS": "200"},
    )
    os.close(slave)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        os.close(master)
    text = output.decode()
    assert text.count(cli.CLEAR_LINE) >= 2, text
    assert "\x1b[36mChatCoordinator\x1b[0m" in text
    live = text.split(cli.CLEAR_LINE)[-1]
    assert live.endswith("\r\nvictor_otel demo: stopped\r\n")  # the live line ends before the last message


# -- metrics -----------------------------------------------------------------------------------------


def test_metrics_table_lists_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["metrics"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "LABELS", "UNIT", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == [spec.prometheus_name for spec in instruments.CONTRACT]
    assert "victor_coordinator_errors_total            counter    coordinator,method " in "\n".join(lines)
    assert "victor_coordinator_errors_by_type_total    counter    coordinator,method,error_type" in "\n".join(lines)


def test_metrics_json_is_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["metrics", "--json"]) == 0
    families = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in families] == [spec.prometheus_name for spec in instruments.CONTRACT]
    latency = next(f for f in families if f["name"] == instruments.LATENCY.prometheus_name)
    assert latency["type"] == "histogram" and latency["buckets"] == list(instruments.LATENCY_BUCKETS)
    assert latency["samples"][0] == "victor_coordinator_latency_seconds_bucket"
    assert latency["labels"] == ["coordinator", "method"] and latency["otel_name"] == "victor.coordinator.latency"


def test_metrics_markdown_is_the_readme_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["metrics", "--markdown"]) == 0
    assert capsys.readouterr().out == instruments.markdown_table()


def test_the_console_script_is_installed() -> None:
    script = shutil.which("victor-otel", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert script, "the victor-otel console script is missing: pip install -e '.[test]'"
    result = subprocess.run([script, "metrics", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == len(instruments.CONTRACT)


@pytest.mark.parametrize("command", ["demo", "check", "metrics"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main([command, "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: victor-otel {command}" in text and len(text.splitlines()) > 5
    top = build_parser().format_help()
    assert re.search(rf"^\s+{command}\s+\w", top, re.MULTILINE), f"{command} has no help line in victor-otel --help"


# -- check -------------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting, OTLP header or proxy from the shell: check sees only what the test sets."""
    for option in config.OPTIONS:
        for variable in option.env:
            monkeypatch.delenv(variable, raising=False)
    for variable in list(os.environ):
        if variable.upper().endswith("_PROXY") or variable.startswith("OTEL_EXPORTER_OTLP"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("NO_COLOR", "1")
    return monkeypatch


class _Collector(http.server.BaseHTTPRequestHandler):
    """Answers OTLP/HTTP exports like a collector: 200 on POST /v1/<signal>, 404 elsewhere."""

    paths = ("/v1/traces", "/v1/metrics", "/v1/logs")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200 if self.path in self.paths else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(paths: tuple[str, ...] = _Collector.paths) -> Iterator[str]:
    handler = type("Handler", (_Collector,), {"paths": paths})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def flat(out: str) -> str:
    """The output with runs of spaces (column alignment) as one space."""
    return " ".join(out.split())


def row(out: str, setting: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.split()[:1] == [setting])
    return line.split()


def test_check_prints_every_setting_with_its_source(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    clean_env.setenv("OTEL_SERVICE_NAME", "chat-api")
    clean_env.setenv("VICTOR_OTEL_WINDOW_SECONDS", "30")
    code, out, err = check(capsys, "--cardinality-limit", "50")
    assert code == 0, out + err
    for option in config.OPTIONS:
        assert row(out, option.name), option.name
    assert row(out, "service_name")[1:] == ["chat-api", "OTEL_SERVICE_NAME"]
    assert row(out, "window_seconds")[1:] == ["30.0", "VICTOR_OTEL_WINDOW_SECONDS"]
    assert row(out, "cardinality_limit")[1:] == ["50", "--cardinality-limit"]
    assert row(out, "sampler")[1:] == ["parentbased_always_on", "default"]
    assert "skip OTLP endpoint" in flat(out) and "skip metrics port" in flat(out)
    assert out.rstrip().endswith("ready") and err == ""


def test_check_argument_wins_over_the_environment(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    clean_env.setenv("OTEL_SERVICE_NAME", "from-env")
    code, out, _ = check(capsys, "--service-name", "from-flag")
    assert code == 0 and row(out, "service_name")[1:] == ["from-flag", "--service-name"]


def test_check_hides_secrets(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    secrets = [option for option in config.OPTIONS if cli._is_secret(option.name)]
    if not secrets:
        pytest.skip("no secret setting is declared")
    args = [part for option in secrets for part in (cli.flag(option), "user:s3cr3t-value")]
    code, out, err = check(capsys, *args)
    assert "s3cr3t" not in out + err
    if code == 0:
        assert row(out, secrets[0].name)[1] == "***"


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--metrics-port", "http"], {}, "metrics_port: 'http' is not valid; accepted: an integer"),
        ([], {"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER: 'jaeger' is not valid"),
        (["--otlp-endpoint", "localhost:4318"], {}, "otlp_endpoint: 'localhost:4318' is not valid"),
    ],
)
def test_check_exits_2_on_a_bad_value(
    clean_env: pytest.MonkeyPatch, capsys: Any, args: list[str], env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    code, out, err = check(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("victor-otel check: bad value: ") and named in err
    if args:
        assert f"(from {args[0]})" in err


def test_check_reaches_the_otlp_endpoint(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    with http_server() as url:
        code, out, err = check(capsys, "--traces-exporter", "otlp", "--logs-exporter", "otlp", "--otlp-endpoint", url)
    assert code == 0, out + err
    assert f"ok OTLP traces {url}/v1/traces accepted an empty export (200)" in flat(out)
    assert f"ok OTLP logs {url}/v1/logs accepted an empty export (200)" in flat(out)


def test_check_fails_on_an_unreachable_endpoint(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, out, err = check(capsys, "--otlp-endpoint", url, "--metrics-exporter", "otlp", "--timeout", "1")
    assert code == 1
    assert f"FAIL OTLP metrics {url}/v1/metrics: connection refused" in flat(out)
    assert "1 problem: see FAIL above" in out
    assert err == f"victor-otel check: OTLP metrics: {url}/v1/metrics: connection refused: is the collector " \
                  "running and listening on this port?\n"


def test_check_explains_a_server_that_is_not_an_otlp_receiver(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    with http_server(paths=()) as url:
        code, out, _ = check(capsys, "--traces-exporter", "otlp", "--otlp-endpoint", url)
    assert code == 1 and "answered 404 Not Found: something listens there, but not an OTLP/HTTP receiver" in out


def test_check_times_out_on_a_silent_endpoint(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        code, out, _ = check(capsys, "--traces-exporter", "otlp", "--otlp-endpoint", url, "--timeout", "0.3")
    assert code == 1 and "no answer within 0.3 s" in out
    assert time.monotonic() - started < 5


def test_an_unused_endpoint_only_warns(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    code, out, _ = check(capsys, "--otlp-endpoint", f"http://127.0.0.1:{closed_port()}", "--timeout", "1")
    assert code == 0 and "warn OTLP endpoint" in flat(out) and "the endpoint is not used" in out


def test_check_reports_a_metrics_port_in_use(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, out, err = check(capsys, "--metrics-port", str(port))
    assert code == 1
    assert f"FAIL metrics port 127.0.0.1:{port} is in use: another process listens there" in flat(out)
    assert "choose another VICTOR_OTEL_METRICS_PORT" in err


def test_check_accepts_a_free_metrics_port(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    port = closed_port()
    clean_env.setenv("VICTOR_OTEL_METRICS_PORT", str(port))
    code, out, _ = check(capsys)
    assert code == 0 and f"ok metrics port 127.0.0.1:{port} is free" in flat(out)
    assert row(out, "metrics_port")[1:] == [str(port), "VICTOR_OTEL_METRICS_PORT"]


def test_check_catches_a_metrics_port_that_would_never_be_served(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    code, out, _ = check(capsys, "--metrics-port", "9464", "--metrics-exporter", "otlp",
                         "--otlp-endpoint", f"http://127.0.0.1:{closed_port()}", "--timeout", "1")
    assert code == 1 and "9464 is set but metrics_exporter has no 'prometheus'" in out


def test_check_catches_an_unwritable_traces_file(clean_env: pytest.MonkeyPatch, capsys: Any, tmp_path: Path) -> None:
    code, out, _ = check(capsys, "--traces-file", str(tmp_path / "missing" / "spans.jsonl"))
    assert code == 1 and "does not exist" in out
    code, out, _ = check(capsys, "--traces-file", str(tmp_path / "spans.jsonl"))
    assert code == 0 and f"spans are appended to {tmp_path / 'spans.jsonl'}" in out


def test_check_looks_at_the_multiprocess_directory(
    clean_env: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    if not any(option.name == "multiproc_dir" for option in config.OPTIONS):
        pytest.skip("no multiproc_dir setting")
    code, out, _ = check(capsys, "--multiproc-dir", str(tmp_path / "new" / "dir"))
    assert code == 0 and "init() will create it" in out and not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    code, out, _ = check(capsys, "--multiproc-dir", str(tmp_path / "file"))
    assert code == 1 and "exists and is not a directory" in out


def test_check_as_a_command(clean_env: pytest.MonkeyPatch) -> None:
    """The exit statuses a deployment script sees."""
    def run(*args: str) -> int:
        return subprocess.run([sys.executable, "-m", "victor_otel.cli", "check", *args],
                              capture_output=True, timeout=60).returncode

    assert run() == 0
    assert run("--traces-exporter", "otlp", "--otlp-endpoint", f"http://127.0.0.1:{closed_port()}",
               "--timeout", "1") == 1
    assert run("--sampler-arg", "2") == 2
