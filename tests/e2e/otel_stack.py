"""The collector path's programs, run natively on 127.0.0.1 (this module holds no test).

``bash collector/build.sh`` builds them from their Go modules and caches them; this module finds them
(``build.sh --check``), starts them on free ports with temporary data directories, and talks to their
HTTP APIs: our collector (``collector/otel-collector.yaml``, endpoints set through its ``${env:...}``
variables), Prometheus 3 (OTLP receiver on), Jaeger v2 (in-memory trace store, in Tempo's place) and
VictoriaLogs (in Loki's place). docs/deployment.md shows the same commands for a developer's shell.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_bundle_support import COLLECTOR_CONFIG, REPO
from tests.faults import free_port

BUILD_SCRIPT = REPO / "collector" / "build.sh"
PROGRAMS = ("otelcol-victor", "prometheus", "jaeger", "victoria-logs")


@functools.cache
def _built() -> dict[str, str]:
    result = subprocess.run(["bash", str(BUILD_SCRIPT), "--check"], capture_output=True, text=True, timeout=60,
                            check=False)
    if result.returncode != 0:
        message = f"the collector path's programs are not built: run bash collector/build.sh ({result.stderr.strip()})"
        if "CI" in os.environ:
            pytest.fail(f"{message}; .ci/install builds them (CI must run every end-to-end test)")
        pytest.skip(message)
    lines = result.stdout.strip().splitlines()
    paths = dict(line.split(" ", 1) for line in lines[:-1])
    assert paths["otelcol-victor"] == lines[-1], "build.sh's last line is the collector's path"
    return paths


def binary(name: str) -> str:
    """Path of one of :data:`PROGRAMS`. Skips only outside CI when it is not built; under CI, fails."""
    assert name in PROGRAMS, name
    return _built()[name]


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, KeyError) as exc:  # not listening yet, incomplete answer
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode()


def get_json(url: str, timeout: float = 5) -> Any:
    return json.loads(http_get(url, timeout))


@dataclass
class Program:
    """A server process: its argv, environment and log; restartable (same ports, same data)."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Program:
        assert self.process is None or self.process.poll() is not None, f"{self.name} runs already"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, cwd=REPO, env={**os.environ, **self.env}, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        if self.ready_url:
            poll(self._ready, timeout, f"{self.name} ready on {self.ready_url}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited ({self.process.returncode}):\n{self.output()}")
        assert self.ready_url is not None
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (a graceful shutdown: the collector drains its queues), SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def running(*programs: Program) -> Iterator[None]:
    """Start the programs in order; stop them in reverse order, whatever happens."""
    started: list[Program] = []
    try:
        for program in programs:
            started.append(program)
            program.start()
        yield
    finally:
        for program in reversed(started):
            program.stop()


# -- Prometheus 3 ------------------------------------------------------------------------------------


@dataclass
class Prometheus:
    program: Program
    url: str

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        body = get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params))
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return alerts


def prometheus(workdir: Path, name: str, *, scrape_configs: Sequence[Mapping[str, Any]] = (),
               rule_files: Sequence[Path] = (), otlp: bool = False) -> Prometheus:
    """A Prometheus 3 (not started) on a free port with a 1 s scrape and evaluation interval and its own TSDB
    in ``workdir/name``; ``otlp`` turns its OTLP receiver on (``/api/v1/otlp/v1/metrics``)."""
    home = workdir / name
    home.mkdir(parents=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": list(scrape_configs),
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [binary("prometheus"), f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", "--web.enable-lifecycle"]
    if otlp:
        argv.append("--web.enable-otlp-receiver")
    return Prometheus(Program(name, argv, home / "prometheus.log", ready_url=f"{url}/-/ready"), url)


def rules_every_second(workdir: Path, rules: Mapping[str, Any]) -> Path:
    """A copy of a rules file whose groups evaluate every second (an alert's ``for`` is untouched)."""
    copy = json.loads(json.dumps(rules))
    for group in copy["groups"]:
        group["interval"] = "1s"
    path = workdir / "rules.yml"
    path.write_text(yaml.safe_dump(copy, sort_keys=False))
    return path


# -- Jaeger v2 and VictoriaLogs -----------------------------------------------------------------------


@dataclass
class Jaeger:
    program: Program
    otlp_grpc: str  # host:port
    url: str  # query API

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        try:
            data = get_json(f"{self.url}/api/traces/{trace_id}")["data"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return data[0] if data else None

    def traces(self, service: str, limit: int = 1000) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"service": service, "limit": limit, "lookback": "1h"})
        found: list[dict[str, Any]] = get_json(f"{self.url}/api/traces?{params}", timeout=30)["data"] or []
        return found


def jaeger(workdir: Path) -> Jaeger:
    """Jaeger v2 keeping traces in memory, OTLP gRPC in, its query API out, both on free ports."""
    home = workdir / "jaeger"
    home.mkdir(parents=True)
    otlp, query, query_grpc, health = (f"127.0.0.1:{free_port()}" for _ in range(4))
    config = {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["jaeger_storage_exporter"]}},
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
            "jaeger_query": {"storage": {"traces": "memstore"}, "http": {"endpoint": query},
                             "grpc": {"endpoint": query_grpc}},
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": health}},
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": otlp}}}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }
    (home / "jaeger.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [binary("jaeger"), f"--config={home / 'jaeger.yaml'}"]
    program = Program("jaeger", argv, home / "jaeger.log", ready_url=f"http://{health}/status")
    return Jaeger(program, otlp, f"http://{query}")


@dataclass
class VictoriaLogs:
    program: Program
    url: str

    @property
    def otlp_endpoint(self) -> str:
        """The base URL the collector's otlp_http exporter takes (it appends /v1/logs)."""
        return f"{self.url}/insert/opentelemetry"

    def query(self, logsql: str, limit: int = 10000) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": logsql, "limit": limit})
        text = http_get(f"{self.url}/select/logsql/query?{params}", timeout=30)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def count(self, logsql: str) -> int:
        rows = self.query(f"{logsql} | stats count() as n")
        return int(rows[0]["n"]) if rows else 0


def victoria_logs(workdir: Path) -> VictoriaLogs:
    """VictoriaLogs with its data in ``workdir/victoria-logs`` (kept across a restart) on a free port."""
    home = workdir / "victoria-logs"
    home.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [binary("victoria-logs"), f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={home / 'data'}",
            "-loggerLevel=WARN", "-retentionPeriod=100y"]
    return VictoriaLogs(Program("victoria-logs", argv, home / "victoria-logs.log", ready_url=f"{url}/health"), url)


# -- the collector -----------------------------------------------------------------------------------


@dataclass
class Collector:
    program: Program
    otlp_http: str  # base URL the SDKs take (OTEL_EXPORTER_OTLP_ENDPOINT)
    otlp_grpc: str
    metrics_target: str  # host:port of its own metrics

    def metrics(self) -> str:
        return http_get(f"http://{self.metrics_target}/metrics")


def collector_environment(*, tempo: str, loki: str, prometheus: str) -> dict[str, str]:
    """The shipped config's variables for a native run on free loopback ports, the backends given."""
    return {
        "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
        "HEALTH_CHECK_ENDPOINT": f"127.0.0.1:{free_port()}",
        "COLLECTOR_METRICS_HOST": "127.0.0.1",
        "COLLECTOR_METRICS_PORT": str(free_port()),
        "TEMPO_OTLP_GRPC_ENDPOINT": tempo,
        "LOKI_OTLP_HTTP_ENDPOINT": loki,
        "PROMETHEUS_OTLP_HTTP_ENDPOINT": prometheus,
    }


def collector(workdir: Path, env: dict[str, str]) -> Collector:
    """Our collector running the shipped ``collector/otel-collector.yaml``, unchanged, with ``env``."""
    argv = [binary("otelcol-victor"), f"--config={COLLECTOR_CONFIG}"]
    program = Program("otelcol-victor", argv, workdir / "otelcol.log", env=env,
                      ready_url=f"http://{env['HEALTH_CHECK_ENDPOINT']}/")
    return Collector(program, f"http://{env['OTLP_HTTP_ENDPOINT']}", env["OTLP_GRPC_ENDPOINT"],
                     f"{env['COLLECTOR_METRICS_HOST']}:{env['COLLECTOR_METRICS_PORT']}")


@dataclass
class Path3:
    """The whole path: collector -> Jaeger (traces), VictoriaLogs (logs), Prometheus 3 (pushed metrics)."""

    collector: Collector
    jaeger: Jaeger
    logs: VictoriaLogs
    prometheus: Prometheus
    workdir: Path

    def programs(self) -> tuple[Program, ...]:
        return (self.jaeger.program, self.logs.program, self.prometheus.program, self.collector.program)


def collector_path(workdir: Path, *, scrape_configs: Sequence[Mapping[str, Any]] = (),
                   rule_files: Sequence[Path] = (), scrape_collector: bool = True) -> Path3:
    """The programs of the path, configured, not started (``running(*path.programs())`` starts them).
    Prometheus scrapes the collector's own metrics as job otel-collector unless ``scrape_collector`` is off."""
    trace_store = jaeger(workdir)
    log_store = victoria_logs(workdir)
    env = collector_environment(tempo=trace_store.otlp_grpc, loki=log_store.otlp_endpoint, prometheus="")
    own_metrics = {"job_name": "otel-collector", "static_configs": [
        {"targets": [f"{env['COLLECTOR_METRICS_HOST']}:{env['COLLECTOR_METRICS_PORT']}"]}]}
    store = prometheus(workdir, "prometheus", scrape_configs=[*([own_metrics] if scrape_collector else []),
                                                              *scrape_configs], rule_files=rule_files, otlp=True)
    env["PROMETHEUS_OTLP_HTTP_ENDPOINT"] = f"{store.url}/api/v1/otlp"
    return Path3(collector(workdir, env), trace_store, log_store, store, workdir)
