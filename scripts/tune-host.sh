#!/usr/bin/env bash
# Host tuning for a stunedge node. Dry run by default: prints every change it would make and
# changes nothing. With --apply it makes them (root needed), and running it again changes
# nothing more (idempotent: only values that differ are written).
#
#   scripts/tune-host.sh                      # show the plan
#   scripts/tune-host.sh --apply              # apply it
#   scripts/tune-host.sh --iface eth0 --cpus 0-7 --apply
#
# What it tunes:
#   1. sysctls from configs/sysctl.d-99-stunedge.conf (socket buffer maxima, netdev backlog,
#      NAPI budget, UDP memory); with --apply also installs the file in /etc/sysctl.d so the
#      values survive a reboot.
#   2. IRQ affinity: each receive queue's interrupt of --iface pinned to one CPU of --cpus, in
#      order, so RSS spreads packets over the worker CPUs (pair with io.cpu_steering = true and
#      io.cpus = the same CPUs). Stop irqbalance first, or it will move them back.
#   3. RPS: off where the NIC has a hardware queue per worker CPU (RSS does the spreading);
#      spread over --cpus where it has fewer queues than CPUs. XPS: transmit queue i used by
#      CPU i, so answers leave on the queue of the CPU that wrote them.
set -euo pipefail
cd "$(dirname "$0")/.."

apply=false
iface=""
cpus=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --apply) apply=true ;;
    --iface) iface=$2; shift ;;
    --cpus) cpus=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "tune-host.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if $apply && [[ $(id -u) -ne 0 ]]; then echo "tune-host.sh: --apply needs root" >&2; exit 2; fi

# Expand "0-3,6" into "0 1 2 3 6".
expand() { local part out=(); for part in ${1//,/ }; do if [[ $part == *-* ]]; then out+=($(seq "${part%-*}" "${part#*-}")); else out+=("$part"); fi; done; echo "${out[@]}"; }
[[ -n $cpus ]] || cpus="0-$(( $(nproc) - 1 ))"
read -r -a cpu_list <<< "$(expand "$cpus")"
mask_of() { local c=$1; printf '%x' $(( 1 << c )); }    # one CPU, hex (CPUs < 63)

changes=0
# set_value WHAT FILE WANT: compares and (with --apply) writes.
set_value() {
  local what=$1 file=$2 want=$3 have
  have=$(tr -s ' \t' ' ' < "$file" 2>/dev/null | sed 's/^0*\([0-9a-f]\)/\1/;s/,//g' || echo "?")
  local norm_want
  norm_want=$(sed 's/^0*\([0-9a-f]\)/\1/;s/,//g' <<< "$want")
  if [[ "$have" == "$norm_want" ]]; then
    echo "  ok       $what = $want"
    return
  fi
  changes=$(( changes + 1 ))
  if $apply; then
    if echo "$want" > "$file" 2>/dev/null; then echo "  changed  $what: $have -> $want"; else echo "  FAILED   $what: could not write $file"; fi
  else
    echo "  would    $what: $have -> $want"
  fi
}

echo "== sysctls (configs/sysctl.d-99-stunedge.conf)"
while IFS='=' read -r key value; do
  key=$(xargs <<< "$key"); value=$(xargs <<< "$value")
  [[ -z $key || $key == \#* ]] && continue
  file=/proc/sys/${key//./\/}
  if [[ ! -e $file ]]; then echo "  skip     $key: not on this kernel"; continue; fi
  have=$(xargs < "$file")
  if [[ "$have" == "$value" ]]; then echo "  ok       $key = $value"; continue; fi
  changes=$(( changes + 1 ))
  if $apply; then sysctl -q -w "$key=$value" && echo "  changed  $key: $have -> $value"; else echo "  would    $key: $have -> $value"; fi
done < configs/sysctl.d-99-stunedge.conf
if $apply && ! cmp -s configs/sysctl.d-99-stunedge.conf /etc/sysctl.d/99-stunedge.conf 2>/dev/null; then
  install -m 0644 configs/sysctl.d-99-stunedge.conf /etc/sysctl.d/99-stunedge.conf
  echo "  installed /etc/sysctl.d/99-stunedge.conf"
fi

if [[ -z $iface ]]; then
  iface=$(ip route show default 2>/dev/null | awk '/default/ {for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
fi
if [[ -z $iface || ! -d /sys/class/net/$iface ]]; then
  echo "== interface: none found (no default route; pass --iface): skipping IRQ affinity, RPS and XPS"
else
  echo "== $iface: IRQ affinity over CPUs ${cpu_list[*]}"
  irqs=$(awk -v dev="$iface" -F: '$0 ~ dev {gsub(/ /, "", $1); print $1}' /proc/interrupts)
  if [[ -z $irqs ]]; then
    echo "  skip     no interrupts named after $iface (virtual NIC?)"
  else
    i=0
    for irq in $irqs; do
      cpu=${cpu_list[$(( i % ${#cpu_list[@]} ))]}
      set_value "irq $irq ($iface) cpu" "/proc/irq/$irq/smp_affinity_list" "$cpu"
      i=$(( i + 1 ))
    done
  fi
  rx=(/sys/class/net/$iface/queues/rx-*)
  tx=(/sys/class/net/$iface/queues/tx-*)
  echo "== $iface: ${#rx[@]} receive and ${#tx[@]} transmit queues, ${#cpu_list[@]} worker CPUs"
  all=0; for c in "${cpu_list[@]}"; do all=$(( all | (1 << c) )); done
  for q in "${rx[@]}"; do
    [[ -e $q/rps_cpus ]] || continue
    if (( ${#rx[@]} >= ${#cpu_list[@]} )); then
      set_value "$(basename "$q") rps_cpus (RSS spreads; RPS off)" "$q/rps_cpus" 0
    else
      set_value "$(basename "$q") rps_cpus (fewer queues than CPUs: spread)" "$q/rps_cpus" "$(printf '%x' "$all")"
    fi
  done
  i=0
  for q in "${tx[@]}"; do
    [[ -e $q/xps_cpus ]] || continue
    set_value "$(basename "$q") xps_cpus" "$q/xps_cpus" "$(mask_of "${cpu_list[$(( i % ${#cpu_list[@]} ))]}")"
    i=$(( i + 1 ))
  done
fi

if $apply; then echo "== $changes change(s) made"; else echo "== $changes change(s) planned; run with --apply to make them"; fi
