#!/usr/bin/env bash
# Reading the past: how fast time-travel exports and restores are, next to
# their anchors, in one run.
#
#   1. nbdkit with the rewind plugin on a fresh disk; fill it with 1 MiB
#      writes; checkpoint "base"; then 4 KiB random writes over a share of
#      the disk (BENCH_CHANGED, default 25%) so that the past differs.
#   2. 4 KiB random reads at QD32 (fio's nbd engine) on the live export ""
#      and on the time-travel export "@base"; ratio @base / live.
#   3. `rewind restore DIR --to base --output FILE` (through the running
#      plugin) against `nbdcopy` of the live export to a file; ratio of
#      speeds (nbdcopy time / restore time).
#
# Usage: bench/history.sh     Environment: BENCH_SIZE=1G, BENCH_RUNTIME=15,
#   BENCH_CHANGED=25 (percent of the disk rewritten after the checkpoint),
#   BENCH_DIR=$BUILD_DIR/bench, BUILD_DIR=build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BUILD=${BUILD_DIR:-build}
PLUGIN=$ROOT/$BUILD/nbdplugin/nbdkit-rewind-plugin.so
REWIND=$ROOT/$BUILD/restore/rewind
SIZE=${BENCH_SIZE:-1G}
RUNTIME=${BENCH_RUNTIME:-15}
CHANGED=${BENCH_CHANGED:-25}
BENCHDIR=${BENCH_DIR:-$ROOT/$BUILD/bench}
export PATH=/usr/bin:$PATH

die() { printf 'bench/history: %s\n' "$*" >&2; exit 1; }
for tool in nbdkit fio nbdinfo nbdcopy; do command -v "$tool" >/dev/null || die "$tool is missing; run 'make deps'"; done
[[ -f "$PLUGIN" && -x "$REWIND" ]] || die "build first: make build"

mkdir -p "$BENCHDIR"
WORK=$(mktemp -d "$BENCHDIR/history-XXXX")
SOCKDIR=$(mktemp -d /tmp/rewind-hist.XXXXXX)
SOCK=$SOCKDIR/nbd.sock
PID=
cleanup() {
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$SOCKDIR" "$WORK"
}
trap cleanup EXIT

uri() { echo "nbd+unix:///$1?socket=$SOCK"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:  $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "git:      $(git describe --always --dirty 2>/dev/null || echo unknown)"
echo "disk:     $SIZE, ${CHANGED}% rewritten after the checkpoint, ${RUNTIME} s per read run"
echo

nbdkit -f -U "$SOCK" "$PLUGIN" dir="$WORK/store" size="$SIZE" 2>"$WORK/nbdkit.log" &
PID=$!
for _ in $(seq 1 300); do nbdinfo --size "$(uri '')" >/dev/null 2>&1 && break; sleep 0.1; done
fio --name=fill --ioengine=nbd --uri="$(uri '')" --size="$SIZE" --rw=write --bs=1M --iodepth=8 \
  --end_fsync=1 --output-format=terse >/dev/null
"$REWIND" checkpoint "$WORK/store" --name base >/dev/null
BYTES=$(nbdinfo --size "$(uri '')")
CHANGE_BYTES=$((BYTES / 100 * CHANGED / 4096 * 4096))
fio --name=change --ioengine=nbd --uri="$(uri '')" --size="$SIZE" --rw=randwrite --bs=4k \
  --iodepth=32 --io_size="$CHANGE_BYTES" --end_fsync=1 --output-format=terse >/dev/null

read_iops() {  # EXPORT
  drop_caches
  fio --name=read --ioengine=nbd --uri="$(uri "$1")" --size="$SIZE" --rw=randread --bs=4k \
    --iodepth=32 --time_based --runtime="$RUNTIME" --ramp_time=2 --output-format=terse |
    awk -F';' 'NF > 50 { print $8 }'
}
LIVE=$(read_iops "")
PAST=$(read_iops "@base")

drop_caches
T0=$(date +%s.%N)
nbdcopy "$(uri '')" "$WORK/copy.raw"
T1=$(date +%s.%N)
drop_caches
T2=$(date +%s.%N)
"$REWIND" restore "$WORK/store" --to base --output "$WORK/restore.raw" >/dev/null
T3=$(date +%s.%N)
COPY_S=$(awk -v a="$T0" -v b="$T1" 'BEGIN { print b - a }')
REST_S=$(awk -v a="$T2" -v b="$T3" 'BEGIN { print b - a }')

printf '%-44s %14s %14s %8s\n' "measure" "anchor" "rewind" "ratio"
printf '%-44s %14s %14s %8s\n' "4 KiB random read QD32, IOPS (live vs @base)" "$LIVE" "$PAST" \
  "$(awk -v a="$PAST" -v b="$LIVE" 'BEGIN { printf "%.2fx", a / b }')"
printf '%-44s %13.2fs %13.2fs %8s\n' "copy of the $SIZE disk (nbdcopy vs restore)" "$COPY_S" "$REST_S" \
  "$(awk -v a="$COPY_S" -v b="$REST_S" 'BEGIN { printf "%.2fx", a / b }')"
"$REWIND" info "$WORK/store" | sed 's/^/  /'
