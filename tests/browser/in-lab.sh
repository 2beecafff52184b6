#!/usr/bin/env bash
# Run by scripts/natlab.sh (in the lab's client namespace): one ICE client gathers its
# candidates while tcpdump records the STUN traffic, then the NAT's conntrack table and
# stunedge's metrics are saved. Everything goes to OUT_DIR:
#   client.out / client.err   the client's output
#   capture.pcap              UDP to and from port 3478 (the STUN/TURN servers), captured
#                             in the server namespace (after the NAT) or, with DROP=1, in the
#                             NAT namespace while the NAT drops every request to port 3478
#                             (the client's retransmissions)
#   conntrack.txt             the NAT's UDP conntrack entries (the mappings the NAT made)
#   metrics.txt               stunedge's /metrics (needs natlab.sh --admin)
#
#   in-lab.sh OUT_DIR chromium ICE_SERVERS_JSON [TIMEOUT_SECONDS]
#   in-lab.sh OUT_DIR chromium-connect ICE_SERVERS_JSON [TIMEOUT_SECONDS]   (gather.py --connect)
#   in-lab.sh OUT_DIR libnice STUN_IP STUN_PORT [TURN_IP TURN_PORT USER PASSWORD]
# NICE_GATHER names the built libnice harness. Exits with the client's status.
set -euo pipefail
out=$1 client=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
capture_ns=$SERVER_NS
if [[ ${DROP:-} == 1 ]]; then
  capture_ns=$NAT_NS
  ip netns exec "$NAT_NS" nft insert rule ip natlab forward udp dport 3478 drop
fi
ip netns exec "$capture_ns" tcpdump -Z root -i any --immediate-mode -U -n -s 0 -w "$out/capture.pcap" udp port 3478 >"$out/tcpdump.log" 2>&1 &
tcpdump=$!
trap 'kill "$tcpdump" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$out/tcpdump.log" 2>/dev/null && break
  sleep 0.05
done
status=0
case $client in
  chromium)
    /usr/bin/python3 "$here/gather.py" --timeout "${2:-10}" "$1" >"$out/client.out" 2>"$out/client.err" || status=$? ;;
  chromium-connect)
    /usr/bin/python3 "$here/gather.py" --connect --timeout "${2:-10}" "$1" >"$out/client.out" 2>"$out/client.err" || status=$? ;;
  libnice)
    "$NICE_GATHER" "$@" >"$out/client.out" 2>"$out/client.err" || status=$? ;;
  *) echo "in-lab.sh: unknown client $client" >&2; exit 2 ;;
esac
sleep 0.3
ip netns exec "$NAT_NS" conntrack -L -p udp >"$out/conntrack.txt" 2>/dev/null || true
ip netns exec "$SERVER_NS" curl -s --max-time 2 127.0.0.1:9478/metrics >"$out/metrics.txt" || true
kill -INT "$tcpdump" 2>/dev/null || true
wait "$tcpdump" 2>/dev/null || true
trap - EXIT
exit "$status"
