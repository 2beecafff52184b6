"""The fleet lab's scenarios, run by scripts/fleetlab.sh as its COMMAND (in the root namespace).

Measures, and prints as one JSON object (the integration test asserts on it; nothing is judged
here):
  spread   300 flows per family from two clients: who answered, each node's metrics
  nonce    a 401 from one node, that node withdrawn (maintenance file), the authenticated
           retransmission of the same client answered by another node
  turn     Allocates from 33 IPv4 addresses and one IPv6 /64, 4 source ports each: the
           ALTERNATE-SERVER per client address and the nodes that gave it
  drain    SIGTERM to node 1 under load: withdrawal time (router FIB), exit time (from the
           moment the signal was sent), transactions lost, then node 1 restarted and its
           re-announcement time; wall-clock times of the signal, the exit and the restart
  crash    SIGKILL of node 2's stunedge under load: withdrawal time, losses; restarted
  node_crash   SIGKILL of node 3's stunedge, watcher and BIRD under load; then the node revived
           (BIRD, watcher, stunedge) and the time until the router has it again
  silent   node 2's uplink dropping everything (a hung or powered-off node) under load: BFD
  prometheus   the dashboard's fleet-view queries over the run (with --prometheus): the node
           state as [unix time, value] pairs from 2 s before the drain's SIGTERM to its restart
Usage: fleet_check.py [DASHBOARD_JSON]
"""

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "fleet_client.py")
E = os.environ
LAB, ROUTER = E["LAB"], E["ROUTER_NS"]
ANY4, ANY6, PORT, AUTH_PORT = E["ANYCAST4"], E["ANYCAST6"], E["PORT"], E["AUTH_PORT"]
DRAIN = float(E["DRAIN"])
SERVER4 = f"{ANY4}:{PORT}"
SERVER6 = f"[{ANY6}]:{PORT}"
NODES = (1, 2, 3)
GW4 = {n: f"192.0.2.{4 * n - 2}" for n in NODES}
GW6 = {n: f"2001:db8:0:{n}::2" for n in NODES}
ADMIN = {n: f"{GW4[n]}:9478" for n in NODES}


def log(*args):
    print("fleet_check:", *args, file=sys.stderr, flush=True)


def client_ns(c):
    return E[f"CLIENT_NS_{c}"]


def v4(c, h=2):
    return f"203.0.113.{16 * c - 16 + h}"


def v6(c, h=2):
    return f"2001:db8:c{c}::{h:x}"


def ctl(action, n):
    return subprocess.run([E["FLEETLAB"], "ctl", LAB, action, str(n)], check=True, capture_output=True, text=True).stdout


def nexthops(fam):
    """The set of nodes the router's FIB sends the anycast address of `fam` (4 or 6) to."""
    dest = ANY4 if fam == 4 else ANY6
    out = subprocess.run(["ip", "-n", ROUTER, f"-{fam}", "route", "show", dest], capture_output=True, text=True).stdout
    gws = GW4 if fam == 4 else GW6
    return {n for n, gw in gws.items() if f"via {gw} " in out}


def wait_for(pred, timeout, poll=0.004):
    """Seconds until pred() holds (polled), or None after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(poll)
    return None


def all_announced():
    return nexthops(4) == set(NODES) and nexthops(6) == set(NODES)


def metrics(n):
    out = subprocess.run(["ip", "netns", "exec", ROUTER, "curl", "-s", "--max-time", "2", f"http://{ADMIN[n]}/metrics"],
                         capture_output=True, text=True).stdout
    total = 0.0
    for line in out.splitlines():
        if line.startswith("stunedge_responses_total{") and 'class="success"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def client(c, *args, stdin=None):
    return subprocess.Popen(["ip", "netns", "exec", client_ns(c), sys.executable or "python3", CLIENT, *args],
                            stdout=subprocess.PIPE, stdin=stdin, text=True)


def result(proc, timeout=60):
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"client failed ({proc.returncode}): {out}")
    return json.loads(out)


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def spread():
    t_start = time.time()
    before = {n: metrics(n) for n in NODES}
    procs = [client(c, "flows", SERVER4, v4(c), "300") for c in (1, 2)]
    procs += [client(c, "flows", SERVER6, v6(c), "300") for c in (1, 2)]
    runs = [result(p) for p in procs]
    time.sleep(0.1)
    after = {n: metrics(n) for n in NODES}
    return {"runs": dict(zip(["client1_v4", "client2_v4", "client1_v6", "client2_v6"], runs)),
            "metrics_success": {f"fleet-node{n}": after[n] - before[n] for n in NODES}, "t_start": t_start,
            "t_end": time.time()}


def nonce():
    proc = client(1, "auth", f"{ANY4}:{AUTH_PORT}", v4(1, 3), "alice", "fleet-secret-pw", stdin=subprocess.PIPE)
    first = json.loads(proc.stdout.readline())
    node = int(first["challenge"]["node"].removeprefix("fleet-node")) if first["challenge"]["node"].startswith("fleet-node") else None
    out = {"challenge": first["challenge"]}
    if node is not None:
        t0 = time.monotonic()
        ctl("maint-on", node)
        out["withdraw_s"] = wait_for(lambda: node not in nexthops(4), 10)
        log(f"nonce: node {node} challenged, withdrawn after {out['withdraw_s']}")
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out.update(result(proc))
    if node is not None:
        ctl("maint-off", node)
        t0 = time.monotonic()
        out["reannounce_s"] = wait_for(all_announced, 30)
        del t0
    return out


def turn():
    procs = [client(c, "turn", SERVER4, *[v4(c, h) for h in range(2, 13)]) for c in (1, 2, 3)]
    procs.append(client(2, "turn", SERVER6, *[v6(2, h) for h in range(2, 13)]))
    answers, lost = [], 0
    for p in procs:
        r = result(p)
        answers += r["answers"]
        lost += r["lost"]
    by_client = {}
    for a in answers:
        key = a["client"] if ":" not in a["client"] else "2001:db8:c2::/64"
        entry = by_client.setdefault(key, {"alternates": set(), "nodes": set(), "codes": set()})
        entry["alternates"].add(a["alternate"])
        entry["nodes"].add(a["node"])
        entry["codes"].add(a["code"])
    clients = {k: {"alternates": sorted(map(str, v["alternates"])), "nodes": sorted(v["nodes"]),
                   "codes": sorted(v["codes"])} for k, v in by_client.items()}
    return {"answers": len(answers), "lost": lost, "clients": clients}


def under_load(event, settle_after, rate="500", flows="40", lead=1.0):
    """Runs a v4 load from client 1 and a v6 load from client 3, fires event() `lead` s in, keeps
    the load on for settle_after s after event() returns; returns (event's result, loads)."""
    stop = os.path.join(LAB, "stop-load")
    if os.path.exists(stop):
        os.remove(stop)
    procs = [client(1, "load", SERVER4, v4(1, 4), flows, rate, "60", stop),
             client(3, "load", SERVER6, v6(3, 4), flows, rate, "60", stop)]
    time.sleep(lead)
    t_event = time.time()
    got = event()
    time.sleep(settle_after)
    open(stop, "w").close()
    loads = {"v4": result(procs[0]), "v6": result(procs[1])}
    for load in loads.values():
        load["event_at_s"] = round(t_event - load.pop("t0"), 3)
    return got, loads


def withdrawal(n, action, timeout=10):
    """Fires `action` on node n, returns the seconds until the router's FIB drops it (v4, v6),
    both counted from just before the action (so never shorter than they were)."""
    t0 = time.monotonic()
    ctl(action, n)
    w4 = wait_for(lambda: n not in nexthops(4), timeout)
    w6 = wait_for(lambda: n not in nexthops(6), timeout - (w4 or 0))
    w6 = None if w6 is None else time.monotonic() - t0
    return {"withdraw_v4_s": None if w4 is None else round(w4, 3), "withdraw_v6_s": None if w6 is None else round(w6, 3),
            "t0_mono": t0}


def drain():
    pid = int(ctl("pid", 1).strip())
    out = {}

    def event():
        out["t_term"] = time.time()
        w = withdrawal(1, "term")
        w.pop("t0_mono")
        out.update(w)
        # `ctl term` wrote the time right after it sent SIGTERM: the exit is timed from there,
        # and to the last poll that still saw the process (it was alive then), so exit_s is
        # never longer than the real drain. t_exit: the first poll that saw it gone.
        with open(os.path.join(LAB, "term1.at")) as f:
            t_sig = float(f.read())
        out["t_signal"] = t_sig
        t_alive, t_gone = t_sig, None
        while time.time() - t_sig < DRAIN + 10:
            now = time.time()
            if not pid_alive(pid):
                t_gone = now
                break
            t_alive = now
            time.sleep(0.01)
        out["exit_s"] = None if t_gone is None else round(t_alive - t_sig, 3)
        out["t_last_alive"] = t_alive
        out["t_exit"] = t_gone

    # 1.5 s of load before the signal: Prometheus (0.5 s scrapes) sees the node serving first.
    _, out["loads"] = under_load(event, 0.5, lead=1.5)
    # Down until 3 s after the exit, so Prometheus scrapes it down several times, then back.
    if out["t_exit"] is not None:
        time.sleep(max(0.0, out["t_exit"] + 3.0 - time.time()))
    out["t_restart"] = time.time()
    ctl("start", 1)
    ra = wait_for(all_announced, 30)
    out["reannounce_s"] = None if ra is None else round(ra, 3)
    return out


def crash():
    out = {}

    def event():
        w = withdrawal(2, "kill")
        w.pop("t0_mono")
        out.update(w)

    _, out["loads"] = under_load(event, 1.0)
    ctl("start", 2)
    ra = wait_for(all_announced, 30)
    out["reannounce_s"] = None if ra is None else round(ra, 3)
    return out


def node_crash():
    out = {}

    def event():
        w = withdrawal(3, "kill-node")
        w.pop("t0_mono")
        out.update(w)

    _, out["loads"] = under_load(event, 1.0)
    # The node comes back: stunedge, then BIRD and the watcher. BIRD's session to the router
    # must be re-established (connect retry, error wait) before the watcher's announcement
    # reaches it; timed until the router has all three nodes again.
    t0 = time.monotonic()
    ctl("start", 3)
    ctl("revive", 3)
    ra = wait_for(all_announced, 30)
    out["revive_reannounce_s"] = None if ra is None else round(time.monotonic() - t0, 3)
    log(f"node_crash: node 3 revived, back in the router's FIB after {out['revive_reannounce_s']} s")
    return out


def silent():
    out = {}

    def event():
        w = withdrawal(2, "isolate")
        w.pop("t0_mono")
        out.update(w)

    _, out["loads"] = under_load(event, 1.0)
    return out


def prom_query(expr, **params):
    url = E["PROM"] + "/api/v1/" + ("query_range" if "start" in params else "query") + "?" + \
        urllib.parse.urlencode({"query": expr, **params})
    out = subprocess.run(["ip", "netns", "exec", ROUTER, "curl", "-s", "--max-time", "5", url],
                         capture_output=True, text=True).stdout
    return json.loads(out)


def prometheus(dashboard, spread, drained):
    """The dashboard's fleet row, queried as Grafana would with $__rate_interval = 2s."""
    dash = json.load(open(dashboard))
    panels = [p for row in dash["panels"] for p in ([row] + row.get("panels", []))]
    fleet = {p["title"]: p["targets"][0]["expr"] for p in panels if p.get("title", "").startswith("Fleet:")}
    fill = lambda e: e.replace("$__rate_interval", "2s").replace('"$instance"', '".*"')
    out = {"panels": sorted(fleet)}
    answers = next((e for t, e in fleet.items() if "answers per node" in t), None)
    state = next((e for t, e in fleet.items() if "node state" in t), None)
    if answers:
        # The highest rate each node showed from the spread's start to 3 s after its end.
        r = prom_query(fill(answers), start=str(spread["t_start"]), end=str(spread["t_end"] + 3), step="0.5")
        out["answers_at_spread"] = {s["metric"].get("instance"): max(float(v) for _, v in s["values"])
                                    for s in r["data"]["result"]}
    if state:
        r = prom_query(fill(state), start=str(drained["t_term"] - 2), end=str(drained["t_restart"] + 0.5), step="0.5")
        series = {s["metric"].get("instance"): [[float(t), float(v)] for t, v in s["values"]]
                  for s in r["data"]["result"]}
        out["state_during_drain"] = series
    return out


def main():
    dashboard = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "grafana", "stunedge-dashboard.json")
    report = {"nodes": len(NODES), "drain_seconds": DRAIN,
              "watch": {"interval_s": float(E["WATCH_INTERVAL"]), "rise": int(E["WATCH_RISE"])}}
    for name, step in [("spread", spread), ("nonce", nonce), ("turn", turn), ("drain", drain), ("crash", crash),
                       ("node_crash", node_crash), ("silent", silent)]:
        log(f"{name} ...")
        t0 = time.monotonic()
        report[name] = step()
        log(f"{name} done in {time.monotonic() - t0:.1f} s")
    if E.get("PROMETHEUS") == "yes":
        report["prometheus"] = prometheus(dashboard, report["spread"], report["drain"])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
