"""Interop: authenticate against a running stunedge with aioice's independent STUN code.

aioice (https://github.com/aiortc/aioice, Debian package python3-aioice) builds and checks
MESSAGE-INTEGRITY and FINGERPRINT itself and derives long-term keys as
MD5(username:realm:password), so a shared mistake with stunedge's codec cannot pass here.

usage: aioice_auth.py HOST LONG_TERM_PORT SHORT_TERM_PORT
Exits 0 when every check passes, 1 with the reason otherwise.
"""

import base64
import hashlib
import hmac
import socket
import sys
import time

from aioice import stun
from aioice.turn import make_integrity_key


def exchange(sock, addr, message, key=None):
    sock.sendto(bytes(message), addr)
    data, _ = sock.recvfrom(2048)
    # parse_message verifies FINGERPRINT always and MESSAGE-INTEGRITY when given a key.
    response = stun.parse_message(data, integrity_key=key)
    if response.transaction_id != message.transaction_id:
        raise AssertionError("transaction ID mismatch")
    return response


def binding(attributes=None):
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    for name, value in (attributes or {}).items():
        request.attributes[name] = value
    return request


def expect_success(response, sock, key):
    if response.message_class != stun.Class.RESPONSE:
        raise AssertionError(f"expected success, got {response}")
    if "MESSAGE-INTEGRITY" not in response.attributes:
        raise AssertionError("answer to an authenticated request is not signed")
    host, port = sock.getsockname()[:2]
    if response.attributes["XOR-MAPPED-ADDRESS"] != (host, port):
        raise AssertionError(f"wrong reflexive address {response.attributes['XOR-MAPPED-ADDRESS']}")


def expect_error(response, code):
    if response.message_class != stun.Class.ERROR or response.attributes["ERROR-CODE"][0] != code:
        raise AssertionError(f"expected {code}, got {response}")
    if "MESSAGE-INTEGRITY" in response.attributes:
        raise AssertionError(f"{code} must not be signed")


def main():
    host, long_port, short_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.bind((host, 0))

    # Short-term (RFC 8489 §9.1): USERNAME + MESSAGE-INTEGRITY + FINGERPRINT, as ICE sends.
    request = binding({"USERNAME": "bob"})
    request.add_message_integrity(b"builder")
    expect_success(exchange(sock, (host, short_port), request, key=b"builder"), sock, b"builder")
    request = binding({"USERNAME": "bob"})
    request.add_message_integrity(b"wrong")
    expect_error(exchange(sock, (host, short_port), request), 401)
    print("ok: short-term MESSAGE-INTEGRITY both ways, wrong password 401")

    # Long-term (RFC 8489 §9.2, RFC 5389 style: MD5 key, no PASSWORD-ALGORITHM).
    challenge = exchange(sock, (host, long_port), binding())
    expect_error(challenge, 401)
    realm, nonce = challenge.attributes["REALM"], challenge.attributes["NONCE"]
    key = make_integrity_key("alice", realm, "wonderland")
    request = binding({"USERNAME": "alice", "REALM": realm, "NONCE": nonce})
    request.add_message_integrity(key)
    expect_success(exchange(sock, (host, long_port), request, key=key), sock, key)
    print(f"ok: long-term challenge (realm {realm!r}, {len(nonce)}-byte nonce) and MD5-keyed request")

    # TURN REST API credentials, derived here with Python's hmac.
    user = f"{int(time.time()) + 600}:carol"
    password = base64.b64encode(hmac.new(b"north-secret", user.encode(), hashlib.sha1).digest()).decode()
    key = make_integrity_key(user, realm, password)
    request = binding({"USERNAME": user, "REALM": realm, "NONCE": nonce})
    request.add_message_integrity(key)
    expect_success(exchange(sock, (host, long_port), request, key=key), sock, key)
    print("ok: TURN REST username and password")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure is a failed interop check
        print(f"FAILED: {type(e).__name__}: {e}")
        sys.exit(1)
