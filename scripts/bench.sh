#!/usr/bin/env bash
# Side-by-side STUN benchmark: stunedge (io_uring and mmsg backends), the bare recvmmsg/sendmmsg baseline and
# coturn's STUN-only mode, each pinned to the server CPUs and driven by stunedge-bench pinned to
# the other CPUs, alternating A B C A B C…, then a zero-loss run at 80 % of stunedge's peak and a
# cross-check against the kernel's /proc/net/snmp. Prints medians, spreads and ratios and writes
# bench/results/<date>-<host>.md. Stops every process it started (by PID), also on Ctrl-C.
#
# Settings (environment):
#   SERVER_CPUS  server CPUs (default: first half of the CPUs, 0 on a 2-CPU machine)
#   GEN_CPUS     generator CPUs (default: the other half)
#   REPS         repetitions of each server (default 3, at least 3)
#   DURATION     seconds per run (default 5)
#   GEN_ARGS     extra stunedge-bench arguments (default: sockets/window/batch scaled to GEN_CPUS)
#   BIN_DIR      use prebuilt stunedge, stunedge-bench, stunedge-baseline from here (no cargo)
#   SERVERS      which servers, space-separated (default "stunedge-uring stunedge-mmsg baseline coturn";
#                also stunedge-uring-sqe: io_uring sending one SQE per answer (io.uring_send = "sqe"),
#                stunedge-uring-coop: io_uring with io.uring_taskrun = "coop", and
#                stunedge-auth: io_uring with short-term authentication required for the
#                generator's default credentials; compare it with GEN_ARGS="... --mix integrity=1";
#                stunedge-scraped: io_uring with its admin endpoint scraped every second, to
#                compare with stunedge-uring, whose admin endpoint is off, and stunedge-admin, whose
#                endpoint is on but not scraped)
#                stunedge-limited: io_uring with the response rate limit enforced on the generator's
#                traffic (loopback not exempt; limit.rate raised so that it stays inside its budget:
#                every answer is looked up and charged in the shared table), to compare with
#                stunedge-limit-off (limit.mode = "off")
#                stunedge-turn-lb: io_uring with a [turn_lb] pool of three backends (on loopback
#                addresses where nothing answers, so the health thread probes them all the
#                while), to compare with stunedge-uring: what balancing costs Binding
#   SCRAPER_CPUS where stunedge-scraped's scraper runs (default: GEN_CPUS)
#   PROFILE      1: during each server's first repetition, sample the server CPUs with
#                `perf record -g` and add a table of where their time goes (send path, loopback
#                delivery, receive path, io_uring, userspace) to the results; needs perf and python3
#   RESULTS      results file (default bench/results/<date>-<host>.md)
#   COMMIT       commit to name in the results (default: git rev-parse --short HEAD)
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DURATION=${DURATION:-5}
SERVERS=${SERVERS:-"stunedge-uring stunedge-mmsg baseline coturn"}
(( REPS >= 3 )) || { echo "bench.sh: REPS must be at least 3" >&2; exit 2; }

ncpu=$(nproc)
if [[ -z "${SERVER_CPUS:-}" || -z "${GEN_CPUS:-}" ]]; then
  if (( ncpu < 2 )); then echo "bench.sh: needs at least 2 CPUs (server and generator)" >&2; exit 2; fi
  half=$(( ncpu / 2 ))
  SERVER_CPUS=${SERVER_CPUS:-0-$(( half - 1 ))}
  GEN_CPUS=${GEN_CPUS:-$half-$(( ncpu - 1 ))}
fi
count_cpus() { local n=0 part; for part in ${1//,/ }; do if [[ $part == *-* ]]; then n=$(( n + ${part#*-} - ${part%-*} + 1 )); else n=$(( n + 1 )); fi; done; echo $n; }
server_n=$(count_cpus "$SERVER_CPUS")
gen_n=$(count_cpus "$GEN_CPUS")
GEN_ARGS=${GEN_ARGS:-"--threads $gen_n --sockets 8 --window 128 --batch 64 --sources 16"}

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
release_bins bench.sh stunedge stunedge-bench stunedge-baseline

if [[ " $SERVERS " == *" coturn "* ]] && ! command -v turnserver >/dev/null 2>&1; then
  echo "== coturn missing: installing it (apt-get install coturn)"
  if ! { timeout 120 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends coturn; } >/dev/null 2>&1; then
    echo "SKIPPED coturn: not installed and apt-get could not install it on this machine"
    SERVERS=${SERVERS//coturn/}
  fi
fi

port_of() { case $1 in stunedge-uring) echo 3478;; baseline) echo 3479;; coturn) echo 3480;; stunedge-mmsg) echo 3481;; stunedge-uring-sqe) echo 3482;; stunedge-auth) echo 3483;; stunedge-scraped) echo 3484;; stunedge-admin) echo 3485;; stunedge-uring-coop) echo 3486;; stunedge-limited) echo 3487;; stunedge-limit-off) echo 3488;; stunedge-turn-lb) echo 3489;; esac; }
ADMIN_PORT=${ADMIN_PORT:-19478}
SCRAPER_CPUS=${SCRAPER_CPUS:-$GEN_CPUS}

server_cmd() {
  local port; port=$(port_of "$1")
  case $1 in
    stunedge-uring|stunedge-uring-sqe|stunedge-uring-coop|stunedge-mmsg|stunedge-auth|stunedge-scraped|stunedge-admin|stunedge-limited|stunedge-limit-off|stunedge-turn-lb)
      # Build the CPU list in TOML from SERVER_CPUS.
      local list="" part backend=io_uring send=sendmmsg taskrun=defer
      [[ $1 == stunedge-mmsg ]] && backend=mmsg
      [[ $1 == stunedge-uring-sqe ]] && send=sqe
      [[ $1 == stunedge-uring-coop ]] && taskrun=coop
      for part in ${SERVER_CPUS//,/ }; do
        if [[ $part == *-* ]]; then list+=$(seq -s, "${part%-*}" "${part#*-}"),; else list+=$part,; fi
      done
      printf '[server]\nlisten = ["127.0.0.1:%s"]\n[io]\nbackend = "%s"\nuring_send = "%s"\nuring_taskrun = "%s"\ncpus = [%s]\n[log]\nlevel = "warn"\n' "$port" "$backend" "$send" "$taskrun" "${list%,}" > "$work/$1.toml"
      # The generator's default short-term credentials (stunedge-bench --username/--password).
      # The admin endpoint (metrics) only where it is scraped.
      if [[ $1 == stunedge-scraped || $1 == stunedge-admin ]]; then
        printf '[admin]\nlisten = "127.0.0.1:%s"\n' "$ADMIN_PORT" >> "$work/$1.toml"
      else
        printf '[admin]\nlisten = ""\n' >> "$work/$1.toml"
      fi
      # Inside the limits: the generator's sockets use as few as 8 sources (127.0.0.x, one /24),
      # 100,000/s per /32 and 3.2 M/s per wider prefix keep ~800 k answers/s inside the budget
      # (the multipliers kept small so that the widest burst fits the table's loads).
      [[ $1 == stunedge-limited ]] && printf '[limit]\nexempt_loopback = false\nrate = 100000\nipv4_multipliers = [32, 32, 32]\n' >> "$work/$1.toml"
      [[ $1 == stunedge-limit-off ]] && printf '[limit]\nmode = "off"\n' >> "$work/$1.toml"
      [[ $1 == stunedge-turn-lb ]] && printf '[turn_lb]\nenabled = true\nprobe_interval = 0.5\nprobe_timeout = 0.2\nbackends = [{ name = "a", udp = ["127.0.0.251:3478"] }, { name = "b", udp = ["127.0.0.252:3478"] }, { name = "c", udp = ["127.0.0.253:3478"] }]\n' >> "$work/$1.toml"
      [[ $1 == stunedge-auth ]] && printf '[auth]\npolicy = "required"\nmechanism = "short-term"\nshort_term_users = { "stunedge-bench" = "VOkJxbRl1RmTxUk/WvJxBt" }\n' >> "$work/$1.toml"
      echo "$BIN/stunedge serve -c $work/$1.toml";;
    baseline) echo "$BIN/stunedge-baseline --listen 127.0.0.1:$port --cpus $SERVER_CPUS";;
    coturn) echo "turnserver -n --stun-only --no-auth -L 127.0.0.1 -p $port --no-cli --no-tls --no-dtls -m $server_n --log-file $work/coturn.log --simple-log";;
  esac
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
json_field() { sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$1"; }
json_latency() { sed -n "s/^    \"$2\": \([0-9.]*\),\{0,1\}$/\1/p" "$1"; }
hz=$(getconf CLK_TCK)

# run_one SERVER OUT [extra generator args]: start, load, stop; writes OUT (JSON) and OUT.cpu.
run_one() {
  local name=$1 out=$2; shift 2
  local port cmd pid t0 t1
  port=$(port_of "$name"); cmd=$(server_cmd "$name")
  # shellcheck disable=SC2086
  taskset -c "$SERVER_CPUS" $cmd > "$work/$name.log" 2>&1 &
  pid=$!; started+=("$pid")
  # Wait until it answers (up to 10 s).
  local i
  for i in $(seq 50); do
    if "$BIN/stunedge-bench" -s "127.0.0.1:$port" --sockets 1 --window 1 -d 0.05 --timeout-ms 100 -q \
      $([[ $name == stunedge-auth ]] && echo --mix integrity=1) >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  local scraper=""
  if [[ $name == stunedge-scraped ]]; then
    # Prometheus's view of a 1 s scrape interval: one GET /metrics per second for the whole run.
    # One long-lived scraper using bash's /dev/tcp (builtins only: no fork or exec per scrape,
    # which would charge the scraper's process start-up to the comparison).
    taskset -c "$SCRAPER_CPUS" bash -c '
      n=0
      while sleep 1; do
        exec 3<>"/dev/tcp/127.0.0.1/$1" || { echo "scrape failed" >&2; continue; }
        printf "GET /metrics HTTP/1.0\r\n\r\n" >&3
        while IFS= read -r -u 3 line; do :; done
        exec 3<&-
        n=$((n + 1))
      done' scraper "$ADMIN_PORT" &
    scraper=$!; started+=("$scraper")
  fi
  local perf_pid=""
  if [[ -n "${PERF_OUT:-}" ]]; then
    # Skip the first second (start-up) and stop a second before the load does.
    (sleep 1; exec perf record -q -C "$SERVER_CPUS" -e cpu-clock -g -o "$PERF_OUT" -- sleep $(( DURATION > 3 ? DURATION - 2 : 1 ))) >/dev/null 2>&1 &
    perf_pid=$!; started+=("$perf_pid")
  fi
  t0=$(cpu_ticks "$pid")
  # shellcheck disable=SC2086
  taskset -c "$GEN_CPUS" "$BIN/stunedge-bench" -s "127.0.0.1:$port" --cpus "$GEN_CPUS" -d "$DURATION" --json -q $GEN_ARGS "$@" > "$out" || true
  t1=$(cpu_ticks "$pid")
  if [[ -n $perf_pid ]]; then wait "$perf_pid" || echo "   perf record failed for $name" >&2; started=("${started[@]/$perf_pid}"); fi
  if [[ -n $scraper ]]; then kill "$scraper"; wait "$scraper" 2>/dev/null || true; started=("${started[@]/$scraper}"); fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  started=("${started[@]/$pid}")
  echo $(( t1 - t0 )) > "$out.cpu"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
minmax() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s–%s", lo, hi}'; }

echo "== $REPS × {$SERVERS}, ${DURATION}s each; server CPUs $SERVER_CPUS, generator CPUs $GEN_CPUS"
echo "   generator: stunedge-bench --cpus $GEN_CPUS -d $DURATION $GEN_ARGS"
if [[ -n "${PROFILE:-}" ]]; then
  for tool in perf python3; do command -v "$tool" >/dev/null || { echo "bench.sh: PROFILE needs $tool" >&2; exit 2; }; done
fi
for rep in $(seq "$REPS"); do
  for s in $SERVERS; do
    PERF_OUT=""
    [[ -n "${PROFILE:-}" && $rep == 1 ]] && PERF_OUT=$work/$s.perf
    run_one "$s" "$work/$s.$rep.json"
    printf '   rep %d %-9s %10.0f valid/s  lost %s  invalid %s  p99 %s µs  generator idle %s\n' "$rep" "$s" \
      "$(json_field "$work/$s.$rep.json" rate)" "$(json_field "$work/$s.$rep.json" lost)" \
      "$(json_field "$work/$s.$rep.json" invalid)" "$(json_latency "$work/$s.$rep.json" p99_us)" \
      "$(json_field "$work/$s.$rep.json" generator_idle)"
  done
done

PERF_OUT=""
declare -A med spread cpu_us cpu_pct p99 invalid lost
for s in $SERVERS; do
  cpu_pct[$s]=$(for r in $(seq "$REPS"); do
    awk -v t="$(cat "$work/$s.$r.json.cpu")" -v hz="$hz" -v d="$DURATION" -v n="$server_n" \
      'BEGIN { printf "%.0f\n", 100 * t / hz / d / n }'; done | median)
  med[$s]=$(for r in $(seq "$REPS"); do json_field "$work/$s.$r.json" rate; done | median)
  spread[$s]=$(for r in $(seq "$REPS"); do printf '%.0f\n' "$(json_field "$work/$s.$r.json" rate)"; done | minmax)
  p99[$s]=$(for r in $(seq "$REPS"); do json_latency "$work/$s.$r.json" p99_us; done | median)
  invalid[$s]=$(for r in $(seq "$REPS"); do json_field "$work/$s.$r.json" invalid; done | awk '{s+=$1} END {print s+0}')
  lost[$s]=$(for r in $(seq "$REPS"); do json_field "$work/$s.$r.json" lost; done | awk '{s+=$1} END {print s+0}')
  cpu_us[$s]=$(for r in $(seq "$REPS"); do
    awk -v t="$(cat "$work/$s.$r.json.cpu")" -v v="$(json_field "$work/$s.$r.json" valid)" -v hz="$hz" \
      'BEGIN { if (v > 0) printf "%.3f\n", t * 1e6 / hz / v }'; done | median)
done

# The stunedge variant the extra checks use: io_uring when benchmarked, else mmsg.
primary=""
for s in $SERVERS; do [[ -z "$primary" && $s == stunedge-* ]] && primary=$s; done

# Is the generator the bottleneck? With several generator CPUs, run stunedge once more with half
# the generator threads: the same rate means the full generator has room to spare.
half_text=""
if [[ -n "$primary" ]] && (( gen_n >= 2 )); then
  half_args=$(sed "s/--threads [0-9]*/--threads $(( gen_n / 2 ))/" <<< "$GEN_ARGS")
  echo "== generator check: stunedge with $(( gen_n / 2 )) generator threads instead of $gen_n"
  GEN_ARGS_SAVED=$GEN_ARGS; GEN_ARGS=$half_args
  run_one "$primary" "$work/stunedge.half.json"
  GEN_ARGS=$GEN_ARGS_SAVED
  half_text="With half the generator threads ($(( gen_n / 2 ))) $primary answered $(printf '%.0f' "$(json_field "$work/stunedge.half.json" rate)")/s, against a median of $(printf '%.0f' "${med[$primary]}")/s with all $gen_n: $(ratio "$(json_field "$work/stunedge.half.json" rate)" "${med[$primary]}")."
fi

# Zero loss at 80 % of stunedge's median peak (open loop, paced).
zl_rate=0; zl_file=""
if [[ -n "$primary" ]]; then
  zl_rate=$(awk -v m="${med[$primary]}" 'BEGIN { printf "%d", m * 0.8 }')
  zl_file=$work/stunedge.zeroloss.json
  echo "== zero-loss run: $primary at $zl_rate req/s (80 % of its median peak), open loop"
  snmp_before=$(grep '^Udp: [0-9]' /proc/net/snmp)
  run_one "$primary" "$zl_file" --rate "$zl_rate"
  snmp_after=$(grep '^Udp: [0-9]' /proc/net/snmp)
  # Junk interleaved with valid requests must not cost a valid answer below saturation: half the
  # peak rate of requests plus one junk datagram (five kinds, all dropped) per two requests.
  junk_rate=$(awk -v m="${med[$primary]}" 'BEGIN { printf "%d", m * 0.5 }')
  junk_file=$work/stunedge.junk.json
  echo "== junk run: $primary at $junk_rate req/s plus 50 junk datagrams per 100 requests"
  run_one "$primary" "$junk_file" --rate "$junk_rate" --junk 50
fi

table=$work/table.md
{
  echo "| server | median valid/s | min–max | p99 µs (median) | server CPU µs / request | server CPU busy | invalid | lost |"
  echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
  for s in $SERVERS; do
    printf '| %s | %.0f | %s | %s | %s | %s %% | %s | %s |\n' "$s" "${med[$s]}" "${spread[$s]}" "${p99[$s]}" "${cpu_us[$s]}" "${cpu_pct[$s]}" "${invalid[$s]}" "${lost[$s]}"
  done
  echo
  echo "| ratio | value |"
  echo "| --- | ---: |"
  if [[ -n "${med[baseline]:-}" ]]; then
    for s in $SERVERS; do [[ $s == baseline ]] || echo "| $s ÷ baseline | $(ratio "${med[$s]}" "${med[baseline]}") |"; done
  fi
  if [[ -n "${med[coturn]:-}" ]]; then
    for s in $SERVERS; do [[ $s == stunedge-* ]] && echo "| $s ÷ coturn | $(ratio "${med[$s]}" "${med[coturn]}") |"; done
  fi
  if [[ -n "${med[stunedge-uring]:-}" && -n "${med[stunedge-scraped]:-}" ]]; then
    echo "| stunedge-scraped ÷ stunedge-uring (scraped every second ÷ metrics endpoint off) | $(ratio "${med[stunedge-scraped]}" "${med[stunedge-uring]}") |"
    echo "| stunedge-uring ÷ stunedge-scraped, CPU µs per request | $(ratio "${cpu_us[stunedge-uring]}" "${cpu_us[stunedge-scraped]}") |"
  fi
  if [[ -n "${med[stunedge-limit-off]:-}" && -n "${med[stunedge-limited]:-}" ]]; then
    echo "| stunedge-limited ÷ stunedge-limit-off (rate limit enforced, inside the limits ÷ off) | $(ratio "${med[stunedge-limited]}" "${med[stunedge-limit-off]}") |"
    echo "| stunedge-limited ÷ stunedge-limit-off, CPU µs per request | $(ratio "${cpu_us[stunedge-limited]}" "${cpu_us[stunedge-limit-off]}") |"
  fi
  if [[ -n "${med[stunedge-uring]:-}" && -n "${med[stunedge-turn-lb]:-}" ]]; then
    echo "| stunedge-turn-lb ÷ stunedge-uring ([turn_lb] configured ÷ not; Binding only) | $(ratio "${med[stunedge-turn-lb]}" "${med[stunedge-uring]}") |"
    echo "| stunedge-turn-lb ÷ stunedge-uring, CPU µs per request | $(ratio "${cpu_us[stunedge-turn-lb]}" "${cpu_us[stunedge-uring]}") |"
  fi
  if [[ -n "${med[stunedge-uring]:-}" && -n "${med[stunedge-auth]:-}" ]]; then
    echo "| stunedge-auth ÷ stunedge-uring | $(ratio "${med[stunedge-auth]}" "${med[stunedge-uring]}") |"
    echo "| stunedge-uring ÷ stunedge-auth, CPU µs per request | $(ratio "${cpu_us[stunedge-uring]}" "${cpu_us[stunedge-auth]}") |"
  fi
  if [[ -n "${med[stunedge-uring]:-}" && -n "${med[stunedge-mmsg]:-}" ]]; then
    echo "| stunedge-uring ÷ stunedge-mmsg | $(ratio "${med[stunedge-uring]}" "${med[stunedge-mmsg]}") |"
  fi
  if [[ -n "${med[stunedge-uring-coop]:-}" && -n "${med[stunedge-uring]:-}" ]]; then
    echo "| stunedge-uring-coop ÷ stunedge-uring (COOP ÷ DEFER task running) | $(ratio "${med[stunedge-uring-coop]}" "${med[stunedge-uring]}") |"
  fi
  if [[ -n "${med[stunedge-uring-coop]:-}" && -n "${med[stunedge-mmsg]:-}" ]]; then
    echo "| stunedge-uring-coop ÷ stunedge-mmsg | $(ratio "${med[stunedge-uring-coop]}" "${med[stunedge-mmsg]}") |"
  fi
} > "$table"

profile_text=""
if [[ -n "${PROFILE:-}" ]]; then
  args=()
  for s in $SERVERS; do
    [[ -s $work/$s.perf ]] || continue
    perf script -i "$work/$s.perf" > "$work/$s.perf.txt" 2>/dev/null
    args+=("$s=$work/$s.perf.txt=${cpu_us[$s]}")
  done
  profile_text=$(python3 scripts/perf-breakdown.py "${args[@]}")
fi

zl_text=""
if [[ -n "$zl_file" ]]; then
  read -r -a b <<< "${snmp_before#Udp: }"; read -r -a a <<< "${snmp_after#Udp: }"
  # Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors …
  zl_text=$(printf '%s\n' \
    "$primary, open loop at $zl_rate req/s for ${DURATION}s: sent $(json_field "$zl_file" sent), valid $(json_field "$zl_file" valid), invalid $(json_field "$zl_file" invalid), **lost $(json_field "$zl_file" lost)**, late $(json_field "$zl_file" late), not sent $(json_field "$zl_file" not_sent); latency p50 $(json_latency "$zl_file" p50_us) µs, p99 $(json_latency "$zl_file" p99_us) µs, p99.9 $(json_latency "$zl_file" p999_us) µs, max $(json_latency "$zl_file" max_us) µs; generator idle $(json_field "$zl_file" generator_idle)." \
    "" \
    "Junk interleaved: $primary at $junk_rate req/s (50 % of peak) plus $(json_field "$junk_file" junk_sent) junk datagrams (not STUN, too short, bad length, a response, bad FINGERPRINT; 50 per 100 requests): sent $(json_field "$junk_file" sent), valid $(json_field "$junk_file" valid), invalid $(json_field "$junk_file" invalid), **lost $(json_field "$junk_file" lost)**; p99 $(json_latency "$junk_file" p99_us) µs." \
    "" \
    "Kernel cross-check over the 80 % run (/proc/net/snmp, whole host, includes the readiness probe): InDatagrams +$(( a[0] - b[0] )), OutDatagrams +$(( a[3] - b[3] )), RcvbufErrors +$(( a[4] - b[4] )), SndbufErrors +$(( a[5] - b[5] )), InErrors +$(( a[2] - b[2] )). On loopback every request and every answer is both sent and received on this host, so both should be 2 × sent + 2 × valid of the probe, i.e. about $(( 2 * $(json_field "$zl_file" sent) )) plus a few thousand.")
fi

echo
cat "$table"
[[ -n "$profile_text" ]] && { echo; echo "$profile_text"; }
[[ -n "$half_text" ]] && { echo; echo "$half_text"; }
[[ -n "$zl_text" ]] && { echo; echo "$zl_text"; }

host=$(hostname -s 2>/dev/null || hostname)
if [[ -z "${RESULTS:-}" ]]; then
  RESULTS=bench/results/$(date +%F)-$host.md
  # Never overwrite an earlier run of the same day (it may carry notes added by hand).
  [[ -e "$RESULTS" ]] && RESULTS=bench/results/$(date +%F-%H%M)-$host.md
fi
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
dirty=$(git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (with uncommitted changes)" || true)
{
  echo "# Load benchmark — $(date +%F), host \`$host\`"
  echo
  echo "- Commit: \`$commit\`$dirty"
  echo "- Kernel: \`$(uname -r)\`"
  echo "- CPU: \`$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\`, $ncpu CPUs"
  echo "- Core split: server on CPUs \`$SERVER_CPUS\`, generator on CPUs \`$GEN_CPUS\`"
  echo "- Command: \`${PROFILE:+PROFILE=$PROFILE }REPS=$REPS DURATION=$DURATION SERVER_CPUS=$SERVER_CPUS GEN_CPUS=$GEN_CPUS SERVERS=\"$SERVERS\" GEN_ARGS=\"$GEN_ARGS\" scripts/bench.sh\`"
  echo "- Generator: \`taskset -c $GEN_CPUS stunedge-bench -s 127.0.0.1:PORT --cpus $GEN_CPUS -d $DURATION --json -q $GEN_ARGS\` (closed loop)"
  echo "- Servers (each under \`taskset -c $SERVER_CPUS\`):"
  for s in $SERVERS; do echo "  - $s: \`$(server_cmd "$s" | sed "s#$work#TMP#g")\`"; done
  echo "- Order: alternating, $REPS repetitions: $(for r in $(seq "$REPS"); do printf '%s ' $SERVERS; done)"
  echo
  echo "## Peak rate (closed loop)"
  echo
  cat "$table"
  echo
  echo "Server CPU µs / request: the server process's user+system CPU time over the run (from"
  echo "/proc/PID/stat) divided by the valid answers. On loopback part of the receive path runs"
  echo "in the sender's context, so this undercounts the kernel's share for every server alike."
  echo "Server CPU busy: that time over the run's wall time and the server CPUs; near 100 % means"
  echo "the server, not the generator, set the rate."
  if [[ -n "$half_text" ]]; then echo; echo "$half_text"; fi
  if [[ -n "$profile_text" ]]; then
    echo
    echo "## Where the server CPUs' time goes (PROFILE=1)"
    echo
    echo "\`perf record -C $SERVER_CPUS -e cpu-clock -g\` during each server's first repetition (from"
    echo "its second second to a second before the end), call stacks put in categories by"
    echo "scripts/perf-breakdown.py; in brackets, that share of the server's median CPU µs per request."
    echo
    echo "$profile_text"
  fi
  if [[ -n "$zl_text" ]]; then
    echo
    echo "## Zero loss at 80 % of peak"
    echo
    echo "$zl_text"
  fi
  echo
  echo "## Each run"
  echo
  echo "| rep | server | valid/s | p99 µs | lost | invalid | generator idle |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
  for r in $(seq "$REPS"); do for s in $SERVERS; do
    f=$work/$s.$r.json
    printf '| %s | %s | %.0f | %s | %s | %s | %s |\n' "$r" "$s" "$(json_field "$f" rate)" "$(json_latency "$f" p99_us)" "$(json_field "$f" lost)" "$(json_field "$f" invalid)" "$(json_field "$f" generator_idle)"
  done; done
} > "$RESULTS"
echo
echo "results written to $RESULTS"
