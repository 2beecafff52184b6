#!/usr/bin/env bash
# Every check CI runs, in order; README's test command. Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "test dependencies (installed if missing and root with apt-get; otherwise stop and say which)"
scripts/install-test-deps.sh

# Every test that skips appends "SKIPPED: <test>: <why>" here (tests/integration/support.rs);
# the last step summarises it. With CI set a test cannot skip (it fails instead).
mkdir -p target
export STUNEDGE_SKIP_LOG="$PWD/target/ci-skipped.log"
: > "$STUNEDGE_SKIP_LOG"

step "format (rustfmt --check)"
cargo fmt --all -- --check
cargo fmt --manifest-path bench/fuzz/Cargo.toml -- --check

step "lints (clippy -D warnings, every target)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the committed XDP object is what its source builds to (clang, reproducible flags)"
scripts/build-xdp.sh --check

step "layering (no module imports a room above it in docs/architecture.md's table)"
scripts/check-layers.sh --self-test
scripts/check-layers.sh

step "tests (unit, property, integration, interop)"
cargo test --workspace --locked

step "steady state allocates nothing (whole server on loopback, alone in its process)"
cargo test --locked --test integration -- --ignored --test-threads=1

step "bench.sh's perf breakdown (PROFILE=1) sorts call stacks as documented"
python3 scripts/perf-breakdown.py --self-test

step "docs (rustdoc -D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "benchmarks build and run once each (criterion test mode; no timing is checked)"
cargo test -p stunedge-bench --benches --locked

step "load generator smoke: 2 s against a real stunedge (correctness only: zero invalid, something answered)"
cargo build --locked -p stunedge -p stunedge-bench

# smoke NAME PORT_PATTERN GENERATOR_ARGS... -- SERVER_COMMAND...: starts the server on an
# ephemeral port, reads the port from its log with the sed pattern, runs the generator against
# it (which exits non-zero on any invalid answer or when nothing answers), stops the server and
# requires a clean exit.
smoke() {
  local name=$1 pattern=$2; shift 2
  local gen=()
  while [[ $1 != -- ]]; do gen+=("$1"); shift; done
  shift
  local port=""
  # Globals, so the EXIT trap still sees them if a check below exits.
  smoke_dir=$(mktemp -d)
  "$@" 2> "$smoke_dir/server.log" &
  smoke_pid=$!
  trap 'kill "$smoke_pid" 2>/dev/null || true; rm -rf "$smoke_dir"' EXIT
  for _ in $(seq 100); do
    port=$(sed -n "s/$pattern/\\1/p" "$smoke_dir/server.log")
    [[ -n "$port" ]] && break
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "$name did not start:"; cat "$smoke_dir/server.log"; exit 1; }
  echo "--- $name $(grep -o 'backend="[a-z_]*"' "$smoke_dir/server.log" || true)"
  target/debug/stunedge-bench -s "127.0.0.1:$port" -q "${gen[@]}"
  kill "$smoke_pid"
  wait "$smoke_pid" || { echo "$name did not stop cleanly"; exit 1; }
  trap - EXIT
  rm -rf "$smoke_dir"
}

for backend in auto mmsg; do
  config=$(mktemp)
  printf '[server]\nlisten = ["127.0.0.1:0"]\n[io]\nbackend = "%s"\n[admin]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "info"\n' "$backend" > "$config"
  smoke "stunedge (io.backend = $backend)" '.*listen="127\.0\.0\.1:\([0-9]*\)".*' \
    -d 2 --sockets 4 --mix plain=4,fingerprint=2,software=1,integrity=1,ice=1,classic=1 -- \
    target/debug/stunedge serve -c "$config"
  rm -f "$config"
done
# The bare baseline too (plain requests: it answers nothing else correctly, by design).
smoke stunedge-baseline '.*listening on 127\.0\.0\.1:\([0-9]*\).*' -d 1 --sockets 4 -- \
  target/debug/stunedge-baseline --listen 127.0.0.1:0 --cpus 0

step "Grafana dashboard against a real Prometheus; promtool, systemd-analyze and YAML checks of configs/"
scripts/check-dashboard.sh

step "host tuning script: dry run prints its plan and changes nothing"
scripts/tune-host.sh > /dev/null

step "fuzz target builds (bench/fuzz)"
cargo build --manifest-path bench/fuzz/Cargo.toml --locked

step "config drift (configs/stunedge.toml == stunedge --print-config)"
cargo run --quiet --locked --bin stunedge -- --print-config | diff -u configs/stunedge.toml - \
  || { echo "configs/stunedge.toml drifted: run 'cargo run -- --print-config > configs/stunedge.toml'"; exit 1; }

step "skipped tests"
if [[ -s $STUNEDGE_SKIP_LOG ]]; then
  cat "$STUNEDGE_SKIP_LOG"
  echo "$(wc -l < "$STUNEDGE_SKIP_LOG") skipped (listed above, each with why)"
  [[ -z ${CI:-} ]] || { echo "CI must not skip a test"; exit 1; }
else
  echo "0 skipped"
fi

step "all checks passed"
