#!/usr/bin/env bash
# Two builds of the plugin side by side, for a change's before and after:
# fio random 4 KiB writes over a Unix socket, at queue depth 1 with a flush
# after every write (every write pays a journal sync) and at queue depth 32
# without flushes; each on a fresh 1 GiB store, the builds alternating,
# AB_ROUNDS rounds (the order flips every round).
#
# Usage: bench/ab.sh OLD.so NEW.so
#   e.g. git worktree add /tmp/old BASE && cmake -S /tmp/old -B /tmp/old/build &&
#        cmake --build /tmp/old/build --target nbdkit-rewind-plugin &&
#        bench/ab.sh /tmp/old/build/nbdplugin/nbdkit-rewind-plugin.so \
#                    build/nbdplugin/nbdkit-rewind-plugin.so
# Environment: AB_ROUNDS=2, AB_RUNTIME=15 (seconds), AB_DIR=/tmp (stores).
set -euo pipefail
export PATH=/usr/bin:$PATH
[ $# -eq 2 ] || { echo "usage: $0 OLD.so NEW.so" >&2; exit 2; }
OLD=$1 NEW=$2
ROUNDS=${AB_ROUNDS:-2} RUNTIME=${AB_RUNTIME:-15} BASE=${AB_DIR:-/tmp}

run() {  # label plugin fio-args...
  local label=$1 so=$2; shift 2
  local d; d=$(mktemp -d "$BASE/rwd-ab.XXXXXX")
  nbdkit -f -U "$d/sock" "$so" dir="$d/store" size=1G &
  local pid=$!
  for _ in $(seq 100); do [ -S "$d/sock" ] && break; sleep 0.1; done
  fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$d/sock" --rw=randwrite --bs=4k \
      --size=1G --time_based --runtime="$RUNTIME" --ramp_time=2 "$@" --output-format=json \
      > "$d/out.json"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$d/out.json" "$label" "$*" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
w = json.loads(t[t.index('{'):])['jobs'][0]['write']
p = w['clat_ns']['percentile']
print(f"| {sys.argv[2]} | {sys.argv[3]} | {w['iops']:.0f} | {p['50.000000']/1000:.1f} | {p['99.000000']/1000:.1f} |")
PY
  rm -rf "$d"
}

echo "| build | fio | IOPS | clat p50 (µs) | clat p99 (µs) |"
echo "|---|---|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
  for args in "--iodepth=1 --fsync=1" "--iodepth=32"; do
    for b in $order; do
      if [ "$b" = old ]; then so=$OLD; else so=$NEW; fi
      # shellcheck disable=SC2086
      run "$b" "$so" $args
    done
  done
done
