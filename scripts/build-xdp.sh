#!/usr/bin/env bash
# Builds the XDP program src/xdp/stun.bpf.c into the committed object src/xdp/stun.bpf.o with
# fixed flags, so that two builds on machines with the same clang and headers are byte-identical
# (-ffile-prefix-map keeps the checkout's path out of the debug info and BTF; -g is what gives
# the object the BTF that describes its maps). Needs clang (Debian: clang-14) and libbpf's headers
# (Debian: libbpf-dev, /usr/include/bpf).
#   (no argument)  rebuild src/xdp/stun.bpf.o
#   --check        rebuild into a temporary file and fail unless it equals the committed object
#   --out FILE     rebuild into FILE (build.rs uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
src=src/xdp/stun.bpf.c
committed=src/xdp/stun.bpf.o

build() { # build OUT
  local arch
  arch=$(uname -m)
  # Debian puts asm/types.h under the multiarch directory, which -target bpf does not search.
  clang -O2 -g -target bpf -Wall -Werror -ffile-prefix-map="$PWD"=. \
    -I"/usr/include/$arch-linux-gnu" -c "$src" -o "$1"
  # The DWARF sections are not needed to load (BTF is kept); stripping them keeps the object small.
  llvm-strip -g "$1"
}

case ${1:-} in
  "")
    build "$committed"
    echo "built $committed ($(wc -c <"$committed") bytes, sha256 $(sha256sum "$committed" | cut -c1-16))"
    ;;
  --out)
    build "$2"
    ;;
  --check)
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    build "$tmp"
    if ! cmp -s "$tmp" "$committed"; then
      echo "build-xdp: $committed differs from a fresh build of $src ($(clang --version | head -1));" \
        "run scripts/build-xdp.sh and commit the object" >&2
      exit 1
    fi
    echo "build-xdp: $committed is reproducible from $src"
    ;;
  *)
    echo "usage: $0 [--check | --out FILE]" >&2
    exit 2
    ;;
esac
