#!/usr/bin/env python3
"""An independent STUN-over-TCP/TLS client for tests/integration/stream.rs (stdlib only:
socket and ssl, i.e. OpenSSL; written against RFC 8489, not against stunedge's codec).

    client.py SCENARIO ADDRESS [OPTIONS]

Prints one JSON object. Scenarios:
  pipelined ADDR [--tls --ca FILE --name NAME --alpn a,b]  two Bindings in one write, then one
                                         sent byte by byte; every answer checked
  burst ADDR --count N                   N Bindings in one burst; answers counted for --wait s
  half-close ADDR --count N               N Bindings, then shutdown(SHUT_WR): answers, then the close
  bad-after-finished ADDR --count N      N TLS 1.3 handshakes whose Finished comes with a bad
                                         record; how many the server closed
  garbage ADDR --bytes HEX               sends the bytes; reports whether the server closed
  silent ADDR [--send HEX] --wait S      connects (sends HEX), waits; reports when it closed
  idle-after-one ADDR --wait S           one Binding, then silence; reports when it closed
  many ADDR --count N --source IP[,IP]  N connections from the IPs in turn, held open together,
                                         one Binding each; counts answers and refusals
  keep ADDR --count N --hold S           N idle connections held S seconds; how many stayed open
  certificate ADDR --ca FILE --name NAME prints the server certificate's SHA-256
  reload-pair ADDR --ca FILE --name NAME --signal-file F
                                         opens a TLS connection, asks once, writes F, waits for
                                         the test to reload, asks again on the same connection,
                                         and fingerprints a new connection's certificate
"""

import argparse
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import time

COOKIE = 0x2112A442


def request(tid):
    return struct.pack("!HHI", 0x0001, 0, COOKIE) + tid


def read_message(sock):
    """One STUN message from the stream (20-byte header, then its length), or None at EOF."""
    head = b""
    while len(head) < 20:
        chunk = sock.recv(20 - len(head))
        if not chunk:
            return None
        head += chunk
    length = struct.unpack("!H", head[2:4])[0]
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return head + body


def xor_mapped(msg):
    """The XOR-MAPPED-ADDRESS of a success response, as (ip, port)."""
    tid = msg[8:20]
    at = 20
    while at + 4 <= len(msg):
        kind, length = struct.unpack("!HH", msg[at:at + 4])
        value = msg[at + 4:at + 4 + length]
        if kind == 0x0020:
            family = value[1]
            port = struct.unpack("!H", value[2:4])[0] ^ (COOKIE >> 16)
            if family == 1:
                raw = bytes(a ^ b for a, b in zip(value[4:8], struct.pack("!I", COOKIE)))
                return socket.inet_ntop(socket.AF_INET, raw), port
            raw = bytes(a ^ b for a, b in zip(value[4:20], struct.pack("!I", COOKIE) + tid))
            return socket.inet_ntop(socket.AF_INET6, raw), port
        at += 4 + ((length + 3) & ~3)
    return None


def check(msg, tid, sock):
    """Whether `msg` is a Binding success for `tid` naming this connection's address."""
    if msg is None or msg[0:2] != b"\x01\x01" or msg[8:20] != tid:
        return False
    ip, port = sock.getsockname()[:2]
    return xor_mapped(msg) == (ip, port)


def connect(args, source=None):
    host, port = args.address.rsplit(":", 1)
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    if source:
        sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect((host, int(port)))
    if not args.tls:
        return sock
    ctx = ssl.create_default_context(cafile=args.ca)
    if args.tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    return ctx.wrap_socket(sock, server_hostname=args.name)


# How the server last closed a connection closed_within watched: "eof" (a FIN), "reset" (an
# RST) or "tls" (a TLS error).
CLOSED_BY = {"how": None}


def closed_within(sock, seconds):
    """Seconds until the server closed `sock` (EOF or reset), or None if it stayed open; how
    in CLOSED_BY."""
    start = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - start < seconds:
        try:
            if sock.recv(4096) == b"":
                CLOSED_BY["how"] = "eof"
                return round(time.monotonic() - start, 3)
        except socket.timeout:
            continue
        except ssl.SSLError:
            CLOSED_BY["how"] = "tls"
            return round(time.monotonic() - start, 3)
        except ConnectionResetError:
            CLOSED_BY["how"] = "reset"
            return round(time.monotonic() - start, 3)
        except OSError:
            CLOSED_BY["how"] = "error"
            return round(time.monotonic() - start, 3)
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario")
    p.add_argument("address")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca")
    p.add_argument("--name")
    p.add_argument("--alpn")
    p.add_argument("--tls12", action="store_true", help="offer TLS 1.2 only")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--wait", type=float, default=1.0)
    p.add_argument("--hold", type=float, default=1.0)
    p.add_argument("--bytes", default="")
    p.add_argument("--send", default="")
    p.add_argument("--source")
    p.add_argument("--signal-file")
    args = p.parse_args()
    out = {"scenario": args.scenario}

    if args.scenario == "pipelined":
        sock = connect(args)
        if args.tls:
            out["alpn"] = sock.selected_alpn_protocol()
            out["version"] = sock.version()
        tids = [os.urandom(12) for _ in range(3)]
        sock.sendall(request(tids[0]) + request(tids[1]))
        ok = [check(read_message(sock), t, sock) for t in tids[:2]]
        for b in request(tids[2]):
            sock.sendall(bytes([b]))
            time.sleep(0.002)
        ok.append(check(read_message(sock), tids[2], sock))
        out["ok"] = ok
    elif args.scenario == "burst":
        sock = connect(args)
        tids = [struct.pack("!III", 7, 7, i) for i in range(args.count)]
        sock.sendall(b"".join(request(t) for t in tids))
        start = time.monotonic()
        got, in_order = 0, True
        sock.settimeout(0.2)
        while got < args.count and time.monotonic() - start < args.wait:
            try:
                msg = read_message(sock)
            except socket.timeout:
                continue
            if msg is None:
                break
            in_order = in_order and check(msg, tids[got], sock)
            got += 1
        out.update(answered=got, in_order=in_order, seconds=round(time.monotonic() - start, 3))
    elif args.scenario == "half-close":
        # Requests, then the sending side shut (as `printf … | nc` does): every one answered,
        # then the server closes.
        sock = connect(args)  # plain TCP (a TLS socket cannot half-close)
        tids = [os.urandom(12) for _ in range(args.count)]
        sock.sendall(b"".join(request(t) for t in tids))
        sock.shutdown(socket.SHUT_WR)
        out["answered"] = sum(check(read_message(sock), t, sock) for t in tids)
        out["closed_after"] = closed_within(sock, args.wait)
    elif args.scenario == "bad-after-finished":
        # A TLS 1.3 handshake whose client Finished goes out in one segment with an
        # undecryptable record: the server ends the handshake and fails the same read.
        host, port = args.address.rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=args.ca)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        closed = 0
        for _ in range(args.count):
            sock = socket.create_connection((host, int(port)), timeout=3)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(incoming, outgoing, server_hostname=args.name)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    data = outgoing.read()
                    if data:
                        sock.sendall(data)
                    incoming.write(sock.recv(65536))
            sock.sendall(outgoing.read() + bytes([0x17, 3, 3, 0, 32]) + b"\0" * 32)
            closed += closed_within(sock, 3) is not None
            sock.close()
        out["closed"] = closed
    elif args.scenario == "garbage":
        sock = connect(args)
        sock.sendall(bytes.fromhex(args.bytes))
        out["closed_after"] = closed_within(sock, args.wait)
    elif args.scenario == "silent":
        host, port = args.address.rsplit(":", 1)
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        if args.send:
            sock.sendall(bytes.fromhex(args.send))
        out["closed_after"] = closed_within(sock, args.wait)
        out["closed_by"] = CLOSED_BY["how"]
    elif args.scenario == "idle-after-one":
        sock = connect(args)
        tid = os.urandom(12)
        sock.sendall(request(tid))
        out["answered"] = check(read_message(sock), tid, sock)
        out["closed_after"] = closed_within(sock, args.wait)
        out["closed_by"] = CLOSED_BY["how"]
    elif args.scenario == "many":
        socks, answered, refused = [], 0, 0
        sources = args.source.split(",") if args.source else [None]
        for i in range(args.count):
            try:
                sock = connect(args, source=sources[i % len(sources)])
                tid = os.urandom(12)
                sock.sendall(request(tid))
                if check(read_message(sock), tid, sock):
                    answered += 1
                else:
                    refused += 1
                socks.append(sock)
            except (OSError, ssl.SSLError):
                refused += 1
        out.update(answered=answered, refused=refused)
    elif args.scenario == "keep":
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.count + 100), hard))
        socks = []
        for _ in range(args.count):
            host, port = args.address.rsplit(":", 1)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect((host, int(port)))
            except BlockingIOError:
                pass
            socks.append(s)
        time.sleep(args.hold)
        open_now = 0
        for s in socks:
            try:
                s.recv(1)
            except BlockingIOError:
                open_now += 1
            except OSError:
                pass
        out.update(opened=len(socks), still_open=open_now)
    elif args.scenario == "certificate":
        sock = connect(args)
        out["sha256"] = hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()
    elif args.scenario == "reload-pair":
        old = connect(args)
        out["old_sha256"] = hashlib.sha256(old.getpeercert(binary_form=True)).hexdigest()
        tid = os.urandom(12)
        old.sendall(request(tid))
        out["before"] = check(read_message(old), tid, old)
        with open(args.signal_file, "w") as f:
            f.write("ready\n")
        # The test reloads, then removes the file.
        deadline = time.monotonic() + 20
        while os.path.exists(args.signal_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        tid = os.urandom(12)
        old.sendall(request(tid))
        out["old_still_answers"] = check(read_message(old), tid, old)
        new = connect(args)
        out["new_sha256"] = hashlib.sha256(new.getpeercert(binary_form=True)).hexdigest()
    else:
        print(f"unknown scenario {args.scenario}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
