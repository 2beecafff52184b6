# Sourced by the scripts that start processes (bench.sh, bench-stream.sh, check-dashboard.sh):
# a scratch directory `$work`, and a trap that stops every process whose PID was added to
# `started` (only those: never anything this script did not start) and removes the directory;
# and `release_bins`, the binaries a benchmark runs.
work=$(mktemp -d)
started=()
cleanup() {
  local pid
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# release_bins SCRIPT BIN...: sets BIN to the directory of the release binaries: $BIN_DIR when
# set, else target/release after building them; exits 2 (naming SCRIPT) if one of BIN... is
# missing or not executable there.
release_bins() {
  local script=$1 b
  shift
  if [[ -n "${BIN_DIR:-}" ]]; then
    BIN=$BIN_DIR
  else
    echo "== building release binaries"
    cargo build --release --locked -p stunedge -p stunedge-bench
    BIN=target/release
  fi
  for b in "$@"; do
    [[ -x "$BIN/$b" ]] || { echo "$script: $BIN/$b is missing" >&2; exit 2; }
  done
}
