#!/usr/bin/env bash
# Instructions per request, by function: nbdkit with the rewind plugin (or
# the file plugin) runs under valgrind's callgrind while fio sends a fixed
# number of requests.  Instruction counts (Ir) hardly depend on what else
# runs on the machine, unlike IOPS or CPU time, so this is how a change to
# the write path is judged on a busy or noisy machine: run it before and
# after.  Counts user-space instructions of every nbdkit thread (the
# committer and applier included), not the kernel's work.
#
# Usage: bench/callgrind.sh [randwrite|randread|seqwrite]   (default randwrite)
# Environment: CG_TARGET=rewind|file, CG_IOS=50000 (requests),
#              CG_SIZE=1G, CG_DIR=$BUILD_DIR/callgrind, BUILD_DIR=build,
#              CG_TOP=30 (functions listed, inclusive of callees: no)
set -euo pipefail
export PATH=/usr/bin:$PATH  # nbdsh needs Debian's python3 (python3-libnbd)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BUILD=${BUILD_DIR:-build}
WORKLOAD=${1:-randwrite}
TARGET=${CG_TARGET:-rewind}
IOS=${CG_IOS:-50000}
SIZE=${CG_SIZE:-1G}
DIR=${CG_DIR:-$ROOT/$BUILD/callgrind}
TOP=${CG_TOP:-30}
PLUGIN=$ROOT/$BUILD/nbdplugin/nbdkit-rewind-plugin.so

die() { printf 'callgrind: %s\n' "$*" >&2; exit 1; }
command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"
case $WORKLOAD in
  randwrite) OPTS=(--rw=randwrite --bs=4k --iodepth=32); BS=4096 ;;
  randread) OPTS=(--rw=randread --bs=4k --iodepth=32); BS=4096 ;;
  seqwrite) OPTS=(--rw=write --bs=1M --iodepth=8); BS=1048576 ;;
  *) die "unknown workload '$WORKLOAD' (randwrite, randread, seqwrite)" ;;
esac

rm -rf "$DIR"
mkdir -p "$DIR"
SOCKDIR=$(mktemp -d /tmp/rewind-cg.XXXXXX)
SOCK=$SOCKDIR/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
PID=
cleanup() {
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$SOCKDIR"
}
trap cleanup EXIT

case $TARGET in
  rewind) ARGS=("$PLUGIN" dir="$DIR/store" size="$SIZE") ;;
  file) truncate -s "$SIZE" "$DIR/file.img"; ARGS=(file file="$DIR/file.img") ;;
  *) die "CG_TARGET is rewind or file" ;;
esac
# Instrumentation starts switched off and is switched on by callgrind_control
# once the disk is filled, so start-up and the fill are not counted.
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$DIR/callgrind.out" \
  --separate-threads=no nbdkit -f -U "$SOCK" "${ARGS[@]}" 2>"$DIR/valgrind.log" &
PID=$!
for _ in $(seq 1 600); do
  [[ -S "$SOCK" ]] && nbdinfo --size "$URI" >/dev/null 2>&1 && break
  sleep 0.2
done
[[ -S "$SOCK" ]] || die "nbdkit did not start under valgrind (see $DIR/valgrind.log)"
if true; then  # every block written once: the steady state, before-images already saved
  fio --name=fill --ioengine=nbd --uri="$URI" --size="$SIZE" --rw=write --bs=1M --iodepth=8 \
    --end_fsync=1 >/dev/null
fi
callgrind_control -i on "$PID" >/dev/null 2>&1
START=$(date +%s.%N)
fio --name="$WORKLOAD" --ioengine=nbd --uri="$URI" --size="$SIZE" "${OPTS[@]}" \
  --io_size=$((IOS * BS)) --randrepeat=1 --output-format=terse >"$DIR/fio.terse"
# The journal catches up (the committer's and applier's work for these
# requests is part of their cost): a flush waits for the journal, and the
# applier follows within its interval.
nbdsh -u "$URI" -c 'h.flush()'
sleep 6
callgrind_control -i off "$PID" >/dev/null 2>&1
callgrind_control -d "$PID" >/dev/null 2>&1
kill "$PID"; wait "$PID" 2>/dev/null || true
PID=
# -d wrote callgrind.out.1 (the measured part); termination wrote an empty one.
OUT=$(ls -S "$DIR"/callgrind.out* | head -1)
callgrind_annotate --threshold=99 "$OUT" 2>/dev/null |
  python3 -c '
import re, sys
n, top, what = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rows, total = [], 0
for line in sys.stdin:
    m = re.match(r"\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(.*)", line)
    if not m:
        continue
    ir, name = int(m.group(1).replace(",", "")), m.group(2)
    if name.strip() == "PROGRAM TOTALS":
        total = ir
        continue
    lib = re.search(r"\[([^\]]*)\]\s*$", name)
    lib = lib.group(1).rsplit("/", 1)[-1] if lib else "?"
    func = re.sub(r"\s*\[[^\]]*\]\s*$", "", name).split(":", 1)[-1]
    func = re.sub(r"\(.*", "", func)[:70]
    rows.append((ir, lib, func))
print(f"{what}: {n} requests, {total / n:.0f} instructions per request (user space, all threads)")
print()
print("%11s  %6s  %-28s %s" % ("per request", "share", "library", "function (self)"))
for ir, lib, func in rows[:top]:
    print(f"{ir / n:11.0f}  {100 * ir / total:5.1f}%  {lib:<28} {func}")
' "$IOS" "$TOP" "$WORKLOAD on $TARGET"
