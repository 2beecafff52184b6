#!/usr/bin/env bash
# The NAT lab: a client behind a real Linux NAT (nftables + conntrack), a stunedge server in
# RFC 5780 mode with two addresses, each in its own network namespace, joined by veth pairs.
# Runs one command in the client's namespace, then tears everything down (also on error or
# Ctrl-C). Nothing leaves these namespaces: the "public" side is 203.0.113.0/24 (TEST-NET-3)
# on a veth pair that exists only inside the lab.
#
#   scripts/natlab.sh [--bin PATH] [--udp-timeout SECONDS] TYPE -- COMMAND [ARGS...]
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
#   NAT_NS=<name>              the NAT namespace (e.g. `ip netns exec "$NAT_NS" conntrack -F`)
#   STUNEDGE=<path>            the stunedge binary
# The script exits with COMMAND's status. Needs root, iproute2 and nft (conntrack for
# commands that flush the NAT's table).
#
# Example:
#   scripts/natlab.sh symmetric -- sh -c '"$STUNEDGE" probe --nat "$SERVER"'
set -euo pipefail

bin=target/release/stunedge
udp_timeout=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --udp-timeout) udp_timeout=$2; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
type=${1:-}
shift || true
if [[ "${1:-}" != "--" || $# -lt 2 ]]; then
  echo "usage: $0 [--bin PATH] [--udp-timeout SECONDS] TYPE -- COMMAND [ARGS...]" >&2
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

# Names unique to this run, so labs can run side by side (interface names ≤ 15 characters).
id=$(( $$ % 100000 ))
cli=natlab-cli-$id
nat=natlab-nat-$id
srv=natlab-srv-$id
work=$(mktemp -d)
server_pid=""
teardown() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
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

masquerade="masquerade"
inbound=""
learn=""
case "$type" in
  full-cone) inbound="iifname \"ns$id\" udp dport 1024-65535 dnat to 10.99.0.2" ;;
  restricted-cone)
    inbound="iifname \"ns$id\" ip saddr . udp dport @contacted dnat to 10.99.0.2"
    learn="update @contacted { ip daddr . udp sport }" ;;
  symmetric) masquerade="masquerade fully-random" ;;
esac
ip netns exec "$nat" nft -f - <<EOF
table ip natlab {
  set contacted { type ipv4_addr . inet_service; flags dynamic, timeout; timeout 5m; }
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

# After the rules: they load conntrack, which the sysctl belongs to (per namespace).
if [[ -n "$udp_timeout" ]]; then
  ip netns exec "$nat" sysctl -qw net.netfilter.nf_conntrack_udp_timeout="$udp_timeout"
fi

cat >"$work/stunedge.toml" <<EOF
[server]
listen = ["203.0.113.10:3478"]
[rfc5780]
alternate_ips = ["203.0.113.11"]
alternate_port = 3479
[io]
cpus = [0]
[admin]
listen = ""
EOF
ip netns exec "$srv" "$bin" serve -c "$work/stunedge.toml" 2>"$work/server.log" &
server_pid=$!
# Ready when it answers inside its own namespace.
ready=""
for _ in $(seq 50); do
  if ip netns exec "$srv" "$bin" probe --rto-ms 50 --retries 2 203.0.113.10:3478 >/dev/null 2>&1; then
    ready=yes
    break
  fi
  sleep 0.1
done
if [[ -z "$ready" ]]; then
  echo "natlab: stunedge did not start in $srv:" >&2
  cat "$work/server.log" >&2
  exit 1
fi

status=0
ip netns exec "$cli" env SERVER=203.0.113.10:3478 NAT_NS="$nat" STUNEDGE="$bin" "$@" || status=$?
exit "$status"
