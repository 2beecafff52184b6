#!/usr/bin/env bash
# The reflection lab: stunedge and spoofed floods in a network namespace of their own, measured
# with the kernel's counters (nftables) as well as the server's /metrics. Tests the reflection
# defence (docs/reflection.md, [limit]) as the research behind it asks ("testing honestly on
# one machine": kernel counters, not only the server's own). Prints one JSON object; tears the namespace down and stops
# every process it started (only those, by PID) on exit, error or Ctrl-C.
#
#   scripts/reflect-lab.sh [OPTIONS] SCENARIO [SCENARIO OPTIONS]
#
# Options:
#   --bin-dir DIR      stunedge and stunedge-flood (default target/release;
#                      cargo build --release -p stunedge -p stunedge-bench)
#   --limit KEY=VALUE  a [limit] option for the server (repeatable), e.g. --limit rate=50
#                      --limit mode=off; strings are quoted for TOML, numbers/arrays/bools not
#   --workers N        server workers, 1 or 2 (io.cpus = [0] or [0, 1]; default 1)
#   --seconds S        length of each flood step (default per scenario)
#   --xdp              the XDP fast path on the namespace's lo (generic mode): XDP answers
#                      plain Binding requests within its budgets and passes the rest to the
#                      workers. Its answers bypass OUTPUT and its requests never reach INPUT,
#                      so the counters move: requests are counted as sent (OUTPUT, before lo),
#                      answers as they come back in (PREROUTING), for both paths alike; the
#                      step's metrics include stunedge_xdp_packets_total.
#
# Scenarios (each about a minute or less with the defaults):
#   plateau [--rates 10000,100000,0] [--modes enforce,off]
#       (a, f) a victim flood (random hosts and ports of 10.99.1.0/24) at each rate (0: as fast
#       as this machine sends), against a fresh server per rate and per limit.mode: reflected
#       bytes to the victim ÷ attack bytes, the victim's answers/s (the plateau), and overall
#       bytes out ÷ in.
#   legit [--rate 100000] [--clients 100] [--inside 10] [--legit-seconds 15] [--rto-ms 500]
#       (b) the victim flood while legit clients run RFC 8489 §6.2.1 transactions (one per
#       second each) from 10.99.2.0/24 (outside the attacked prefix) and from 10.99.1.240/28
#       (inside it). The flood lasts until the last transaction has ended (legit-seconds + the
#       transaction timeout, 39.5 s at RTO 500 ms), so retransmissions meet the flood too.
#   cgnat [--users 2000] [--interval 25] [--burst-every 60]
#       (c) N users behind one address (10.99.3.1), a Binding every interval and ICE-like
#       bursts, for --seconds (default 60): every request answered, none limited.
#   churn [--rate 10000] [--random-rate 60000] [--sources 1200000] [--rounds 2]
#       (d) the victim flood alone, then in rounds with a flood of distinct sources
#       (10.128.0.0/9, a new address for each datagram of a round): the victim's output stays
#       capped, and the server's VmRSS (every step reports it) stays flat. At the default
#       budgets a victim is only over its hard cap past 51 k/s, more than this VM floods on
#       top of the distinct sources: run it with --limit rate=50 (a /24 plateau of 4000/s).
#   workers [--rate 100000]
#       (e) the victim flood against 1 worker, then 2 (io.cpus = [0] vs [0, 1]), a fresh server
#       each: the victim's output does not grow with the workers (SO_REUSEPORT spreads the
#       flood's random source ports over both).
#
# Addresses, all inside the namespace (it has only its loopback; nothing leaves it):
#   10.99.0.1:3478 the server; admin on 127.0.0.1:9478     10.99.1.0/24  the victim
#   10.99.1.240/28 legit clients inside the victim's /24   10.99.2.0/24  legit clients outside it
#   10.99.3.1      the CGNAT address                       10.128.0.0/9  distinct sources (8 M)
#
# How it works, and what was checked on this kernel (6.18; iproute2 6.1, nftables 1.0.6):
# - `ip route add local 10.0.0.0/8 dev lo` makes all of 10/8 local (any 10.x.y.z can be bound,
#   no IP_FREEBIND needed): one route, however large the prefix.
# - The floods write whole IPv4 datagrams to a raw socket (IP_HDRINCL): any source address and
#   port. Sent into the namespace's lo they are delivered to the server's UDP socket like any
#   datagram. The kernel fills in the IP checksum; the UDP checksum is 0.
# - The server's answers to spoofed sources loop back into the namespace: counted on OUTPUT,
#   then dropped on PREROUTING (no socket waits for them; this spares the routing, the socket
#   lookup and the ICMP errors).
# - Counted by nftables, IP and UDP headers included: OUTPUT `ip saddr 10.99.0.1 udp sport 3478`
#   per destination prefix (the reflection), INPUT `ip daddr 10.99.0.1 udp dport 3478` per
#   source prefix (the attack). A 20-byte Binding request is 48 bytes there; the minimal IPv4
#   answer 60.
# - Loopback is not a NIC: no RSS, and the softirq work runs on the sending CPU. The floods are
#   pinned to CPU 1, the one-worker server to CPU 0. Throughput figures from here are this VM's;
#   the pass/fail figures are ratios and caps, which do not depend on it.
# - IPv4 only: the floods would need IPV6_HDRINCL and a UDP checksum for IPv6.
#
# Needs root, iproute2, nftables, curl and python3 (the JSON report).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=$here/target/release
workers=1
seconds=""
limits=()
xdp=false
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --limit) limits+=("$2"); shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --xdp) xdp=true; shift ;;
    -h|--help) awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) break ;;
  esac
done
scenario=${1:-}
shift || true
die() { echo "reflect-lab: $*" >&2; exit 2; }
case "$scenario" in
  plateau|legit|cgnat|churn|workers) ;;
  *) die "unknown scenario '$scenario' (plateau, legit, cgnat, churn, workers; --help)" ;;
esac
[[ $workers == 1 || $workers == 2 ]] || die "--workers $workers: 1 or 2"

# Scenario options, with their defaults.
rates=10000,100000,0 modes=enforce,off rate="" random_rate=60000 sources=1200000 rounds=2
clients=100 inside=10 legit_seconds=15 rto_ms=500 users=2000 interval=25 burst_every=60
while [[ $# -gt 0 ]]; do
  [[ $# -ge 2 ]] || die "$1: needs a value"
  case "$1" in
    --rates) rates=$2 ;;
    --modes) modes=$2 ;;
    --rate) rate=$2 ;;
    --random-rate) random_rate=$2 ;;
    --sources) sources=$2 ;;
    --rounds) rounds=$2 ;;
    --clients) clients=$2 ;;
    --inside) inside=$2 ;;
    --legit-seconds) legit_seconds=$2 ;;
    --rto-ms) rto_ms=$2 ;;
    --users) users=$2 ;;
    --interval) interval=$2 ;;
    --burst-every) burst_every=$2 ;;
    *) die "unknown option $1 for $scenario" ;;
  esac
  shift 2
done

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, raw sockets)"
for tool in ip nft curl python3; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (apt-get install iproute2 nftables curl python3)"
done
bin=$bin_dir/stunedge
flood=$bin_dir/stunedge-flood
for b in "$bin" "$flood"; do
  [[ -x $b ]] || die "no $b (cargo build --release -p stunedge -p stunedge-bench, or pass --bin-dir)"
done

ns=reflab-$$
work=$(mktemp -d)
server_pid=""
started=()
teardown() {
  local pid
  for pid in "${started[@]}" $server_pid; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}" $server_pid; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap teardown EXIT
trap 'exit 130' INT TERM

server=10.99.0.1:3478
admin=127.0.0.1:9478
victim=10.99.1.0/24
inside_prefix=10.99.1.240/28
outside_prefix=10.99.2.0/24
cgnat_ip=10.99.3.1
random_prefix=10.128.0.0/9

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" route add local 10.0.0.0/8 dev lo
# Where answers (out_*) and requests (in_*) are counted: OUTPUT and INPUT, or with XDP (whose
# answers skip OUTPUT and whose requests never reach INPUT) PREROUTING and OUTPUT: the answers
# of both paths come back in through lo, the requests leave the flood's raw socket through OUTPUT.
answers_hook=output requests_hook=input
if $xdp; then answers_hook=prerouting requests_hook=output; fi
answer_rules="
    ip saddr 10.99.0.1 udp sport 3478 counter name out_all
    ip saddr 10.99.0.1 udp sport 3478 ip daddr $victim counter name out_victim
    ip saddr 10.99.0.1 udp sport 3478 ip daddr $inside_prefix counter name out_inside
    ip saddr 10.99.0.1 udp sport 3478 ip daddr $outside_prefix counter name out_outside
    ip saddr 10.99.0.1 udp sport 3478 ip daddr $cgnat_ip counter name out_cgnat
    ip saddr 10.99.0.1 udp sport 3478 ip daddr $random_prefix counter name out_random"
request_rules="
    ip daddr 10.99.0.1 udp dport 3478 counter name in_all
    ip daddr 10.99.0.1 udp dport 3478 ip saddr $victim counter name in_victim
    ip daddr 10.99.0.1 udp dport 3478 ip saddr $random_prefix counter name in_random"
rules_for() { # rules_for HOOK: the counting rules that belong in HOOK's chain
  if [[ $1 == "$answers_hook" ]]; then echo "$answer_rules"; fi
  if [[ $1 == "$requests_hook" ]]; then echo "$request_rules"; fi
}
ip netns exec "$ns" nft -f - <<EOF
table ip reflab {
  counter out_all {}
  counter out_victim {}
  counter out_inside {}
  counter out_outside {}
  counter out_cgnat {}
  counter out_random {}
  counter in_all {}
  counter in_victim {}
  counter in_random {}
  chain output {
    type filter hook output priority filter; policy accept;$(rules_for output)
  }
  chain input {
    type filter hook input priority filter; policy accept;$(rules_for input)
  }
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;$(rules_for prerouting)
    ip saddr 10.99.0.1 udp sport 3478 ip daddr $random_prefix drop
    ip saddr 10.99.0.1 udp sport 3478 ip daddr $victim ip daddr != $inside_prefix drop
  }
}
EOF
# 2000 CGNAT users are 2000 sockets.
ulimit -n 65536 2>/dev/null || true

# The [limit] section, if this stunedge has one (before the reflection defence is wired into
# the configuration, it has none: the lab then runs without, and says so).
limit_toml() { # limit_toml MODE: the section with every --limit, mode overriding
  local kv key value
  echo "[limit]"
  for kv in "${limits[@]}" ${1:+"mode=$1"}; do
    key=${kv%%=*} value=${kv#*=}
    if [[ ! $value =~ ^(-?[0-9.]+|\[.*\]|true|false|\".*\")$ ]]; then value="\"$value\""; fi
    echo "$key = $value"
  done
}
printf '[server]\nlisten = ["%s"]\n' "$server" >"$work/probe.toml"
limit_toml "" >>"$work/probe.toml"
limit_supported=true
if ! check=$("$bin" check-config "$work/probe.toml" 2>&1); then
  if [[ $check == *"unknown field \`limit\`"* ]]; then
    limit_supported=false
    echo "reflect-lab: this stunedge has no [limit] section: running without the reflection defence" >&2
  else
    die "the [limit] options are refused: $check"
  fi
fi

# The limit.mode the --limit options set (the server's default: enforce).
configured_mode() {
  local kv mode=enforce
  for kv in "${limits[@]}"; do [[ $kv == mode=* ]] && mode=${kv#mode=}; done
  echo "$mode"
}

# server_start MODE WORKERS: a fresh server in the namespace, ready when it answers.
server_start() {
  local cpus="[0]"
  [[ $2 == 2 ]] && cpus="[0, 1]"
  {
    printf '[server]\nlisten = ["%s"]\n[io]\ncpus = %s\n[admin]\nlisten = "%s"\n[log]\nlevel = "warn"\n' \
      "$server" "$cpus" "$admin"
    if $limit_supported; then limit_toml "$1"; fi
    if $xdp; then printf '[xdp]\ninterfaces = ["lo"]\nmode = "generic"\n'; fi
  } >"$work/stunedge.toml"
  ip netns exec "$ns" "$bin" serve -c "$work/stunedge.toml" 2>>"$work/server.log" &
  server_pid=$!
  local _
  for _ in $(seq 100); do
    if ip netns exec "$ns" curl -sf "http://$admin/metrics" -o /dev/null \
      && ip netns exec "$ns" "$bin" probe --rto-ms 50 --retries 2 "$server" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  cat "$work/server.log" >&2
  die "stunedge did not start in $ns"
}
server_stop() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }

# traffic NAME MODE ARGS...: runs stunedge-flood MODE in the namespace in the background, its
# JSON line to $work/NAME.json.
traffic() {
  local name=$1 mode=$2
  shift 2
  ip netns exec "$ns" "$flood" "$mode" --server "$server" "$@" >"$work/$name.json" 2>"$work/$name.err" &
  started+=("$!")
}
# wait_traffic: waits for every stunedge-flood started; fails if one did.
wait_traffic() {
  local pid status=0
  for pid in "${started[@]}"; do wait "$pid" || status=$?; done
  started=()
  if [[ $status -ne 0 ]]; then cat "$work"/*.err >&2; die "stunedge-flood failed ($status)"; fi
}

# The report: python3 turns the pieces of each step into JSON (stdlib only).
steps=()
# step NAME MODE WORKERS [KEY=VALUE...]: records the step just measured: the JSON lines of the
# traffic that ran, the nft counters, the server's /metrics, and the extras given.
step() {
  local name=$1 mode=${2:-$(configured_mode)} workers=$3
  shift 3
  $limit_supported || mode="none (no [limit] in this stunedge)"
  ip netns exec "$ns" nft -j list counters table ip reflab >"$work/nft.json"
  ip netns exec "$ns" curl -sf "http://$admin/metrics" >"$work/metrics.txt"
  # The server's resident memory, after the scrape (whose first one allocates a little).
  set -- "$@" "rss_kib=$(rss_kib)"
  python3 - "$work" "$name" "$mode" "$workers" "$@" >"$work/step-${#steps[@]}.json" <<'PY'
import json, os, re, sys
work, name, mode, workers, *extras = sys.argv[1:]
step = {"step": name, "mode": mode, "workers": int(workers)}
for kv in extras:
    key, value = kv.split("=", 1)
    step[key] = json.loads(value)
traffic = {}
for f in sorted(os.listdir(work)):
    if f.endswith(".json") and not f.startswith(("step-", "nft")):
        with open(os.path.join(work, f)) as fh:
            traffic[f[:-5]] = json.loads(fh.read())
        os.remove(os.path.join(work, f))
step["traffic"] = traffic
nft = {}
for item in json.load(open(os.path.join(work, "nft.json")))["nftables"]:
    c = item.get("counter")
    if c:
        nft[c["name"]] = {"packets": c["packets"], "bytes": c["bytes"]}
step["nft"] = nft
# The server's counters, summed over workers (the `worker` label dropped).
wanted = re.compile(r"^stunedge_(limit_\w+|dropped_total|received_\w+_total|sent_\w+_total|"
                    r"responses_total|kernel_receive_drops_total|send_errors_total|xdp_\w+)")
metrics = {}
for line in open(os.path.join(work, "metrics.txt")):
    if line.startswith("#") or not wanted.match(line):
        continue
    series, value = line.rsplit(" ", 1)
    series = re.sub(r'worker="[^"]*",?', "", series).replace(",}", "}").replace("{}", "")
    metrics[series] = metrics.get(series, 0) + float(value)
step["metrics"] = metrics
# Per second over the victim flood's own elapsed time, when there was one.
seconds = traffic.get("victim", {}).get("elapsed_s") or step.get("seconds")
ratio = lambda a, b: a / b if b else None
d = {
    "victim_ratio": ratio(nft["out_victim"]["bytes"], nft["in_victim"]["bytes"]),
    "overall_ratio": ratio(nft["out_all"]["bytes"], nft["in_all"]["bytes"]),
    # STUN bytes only, as the server counts them (since it started: the readiness probe too).
    "overall_payload_ratio": ratio(metrics.get("stunedge_sent_bytes_total", 0),
                                   metrics.get("stunedge_received_bytes_total", 0)),
}
if seconds:
    d["seconds"] = seconds
    d["victim_answers_per_s"] = nft["out_victim"]["packets"] / seconds
    d["victim_reflected_bytes_per_s"] = nft["out_victim"]["bytes"] / seconds
    d["victim_attack_per_s"] = nft["in_victim"]["packets"] / seconds
step["derived"] = d
print(json.dumps(step))
PY
  steps+=("$work/step-${#steps[@]}.json")
  ip netns exec "$ns" nft reset counters table ip reflab >/dev/null
}

# One victim flood at RATE for SECONDS, pinned to CPU 1.
victim_flood() { traffic victim victim --sources "$victim" --rate "$1" --duration "$2" --cpu 1; }

case "$scenario" in
  plateau)
    s=${seconds:-6}
    IFS=, read -ra mode_list <<<"$modes"
    IFS=, read -ra rate_list <<<"$rates"
    for mode in "${mode_list[@]}"; do
      for r in "${rate_list[@]}"; do
        server_start "$mode" "$workers"
        ip netns exec "$ns" nft reset counters table ip reflab >/dev/null
        victim_flood "$r" "$s"
        wait_traffic
        step "rate=$r" "$mode" "$workers" "offered_rate=$r"
        server_stop
      done
    done
    ;;
  legit)
    r=${rate:-100000}
    # The flood outlasts the last transaction: legit-seconds + Rm·RTO after the last of 7
    # requests (RFC 8489 §6.2.1: 39.5 s at RTO 500 ms) + 1 s.
    tail_ms=$((rto_ms * (64 + 16) - rto_ms))
    s=${seconds:-$(python3 -c "print($legit_seconds + $tail_ms / 1000 + 1)")}
    server_start "" "$workers"
    ip netns exec "$ns" nft reset counters table ip reflab >/dev/null
    victim_flood "$r" "$s"
    traffic outside legit --sources "$outside_prefix" --clients "$clients" --duration "$legit_seconds" \
      --rto-ms "$rto_ms" --cpu 0
    traffic inside legit --sources "$inside_prefix" --clients "$inside" --duration "$legit_seconds" \
      --rto-ms "$rto_ms" --cpu 0
    wait_traffic
    step "legit" "" "$workers" "offered_rate=$r"
    ;;
  cgnat)
    s=${seconds:-60}
    server_start "" "$workers"
    ip netns exec "$ns" nft reset counters table ip reflab >/dev/null
    traffic cgnat cgnat --source "$cgnat_ip" --users "$users" --interval "$interval" \
      --burst-every "$burst_every" --duration "$s" --cpu 1
    wait_traffic
    step "cgnat" "" "$workers" "seconds=$s"
    ;;
  churn)
    r=${rate:-10000}
    s=${seconds:-8}
    # Each distinct-source phase sends `sources` datagrams, each from a new address.
    phase=$(python3 -c "print(round($sources / $random_rate, 3))")
    server_start "" "$workers"
    rss_start=$(rss_kib)
    ip netns exec "$ns" nft reset counters table ip reflab >/dev/null
    victim_flood "$r" "$s"
    wait_traffic
    step "victim alone" "" "$workers" "offered_rate=$r" "rss_start_kib=$rss_start"
    for round in $(seq "$rounds"); do
      victim_flood "$r" "$phase"
      traffic random random --sources "$random_prefix" --rate "$random_rate" --duration "$phase" --cpu 1
      wait_traffic
      step "victim + distinct sources, round $round" "" "$workers" "offered_rate=$r"
    done
    ;;
  workers)
    r=${rate:-100000}
    s=${seconds:-8}
    for w in 1 2; do
      server_start "" "$w"
      ip netns exec "$ns" nft reset counters table ip reflab >/dev/null
      victim_flood "$r" "$s"
      wait_traffic
      step "workers=$w" "" "$w" "offered_rate=$r"
      server_stop
    done
    ;;
esac

python3 - "$scenario" "$limit_supported" "$xdp" "$(uname -r)" "${steps[@]}" -- "${limits[@]}" <<'PY'
import json, sys
args = sys.argv[1:]
split = args.index("--")
scenario, supported, xdp, kernel, *files = args[:split]
limits = args[split + 1:]
print(json.dumps({
    "scenario": scenario,
    "limit_supported": supported == "true",
    "xdp": xdp == "true",
    "limit": dict(kv.split("=", 1) for kv in limits),
    "kernel": kernel,
    "steps": [json.load(open(f)) for f in files],
}))
PY
