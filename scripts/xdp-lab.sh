#!/usr/bin/env bash
# The XDP lab: stunedge with its XDP fast path attached to one end of a veth pair, a client in
# a network namespace at the other end, each in its own namespace. Runs one command in the
# client's namespace, then tears everything down (also on error or Ctrl-C). Nothing leaves the
# lab: the addresses are 10.77.0.0/24 and fd77::/64 on a veth pair that exists only inside it.
#
#   scripts/xdp-lab.sh [--bin PATH] [--mode generic|native] [--extra TOML] [--no-xdp] -- COMMAND [ARGS...]
#
#   --mode generic  (default) XDP in the generic (SKB) hook of the server's veth: works with
#                   nothing on the peer.
#   --mode native   XDP in veth's native hook; XDP_TX on veth needs an XDP program on the peer,
#                   so the object's xdp_pass program is attached to the client's veth (bpftool).
#   --extra TOML    appended to stunedge's configuration (e.g. a [limit] section).
#
# The client's veth has TX checksum offload off: a locally sent UDP datagram otherwise carries
# only a partial checksum, which the XDP program (verifying checksums, as a NIC's frames have
# them) passes to the workers as bad_checksum.
#
# COMMAND runs in the client namespace with these in its environment:
#   SERVER4=10.77.0.1:3478  SERVER6=[fd77::1]:3478   stunedge's addresses
#   SERVER_NS=<name>        the server's namespace (metrics: ip netns exec "$SERVER_NS" curl -s
#                           127.0.0.1:9478/metrics)
#   STUNEDGE=<path>         the stunedge binary
#   SERVER_PID=<pid>        stunedge's process (its CPU time: /proc/$SERVER_PID/stat)
# With --no-xdp stunedge runs without [xdp] (the socket path alone, for comparisons).
# Exits with COMMAND's status. Needs root, iproute2, ethtool, curl; bpftool for --mode native.
set -euo pipefail

bin=target/release/stunedge
mode=generic
extra=""
no_xdp=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --extra) extra=$2; shift 2 ;;
    --no-xdp) no_xdp=yes; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) echo "xdp-lab: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [--bin PATH] [--mode generic|native] [--extra TOML] -- COMMAND [ARGS...]" >&2; exit 2; }
case "$mode" in generic|native) ;; *) echo "xdp-lab: --mode must be generic or native" >&2; exit 2 ;; esac
[[ -x "$bin" ]] || { echo "xdp-lab: no stunedge binary at $bin" >&2; exit 2; }
bin=$(realpath "$bin")
root=$(cd "$(dirname "$0")/.." && pwd)
tools=(ip ethtool curl)
[[ $mode == native ]] && tools+=(bpftool nsenter)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "xdp-lab: '$tool' is not installed" >&2; exit 2; }
done

id=$(( $$ % 100000 ))
cli=xdplab-cli-$id
srv=xdplab-srv-$id
pins=/sys/fs/bpf/stunedge-xdplab-$id
work=$(mktemp -d)
server_pid=""
teardown() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  for ns in "$cli" "$srv"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$pins" "$work"
}
trap teardown EXIT INT TERM

ip netns add "$cli"
ip netns add "$srv"
for ns in "$cli" "$srv"; do
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
done
ip link add "xc$id" netns "$cli" type veth peer name "xs$id" netns "$srv"
ip -n "$cli" addr add 10.77.0.2/24 dev "xc$id"
ip -n "$cli" addr add fd77::2/64 dev "xc$id" nodad
ip -n "$srv" addr add 10.77.0.1/24 dev "xs$id"
ip -n "$srv" addr add fd77::1/64 dev "xs$id" nodad
ip -n "$cli" link set "xc$id" up
ip -n "$srv" link set "xs$id" up
ip netns exec "$cli" ethtool -K "xc$id" tx off >/dev/null
# Static neighbours: the first IPv6 exchanges would otherwise wait for neighbour discovery.
cli_mac=$(ip -n "$cli" -br link show "xc$id" | awk '{print $3}')
srv_mac=$(ip -n "$srv" -br link show "xs$id" | awk '{print $3}')
ip -n "$cli" neigh replace fd77::1 lladdr "$srv_mac" dev "xc$id" nud permanent
ip -n "$cli" neigh replace 10.77.0.1 lladdr "$srv_mac" dev "xc$id" nud permanent
ip -n "$srv" neigh replace fd77::2 lladdr "$cli_mac" dev "xs$id" nud permanent
ip -n "$srv" neigh replace 10.77.0.2 lladdr "$cli_mac" dev "xs$id" nud permanent

if [[ $mode == native ]]; then
  # The peer needs an XDP program for XDP_TX frames to be received (drivers/net/veth.c).
  bpftool prog loadall "$root/src/xdp/stun.bpf.o" "$pins" type xdp
  nsenter --net="/run/netns/$cli" bpftool net attach xdpdrv pinned "$pins/xdp_pass" dev "xc$id"
fi

cat >"$work/stunedge.toml" <<EOF
[server]
listen = ["10.77.0.1:3478", "[fd77::1]:3478"]
[io]
cpus = [0]
[admin]
listen = "127.0.0.1:9478"
$extra
EOF
if [[ -z "$no_xdp" ]]; then
  printf '[xdp]\ninterfaces = ["xs%s"]\nmode = "%s"\n' "$id" "$mode" >>"$work/stunedge.toml"
fi
ip netns exec "$srv" "$bin" serve -c "$work/stunedge.toml" 2>"$work/server.log" &
server_pid=$!
ready=""
want="xdp: fast path attached"
[[ -n "$no_xdp" ]] && want="serving"
for _ in $(seq 50); do
  if grep -q "$want" "$work/server.log" 2>/dev/null; then ready=yes; break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [[ -z "$ready" ]]; then
  echo "xdp-lab: stunedge did not start (or attach its XDP program):" >&2
  cat "$work/server.log" >&2
  exit 1
fi

status=0
ip netns exec "$cli" env SERVER4=10.77.0.1:3478 "SERVER6=[fd77::1]:3478" SERVER_NS="$srv" STUNEDGE="$bin" \
  SERVER_PID="$server_pid" "$@" || status=$?
if [[ $status -ne 0 ]]; then
  echo "xdp-lab: the command failed ($status); stunedge's log:" >&2
  cat "$work/server.log" >&2
fi
exit "$status"
