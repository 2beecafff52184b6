#!/usr/bin/env bash
# The fleet lab: three stunedge nodes behind BGP anycast with ECMP, in network namespaces. A
# router and every node run BIRD 2 (Debian `bird2`), each with its own -c/-s/-P; every node
# announces the anycast addresses 198.51.100.53/32 and 2001:db8:53::53/128 over eBGP while its
# /readyz answers 200 (the health watcher of configs/, toggling BIRD static protocols through
# birdc); the router installs them as one ECMP route with L4 hashing, so different client flows
# land on different nodes. Runs one command, then tears everything down (also on error or
# Ctrl-C). Nothing leaves the lab: every address is a documentation one (192.0.2.0/24 links,
# 198.51.100.0/24 anycast and relays, 203.0.113.0/24 clients, 2001:db8::/32) on veth pairs that
# exist only inside it.
#
#   scripts/fleetlab.sh [--bin PATH] [--drain SECONDS] [--prometheus] -- COMMAND [ARGS...]
#   scripts/fleetlab.sh ctl LAB ACTION NODE      (from COMMAND: act on node 1, 2 or 3)
#
#   --drain S      admin.drain_seconds of every node (default 3)
#   --prometheus   a Prometheus in the router's namespace scraping the three nodes' admin
#                  endpoints every 0.5 s (API: ip netns exec "$ROUTER_NS" curl 127.0.0.1:9090)
#
# Topology: router n$i 192.0.2.(4i-3)/30, 2001:db8:0:$i::1/64 <-> node$i up0 .(4i-2), ::2
# (router id, BGP and BFD peer, and the admin endpoint on :9478); client$c (c = 1..3) on
# 203.0.113.(16c-14)/28 (and .(16c-13)..(16c-4) for more client addresses) and
# 2001:db8:c$c::2/64 (::3..::12), router side .(16c-15) and ::1. Four stand-in TURN relays (a
# stunedge answering Binding, the balancer's health probe) sit on the router's lo at
# 198.51.100.201-204 and 2001:db8:201::1-4.
#
# Nodes: AS 64510, router AS 64500, eBGP on the link, hold 3 s, keepalive 1 s, BFD 100 ms × 3
# (configs/bird-node.conf is the production template, the lab fills it in). The router's kernel
# protocol merges paths into one multipath route; fib_multipath_hash_policy 3 with fields 0x37
# (addresses, protocol, ports: L4) and a fixed seed where the kernel has them (>= 5.14, seed
# >= 6.11), else policy 1. rp_filter is loose (2) on the router: a withdrawn node's late answers
# still pass. Every node runs stunedge (io_uring or mmsg, one worker) listening on the wildcard
# addresses (the answer leaves from the anycast address: IP_PKTINFO), SOFTWARE "fleet-node$i" so
# a client sees who answered, the same nonce secret, long-term user alice/fleet-secret-pw on port
# 3479 (auth required there), [turn_lb] with the same seed and backends, and admin.drain_seconds.
#
# COMMAND runs in the root namespace with these in its environment:
#   LAB=<dir>                 the lab's scratch directory (configs, logs: node$i.log, bird-*.log)
#   FLEETLAB=<this script>    for `"$FLEETLAB" ctl "$LAB" ACTION NODE`
#   ROUTER_NS, NODE_NS_1..3, CLIENT_NS_1..3   namespace names
#   ANYCAST4=198.51.100.53  ANYCAST6=2001:db8:53::53   PORT=3478  AUTH_PORT=3479
#   RELAYS4="198.51.100.201:3478 ..."   RELAYS6="[2001:db8:201::1]:3478 ..."
#   STUNEDGE=<path>  DRAIN=<seconds>  WATCH_INTERVAL=0.2  WATCH_RISE=3  PROM=http://127.0.0.1:9090
# ctl ACTIONs (by PID, as recorded in $LAB/pids, and only while that PID still lives in one of
# this lab's namespaces): start (stunedge), term (SIGTERM: drain; the time it was sent goes to
# $LAB/term$NODE.at as `date +%s.%N`), kill (SIGKILL stunedge), kill-node (SIGKILL stunedge, its
# watcher and its BIRD), revive (BIRD and the watcher again), maint-on / maint-off (the
# watcher's maintenance file: withdraw while it exists), isolate / unisolate (drop everything
# on the node's uplink: a silent death), pid.
# Exits with COMMAND's status. Needs root, iproute2, procps (sysctl), bird2, curl, python3
# (prometheus for --prometheus, nft for isolate). Teardown stops what the lab started, kills
# whatever is still left in the lab's namespaces, and deletes only the namespaces this run made.
set -euo pipefail
self=$(realpath "$0")
root=$(cd "$(dirname "$self")/.." && pwd)

anycast4=198.51.100.53
anycast6=2001:db8:53::53
watch_interval=0.2
watch_rise=3

# in_lab PID: whether PID is a live process in one of this lab's namespaces (LAB_NS); a
# recorded PID whose process is gone may belong to someone else by now.
in_lab() {
  local ns want
  ns=$(ip netns identify "$1" 2>/dev/null) || return 1
  for want in "${LAB_NS[@]}"; do grep -qxF -- "$want" <<<"$ns" && return 0; done
  return 1
}

# ---- ctl: actions on one node of a running lab, from COMMAND ----------------------------------
if [[ ${1:-} == ctl ]]; then
  lab=$2 action=$3 n=$4
  # shellcheck source=/dev/null
  source "$lab/env"
  node_ns=${NODE_NS[$n]}
  pidof_() { cat "$lab/pids/$1" 2>/dev/null || true; }
  # signal SIG NAME: signals NAME's recorded PID if it still lives in one of the lab's namespaces
  # (a PID of a process that exited may have been reused); succeeds only if it was sent.
  signal() {
    local pid
    pid=$(pidof_ "$2")
    [[ -n $pid ]] && in_lab "$pid" && kill "-$1" "$pid" 2>/dev/null
  }
  # After SIGKILL the PID is dead (or soon is): forget it, so that nothing signals it again.
  kill_() { signal KILL "$1" || true; rm -f "$lab/pids/$1"; }
  start_watcher() {
    ip netns exec "$node_ns" "$root/configs/stunedge-anycast-watch" --socket "$lab/node$n.ctl" \
      --url "http://192.0.2.$((4 * n - 2)):9478/readyz" --interval "$watch_interval" --rise "$watch_rise" \
      --maintenance-file "$lab/node$n.maintenance" >>"$lab/watch$n.log" 2>&1 &
    echo $! >"$lab/pids/watch$n"
  }
  case $action in
    start)
      ip netns exec "$node_ns" "$STUNEDGE" serve -c "$lab/node$n.toml" >>"$lab/node$n.log" 2>&1 &
      echo $! >"$lab/pids/stunedge$n" ;;
    term)
      # The time right after the signal went (never before it), so that the exit time measured
      # from it is never longer than the real one.
      signal TERM "stunedge$n" && date +%s.%N >"$lab/term$n.at" ;;
    kill) kill_ "stunedge$n" ;;
    kill-node) for p in stunedge watch bird; do kill_ "$p$n"; done ;;
    revive)
      rm -f "$lab/node$n.ctl"
      ip netns exec "$node_ns" bird -c "$lab/node$n.conf" -s "$lab/node$n.ctl" -P "$lab/node$n.pid" \
        -f >>"$lab/bird-node$n.log" 2>&1 &
      echo $! >"$lab/pids/bird$n"
      for _ in $(seq 50); do [[ -S $lab/node$n.ctl ]] && break; sleep 0.05; done
      start_watcher ;;
    watch) start_watcher ;;
    maint-on) touch "$lab/node$n.maintenance" ;;
    maint-off) rm -f "$lab/node$n.maintenance" ;;
    isolate)
      # Input and output on the uplink dropped: the router hears nothing more (no BFD, no
      # keepalive, no TCP reset), as from a node that hangs or loses power.
      ip netns exec "$node_ns" nft -f - <<'EOF'
table inet fleetlab_isolate {
  chain in { type filter hook input priority 0; policy accept; iifname "up0" drop; }
  chain out { type filter hook output priority 0; policy accept; oifname "up0" drop; }
}
EOF
      ;;
    unisolate) ip netns exec "$node_ns" nft delete table inet fleetlab_isolate ;;
    pid) pidof_ "stunedge$n"; echo ;;
    *) echo "fleetlab ctl: unknown action $action" >&2; exit 2 ;;
  esac
  exit 0
fi

# ---- the lab ----------------------------------------------------------------------------------
bin=target/debug/stunedge
drain=3
prometheus=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --drain) drain=$2; shift 2 ;;
    --prometheus) prometheus=yes; shift ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$self"; exit 0 ;;
    --) shift; break ;;
    *) echo "fleetlab: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [--bin PATH] [--drain SECONDS] [--prometheus] -- COMMAND [ARGS...]" >&2; exit 2; }
[[ -x $bin ]] || { echo "fleetlab: no stunedge binary at $bin (build it, or pass --bin)" >&2; exit 2; }
bin=$(realpath "$bin")
tools=(ip sysctl bird birdc curl python3)
[[ -n $prometheus ]] && tools+=(prometheus)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "fleetlab: '$tool' is not installed (scripts/install-test-deps.sh names its package)" >&2; exit 2; }
done

# Names unique to this run, so labs can run side by side: the random part of the lab's
# directory, which no other lab has while this one exists (its namespaces go before it does).
# Should a name be taken anyway, `ip netns add` fails and the lab stops; it never deletes a
# namespace it did not create.
lab=$(mktemp -d /tmp/fleetlab.XXXXXX)
chmod 755 "$lab"
mkdir "$lab/pids"
id=${lab##*.}
router=fl-rtr-$id
nodes=("" "fl-n1-$id" "fl-n2-$id" "fl-n3-$id")
clients=("" "fl-c1-$id" "fl-c2-$id" "fl-c3-$id")
LAB_NS=("$router" "${nodes[@]:1}" "${clients[@]:1}")
created=()
teardown() {
  local f pid sig ns left
  # Every process this lab started, by the PID it recorded (and only while that PID still lives
  # in one of the lab's namespaces), before the namespaces go: a process inside keeps a deleted
  # namespace's veths alive, and `ip netns del` kills nothing.
  for f in "$lab"/pids/*; do
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    # stunedge stops at once on SIGINT (SIGTERM would drain); the others on SIGTERM.
    sig=TERM
    [[ $f == */stunedge* || $f == */relays ]] && sig=INT
    if [[ -n $pid ]] && in_lab "$pid"; then kill "-$sig" "$pid" 2>/dev/null || true; fi
  done
  # Up to 3 s for them to stop (most started from ctl, not this shell's children: polled, not
  # waited for), then SIGKILL whatever is still in a namespace of this run (clients of a failed
  # COMMAND too).
  for _ in $(seq 30); do
    left=""
    for ns in "${created[@]}"; do [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] || left=yes; done
    [[ -n $left ]] || break
    sleep 0.1
  done
  for ns in "${created[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  wait 2>/dev/null || true
  for ns in "${created[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [[ -n ${FLEETLAB_KEEP:-} ]]; then echo "fleetlab: kept $lab" >&2; else rm -rf "$lab"; fi
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

{
  printf 'STUNEDGE=%q\n' "$bin"
  printf 'NODE_NS=("" %q %q %q)\n' "${nodes[@]:1}"
  printf 'LAB_NS=(%s)\n' "$(printf '%q ' "${LAB_NS[@]}")"
} >"$lab/env"

for ns in "${LAB_NS[@]}"; do
  ip netns add "$ns" || { echo "fleetlab: cannot create the namespace $ns" >&2; exit 1; }
  created+=("$ns")
  ip -n "$ns" link set lo up
  # A new namespace resets IPv6's conf (devconf_inherit_init_net) but copies IPv4's from the
  # host: set every value the lab relies on. keep_addr_on_down: an uplink that flaps keeps its
  # IPv6 address (research pitfall 3).
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.keep_addr_on_down=1 net.ipv6.conf.default.keep_addr_on_down=1 \
    net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
    net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.default.rp_filter=2
done
ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
  net.ipv4.conf.all.ignore_routes_with_linkdown=1 net.ipv4.conf.default.ignore_routes_with_linkdown=1 \
  net.ipv6.conf.all.ignore_routes_with_linkdown=1
# L4 hashing. Policy 3 with fields 0x37 (source and destination address, protocol, source and
# destination port) hashes the 5-tuple alone; policy 1 would use a connected socket's random
# sk_txhash in a lab (research pitfall 11). Policy 1 where the kernel lacks 3.
hash="policy 3, fields 0x37"
if ! ip netns exec "$router" sysctl -qw net.ipv4.fib_multipath_hash_policy=3 net.ipv6.fib_multipath_hash_policy=3 \
  net.ipv4.fib_multipath_hash_fields=0x0037 net.ipv6.fib_multipath_hash_fields=0x0037 2>/dev/null; then
  ip netns exec "$router" sysctl -qw net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1
  hash="policy 1"
fi
ip netns exec "$router" sysctl -qw net.ipv4.fib_multipath_hash_seed=42 2>/dev/null && hash+=", seed 42"
echo "fleetlab: ECMP hash $hash" >&2

for i in 1 2 3; do
  ns=${nodes[$i]}
  ip link add "n$i" netns "$router" type veth peer name up0 netns "$ns"
  ip -n "$router" addr add "192.0.2.$((4 * i - 3))/30" dev "n$i"
  ip -n "$router" addr add "2001:db8:0:$i::1/64" dev "n$i" nodad
  ip -n "$ns" addr add "192.0.2.$((4 * i - 2))/30" dev up0
  ip -n "$ns" addr add "2001:db8:0:$i::2/64" dev up0 nodad
  # The anycast addresses on lo (no dummy module needed; research pitfall 4).
  ip -n "$ns" addr add "$anycast4/32" dev lo
  ip -n "$ns" addr add "$anycast6/128" dev lo
  ip -n "$router" link set "n$i" up
  ip -n "$ns" link set up0 up
  ip -n "$ns" route add default via "192.0.2.$((4 * i - 3))"
  ip -n "$ns" -6 route add default via "2001:db8:0:$i::1"
done
for c in 1 2 3; do
  ns=${clients[$c]}
  ip link add "c$c" netns "$router" type veth peer name up0 netns "$ns"
  ip -n "$router" addr add "203.0.113.$((16 * c - 15))/28" dev "c$c"
  ip -n "$router" addr add "2001:db8:c$c::1/64" dev "c$c" nodad
  for h in $(seq 2 12); do
    ip -n "$ns" addr add "203.0.113.$((16 * c - 16 + h))/28" dev up0
    ip -n "$ns" addr add "2001:db8:c$c::$(printf '%x' "$h")/64" dev up0 nodad
  done
  ip -n "$router" link set "c$c" up
  ip -n "$ns" link set up0 up
  ip -n "$ns" route add default via "203.0.113.$((16 * c - 15))"
  ip -n "$ns" -6 route add default via "2001:db8:c$c::1"
done
relays4=() relays6=()
for r in 1 2 3 4; do
  ip -n "$router" addr add "198.51.100.$((200 + r))/32" dev lo
  ip -n "$router" addr add "2001:db8:201::$r/128" dev lo
  relays4+=("198.51.100.$((200 + r)):3478")
  relays6+=("[2001:db8:201::$r]:3478")
done

# ---- BIRD: the router ----
{
  cat <<EOF
# The lab router: eBGP to every node, one multipath kernel route per anycast prefix.
router id 203.0.113.1;
log "$lab/bird-router.log" all;
protocol device { }
protocol bfd { interface "n*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }
# merge paths belongs in the kernel protocol (research pitfall 5).
protocol kernel kernel4 { ipv4 { import none; export where source = RTS_BGP; }; merge paths yes; }
protocol kernel kernel6 { ipv6 { import none; export where source = RTS_BGP; }; merge paths yes; }
template bgp node { local as 64500; hold time 3; keepalive time 1; connect retry time 2; error wait time 1, 10; bfd on; }
EOF
  for i in 1 2 3; do
    echo "protocol bgp node${i}_v4 from node { neighbor 192.0.2.$((4 * i - 2)) as 64510; ipv4 { import where net = $anycast4/32; export none; }; }"
    echo "protocol bgp node${i}_v6 from node { neighbor 2001:db8:0:$i::2 as 64510; ipv6 { import where net = $anycast6/128; export none; }; }"
  done
} >"$lab/router.conf"
ip netns exec "$router" bird -c "$lab/router.conf" -s "$lab/router.ctl" -P "$lab/router.pid" -f \
  >>"$lab/bird-router.log" 2>&1 &
echo $! >"$lab/pids/bird-router"

# ---- the stand-in TURN relays on the router (a stunedge answering the balancer's Binding probe) ----
list() { local out="" a; for a in "$@"; do out+="${out:+, }\"$a\""; done; printf '%s' "$out"; }
cat >"$lab/relays.toml" <<EOF
[server]
listen = [$(list "${relays4[@]}" "${relays6[@]}")]
software = "fleet-relay"
[io]
cpus = [0]
[admin]
listen = ""
EOF
ip netns exec "$router" "$bin" serve -c "$lab/relays.toml" >>"$lab/relays.log" 2>&1 &
echo $! >"$lab/pids/relays"

# ---- every node: BIRD from the production template, stunedge, the watcher ----
backends=""
for r in 1 2 3 4; do
  backends+="  { name = \"relay$r\", udp = [\"198.51.100.$((200 + r)):3478\", \"[2001:db8:201::$r]:3478\"] },"$'\n'
done
for i in 1 2 3; do
  sed -e "s/@ROUTER_ID@/192.0.2.$((4 * i - 2))/" -e "s/@UPLINK@/up0/" \
    -e "s/@PEER4@/192.0.2.$((4 * i - 3))/" -e "s/@PEER6@/2001:db8:0:$i::1/" \
    -e "s/@ANYCAST4@/$anycast4/" -e "s/@ANYCAST6@/$anycast6/" \
    -e "s/@LOCAL_AS@/64510/" -e "s/@PEER_AS@/64500/" \
    -e "s#^log .*#log \"$lab/bird-node$i.log\" all;#" \
    "$root/configs/bird-node.conf" >"$lab/node$i.conf"
  # What every node shares: the nonce secret, the users, the balancer's seed and backends. What
  # differs: SOFTWARE (only so that the lab's clients see who answered) and the admin address.
  cat >"$lab/node$i.toml" <<EOF
[server]
listen = ["0.0.0.0:3478", "[::]:3478", "0.0.0.0:3479", "[::]:3479"]
software = "fleet-node$i"
[io]
cpus = [$(( (i - 1) % $(nproc) ))]
[auth]
policy = "none"
listeners = [
  { listen = "0.0.0.0:3479", policy = "required" },
  { listen = "[::]:3479", policy = "required" },
]
realm = "fleetlab"
nonce_secret = "fleetlab-shared-nonce-secret-0123456789"
long_term_users = { alice = "fleet-secret-pw" }
# The lab's clients are a few addresses sending thousands of requests per second: budgets far
# above them (the defence stays on; the default 400/s per /32 would limit the load itself).
[limit]
rate = 20000
error_rate = 2000
[turn_lb]
enabled = true
seed = "fleetlab-shared-seed"
probe = "binding"
probe_interval = 0.5
probe_timeout = 0.25
backends = [
$backends]
[admin]
listen = "192.0.2.$((4 * i - 2)):9478"
drain_seconds = $drain
EOF
  chmod 600 "$lab/node$i.toml"
  "$bin" check-config "$lab/node$i.toml" >/dev/null 2>&1 || "$bin" check-config "$lab/node$i.toml"
  ip netns exec "${nodes[$i]}" bird -c "$lab/node$i.conf" -s "$lab/node$i.ctl" -P "$lab/node$i.pid" -f \
    >>"$lab/bird-node$i.log" 2>&1 &
  echo $! >"$lab/pids/bird$i"
done
export STUNEDGE=$bin
for i in 1 2 3; do
  for _ in $(seq 50); do [[ -S $lab/node$i.ctl ]] && break; sleep 0.05; done
  "$self" ctl "$lab" start "$i"
  "$self" ctl "$lab" watch "$i"
done

if [[ -n $prometheus ]]; then
  targets=$(list "192.0.2.2:9478" "192.0.2.6:9478" "192.0.2.10:9478")
  cat >"$lab/prometheus.yml" <<EOF
global:
  scrape_interval: 500ms
  evaluation_interval: 500ms
scrape_configs:
  - job_name: stunedge
    static_configs:
      - targets: [$targets]
EOF
  ip netns exec "$router" prometheus --config.file="$lab/prometheus.yml" --storage.tsdb.path="$lab/prometheus" \
    --web.listen-address=127.0.0.1:9090 >"$lab/prometheus.log" 2>&1 &
  echo $! >"$lab/pids/prometheus"
fi

# Up when the router has the three-way ECMP route for both prefixes.
nexthops() { ip -n "$router" "$1" route show "$2" 2>/dev/null | grep -c 'nexthop via' || true; }
up=""
for _ in $(seq 300); do
  if [[ $(nexthops -4 "$anycast4") == 3 && $(nexthops -6 "$anycast6") == 3 ]]; then up=yes; break; fi
  sleep 0.1
done
if [[ -z $up ]]; then
  echo "fleetlab: the router never got three nexthops for the anycast routes:" >&2
  ip -n "$router" route show "$anycast4" >&2 || true
  ip -n "$router" -6 route show "$anycast6" >&2 || true
  birdc -s "$lab/router.ctl" show protocols >&2 || true
  tail -n 5 "$lab"/node*.log "$lab"/watch*.log >&2 || true
  exit 1
fi
echo "fleetlab: anycast routes up with 3 nexthops after ${SECONDS}s" >&2

status=0
env LAB="$lab" FLEETLAB="$self" ROUTER_NS="$router" STUNEDGE="$bin" DRAIN="$drain" \
  NODE_NS_1="${nodes[1]}" NODE_NS_2="${nodes[2]}" NODE_NS_3="${nodes[3]}" \
  CLIENT_NS_1="${clients[1]}" CLIENT_NS_2="${clients[2]}" CLIENT_NS_3="${clients[3]}" \
  ANYCAST4="$anycast4" ANYCAST6="$anycast6" PORT=3478 AUTH_PORT=3479 \
  RELAYS4="${relays4[*]}" RELAYS6="${relays6[*]}" WATCH_INTERVAL="$watch_interval" WATCH_RISE="$watch_rise" \
  PROMETHEUS="$prometheus" PROM=http://127.0.0.1:9090 "$@" || status=$?
if [[ $status -ne 0 ]]; then
  echo "fleetlab: the command failed ($status); the nodes' logs:" >&2
  tail -n 20 "$lab"/node?.log "$lab"/watch?.log >&2 || true
fi
exit "$status"
