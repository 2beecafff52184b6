#!/usr/bin/python3
"""The XDP lab's client (scripts/xdp-lab.sh runs it in the client namespace): sends Binding
requests to $SERVER4 and $SERVER6 one at a time and counts the answers that carry their
transaction ID. Prints one JSON object: {"plain4": n, "plain6": n, "fingerprint4": n,
"software6": n, "integrity4": n, "change6": n, "sent": {...}}.

    lab_client.py PLAIN_COUNT OTHER_COUNT [TIMEOUT_SECONDS]

PLAIN_COUNT attribute-less requests per family (the XDP fast path's), OTHER_COUNT requests with
FINGERPRINT (IPv4, also the fast path's), with SOFTWARE (IPv6), with USERNAME and
MESSAGE-INTEGRITY (IPv4) and with CHANGE-REQUEST (IPv6), which the workers answer; each waits up
to TIMEOUT_SECONDS (default 0.5) for its answer.
"""
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import zlib

COOKIE = b"\x21\x12\xa4\x42"


def request(attrs=b"", fingerprint=False, integrity=False):
    tid = os.urandom(12)
    length = len(attrs) + (8 if fingerprint else 0) + (24 if integrity else 0)
    msg = b"\x00\x01" + struct.pack("!H", len(attrs) + (24 if integrity else 0)) + COOKIE + tid + attrs
    if integrity:
        # RFC 8489 §14.5, short-term key "lab-password" (the lab's server checks no credentials:
        # the workers answer it like any request; XDP must leave it to them).
        mac = hmac.new(b"lab-password", msg, hashlib.sha1).digest()
        msg += b"\x00\x08\x00\x14" + mac
    msg = msg[:2] + struct.pack("!H", length) + msg[4:]
    if fingerprint:
        crc = zlib.crc32(msg) ^ 0x5354554E
        msg += b"\x80\x28\x00\x04" + struct.pack("!I", crc)
    return tid, msg


TIMEOUT = 0.5


def exchange(addr, family, count, any_answer=False, **kind):
    host, port = addr.rsplit(":", 1)
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    answered = 0
    for _ in range(count):
        tid, msg = request(**kind)
        s.sendto(msg, (host.strip("[]"), int(port)))
        try:
            while True:
                data, _ = s.recvfrom(1500)
                if data[8:20] == tid:
                    answered += any_answer or data[:2] == b"\x01\x01"
                    break
        except socket.timeout:
            pass
    return answered


def main(plain, other):
    v4, v6 = os.environ["SERVER4"], os.environ["SERVER6"]
    software = b"\x80\x22\x00\x08labprobe"
    out = {
        "plain4": exchange(v4, socket.AF_INET, plain),
        "plain6": exchange(v6, socket.AF_INET6, plain),
        "fingerprint4": exchange(v4, socket.AF_INET, other, fingerprint=True),
        "software6": exchange(v6, socket.AF_INET6, other, attrs=software),
        # Credentials (USERNAME, MESSAGE-INTEGRITY) and RFC 5780's CHANGE-REQUEST: the workers'
        # (a success; a 420, the lab's server not being in RFC 5780 mode): any answer counts.
        "integrity4": exchange(v4, socket.AF_INET, other, attrs=b"\x00\x06\x00\x04labu", integrity=True),
        "change6": exchange(v6, socket.AF_INET6, other, any_answer=True, attrs=b"\x00\x03\x00\x04\x00\x00\x00\x06"),
        "sent": {"plain": plain, "other": other},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) > 3:
        TIMEOUT = float(sys.argv[3])
    main(int(sys.argv[1]), int(sys.argv[2]))
