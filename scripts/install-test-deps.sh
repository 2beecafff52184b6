#!/usr/bin/env bash
# What scripts/ci.sh needs beyond the Rust toolchain, checked up front. Whatever is missing is
# installed when running as root with apt-get (Debian, Ubuntu); otherwise this stops at once
# with one message naming the missing packages and the command that installs them.
#   --check   only check: never install, exit 1 with that message if anything is missing
set -euo pipefail

install=yes
[[ ${1:-} == --check ]] && install=no

missing=()
need() { # need PACKAGE CHECK...: PACKAGE is missing unless the command CHECK... succeeds
  local package=$1; shift
  "$@" >/dev/null 2>&1 || missing+=("$package")
}
has() { command -v "$1"; }
# The interop tests' independent implementations (with CI set, those tests fail rather than
# skip when one is missing): coturn's turnutils_stunclient and turnutils_natdiscovery, aioice
# for Debian's /usr/bin/python3 (the authentication interop), openssl (TURN REST passwords).
need coturn has turnutils_stunclient
need python3-aioice /usr/bin/python3 -c 'import aioice'
need openssl has openssl
# The dashboard check: Prometheus and promtool (both in Debian's prometheus package), curl;
# PyYAML for Debian's Python (the Kubernetes YAML check); systemd-analyze (the unit file check).
need prometheus has prometheus
need prometheus has promtool
need curl has curl
need python3-yaml /usr/bin/python3 -c 'import yaml'
need systemd has systemd-analyze
# The NAT lab (scripts/natlab.sh, tests/integration/natlab.rs): network namespaces and veth
# pairs (iproute2), the NATs (nftables), conntrack flushes (conntrack), its sysctls (procps).
need iproute2 has ip
need nftables has nft
need conntrack has conntrack
need procps has sysctl
# The browser lab (tests/integration/browser.rs, tests/browser/): headless Chromium driven by
# chromedriver through Debian's Selenium, libnice's C harness built with cc and pkg-config, the
# capture (tcpdump), and coturn (above) as the TURN relay.
need chromium has chromium
need chromium-driver has chromedriver
need python3-selenium /usr/bin/python3 -c 'import selenium'
need gcc has cc
need pkg-config has pkg-config
need libnice-dev pkg-config --exists nice
need tcpdump has tcpdump
# The XDP program's reproducibility check (scripts/build-xdp.sh --check) and build.rs's rebuild:
# clang for the BPF target, llvm-strip (Debian's llvm package), libbpf's headers.
need clang has clang
need llvm has llvm-strip
need libbpf-dev test -f /usr/include/bpf/bpf_helpers.h
# The XDP lab (scripts/xdp-lab.sh): TX checksum offload off on the client's veth (ethtool), the
# peer's XDP_PASS program for native mode (bpftool, nsenter from util-linux).
need ethtool has ethtool
need bpftool has bpftool
need util-linux has nsenter
# The fleet lab (scripts/fleetlab.sh, tests/integration/fleet.rs): BIRD 2 on its router and
# nodes (bird, birdc), nft (above) for a silent node, Prometheus (above) for the fleet view.
need bird2 has bird
need bird2 has birdc
# The reflection lab (scripts/reflect-lab.sh, tests/integration/reflection.rs) needs the same
# namespaces and nftables counters, curl for /metrics and python3 for its JSON: all above.

# Each package once, in order.
mapfile -t missing < <(printf '%s\n' ${missing[@]+"${missing[@]}"} | awk 'NF && !seen[$0]++')
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "test dependencies: all present"
  exit 0
fi

command="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $install == yes && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "test dependencies: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -qq --no-install-recommends ${missing[*]}
  # bird2 enables its own bird.service (/etc/bird/bird.conf, /run/bird/bird.ctl) on install.
  # The fleet lab runs its own BIRDs, one per namespace with their own -c/-s/-P, and needs
  # none on the host: disable the one this just installed (never a BIRD that was here before).
  if [[ " ${missing[*]} " == *" bird2 "* && -d /run/systemd/system ]]; then
    systemctl disable --now bird.service >/dev/null 2>&1 || true
  fi
  exit 0
fi
{
  echo "scripts/ci.sh needs packages that are missing here: ${missing[*]}"
  echo "Install them (as root, on Debian or Ubuntu) with:"
  echo "  apt-get update && $command"
  echo "(README.md, section Test, says what each is for.) Running as root, scripts/ci.sh installs them itself."
} >&2
exit 1
