#!/usr/bin/env bash
# How rewind's costs grow (issue 5, item 2): checkpoint latency against disk
# size, restore time against data changed and history length, time-travel
# reads, recovery time after kill -9, write amplification and journal space.
# Each section starts nbdkit with the plugin on fresh stores behind a Unix
# socket and drives it with fio's nbd engine; bench/costs.py does the work.
#
#   checkpoint     on each of COSTS_CP_SIZES (sparse; the first COSTS_CP_REGION
#                  filled, and the load confined to it, so that the disks
#                  differ only by their size): COSTS_CP_COUNT checkpoints over
#                  DIR/control.sock (one persistent connection, round trip timed
#                  in Python: what a client sees), COSTS_CP_CLI `rewind
#                  checkpoint` wall times and COSTS_CP_FLUSHES NBD flushes,
#                  idle and under each of COSTS_CP_LOADS (4 KiB random writes
#                  at QD32: "max" unthrottled, or a fio rate in IOPS)
#   restore        offline `rewind restore --json` of a filled disk to points
#                  with COSTS_CHANGED percent of it rewritten since (4 KiB
#                  random writes), against `nbdcopy` of the live disk; then, for
#                  each of COSTS_RECORDS, a store with that many small random
#                  writes (COSTS_HISTORY_BS into the first COSTS_HISTORY_REGION)
#                  after a checkpoint, restored to before, half-way and after
#                  them (the half-way point replays the records before it)
#   timetravel     4 KiB random reads at QD32 of @changed-P against the live
#                  export (the restore section's store)
#   recovery       COSTS_UNFLUSHED_MIB MiB written without flush, kill -9, then
#                  the time from nbdkit's start until an NBD client gets through
#                  NBD_OPT_GO and until the control socket answers; and how many
#                  of the (acknowledged, unflushed) 1 MiB writes survived
#   amplification  bytes written per guest byte: nbdkit's /proc/PID/io
#                  write_bytes (all its threads, RocksDB's included) and the
#                  bench dir's block device (machine-wide), for rewind and
#                  nbdkit's file plugin, 4 KiB random and 1 MiB sequential,
#                  without and (rewind) with a checkpoint just before
#   space          (redo_bytes + undo_bytes) growth per guest byte, random and
#                  50%-compressible data, with and without a checkpoint before
#
# Usage: bench/costs.sh        (build first: make build, or BUILD_DIR=...)
#        /usr/bin/python3 bench/costs.py report bench/results/costs-STAMP.csv
# Environment (defaults in brackets; sizes as nbdkit takes them):
#   COSTS_SECTIONS      [checkpoint restore timetravel recovery amplification space]
#   COSTS_CP_SIZES      [1G 64G]     COSTS_CP_REGION [1G]   COSTS_CP_LOADS [max 20000]
#   COSTS_CP_COUNT      [200]   COSTS_CP_CLI [10]   COSTS_CP_FLUSHES [20]
#   COSTS_CP_GAP_MS     [10]    pause after each;  COSTS_CP_SECONDS [30]: at most
#                                    this long for each series (n in the table)
#   COSTS_RESTORE_SIZE  [1G]         COSTS_CHANGED [1 10 50] (percent)
#   COSTS_RECORDS       [1000000 10000000]   journal records per history
#   COSTS_HISTORY_SIZE  [1G]   COSTS_HISTORY_REGION [64M]   COSTS_HISTORY_BS [512]
#   COSTS_HISTORY_GEN   [fio]        or store_bench (in-process, plugin stopped)
#   COSTS_RESTORE_TIMEOUT [300]      seconds; a longer restore is interrupted
#                                    and reported as ">N"
#   COSTS_RUNTIME       [10]         seconds per time-travel read run, after
#   COSTS_RAMP          [2]          seconds of ramp (also the load's, before
#                                    the checkpoints)
#   COSTS_UNFLUSHED_MIB [0 64 256 1024]   COSTS_RECOVERY_SIZE [2G]
#   COSTS_AMP_SIZE      [1G]   COSTS_AMP_BYTES [512M]   COSTS_AMP_TARGETS [file rewind]
#   COSTS_SPACE_SIZE    [1G]   COSTS_SPACE_BYTES [256M]
#   COSTS_DIR           [$BUILD_DIR/bench]   where the stores live (a fresh
#                                    costs-* folder, deleted afterwards)
#   COSTS_KEEP          [0]          1 keeps the stores
#   COSTS_DROP_CACHES   [1]          drop the page cache before reads/restores
#   BUILD_DIR           [build]
#
# Results: tables on stdout, bench/results/costs-<UTC stamp>.csv (columns
# section,case,metric,value,unit; the machine's details are rows of section
# "machine"), and fio's JSON and nbdkit's logs in bench/results/costs-<stamp>/.
# The defaults take about 12-15 minutes on 2 vCPUs; the 10M-record history is
# about half of it (producing it ~2 min, its half-way restore several minutes).
# The stores need about 10 GB free at the peak (the 10M-record history).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=${BUILD_DIR:-build}
PY=/usr/bin/python3

die() { printf 'bench/costs: %s\n' "$*" >&2; exit 1; }
for tool in nbdkit fio nbdinfo nbdcopy "$PY"; do
  command -v "$tool" >/dev/null || die "$tool is missing; run 'make deps'"
done
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd engine"
[[ -f "$BUILD/nbdplugin/nbdkit-rewind-plugin.so" && -x "$BUILD/restore/rewind" ]] ||
  die "$BUILD/nbdplugin/nbdkit-rewind-plugin.so or $BUILD/restore/rewind is missing: make build (or set BUILD_DIR)"
if [[ "${COSTS_HISTORY_GEN:-fio}" == store_bench ]]; then
  [[ -x "$BUILD/store_bench" ]] || die "$BUILD/store_bench is missing (COSTS_HISTORY_GEN=store_bench)"
fi
export PATH=/usr/bin:$PATH BUILD_DIR=$BUILD
exec "$PY" bench/costs.py run
