#!/usr/bin/env bash
# The test suite under sanitizers (docs/reliability.md, "Sanitizers").
#
#   scripts/sanitize.sh asan [CTEST ARGS...]   ASan+UBSan build in build-asan/, then ctest
#   scripts/sanitize.sh tsan [CTEST ARGS...]   TSan build in build-tsan/, then ctest
#   scripts/sanitize.sh asan --build-only      configure and build only
#
# CTEST ARGS select tests, e.g. -R '^(journal|control)/' (default: all).
# SANITIZE_TARGETS="journal_tests control_tests" builds only those targets
# (with such a subset, select their tests with -R).
#
# nbdkit is not instrumented and loads the plugin with dlopen, but a
# sanitizer runtime must be loaded before everything else.  The tests find
# nbdkit through PATH, so BUILD/sanitizer-bin/nbdkit, first in PATH, runs the
# real nbdkit with LD_PRELOAD of GCC's runtime (libasan.so or libtsan.so,
# the one the plugin is linked with) and of sanitize-keep-locales.c, and
# sends the reports of that process to BUILD/sanitizer-logs/nbdkit.PID.
# A preload already set (fiu-run's, in the e2e I/O error tests) is kept,
# after those two.  The test binaries and the rewind CLI are instrumented
# themselves and report on stderr, failing their test.
# After ctest, any report in sanitizer-logs fails the run too.
#
# RocksDB from Debian is not instrumented: scripts/tsan.supp says what is
# suppressed for it, and why.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

kind=${1:-}
shift || true
case "$kind" in
  asan) sanitize=address,undefined runtime=libasan.so extra_flags= timeout_scale=3 ;;
  # -Wno-error=tsan: history.cc's snapshot reads pair an acquire fence with
  # the writers' release, which TSan cannot model (GCC warns -Wtsan); see
  # docs/reliability.md, "Sanitizers".
  tsan) sanitize=thread runtime=libtsan.so extra_flags=-Wno-error=tsan timeout_scale=6 ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
build="$root/build-$kind"

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
# -O1: the sanitizers' usual level, and a faster build than -O2.  Tests run
# several times slower (the power-cut sweep over every I/O operation took
# 415 s under ASan and ran past its suite's 600 s under TSan), so every
# ctest timeout is scaled (REWIND_TEST_TIMEOUT_SCALE, tests/CMakeLists.txt).
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DREWIND_SANITIZE="$sanitize" \
  -DREWIND_TEST_TIMEOUT_SCALE="$timeout_scale" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g${extra_flags:+ $extra_flags}" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
  "${launcher[@]}" >/dev/null
targets=()
for t in ${SANITIZE_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build" -j"${SANITIZE_JOBS:-$(nproc 2>/dev/null || echo 2)}" "${targets[@]}"
[[ "${1:-}" == "--build-only" ]] && exit 0

# The runtime the plugin was linked with: GCC's (the project's compiler).
lib=$(${CXX:-g++} -print-file-name="$runtime")
[[ -f "$lib" ]] || { echo "sanitize: $runtime not found ($lib)" >&2; exit 1; }
real_nbdkit=$(command -v nbdkit) || { echo "sanitize: nbdkit not found" >&2; exit 1; }
logs="$build/sanitizer-logs"
rm -rf "$logs" && mkdir -p "$logs" "$build/sanitizer-bin"
# scripts/sanitize-keep-locales.c: without it nbdkit hangs in exit() under
# the preloaded runtime (glibc's locale lock, p11-kit's destructor).
shim="$build/sanitizer-bin/keep-locales.so"
${CC:-cc} -shared -fPIC -O2 -o "$shim" "$root/scripts/sanitize-keep-locales.c"

# UBSan: a finding fails (halt_on_error); ASan's leak check stays on for
# our own binaries.  nbdkit: leaks of nbdkit itself are not ours.
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0"
export TSAN_OPTIONS="suppressions=$root/scripts/tsan.supp:second_deadlock_stack=1:halt_on_error=0:exitcode=66"
case "$kind" in
  asan) nbdkit_opts="ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0:log_path=$logs/nbdkit" ;;
  tsan) nbdkit_opts="TSAN_OPTIONS=$TSAN_OPTIONS:log_path=$logs/nbdkit" ;;
esac
cat >"$build/sanitizer-bin/nbdkit" <<WRAP
#!/bin/sh
# Written by scripts/sanitize.sh: nbdkit with the sanitizer runtime first.
exec env LD_PRELOAD="$lib $shim\${LD_PRELOAD:+ \$LD_PRELOAD}" "$nbdkit_opts" "UBSAN_OPTIONS=$UBSAN_OPTIONS:log_path=$logs/nbdkit" "$real_nbdkit" "\$@"
WRAP
chmod +x "$build/sanitizer-bin/nbdkit"
export PATH="$build/sanitizer-bin:$PATH"

rc=0
ctest --test-dir "$build" --output-on-failure -j"${CTEST_JOBS:-2}" -LE fuzz "$@" || rc=$?
reports=$(find "$logs" -type f | sort)
if [[ -n "$reports" ]]; then
  echo "sanitize: reports from nbdkit:" >&2
  for f in $reports; do echo "== $f" >&2; head -n 80 "$f" >&2; done
  rc=1
fi
echo "sanitize: $kind: ctest exit $rc, $(echo -n "$reports" | grep -c . || true) nbdkit report file(s)"
exit $rc
