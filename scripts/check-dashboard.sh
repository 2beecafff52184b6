#!/usr/bin/env bash
# The Grafana dashboard against a real Prometheus: starts stunedge (admin endpoint on loopback)
# under a short mixed load (requests with and without credentials, junk; Bindings over its TCP
# and TLS stream listeners; TURN requests to its [turn_lb] balancer, whose backends are a fake TURN server answering 401 (and accepting TCP), an address nothing
# answers on and a drained one), starts Prometheus
# (Debian package `prometheus`) on loopback scraping it every second, then sends every query of
# grafana/stunedge-dashboard.json to Prometheus's HTTP API and requires each to parse and return
# data. The XDP fast path panels get a second stunedge, in its own network namespace behind a veth
# pair, with [xdp] attached (generic mode) to its end of the pair and a load of plain Binding
# requests over the veth: root only (outside root, and where it cannot attach, that part is
# skipped with a SKIPPED line; in CI, with CI set, that fails instead). Also: `promtool check
# metrics` on /metrics, `promtool check config` on configs/prometheus.yml, `systemd-analyze
# verify` on configs/stunedge.service and configs/stunedge-anycast-watch.service (where systemd
# is available), `bird -p` on configs/bird-node.conf, and the Kubernetes YAML parses. Stops every process it started, by PID, and deletes the namespace.
#
# BIN_DIR: where stunedge and stunedge-bench are (default target/debug; built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN_DIR:-target/debug}
PY=/usr/bin/python3

for tool in prometheus promtool curl openssl; do
  command -v "$tool" >/dev/null || { echo "check-dashboard.sh: $tool is missing (apt-get install prometheus curl openssl)" >&2; exit 2; }
done
[[ -x $BIN/stunedge && -x $BIN/stunedge-bench ]] || cargo build --locked -p stunedge -p stunedge-bench

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# The XDP node's network namespace, deleted after its processes have stopped (with it go the
# veth pair and the XDP attachment, whose bpf_link also ends when stunedge exits).
netns=""
teardown() {
  cleanup
  [[ -z $netns ]] || ip netns del "$netns" 2>/dev/null || true
}
trap teardown EXIT INT TERM

# The one way a part of this check skips (as `skip` in tests/integration/support.rs): with CI set
# it fails; elsewhere it prints a SKIPPED line, also appended to $STUNEDGE_SKIP_LOG when set.
skip() {
  [[ -z ${CI:-} ]] || { echo "check-dashboard.sh: $1 cannot run, and CI must not skip it" >&2; exit 1; }
  echo "SKIPPED: check-dashboard.sh: $1"
  [[ -z ${STUNEDGE_SKIP_LOG:-} ]] || echo "SKIPPED: check-dashboard.sh: $1" >> "$STUNEDGE_SKIP_LOG"
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
admin_port=$(free_port)
prom_port=$(free_port)

echo "== configs"
promtool check config configs/prometheus.yml
if command -v systemd-analyze >/dev/null; then
  sed "s#/usr/local/bin/stunedge#$(realpath "$BIN/stunedge")#g" configs/stunedge.service > "$work/stunedge.service"
  systemd-analyze verify "$work/stunedge.service"
  echo "systemd-analyze verify: configs/stunedge.service ok"
  # The fleet's health watcher unit binds to bird.service (Debian bird2), which verify needs.
  if [[ -f /lib/systemd/system/bird.service || -f /etc/systemd/system/bird.service ]]; then
    sed "s#/usr/local/bin/stunedge-anycast-watch#$(realpath configs/stunedge-anycast-watch)#g" \
      configs/stunedge-anycast-watch.service > "$work/stunedge-anycast-watch.service"
    systemd-analyze verify "$work/stunedge-anycast-watch.service"
    echo "systemd-analyze verify: configs/stunedge-anycast-watch.service ok"
  else
    skip "systemd-analyze verify of configs/stunedge-anycast-watch.service (no bird.service: apt-get install bird2)"
  fi
else
  echo "SKIPPED systemd-analyze verify: systemd-analyze is not installed here"
fi
bash -n configs/stunedge-anycast-watch
if command -v bird >/dev/null; then
  # The node template, filled in with documentation values, must parse (bird -p: parse only).
  sed -e 's/@ROUTER_ID@/192.0.2.2/; s/@UPLINK@/eth0/; s/@PEER4@/192.0.2.1/; s/@PEER6@/2001:db8::1/' \
    -e 's/@LOCAL_AS@/64510/; s/@PEER_AS@/64500/; s/@ANYCAST4@/198.51.100.53/; s/@ANYCAST6@/2001:db8:53::53/' \
    configs/bird-node.conf > "$work/bird-node.conf"
  grep -v "^#" "$work/bird-node.conf" | grep -q "@[A-Z0-9_]*@" && { echo "configs/bird-node.conf: a placeholder is left over"; exit 1; }
  bird -p -c "$work/bird-node.conf"
  echo "bird -p: configs/bird-node.conf ok"
else
  skip "bird -p configs/bird-node.conf (bird is not installed: apt-get install bird2)"
fi
"$PY" -c '
import sys, yaml
for f in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(f)) if d]
    assert docs, f + " is empty"
    print(f + ": " + ", ".join(d.get("kind", "scrape config") for d in docs))
' configs/kubernetes/*.yaml

echo "== a fake TURN backend on loopback"
# A TURN backend for the [turn_lb] panels, stdlib only. `backend PORTFILE SECONDS`: answers every
# STUN request with 401 + REALM + NONCE (what the balancer's Allocate probe takes for "up") for
# SECONDS at most, and accepts (and closes) TCP connections on a port of its own, written to
# PORTFILE.tcp (its TCP address, which the balancer's connect probe takes for "up"). `client PORT once`: one Allocate must come back 300 with an ALTERNATE-SERVER.
# `client PORT SECONDS`: Allocate (300), Refresh (437), a Send indication and ChannelData
# (dropped) every 0.2 s. The client sends from 127.77.0.1: not the load generator's /18, so the
# rate limit's budget for 127.0.0.1 does not eat the 300s.
cat > "$work/turn.py" <<'PYTHON'
import os, socket, struct, sys, time
COOKIE = 0x2112A442
def attr(kind, value):
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)
def message(kind, body):
    return struct.pack("!HHI", kind, len(body), COOKIE) + os.urandom(12) + body
def attrs(data):
    at, out = 20, {}
    while at + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, at)
        out.setdefault(kind, data[at + 4:at + 4 + length])
        at += 4 + length + (-length % 4)
    return out
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
if sys.argv[1] == "backend":
    s.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(64)
    tcp.setblocking(False)
    with open(sys.argv[2] + ".tcp", "w") as f:
        f.write(str(tcp.getsockname()[1]))
    with open(sys.argv[2], "w") as f:
        f.write(str(s.getsockname()[1]))
    end = time.monotonic() + float(sys.argv[3])
    body = attr(0x0009, b"\0\0\x04\x01Unauthorized") + attr(0x0014, b"fake-backend") + attr(0x0015, b"0123456789abcdef")
    while time.monotonic() < end:
        try:
            while True:
                tcp.accept()[0].close()
        except BlockingIOError:
            pass
        try:
            data, peer = s.recvfrom(2048)
        except socket.timeout:
            continue
        kind = struct.unpack_from("!H", data)[0] if len(data) >= 20 else 0xFFFF
        if kind & 0xC110 == 0 and data[4:8] == struct.pack("!I", COOKIE):  # a request
            s.sendto(struct.pack("!HHI", kind | 0x0110, len(body), COOKIE) + data[8:20] + body, peer)
    sys.exit(0)
server = ("127.0.0.1", int(sys.argv[2]))
s.bind(("127.77.0.1", 0))
transport = attr(0x0019, bytes([17, 0, 0, 0]))  # REQUESTED-TRANSPORT: UDP
if sys.argv[3] == "once":
    for _ in range(10):
        s.sendto(message(0x0003, transport), server)
        try:
            data = s.recv(2048)
        except socket.timeout:
            continue
        found = attrs(data)
        code = found.get(0x0009, b"\0\0\0\0")
        alternate = found.get(0x8023)
        if code[2] & 7 == 3 and code[3] == 0 and alternate:
            port = struct.unpack_from("!H", alternate, 2)[0]
            print(f"Allocate -> 300, ALTERNATE-SERVER {socket.inet_ntoa(alternate[4:8])}:{port}")
            sys.exit(0)
        sys.exit(f"Allocate: expected 300 with ALTERNATE-SERVER, got {data.hex()}")
    sys.exit("Allocate: no answer")
s.setblocking(False)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    for datagram in (message(0x0003, transport), message(0x0004, b""), message(0x0016, b""),
                     struct.pack("!HH", 0x4000, 4) + b"data"):
        s.sendto(datagram, server)
    time.sleep(0.2)
    try:
        while s.recv(2048):
            pass
    except BlockingIOError:
        pass
PYTHON
"$PY" "$work/turn.py" backend "$work/backend.port" 90 &
started+=($!)
for _ in $(seq 50); do [[ -s $work/backend.port ]] && break; sleep 0.1; done
backend_port=$(cat "$work/backend.port")
backend_tcp_port=$(cat "$work/backend.port.tcp")
echo "fake TURN backend on 127.0.0.1:$backend_port (UDP), 127.0.0.1:$backend_tcp_port (TCP)"

echo "== stunedge with the admin endpoint on 127.0.0.1:$admin_port"
# A test certificate for its TLS listener (stream panels).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=stun.test \
  -addext "subjectAltName=DNS:stun.test,IP:127.0.0.1" -keyout "$work/tls-key.pem" -out "$work/tls-cert.pem" 2>/dev/null
cat > "$work/stunedge.toml" <<TOML
[server]
listen = ["127.0.0.1:0"]
[stream]
tcp = ["127.0.0.1:0"]
tls = ["127.0.0.1:0"]
certificate = "$work/tls-cert.pem"
private_key = "$work/tls-key.pem"
[admin]
listen = "127.0.0.1:$admin_port"
[auth]
policy = "optional"
mechanism = "short-term"
short_term_users = { "stunedge-bench" = "VOkJxbRl1RmTxUk/WvJxBt" }
# The generator's loopback traffic through the rate limiter, at a budget it exceeds, so that the
# reflection-defence panels show passes, leaks and drops rather than zeros.
[limit]
exempt_loopback = false
rate = 2000
# Allocates are redirected: to the fake backend (401 to probes: up), to an address nothing
# answers on (probes time out: down) or none (drained); each with its own series. The fake's
# TCP port accepts (its TCP address up); nothing listens on the silent backend's TCP and TLS
# ports (refused: down).
[turn_lb]
enabled = true
backends = [
  { name = "turn-fake", udp = ["127.0.0.1:$backend_port"], tcp = ["127.0.0.1:$backend_tcp_port"] },
  { name = "turn-silent", udp = ["127.0.0.1:$(free_port)"], tcp = ["127.0.0.1:$(free_port)"], tls = ["127.0.0.1:$(free_port)"] },
  { name = "turn-drained", udp = ["127.0.0.1:$(free_port)"], drain = true },
]
TOML
"$BIN/stunedge" serve -c "$work/stunedge.toml" 2> "$work/stunedge.log" &
started+=($!)
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listen="127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$work/stunedge.log")
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n $port ]] || { echo "stunedge did not start:"; cat "$work/stunedge.log"; exit 1; }
# A steady mixed load for the whole check, junk included so drop reasons have data.
"$BIN/stunedge-bench" -s "127.0.0.1:$port" -q -d 40 --rate 3000 --sockets 2 --junk 10 \
  --mix plain=4,fingerprint=2,integrity=2,classic=1 > "$work/bench.log" 2>&1 &
started+=($!)
"$PY" "$work/turn.py" client "$port" once
"$PY" "$work/turn.py" client "$port" 40 &
started+=($!)
# Stream traffic for the stream panels: Bindings over TCP and TLS, and a connection closed for
# not speaking STUN, every half second for the whole check (tests/stream/client.py).
tcp_addr=$(sed -n 's/.*tcp:\/\/\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/stunedge.log")
tls_addr=$(sed -n 's/.*tls:\/\/\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/stunedge.log")
(
  end=$((SECONDS + 40))
  while ((SECONDS < end)); do
    "$PY" tests/stream/client.py pipelined "$tcp_addr" >/dev/null 2>&1 || true
    "$PY" tests/stream/client.py pipelined "$tls_addr" --tls --ca "$work/tls-cert.pem" --name stun.test \
      --alpn stun.turn >/dev/null 2>&1 || true
    "$PY" tests/stream/client.py garbage "$tcp_addr" --bytes 504f5354 --wait 1 >/dev/null 2>&1 || true
    sleep 0.5
  done
) &
started+=($!)

curl -sf "http://127.0.0.1:$admin_port/metrics" > "$work/metrics.txt"
promtool check metrics < "$work/metrics.txt"
echo "promtool check metrics: ok ($(grep -c '^# TYPE' "$work/metrics.txt") metric families)"

echo "== a second stunedge with the XDP fast path, in its own network namespace"
# Not on the host's lo: an XDP program there would see every process's loopback traffic, and a
# second run of this check (or anything else holding lo's one XDP slot) would make the attach
# fail with EBUSY. A namespace of our own with a veth pair touches nothing outside it but the
# host end of the pair. Addresses: a /30 of 198.18.0.0/15 (RFC 2544, benchmarking), picked by
# PID so that concurrent runs do not collide.
xdp_targets=""
if [[ $(id -u) -ne 0 ]]; then
  skip "the XDP fast path panels: need root (a network namespace, a veth pair, CAP_BPF)"
elif ! command -v ip >/dev/null; then
  skip "the XDP fast path panels: ip (iproute2) is missing"
elif ! ip netns add "stunedge-dash-$$"; then
  skip "the XDP fast path panels: cannot create a network namespace here"
else
  netns=stunedge-dash-$$
  host_if=sdh$$
  ns_if=sdn$$
  n=$(($$ % 16384))
  host_ip=198.18.$((n / 64)).$((n % 64 * 4 + 1))
  ns_ip=198.18.$((n / 64)).$((n % 64 * 4 + 2))
  ip -n "$netns" link set lo up
  ip link add "$host_if" type veth peer name "$ns_if" netns "$netns"
  ip addr add "$host_ip/30" dev "$host_if"
  ip link set "$host_if" up
  ip -n "$netns" addr add "$ns_ip/30" dev "$ns_if"
  ip -n "$netns" link set "$ns_if" up
  # Locally sent UDP leaves with a partial checksum (the NIC would finish it) and the fast path
  # passes it as bad_checksum; with checksum offload off on the sending end the kernel writes the
  # full checksum, so the program can verify it and answer.
  if command -v ethtool >/dev/null; then
    ethtool -K "$host_if" tx off >/dev/null
  else
    echo "(ethtool is missing: the XDP node's requests keep their partial checksums; it passes them as bad_checksum and the workers answer)"
  fi
  cat > "$work/stunedge-xdp.toml" <<TOML
[server]
listen = ["$ns_ip:3478"]
[admin]
listen = "$ns_ip:9478"
# Attached to the namespace's end of the veth pair (generic: the skb hook, which every interface
# has). The default [limit] (400 answers/s per /32) is below the load, so that the fast path
# passes over-budget requests as limited.
[xdp]
interfaces = ["$ns_if"]
mode = "generic"
TOML
  ip netns exec "$netns" "$BIN/stunedge" serve -c "$work/stunedge-xdp.toml" 2> "$work/stunedge-xdp.log" &
  xdp_pid=$!
  started+=("$xdp_pid")
  for _ in $(seq 100); do
    grep -q "xdp: fast path attached" "$work/stunedge-xdp.log" && break
    kill -0 "$xdp_pid" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q "xdp: fast path attached" "$work/stunedge-xdp.log"; then
    grep "xdp: fast path attached" "$work/stunedge-xdp.log"
    # stunedge-bench sends from loopback only: plain Binding requests (what the fast path
    # answers) from the host end of the pair, 1000/s in bursts of 50, answers read and discarded.
    cat > "$work/binding.py" <<'PYTHON'
import os, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
server, end = (sys.argv[1], int(sys.argv[2])), time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    for _ in range(50):
        s.sendto(struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12), server)
    time.sleep(0.05)
    try:
        while s.recv(2048):
            pass
    except BlockingIOError:
        pass
PYTHON
    "$PY" "$work/binding.py" "$ns_ip" 3478 40 &
    started+=($!)
    xdp_targets=", \"$ns_ip:9478\""
    sleep 1
    curl -sf "http://$ns_ip:9478/metrics" > "$work/metrics-xdp.txt"
    promtool check metrics < "$work/metrics-xdp.txt"
    echo "promtool check metrics (XDP node): ok; $(grep -c '^stunedge_xdp_packets_total' "$work/metrics-xdp.txt") stunedge_xdp_packets_total series"
  else
    tail -5 "$work/stunedge-xdp.log"
    skip "the XDP fast path panels: stunedge could not attach XDP to a veth (log above)"
  fi
fi

echo "== prometheus on 127.0.0.1:$prom_port, scraping every second"
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: stunedge
    static_configs:
      - targets: ["127.0.0.1:$admin_port"$xdp_targets]
YAML
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
started+=($!)
api=http://127.0.0.1:$prom_port/api/v1
query() { curl -sf --get "$api/query" --data-urlencode "query=$1"; }
# Enough samples for 30 s rate windows: wait until 8 scrapes have succeeded.
for _ in $(seq 120); do
  n=$(query 'count_over_time(up{job="stunedge"}[1m])' 2>/dev/null | "$PY" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null || echo 0)
  (( ${n%.*} >= 8 )) && break
  sleep 0.5
done
(( ${n%.*} >= 8 )) || { echo "prometheus never scraped stunedge:"; tail -20 "$work/prometheus.log"; exit 1; }

echo "== every dashboard query, through the Prometheus API"
"$PY" - "$api" grafana/stunedge-dashboard.json "${xdp_targets:+xdp}" <<'PYTHON'
import json, sys, urllib.parse, urllib.request
api, path, xdp = sys.argv[1], sys.argv[2], sys.argv[3] == "xdp"
dash = json.load(open(path))
failed = 0
count = 0
# Rows hold no queries; a collapsed row keeps its panels inside it.
panels = []
for panel in dash["panels"]:
    if panel["type"] == "row":
        panels += panel.get("panels", [])
    else:
        panels.append(panel)
ids = [p["id"] for p in dash["panels"]] + [q["id"] for p in dash["panels"] for q in p.get("panels", [])]
if len(ids) != len(set(ids)):
    print(f"FAIL panel ids are not unique: {sorted(ids)}")
    failed += 1
for panel in panels:
    if not panel.get("targets"):
        print(f"FAIL {panel['title']!r}: no query")
        failed += 1
    for target in panel.get("targets", []):
        expr = target["expr"]
        if not xdp and "stunedge_xdp_" in expr:
            print(f"SKIPPED {panel['title']!r}: no XDP node (see above)")
            continue
        # Grafana's variables, as the dashboard would fill them here.
        q = expr.replace("$__rate_interval", "30s").replace('"$instance"', '".*"')
        url = api + "/query?" + urllib.parse.urlencode({"query": q})
        try:
            reply = json.load(urllib.request.urlopen(url))
        except Exception as e:  # an HTTP 400 is a query that does not parse
            body = e.read().decode() if hasattr(e, "read") else str(e)
            print(f"FAIL {panel['title']!r}: {q}\n     {body}")
            failed += 1
            continue
        result = reply["data"]["result"]
        kind = reply["data"]["resultType"]
        ok = reply["status"] == "success" and (len(result) > 0 if kind in ("vector", "matrix") else result is not None)
        count += 1
        print(("ok  " if ok else "FAIL") + f" {panel['title']!r}: {len(result) if kind in ('vector', 'matrix') else kind} series")
        if not ok:
            print(f"     query: {q}")
            failed += 1
print(f"{count} queries, {failed} failed")
sys.exit(1 if failed else 0)
PYTHON
if [[ -n $xdp_targets ]]; then
  # What the fast path did with the XDP node's load (reported, not required: a kernel may pass
  # every frame, e.g. as bad_checksum without ethtool, and the panels still have data).
  query 'sum by (reason) (stunedge_xdp_packets_total{reason=~"answered|limited|bad_checksum"})' \
    | "$PY" -c 'import json,sys; print("XDP node: " + ", ".join(r["metric"]["reason"] + " " + r["value"][1] for r in json.load(sys.stdin)["data"]["result"]))'
fi
echo "dashboard check passed"
