#!/usr/bin/env bash
# Where does the time go?  Starts nbdkit with the rewind plugin (or the file
# plugin) on a fresh disk, fills it, and runs one fio workload under
# `perf record -a -g` (the whole machine: nbdkit, fio and the kernel's
# writeback all count).  Prints the top symbols and the split by thread.
#
# Usage: bench/profile.sh [randwrite|randread|seqwrite]   (default randwrite)
# Environment: PROF_TARGET=rewind|file, PROF_RUNTIME=10 (s), PROF_SIZE=1G,
#              PROF_DIR=$BUILD_DIR/prof, BUILD_DIR=build, PROF_TOP=40
# Also prints the server's CPU time per request (all nbdkit threads).
# The perf data stays in $PROF_DIR/perf.data for `perf report -i`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BUILD=${BUILD_DIR:-build}
WORKLOAD=${1:-randwrite}
TARGET=${PROF_TARGET:-rewind}
RUNTIME=${PROF_RUNTIME:-10}
SIZE=${PROF_SIZE:-1G}
DIR=${PROF_DIR:-$ROOT/$BUILD/prof}
TOP=${PROF_TOP:-40}
PLUGIN=$ROOT/$BUILD/nbdplugin/nbdkit-rewind-plugin.so

die() { printf 'profile: %s\n' "$*" >&2; exit 1; }
command -v perf >/dev/null || die "perf is not installed (apt-get install linux-perf)"
case $WORKLOAD in
  randwrite) OPTS=(--rw=randwrite --bs=4k --iodepth=32) ;;
  randread) OPTS=(--rw=randread --bs=4k --iodepth=32) ;;
  seqwrite) OPTS=(--rw=write --bs=1M --iodepth=8) ;;
  *) die "unknown workload '$WORKLOAD' (randwrite, randread, seqwrite)" ;;
esac

rm -rf "$DIR"
mkdir -p "$DIR"
SOCKDIR=$(mktemp -d /tmp/rewind-prof.XXXXXX)
SOCK=$SOCKDIR/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
PID=
cleanup() {
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$SOCKDIR"
}
trap cleanup EXIT

case $TARGET in
  rewind) nbdkit -f -U "$SOCK" "$PLUGIN" dir="$DIR/store" size="$SIZE" 2>"$DIR/nbdkit.log" & ;;
  file) truncate -s "$SIZE" "$DIR/file.img"
        nbdkit -f -U "$SOCK" file file="$DIR/file.img" 2>"$DIR/nbdkit.log" & ;;
  *) die "PROF_TARGET is rewind or file" ;;
esac
PID=$!
for _ in $(seq 1 300); do
  [[ -S "$SOCK" ]] && nbdinfo --size "$URI" >/dev/null 2>&1 && break
  sleep 0.1
done
fio --name=fill --ioengine=nbd --uri="$URI" --size="$SIZE" --rw=write --bs=1M --iodepth=8 \
  --end_fsync=1 >/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
# CPU time of the server process (all its threads: nbdkit's, the committer's
# and the applier's), user + system, in clock ticks.  Divided by the
# operations fio completed it gives the server's CPU cost per request.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICKS0=$(cpu_ticks "$PID")
fio --name="$WORKLOAD" --ioengine=nbd --uri="$URI" --size="$SIZE" "${OPTS[@]}" \
  --time_based --runtime="$RUNTIME" --output-format=terse >"$DIR/fio.terse" &
FIO=$!
sleep 1
perf record -q -a -g -o "$DIR/perf.data" -- sleep $((RUNTIME - 2)) 2>/dev/null
wait "$FIO"
TICKS1=$(cpu_ticks "$PID")
# terse v3: field 49 is write IOPS, field 8 read IOPS
awk -F';' -v w="$WORKLOAD" -v t=$((TICKS1 - TICKS0)) -v hz="$(getconf CLK_TCK)" -v rt="$RUNTIME" '
  NF > 50 {
    ops = ($8 + $49) * rt
    printf "%s: read IOPS %s, write IOPS %s, server CPU %.1f us per request (%.2f s)\n",
           w, $8, $49, ops ? t / hz * 1e6 / ops : 0, t / hz
  }' "$DIR/fio.terse"
echo
echo "== by thread (comm)"
perf report -i "$DIR/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
echo
echo "== top symbols (self)"
perf report -i "$DIR/perf.data" --no-children --sort comm,dso,sym --stdio -g none 2>/dev/null |
  grep -v '^#' | grep -v '^$' | head -"$TOP"
