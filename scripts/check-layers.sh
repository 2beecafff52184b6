#!/usr/bin/env bash
# The layering of docs/architecture.md, checked: every `crate::ROOM` a module of src/ names (in
# `use` lines and paths, outside its tests) must be a room below its own in the table's order,
# and inside src/stun/ every `super::FILE` must be a file below its own. Prints each violation
# and exits 1; run by scripts/ci.sh. `--self-test` checks that a planted upward import is caught.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import pathlib, re, sys

# Top to bottom, as in docs/architecture.md ("a room may use the rooms below it").
ROOMS = ["main", "cli", "client", "admin", "stream", "worker", "metrics", "config", "handler", "lb", "limit", "xdp", "io", "auth",
         "stun", "counters"]
# The wire format's files, top to bottom: `header` is the leaf the others share.
STUN = ["mod", "writer", "integrity", "message", "attr", "header", "registry", "crc32"]


def code(text):
    """The text without its inline test module (everything from `#[cfg(test)]` + `mod`)."""
    m = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod \w+", text, re.M)
    text = text[: m.start()] if m else text
    return re.sub(r"//.*", "", text)  # a doc link is a reference, not an import


def uses(text, prefix):
    """Names used as `prefix::NAME` or inside `prefix::{A, B::c}` groups."""
    names = set(re.findall(prefix + r"::(\w+)", text))
    for group in re.findall(prefix + r"::\{([^}]*)\}", text):
        names.update(re.findall(r"(?:^|,)\s*(\w+)", group))
    return names


def room_of(path):
    rel = path.relative_to("src")
    return rel.parts[0].removesuffix(".rs") if rel.parts[0] != "lib.rs" else "lib"


def violations(files):
    out = []
    for path, text in files:
        if path.name == "tests.rs":
            continue
        text = code(text)
        room = room_of(path)
        if room == "lib":
            continue
        if room not in ROOMS:
            out.append(f"{path}: room {room!r} is not in the layering table (add it to docs/architecture.md and here)")
            continue
        for used in sorted(uses(text, "crate") & set(ROOMS)):
            if used != room and ROOMS.index(used) < ROOMS.index(room):
                out.append(f"{path}: {room} uses crate::{used}, a room above it")
        if room == "stun":
            me = path.stem
            for used in sorted(uses(text, "super") & set(STUN)):
                if STUN.index(used) <= STUN.index(me):
                    out.append(f"{path}: stun::{me} uses super::{used}, a file above it")
    return out


files = [(p, p.read_text()) for p in sorted(pathlib.Path("src").rglob("*.rs"))]
if sys.argv[1:] == ["--self-test"]:
    planted = [(pathlib.Path("src/counters.rs"), "use crate::handler::Action;\n"),
               (pathlib.Path("src/stun/attr.rs"), "use super::message::Message;\n"),
               (pathlib.Path("src/io/mod.rs"), "use crate::{counters::Tally, worker::Server};\n"),
               (pathlib.Path("src/io/mmsg.rs"), "#[cfg(test)]\nmod tests { use crate::handler::X; }\n")]
    found = violations(planted)
    assert len(found) == 3 and "counters uses crate::handler" in found[0] and "super::message" in found[1] \
        and "io uses crate::worker" in found[2], found
    print("check-layers self-test: 3 planted upward imports caught, a test module's import ignored")
    sys.exit(0)
found = violations(files)
for line in found:
    print(line)
if found:
    sys.exit(1)
print(f"layering ok: {len(files)} files, no room uses a room above it")
PY
