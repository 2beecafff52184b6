#!/usr/bin/python3
"""Summarises the STUN/TURN messages of a tcpdump capture as JSON (stdlib only).

    pcap_summary.py CAPTURE.pcap

One JSON object per UDP datagram to or from port 3478, in capture order, on one line each:
{"t": seconds since the first, "src": "ip:port", "dst": "ip:port", "len": UDP payload bytes,
"type": "0x0001", "tid": hex, "attrs": ["0x8022", ...], "hex": the payload}. Non-STUN payloads
(ChannelData) have type "channel". Reads pcap (not pcapng) with link types LINUX_SLL (113),
LINUX_SLL2 (276), Ethernet (1) and raw IP (101).
"""
import ipaddress
import json
import struct
import sys


def ip_payload(linktype, frame):
    if linktype == 113:
        return struct.unpack("!H", frame[14:16])[0], frame[16:]
    if linktype == 276:
        return struct.unpack("!H", frame[0:2])[0], frame[20:]
    if linktype == 1:
        return struct.unpack("!H", frame[12:14])[0], frame[14:]
    if linktype == 101:
        return (0x0800 if frame[0] >> 4 == 4 else 0x86DD), frame
    raise SystemExit(f"pcap_summary: link type {linktype} not supported")


def udp(proto, packet):
    if proto == 0x0800:
        ihl = (packet[0] & 0x0F) * 4
        if packet[9] != 17:
            return None
        src, dst = ipaddress.ip_address(packet[12:16]), ipaddress.ip_address(packet[16:20])
        seg = packet[ihl:]
    elif proto == 0x86DD:
        if packet[6] != 17:
            return None
        src, dst = ipaddress.ip_address(packet[8:24]), ipaddress.ip_address(packet[24:40])
        seg = packet[40:]
    else:
        return None
    sport, dport, length = struct.unpack("!HHH", seg[:6])
    fmt = lambda ip, port: f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    return fmt(src, sport), fmt(dst, dport), sport, dport, seg[8:length]


def describe(payload):
    if len(payload) >= 4 and payload[0] & 0xC0 == 0x40:
        return {"type": "channel", "attrs": []}
    if len(payload) < 20:
        return {"type": "short", "attrs": []}
    attrs, at = [], 20
    end = min(len(payload), 20 + struct.unpack("!H", payload[2:4])[0])
    while at + 4 <= end:
        t, n = struct.unpack("!HH", payload[at:at + 4])
        attrs.append(f"0x{t:04x}")
        at += 4 + (n + 3) // 4 * 4
    return {"type": f"0x{struct.unpack('!H', payload[:2])[0]:04x}", "tid": payload[8:20].hex(), "attrs": attrs}


def main(path):
    data = open(path, "rb").read()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    at, first = 24, None
    while at + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + caplen]
        at += 16 + caplen
        t = sec + frac / (1e9 if nanos else 1e6)
        proto, packet = ip_payload(linktype, frame)
        got = udp(proto, packet)
        if got is None:
            continue
        src, dst, sport, dport, payload = got
        if 3478 not in (sport, dport):
            continue
        first = t if first is None else first
        row = {"t": round(t - first, 6), "src": src, "dst": dst, "len": len(payload), "hex": payload.hex()}
        row.update(describe(payload))
        print(json.dumps(row))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
