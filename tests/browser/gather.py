#!/usr/bin/python3
"""Headless Chromium gathers ICE candidates through the given ICE servers and prints them as JSON.

    gather.py [--connect] [--timeout SECONDS] ICE_SERVERS_JSON

ICE_SERVERS_JSON is the RTCPeerConnection `iceServers` list, e.g.
'[{"urls": "stun:203.0.113.10:3478"}]'. Chromium (Debian's `chromium` and `chromium-driver`,
driven by Debian's python3-selenium) runs headless with a scratch profile; the page creates a
peer connection with a data channel, makes an offer and collects every candidate until
gathering completes (the null candidate) or the timeout. Output, one JSON object on stdout:
{"candidates": ["candidate:... typ srflx ...", ...], "complete": true, "errors": [...],
"seconds": 0.4}. `errors` are the icecandidateerror events (url, errorCode, errorText).
With --connect, two peer connections in the page (relay candidates only) open a data channel
through the TURN relay and echo one message; the output is {"connected": true, "echo":
"echo:ping", "pair": {"local": "relay IP:PORT", "remote": "relay IP:PORT"}, "seconds": ...}.
Runs as root, so Chromium needs --no-sandbox. Exit status 0 when gathering completed (or the
channel connected).
"""
import json
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

SCRIPT = """
const [servers, timeoutMs, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const started = performance.now();
const out = {candidates: [], errors: [], complete: false};
const pc = new RTCPeerConnection({iceServers: servers, iceCandidatePoolSize: 0});
pc.createDataChannel("lab");
const finish = () => { out.seconds = (performance.now() - started) / 1000; pc.close(); done(out); };
pc.onicecandidate = (e) => {
  if (e.candidate === null) { out.complete = true; finish(); return; }
  if (e.candidate.candidate) out.candidates.push(e.candidate.candidate);
};
pc.onicecandidateerror = (e) => out.errors.push({url: e.url, code: e.errorCode, text: e.errorText});
setTimeout(finish, timeoutMs);
pc.createOffer().then((o) => pc.setLocalDescription(o));
"""


CONNECT = """
const [servers, timeoutMs, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const started = performance.now();
const out = {connected: false, echo: null, pair: null};
const config = {iceServers: servers, iceTransportPolicy: "relay"};
const a = new RTCPeerConnection(config), b = new RTCPeerConnection(config);
const finish = () => { out.seconds = (performance.now() - started) / 1000; a.close(); b.close(); done(out); };
a.onicecandidate = (e) => { if (e.candidate) b.addIceCandidate(e.candidate); };
b.onicecandidate = (e) => { if (e.candidate) a.addIceCandidate(e.candidate); };
b.ondatachannel = (e) => { e.channel.onmessage = (m) => e.channel.send("echo:" + m.data); };
const channel = a.createDataChannel("lab");
channel.onopen = () => channel.send("ping");
channel.onmessage = async (m) => {
  out.echo = m.data;
  // The transport's selected pair (or a nominated, succeeded one); the stats can lag the first
  // message by a moment, so they are asked again for up to a second.
  for (let i = 0; i < 20 && !out.pair; i++) {
    const stats = await a.getStats();
    let selected = null;
    stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) selected = s.selectedCandidatePairId; });
    stats.forEach((s) => {
      const chosen = selected ? s.id === selected : s.state === "succeeded" && s.nominated;
      if (s.type === "candidate-pair" && chosen) {
        const local = stats.get(s.localCandidateId), remote = stats.get(s.remoteCandidateId);
        out.pair = {local: local.candidateType + " " + local.address + ":" + local.port,
                    remote: remote.candidateType + " " + remote.address + ":" + remote.port};
      }
    });
    if (!out.pair) await new Promise((r) => setTimeout(r, 50));
  }
  out.connected = true;
  finish();
};
setTimeout(finish, timeoutMs);
(async () => {
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
})();
"""


def main(argv):
    timeout = 20.0
    script, ok = SCRIPT, "complete"
    if argv and argv[0] == "--connect":
        # Two peer connections in the page, relay candidates only, a data channel between them:
        # {"connected": true, "echo": "echo:ping", "pair": {"local": "relay IP:PORT", ...}}.
        script, ok = CONNECT, "connected"
        argv = argv[1:]
    if len(argv) >= 2 and argv[0] == "--timeout":
        timeout = float(argv[1])
        argv = argv[2:]
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    servers = json.loads(argv[0])
    profile = tempfile.mkdtemp(prefix="stunedge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # The lab has a default route but no name server: resolve nothing (the page names servers
    # by address), or navigation waits ~10 s for a DNS query that never returns.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-extensions", "--disable-background-networking",
                 "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = None
    try:
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.set_script_timeout(timeout + 10)
        driver.get("data:text/html,<html><body>stunedge lab</body></html>")
        result = driver.execute_async_script(script, servers, int(timeout * 1000))
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result.get(ok) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
