#!/usr/bin/env bash
# STUN over TCP/TLS (issue 19; research notes tcp-tls.md §6 items 6–7), on loopback, in two parts:
#
#   a. Throughput: Binding answers/s over CONNS long-lived TCP connections × WINDOW pipelined
#      requests (stunedge-bench --tcp), stunedge's [stream] tcp listener (threads = 1) against
#      coturn's TCP listener (--stun-only, one relay thread), alternating REPS times, each server
#      pinned to SERVER_CPU and the generator to GEN_CPU; medians, and server CPU per answer
#      (utime + stime from /proc/PID/stat ÷ valid answers). stunedge's per-connection message
#      rate (default 20/s, burst 64) is raised to 1,000,000 for this part only: it would
#      otherwise be what is measured. coturn 4.6.1 resets a STUN-only TCP connection ~3 s after
#      it opens, however busy, so the generator reopens closed connections (--reconnect) for
#      both servers; the requests in flight on a reset connection count as lost.
#   b. Floods, against one stunedge with its default [stream] caps and timeouts (TCP and TLS
#      listeners, threads = 1) and its UDP listener on the same port: UDP answers/s
#      (stunedge-bench's UDP mode) and a well-behaved TCP client's Binding latency (TCP_CLIENTS
#      connections at TCP_RATE requests/s in all, inside the per-connection rate), each measured
#      without and with a flood (stunedge-flood stream: FLOOD_IDLE idle connections that sent one
#      Binding, FLOOD_SLOWLORIS connections sending a request one byte every 2 s, FLOOD_HANDSHAKE
#      connections to the TLS port sending half a ClientHello or nothing), alternating REPS times.
#      The UDP worker thread(s) (comm stunedge-w*) are put in a cpu cgroup of their own capped at
#      UDP_QUOTA of one CPU (period 10 ms; cgroup v1's cpu controller, else cgroup v2 in threaded
#      mode: the whole stunedge process moves into a parent cgroup for the run), so that stunedge's
#      UDP worker, not the generator (which shares GEN_CPU with the flood client), is the
#      bottleneck and the ratio with/without flood measures stunedge. The stream thread(s) (comm
#      stunedge-stream*) are placed two ways, alternately within the run: "apart" (outside the
#      capped cgroup and moved to GEN_CPU, whose generator has headroom: the deployment with
#      [stream] cpus on cores other than the UDP workers') and "together" (inside
#      it: the worst case, every cycle the flood costs the stream thread is taken from UDP). Per rep:
#      no flood: UDP apart, UDP together (the other order on even reps), TCP latency (apart); the
#      flood up; the same three under the flood; the flood stopped. Per UDP run: the generator's
#      report (rate, lost, its idle share), the CPU ticks of the UDP worker, of the stream thread(s)
#      and of the whole process (/proc/PID[/task/TID]/stat utime + stime; for the threads also
#      schedstat's nanoseconds, which the results use where present: ticks are 10 ms steps) and
#      the cgroup's throttled periods. stunedge's VmRSS before, at the flood's peak and after the
#      last flood's connections were closed by the server's own timeouts (the flood client sends
#      nothing more and waits), and its refused/closed counters by reason. The cgroup is removed
#      on exit (its tasks moved back first), also on failure or Ctrl-C; without a usable cpu
#      cgroup (needs root) part b exits 2 before anything runs.
#   c. TLS handshakes: server CPU per full handshake (TLS 1.3, then TLS 1.2), stunedge's [stream]
#      tls listener (threads = 1, pinned to SERVER_CPU) against `openssl s_server` with the same
#      P-256 certificate, alternating REPS times; the client is `openssl s_time -new` (a new
#      session per connection, nothing sent after the handshake) on GEN_CPU for DURATION seconds.
#      Server CPU from /proc/PID/stat around the run ÷ the handshakes s_time completed.
#
# Writes RESULTS (default bench/results/<date>-vm-stream.md). Stops only what it started (by PID).
# Raises `ulimit -n` (the flood needs a descriptor per connection, on both sides).
#
# Settings (environment):
#   REPS (default 5), DURATION seconds per measurement (default 5), CONNS (200), WINDOW (8),
#   FLOOD_IDLE (10000), FLOOD_SLOWLORIS (500), FLOOD_HANDSHAKE (500), TCP_CLIENTS (20),
#   TCP_RATE (200: 10 requests/s per connection), SERVER_CPU (0), GEN_CPU (1: the generator and
#   the flood client), UDP_QUOTA (0.4: part b's cap on the UDP worker thread(s), a fraction of one
#   CPU, 0.05 to 1.0), PARTS ("a b c"), BIN_DIR (prebuilt stunedge, stunedge-bench, stunedge-flood;
#   default: cargo build --release), RESULTS, COMMIT, KEEP_WORK (a directory to copy the raw files to).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-200}
WINDOW=${WINDOW:-8}
FLOOD_IDLE=${FLOOD_IDLE:-10000}
FLOOD_SLOWLORIS=${FLOOD_SLOWLORIS:-500}
FLOOD_HANDSHAKE=${FLOOD_HANDSHAKE:-500}
TCP_CLIENTS=${TCP_CLIENTS:-20}
TCP_RATE=${TCP_RATE:-200}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
UDP_QUOTA=${UDP_QUOTA:-0.4}
PARTS=${PARTS:-"a b c"}
RESULTS=${RESULTS:-bench/results/$(date +%F)-vm-stream.md}
(( REPS >= 1 )) || { echo "bench-stream.sh: REPS must be at least 1" >&2; exit 2; }
awk -v q="$UDP_QUOTA" 'BEGIN { exit !(q ~ /^([0-9]+(\.[0-9]*)?|\.[0-9]+)$/ && q + 0 >= 0.05 && q + 0 <= 1.0) }' ||
  { echo "bench-stream.sh: UDP_QUOTA must be a fraction of one CPU from 0.05 to 1.0 (got '$UDP_QUOTA')" >&2; exit 2; }
# The command to name in the results (a string to print, never run).
# shellcheck disable=SC2089
command_line="REPS=$REPS DURATION=$DURATION CONNS=$CONNS WINDOW=$WINDOW FLOOD_IDLE=$FLOOD_IDLE FLOOD_SLOWLORIS=$FLOOD_SLOWLORIS FLOOD_HANDSHAKE=$FLOOD_HANDSHAKE TCP_CLIENTS=$TCP_CLIENTS TCP_RATE=$TCP_RATE SERVER_CPU=$SERVER_CPU GEN_CPU=$GEN_CPU UDP_QUOTA=$UDP_QUOTA PARTS=\"$PARTS\" scripts/bench-stream.sh"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
release_bins bench-stream.sh stunedge stunedge-bench stunedge-flood
for tool in turnserver openssl curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "bench-stream.sh: needs $tool" >&2; exit 2; }
done

# Descriptors: the flood's connections on the client side and again on stunedge's.
need=$(( FLOOD_IDLE + FLOOD_SLOWLORIS + FLOOD_HANDSHAKE + 1000 ))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
(( nofile >= need )) || { echo "bench-stream.sh: ulimit -n is $nofile, the flood needs $need (raise the hard limit)" >&2; exit 2; }

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
# stop PID: SIGTERM, wait, forget.
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; forget "$1"; }
# forget PID: drop PID (that exact entry) from `started`.
forget() {
  local p keep=()
  for p in "${started[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  started=("${keep[@]}")
}

# --- part b's cpu cgroup for the UDP worker --------------------------------------------------
# cgroup v1: one cgroup under the cpu hierarchy, threads written to its `tasks`. cgroup v2: a
# domain parent (the whole stunedge process moves into it) with +cpu in its subtree_control and
# a threaded child, threads written to its `cgroup.threads`. Period 10 ms, quota UDP_QUOTA of it.
cg_period=10000
cg_quota=$(awk -v q="$UDP_QUOTA" 'BEGIN { printf "%d", q * 10000 + 0.5 }')
cg_kind=""          # v1 or v2 once something was created (cg_teardown's cue)
cg_root=""          # the hierarchy's mount point: where tasks go back (v1)
cg_dir=""           # the capped cgroup
cg_top=""           # v2: the domain parent (the thread root; "apart" threads stay there)
cg_edge_home=""     # v2: stunedge's own cgroup before it moved into cg_top
cg_root_cpu=0       # v2: 1 if this script enabled +cpu in the mount root's subtree_control

# cg_put VALUE FILE: write VALUE to a cgroup file; says which on failure.
cg_put() { echo "$1" > "$2" || { echo "bench-stream.sh: could not write '$1' to $2" >&2; return 1; }; }

# cg_create: the capped cgroup (v1 if the cpu controller is mounted as v1, else v2); 1 if none.
cg_create() {
  local m name=stunedge-bench-$$
  m=$(awk '$3 == "cgroup" && ("," $4 ",") ~ /,cpu,/ { print $2; exit }' /proc/mounts)
  if [[ -n $m ]]; then
    [[ -e $m/cpu.cfs_quota_us ]] || { echo "bench-stream.sh: $m has no cpu.cfs_quota_us (no CFS bandwidth control)" >&2; return 1; }
    cg_root=$m; cg_dir=$m/$name
    mkdir "$cg_dir" || return 1
    cg_kind=v1
    cg_put "$cg_period" "$cg_dir/cpu.cfs_period_us" && cg_put "$cg_quota" "$cg_dir/cpu.cfs_quota_us"
    return
  fi
  m=$(awk '$3 == "cgroup2" { print $2 }' /proc/mounts | while read -r d; do
    grep -qw cpu "$d/cgroup.controllers" 2>/dev/null && { echo "$d"; break; }
  done)
  [[ -n $m ]] || { echo "bench-stream.sh: no cpu controller: neither a cgroup v1 cpu hierarchy nor a cgroup2 mount with cpu in cgroup.controllers" >&2; return 1; }
  cg_root=$m; cg_top=$m/$name; cg_dir=$cg_top/udp
  cg_kind=v2
  if ! grep -qw cpu "$m/cgroup.subtree_control"; then
    cg_put +cpu "$m/cgroup.subtree_control" || return 1
    cg_root_cpu=1
  fi
  mkdir "$cg_top" || return 1
  cg_put +cpu "$cg_top/cgroup.subtree_control" || return 1
  mkdir "$cg_dir" || return 1
  cg_put threaded "$cg_dir/cgroup.type" && cg_put "$cg_quota $cg_period" "$cg_dir/cpu.max"
}

# cg_adopt PID: v2 only, the process into the domain parent (its threads can then move into the
# threaded child); v1 needs nothing.
cg_adopt() {
  [[ $cg_kind == v2 ]] || return 0
  cg_edge_home=$cg_root$(awk -F: '$1 == "0" { print $3 }' "/proc/$1/cgroup")
  cg_put "$1" "$cg_top/cgroup.procs"
}
# cg_in TID… / cg_out TID…: threads into the capped cgroup / out of it (v1: the root; v2: the
# domain parent, uncapped).
cg_in() {
  local t f=$cg_dir/tasks
  [[ $cg_kind == v2 ]] && f=$cg_dir/cgroup.threads
  for t in "$@"; do cg_put "$t" "$f" || return 1; done
}
cg_out() {
  local t f=$cg_root/tasks
  [[ $cg_kind == v2 ]] && f=$cg_top/cgroup.threads
  for t in "$@"; do cg_put "$t" "$f" || return 1; done
}
# cg_throttle: "periods throttled" of the capped cgroup so far (cpu.stat).
cg_throttle() { awk '$1 == "nr_periods" { p = $2 } $1 == "nr_throttled" { t = $2 } END { print p + 0, t + 0 }' "$cg_dir/cpu.stat"; }

# cg_drain FROM TO: move every task listed in FROM (a tasks/cgroup.threads/cgroup.procs file) to
# the file TO; then cg_rmdir DIR: rmdir, retried while tasks leave. Both never fail.
cg_drain() {
  local t
  [[ -e $1 ]] || return 0
  while read -r t; do echo "$t" 2>/dev/null > "$2" || true; done < "$1"
  return 0
}
cg_rmdir() {
  local _
  for _ in $(seq 50); do
    [[ -d $1 ]] || return 0
    rmdir "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-stream.sh: could not remove the cgroup $1 (tasks: $(cat "$1/tasks" "$1/cgroup.threads" 2>/dev/null | tr '\n' ' '))" >&2
}
# cg_teardown: every task back out, the cgroup(s) removed; safe to call more than once.
cg_teardown() {
  case $cg_kind in
    v1)
      [[ -d $cg_dir ]] && { cg_drain "$cg_dir/tasks" "$cg_root/tasks"; cg_rmdir "$cg_dir"; }
      ;;
    v2)
      [[ -d $cg_dir ]] && { cg_drain "$cg_dir/cgroup.threads" "$cg_top/cgroup.threads"; cg_rmdir "$cg_dir"; }
      if [[ -d $cg_top ]]; then
        if [[ -n $cg_edge_home && -e $cg_edge_home/cgroup.procs ]]; then
          cg_drain "$cg_top/cgroup.procs" "$cg_edge_home/cgroup.procs"
        fi
        cg_drain "$cg_top/cgroup.procs" "$cg_root/cgroup.procs"
        cg_rmdir "$cg_top"
      fi
      if (( cg_root_cpu )); then echo -cpu 2>/dev/null > "$cg_root/cgroup.subtree_control" || true; cg_root_cpu=0; fi
      ;;
  esac
  return 0
}
# The exit trap: the cgroup's tasks out and the cgroup removed, lib.sh's cleanup (stops what was
# started, removes $work), and the cgroup again in case a task was still leaving. INT and TERM
# end the script through it (lib.sh's own trap would run cleanup and carry on).
on_exit() {
  local rc=$?
  set +e
  trap '' INT TERM
  cg_teardown
  cleanup
  cg_teardown
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [[ " $PARTS " == *" b "* ]]; then
  cg_create || { echo "bench-stream.sh: part b needs a cpu cgroup to cap the UDP worker at UDP_QUOTA=$UDP_QUOTA (run as root on a host with cgroup v1's cpu controller or cgroup v2's cpu controller)" >&2; exit 2; }
fi
# wait_tcp HOST PORT: until something accepts there (10 s).
wait_tcp() {
  local _
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "bench-stream.sh: nothing listens on $1:$2" >&2; return 1
}
# jget FILE KEY…: a value from a JSON file (nested keys).
jget() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2:]: v=v[k]
print(v)' "$@"; }

A_EDGE=34782; A_COTURN=34781; B_PORT=34780; B_TLS=53490; B_ADMIN=19490; C_EDGE=53491; C_OPENSSL=53492
# The P-256 test certificate of parts b and c.
if [[ " $PARTS " == *" b "* || " $PARTS " == *" c "* ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=stun.test \
    -addext subjectAltName=DNS:stun.test,IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
fi

# --- part a ---------------------------------------------------------------------------------
a_cmd() {
  case $1 in
    stunedge)
      printf '[server]\nlisten = ["127.0.0.1:%s"]\n[io]\ncpus = [%s]\n[admin]\nlisten = ""\n[log]\nlevel = "warn"\n[stream]\ntcp = ["127.0.0.1:%s"]\nthreads = 1\nmessages_per_second = 1000000\nmessage_burst = 1000000\n' \
        "$A_EDGE" "$SERVER_CPU" "$A_EDGE" > "$work/a-stunedge.toml"
      echo "$BIN/stunedge serve -c $work/a-stunedge.toml";;
    coturn)
      echo "turnserver -n --stun-only --no-auth -L 127.0.0.1 -p $A_COTURN --no-udp --no-tls --no-dtls --no-cli -m 1 --pidfile $work/coturn.pid --log-file $work/coturn.log --simple-log";;
  esac
}
a_port() { case $1 in stunedge) echo "$A_EDGE";; coturn) echo "$A_COTURN";; esac; }
a_gen="--tcp --reconnect --sockets $CONNS --window $WINDOW -d $DURATION --cpus $GEN_CPU --json -q"

# a_run SERVER OUT: start, load, stop; writes OUT (JSON) and OUT.cpu (server ticks).
a_run() {
  local name=$1 out=$2 pid t0 t1 port
  port=$(a_port "$name")
  # shellcheck disable=SC2046
  taskset -c "$SERVER_CPU" $(a_cmd "$name") > "$work/a-$name.log" 2>&1 &
  pid=$!; started+=("$pid")
  wait_tcp 127.0.0.1 "$port"
  sleep 0.3
  t0=$(cpu_ticks "$pid")
  # shellcheck disable=SC2086
  taskset -c "$GEN_CPU" "$BIN/stunedge-bench" -s "127.0.0.1:$port" $a_gen > "$out" || true
  t1=$(cpu_ticks "$pid")
  stop "$pid"
  echo $(( t1 - t0 )) > "$out.cpu"
}

if [[ " $PARTS " == *" a "* ]]; then
  echo "== part a: TCP Binding throughput, $CONNS connections × window $WINDOW, ${DURATION}s, $REPS × {stunedge coturn}"
  for rep in $(seq "$REPS"); do
    for s in stunedge coturn; do
      f=$work/a-$s.$rep.json
      a_run "$s" "$f"
      [[ -s $f ]] || { echo "bench-stream.sh: the generator wrote nothing for $s"; cat "$work/a-$s.log"; exit 1; }
      printf '   rep %d %-8s %9.0f answers/s  p50 %s µs  p99 %s µs  lost %s  invalid %s  reconnects %s  server CPU %s ticks\n' \
        "$rep" "$s" "$(jget "$f" rate)" "$(jget "$f" latency p50_us)" "$(jget "$f" latency p99_us)" \
        "$(jget "$f" lost)" "$(jget "$f" invalid)" "$(jget "$f" reconnects)" "$(cat "$f.cpu")"
    done
  done
fi

# --- part b ---------------------------------------------------------------------------------
metrics() { curl -sf "http://127.0.0.1:$B_ADMIN/metrics"; }
# open_conns: stunedge_stream_connections over both transports.
open_conns() { metrics | awk '/^stunedge_stream_connections\{/ {s += $2} END {print s + 0}'; }
# wait_drained SECONDS: until stunedge holds no stream connection (or the time is up).
wait_drained() {
  local _
  for _ in $(seq $(( $1 * 5 ))); do [[ $(open_conns) -le 2 ]] && return 0; sleep 0.2; done
  return 0
}
# tids PID GLOB: the thread IDs of PID whose name (comm) matches GLOB.
tids() {
  local t c
  for t in /proc/"$1"/task/*; do
    c=$(cat "$t/comm" 2>/dev/null) || continue
    # shellcheck disable=SC2053
    [[ $c == $2 ]] && echo "${t##*/}"
  done
  return 0
}
# tticks PID TID…: utime + stime of these threads of PID (clock ticks), summed.
tticks() {
  local pid=$1 t s=0
  shift
  for t in "$@"; do s=$(( s + $(awk '{print $14 + $15}' "/proc/$pid/task/$t/stat") )); done
  echo "$s"
}
# tns PID TID…: on-CPU nanoseconds of these threads (/proc/PID/task/TID/schedstat, first field),
# summed: the same time as utime + stime without the clock tick's 10 ms steps; -1 without schedstat.
tns() {
  local pid=$1 t s=0
  shift
  for t in "$@"; do
    [[ -r /proc/$pid/task/$t/schedstat ]] || { echo -1; return 0; }
    s=$(( s + $(cut -d' ' -f1 "/proc/$pid/task/$t/schedstat") ))
  done
  echo "$s"
}
# place apart|together: the stream thread(s) out of the UDP worker's capped cgroup and onto
# GEN_CPU (a core of their own, as [stream] cpus gives them), or into the cgroup, on SERVER_CPU.
place() {
  local t cpu=$SERVER_CPU
  case $1 in
    apart) cg_out "${stream_tids[@]}"; cpu=$GEN_CPU;;
    together) cg_in "${stream_tids[@]}";;
  esac
  for t in "${stream_tids[@]}"; do
    taskset -pc "$cpu" "$t" > /dev/null || { echo "bench-stream.sh: could not move thread $t to CPU $cpu" >&2; return 1; }
  done
}

b_udp="--cpus $GEN_CPU -d $DURATION --json -q --threads 1 --sockets 8 --window 128 --batch 64 --sources 16"
b_tcp="--tcp --sockets $TCP_CLIENTS --window 4 --rate $TCP_RATE --cpus $GEN_CPU -d $DURATION --json -q"

# b_udp_run TAG PLACEMENT: the stream thread(s) placed, then a UDP run; writes b-udp.TAG.json (the
# generator's report) and b-udp.TAG.json.cpu (JSON: ticks of the process, the UDP worker(s) and
# the stream thread(s), the threads' nanoseconds from schedstat, wall seconds, the capped
# cgroup's periods and throttled periods).
b_udp_run() {
  local tag=$1 f=$work/b-udp.$1.json p0 p1 w0 w1 s0 s1 wn0 wn1 sn0 sn1 n0 n1 th0 th1 t0 t1
  place "$2"
  read -r n0 th0 < <(cg_throttle)
  p0=$(cpu_ticks "$edge"); w0=$(tticks "$edge" "${udp_tids[@]}"); s0=$(tticks "$edge" "${stream_tids[@]}")
  wn0=$(tns "$edge" "${udp_tids[@]}"); sn0=$(tns "$edge" "${stream_tids[@]}")
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  taskset -c "$GEN_CPU" "$BIN/stunedge-bench" -s "127.0.0.1:$B_PORT" $b_udp > "$f" || true
  t1=$(date +%s.%N)
  p1=$(cpu_ticks "$edge"); w1=$(tticks "$edge" "${udp_tids[@]}"); s1=$(tticks "$edge" "${stream_tids[@]}")
  wn1=$(tns "$edge" "${udp_tids[@]}"); sn1=$(tns "$edge" "${stream_tids[@]}")
  read -r n1 th1 < <(cg_throttle)
  printf '{"placement": "%s", "proc": %d, "worker": %d, "stream": %d, "worker_ns": %d, "stream_ns": %d, "wall_s": %s, "periods": %d, "throttled": %d}\n' \
    "$2" $(( p1 - p0 )) $(( w1 - w0 )) $(( s1 - s0 )) \
    "$( (( wn0 < 0 )) && echo -1 || echo $(( wn1 - wn0 )) )" "$( (( sn0 < 0 )) && echo -1 || echo $(( sn1 - sn0 )) )" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
    $(( n1 - n0 )) $(( th1 - th0 )) > "$f.cpu"
  [[ -s $f ]] || { echo "bench-stream.sh: the UDP generator wrote nothing ($tag)" >&2; return 1; }
  python3 - "$f" "$hz" "$tag" <<'PY'
import json, sys
f, hz, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
u, c = json.load(open(f)), json.load(open(f + ".cpu"))
sec = lambda k: c[k + "_ns"] / 1e9 if c[k + "_ns"] >= 0 else c[k] / hz
print(f"   {tag:<16} UDP {u['rate']:9.0f} answers/s (lost {u['lost']})  worker {100 * sec('worker') / c['wall_s']:4.1f} % of a core,"
      f" {sec('worker') * 1e6 / max(u['valid'], 1):5.2f} µs/answer  stream {100 * sec('stream') / c['wall_s']:4.2f} %"
      f"  throttled {100 * c['throttled'] / max(c['periods'], 1):3.0f} % of periods  generator idle {100 * u.get('generator_idle', float('nan')):3.0f} %")
PY
}
# b_tcp_run TAG: the well-behaved TCP client's latency run, the stream thread(s) apart.
b_tcp_run() {
  local tag=$1 f=$work/b-tcp.$1.json
  place apart
  # shellcheck disable=SC2086
  taskset -c "$GEN_CPU" "$BIN/stunedge-bench" -s "127.0.0.1:$B_PORT" $b_tcp > "$f" || true
  [[ -s $f ]] || { echo "bench-stream.sh: the TCP generator wrote nothing ($tag)" >&2; return 1; }
  printf '   %-16s TCP p50 %s µs  p99 %s µs  max %s µs (valid %s, lost %s, not sent %s)\n' "$tag" \
    "$(jget "$f" latency p50_us)" "$(jget "$f" latency p99_us)" "$(jget "$f" latency max_us)" \
    "$(jget "$f" valid)" "$(jget "$f" lost)" "$(jget "$f" not_sent)"
}
# b_measure STATE REP: UDP apart and together (together first on even reps), then TCP.
b_measure() {
  local p order=(apart together)
  (( $2 % 2 == 0 )) && order=(together apart)
  for p in "${order[@]}"; do b_udp_run "$1.$p.$2" "$p"; done
  b_tcp_run "$1.$2"
}

if [[ " $PARTS " == *" b "* ]]; then
  printf '[server]\nlisten = ["127.0.0.1:%s"]\n[io]\ncpus = [%s]\n[admin]\nlisten = "127.0.0.1:%s"\n[log]\nlevel = "warn"\n[stream]\ntcp = ["127.0.0.1:%s"]\ntls = ["127.0.0.1:%s"]\ncertificate = "%s"\nprivate_key = "%s"\nthreads = 1\n' \
    "$B_PORT" "$SERVER_CPU" "$B_ADMIN" "$B_PORT" "$B_TLS" "$work/cert.pem" "$work/key.pem" > "$work/b-stunedge.toml"
  b_server="$BIN/stunedge serve -c $work/b-stunedge.toml"
  # shellcheck disable=SC2086
  taskset -c "$SERVER_CPU" $b_server > "$work/b-stunedge.log" 2>&1 &
  edge=$!; started+=("$edge")
  wait_tcp 127.0.0.1 "$B_PORT"
  sleep 0.5
  mapfile -t udp_tids < <(tids "$edge" 'stunedge-w*')
  mapfile -t stream_tids < <(tids "$edge" 'stunedge-stream*')
  (( ${#udp_tids[@]} && ${#stream_tids[@]} )) ||
    { echo "bench-stream.sh: stunedge (PID $edge) has no thread named stunedge-w* or stunedge-stream*: $(cat /proc/"$edge"/task/*/comm | tr '\n' ' ')" >&2; exit 1; }
  n_udp=${#udp_tids[@]}; n_stream=${#stream_tids[@]}
  cg_adopt "$edge"
  cg_in "${udp_tids[@]}"
  echo "== part b: floods against stunedge (default [stream] caps), $REPS × {no flood, flood} × {stream thread apart, together}, ${DURATION}s per measurement"
  echo "   UDP worker thread(s) ${udp_tids[*]} capped at $UDP_QUOTA CPU (cgroup $cg_kind: $cg_dir, ${cg_quota} µs per ${cg_period} µs); stream thread(s) ${stream_tids[*]}"
  echo "   ulimit -n $nofile; flood: $FLOOD_IDLE idle + $FLOOD_SLOWLORIS slowloris + $FLOOD_HANDSHAKE handshake connections"
  rss_before=$(rss_kb "$edge")
  for rep in $(seq "$REPS"); do
    b_measure calm "$rep"
    # The flood (the stream thread(s) apart while it comes up); the last one ends with a hold:
    # the server's timeouts close what it left.
    place apart
    hold=0; (( rep == REPS )) && hold=120
    rm -f "$work/ready"
    fcpu0=0
    taskset -c "$GEN_CPU" "$BIN/stunedge-flood" stream --server "127.0.0.1:$B_PORT" --tls "127.0.0.1:$B_TLS" \
      --idle "$FLOOD_IDLE" --slowloris "$FLOOD_SLOWLORIS" --slowloris-interval 2 --handshake "$FLOOD_HANDSHAKE" \
      --retry 1 --duration 300 --hold "$hold" --ready-file "$work/ready" > "$work/flood.$rep.json" 2> "$work/flood.$rep.log" &
    flood=$!; started+=("$flood")
    ( while kill -0 "$edge" 2>/dev/null; do rss_kb "$edge"; sleep 0.25; done ) > "$work/rss.flood.$rep" 2>/dev/null &
    sampler=$!; started+=("$sampler")
    for _ in $(seq 600); do [[ -e $work/ready ]] && break; sleep 0.1; done
    [[ -e $work/ready ]] || echo "   (the idle group never got every answer in 60 s; measuring anyway)"
    sleep 1
    fcpu0=$(cpu_ticks "$flood")
    open_at_peak=$(open_conns)
    b_measure flood "$rep"
    open_after_measure=$(open_conns)
    echo "$open_at_peak $open_after_measure $(( $(cpu_ticks "$flood") - fcpu0 ))" > "$work/flood.$rep.open"
    metrics > "$work/metrics.flood.$rep"
    if (( rep == REPS )); then
      echo "   last flood: it sends nothing more and waits for stunedge's timeouts to close its connections (≤ ${hold}s)"
      hold_t0=$(date +%s.%N)
    fi
    kill -TERM "$flood"; wait "$flood" || true; forget "$flood"
    stop "$sampler"
    if (( rep == REPS )); then
      hold_s=$(awk -v a="$hold_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
      wait_drained 10
      open_end=$(open_conns)
      sleep 2
      rss_after=$(rss_kb "$edge")
      hwm=$(hwm_kb "$edge")
      metrics > "$work/metrics.end"
    else
      wait_drained 20
    fi
    printf '   flood %d: open at peak %s, RSS peak %s kB\n' "$rep" "$(cut -d' ' -f1 "$work/flood.$rep.open")" "$(sort -n "$work/rss.flood.$rep" | tail -1)"
  done
  cg_teardown
  stop "$edge"
fi

# --- part c ---------------------------------------------------------------------------------
c_cmd() {
  case $1 in
    stunedge)
      printf '[server]\nlisten = ["127.0.0.1:%s"]\n[io]\ncpus = [%s]\n[admin]\nlisten = ""\n[log]\nlevel = "warn"\n[stream]\ntls = ["127.0.0.1:%s"]\ncertificate = "%s"\nprivate_key = "%s"\nthreads = 1\ncpus = [%s]\n' \
        "$C_EDGE" "$SERVER_CPU" "$C_EDGE" "$work/cert.pem" "$work/key.pem" "$SERVER_CPU" > "$work/c-stunedge.toml"
      echo "$BIN/stunedge serve -c $work/c-stunedge.toml";;
    openssl)
      echo "openssl s_server -accept 127.0.0.1:$C_OPENSSL -cert $work/cert.pem -key $work/key.pem -quiet -naccept 1000000";;
  esac
}
c_port() { case $1 in stunedge) echo "$C_EDGE";; openssl) echo "$C_OPENSSL";; esac; }

# c_run SERVER VERSION OUT: start, handshake for DURATION s, stop; OUT holds "handshakes ticks".
c_run() {
  local name=$1 version=$2 out=$3 pid t0 t1 port n
  port=$(c_port "$name")
  # shellcheck disable=SC2046
  taskset -c "$SERVER_CPU" $(c_cmd "$name") > "$work/c-$name.log" 2>&1 < /dev/null &
  pid=$!; started+=("$pid")
  wait_tcp 127.0.0.1 "$port"
  sleep 0.3
  t0=$(cpu_ticks "$pid")
  n=$(taskset -c "$GEN_CPU" openssl s_time -connect "127.0.0.1:$port" -new -time "$DURATION" "-$version" 2>&1 |
    awk '/connections in .* real seconds/ { print $1; exit }')
  t1=$(cpu_ticks "$pid")
  stop "$pid"
  echo "${n:-0} $(( t1 - t0 ))" > "$out"
}

if [[ " $PARTS " == *" c "* ]]; then
  echo "== part c: TLS handshakes, openssl s_time -new for ${DURATION}s, $REPS × {stunedge openssl} × {TLS 1.3, 1.2}"
  for rep in $(seq "$REPS"); do
    for version in tls1_3 tls1_2; do
      for s in stunedge openssl; do
        c_run "$s" "$version" "$work/c-$s.$version.$rep"
        read -r n ticks < "$work/c-$s.$version.$rep"
        (( n > 0 )) || { echo "bench-stream.sh: no handshake with $s ($version)"; cat "$work/c-$s.log"; exit 1; }
        printf '   rep %d %-8s %s: %6d handshakes, server CPU %4d ticks, %5.0f µs each\n' "$rep" "$s" "$version" "$n" "$ticks" \
          "$(awk -v t="$ticks" -v n="$n" -v hz="$hz" 'BEGIN { print t * 1e6 / hz / n }')"
      done
    done
  done
fi

# --- results --------------------------------------------------------------------------------
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
a_cmd_edge=$(a_cmd stunedge | sed "s#$work#TMP#g")
a_cmd_coturn=$(a_cmd coturn | sed "s#$work#TMP#g")
c_cmd_edge=$(c_cmd stunedge | sed "s#$work#TMP#g")
c_cmd_openssl=$(c_cmd openssl | sed "s#$work#TMP#g")
dirty=$(git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (with uncommitted changes)" || true)
# shellcheck disable=SC2090
export work REPS DURATION CONNS WINDOW PARTS hz commit dirty command_line SERVER_CPU GEN_CPU \
  FLOOD_IDLE FLOOD_SLOWLORIS FLOOD_HANDSHAKE TCP_CLIENTS TCP_RATE nofile \
  rss_before="${rss_before:-}" rss_after="${rss_after:-}" hwm="${hwm:-}" open_end="${open_end:-}" hold_s="${hold_s:-}" \
  a_cmd_edge a_cmd_coturn c_cmd_edge c_cmd_openssl \
  b_server="${b_server:-}" a_gen b_udp b_tcp BIN \
  UDP_QUOTA cg_kind cg_quota cg_period n_udp="${n_udp:-}" n_stream="${n_stream:-}"
python3 - "$RESULTS" <<'PY'
import json, os, re, statistics, subprocess, sys
E = os.environ
work, reps, hz = E["work"], int(E["REPS"]), int(E["hz"])
parts = E["PARTS"].split()
med = lambda xs: statistics.median(xs) if xs else float("nan")
load = lambda p: json.load(open(p))
sh = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
out = []
w = out.append
w(f"# STUN over TCP/TLS: throughput and floods — {sh('date +%F')}, host `vm`\n")
w(f"- Commit: `{E['commit']}`{E['dirty']}")
w(f"- Kernel: `{sh('uname -r')}`")
cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs")
w(f"- CPU: `{cpu_model}`, {sh('nproc')} CPUs; servers on CPU {E['SERVER_CPU']}, generator and flood client on CPU {E['GEN_CPU']}")
w(f"- Command: `{E['command_line']}`")
w(f"- `ulimit -n` {E['nofile']} (the script raises it; here the hard limit)")
w("")
if "a" in parts:
    rows = {}
    for s in ("stunedge", "coturn"):
        runs = []
        for r in range(1, reps + 1):
            f = f"{work}/a-{s}.{r}.json"
            j = load(f)
            ticks = int(open(f + ".cpu").read())
            runs.append((j, ticks))
        rows[s] = runs
    def summary(s):
        runs = rows[s]
        rate = med([j["rate"] for j, _ in runs])
        cpu = med([t * 1e6 / hz / j["valid"] for j, t in runs if j["valid"]])
        busy = med([100 * t / hz / j["duration_s"] for j, t in runs])
        return dict(rate=rate, lo=min(j["rate"] for j, _ in runs), hi=max(j["rate"] for j, _ in runs),
                    p50=med([j["latency"]["p50_us"] for j, _ in runs]), p99=med([j["latency"]["p99_us"] for j, _ in runs]),
                    cpu=cpu, busy=busy, lost=sum(j["lost"] for j, _ in runs), invalid=sum(j["invalid"] for j, _ in runs),
                    reconnects=sum(j["reconnects"] for j, _ in runs))
    S = {s: summary(s) for s in rows}
    w(f"## a. Binding over TCP: {E['CONNS']} long-lived connections × {E['WINDOW']} pipelined requests\n")
    w(f"Generator: `taskset -c {E['GEN_CPU']} stunedge-bench -s 127.0.0.1:PORT {E['a_gen']}` (closed loop; latency from the write).")
    w("Servers, each under `taskset -c " + E["SERVER_CPU"] + "`, restarted for every run, alternating " + str(reps) + " times:\n")
    w(f"- stunedge: `{E['a_cmd_edge']}` with `[stream] tcp`, `threads = 1`, and **`messages_per_second` and `message_burst` raised to 1,000,000** (the defaults, 20/s after a burst of 64 per connection, would be what is measured)")
    coturn_version = sh("turnserver --version 2>/dev/null | head -1") or "4.6.1"
    w(f"- coturn {coturn_version}: `{E['a_cmd_coturn']}`\n")
    w("| server | median answers/s | min–max | p50 µs | p99 µs | server CPU µs / answer | server CPU busy | lost | invalid | reconnects |")
    w("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in rows:
        x = S[s]
        w(f"| {s} | {x['rate']:.0f} | {x['lo']:.0f}–{x['hi']:.0f} | {x['p50']:.0f} | {x['p99']:.0f} | {x['cpu']:.2f} | {x['busy']:.0f} % | {x['lost']} | {x['invalid']} | {x['reconnects']} |")
    w("")
    if S["coturn"]["rate"] > 0:
        w(f"stunedge ÷ coturn: **{S['stunedge']['rate'] / S['coturn']['rate']:.2f}×** answers/s; coturn ÷ stunedge in CPU per answer: **{S['coturn']['cpu'] / S['stunedge']['cpu']:.2f}×**.\n")
    w("Lost and reconnects: coturn 4.6.1 resets every STUN-only TCP connection about 3 s after it opened, however busy (its")
    w("timer for sessions that have not allocated); the generator reopens it at once (`--reconnect`) and counts the requests")
    w("that were in flight on it as lost. stunedge closed none.\n")
    w("| rep | server | answers/s | p99 µs | lost | reconnects | server CPU µs / answer |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in range(reps):
        for s in rows:
            j, t = rows[s][r]
            w(f"| {r + 1} | {s} | {j['rate']:.0f} | {j['latency']['p99_us']:.0f} | {j['lost']} | {j['reconnects']} | {t * 1e6 / hz / max(j['valid'], 1):.2f} |")
    w("")
if "b" in parts:
    R = range(1, reps + 1)
    quota, nan = float(E["UDP_QUOTA"]), float("nan")
    # U[state, placement]: (generator report, CPU record) per rep; T[state]: the TCP client's reports.
    U = {(st, pl): [(load(f"{work}/b-udp.{st}.{pl}.{r}.json"), load(f"{work}/b-udp.{st}.{pl}.{r}.json.cpu")) for r in R]
         for st in ("calm", "flood") for pl in ("apart", "together")}
    T = {st: [load(f"{work}/b-tcp.{st}.{r}.json") for r in R] for st in ("calm", "flood")}
    reports = [json.loads(open(f"{work}/flood.{r}.json").read().strip().splitlines()[-1]) for r in R]
    opens = [open(f"{work}/flood.{r}.open").read().split() for r in R]
    peaks = [max([int(x) for x in open(f"{work}/rss.flood.{r}").read().split()] or [0]) for r in R]
    # CPU seconds of the worker(s) or stream thread(s) over a run: schedstat's nanoseconds where the kernel has
    # them (utime + stime come in 10 ms ticks: a 0.3 % step in a 3 s run), else the ticks; the whole process: ticks.
    sec = lambda c, k: c[k + "_ns"] / 1e9 if c.get(k + "_ns", -1) >= 0 else c[k] / hz
    ns = all(c.get("worker_ns", -1) >= 0 for runs in U.values() for _, c in runs)
    per_answer = lambda u, c, k: sec(c, k) * 1e6 / u["valid"] if u["valid"] else nan  # CPU µs per valid answer
    share = lambda c, k: 100 * sec(c, k) / c["wall_s"]                                 # % of one core
    throttled = lambda c: 100 * c["throttled"] / c["periods"] if c["periods"] else nan
    gen_idle = lambda u: 100 * u.get("generator_idle", nan)
    m = lambda st, pl, f: med([f(u, c) for u, c in U[st, pl]])
    rate = {k: m(*k, lambda u, c: u["rate"]) for k in U}
    ratio = {pl: rate["flood", pl] / rate["calm", pl] if rate["calm", pl] else nan for pl in ("apart", "together")}
    wus = {st: m(st, "apart", lambda u, c: per_answer(u, c, "worker")) for st in ("calm", "flood")}
    pus = {st: m(st, "apart", lambda u, c: c["proc"] * 1e6 / hz / u["valid"] if u["valid"] else nan) for st in ("calm", "flood")}
    ssh = {st: m(st, "apart", lambda u, c: share(c, "stream")) for st in ("calm", "flood")}
    wsh = {st: m(st, "apart", lambda u, c: share(c, "worker")) for st in ("calm", "flood")}
    thr = {st: m(st, "apart", lambda u, c: throttled(c)) for st in ("calm", "flood")}
    idle = {st: m(st, "apart", lambda u, c: gen_idle(u)) for st in ("calm", "flood")}
    lost = {k: sum(u["lost"] for u, _ in U[k]) for k in U}
    p99 = {st: med([t["latency"]["p99_us"] for t in T[st]]) for st in T}
    p50 = {st: med([t["latency"]["p50_us"] for t in T[st]]) for st in T}
    worst_p99 = max(t["latency"]["p99_us"] for t in T["flood"])
    expected_drop = ssh["flood"] / quota            # % of the UDP worker's budget the stream thread(s) would take
    whole_core = ssh["flood"] / 1.0
    cg = f"cgroup {E['cg_kind']}, `cpu.cfs_quota_us` {E['cg_quota']} per `cpu.cfs_period_us` {E['cg_period']}" if E["cg_kind"] == "v1" else \
         f"cgroup {E['cg_kind']} in threaded mode, `cpu.max` \"{E['cg_quota']} {E['cg_period']}\""
    w(f"## b. Floods against stunedge's default caps\n")
    w(f"One stunedge for the whole part: `{E['b_server'].replace(work, 'TMP')}` under `taskset -c {E['SERVER_CPU']}` — UDP listener,")
    w(f"`[stream] tcp` on the same port and `tls` (a P-256 test certificate), `threads = 1`, every other `[stream]` setting at its default")
    w("(max_connections 20,000, max_tls_connections 8,000, max_handshakes 256, handshake/first-message timeouts 5 s, idle timeout 60 s,")
    w("20 messages/s per connection after a burst of 64; loopback is exempt from the per-prefix cap).\n")
    w(f"**The UDP worker is capped at UDP_QUOTA = {quota:g} of one CPU** ({E['n_udp']} thread(s) `stunedge-w*` alone in a cpu cgroup: {cg} µs).")
    w(f"Without the cap, on the 2-vCPU VM this part was written for, stunedge used about half of CPU {E['SERVER_CPU']} and the generator was the")
    w(f"bottleneck at 100 % of CPU {E['GEN_CPU']}, which it shares with the flood client: the with/without-flood ratio then mostly showed the")
    w(f"flood client taking the generator's CPU. With the cap, stunedge's UDP worker is the bottleneck (its cgroup was throttled in")
    w(f"{thr['calm']:.0f} % / {thr['flood']:.0f} % of the 10 ms periods, no flood / flood, while the generator found nothing to do in {idle['calm']:.0f} % / {idle['flood']:.0f} % of")
    w(f"its polling turns: medians of the apart runs), so the ratio measures stunedge and not the generator. The stream thread(s) ({E['n_stream']}, `stunedge-stream*`) are placed two")
    w("ways, alternately in the same run:\n")
    w(f"- **apart**: outside the capped cgroup and moved to CPU {E['GEN_CPU']} (`taskset -p`), beside the generator, which has headroom (the generator-idle row). This emulates the recommended deployment, `[stream] cpus`")
    w("  on cores of their own: whatever the flood costs the stream thread is not taken from the UDP workers. What remains of the")
    w("  flood's effect on UDP here is through what they still share (the kernel, the loopback, memory).")
    w("- **together**: inside the UDP worker's capped cgroup. The worst case: stream threads sharing a saturated UDP worker's CPU")
    w("  budget, so every cycle the flood costs is taken from UDP. Its expected drop ≈ the stream thread's CPU share ÷ UDP_QUOTA.\n")
    w(f"- UDP: `stunedge-bench -s 127.0.0.1:PORT {E['b_udp']}` (closed loop)")
    w(f"- well-behaved TCP client: `stunedge-bench -s 127.0.0.1:PORT {E['b_tcp']}` ({int(E['TCP_RATE']) // int(E['TCP_CLIENTS'])} requests/s per connection, open loop; latency from the write), stream thread(s) apart")
    w(f"- flood: `stunedge-flood stream --idle {E['FLOOD_IDLE']} --slowloris {E['FLOOD_SLOWLORIS']} --slowloris-interval 2 --handshake {E['FLOOD_HANDSHAKE']} --retry 1` on CPU {E['GEN_CPU']}: idle connections that sent one Binding (answered) and then nothing; slowloris connections sending a Binding request one byte every 2 s, reopened 1 s after stunedge closes them; TLS connections sending the first 48 bytes of a ClientHello (half) or nothing (half), reopened 1 s after they close. Sources 127.0.1.1–.64.")
    w(f"- order: {reps} × (no flood: UDP apart, UDP together (together first on even reps), TCP; flood up and every idle connection answered, 1 s, then the same three; then the flood stops). The flood client and the generator share CPU {E['GEN_CPU']}.")
    w(f"- CPU: utime + stime of the UDP worker thread(s), of the stream thread(s) (`/proc/PID/task/TID/stat`) and of the whole process, over each UDP run{'; for the threads, the same time in nanoseconds from `/proc/PID/task/TID/schedstat` (ticks are 10 ms steps)' if ns else ''}; shares are of one core over the run's wall time. *Generator idle*: stunedge-bench's share of polling turns with nothing to send or receive (it polls, so CPU {E['GEN_CPU']} reads 100 % busy either way).\n")
    w("| | no flood (median) | with flood (median) | ratio / goal |")
    w("| --- | ---: | ---: | --- |")
    w(f"| UDP answers/s, stream thread(s) **apart** | {rate['calm', 'apart']:.0f} | {rate['flood', 'apart']:.0f} | **{ratio['apart']:.3f}** (goal ≥ 0.97) |")
    w(f"| UDP answers/s, stream thread(s) **together** (worst case) | {rate['calm', 'together']:.0f} | {rate['flood', 'together']:.0f} | **{ratio['together']:.3f}** (goal ≥ 0.97; expected ≈ {1 - expected_drop / 100:.3f}) |")
    w(f"| UDP worker CPU µs per answer (apart) | {wus['calm']:.2f} | {wus['flood']:.2f} | {wus['flood'] / wus['calm']:.2f}× |")
    w(f"| stream thread(s) CPU, % of one core (apart runs) | {ssh['calm']:.2f} % | {ssh['flood']:.2f} % | ÷ UDP_QUOTA {quota:g}: {expected_drop:.1f} % of the UDP worker's budget; ÷ 1.0 (a whole core): {whole_core:.1f} % |")
    w(f"| UDP worker CPU, % of one core (apart) | {wsh['calm']:.1f} % | {wsh['flood']:.1f} % | cap {100 * quota:.0f} % |")
    w(f"| stunedge (whole process) CPU µs per UDP answer (apart) | {pus['calm']:.2f} | {pus['flood']:.2f} | {pus['flood'] / pus['calm']:.2f}× |")
    w(f"| UDP answers lost, apart / together (all runs) | {lost['calm', 'apart']} / {lost['calm', 'together']} | {lost['flood', 'apart']} / {lost['flood', 'together']} | |")
    w(f"| generator idle (apart) | {idle['calm']:.0f} % | {idle['flood']:.0f} % | its turns with nothing to send or receive: headroom, the generator is not the bottleneck |")
    w(f"| TCP client p99 latency | {p99['calm'] / 1000:.2f} ms | {p99['flood'] / 1000:.2f} ms | goal < 10 ms with flood (worst run {worst_p99 / 1000:.2f} ms) |")
    w(f"| TCP client p50 latency | {p50['calm'] / 1000:.2f} ms | {p50['flood'] / 1000:.2f} ms | |")
    w(f"| TCP client answers lost / not sent | {sum(t['lost'] for t in T['calm'])} / {sum(t['not_sent'] for t in T['calm'])} | {sum(t['lost'] for t in T['flood'])} / {sum(t['not_sent'] for t in T['flood'])} | |")
    w("")
    w(f"Apart, the flood changed UDP answers/s by {100 * (ratio['apart'] - 1):+.1f} %. Together, the stream thread(s) used {ssh['flood']:.2f} % of a core")
    w(f"during the flood (apart runs; {ssh['calm']:.2f} % without it): taken from a UDP worker capped at {quota:g} CPU that is an expected drop of")
    w(f"{ssh['flood']:.2f} ÷ {quota:g} ≈ {expected_drop:.1f} %; measured {100 * (1 - ratio['together']):.1f} %. A UDP worker with a whole core would lose")
    w(f"{ssh['flood']:.2f} ÷ 1.0 ≈ {whole_core:.1f} % to the same stream work.\n")
    # A run where the UDP worker did not use (nearly) all of its quota was not limited by it: something else
    # took CPU from it (another process on its CPU) or the generator could not keep up.
    wshares = [share(c, "worker") for runs in U.values() for _, c in runs]
    short = [x for x in wshares if x < 0.9 * 100 * quota]
    if short:
        w(f"**Warning: in {len(short)} of {len(wshares)} UDP runs the UDP worker used less than 90 % of its quota** (lowest {min(short):.1f} % of a")
        w(f"core, cap {100 * quota:.0f} %): it was not the bottleneck there (another process on CPU {E['SERVER_CPU']}, or the generator), so those")
        w("runs do not measure stunedge alone; see the per-rep table below.\n")
    else:
        w(f"In every UDP run the UDP worker used {min(wshares):.1f}–{max(wshares):.1f} % of a core (cap {100 * quota:.0f} %).\n")
    rb, ra, hwm = E["rss_before"], E["rss_after"], E["hwm"]
    w("Memory and connections (stunedge's `VmRSS`; `stunedge_stream_connections` summed over tcp and tls):\n")
    w(f"| | value |")
    w(f"| --- | ---: |")
    w(f"| VmRSS before any flood | {int(rb) / 1024:.1f} MiB |")
    w(f"| VmRSS at the flood's peak (largest sample, every 0.25 s, over the {reps} floods) | {max(peaks) / 1024:.1f} MiB (each flood: {', '.join(f'{p / 1024:.1f}' for p in peaks)}) |")
    w(f"| VmHWM (peak over the process's life) | {int(hwm) / 1024:.1f} MiB |")
    w(f"| connections open during each flood (after the idle group was up) | {', '.join(o[0] for o in opens)} |")
    w(f"| VmRSS after the last flood, once stunedge's timeouts had closed its connections ({E['hold_s']} s after it went quiet) | {int(ra) / 1024:.1f} MiB |")
    w(f"| `stunedge_stream_connections` then | {E['open_end']} |")
    w("")
    last = reports[-1]
    w(f"The last flood's hold: {last['hold_open']} connections open when it went quiet, {last['hold_closed_by_server']} closed by stunedge within {last['hold_s']:.1f} s (idle ones by `idle_timeout`, 60 s after their Binding).\n")
    w("What each flood did (stunedge-flood's own counts; *refused at once*: closed within 0.5 s of opening):\n")
    w("| flood | idle up after | idle answered | slowloris closed by server | handshake connects | handshake refused at once | handshake closed later | flood client CPU during the measurements |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r, (rep, o) in enumerate(zip(reports, opens), 1):
        h = rep["handshake"]
        w(f"| {r} | {rep['idle_ready_s']:.1f} s | {rep['idle']['answered']} | {rep['slowloris']['closed_by_server']} | {h['connects']} | {h['refused_at_once']} | {h['closed_by_server'] - h['refused_at_once']} | {int(o[2]) / hz:.2f} s |")
    w("")
    w("stunedge's counters at the end (non-zero ones):\n")
    w("```")
    for line in open(f"{work}/metrics.end"):
        if re.match(r"stunedge_(stream_(refused|closed|accepted|messages|answers)_total|tls_handshake(s|_failures)_total|stream_connections)", line) and not line.rstrip().endswith(" 0"):
            w(line.rstrip())
    w("```")
    w("")
    w("Per rep (pairs: apart / together; CPU: the UDP worker's µs per answer and share of one core, the stream thread(s)' share of one core; throttled: % of the capped cgroup's periods):\n")
    w("| rep | flood | first | UDP answers/s apart | together | together ÷ apart | lost | worker µs / answer | worker CPU | stream CPU | throttled | generator idle | TCP p99 µs | TCP max µs |")
    w("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in range(reps):
        for st in ("calm", "flood"):
            (ua, ca), (ut, ct) = U[st, "apart"][r], U[st, "together"][r]
            t = T[st][r]
            w(f"| {r + 1} | {'yes' if st == 'flood' else 'no'} | {'together' if (r + 1) % 2 == 0 else 'apart'} | {ua['rate']:.0f} | {ut['rate']:.0f} | {ut['rate'] / ua['rate'] if ua['rate'] else nan:.3f} "
              f"| {ua['lost']} / {ut['lost']} | {per_answer(ua, ca, 'worker'):.2f} / {per_answer(ut, ct, 'worker'):.2f} | {share(ca, 'worker'):.1f} % / {share(ct, 'worker'):.1f} % | {share(ca, 'stream'):.2f} % / {share(ct, 'stream'):.2f} % "
              f"| {throttled(ca):.0f} % / {throttled(ct):.0f} % | {gen_idle(ua):.0f} % / {gen_idle(ut):.0f} % | {t['latency']['p99_us']:.0f} | {t['latency']['max_us']:.0f} |")
    w("")
if "c" in parts:
    openssl_version = sh("openssl version") or "openssl"
    w("## c. TLS handshakes: server CPU per full handshake\n")
    w(f"Client: `taskset -c {E['GEN_CPU']} openssl s_time -connect 127.0.0.1:PORT -new -time {E['DURATION']} -tls1_3` (then `-tls1_2`): a full handshake per connection, nothing sent after it; the client is the bottleneck, so what is compared is each server's CPU per handshake (/proc/PID/stat ÷ handshakes). Servers under `taskset -c {E['SERVER_CPU']}`, restarted for every run, alternating ({reps} reps), the same P-256 certificate:\n")
    w(f"- stunedge: `{E['c_cmd_edge']}` (rustls 0.23 with ring)")
    w(f"- {openssl_version}: `{E['c_cmd_openssl']}`\n")
    w("| version | server | median handshakes in the run | median server CPU µs / handshake | min–max | handshakes/s per core (1 ÷ CPU) |")
    w("| --- | --- | ---: | ---: | --- | ---: |")
    per = {}
    for version in ("tls1_3", "tls1_2"):
        for s in ("stunedge", "openssl"):
            runs = [tuple(map(int, open(f"{work}/c-{s}.{version}.{r}").read().split())) for r in range(1, reps + 1)]
            us = [t * 1e6 / hz / n for n, t in runs if n]
            per[version, s] = med(us)
            w(f"| {version.replace('tls', 'TLS ').replace('_', '.')} | {s} | {med([n for n, _ in runs]):.0f} | {med(us):.0f} | {min(us):.0f}–{max(us):.0f} | {1e6 / med(us):.0f} |")
    w("")
    for version in ("tls1_3", "tls1_2"):
        w(f"{version.replace('tls', 'TLS ').replace('_', '.')}: openssl s_server ÷ stunedge in CPU per handshake: **{per[version, 'openssl'] / per[version, 'stunedge']:.2f}×**.")
    w("")
    w("CPU ticks are 10 ms steps; each run's server used at least tens of them. The server CPU includes the kernel's TCP accept and close of each connection.\n")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
echo "results written to $RESULTS"
# KEEP_WORK=DIR: keep the raw files (JSON reports, logs, metrics) there.
[[ -z "${KEEP_WORK:-}" ]] || cp -r "$work/." "$KEEP_WORK/"
