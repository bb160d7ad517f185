#!/usr/bin/env bash
# The libFuzzer targets of fuzz/ (docs/reliability.md, "Fuzzing").
#
#   scripts/fuzz.sh build                configure and build build-fuzz/ (clang)
#   scripts/fuzz.sh run TARGET SECONDS   build when needed, fuzz TARGET for SECONDS
#   scripts/fuzz.sh long [SECONDS]       every target in turn (default 600 s each)
#
# TARGET: control_request, point or records.  A run starts from the seed
# corpus fuzz/corpus/TARGET (checked in, never written) and a working corpus
# build-fuzz/corpus/TARGET that keeps what earlier runs found.  A finding is
# written to build-fuzz/artifacts/TARGET/ and fails the run; minimize it
# (TARGET_fuzz -minimize_crash=1 FILE), fix the bug and check the input in
# under fuzz/corpus/TARGET/ as a regression input.  Each run ends with one
# line "fuzz: TARGET seconds=... execs=... cov=... ft=... corpus=...
# crashes=..." for the record.
#
# FUZZ_BUILD_DIR overrides build-fuzz/ (relative to the repository root).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FUZZ_BUILD_DIR:-build-fuzz}
[[ "$build" == /* ]] || build="$root/$build"
targets=(control_request point records)

die() { echo "fuzz: $*" >&2; exit 1; }

build_fuzzers() {
  command -v clang++ >/dev/null || die "clang++ not found (Debian packages clang and libclang-rt-14-dev)"
  mkdir -p "$build"
  # Two short runs may start at once under ctest -j: one builds, the other
  # waits for it.
  exec 9>"$build/.build.lock"
  flock 9
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    local launcher=()
    if command -v ccache >/dev/null; then
      launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
    fi
    cmake -S "$root" -B "$build" -DREWIND_FUZZ=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      "${launcher[@]}" >/dev/null
  fi
  cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null ||
    cmake --build "$build" -j1   # again, to show the error on its own
  flock -u 9
}

run_target() {
  local t=$1 seconds=$2
  local bin="$build/fuzz/${t}_fuzz"
  [[ -x "$bin" ]] || die "no fuzz target $t ($bin)"
  local work="$build/corpus/$t" artifacts="$build/artifacts/$t" log="$build/logs/$t.log"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  touch "$log.start"
  # control_request: up to the longest request line and past it (too-long);
  # its corpus holds a regression input of that size.
  local max_len=8192
  [[ "$t" == control_request ]] && max_len=65600
  local dict=()
  [[ -f "$root/fuzz/$t.dict" ]] && dict=(-dict="$root/fuzz/$t.dict")
  local rc=0
  # The sanitizers abort on their first finding, so that libFuzzer keeps the
  # input; leaks are findings too.
  ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" \
      "$work" "$root/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  local execs cov ft corpus crashes
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(find "$work" -type f | wc -l)
  crashes=$(find "$artifacts" -type f -newer "$log.start" 2>/dev/null | wc -l)
  echo "fuzz: $t seconds=$seconds execs=${execs:-?} cov=${cov:-?} ft=${ft:-?} corpus=$corpus crashes=$crashes rc=$rc"
  if ((rc != 0)); then
    echo "fuzz: $t failed; the last lines of $log:" >&2
    tail -n 60 "$log" >&2
    return 1
  fi
}

case "${1:-}" in
  build)
    build_fuzzers
    ;;
  run)
    (($# == 3)) || die "usage: $0 run TARGET SECONDS"
    build_fuzzers
    run_target "$2" "$3"
    ;;
  long)
    seconds=${2:-600}
    build_fuzzers
    failed=0
    for t in "${targets[@]}"; do
      run_target "$t" "$seconds" || failed=1
    done
    exit $failed
    ;;
  *)
    sed -n '2,17p' "$0" >&2
    exit 2
    ;;
esac
