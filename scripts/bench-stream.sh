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
#      stunedge's VmRSS before, at the flood's peak and after the last flood's connections were
#      closed by the server's own timeouts (the flood client sends nothing more and waits), and
#      its refused/closed counters by reason.
#
# Writes RESULTS (default bench/results/<date>-vm-stream.md). Stops only what it started (by PID).
# Raises `ulimit -n` (the flood needs a descriptor per connection, on both sides).
#
# Settings (environment):
#   REPS (default 5), DURATION seconds per measurement (default 5), CONNS (200), WINDOW (8),
#   FLOOD_IDLE (10000), FLOOD_SLOWLORIS (500), FLOOD_HANDSHAKE (500), TCP_CLIENTS (20),
#   TCP_RATE (200: 10 requests/s per connection), SERVER_CPU (0), GEN_CPU (1: the generator and
#   the flood client), PARTS ("a b"), BIN_DIR (prebuilt stunedge, stunedge-bench, stunedge-flood;
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
PARTS=${PARTS:-"a b"}
RESULTS=${RESULTS:-bench/results/$(date +%F)-vm-stream.md}
(( REPS >= 1 )) || { echo "bench-stream.sh: REPS must be at least 1" >&2; exit 2; }
# The command to name in the results (a string to print, never run).
# shellcheck disable=SC2089
command_line="REPS=$REPS DURATION=$DURATION CONNS=$CONNS WINDOW=$WINDOW FLOOD_IDLE=$FLOOD_IDLE FLOOD_SLOWLORIS=$FLOOD_SLOWLORIS FLOOD_HANDSHAKE=$FLOOD_HANDSHAKE TCP_CLIENTS=$TCP_CLIENTS TCP_RATE=$TCP_RATE SERVER_CPU=$SERVER_CPU GEN_CPU=$GEN_CPU PARTS=\"$PARTS\" scripts/bench-stream.sh"

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
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; started=("${started[@]/$1}"); }
# wait_tcp HOST PORT: until something accepts there (10 s).
wait_tcp() {
  local i
  for i in $(seq 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "bench-stream.sh: nothing listens on $1:$2" >&2; return 1
}
# jget FILE KEY…: a value from a JSON file (nested keys).
jget() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2:]: v=v[k]
print(v)' "$@"; }

A_EDGE=34782; A_COTURN=34781; B_PORT=34780; B_TLS=53490; B_ADMIN=19490

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

b_udp="--cpus $GEN_CPU -d $DURATION --json -q --threads 1 --sockets 8 --window 128 --batch 64 --sources 16"
b_tcp="--tcp --sockets $TCP_CLIENTS --window 4 --rate $TCP_RATE --cpus $GEN_CPU -d $DURATION --json -q"

# b_measure TAG: a UDP run then a TCP latency run; server CPU ticks around the UDP run.
b_measure() {
  local tag=$1 t0 t1
  t0=$(cpu_ticks "$edge")
  # shellcheck disable=SC2086
  taskset -c "$GEN_CPU" "$BIN/stunedge-bench" -s "127.0.0.1:$B_PORT" $b_udp > "$work/b-udp.$tag.json" || true
  t1=$(cpu_ticks "$edge")
  echo $(( t1 - t0 )) > "$work/b-udp.$tag.json.cpu"
  # shellcheck disable=SC2086
  taskset -c "$GEN_CPU" "$BIN/stunedge-bench" -s "127.0.0.1:$B_PORT" $b_tcp > "$work/b-tcp.$tag.json" || true
  printf '   %-9s UDP %9.0f answers/s (lost %s)   TCP p50 %s µs  p99 %s µs  max %s µs (valid %s, lost %s, not sent %s)\n' "$tag" \
    "$(jget "$work/b-udp.$tag.json" rate)" "$(jget "$work/b-udp.$tag.json" lost)" \
    "$(jget "$work/b-tcp.$tag.json" latency p50_us)" "$(jget "$work/b-tcp.$tag.json" latency p99_us)" \
    "$(jget "$work/b-tcp.$tag.json" latency max_us)" "$(jget "$work/b-tcp.$tag.json" valid)" \
    "$(jget "$work/b-tcp.$tag.json" lost)" "$(jget "$work/b-tcp.$tag.json" not_sent)"
}

if [[ " $PARTS " == *" b "* ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=stun.test \
    -addext subjectAltName=DNS:stun.test,IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  printf '[server]\nlisten = ["127.0.0.1:%s"]\n[io]\ncpus = [%s]\n[admin]\nlisten = "127.0.0.1:%s"\n[log]\nlevel = "warn"\n[stream]\ntcp = ["127.0.0.1:%s"]\ntls = ["127.0.0.1:%s"]\ncertificate = "%s"\nprivate_key = "%s"\nthreads = 1\n' \
    "$B_PORT" "$SERVER_CPU" "$B_ADMIN" "$B_PORT" "$B_TLS" "$work/cert.pem" "$work/key.pem" > "$work/b-stunedge.toml"
  b_server="$BIN/stunedge serve -c $work/b-stunedge.toml"
  # shellcheck disable=SC2086
  taskset -c "$SERVER_CPU" $b_server > "$work/b-stunedge.log" 2>&1 &
  edge=$!; started+=("$edge")
  wait_tcp 127.0.0.1 "$B_PORT"
  sleep 0.5
  echo "== part b: floods against stunedge (default [stream] caps), $REPS × {no flood, flood}, ${DURATION}s per measurement"
  echo "   ulimit -n $nofile; flood: $FLOOD_IDLE idle + $FLOOD_SLOWLORIS slowloris + $FLOOD_HANDSHAKE handshake connections"
  rss_before=$(rss_kb "$edge")
  for rep in $(seq "$REPS"); do
    b_measure "calm.$rep"
    # The flood; the last one ends with a hold: the server's timeouts close what it left.
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
    b_measure "flood.$rep"
    open_after_measure=$(open_conns)
    echo "$open_at_peak $open_after_measure $(( $(cpu_ticks "$flood") - fcpu0 ))" > "$work/flood.$rep.open"
    metrics > "$work/metrics.flood.$rep"
    if (( rep == REPS )); then
      echo "   last flood: it sends nothing more and waits for stunedge's timeouts to close its connections (≤ ${hold}s)"
      hold_t0=$(date +%s.%N)
    fi
    kill -TERM "$flood"; wait "$flood" || true; started=("${started[@]/$flood}")
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
  stop "$edge"
fi

# --- results --------------------------------------------------------------------------------
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
a_cmd_edge=$(a_cmd stunedge | sed "s#$work#TMP#g")
a_cmd_coturn=$(a_cmd coturn | sed "s#$work#TMP#g")
dirty=$(git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (with uncommitted changes)" || true)
# shellcheck disable=SC2090
export work REPS DURATION CONNS WINDOW PARTS hz commit dirty command_line SERVER_CPU GEN_CPU \
  FLOOD_IDLE FLOOD_SLOWLORIS FLOOD_HANDSHAKE TCP_CLIENTS TCP_RATE nofile \
  rss_before="${rss_before:-}" rss_after="${rss_after:-}" hwm="${hwm:-}" open_end="${open_end:-}" hold_s="${hold_s:-}" \
  a_cmd_edge a_cmd_coturn \
  b_server="${b_server:-}" a_gen b_udp b_tcp BIN
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
    calm = [(load(f"{work}/b-udp.calm.{r}.json"), load(f"{work}/b-tcp.calm.{r}.json"), int(open(f"{work}/b-udp.calm.{r}.json.cpu").read())) for r in range(1, reps + 1)]
    flood = [(load(f"{work}/b-udp.flood.{r}.json"), load(f"{work}/b-tcp.flood.{r}.json"), int(open(f"{work}/b-udp.flood.{r}.json.cpu").read())) for r in range(1, reps + 1)]
    reports = [json.loads(open(f"{work}/flood.{r}.json").read().strip().splitlines()[-1]) for r in range(1, reps + 1)]
    opens = [open(f"{work}/flood.{r}.open").read().split() for r in range(1, reps + 1)]
    peaks = [max([int(x) for x in open(f"{work}/rss.flood.{r}").read().split()] or [0]) for r in range(1, reps + 1)]
    u_calm, u_flood = med([u["rate"] for u, _, _ in calm]), med([u["rate"] for u, _, _ in flood])
    p99_calm, p99_flood = med([t["latency"]["p99_us"] for _, t, _ in calm]), med([t["latency"]["p99_us"] for _, t, _ in flood])
    worst_p99 = max(t["latency"]["p99_us"] for _, t, _ in flood)
    cpu = lambda runs: med([c * 1e6 / hz / u["valid"] for u, _, c in runs if u["valid"]])
    w(f"## b. Floods against stunedge's default caps\n")
    w(f"One stunedge for the whole part: `{E['b_server'].replace(work, 'TMP')}` under `taskset -c {E['SERVER_CPU']}` — UDP listener,")
    w(f"`[stream] tcp` on the same port and `tls` (a P-256 test certificate), `threads = 1`, every other `[stream]` setting at its default")
    w("(max_connections 20,000, max_tls_connections 8,000, max_handshakes 256, handshake/first-message timeouts 5 s, idle timeout 60 s,")
    w("20 messages/s per connection after a burst of 64; loopback is exempt from the per-prefix cap). Its UDP worker and its stream")
    w(f"thread share CPU {E['SERVER_CPU']}, so whatever the flood costs the stream thread is taken from the UDP worker.\n")
    w(f"- UDP: `stunedge-bench -s 127.0.0.1:PORT {E['b_udp']}` (closed loop)")
    w(f"- well-behaved TCP client: `stunedge-bench -s 127.0.0.1:PORT {E['b_tcp']}` ({int(E['TCP_RATE']) // int(E['TCP_CLIENTS'])} requests/s per connection, open loop; latency from the write)")
    w(f"- flood: `stunedge-flood stream --idle {E['FLOOD_IDLE']} --slowloris {E['FLOOD_SLOWLORIS']} --slowloris-interval 2 --handshake {E['FLOOD_HANDSHAKE']} --retry 1` on CPU {E['GEN_CPU']}: idle connections that sent one Binding (answered) and then nothing; slowloris connections sending a Binding request one byte every 2 s, reopened 1 s after stunedge closes them; TLS connections sending the first 48 bytes of a ClientHello (half) or nothing (half), reopened 1 s after they close. Sources 127.0.1.1–.64.")
    w(f"- order: {reps} × (no flood: UDP then TCP; flood up and every idle connection answered, 1 s, then UDP then TCP, then the flood stops). The flood client and the generator share CPU {E['GEN_CPU']} (a 2-vCPU VM): the flood's own CPU is charged to the generator too.\n")
    w("| | no flood (median) | with flood (median) | ratio / goal |")
    w("| --- | ---: | ---: | --- |")
    w(f"| UDP answers/s | {u_calm:.0f} | {u_flood:.0f} | **{u_flood / u_calm:.3f}** (goal ≥ 0.97) |")
    w(f"| stunedge CPU µs per UDP answer | {cpu(calm):.2f} | {cpu(flood):.2f} | {cpu(flood) / cpu(calm):.2f}× |")
    w(f"| TCP client p99 latency | {p99_calm / 1000:.2f} ms | {p99_flood / 1000:.2f} ms | goal < 10 ms with flood (worst run {worst_p99 / 1000:.2f} ms) |")
    w(f"| TCP client p50 latency | {med([t['latency']['p50_us'] for _, t, _ in calm]) / 1000:.2f} ms | {med([t['latency']['p50_us'] for _, t, _ in flood]) / 1000:.2f} ms | |")
    w(f"| TCP client answers lost / not sent | {sum(t['lost'] for _, t, _ in calm)} / {sum(t['not_sent'] for _, t, _ in calm)} | {sum(t['lost'] for _, t, _ in flood)} / {sum(t['not_sent'] for _, t, _ in flood)} | |")
    w("")
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
    w("| rep | UDP answers/s, no flood | with flood | TCP p99 µs, no flood | with flood | TCP max µs, with flood |")
    w("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in range(reps):
        w(f"| {r + 1} | {calm[r][0]['rate']:.0f} | {flood[r][0]['rate']:.0f} | {calm[r][1]['latency']['p99_us']:.0f} | {flood[r][1]['latency']['p99_us']:.0f} | {flood[r][1]['latency']['max_us']:.0f} |")
    w("")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
echo "results written to $RESULTS"
# KEEP_WORK=DIR: keep the raw files (JSON reports, logs, metrics) there.
[[ -z "${KEEP_WORK:-}" ]] || cp -r "$work/." "$KEEP_WORK/"
