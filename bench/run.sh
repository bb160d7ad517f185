#!/usr/bin/env bash
# The NBD benchmark: rewind side by side with nbdkit's own `file` plugin (the
# ceiling), with the copy-on-write alternatives a user could pick instead
# (nbdkit's cow filter at its default 64 KiB and at 4 KiB blocks, a qcow2
# image behind qemu-nbd), in one run, on the same machine and filesystem, all
# over a Unix socket with fio's nbd engine.
#
# Targets (BENCH_TARGETS):
#   file     nbdkit file file=DISK                       (the ceiling)
#   rewind   nbdkit BUILD/nbdplugin/nbdkit-rewind-plugin.so dir=STORE size=SIZE
#   cow      nbdkit --filter=cow file file=BASE          (cow-block-size 64 KiB)
#   cow4k    nbdkit --filter=cow file file=BASE cow-block-size=4096
#   qcow2    qemu-nbd -f qcow2 $BENCH_QEMU_NBD_OPTS --shared=8 --persistent DISK.qcow2
#            on `qemu-img create -f qcow2 DISK.qcow2 SIZE` (64 KiB clusters)
# nbdkit runs with its defaults (16 threads); qemu-nbd with writeback caching
# and thread-pool AIO, which are qemu-nbd's own defaults, spelled out.
#
# Workloads (BENCH_WORKLOADS), all time based, 4 KiB blocks unless said:
#   randwrite-qd1  randwrite-qd32   random writes at queue depth 1 and 32
#   randread-qd1   randread-qd32    random reads
#   randrw-qd1     randrw-qd32      random, 70% reads / 30% writes
#   seqwrite                        1 MiB sequential writes, queue depth 8
#   flush32                         random writes with a flush after every 32,
#                                   queue depth 1 (see below why not deeper)
#   multiconn                       random writes from 4 fio jobs, each its own
#                                   NBD connection, queue depth 8 each
# (`randwrite` and `randread` are accepted for the QD32 ones.)
# Only flush32 sends flushes while measuring; no workload sends FUA.
#
# Every measurement gets a fresh server on a fresh disk, which is first filled
# end to end with 1 MiB sequential writes and one flush (so reads hit written
# data and every target starts fully allocated), then `sync` and, as root, the
# page cache is dropped.  Nothing one measurement leaves behind (a store that
# grew, background compaction, dirty pages) reaches the next.
#
# Order: BENCH_REPEAT rounds; in each round, workload by workload, every
# target runs once, so the targets of one workload are measured minutes
# apart.  The order of the targets rotates by one for every workload and
# every round, so no target always goes first or last.  Each figure is the
# median over the rounds, and each ratio the median over the rounds of
# (target / file plugin in the same round and workload).
#
# Usage: bench/run.sh            (or `make bench`)
# Environment:
#   BENCH_RUNTIME=20        seconds per measured workload
#   BENCH_RAMP=2            seconds of warm-up before each measurement
#   BENCH_SIZE=1G           disk size (nbdkit/fio/qemu-img syntax: 512M, 1G, ...)
#   BENCH_REPEAT=3          rounds (medians are reported)
#   BENCH_TARGETS="file rewind cow cow4k qcow2"
#   BENCH_WORKLOADS="randwrite-qd1 randwrite-qd32 randread-qd1 randread-qd32
#                    randrw-qd1 randrw-qd32 seqwrite flush32 multiconn"
#   BENCH_QEMU_NBD_OPTS="--cache=writeback --aio=threads"
#   BENCH_DIR=$BUILD_DIR/bench    where the disks live (in a fresh run-* folder,
#                                 deleted afterwards)
#   BENCH_DROP_CACHES=1     drop the page cache before each workload (root only)
#   BENCH_KEEP=0            1 keeps every disk and store (one per measurement:
#                           needs a lot of space)
#   BENCH_PLOT=1            0: no PNG (and matplotlib is not needed)
#   BENCH_PLOT_OUT=         also copy the PNG here (e.g. docs/perf-ratios.png;
#                           relative to the repository)
#   BUILD_DIR=build         where the plugin was built
#
# Results: a table on stdout; bench/results/<UTC date>.csv (one row per
# workload and target: medians and ratios), bench/results/<UTC date>.png (the
# ratios to the file plugin), and in bench/results/<UTC date>/ the raw fio
# JSON of every fill and measurement, runs.csv (every measurement, in the
# order run), nbdkit/qemu-nbd logs, machine.txt and targets.txt.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BUILD=${BUILD_DIR:-build}
PLUGIN=$ROOT/$BUILD/nbdplugin/nbdkit-rewind-plugin.so
REWIND=$ROOT/$BUILD/restore/rewind
RUNTIME=${BENCH_RUNTIME:-20}
RAMP=${BENCH_RAMP:-2}
SIZE=${BENCH_SIZE:-1G}
REPEAT=${BENCH_REPEAT:-3}
TARGETS=${BENCH_TARGETS:-file rewind cow cow4k qcow2}
WORKLOADS=${BENCH_WORKLOADS:-randwrite-qd1 randwrite-qd32 randread-qd1 randread-qd32 randrw-qd1 randrw-qd32 seqwrite flush32 multiconn}
QEMU_NBD_OPTS=${BENCH_QEMU_NBD_OPTS:---cache=writeback --aio=threads}
BENCHDIR=${BENCH_DIR:-$ROOT/$BUILD/bench}
DROP_CACHES=${BENCH_DROP_CACHES:-1}
KEEP=${BENCH_KEEP:-0}
PLOT=${BENCH_PLOT:-1}
PLOT_OUT=${BENCH_PLOT_OUT:-}
MC_JOBS=4       # multiconn: fio jobs (one NBD connection each) ...
MC_DEPTH=8      # ... and the queue depth of each
PY=/usr/bin/python3     # Debian's python3 (and python3-matplotlib for the plot)

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
note() { printf '%s\n' "$*" >&2; }
need() {  # COMMAND DEBIAN-PACKAGE [WHAT-FOR]
  command -v "$1" >/dev/null ||
    die "$1 is not installed${3:+ (needed for $3)}: apt-get install $2, or run 'make deps'"
}

# --- what to run, and is everything there ------------------------------------
[[ "$RUNTIME" =~ ^[0-9]+$ && "$RAMP" =~ ^[0-9]+$ ]] || die "BENCH_RUNTIME and BENCH_RAMP are seconds"
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT is a number of rounds (1 or more)"

need nbdkit nbdkit
need fio fio
need nbdinfo libnbd-bin
[[ -x "$PY" ]] || die "$PY is missing: apt-get install python3"
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd engine (Debian's fio package has it)"

targets=()
for t in $TARGETS; do
  case $t in
    file) ;;
    rewind)
      [[ -f "$PLUGIN" ]] ||
        die "$BUILD/nbdplugin/nbdkit-rewind-plugin.so is missing: run 'make build' (or set BUILD_DIR)" ;;
    cow | cow4k)
      nbdkit --filter=cow file --dump-plugin >/dev/null 2>&1 ||
        die "nbdkit's cow filter does not load (target $t): it comes with the nbdkit package" ;;
    qcow2)
      need qemu-nbd qemu-utils "target qcow2"
      need qemu-img qemu-utils "target qcow2" ;;
    *) die "unknown target '$t' in BENCH_TARGETS (file, rewind, cow, cow4k, qcow2)" ;;
  esac
  [[ " ${targets[*]} " == *" $t "* ]] || targets+=("$t")
done
((${#targets[@]} > 0)) || die "BENCH_TARGETS is empty"
[[ " ${targets[*]} " == *" file "* ]] ||
  note "bench: warning: 'file' is not in BENCH_TARGETS, so there will be no ratios"

workloads=()
for w in $WORKLOADS; do
  case $w in
    randwrite) w=randwrite-qd32 ;;
    randread) w=randread-qd32 ;;
    randwrite-qd1 | randwrite-qd32 | randread-qd1 | randread-qd32 | randrw-qd1 | randrw-qd32 | \
      seqwrite | flush32 | multiconn) ;;
    *) die "unknown workload '$w' in BENCH_WORKLOADS (randwrite-qd1 randwrite-qd32 randread-qd1
       randread-qd32 randrw-qd1 randrw-qd32 seqwrite flush32 multiconn)" ;;
  esac
  [[ " ${workloads[*]} " == *" $w "* ]] || workloads+=("$w")
done
((${#workloads[@]} > 0)) || die "BENCH_WORKLOADS is empty"

if [[ "$PLOT" == 1 ]]; then
  "$PY" -c 'import matplotlib' 2>/dev/null ||
    die "matplotlib is missing for the plot: apt-get install python3-matplotlib (or BENCH_PLOT=0)"
fi

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
RESULTS=$ROOT/bench/results
RAW=$RESULTS/$STAMP
mkdir -p "$RAW"
mkdir -p "$BENCHDIR"
WORKDIR=$(mktemp -d "$BENCHDIR/run-$STAMP.XXXX")   # fresh files for every run
SOCKDIR=$(mktemp -d /tmp/rewind-bench.XXXXXX)   # short path: sun_path is 108 bytes
SOCK=$SOCKDIR/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
SERVER_PID=

cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$SOCKDIR"
  [[ "$KEEP" == 1 ]] || rm -rf "$WORKDIR"
  if ((rc != 0)); then
    note "bench: stopped; what was measured so far is in ${RAW#"$ROOT"/}/" \
      "(summarise it with: $PY bench/report.py ${RAW#"$ROOT"/})"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nunits=$((REPEAT * ${#workloads[@]} * ${#targets[@]}))

# --- the machine -------------------------------------------------------------
{
  echo "date:        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "cpus:        $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "memory:      $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel:      $(uname -sr)"
  echo "load:        $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) at start"
  echo "filesystem:  $(df --output=fstype "$WORKDIR" | tail -1) ($(df --output=source "$WORKDIR" | tail -1)), bench dir $BENCHDIR"
  echo "nbdkit:      $(nbdkit --version | head -1), default threads (16), Unix socket"
  if [[ " ${targets[*]} " == *" qcow2 "* ]]; then
    echo "qemu-nbd:    $(qemu-nbd --version | head -1 | sed 's/^qemu-nbd //'), $QEMU_NBD_OPTS"
  fi
  echo "fio:         $(fio --version), ioengine=nbd"
  echo "git:         $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "disk:        $SIZE; $RUNTIME s per workload after $RAMP s ramp; fresh disk and fill for each"
  echo "targets:     ${targets[*]}"
  echo "workloads:   ${workloads[*]}"
  echo "rounds:      $REPEAT (target order rotated per workload and round; medians reported)"
  if [[ "$DROP_CACHES" == 1 && $(id -u) -eq 0 && -w /proc/sys/vm/drop_caches ]]; then
    echo "page cache:  dropped before each workload"
  else
    echo "page cache:  not dropped (needs root and BENCH_DROP_CACHES=1)"
  fi
} | tee "$RAW/machine.txt"
echo

# --- helpers -----------------------------------------------------------------
start_server() {  # TARGET UNITDIR LOG
  local target=$1 dir=$2 log=$3
  local -a cmd
  rm -f "$SOCK"
  case $target in
    file)
      truncate -s "$SIZE" "$dir/disk.img"
      cmd=(nbdkit -f --exit-with-parent -U "$SOCK" file file="$dir/disk.img") ;;
    rewind)
      cmd=(nbdkit -f --exit-with-parent -U "$SOCK" "$PLUGIN" dir="$dir/store" size="$SIZE") ;;
    cow)
      truncate -s "$SIZE" "$dir/base.img"
      cmd=(nbdkit -f --exit-with-parent -U "$SOCK" --filter=cow file file="$dir/base.img") ;;
    cow4k)
      truncate -s "$SIZE" "$dir/base.img"
      cmd=(nbdkit -f --exit-with-parent -U "$SOCK" --filter=cow file file="$dir/base.img"
        cow-block-size=4096) ;;
    qcow2)
      qemu-img create -q -f qcow2 "$dir/disk.qcow2" "$SIZE" >>"$log" 2>&1 ||
        { cat "$log" >&2; die "qemu-img create failed"; }
      # shellcheck disable=SC2206  # the options are words to split
      cmd=(qemu-nbd -k "$SOCK" -f qcow2 $QEMU_NBD_OPTS --shared=8 --persistent "$dir/disk.qcow2") ;;
  esac
  # The cow filter keeps its overlay in $TMPDIR: put it beside the others.
  TMPDIR=$dir "${cmd[@]}" 2>>"$log" &
  SERVER_PID=$!
  local up=0
  for _ in $(seq 1 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; die "the $target server exited at start"; }
    [[ -S "$SOCK" ]] && nbdinfo --size "$URI" >/dev/null 2>&1 && { up=1; break; }
    sleep 0.1
  done
  if ((up)); then
    if ! grep -qs "^$target:" "$RAW/targets.txt"; then
      local mc=no
      nbdinfo --can multi-conn "$URI" 2>/dev/null && mc=yes
      printf '%s: %s  (multi-conn advertised: %s)\n' "$target" "${cmd[*]}" "$mc" >>"$RAW/targets.txt"
    fi
    return 0
  fi
  die "the $target server did not answer on $SOCK within 30 s (log: ${log#"$ROOT"/})"
}

stop_server() {  # TARGET LOG
  local rc=0
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=
  if ((rc != 0)); then
    cat "$2" >&2
    die "the $1 server exited with status $rc"
  fi
}

settle() {  # after the fill: write everything back, then drop the page cache
  sync
  [[ "$DROP_CACHES" == 1 && $(id -u) -eq 0 ]] || return 0
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}

run_fio() {  # NAME OUTPUT fio-options...
  local name=$1 out=$2
  shift 2
  if ! fio --name="$name" --ioengine=nbd --uri="$URI" --size="$SIZE" \
      --lat_percentiles=1 --output-format=json --output="$out" "$@" >/dev/null; then
    [[ -s "$out" ]] && cat "$out" >&2
    die "fio $name failed (${out#"$ROOT"/})"
  fi
}

# fio's fsync=N issues a flush after every N writes, but it marks the flush
# done only when it completes: at a queue depth above 1 every slot that frees
# up meanwhile gets another flush (measured: one flush per 2 writes at QD32
# instead of one per 32).  At QD1 it is exactly one flush per 32 writes.
workload_opts() {  # WORKLOAD
  local timed=(--time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --numjobs=1)
  # unified_rw_reporting=both: fio adds latency percentiles of reads and writes together
  local mixed=(--rw=randrw --rwmixread=70 --unified_rw_reporting=both --bs=4k)
  case $1 in
    randwrite-qd1) echo --rw=randwrite --bs=4k --iodepth=1 "${timed[@]}" ;;
    randwrite-qd32) echo --rw=randwrite --bs=4k --iodepth=32 "${timed[@]}" ;;
    randread-qd1) echo --rw=randread --bs=4k --iodepth=1 "${timed[@]}" ;;
    randread-qd32) echo --rw=randread --bs=4k --iodepth=32 "${timed[@]}" ;;
    randrw-qd1) echo "${mixed[@]}" --iodepth=1 "${timed[@]}" ;;
    randrw-qd32) echo "${mixed[@]}" --iodepth=32 "${timed[@]}" ;;
    seqwrite) echo --rw=write --bs=1M --iodepth=8 "${timed[@]}" ;;
    flush32) echo --rw=randwrite --bs=4k --iodepth=1 --fsync=32 "${timed[@]}" ;;
    multiconn)
      echo --rw=randwrite --bs=4k --iodepth="$MC_DEPTH" --time_based --runtime="$RUNTIME" \
        --ramp_time="$RAMP" --numjobs="$MC_JOBS" --group_reporting ;;
  esac
}

# --- the runs ----------------------------------------------------------------
printf 'round\tposition\tworkload\ttarget\tstarted\tload1\tfill\tresult\n' >"$RAW/schedule.tsv"
unit=0
t0=$(date +%s)
for ((round = 1; round <= REPEAT; round++)); do
  for ((wi = 0; wi < ${#workloads[@]}; wi++)); do
    w=${workloads[wi]}
    n=${#targets[@]}
    shift_by=$(((round - 1 + wi) % n))
    for ((k = 0; k < n; k++)); do
      t=${targets[(k + shift_by) % n]}
      unit=$((unit + 1))
      name=r$round-$w-$t
      dir=$WORKDIR/$name
      log=$RAW/$name-server.log
      mkdir -p "$dir"
      eta=
      if ((unit > 1)); then
        elapsed=$(($(date +%s) - t0))
        eta=", about $(((elapsed * (nunits - unit + 1) / (unit - 1) + 59) / 60)) min left"
      fi
      note "[$unit/$nunits$eta] round $round, $w, $t"
      started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
      start_server "$t" "$dir" "$log"
      run_fio fill "$RAW/$name-fill.json" --rw=write --bs=1M --iodepth=8 --end_fsync=1
      settle
      load1=$(cut -d' ' -f1 /proc/loadavg)
      # shellcheck disable=SC2046  # workload_opts prints words to split
      run_fio "$w" "$RAW/$name.json" $(workload_opts "$w")
      if [[ "$t" == rewind && -x "$REWIND" ]]; then
        timeout 60 "$REWIND" info --json "$dir/store" >"$RAW/$name-info.json" 2>/dev/null ||
          rm -f "$RAW/$name-info.json"
      fi
      stop_server "$t" "$log"
      [[ -s "$log" ]] || rm -f "$log"
      [[ "$KEEP" == 1 ]] || rm -rf "$dir"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$k" "$w" "$t" "$started" "$load1" \
        "$name-fill.json" "$name.json" >>"$RAW/schedule.tsv"
    done
  done
done
elapsed=$(($(date +%s) - t0))
note "all $nunits measurements done in $((elapsed / 60)) min $((elapsed % 60)) s"
echo

"$PY" "$ROOT/bench/report.py" --csv "$RESULTS/$STAMP.csv" --runs-csv "$RAW/runs.csv" "$RAW"
echo
echo "CSV: ${RESULTS#"$ROOT"/}/$STAMP.csv   raw fio JSON: ${RAW#"$ROOT"/}/"
if [[ "$PLOT" == 1 ]]; then
  plot_args=(--machine "$RAW/machine.txt" --out "$RESULTS/$STAMP.png")
  if [[ -n "$PLOT_OUT" ]]; then
    [[ "$PLOT_OUT" == /* ]] || PLOT_OUT=$ROOT/$PLOT_OUT
    plot_args+=(--out "$PLOT_OUT")
  fi
  "$PY" "$ROOT/bench/plot.py" "${plot_args[@]}" "$RESULTS/$STAMP.csv"
fi
echo "Markdown for docs/performance.md: $PY bench/report.py --markdown ${RAW#"$ROOT"/}"
if [[ "$KEEP" == 1 ]]; then
  echo "Disks and stores kept in $WORKDIR"
fi
