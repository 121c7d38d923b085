#!/usr/bin/env bash
# The peer SDKs of `python -m benchmarks --only peer` that cannot share our environment: OpenLLMetry's
# traceloop-sdk and OpenLIT pin OpenTelemetry (and dozens of instrumentations) in ways that conflict with
# ours, so they go, without their dependencies, into a directory of their own (.bench-peers/, git-ignored),
# beside the few pure modules their decorators import. The peer case appends that directory to sys.path
# AFTER the environment's own packages, so that every package both have (OpenTelemetry first of all) is the
# environment's: the peers run on the same OpenTelemetry SDK as we do. logfire installs normally, through
# the `bench` extra (pip install -e '.[bench]').
#
#   bash benchmarks/install_peers.sh [DIR]     # DIR defaults to .bench-peers at the repository's root
#   VICTOR_OTEL_BENCH_PEERS_PATH=DIR python -m benchmarks --only peer   # when DIR is not the default
#
# Checked with traceloop-sdk 0.62.4 and openlit 1.45.0 on OpenTelemetry SDK 1.45.2; newer releases may
# import more than the list below: the peer case then reports them as "not installed" with the import error.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
TARGET="${1:-.bench-peers}"
OTEL="$("$PYTHON" -c "import importlib.metadata as m; print(m.version('opentelemetry-sdk'))")"
rm -rf "$TARGET"
# One pip call: with --target, a second call would replace the shared `opentelemetry` directory it wrote.
"$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$TARGET" \
  "traceloop-sdk==0.62.4" "openlit==1.45.0" \
  "opentelemetry-exporter-otlp-proto-grpc==$OTEL" grpcio \
  "opentelemetry-semantic-conventions-ai>=0.5.1,<0.6" \
  opentelemetry-instrumentation-logging opentelemetry-instrumentation-threading \
  opentelemetry-instrumentation-requests opentelemetry-instrumentation-urllib3 \
  opentelemetry-instrumentation-redis opentelemetry-instrumentation-sqlalchemy \
  colorama cuid tenacity deprecated jinja2 markupsafe \
  aiohttp aiohappyeyeballs aiosignal attrs frozenlist multidict propcache yarl
echo "peer SDKs installed in $TARGET (without dependencies; OpenTelemetry SDK $OTEL from the environment)"
