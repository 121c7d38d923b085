"""The shipped collector config, loaded by a real collector: our own build (collector/builder-config.yaml).

``otelcol-victor validate`` resolves the ``${env:...}`` variables, decodes every component's settings
(an unknown key, a renamed component or a wrong type fails) and checks the pipelines, without starting
them. The manifest holds exactly the components the config uses, all at the release the compose file pins.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.otel_stack import BUILD_SCRIPT, binary, collector_environment
from tests.e2e.test_bundle_support import COLLECTOR_CONFIG, COMPOSE_FILE, REPO

pytestmark = pytest.mark.e2e

MANIFEST = REPO / "collector" / "builder-config.yaml"
KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")


def validate(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("otelcol-victor"), "validate", f"--config={config}"], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def used_components(config: dict[str, object]) -> dict[str, set[str]]:
    """Component types (``otlp_grpc`` of ``otlp_grpc/tempo``) the config declares, per kind."""
    return {kind: {name.split("/")[0] for name in (config.get(kind) or {})} for kind in KINDS}  # type: ignore[attr-defined]


def built_components() -> dict[str, set[str]]:
    """Component types compiled into the binary, per kind (``otelcol-victor components``)."""
    listing = yaml.safe_load(subprocess.run([binary("otelcol-victor"), "components"], capture_output=True, text=True,
                                            timeout=60, check=True).stdout)
    return {kind: {entry["name"] for entry in listing.get(kind) or []} for kind in KINDS}


def test_the_shipped_config_validates_with_its_defaults_and_with_the_tests_endpoints() -> None:
    import os

    base = {key: value for key, value in os.environ.items() if not key.endswith("_ENDPOINT")}
    defaults = validate(COLLECTOR_CONFIG, base)
    assert defaults.returncode == 0, defaults.stderr
    native = collector_environment(tempo="127.0.0.1:14317", loki="http://127.0.0.1:9428/insert/opentelemetry",
                                   prometheus="http://127.0.0.1:19090/api/v1/otlp")
    overridden = validate(COLLECTOR_CONFIG, {**base, **native})
    assert overridden.returncode == 0, overridden.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["exporters"]["otlp_grpc/tempo"].update(endpont="tempo:4317"), "endpont"),
        (lambda c: c["processors"]["memory_limiter"].update(check_interval="soon"), "check_interval"),
        (lambda c: (c["exporters"].update(loki={"endpoint": "http://loki:3100/loki/api/v1/push"}),
                    c["service"]["pipelines"]["logs"].update(exporters=["loki"])), "loki"),
    ],
    ids=["unknown key", "wrong type", "component not built (the removed loki exporter)"],
)
def test_validate_rejects_what_would_stop_the_collector_at_start_up(tmp_path: Path, change: object,
                                                                     message: str) -> None:
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    change(config)  # type: ignore[operator]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    result = validate(broken)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_the_manifest_builds_exactly_the_components_the_config_uses() -> None:
    config = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    assert built_components() == used_components(config)
    manifest = yaml.safe_load(MANIFEST.read_text())
    modules = [entry["gomod"] for kind in KINDS for entry in manifest.get(kind) or []]
    assert len(modules) == sum(map(len, used_components(config).values()))


def test_one_collector_release_everywhere() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    release = manifest["dist"]["version"]
    versions = {entry["gomod"].split()[1] for kind in KINDS for entry in manifest.get(kind) or []}
    assert versions == {f"v{release}"}
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert compose["services"]["otel-collector"]["image"] == f"otel/opentelemetry-collector-contrib:{release}"
    assert f"otelcol-contrib {release}" in COLLECTOR_CONFIG.read_text()
    listing = subprocess.run([binary("otelcol-victor"), "--version"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    assert release in listing


def test_build_script_caches_by_version_and_prints_the_collector_last() -> None:
    result = subprocess.run(["bash", str(BUILD_SCRIPT), "--check"], capture_output=True, text=True, timeout=60,
                            check=True)
    lines = result.stdout.strip().splitlines()
    release = yaml.safe_load(MANIFEST.read_text())["dist"]["version"]
    assert re.search(rf"/otelcol-victor-{re.escape(release)}-[0-9a-f]{{12}}$", lines[-1])
    assert not Path(lines[-1]).resolve().is_relative_to(REPO), "binaries are cached outside the repository"
    # Prometheus' Go module version v0.3MM.P is the release v3.MM.P the compose file pins.
    image = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["prometheus"]["image"]
    major, minor, patch = re.fullmatch(r"prom/prometheus:v(\d+)\.(\d+)\.(\d+)", image).groups()  # type: ignore[union-attr]
    paths = dict(line.split(" ", 1) for line in lines[:-1])
    assert paths["prometheus"].endswith(f"/prometheus-v0.{major}{int(minor):02d}.{patch}")
    assert all(Path(path).is_file() for path in paths.values())


def test_the_tests_set_exactly_the_configs_variables_and_compose_needs_none() -> None:
    text = "\n".join(line for line in COLLECTOR_CONFIG.read_text().splitlines() if not line.lstrip().startswith("#"))
    variables = dict(re.findall(r"\$\{env:([A-Z0-9_]+):-([^}]*)\}", text))
    native = collector_environment(tempo="t:1", loki="http://l", prometheus="http://p")
    assert set(variables) == set(native)
    assert len(re.findall(r"\$\{", text)) == len(variables), "every variable has a default"
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for variable, default in variables.items():
        if variable == "COLLECTOR_METRICS_PORT":
            assert default == "8888"
            continue
        host = re.sub(r"^https?://", "", default).split(":")[0]
        assert host in compose or host == "0.0.0.0", f"{variable}: {default} is no compose service"
