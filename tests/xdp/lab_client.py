#!/usr/bin/python3
"""The XDP lab's client (scripts/xdp-lab.sh runs it in the client namespace): sends Binding
requests to $SERVER4 and $SERVER6 one at a time and counts the answers that carry their
transaction ID. Prints one JSON object: {"plain4": n, "plain6": n, "fingerprint4": n,
"software6": n, "sent": {...}}.

    lab_client.py PLAIN_COUNT OTHER_COUNT [TIMEOUT_SECONDS]

PLAIN_COUNT attribute-less requests per family (the XDP fast path's), OTHER_COUNT requests with
FINGERPRINT (IPv4) and with SOFTWARE (IPv6), which the workers answer; each waits up to
TIMEOUT_SECONDS (default 0.5) for its answer.
"""
import json
import os
import socket
import struct
import sys
import zlib

COOKIE = b"\x21\x12\xa4\x42"


def request(attrs=b"", fingerprint=False):
    tid = os.urandom(12)
    length = len(attrs) + (8 if fingerprint else 0)
    msg = b"\x00\x01" + struct.pack("!H", length) + COOKIE + tid + attrs
    if fingerprint:
        crc = zlib.crc32(msg) ^ 0x5354554E
        msg += b"\x80\x28\x00\x04" + struct.pack("!I", crc)
    return tid, msg


TIMEOUT = 0.5


def exchange(addr, family, count, **kind):
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
                    answered += data[:2] == b"\x01\x01"
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
        "sent": {"plain": plain, "other": other},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) > 3:
        TIMEOUT = float(sys.argv[3])
    main(int(sys.argv[1]), int(sys.argv[2]))
