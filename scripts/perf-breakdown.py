#!/usr/bin/env python3
"""Where a server CPU's time goes, from `perf script` output of `perf record -g -C CPUS`.

Usage: perf-breakdown.py NAME=PERF_SCRIPT_TEXT[=CPU_US_PER_REQUEST] ...

Each sample's call stack is put in the first category (in the order of CATEGORIES) whose
functions it contains; prints a Markdown table with one column per server: the share of
samples, and, where the server's CPU µs per request is given, that share of it. Used by
scripts/bench.sh with PROFILE=1.
"""

import re
import sys
from collections import Counter

# (label, functions any of which puts a stack in it), matched in this order.
CATEGORIES = [
    (
        "send: loopback delivery of the answer into the client's socket (softirq; a NIC takes this off the server)",
        {"net_rx_action"},
    ),
    ("send: udp_sendmsg (build the skb, route, transmit)", {"udp_sendmsg", "udpv6_sendmsg"}),
    (
        "send: syscall, msghdr copy, SQE set-up",
        {
            "__sys_sendmmsg",
            "__sys_sendmsg",
            "__sys_sendto",
            "io_send",
            "io_sendmsg",
            "io_send_setup",
            "io_sendmsg_setup",
            "io_sendmsg_prep",
        },
    ),
    ("receive: udp_recvmsg (dequeue, copy out)", {"udp_recvmsg", "udpv6_recvmsg"}),
    (
        "receive: syscall, msghdr, multishot overhead",
        {"__sys_recvmmsg", "__sys_recvmsg", "___sys_recvmsg", "__sys_recvfrom", "io_recvmsg", "io_recv"},
    ),
    ("io_uring enter, wait, completions (other)", {"__do_sys_io_uring_enter", "io_cqring_wait", "tctx_task_work"}),
    ("epoll", {"do_epoll_wait"}),
    ("idle", {"pv_native_safe_halt", "default_idle", "cpuidle_enter", "do_idle"}),
]
USER = "userspace (the server's own code and libraries)"
OTHER = "other kernel"

FRAME = re.compile(r"^\s+[0-9a-f]+ (\S+?)(?:\+0x[0-9a-f]+)? \((.*)\)$")


def stacks(path):
    """Yields each sample's frames (function, object), innermost first."""
    frames = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = FRAME.match(line.rstrip("\n"))
            if m:
                frames.append((m.group(1), m.group(2)))
            elif not line.strip():
                if frames:
                    yield frames
                frames = []
    if frames:
        yield frames


def categorize(frames):
    if "kernel.kallsyms" not in frames[0][1]:
        return USER
    names = {f for f, _ in frames}
    for label, functions in CATEGORIES:
        if names & functions:
            return label
    return OTHER


def main(args):
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    columns = []
    for arg in args:
        parts = arg.split("=")
        if len(parts) not in (2, 3):
            print(f"perf-breakdown.py: bad argument {arg!r}: want NAME=FILE[=CPU_US]", file=sys.stderr)
            return 2
        counts = Counter(categorize(s) for s in stacks(parts[1]))
        us = float(parts[2]) if len(parts) == 3 and parts[2] else None
        columns.append((parts[0], counts, sum(counts.values()), us))
    labels = [label for label, _ in CATEGORIES] + [USER, OTHER]
    print("| where the server CPU's time goes | " + " | ".join(name for name, *_ in columns) + " |")
    print("| --- |" + " ---: |" * len(columns))
    for label in labels:
        cells = []
        for _, counts, total, us in columns:
            share = counts[label] / total if total else 0.0
            cells.append(f"{100 * share:.1f} %" + (f" ({share * us:.2f} µs)" if us is not None else ""))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| samples | " + " | ".join(str(total) for _, _, total, _ in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
