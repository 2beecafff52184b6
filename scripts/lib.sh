# Sourced by the scripts that start processes (bench.sh, check-dashboard.sh): a scratch
# directory `$work`, and a trap that stops every process whose PID was added to `started`
# (only those: never anything this script did not start) and removes the directory.
work=$(mktemp -d)
started=()
cleanup() {
  local pid
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
