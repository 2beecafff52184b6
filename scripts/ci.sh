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

step "docs (rustdoc -D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "benchmarks build and run once each (criterion test mode; no timing is checked)"
cargo test -p stunedge-bench --benches --locked

step "fuzz target builds (bench/fuzz)"
cargo build --manifest-path bench/fuzz/Cargo.toml --locked

step "config drift (configs/stunedge.toml == stunedge --print-config)"
cargo run --quiet --locked --bin stunedge -- --print-config | diff -u configs/stunedge.toml - \
  || { echo "configs/stunedge.toml drifted: run 'cargo run -- --print-config > configs/stunedge.toml'"; exit 1; }

step "all checks passed"
