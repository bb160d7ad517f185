#!/usr/bin/env bash
# The NBD benchmark: fio's nbd engine against nbdkit's own `file` plugin and
# against the rewind plugin, in one run, on the same machine and filesystem,
# with the same nbdkit defaults (16 threads, one connection per fio job).
#
# For each target it starts nbdkit on a fresh disk behind a Unix socket, fills
# the whole disk with 1 MiB sequential writes and a final flush (so reads hit
# written data and both sides start from a fully allocated image), then runs:
#
#   randread   4 KiB random reads,  queue depth 32, time based
#   randwrite  4 KiB random writes, queue depth 32, time based
#   seqwrite   1 MiB sequential writes, queue depth 8, time based
#
# fio sends no flush or FUA during the measured runs, so neither side syncs:
# the numbers compare the cost of each write path, not of the disk's fsync.
#
# Usage: bench/run.sh            (or `make bench`)
# Environment:
#   BENCH_RUNTIME=20        seconds per measured workload
#   BENCH_RAMP=2            seconds of warm-up before each measurement
#   BENCH_SIZE=1G           disk size (nbdkit/fio syntax: 512M, 1G, ...)
#   BENCH_TARGETS="file rewind"   which targets to run (e.g. "file" alone)
#   BENCH_WORKLOADS="randread randwrite seqwrite"
#   BENCH_DIR=$BUILD_DIR/bench    where the disks live (in a fresh run-* folder,
#                                 deleted afterwards)
#   BENCH_DROP_CACHES=1     drop the page cache before each workload (root only)
#   BENCH_KEEP=0            1 keeps the disks and the rewind store afterwards
#   BUILD_DIR=build         where the plugin was built
#
# Results: a table on stdout, bench/results/<UTC date>.csv, and the raw fio
# JSON plus machine details in bench/results/<UTC date>/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BUILD=${BUILD_DIR:-build}
PLUGIN=$ROOT/$BUILD/nbdplugin/nbdkit-rewind-plugin.so
REWIND=$ROOT/$BUILD/restore/rewind
RUNTIME=${BENCH_RUNTIME:-20}
RAMP=${BENCH_RAMP:-2}
SIZE=${BENCH_SIZE:-1G}
TARGETS=${BENCH_TARGETS:-file rewind}
WORKLOADS=${BENCH_WORKLOADS:-randread randwrite seqwrite}
BENCHDIR=${BENCH_DIR:-$ROOT/$BUILD/bench}
DROP_CACHES=${BENCH_DROP_CACHES:-1}
KEEP=${BENCH_KEEP:-0}
PY=/usr/bin/python3     # Debian's python3; nothing beyond the standard library

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
note() { printf '%s\n' "$*" >&2; }

for tool in nbdkit fio nbdinfo "$PY"; do
  command -v "$tool" >/dev/null || die "$tool is not installed; run 'make deps'"
done
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd engine"
for t in $TARGETS; do
  case $t in
    file) ;;
    rewind) [[ -f "$PLUGIN" ]] || die "$BUILD/nbdplugin/nbdkit-rewind-plugin.so is missing; run 'make build'" ;;
    *) die "unknown target '$t' in BENCH_TARGETS (file, rewind)" ;;
  esac
done
for w in $WORKLOADS; do
  case $w in randread | randwrite | seqwrite) ;; *) die "unknown workload '$w'" ;; esac
done
[[ "$RUNTIME" =~ ^[0-9]+$ && "$RAMP" =~ ^[0-9]+$ ]] || die "BENCH_RUNTIME and BENCH_RAMP are seconds"

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
RESULTS=$ROOT/bench/results
RAW=$RESULTS/$STAMP
mkdir -p "$RAW"
mkdir -p "$BENCHDIR"
WORKDIR=$(mktemp -d "$BENCHDIR/run-$STAMP.XXXX")   # fresh files for every run
SOCKDIR=$(mktemp -d /tmp/rewind-bench.XXXXXX)   # short path: sun_path is 108 bytes
SOCK=$SOCKDIR/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
NBDKIT_PID=

cleanup() {
  local rc=$?
  if [[ -n "$NBDKIT_PID" ]] && kill -0 "$NBDKIT_PID" 2>/dev/null; then
    kill -TERM "$NBDKIT_PID" 2>/dev/null || true
    wait "$NBDKIT_PID" 2>/dev/null || true
  fi
  rm -rf "$SOCKDIR"
  [[ "$KEEP" == 1 ]] || rm -rf "$WORKDIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the machine -------------------------------------------------------------
{
  echo "date:        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "cpus:        $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "memory:      $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel:      $(uname -sr)"
  echo "load:        $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at start"
  echo "filesystem:  $(df --output=fstype "$WORKDIR" | tail -1) ($(df --output=source "$WORKDIR" | tail -1)), bench dir $BENCHDIR"
  echo "nbdkit:      $(nbdkit --version | head -1), default threads (16), Unix socket"
  echo "fio:         $(fio --version), ioengine=nbd, 1 job"
  echo "git:         $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "disk:        $SIZE; $RUNTIME s per workload after $RAMP s ramp"
  if [[ "$DROP_CACHES" == 1 && $(id -u) -eq 0 && -w /proc/sys/vm/drop_caches ]]; then
    echo "page cache:  dropped before each workload"
  else
    echo "page cache:  not dropped (needs root and BENCH_DROP_CACHES=1)"
  fi
} | tee "$RAW/machine.txt"
echo

# --- helpers -----------------------------------------------------------------
start_nbdkit() {  # TARGET LOG
  local target=$1 log=$2
  rm -f "$SOCK"
  case $target in
    file)
      truncate -s "$SIZE" "$WORKDIR/file.img"
      nbdkit -f --exit-with-parent -U "$SOCK" file file="$WORKDIR/file.img" 2>"$log" &
      ;;
    rewind)
      nbdkit -f --exit-with-parent -U "$SOCK" "$PLUGIN" dir="$WORKDIR/rewind-store" \
        size="$SIZE" 2>"$log" &
      ;;
  esac
  NBDKIT_PID=$!
  for _ in $(seq 1 300); do
    kill -0 "$NBDKIT_PID" 2>/dev/null || { cat "$log" >&2; die "nbdkit ($target) exited at start"; }
    [[ -S "$SOCK" ]] && nbdinfo --size "$URI" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "nbdkit ($target) did not answer on $SOCK within 30 s"
}

stop_nbdkit() {  # TARGET LOG
  local rc=0
  kill -TERM "$NBDKIT_PID"
  wait "$NBDKIT_PID" || rc=$?
  NBDKIT_PID=
  if ((rc != 0)); then
    cat "$2" >&2
    die "nbdkit ($1) exited with status $rc"
  fi
}

drop_caches() {
  [[ "$DROP_CACHES" == 1 && $(id -u) -eq 0 ]] || return 0
  sync
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}

run_fio() {  # NAME OUTPUT fio-options...
  local name=$1 out=$2
  shift 2
  if ! fio --name="$name" --ioengine=nbd --uri="$URI" --size="$SIZE" --numjobs=1 \
      --output-format=json --output="$out" "$@" >/dev/null; then
    [[ -s "$out" ]] && cat "$out" >&2
    die "fio $name failed"
  fi
}

workload_opts() {  # WORKLOAD
  local timed=(--time_based --runtime="$RUNTIME" --ramp_time="$RAMP")
  case $1 in
    randread) echo --rw=randread --bs=4k --iodepth=32 "${timed[@]}" ;;
    randwrite) echo --rw=randwrite --bs=4k --iodepth=32 "${timed[@]}" ;;
    seqwrite) echo --rw=write --bs=1M --iodepth=8 "${timed[@]}" ;;
  esac
}

# --- the runs ----------------------------------------------------------------
for target in $TARGETS; do
  log=$RAW/$target-nbdkit.log
  note "== $target: starting nbdkit on a fresh $SIZE disk"
  start_nbdkit "$target" "$log"
  note "   fill: 1 MiB sequential writes over the whole disk, then flush"
  run_fio fill "$RAW/$target-fill.json" --rw=write --bs=1M --iodepth=8 --end_fsync=1
  for w in $WORKLOADS; do
    drop_caches
    note "   $w: ${RUNTIME} s"
    # shellcheck disable=SC2046  # workload_opts prints words to split
    run_fio "$w" "$RAW/$target-$w.json" $(workload_opts "$w")
  done
  if [[ "$target" == rewind && -x "$REWIND" ]]; then
    "$REWIND" info --json "$WORKDIR/rewind-store" >"$RAW/rewind-info.json" 2>/dev/null || true
  fi
  stop_nbdkit "$target" "$log"
  [[ "$KEEP" == 1 ]] || rm -rf "$WORKDIR/file.img" "$WORKDIR/rewind-store"
done
echo

"$PY" "$ROOT/bench/report.py" --csv "$RESULTS/$STAMP.csv" "$RAW"
echo
echo "CSV: ${RESULTS#"$ROOT"/}/$STAMP.csv   raw fio JSON: ${RAW#"$ROOT"/}/"
echo "Markdown for docs/performance.md: $PY bench/report.py --markdown ${RAW#"$ROOT"/}"
if [[ "$KEEP" == 1 ]]; then
  echo "Disks and store kept in $WORKDIR"
fi
