#!/usr/bin/env bash
# The NAT lab: a client behind a real Linux NAT (nftables + conntrack), a stunedge server in
# RFC 5780 mode with two addresses, each in its own network namespace, joined by veth pairs.
# Runs one command in the client's namespace, then tears everything down (also on error or
# Ctrl-C). Nothing leaves these namespaces: the "public" side is 203.0.113.0/24 (TEST-NET-3)
# on a veth pair that exists only inside the lab.
#
#   scripts/natlab.sh [--bin PATH] [--udp-timeout SECONDS] [--plain] [--ipv6] [--admin]
#                     [--turn] TYPE -- COMMAND [ARGS...]
#
# Options:
#   --plain   stunedge as a production node answers: no RFC 5780 mode (one address per family)
#   --ipv6    IPv6 too: the client fd00:99::2/64 behind the NAT (NAT66 masquerade, the same TYPE
#             of rules for IPv6), the server 2001:db8:113::10 (and ::11) on the public side
#   --admin   stunedge's admin endpoint on 127.0.0.1:9478 inside the server's namespace (read it
#             with `ip netns exec "$SERVER_NS" curl -s 127.0.0.1:9478/metrics`)
#   --turn    a coturn TURN relay in the server's namespace on 203.0.113.20:3478 (user u, password
#             p, realm natlab; with --ipv6 also [2001:db8:113::20]:3478), and stunedge balancing
#             TURN to it ([turn_lb]): an Allocate sent to stunedge is redirected there
#
# TYPE is the NAT to emulate:
#   full-cone             endpoint-independent mapping and filtering
#   restricted-cone       endpoint-independent mapping, address-dependent filtering
#   port-restricted-cone  endpoint-independent mapping, address-and-port-dependent filtering
#   symmetric             address-and-port-dependent mapping (a random port per destination)
#
# Linux's masquerade keeps the client's source port when it can, so its mapping is endpoint-
# independent; conntrack lets in only answers from the exact address and port a packet went to
# (port-restricted). Full cone adds a DNAT of every inbound port to the client (the mapped
# port is the client's port); restricted cone adds the DNAT only for remote IPs the client has
# sent to from that port (a dynamic nftables set); symmetric masquerades with fully-random
# ports, so each destination gets its own mapping.
#
# COMMAND runs in the client namespace with these in its environment:
#   SERVER=203.0.113.10:3478   the server's primary address (alternate: 203.0.113.11:3479)
#   SERVER6=[2001:db8:113::10]:3478   with --ipv6
#   NAT_NS=<name>              the NAT namespace (e.g. `ip netns exec "$NAT_NS" conntrack -F`)
#   SERVER_NS=<name>           the server's namespace
#   TURN_BACKEND=203.0.113.20:3478   with --turn
#   STUNEDGE=<path>            the stunedge binary
# The script exits with COMMAND's status. Needs root, iproute2 and nft (conntrack for
# commands that flush the NAT's table; turnserver for --turn).
#
# Example:
#   scripts/natlab.sh symmetric -- sh -c '"$STUNEDGE" probe --nat "$SERVER"'
set -euo pipefail

bin=target/release/stunedge
udp_timeout=""
plain=""
ipv6=""
admin=""
turn=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --udp-timeout) udp_timeout=$2; shift 2 ;;
    --plain) plain=yes; shift ;;
    --ipv6) ipv6=yes; shift ;;
    --admin) admin=yes; shift ;;
    --turn) turn=yes; shift ;;
    -h|--help) sed -n '2,46p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
type=${1:-}
shift || true
if [[ "${1:-}" != "--" || $# -lt 2 ]]; then
  echo "usage: $0 [--bin PATH] [--udp-timeout SECONDS] [--plain] [--ipv6] [--admin] [--turn] TYPE -- COMMAND [ARGS...]" >&2
  exit 2
fi
shift
case "$type" in
  full-cone|restricted-cone|port-restricted-cone|symmetric) ;;
  *) echo "natlab: unknown NAT type '$type' (full-cone, restricted-cone, port-restricted-cone, symmetric)" >&2; exit 2 ;;
esac
if [[ ! -x "$bin" ]]; then
  echo "natlab: no stunedge binary at $bin (build it, or pass --bin)" >&2
  exit 2
fi
bin=$(realpath "$bin")
for tool in ip nft; do
  command -v "$tool" >/dev/null || { echo "natlab: '$tool' is not installed (apt-get install iproute2 nftables)" >&2; exit 2; }
done
if [[ -n "$turn" ]] && ! command -v turnserver >/dev/null; then
  echo "natlab: --turn needs coturn's turnserver (apt-get install coturn)" >&2
  exit 2
fi

# Names unique to this run, so labs can run side by side (interface names ≤ 15 characters).
id=$(( $$ % 100000 ))
cli=natlab-cli-$id
nat=natlab-nat-$id
srv=natlab-srv-$id
work=$(mktemp -d)
server_pid=""
turn_pid=""
teardown() {
  for pid in "$server_pid" "$turn_pid"; do
    if [[ -n "$pid" ]]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  for ns in "$cli" "$nat" "$srv"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap teardown EXIT INT TERM

for ns in "$cli" "$nat" "$srv"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip link add "nc$id" netns "$cli" type veth peer name "nn$id" netns "$nat"
ip link add "ns$id" netns "$nat" type veth peer name "sn$id" netns "$srv"
ip -n "$cli" addr add 10.99.0.2/24 dev "nc$id"
ip -n "$cli" link set "nc$id" up
ip -n "$cli" route add default via 10.99.0.1
ip -n "$nat" addr add 10.99.0.1/24 dev "nn$id"
ip -n "$nat" addr add 203.0.113.1/24 dev "ns$id"
ip -n "$nat" link set "nn$id" up
ip -n "$nat" link set "ns$id" up
ip netns exec "$nat" sysctl -qw net.ipv4.ip_forward=1
ip -n "$srv" addr add 203.0.113.10/24 dev "sn$id"
ip -n "$srv" addr add 203.0.113.11/24 dev "sn$id"
ip -n "$srv" link set "sn$id" up
if [[ -n "$turn" ]]; then
  ip -n "$srv" addr add 203.0.113.20/24 dev "sn$id"
fi
if [[ -n "$ipv6" ]]; then
  for ns in "$cli" "$nat" "$srv"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  done
  ip netns exec "$nat" sysctl -qw net.ipv6.conf.all.forwarding=1
  ip -n "$cli" addr add fd00:99::2/64 dev "nc$id" nodad
  ip -n "$cli" route add default via fd00:99::1
  ip -n "$nat" addr add fd00:99::1/64 dev "nn$id" nodad
  ip -n "$nat" addr add 2001:db8:113::1/64 dev "ns$id" nodad
  ip -n "$srv" addr add 2001:db8:113::10/64 dev "sn$id" nodad
  ip -n "$srv" addr add 2001:db8:113::11/64 dev "sn$id" nodad
  if [[ -n "$turn" ]]; then ip -n "$srv" addr add 2001:db8:113::20/64 dev "sn$id" nodad; fi
fi

# One table per family, the same rules (ip: 10.99.0.2 behind 203.0.113.1; ip6: fd00:99::2 behind
# 2001:db8:113::1).
nat_table() { # nat_table FAMILY ADDR_TYPE CLIENT
  local family=$1 addr_type=$2 client=$3 masquerade="masquerade" inbound="" learn=""
  local saddr="ip saddr" daddr="ip daddr"
  if [[ $family == ip6 ]]; then saddr="ip6 saddr"; daddr="ip6 daddr"; fi
  case "$type" in
    full-cone) inbound="iifname \"ns$id\" udp dport 1024-65535 dnat to $client" ;;
    restricted-cone)
      inbound="iifname \"ns$id\" $saddr . udp dport @contacted dnat to $client"
      learn="update @contacted { $daddr . udp sport }" ;;
    symmetric) masquerade="masquerade fully-random" ;;
  esac
  ip netns exec "$nat" nft -f - <<EOF
table $family natlab {
  set contacted { type $addr_type . inet_service; flags dynamic, timeout; timeout 5m; }
  chain prerouting {
    type nat hook prerouting priority dstnat;
    $inbound
  }
  chain postrouting { type nat hook postrouting priority srcnat; oifname "ns$id" $masquerade; }
  chain forward {
    type filter hook forward priority filter; policy drop;
    iifname "nn$id" oifname "ns$id" $learn accept
    ct state established,related accept
    ct status dnat accept
  }
  chain input { type filter hook input priority filter; policy accept; iifname "ns$id" udp dport 1-65535 drop; }
}
EOF
}
nat_table ip ipv4_addr 10.99.0.2
if [[ -n "$ipv6" ]]; then nat_table ip6 ipv6_addr fd00:99::2; fi

# After the rules: they load conntrack, which the sysctl belongs to (per namespace).
if [[ -n "$udp_timeout" ]]; then
  ip netns exec "$nat" sysctl -qw net.netfilter.nf_conntrack_udp_timeout="$udp_timeout"
fi

listen='"203.0.113.10:3478"'
alternates='"203.0.113.11"'
if [[ -n "$ipv6" ]]; then
  listen+=', "[2001:db8:113::10]:3478"'
  alternates+=', "2001:db8:113::11"'
fi
{
  printf '[server]\nlisten = [%s]\n' "$listen"
  if [[ -z "$plain" ]]; then printf '[rfc5780]\nalternate_ips = [%s]\nalternate_port = 3479\n' "$alternates"; fi
  printf '[io]\ncpus = [0]\n[admin]\n'
  if [[ -n "$admin" ]]; then printf 'listen = "127.0.0.1:9478"\n'; else printf 'listen = ""\n'; fi
  if [[ -n "$turn" ]]; then
    backend='"203.0.113.20:3478"'
    if [[ -n "$ipv6" ]]; then backend+=', "[2001:db8:113::20]:3478"'; fi
    printf '[turn_lb]\nenabled = true\nprobe_interval = 0.5\nprobe_timeout = 0.25\n'
    printf 'backends = [{ name = "relay", udp = [%s] }]\n' "$backend"
  fi
} >"$work/stunedge.toml"
if [[ -n "$turn" ]]; then
  turn_listen=(-L 203.0.113.20)
  if [[ -n "$ipv6" ]]; then turn_listen+=(-L 2001:db8:113::20); fi
  ip netns exec "$srv" turnserver -n --db "$work/turndb" "${turn_listen[@]}" -p 3478 --lt-cred-mech \
    --user u:p -r natlab --no-cli --no-tls --no-dtls --no-tcp --log-file stdout --simple-log \
    --min-port 49152 --max-port 50151 >"$work/turnserver.log" 2>&1 &
  turn_pid=$!
fi
ip netns exec "$srv" "$bin" serve -c "$work/stunedge.toml" 2>"$work/server.log" &
server_pid=$!
# wait_answering NAME ADDR LOG: until ADDR answers a Binding request inside the server's
# namespace (5 s), else say NAME did not start, show LOG and stop.
wait_answering() {
  for _ in $(seq 50); do
    if ip netns exec "$srv" "$bin" probe --rto-ms 50 --retries 2 "$2" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "natlab: $1 did not start in $srv:" >&2
  cat "$3" >&2
  exit 1
}
wait_answering stunedge 203.0.113.10:3478 "$work/server.log"
if [[ -n "$turn" ]]; then
  wait_answering turnserver 203.0.113.20:3478 "$work/turnserver.log"
fi

lab_env=(SERVER=203.0.113.10:3478 NAT_NS="$nat" SERVER_NS="$srv" STUNEDGE="$bin")
if [[ -n "$ipv6" ]]; then lab_env+=("SERVER6=[2001:db8:113::10]:3478"); fi
if [[ -n "$turn" ]]; then lab_env+=(TURN_BACKEND=203.0.113.20:3478); fi
status=0
ip netns exec "$cli" env "${lab_env[@]}" "$@" || status=$?
exit "$status"
