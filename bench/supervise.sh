#!/usr/bin/env bash
# rewind supervise: time from a fault to the guest running again.
#
# Runs the supervisor's real-guest tests (vmstate_tests "[supervise-guest]",
# tests/vmstate/supervise_guest_test.cc: the project's test guest under QEMU
# with TCG, two rewind stores) BENCH_SV_ROUNDS times.  Each test prints
# "fault to running: X s (what)", X being the supervisor's own
# since_fault_s: from the moment it saw the fault to the guest running
# again, through the forensic checkpoint, QEMU's restart and the restore
# (owned QEMU), or the disk rollback and reset (attached).  Prints, per kind
# of fault, the rounds' figures with their min, median and max.
#
# Usage: bench/supervise.sh    Environment: BENCH_SV_ROUNDS=3, BUILD_DIR=build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=${BUILD_DIR:-build}
ROUNDS=${BENCH_SV_ROUNDS:-3}
TESTS=$BUILD/tests/vmstate/vmstate_tests
export PATH=/usr/bin:$PATH
[[ -x "$TESTS" ]] || { echo "bench/supervise: build first: make build" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for ((r = 1; r <= ROUNDS; r++)); do
  printf 'round %d of %d ...\n' "$r" "$ROUNDS" >&2
  if ! "$TESTS" "[supervise-guest]" >"$out.log" 2>&1; then
    cat "$out.log" >&2
    echo "bench/supervise: the tests failed in round $r" >&2
    exit 1
  fi
  grep '^fault to running:' "$out.log" >>"$out" || true
  rm -f "$out.log"
done
printf '\n%s, %s, load %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  "$(nproc) cores, $(qemu-system-x86_64 --version | head -1)" "$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"fault to running: ([0-9.]+) s \((.*)\)", line.strip())
    if m:
        rows.setdefault(m.group(2), []).append(float(m.group(1)))
print(f"{'fault':<48} {'n':>2} {'min s':>7} {'median s':>9} {'max s':>7}  all")
for what, v in rows.items():
    print(f"{what:<48} {len(v):>2} {min(v):>7.2f} {statistics.median(v):>9.2f} {max(v):>7.2f}  "
          + " ".join(f"{x:.2f}" for x in v))
PY
