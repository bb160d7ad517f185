#!/usr/bin/env bash
# The rewind demo: serve a 256 MiB disk from the store ./demo-store with
# nbdkit and the rewind plugin, write to it over NBD, take checkpoints through
# the running plugin (the online path: rewind talks to DIR/control.sock), show
# the timeline, stop nbdkit and look at the store again offline.
#
# Run it with `make demo` (which installs what is missing and builds first),
# or as scripts/demo.sh once build/ holds the plugin and the CLI.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BUILD=${BUILD_DIR:-build}          # the Makefile passes its BUILD_DIR
PLUGIN=$ROOT/$BUILD/nbdplugin/nbdkit-rewind-plugin.so
REWIND=$ROOT/$BUILD/restore/rewind
STORE=./demo-store
SIZE=256M

# nbdsh runs `python3 -m nbd`: the libnbd bindings are Debian's, so the python3
# must be /usr/bin's, not one that a version manager put first on PATH.
export PATH=/usr/bin:$PATH

if [[ -t 1 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
run() { printf '$ %s\n' "$*" | sed "s|$ROOT/||g"; "$@"; }

for f in "$PLUGIN" "$REWIND"; do
  [[ -x "$f" ]] || die "${f#"$ROOT"/} is missing; run 'make build' (or 'make demo') first"
done
for tool in nbdkit nbdsh; do
  command -v "$tool" >/dev/null || die "$tool is not installed; run 'make deps'"
done

RUNDIR=$(mktemp -d /tmp/rewind-demo.XXXXXX)
SOCK=$RUNDIR/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
NBDKIT_PID=
WRITER_PID=

cleanup() {
  local rc=$?
  if [[ -n "$WRITER_PID" ]]; then
    kill "$WRITER_PID" 2>/dev/null || true
    wait "$WRITER_PID" 2>/dev/null || true
  fi
  if [[ -n "$NBDKIT_PID" ]] && kill -0 "$NBDKIT_PID" 2>/dev/null; then
    kill -TERM "$NBDKIT_PID" 2>/dev/null || true
    wait "$NBDKIT_PID" 2>/dev/null || true
  fi
  if ((rc != 0)) && [[ -s "$RUNDIR/nbdkit.log" ]]; then
    echo "demo: failed; nbdkit's log:" >&2
    sed 's/^/  /' "$RUNDIR/nbdkit.log" >&2
  fi
  rm -rf "$RUNDIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints what the live disk holds in its first sector (the demo keeps a
# one-line "label" there so that each state of the disk is easy to tell).
show_label() {
  nbdsh -u "$URI" -c 'print("   disk label now: " + repr(h.pread(48, 0).rstrip(b"\0").decode()))'
}

# --- a fresh store -----------------------------------------------------------
step "Preparing an empty demo store at $STORE"
if [[ -e "$STORE" ]]; then
  if [[ -S "$STORE/control.sock" ]] &&
     "$REWIND" info --json "$STORE" 2>/dev/null | grep -q '"online": true'; then
    die "a plugin is still serving $STORE; stop that nbdkit first"
  fi
  echo "   removing the store left by a previous demo"
  rm -rf "$STORE"
fi

# --- start nbdkit ------------------------------------------------------------
step "Starting nbdkit with the rewind plugin: a new $SIZE disk on a Unix socket"
printf '$ nbdkit -f --exit-with-parent -U %s %s/nbdplugin/nbdkit-rewind-plugin.so dir=%s size=%s &\n' \
  "$SOCK" "$BUILD" "$STORE" "$SIZE"
nbdkit -f --exit-with-parent -U "$SOCK" "$PLUGIN" dir="$STORE" size="$SIZE" \
  2>"$RUNDIR/nbdkit.log" &
NBDKIT_PID=$!
# Ready when both the NBD socket and the control socket answer.
for _ in $(seq 1 300); do
  kill -0 "$NBDKIT_PID" 2>/dev/null || die "nbdkit exited before it was ready"
  if [[ -S "$SOCK" && -S "$STORE/control.sock" ]] &&
     "$REWIND" info --json "$STORE" 2>/dev/null | grep -q '"online": true'; then
    break
  fi
  sleep 0.1
done
[[ -S "$SOCK" ]] || die "nbdkit did not create $SOCK within 30 s"
echo "   nbdkit (pid $NBDKIT_PID) serves $URI"
nbdsh -u "$URI" -c 'print("   export size: %d bytes" % h.get_size())'

# --- first writes ------------------------------------------------------------
step "Writing through NBD: a label, then 16 MiB of data, then a flush"
nbdsh -u "$URI" -c '
import os
h.pwrite(b"demo disk v1: freshly installed".ljust(512, b"\0"), 0)
for i in range(16):
    h.pwrite(os.urandom(1 << 20), (1 + i) << 20)
h.flush()
'
show_label

step "Checkpoint 'installed', taken through the running plugin"
run "$REWIND" checkpoint "$STORE" --name installed

# --- more writes, a checkpoint under load -----------------------------------
step "Overwriting: a new label and 4 MiB of the data (the before-images go to the undo journal)"
nbdsh -u "$URI" -c '
import os
h.pwrite(b"demo disk v2: upgraded".ljust(512, b"\0"), 0)
h.pwrite(os.urandom(4 << 20), 2 << 20)
h.flush()
'
show_label
run "$REWIND" checkpoint "$STORE" --name upgraded

step "Checkpoint 'under-load' while a second client keeps writing 64 KiB blocks"
nbdsh -u "$URI" -c '
import os, random, time
rng = random.Random(7)
n, end = 0, time.monotonic() + 2.0
while time.monotonic() < end:
    h.pwrite(os.urandom(64 << 10), rng.randrange(32 << 4, 256 << 4) << 16)
    n += 1
    if n % 64 == 0:
        h.flush()
h.flush()
print("   the writer made %d writes in 2 s" % n)
' &
WRITER_PID=$!
sleep 1
run "$REWIND" checkpoint "$STORE" --name under-load
wait "$WRITER_PID" || die "the background writer failed"
WRITER_PID=
echo "   the checkpoint covers exactly the writes acknowledged before it"

step "Damaging the disk: the label and the first 8 MiB overwritten with garbage"
nbdsh -u "$URI" -c '
import os
h.pwrite(b"demo disk: CORRUPTED (pretend ransomware)".ljust(512, b"\0"), 0)
h.pwrite(os.urandom(8 << 20), 1 << 20)
h.flush()
'
show_label
echo "   every write above is in the redo journal; the checkpoints keep the older states"

# --- the past ----------------------------------------------------------------
step "Reading the past while the live disk keeps serving: export '@installed'"
nbdsh -u "nbd+unix:///@installed?socket=$SOCK" -c '
print("   label at checkpoint installed: " + repr(h.pread(48, 0).rstrip(b"\0").decode()))
print("   read-only: " + str(h.is_read_only()))'
show_label

step "Restoring checkpoint 'installed' to a sparse raw file, through the running plugin"
RESTORED=./demo-restored.raw
rm -f "$RESTORED"
run "$REWIND" restore "$STORE" --to installed --output "$RESTORED"
printf '   label in %s: %s\n' "$RESTORED" "$(head -c 48 "$RESTORED" | tr -d '\0')"
printf '   %s: %s apparent, %s allocated\n' "$RESTORED" "$(du -h --apparent-size "$RESTORED" | cut -f1)" \
  "$(du -h "$RESTORED" | cut -f1)"

# --- the timeline ------------------------------------------------------------
step "The timeline, read from the running plugin"
run "$REWIND" list "$STORE"

step "The store, as the running plugin sees it"
run "$REWIND" info "$STORE"

# --- stop and look again offline ----------------------------------------------
step "Stopping nbdkit cleanly (SIGTERM)"
kill -TERM "$NBDKIT_PID"
rc=0
wait "$NBDKIT_PID" || rc=$?
NBDKIT_PID=
((rc == 0)) || die "nbdkit exited with status $rc"
echo "   nbdkit exited with status 0"

step "The store offline: the CLI opens it directly"
run "$REWIND" info "$STORE"
run "$REWIND" list --json "$STORE"

step "Done.  Explore the store further:"
hint() { printf '   %-54s %s\n' "$1" "$2"; }
hint "$BUILD/restore/rewind info $STORE [--json]" "size, history span, space used"
hint "$BUILD/restore/rewind list $STORE [--json]" "the timeline of checkpoints"
hint "$BUILD/restore/rewind checkpoint $STORE --name X" "one more checkpoint"
hint "$BUILD/restore/rewind SUBCOMMAND --help" "what each subcommand does"
echo "   Serve the store again (its size is remembered) and talk to it over NBD:"
echo "   nbdkit -U /tmp/demo.sock $BUILD/nbdplugin/nbdkit-rewind-plugin.so dir=$STORE"
echo "   PATH=/usr/bin:\$PATH nbdsh -u 'nbd+unix:///?socket=/tmp/demo.sock'"
hint "$BUILD/restore/rewind restore $STORE --to lsn:1 --output /tmp/x.raw" "the disk after its first write"
echo "   Time-travel exports: nbd+unix:///@installed?socket=..., @lsn:N, @time:2026-11-30T12:00:00Z"
