#!/usr/bin/env bash
# The plain-QEMU recipe of docs/integration.md, as one runnable script.
#
# docs/integration.md quotes the sections between "# >>> NAME" and "# <<<"
# verbatim; scripts/check-integration.sh checks that the quotes match this
# file and runs it against the project's test guest (ctest:
# integration/qemu-recipe), so the doc and what was run cannot drift apart.
#
# Settings, from the environment (defaults are the production layout the doc
# uses):
#   REWIND     the rewind CLI               (/usr/local/bin/rewind)
#   PLUGIN     the plugin                   (/usr/local/lib/rewind/nbdkit-rewind-plugin.so)
#   STORE      the VM's store               (/var/lib/rewind/vm1)
#   RUN        where sockets and pid files go (/run/rewind)
#   OUT        where copies of old points go  (/var/tmp)
#   IMAGE      a raw image to put on disk os (required; the test uses the test guest)
#   OS_SIZE, DATA_SIZE  sizes of the disks of a new store (20G, 100G)
#   ACCEL      kvm or tcg (kvm)             MEM   guest memory (2G)
#   SV_INTERVAL, SV_STOP_TIMEOUT  rewind supervise's --interval and --stop-timeout (300, 60)
#   CHECK      1: also check what each step did (the test sets it)
set -euo pipefail
PATH=$PATH:/usr/bin:/usr/sbin   # for a PATH without them (nbdkit, qemu-img, ...)

REWIND=${REWIND:-/usr/local/bin/rewind}
PLUGIN=${PLUGIN:-/usr/local/lib/rewind/nbdkit-rewind-plugin.so}
STORE=${STORE:-/var/lib/rewind/vm1}
RUN=${RUN:-/run/rewind}
OUT=${OUT:-/var/tmp}
IMAGE=${IMAGE:?set IMAGE to a raw image for disk os}
OS_SIZE=${OS_SIZE:-20G}
DATA_SIZE=${DATA_SIZE:-100G}
ACCEL=${ACCEL:-kvm}
MEM=${MEM:-2G}
SV_INTERVAL=${SV_INTERVAL:-300}
SV_STOP_TIMEOUT=${SV_STOP_TIMEOUT:-60}
CHECK=${CHECK:-0}

say() { printf '\n== %s\n' "$*"; }
fail() { echo "qemu-recipe: FAILED: $*" >&2; exit 1; }
# Waits up to $2 seconds for the shell condition $1.
wait_for() {
  local cond=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    if eval "$cond"; then return 0; fi
    sleep 0.1
  done
  fail "timed out after ${secs}s waiting for: $cond"
}
# The guest's counter C in its last TICK line (the test guest prints
# "TICK C=<C> mm=<mismatches> ram=<errors>").
last_tick() { grep -a -o 'TICK C=[0-9]*' "$RUN/vm1.serial" | tail -1 | cut -d= -f2; }
ticks() { grep -a -c 'TICK C=' "$RUN/vm1.serial" || true; }

cleanup() {
  local pidfile
  for pidfile in "$RUN/vm1.qemu.pid" "$RUN/vm1.nbdkit.pid"; do
    if [[ -s $pidfile ]]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
  # nbdkit closes the store on SIGTERM (a graceful shutdown); wait for it.
  if [[ -s $RUN/vm1.nbdkit.pid ]]; then
    local pid i
    pid=$(cat "$RUN/vm1.nbdkit.pid")
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}
trap cleanup EXIT

say "serve the store with nbdkit"
# >>> serve
mkdir -p "$RUN" "$(dirname "$STORE")"
rm -f "$RUN/vm1.sock"           # nbdkit leaves its socket behind when it exits
nbdkit --unix "$RUN/vm1.sock" --pidfile "$RUN/vm1.nbdkit.pid" \
    "$PLUGIN" dir="$STORE" disk=os disk=data size=os:"$OS_SIZE" size=data:"$DATA_SIZE"
# <<<

say "put the image on disk os"
# >>> install
nbdcopy --flush "$IMAGE" "nbd+unix:///os?socket=$RUN/vm1.sock"
# <<<

say "start QEMU"
# >>> qemu
# The VM: its disks are the exports os and data of the store, over the socket.
vm=(
  -machine q35,accel="$ACCEL" -m "$MEM" -nodefaults -no-user-config -display none
  -chardev file,id=serial0,path="$RUN/vm1.serial",append=on -serial chardev:serial0
  -blockdev driver=nbd,node-name=os,server.type=unix,server.path="$RUN/vm1.sock",export=os,reconnect-delay=30,cache.direct=off,cache.no-flush=off
  -device virtio-blk-pci,drive=os,bootindex=0,write-cache=on,werror=stop,rerror=stop
  -blockdev driver=nbd,node-name=data,server.type=unix,server.path="$RUN/vm1.sock",export=data,reconnect-delay=30,cache.direct=off,cache.no-flush=off
  -device virtio-blk-pci,drive=data,write-cache=on,werror=stop,rerror=stop
  -device pvpanic
)
qemu-system-x86_64 "${vm[@]}" -qmp unix:"$RUN/vm1.qmp",server=on,wait=off \
    -daemonize -pidfile "$RUN/vm1.qemu.pid"
# <<<
if ((CHECK)); then
  wait_for '[[ -f $RUN/vm1.serial ]] && grep -a -q "^BOOT" "$RUN/vm1.serial"' 30
  wait_for '(( $(ticks) >= 3 ))' 60
  echo "guest booted from the rewind disks: $(grep -a -c '^BOOT' "$RUN/vm1.serial") BOOT, $(ticks) TICK lines"
fi

say "a disk checkpoint while the guest writes"
# >>> checkpoint
"$REWIND" checkpoint "$STORE" --name before-upgrade
"$REWIND" list "$STORE"
# <<<

say "read the past: time-travel exports"
if ((CHECK)); then sleep 1; fi   # let the guest write on past the checkpoint
# >>> time-travel
nbdinfo --list "nbd+unix:///?socket=$RUN/vm1.sock"
nbdcopy "nbd+unix:///os@before-upgrade?socket=$RUN/vm1.sock" "$OUT/vm1-os-before-upgrade.raw"
# <<<
if ((CHECK)); then
  # The same point through the CLI must give the same bytes, and the live
  # disk must have moved on (the guest writes its counter at LBA 64).
  "$REWIND" restore "$STORE" --disk os --to before-upgrade --output "$OUT/vm1-os-restored.raw"
  cmp "$OUT/vm1-os-before-upgrade.raw" "$OUT/vm1-os-restored.raw" ||
    fail "the export os@before-upgrade and rewind restore differ"
  # The guest rewrites its record sectors; its boot sector stays the image's.
  cmp -n 512 "$IMAGE" "$OUT/vm1-os-before-upgrade.raw" || fail "boot sector at the checkpoint is not the image's"
  nbdcopy "nbd+unix:///os?socket=$RUN/vm1.sock" "$OUT/vm1-os-live.raw"
  if cmp -s "$OUT/vm1-os-live.raw" "$OUT/vm1-os-before-upgrade.raw"; then
    fail "the live disk equals the checkpoint although the guest kept writing"
  fi
  # QEMU's own NBD client reads the old point read-only, with the options of
  # a read-only -blockdev.
  qemu-img compare -q --image-opts \
    "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$RUN/vm1.sock,file.export=os@before-upgrade" \
    "driver=raw,file.driver=file,file.filename=$OUT/vm1-os-before-upgrade.raw" || fail "qemu-img reads os@before-upgrade differently"
  nbdinfo --list "nbd+unix:///?socket=$RUN/vm1.sock" | grep -q 'os@before-upgrade' ||
    fail "nbdinfo --list does not show os@before-upgrade"
  rm -f "$OUT/vm1-os-restored.raw" "$OUT/vm1-os-live.raw"
fi

say "a whole-VM checkpoint"
# The guest's counter before the checkpoint starts: the saved state's is at
# least this.  (After it returns, the resumed guest may have counted on.)
if ((CHECK)); then c_before_checkpoint=$(last_tick); fi
# >>> vm-checkpoint
"$REWIND" vm checkpoint --qmp "$RUN/vm1.qmp" "$STORE" --name nightly
# <<<
if ((CHECK)); then
  "$REWIND" list "$STORE" | grep -q 'nightly' || fail "rewind list does not show nightly"
  c_at_checkpoint=$(last_tick)
  wait_for '(( $(last_tick) >= c_at_checkpoint + 32 ))' 60
  ticks_before=$(ticks)
  c_before=$(last_tick)
  echo "guest ran on from C=$c_at_checkpoint to C=$c_before"
fi

say "the VM is lost; restore it from the whole-VM checkpoint"
# >>> vm-restore
qemu=$(cat "$RUN/vm1.qemu.pid")        # (QEMU removes its pid file as it exits)
kill "$qemu"                            # (the VM is gone: crashed, killed, host rebooted)
while kill -0 "$qemu" 2>/dev/null; do sleep 0.1; done
qemu-system-x86_64 "${vm[@]}" -qmp unix:"$RUN/vm1.qmp",server=on,wait=off \
    -daemonize -pidfile "$RUN/vm1.qemu.pid" -incoming defer
"$REWIND" vm restore --qmp "$RUN/vm1.qmp" "$STORE" --to nightly
# <<<
if ((CHECK)); then
  wait_for '(( $(ticks) >= ticks_before + 3 ))' 60
  # After the restore the guest counts on from the checkpoint's counter, not
  # from where it was killed, and without a reboot or a mismatch.
  # The first TICK after the restore: the first one, past those counted
  # before the kill, below C=$c_before (the killed guest printed only
  # larger ones, as long as it lived).
  c_after=$(grep -a -o 'TICK C=[0-9]*' "$RUN/vm1.serial" | tail -n +"$((ticks_before + 1))" |
    cut -d= -f2 | awk -v b="$c_before" '$1 < b { print; exit }')
  [[ -n $c_after ]] || fail "after the restore no TICK below C=$c_before (killed): the guest was not restored"
  ((c_after >= c_before_checkpoint)) ||
    fail "after the restore C=$c_after, below C=$c_before_checkpoint before the checkpoint"
  (($(grep -a -c '^BOOT' "$RUN/vm1.serial") == 1)) || fail "the guest rebooted"
  ! grep -a -q 'MISMATCH\|RAMBAD\|DISKERR' "$RUN/vm1.serial" || fail "the guest reports an inconsistency"
  echo "guest resumed at C=$c_after (checkpoint taken from C=$c_before_checkpoint, killed at C=$c_before)"
fi

say "supervised"
if ! "$REWIND" --help | grep -q '^ *supervise '; then
  echo "rewind supervise is not in this build: its section was not run"
  exit 0
fi
qemu=$(cat "$RUN/vm1.qemu.pid"); kill "$qemu"
while kill -0 "$qemu" 2>/dev/null; do sleep 0.1; done
rm -f "$RUN/vm1.qemu.pid"
# >>> supervise
"$REWIND" supervise --qmp "$RUN/vm1.qmp" --interval "$SV_INTERVAL" --keep-last 10 \
    --stop-timeout "$SV_STOP_TIMEOUT" "$STORE" -- qemu-system-x86_64 "${vm[@]}" &
supervise=$!
# <<<
events=$STORE/supervise.jsonl
wait_for '[[ -s $events ]] && grep -q "\"qemu-started\"" "$events"' 60
if ((CHECK)); then
  # A fault: QEMU dies.  supervise must restart it from the last good
  # whole-VM checkpoint, and the guest must run on without a reboot.
  wait_for 'grep -q "\"event\": *\"checkpoint\"" "$events"' $((SV_INTERVAL + 60))
  qemu_pid=$(grep '"qemu-started"' "$events" | tail -1 | sed 's/.*"pid": *\([0-9]*\).*/\1/')
  [[ $qemu_pid =~ ^[0-9]+$ ]] || fail "no QEMU pid in the qemu-started event"
  ticks_before=$(ticks)
  boots_before=$(grep -a -c '^BOOT' "$RUN/vm1.serial")
  kill -KILL "$qemu_pid"
  wait_for 'grep -q "\"event\": *\"running\"" "$events"' 120
  grep -q '"event": *"fault"' "$events" || fail "no fault event"
  grep -q '"event": *"rollback"' "$events" || fail "no rollback event"
  wait_for '(( $(ticks) >= ticks_before + 3 ))' 60
  # (supervise's first QEMU booted the guest afresh: that BOOT is counted
  # in boots_before; the restore after the kill must add none.)
  (($(grep -a -c '^BOOT' "$RUN/vm1.serial") == boots_before)) || fail "the guest rebooted under supervise"
  ! grep -a -q 'MISMATCH\|RAMBAD\|DISKERR' "$RUN/vm1.serial" || fail "the guest reports an inconsistency"
  "$REWIND" list "$STORE" | grep -q 'sv-fault-' || fail "no pinned sv-fault- checkpoint"
fi
# >>> supervise-stop
kill -TERM "$supervise"          # system_powerdown, then quit after --stop-timeout
wait "$supervise"                # exit status 0: supervision ended normally
# <<<
grep -q '"event": *"stop"' "$events" || fail "the event log has no stop event"
echo "supervise ran the VM, rolled it back after a fault, and stopped on SIGTERM"
