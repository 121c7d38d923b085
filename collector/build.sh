#!/usr/bin/env bash
# Builds, from their Go modules (through the module proxy), the programs the collector path needs:
#   otelcol-victor  our collector distribution (collector/builder-config.yaml, through ocb)
#   prometheus      Prometheus 3, the release docker-compose.yml pins (Go module v0.3MM.P = v3.MM.P)
#   jaeger          Jaeger v2, the trace store the tests use in Tempo's place
#   victoria-logs   VictoriaLogs, the log store the tests use in Loki's place
# Each binary is cached outside the repository, keyed by version (the collector also by a hash of its
# manifest): a warm run only checks the cache. Prints "<name> <path>" per program; the last line is the
# collector's path alone.
#
#   bash collector/build.sh            # build what is missing
#   bash collector/build.sh --check    # build nothing; exit 1 if something is missing
#
# VICTOR_OTEL_BIN_CACHE overrides the cache directory (default ~/.cache/victor-otel/bin). The Go caches
# (go env GOMODCACHE GOCACHE) stay where Go puts them.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
MANIFEST="$HERE/builder-config.yaml"
CACHE="${VICTOR_OTEL_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/victor-otel/bin}"
CHECK_ONLY=0
[ "${1:-}" = "--check" ] && CHECK_ONLY=1

# Versions. The collector's comes from its manifest, Prometheus' from the compose file: declared once.
OTELCOL_VERSION="$(sed -n 's/^  version: *\([0-9.]*\).*/\1/p' "$MANIFEST")"
PROMETHEUS_RELEASE="$(sed -n 's|.*image: prom/prometheus:v\(3\.[0-9]*\.[0-9]*\).*|\1|p' "$HERE/docker-compose.yml")"
PROMETHEUS_MODULE_VERSION="$(echo "$PROMETHEUS_RELEASE" | awk -F. '{printf "v0.%d%02d.%d", $1, $2, $3}')"
JAEGER_MODULE_VERSION="v1.76.0"           # the module's v1.76.0 tag is the Jaeger v2.13.0 release
VICTORIALOGS_MODULE_VERSION="v1.52.2"
[ -n "$OTELCOL_VERSION" ] && [ -n "$PROMETHEUS_RELEASE" ] || { echo "build.sh: cannot read the versions" >&2; exit 2; }

MANIFEST_HASH="$(sha256sum "$MANIFEST" | cut -c1-12)"
OTELCOL="$CACHE/otelcol-victor-$OTELCOL_VERSION-$MANIFEST_HASH"
PROMETHEUS="$CACHE/prometheus-$PROMETHEUS_MODULE_VERSION"
JAEGER="$CACHE/jaeger-$JAEGER_MODULE_VERSION"
VICTORIALOGS="$CACHE/victoria-logs-$VICTORIALOGS_MODULE_VERSION"

missing=0
for binary in "$OTELCOL" "$PROMETHEUS" "$JAEGER" "$VICTORIALOGS"; do
  [ -x "$binary" ] || missing=1
done
if [ "$missing" = 1 ]; then
  if [ "$CHECK_ONLY" = 1 ]; then
    echo "build.sh --check: not built yet; run: bash collector/build.sh" >&2
    exit 1
  fi
  command -v go >/dev/null || { echo "build.sh: Go is needed (https://go.dev/dl/)" >&2; exit 2; }
  mkdir -p "$CACHE"
  SCRATCH="$(mktemp -d)"
  trap 'chmod -R u+w "$SCRATCH" 2>/dev/null; rm -rf "$SCRATCH"' EXIT
  export GOFLAGS="${GOFLAGS:-} -trimpath"

  # A module's main package, built as the main module: `go install pkg@version` refuses modules whose
  # go.mod has replace directives (Prometheus and Jaeger have some), so build inside the module's source.
  build_module() {  # <output> <module> <version> <package> [go build flags...]
    local output="$1" module="$2" version="$3" package="$4"
    shift 4
    [ -x "$output" ] && return 0
    echo "building $module@$version ($package)" >&2
    local dir
    dir="$(cd "$SCRATCH" && go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
    [ -n "$dir" ] || { echo "build.sh: cannot download $module@$version" >&2; exit 1; }
    (cd "$dir" && GOWORK=off go build -o "$output.tmp" "$@" "$package")
    mv "$output.tmp" "$output"
  }

  if [ ! -x "$OTELCOL" ]; then
    echo "building the collector (ocb v$OTELCOL_VERSION, $MANIFEST)" >&2
    GOBIN="$SCRATCH" go install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION"
    # output_path in the manifest is relative: the sources and the binary go to the scratch directory.
    (cd "$SCRATCH" && ./builder --config "$MANIFEST" >"$SCRATCH/ocb.log" 2>&1) || { cat "$SCRATCH/ocb.log" >&2; exit 1; }
    mv "$SCRATCH/otelcol-victor/otelcol-victor" "$OTELCOL"
  fi
  # remove_all_sd: no cloud service discoveries (the tests use static targets); the UI's assets are not
  # embedded (no builtinassets tag): the HTTP API is all the tests and the scripts use.
  build_module "$PROMETHEUS" github.com/prometheus/prometheus "$PROMETHEUS_MODULE_VERSION" ./cmd/prometheus \
    -tags remove_all_sd
  build_module "$JAEGER" github.com/jaegertracing/jaeger "$JAEGER_MODULE_VERSION" ./cmd/jaeger
  build_module "$VICTORIALOGS" github.com/VictoriaMetrics/VictoriaLogs "$VICTORIALOGS_MODULE_VERSION" \
    ./app/victoria-logs
fi

echo "prometheus $PROMETHEUS"
echo "jaeger $JAEGER"
echo "victoria-logs $VICTORIALOGS"
echo "otelcol-victor $OTELCOL"
echo "$OTELCOL"
