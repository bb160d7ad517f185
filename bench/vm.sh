#!/usr/bin/env bash
# Whole-VM checkpoints: downtime in stop and live mode, and the bytes each
# checkpoint adds to the store, for guests of several RAM sizes.
#
# For each size in BENCH_VM_RAM (MiB): two rewind stores served by nbdkit,
# the project's test guest (tests/guest) booted from them under QEMU (TCG),
# then `rewind vm checkpoint` in stop mode twice and in live mode twice,
# BENCH_VM_GAP seconds apart, each with --json.  Prints one row per
# checkpoint: mode, guest stopped (ms, ours: stop to cont, or QEMU's STOP
# event to cont), QEMU's own downtime figure (live), stream bytes, bytes
# stored new, whole command time; and writes them as CSV.
#
# The test guest itself touches well under 1 MiB of its RAM, and zero pages
# cost nothing (QEMU's migration stream sends them as flags).  So that the
# figures are those of a guest whose memory is in use, BENCH_VM_FILL percent
# of RAM (default 50) is loaded at boot with random bytes (QEMU's generic
# loader device at 16 MiB): incompressible, the worst case for the store.
# The guest leaves that memory alone, so the checkpoints after the first are
# those of an idle guest.  BENCH_VM_FILL=0 measures the nearly empty guest.
#
# Usage: bench/vm.sh    Environment: BENCH_VM_RAM="256 1024", BENCH_VM_GAP=2,
#   BENCH_VM_FILL=50, BENCH_DIR=$BUILD_DIR/bench, BUILD_DIR=build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BUILD=${BUILD_DIR:-build}
PLUGIN=$ROOT/$BUILD/nbdplugin/nbdkit-rewind-plugin.so
REWIND=$ROOT/$BUILD/restore/rewind
GUEST=$ROOT/$BUILD/tests/guest/rewind_test_guest.img
RAMS=${BENCH_VM_RAM:-256 1024}
GAP=${BENCH_VM_GAP:-2}
FILL=${BENCH_VM_FILL:-50}
BENCHDIR=${BENCH_DIR:-$ROOT/$BUILD/bench}
export PATH=/usr/bin:$PATH

die() { printf 'bench/vm: %s\n' "$*" >&2; exit 1; }
for tool in nbdkit qemu-system-x86_64 python3; do
  command -v "$tool" >/dev/null || die "$tool is missing; run 'make deps'"
done
[[ -f "$PLUGIN" && -x "$REWIND" && -f "$GUEST" ]] || die "build first: make build"

mkdir -p "$BENCHDIR"
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
CSV=$BENCHDIR/vm-$STAMP.csv
WORK=$(mktemp -d /tmp/rewind-vmbench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "ram_mib,fill_mib,mode,seq,stopped_ms,qemu_downtime_ms,stream_bytes,new_bytes,seconds" >"$CSV"
printf '%-8s %-8s %-5s %3s %11s %10s %12s %12s %8s\n' RAM filled mode n stopped_ms qemu_ms stream stored_new seconds

for ram in $RAMS; do
  d=$WORK/$ram
  mkdir -p "$d"
  truncate -s 64M "$d/boot.img"
  dd if="$GUEST" of="$d/boot.img" conv=notrunc status=none
  "$REWIND" create "$d/s0" --size 64M --image "$d/boot.img" >/dev/null
  "$REWIND" create "$d/s1" --size 64M >/dev/null
  fill_mib=$((ram * FILL / 100))
  loader=()
  if ((fill_mib > 0)); then
    head -c "$((fill_mib << 20))" /dev/urandom >"$d/fill.bin"
    loader=(-device "loader,file=$d/fill.bin,addr=0x1000000,force-raw=on")
  fi
  for i in 0 1; do
    nbdkit -f -U "$d/n$i.sock" "$PLUGIN" dir="$d/s$i" >"$d/nbdkit$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 0 1; do
    for _ in $(seq 100); do [[ -S "$d/s$i/control.sock" ]] && break; sleep 0.1; done
  done
  qemu-system-x86_64 -machine pc,accel=tcg -m "$ram" -display none -nodefaults -no-user-config \
    -serial "file:$d/serial.log" -qmp "unix:$d/qmp.sock,server=on,wait=off" \
    -blockdev "driver=nbd,node-name=disk0,server.type=unix,server.path=$d/n0.sock" \
    -device ide-hd,drive=disk0,bus=ide.0,unit=0,bootindex=0 \
    -blockdev "driver=nbd,node-name=disk1,server.type=unix,server.path=$d/n1.sock" \
    -device ide-hd,drive=disk1,bus=ide.0,unit=1 "${loader[@]}" >"$d/qemu.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do grep -q TICK "$d/serial.log" 2>/dev/null && break; sleep 0.1; done
  grep -q TICK "$d/serial.log" || die "the guest did not start (see $d/qemu.log)"
  n=0
  for mode in stop stop live live; do
    n=$((n + 1))
    sleep "$GAP"
    flag=()
    [[ $mode == live ]] && flag=(--live)
    "$REWIND" vm checkpoint --qmp "$d/qmp.sock" "$d/s0" "$d/s1" --name "c$n" "${flag[@]}" --json \
      >"$d/c$n.json" || die "vm checkpoint failed"
    python3 - "$d/c$n.json" "$ram" "$mode" "$n" "$CSV" "$fill_mib" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
ram, mode, n, csv, fill = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
st = j["state"]
row = [ram, fill, mode, n, f'{j["downtime_ms"]:.1f}', f'{j["qemu_downtime_ms"]:.1f}',
       str(st["stream_bytes"]), str(st["new_bytes"]), f'{j["seconds"]:.2f}']
open(csv, "a").write(",".join(row) + "\n")
def mib(b): return f"{int(b) / 1048576:.2f} MiB"
print(f"{ram + ' MiB':<8} {fill + ' MiB':<8} {mode:<5} {n:>3} {row[4]:>11} {row[5]:>10} {mib(row[6]):>12} {mib(row[7]):>12} {row[8]:>8}")
EOF
  done
  grep -qE "^(MISMATCH|PANIC|HANG) " "$d/serial.log" && die "the guest saw a mismatch or a corrupted record (see $d/serial.log)"
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
done
echo "CSV: $CSV"
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(qemu-system-x86_64 --version | head -1)"
