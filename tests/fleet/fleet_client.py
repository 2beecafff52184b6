"""The fleet lab's STUN client (stdlib only), run inside a client namespace of scripts/fleetlab.sh.

Every request is built and every answer checked here, by hand, not with stunedge's codec. Each
"flow" is one unconnected UDP socket (its own source port: its own 5-tuple, so ECMP may send it
to any node). Transactions follow RFC 8489 section 6.2.1: the request is sent at 0, RTO, 3 RTO,
7 RTO, ... (Rc sends in all, the interval doubling), and the transaction fails Rm x RTO after
the last send. Who answered is read from SOFTWARE ("fleet-nodeN"); every answer's
XOR-MAPPED-ADDRESS must be the socket's own address, and the answer must come from the address
the request went to. Prints one JSON object.

  flows  SERVER BIND COUNT            one Binding per flow, COUNT flows from BIND
  load   SERVER BIND FLOWS RATE SECONDS [STOPFILE]   FLOWS flows, RATE transactions/s in all,
                                      for SECONDS (or until STOPFILE exists); per-node answers
                                      per 100 ms
  turn   SERVER BINDS...              an Allocate from each address of BINDS (several ports each):
                                      the ALTERNATE-SERVER and who answered
  auth   SERVER BIND USER PASSWORD    long-term authentication on one socket: the challenge, then
                                      (after a line on stdin) the authenticated request
Options (environment): RTO_MS (default 200), RC (7), RM (16).
"""

import hashlib
import hmac
import json
import os
import selectors
import socket
import struct
import sys
import time
import zlib

COOKIE = 0x2112A442
RTO = float(os.environ.get("RTO_MS", "200")) / 1000
RC = int(os.environ.get("RC", "7"))
RM = int(os.environ.get("RM", "16"))

ATTR_USERNAME, ATTR_MI, ATTR_ERROR, ATTR_REALM, ATTR_NONCE = 0x0006, 0x0008, 0x0009, 0x0014, 0x0015
ATTR_XMA, ATTR_TRANSPORT, ATTR_SOFTWARE, ATTR_ALTERNATE, ATTR_FINGERPRINT = 0x0020, 0x0019, 0x8022, 0x8023, 0x8028


def attr(kind, value):
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def message(kind, tid, body):
    return struct.pack("!HHI", kind, len(body), COOKIE) + tid + body


# 12 bytes of SOFTWARE in every request: the answers carry the node's SOFTWARE, and the
# amplification cap (3x by default) measures the answer against the request.
PAD = attr(ATTR_SOFTWARE, b"fleet-client")


def attrs(data):
    at, out = 20, {}
    while at + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, at)
        out.setdefault(kind, data[at + 4 : at + 4 + length])
        at += 4 + length + (-length % 4)
    return out


def address(value, tid, xor):
    """An (XOR-)MAPPED-ADDRESS style value as (ip, port)."""
    family, port = value[1], struct.unpack_from("!H", value, 2)[0]
    raw = value[4:]
    if xor:
        port ^= COOKIE >> 16
        key = struct.pack("!I", COOKIE) + tid
        raw = bytes(a ^ b for a, b in zip(raw, key))
    ip = socket.inet_ntop(socket.AF_INET if family == 1 else socket.AF_INET6, raw)
    return ip, port


def parse_server(text):
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_socket(bind, server_host):
    s = socket.socket(family(server_host), socket.SOCK_DGRAM)
    s.bind((bind, 0))
    s.setblocking(False)
    return s


def node_of(found):
    return found.get(ATTR_SOFTWARE, b"?").decode(errors="replace")


class Flow:
    """One socket running one transaction at a time."""

    def __init__(self, sock, server):
        self.sock, self.server = sock, server
        self.local = sock.getsockname()[:2]
        self.tid = None

    def start(self, now, request=None):
        self.tid = os.urandom(12)
        self.request = request or message(0x0001, self.tid, PAD)
        self.started, self.sends, self.next_send = now, 0, now
        self.send(now)

    def send(self, now):
        try:
            self.sock.sendto(self.request, self.server)
        except OSError:
            pass  # a send error is a send that got lost: the schedule goes on
        self.sends += 1
        # RFC 8489 6.2.1: the k-th send (k >= 1) at RTO * (2^k - 1); after the Rc-th, wait Rm * RTO.
        self.next_send = self.started + RTO * (2**self.sends - 1) if self.sends < RC else None
        self.deadline = now + RM * RTO if self.sends >= RC else None


def check_answer(data, peer, flow, server):
    """(node, ok_xma, ok_src) for a Binding success answer of flow's transaction, or None."""
    if len(data) < 20 or data[8:20] != flow.tid:
        return None
    found = attrs(data)
    ok_xma = ATTR_XMA in found and address(found[ATTR_XMA], flow.tid, True) == (flow.local[0], flow.local[1])
    ok_src = (peer[0], peer[1]) == (server[0], server[1])
    return node_of(found), ok_xma, ok_src, struct.unpack_from("!H", data)[0]


def run(flows, server, want_more, on_answer):
    """Drives flows until want_more() is false and every transaction ended. on_answer(flow, data,
    peer, now) is called per answer; returns lost transactions [(flow, started)]."""
    sel = selectors.DefaultSelector()
    for f in flows:
        sel.register(f.sock, selectors.EVENT_READ, f)
    lost = []
    active = set()
    while True:
        now = time.monotonic()
        for f in want_more(now, active):
            f.start(now)
            active.add(f)
        if not active and not want_more.more(now):
            break
        for f in list(active):
            if f.next_send is not None and now >= f.next_send:
                f.send(now)
            elif f.deadline is not None and now >= f.deadline:
                lost.append((f, f.started))
                active.discard(f)
                f.tid = None
        # Wake for the next send or deadline, or every 10 ms for the pacer: a client that spins
        # would take a CPU from the nodes it measures.
        waits = [t for f in active for t in (f.next_send, f.deadline) if t is not None]
        timeout = max(0.0, min([now + 0.01] + waits) - time.monotonic())
        for key, _ in sel.select(timeout=timeout):
            f = key.data
            while True:
                try:
                    data, peer = f.sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue  # an ICMP error queued on the socket: not an answer
                if f in active and on_answer(f, data, peer, time.monotonic()):
                    active.discard(f)
                    f.tid = None
    return lost


class Once:
    """Start every flow once."""

    def __init__(self, flows):
        self.pending = list(flows)

    def __call__(self, now, active):
        out, self.pending = self.pending, []
        return out

    def more(self, now):
        return bool(self.pending)


class Paced:
    """Start transactions at `rate` per second over idle flows until `end` (or the stop file)."""

    def __init__(self, flows, rate, end, stop):
        self.flows, self.rate, self.end, self.stop = flows, rate, end, stop
        self.t0 = time.monotonic()
        self.started = 0
        self.next_flow = 0
        self.stopped_at = None

    def more(self, now):
        if self.stopped_at is None and (now >= self.end or (self.stop and os.path.exists(self.stop))):
            self.stopped_at = now
        return self.stopped_at is None

    def __call__(self, now, active):
        if not self.more(now):
            return []
        due = int((now - self.t0) * self.rate) - self.started
        out = []
        for _ in range(len(self.flows)):
            if due <= 0:
                break
            f = self.flows[self.next_flow]
            self.next_flow = (self.next_flow + 1) % len(self.flows)
            if f not in active and f not in out:
                out.append(f)
                due -= 1
        self.started += len(out)
        return out


def cmd_flows(server, bind, count):
    flows = [Flow(open_socket(bind, server[0]), server) for _ in range(count)]
    by_node, bad_xma, bad_src, retried = {}, 0, 0, 0

    def on_answer(f, data, peer, now):
        nonlocal bad_xma, bad_src, retried
        got = check_answer(data, peer, f, server)
        if got is None:
            return False
        node, ok_xma, ok_src, _ = got
        by_node[node] = by_node.get(node, 0) + 1
        bad_xma += not ok_xma
        bad_src += not ok_src
        retried += f.sends > 1
        return True

    lost = run(flows, server, Once(flows), on_answer)
    return {"flows": count, "answered": sum(by_node.values()), "lost": len(lost), "by_node": by_node,
            "bad_xma": bad_xma, "bad_source": bad_src, "retransmitted": retried}


def cmd_load(server, bind, nflows, rate, seconds, stop):
    flows = [Flow(open_socket(bind, server[0]), server) for _ in range(nflows)]
    t0 = time.time()
    mono0 = time.monotonic()
    pacer = Paced(flows, rate, mono0 + seconds, stop)
    by_node, timeline, bad_xma, bad_src, retried, worst = {}, {}, 0, 0, 0, 0.0

    def on_answer(f, data, peer, now):
        nonlocal bad_xma, bad_src, retried, worst
        got = check_answer(data, peer, f, server)
        if got is None:
            return False
        node, ok_xma, ok_src, _ = got
        by_node[node] = by_node.get(node, 0) + 1
        bucket = timeline.setdefault(int((now - mono0) * 10), {})
        bucket[node] = bucket.get(node, 0) + 1
        bad_xma += not ok_xma
        bad_src += not ok_src
        if f.sends > 1:
            retried += 1
            worst = max(worst, now - f.started)
        return True

    lost = run(flows, server, pacer, on_answer)
    return {"flows": nflows, "started": pacer.started, "answered": sum(by_node.values()), "lost": len(lost),
            "lost_at": sorted(round(t - mono0, 3) for _, t in lost)[:20], "by_node": by_node,
            "bad_xma": bad_xma, "bad_source": bad_src, "retransmitted": retried,
            "slowest_retransmitted_s": round(worst, 3), "t0": t0,
            "timeline": {str(k / 10): v for k, v in sorted(timeline.items())}}


def cmd_turn(server, binds):
    """Allocates from every address, 4 source ports each: each lands on whatever node ECMP picks."""
    transport = attr(ATTR_TRANSPORT, bytes([17, 0, 0, 0]))
    flows = [Flow(open_socket(b, server[0]), server) for b in binds for _ in range(4)]
    seen = []

    def on_answer(f, data, peer, now):
        if len(data) < 20 or data[8:20] != f.tid:
            return False
        found = attrs(data)
        code = found.get(ATTR_ERROR, b"\0\0\0\0")
        alternate = found.get(ATTR_ALTERNATE)
        seen.append({"client": f.local[0], "node": node_of(found), "code": (code[2] & 7) * 100 + code[3],
                     "alternate": "%s:%d" % address(alternate, f.tid, False) if alternate else None})
        return True

    now = time.monotonic()
    for f in flows:
        tid = os.urandom(12)
        f.start(now, message(0x0003, tid, transport + PAD))
        f.tid = tid
    lost = run(flows, server, _Active(flows), on_answer)
    return {"answers": seen, "lost": len(lost)}


class _Active(Once):
    """The flows already started by the caller, handed to run() as active."""

    def __call__(self, now, active):
        out, self.pending = self.pending, []
        active.update(out)
        return []


def long_term_request(tid, user, realm, nonce, password):
    key = hashlib.md5(user.encode() + b":" + realm + b":" + password.encode()).digest()
    body = attr(ATTR_USERNAME, user.encode()) + attr(ATTR_REALM, realm) + attr(ATTR_NONCE, nonce) + PAD
    # MESSAGE-INTEGRITY over the message with its length already covering the attribute (RFC 8489 14.5).
    head = struct.pack("!HHI", 0x0001, len(body) + 24, COOKIE) + tid
    mac = hmac.new(key, head + body, hashlib.sha1).digest()
    body += attr(ATTR_MI, mac)
    msg = struct.pack("!HHI", 0x0001, len(body) + 8, COOKIE) + tid + body
    crc = (zlib.crc32(msg) ^ 0x5354554E) & 0xFFFFFFFF
    return message(0x0001, tid, body + attr(ATTR_FINGERPRINT, struct.pack("!I", crc)))


def transact(f, request):
    """One transaction on flow f with the retransmission schedule: (answer, sends) or (None, sends)."""
    f.start(time.monotonic(), request)
    f.tid = request[8:20]
    answer = []

    def on_answer(fl, data, peer, t):
        if len(data) >= 20 and data[8:20] == fl.tid:
            answer.append(data)
            return True
        return False

    lost = run([f], f.server, _Active([f]), on_answer)
    return (None if lost else answer[0]), f.sends


def cmd_auth(server, bind, user, password):
    f = Flow(open_socket(bind, server[0]), server)
    first, _ = transact(f, message(0x0001, os.urandom(12), PAD))
    found = attrs(first) if first else {}
    code = found.get(ATTR_ERROR, b"\0\0\0\0")
    challenge = {"code": (code[2] & 7) * 100 + code[3], "node": node_of(found)}
    print(json.dumps({"challenge": challenge, "local": "%s:%d" % f.local}), flush=True)
    sys.stdin.readline()  # the driver withdraws the challenging node, then says go
    second, sends = transact(f, long_term_request(os.urandom(12), user, found[ATTR_REALM], found[ATTR_NONCE], password))
    answer = {"answered": second is not None, "sends": sends}
    if second:
        got = attrs(second)
        kind = struct.unpack_from("!H", second)[0]
        code = got.get(ATTR_ERROR, b"\0\0\0\0")
        answer.update({"class": "success" if kind == 0x0101 else "error", "code": (code[2] & 7) * 100 + code[3],
                       "node": node_of(got), "signed": ATTR_MI in got,
                       "xma_ok": ATTR_XMA in got and address(got[ATTR_XMA], second[8:20], True) == f.local})
    print(json.dumps({"authenticated": answer}), flush=True)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    server = parse_server(args[0])
    if cmd == "flows":
        out = cmd_flows(server, args[1], int(args[2]))
    elif cmd == "load":
        out = cmd_load(server, args[1], int(args[2]), float(args[3]), float(args[4]), args[5] if len(args) > 5 else None)
    elif cmd == "turn":
        out = cmd_turn(server, args[1:])
    elif cmd == "auth":
        return cmd_auth(server, args[1], args[2], args[3])
    else:
        sys.exit(f"unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
