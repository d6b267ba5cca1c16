#!/usr/bin/env bash
# The test command: scripts/test.sh [cargo test arguments]
#
# Runs `cargo test --workspace --locked` (or the packages -p names) once what
# those packages' tests need is set up, so that a fresh clone with only Rust
# and what the line below names installed, nothing started or configured,
# passes. span-links and orders-telemetry need nothing more; the others need:
# - a PostgreSQL (orders, orders-load, orders-api, orders-batch): the one
#   DATABASE_URL names, else a throwaway one started here from the installed
#   server binaries (Debian: the `postgresql` package; 127.0.0.1, a free port,
#   trusted superuser postgres), stopped and deleted when this script exits,
#   however it exits;
# - the pinned Python tools, .ci/tools/requirements.txt (orders-load,
#   orders-api, orders-batch, orders-test-support): docker-compose, which the
#   compose-environment tests run, and for orders-api Schemathesis and
#   openapi-python-client; installed into .ci/tools/.venv (python3 with venv);
# - kubectl (orders-api, orders-batch, orders-test-support): tests render
#   kubernetes/ with its kustomize;
# - Go (orders-batch, orders-test-support): the project's collector
#   (collector/builder-config.yaml, by the OpenTelemetry Collector Builder) and
#   Jaeger (.ci/tools/jaeger), which the chain's tests run, are built into
#   target/ when missing or older than their pins (quick once Go's caches are
#   warm).
# What it cannot install it names in one line, and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
  echo "scripts/test.sh: $*" >&2
  exit 1
}
venv=.ci/tools/.venv
root() { [ "$(id -u)" = 0 ]; }

# The packages named (-p NAME, -pNAME, --package NAME, --package=NAME), else
# all; --workspace would override them, so it is added only when none is.
packages=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --) break ;;
    -p | --package) packages+=("${args[i + 1]:-}") ;;
    -p?*) packages+=("${args[i]#-p}") ;;
    --package=*) packages+=("${args[i]#--package=}") ;;
  esac
done
workspace=
[ ${#packages[@]} -gt 0 ] || { workspace=--workspace; packages=(orders orders-load orders-api orders-batch orders-test-support); }
postgres= compose= kubectl= go=
for package in "${packages[@]}"; do
  case "$package" in
    orders) postgres=1 ;;
    orders-load) postgres=1 compose=1 ;;
    orders-api) postgres=1 compose=1 kubectl=1 ;;
    orders-batch) postgres=1 compose=1 kubectl=1 go=1 ;;
    orders-test-support) compose=1 kubectl=1 go=1 ;;
  esac
done

command -v cargo >/dev/null || missing "cargo is missing: install Rust (https://rustup.rs)"
[ -z "$postgres$compose" ] || command -v python3 >/dev/null || missing "python3 is missing: install python3 and python3-venv (the throwaway PostgreSQL and the compose tests use it)"
if [ -n "$compose" ]; then
  [ -x "$venv/bin/pip" ] || python3 -c 'import ensurepip' 2>/dev/null ||
    missing "python3 cannot create a virtual environment: install python3-venv"
fi
[ -z "$go" ] || command -v go >/dev/null || missing "go is missing: install Go 1.26 (https://go.dev/dl/): the tests build the project's collector and Jaeger with it"
[ -z "$kubectl" ] || command -v kubectl >/dev/null || missing "kubectl is missing: install kubectl 1.32 (the tests render kubernetes/ with its kustomize; https://kubernetes.io/docs/tasks/tools/)"
if [ -n "$postgres" ] && [ -z "${DATABASE_URL:-}" ]; then
  initdb="$(command -v initdb || printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)"
  bin="${initdb%/initdb}"
  [ -x "$initdb" ] && [ -x "$bin/pg_ctl" ] ||
    missing "PostgreSQL's server binaries (initdb, pg_ctl) are missing: install them (Debian: apt-get install postgresql), or set DATABASE_URL"
  ! root || id postgres >/dev/null 2>&1 ||
    missing "as root, PostgreSQL needs a postgres user to run as: install Debian's postgresql package, which creates it, or set DATABASE_URL"
fi

if [ -n "$compose" ]; then
  if [ ! -x "$venv/bin/pip" ]; then
    echo "scripts/test.sh: installing the pinned Python tools into $venv"
    python3 -m venv "$venv" || missing "python3 -m venv failed: install python3-venv"
  fi
  # Quick, and offline, when the pins are installed already.
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r .ci/tools/requirements.txt ||
    missing "cannot install .ci/tools/requirements.txt from PyPI: check the network or proxy (pip's error above)"
fi

# Built once; rebuilt when a pin is newer than the build.
build() {
  local what="$1" built="$2" pins="$3"
  shift 3
  [ "$built" -nt "$pins" ] && return
  echo "scripts/test.sh: building $what into $(dirname "$built") (Go's module and build caches make it quick after the first time)"
  mkdir -p target
  "$@" >"target/build-$(basename "$built").log" 2>&1 ||
    { tail -n 20 "target/build-$(basename "$built").log" >&2; missing "cannot build $what with Go (its log above): check the Go module proxy (GOPROXY)"; }
}
if [ -n "$go" ]; then
  build "the collector" target/otelcol/otelcol-orders collector/builder-config.yaml \
    go run go.opentelemetry.io/collector/cmd/builder@v0.165.0 --config collector/builder-config.yaml
  build "Jaeger" target/jaeger/jaeger .ci/tools/jaeger/go.mod \
    sh -c 'cd .ci/tools/jaeger && go build -o ../../../target/jaeger/jaeger github.com/jaegertracing/jaeger/cmd/jaeger'
fi

if [ -n "$postgres" ] && [ -z "${DATABASE_URL:-}" ]; then
  tmp="$(mktemp -d)"
  # initdb refuses to run as root: then the server runs as the postgres user.
  as_server_user() {
    if root; then (cd "$tmp" && runuser -u postgres -- "$@"); else "$@"; fi
  }
  stop() {
    as_server_user "$bin/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
  }
  trap stop EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  ! root || chown postgres: "$tmp"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  as_server_user "$bin/initdb" -D "$tmp/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
    >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; exit 1; }
  # A running test holds a handful of connections (its sqlx::test pool and
  # its binaries' pools; 13 when two binaries run at once) and cargo runs a
  # test a core at once: 300 serves 20 cores and more. fsync=off: nothing here outlives the run.
  as_server_user "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -s start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $tmp -c max_connections=300 -c fsync=off" ||
    { cat "$tmp/server.log" >&2; exit 1; }
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "scripts/test.sh: a throwaway PostgreSQL in $tmp at $DATABASE_URL (set DATABASE_URL to use your own)"
fi

cargo test ${workspace:+"$workspace"} --locked "$@"
