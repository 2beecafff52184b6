#!/usr/bin/env bash
# Every check CI runs, in order; README's test command. Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "format (rustfmt --check)"
cargo fmt --all -- --check
cargo fmt --manifest-path bench/fuzz/Cargo.toml -- --check

step "lints (clippy -D warnings, every target)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (unit, property, integration, interop)"
cargo test --workspace --locked

step "steady state allocates nothing (whole server on loopback, alone in its process)"
cargo test --locked --test integration -- --ignored --test-threads=1

step "docs (rustdoc -D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "benchmarks build and run once each (criterion test mode; no timing is checked)"
cargo test -p stunedge-bench --benches --locked

step "load generator smoke: 2 s against a real stunedge (correctness only: zero invalid, something answered)"
cargo build --locked -p stunedge -p stunedge-bench
for backend in auto mmsg; do
  smoke=$(mktemp -d)
  printf '[server]\nlisten = ["127.0.0.1:0"]\n[io]\nbackend = "%s"\n[log]\nlevel = "info"\n' "$backend" > "$smoke/stunedge.toml"
  target/debug/stunedge serve -c "$smoke/stunedge.toml" 2> "$smoke/server.log" &
  server_pid=$!
  trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$smoke"' EXIT
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listen="127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$smoke/server.log")
    [[ -n "$port" ]] && break
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "stunedge did not start:"; cat "$smoke/server.log"; exit 1; }
  echo "--- io.backend = $backend: $(grep -o 'backend="[a-z_]*"' "$smoke/server.log")"
  target/debug/stunedge-bench -s "127.0.0.1:$port" -d 2 --sockets 4 --mix plain=4,fingerprint=2,software=1,integrity=1,ice=1,classic=1 -q
  kill "$server_pid"
  wait "$server_pid" || { echo "stunedge did not stop cleanly"; exit 1; }
  trap - EXIT
  rm -rf "$smoke"
done

# The bare baseline too (plain requests: it answers nothing else correctly, by design).
smoke=$(mktemp -d)
target/debug/stunedge-baseline --listen 127.0.0.1:0 --cpus 0 2> "$smoke/baseline.log" &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$smoke"' EXIT
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$smoke/baseline.log")
  [[ -n "$port" ]] && break
  sleep 0.1
done
[[ -n "$port" ]] || { echo "stunedge-baseline did not start:"; cat "$smoke/baseline.log"; exit 1; }
echo "--- stunedge-baseline"
target/debug/stunedge-bench -s "127.0.0.1:$port" -d 1 --sockets 4 -q
kill "$server_pid"
wait "$server_pid" || { echo "stunedge-baseline did not stop cleanly"; exit 1; }
trap - EXIT
rm -rf "$smoke"

step "fuzz target builds (bench/fuzz)"
cargo build --manifest-path bench/fuzz/Cargo.toml --locked

step "config drift (configs/stunedge.toml == stunedge --print-config)"
cargo run --quiet --locked --bin stunedge -- --print-config | diff -u configs/stunedge.toml - \
  || { echo "configs/stunedge.toml drifted: run 'cargo run -- --print-config > configs/stunedge.toml'"; exit 1; }

step "all checks passed"
