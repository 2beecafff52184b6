#!/usr/bin/env python3
"""Where a server CPU's time goes, from `perf script` output of `perf record -g -C CPUS`.

Usage: perf-breakdown.py NAME=PERF_SCRIPT_TEXT[=CPU_US_PER_REQUEST] ...
       perf-breakdown.py --self-test   (scripts/ci.sh: categorizes a sample and checks the table)

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


def stacks(lines):
    """Yields each sample's frames (function, object), innermost first, from `perf script` lines."""
    frames = []
    for line in lines:
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


# Five samples in `perf script` form: the answer's loopback delivery inside sendmmsg, the send
# path, a multishot receive, the server's own code, idle.
SAMPLE = """\
stunedge-w0 1 [000] 1.000001:     250000 cpu-clock:
\tffffffff81e3d5e3 __udp_enqueue_schedule_skb+0xc3 ([kernel.kallsyms])
\tffffffff81e3d5e4 net_rx_action+0x10 ([kernel.kallsyms])
\tffffffff81e3d5e5 udp_sendmsg+0x9c2 ([kernel.kallsyms])
\tffffffff81e2fe94 __sys_sendmmsg+0xc4 ([kernel.kallsyms])
\t          10b106 __sendmmsg+0x56 (/usr/lib/x86_64-linux-gnu/libc.so.6)

stunedge-w0 1 [000] 1.000002:     250000 cpu-clock:
\tffffffff81ff38f2 ip_route_output_key_hash_rcu+0x882 ([kernel.kallsyms])
\tffffffff82044ca2 udp_sendmsg+0x8a2 ([kernel.kallsyms])
\tffffffff81e2fe94 __sys_sendmmsg+0xc4 ([kernel.kallsyms])

stunedge-w0 1 [000] 1.000003:     250000 cpu-clock:
\tffffffff81e2fe95 _copy_to_iter+0x10 ([kernel.kallsyms])
\tffffffff81e2fe96 udp_recvmsg+0x20 ([kernel.kallsyms])
\tffffffff81e2fe97 io_recvmsg+0x30 ([kernel.kallsyms])

stunedge-w0 1 [000] 1.000004:     250000 cpu-clock:
\t          5a1b2c stunedge::handler::decide+0x1c (/usr/local/bin/stunedge)

swapper 0 [000] 1.000005:     250000 cpu-clock:
\tffffffff821f0001 pv_native_safe_halt+0x1 ([kernel.kallsyms])
\tffffffff821f0002 default_idle+0x9 ([kernel.kallsyms])
"""


def table(columns):
    """The Markdown table for `columns`: (name, category counts, CPU µs per request or None)."""
    totals = [sum(counts.values()) for _, counts, _ in columns]
    lines = [
        "| where the server CPU's time goes | " + " | ".join(name for name, _, _ in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for label in [label for label, _ in CATEGORIES] + [USER, OTHER]:
        cells = []
        for (_, counts, us), total in zip(columns, totals):
            share = counts[label] / total if total else 0.0
            cells.append(f"{100 * share:.1f} %" + (f" ({share * us:.2f} µs)" if us is not None else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| samples | " + " | ".join(str(total) for total in totals) + " |")
    return lines


def self_test():
    samples = list(stacks(SAMPLE.splitlines(keepends=True)))
    got = [categorize(s) for s in samples]
    want = [CATEGORIES[0][0], CATEGORIES[1][0], CATEGORIES[3][0], USER, "idle"]
    assert got == want, f"categories: got {got}, want {want}"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table([("x", Counter(got), 5.0)])}
    assert "20.0 % (1.00 µs)" in rows["idle"], rows["idle"]
    assert rows["samples"].endswith("| 5 |"), rows["samples"]
    print("perf-breakdown.py: self-test passed")
    return 0


def main(args):
    if args == ["--self-test"]:
        return self_test()
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    columns = []
    for arg in args:
        parts = arg.split("=")
        if len(parts) not in (2, 3):
            print(f"perf-breakdown.py: bad argument {arg!r}: want NAME=FILE[=CPU_US]", file=sys.stderr)
            return 2
        with open(parts[1], encoding="utf-8", errors="replace") as f:
            counts = Counter(categorize(s) for s in stacks(f))
        us = float(parts[2]) if len(parts) == 3 and parts[2] else None
        columns.append((parts[0], counts, us))
    print("\n".join(table(columns)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
