// Whole-VM checkpoints: memory, devices and every disk at one instant.
//
// A whole-VM checkpoint is a checkpoint of kind "vm" in every store that
// holds one of the VM's disks, all taken while QEMU has the guest stopped
// and its disks drained and flushed, plus the guest's device and memory
// state (QEMU's migration stream) saved in the first store's DIR/vmstate
// (state_store.h) under the checkpoint's name.
//
// Atomicity.  The disk markers are taken pending (hidden, store.h), the
// state is saved and committed (its manifest is the commit point), then
// the markers are committed.  An interruption before the manifest leaves
// hidden markers (dropped by a later prune) and no state; one after it is
// finished by the next whole-VM command on the same stores (roll forward),
// which also deletes saved state whose markers are gone.  The guest runs on
// whatever happens, unless QEMU itself died.
//
// Stop mode: `stop` (QEMU drains and flushes its disks), the markers, the
// state saved through `migrate` to an fd passed over QMP (`getfd`), `cont`.
// The guest is stopped for the whole save.
// Live mode: pre-copy `migrate` while the guest runs; QEMU stops the guest
// for the last pass and leaves it stopped (postmigrate); the markers are
// taken then, the state committed, and `cont` resumes it.  The downtime is
// from QEMU's STOP event to the return of `cont`.
//
// Restore: for a QEMU started with `-incoming defer` whose disks are served
// by the stores: every store is rolled back to the checkpoint (an undoable
// rollback: before-rollback-... checkpoints), the saved state is streamed
// into `migrate-incoming` through an fd, and the guest resumed.
#pragma once

#include <rewind/journal/status.h>
#include <rewind/journal/store.h>
#include <rewind/vmstate/state_store.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace rwd::vm {

// One store of the VM: its directory and what the command did there.
struct VmDisk {
  std::string dir;           // absolute
  CheckpointInfo checkpoint;  // the whole-VM checkpoint in this store
};

struct VmCheckpointOptions {
  std::string qmp_socket;
  std::vector<std::string> dirs;  // the stores of the VM's disks; the first keeps the state
  std::string name;               // empty: "vm-<UTC time>"
  bool live = false;
  // The marker in every store is taken pinned (every prune keeps it) and/or
  // marked as taken by rewind supervise (CheckpointOptions).
  bool pinned = false;
  bool supervised = false;
  // Bound on each QMP command and each silence of the migration.
  std::chrono::milliseconds timeout{60000};
  // Bytes of state saved so far (total 0: unknown).  Returning false
  // cancels: the migration is cancelled and the guest resumed.
  std::function<bool(uint64_t done, uint64_t total)> progress;
  // When the guest faults while the checkpoint is taken (QEMU reports
  // GUEST_PANICKED, GUEST_CRASHLOADED, WATCHDOG or a guest-initiated
  // SHUTDOWN), the state saved may be the faulty one: the checkpoint fails
  // (Aborted), the guest is not resumed, and the event's name is stored
  // here (may be null).
  std::string* fault_seen = nullptr;
};

struct VmCheckpointResult {
  std::string name;
  bool live = false;
  std::vector<VmDisk> disks;
  StateInfo state;
  // How long the guest was stopped: stop to cont (stop mode), QEMU's STOP
  // event to the return of cont (live mode).
  double downtime_ms = 0;
  // Live mode: QEMU's own figure (query-migrate "downtime"), which ends
  // when the migration completes, before the markers.
  double qemu_downtime_ms = 0;
  uint64_t ram_bytes = 0;  // the guest's RAM (query-migrate ram.total)
  double seconds = 0;      // the whole command
};

[[nodiscard]] Status VmCheckpoint(const VmCheckpointOptions& options, VmCheckpointResult* out);

struct VmRestoreOptions {
  std::string qmp_socket;
  std::vector<std::string> dirs;  // the same stores, first one first
  std::string name;               // a whole-VM checkpoint
  std::chrono::milliseconds timeout{60000};
  std::function<bool(uint64_t done, uint64_t total)> progress;  // bytes of state sent
};

struct VmRestoreResult {
  std::string name;
  std::vector<VmDisk> disks;             // checkpoint: the one restored
  std::vector<RollbackResult> rollbacks;  // per store, in dirs order
  StateInfo state;
  double seconds = 0;
};

[[nodiscard]] Status VmRestore(const VmRestoreOptions& options, VmRestoreResult* out);

// "vm-20261123T101500Z" for a time in nanoseconds since the epoch.
std::string DefaultVmCheckpointName(int64_t ns);

}  // namespace rwd::vm
