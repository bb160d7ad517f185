// Supervise: a VM that puts itself back after a fault (`rewind supervise`).
//
// The supervisor takes whole-VM checkpoints of a QEMU on a schedule and
// watches it for faults: QMP events (GUEST_PANICKED, BLOCK_IO_ERROR,
// WATCHDOG, and SHUTDOWN or RESET when the policy says so), QEMU exiting
// without being asked, and an optional heartbeat through the QEMU guest
// agent.  On a fault it pins a checkpoint of the faulty state for
// forensics, rolls the VM back to the newest good whole-VM checkpoint and
// runs it on.  A fault within fault_window of a rollback is a repeat: the
// checkpoint rolled back to (and every one taken since) is marked bad and
// the next rollback goes further back; after max_rollbacks repeats in a row
// it gives up and leaves the VM stopped.
//
// Two ways to hold the VM:
//   owned    (qemu_command given): the supervisor starts QEMU with two QMP
//            monitors of its own (one for events, one for the whole-VM
//            commands), -no-shutdown and -action panic=pause.  A rollback
//            quits that QEMU, starts a fresh one with -incoming defer and
//            restores the checkpoint into it: memory, devices and disks.
//   attached (qmp_socket only): QEMU belongs to someone else (libvirt).  The
//            supervisor holds the one monitor only between its commands.  A
//            rollback stops the guest, rolls the disks back to the
//            checkpoint and resets the guest: it reboots from its disks as
//            they were then (a running QEMU cannot load a saved state).
//
// Everything that happens goes to an event log of JSON lines
// (docs/integration.md lists the events and their members).
#pragma once

#include <rewind/journal/status.h>
#include <rewind/journal/store.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace rwd::vm {

struct SuperviseOptions {
  std::vector<std::string> dirs;           // the VM's stores; the first keeps the VM states
  std::vector<std::string> qemu_command;   // empty: attach to qmp_socket
  // Owned: where QEMU's command monitor goes (empty: a private directory);
  // attached: QEMU's QMP socket.
  std::string qmp_socket;

  // The schedule: a checkpoint every interval_s, or (auto_interval) every
  // DalyInterval(measured cost, mean time between faults), the latter
  // taken as mtbf_s until faults have been seen, clamped to
  // [min_interval_s, max_interval_s].
  double interval_s = 300;
  bool auto_interval = false;
  double mtbf_s = 86400;
  double min_interval_s = 10;
  double max_interval_s = 3600;
  bool live = false;
  // Applied to every store after each checkpoint; all zero: no pruning.
  PrunePolicy retention;

  double fault_window_s = 300;
  int max_rollbacks = 3;
  bool shutdown_is_fault = false;  // a guest that powers off: fault, or the end
  bool reset_is_fault = false;     // a guest-initiated reset: fault, or ignored

  std::string heartbeat_socket;    // the guest agent's socket; empty: none
  double heartbeat_interval_s = 10;
  double heartbeat_timeout_s = 30;

  std::string event_log;           // empty: <first dir>/supervise.jsonl
  std::chrono::milliseconds timeout{60000};
  double stop_timeout_s = 30;      // owned: how long a guest gets to power off on stop

  // Called with every event as it is logged (may be null).
  std::function<void(const nlohmann::json&)> on_event;
  // Polled often; true ends supervision (a signal).
  std::function<bool()> stop_requested;
};

struct SuperviseResult {
  enum class End { kStopped, kGuestShutdown, kGaveUp };
  End end = End::kStopped;
  std::string reason;       // for kGaveUp: why, for people
  uint64_t checkpoints = 0;
  uint64_t checkpoint_failures = 0;
  uint64_t faults = 0;
  uint64_t rollbacks = 0;
};

// Runs until the guest powers off (unless that is a fault), a stop is
// requested, or it gives up (kGaveUp: the VM is stopped, an owned QEMU
// quit).  An error it cannot work around (a store not served, QEMU that
// cannot start) is the returned status.
[[nodiscard]] Status Supervise(const SuperviseOptions& options, SuperviseResult* out);

// Daly's higher-order estimate of the optimal checkpoint interval for a
// checkpoint cost C and a mean time between faults M, both in seconds:
// sqrt(2CM) * (1 + sqrt(C/2M)/3 + (C/2M)/9) - C for C < 2M, else M.  For
// C << M it tends to Young's sqrt(2CM).
double DalyInterval(double cost_s, double mtbf_s);

// Which whole-VM checkpoint a rollback goes to.  Pure bookkeeping, no I/O:
// the supervisor tells it what happened and asks where to go.
class RollbackPlanner {
 public:
  RollbackPlanner(double fault_window_s, int max_rollbacks)
      : window_s_(fault_window_s), max_rollbacks_(max_rollbacks) {}

  // A good candidate: a whole-VM checkpoint of these stores (id order is
  // time order).  Forensic checkpoints are not candidates.
  void AddCandidate(uint64_t id, const std::string& name);
  void Forget(uint64_t id);  // pruned away
  // A fault at time t (seconds, any monotonic origin).  Sets *target to
  // the checkpoint to roll back to, or returns false with *why set when it
  // gives up.
  bool OnFault(double t, CheckpointInfo* target, std::string* why);
  // The rollback to target failed (a damaged state, say): mark it bad and
  // pick the next one as OnFault does; counts as a try.
  bool OnRollbackFailed(CheckpointInfo* target, std::string* why);
  // The VM runs again from the rollback, at time t.
  void OnResumed(double t);
  int streak() const { return streak_; }

 private:
  bool Pick(uint64_t below, CheckpointInfo* target, std::string* why);

  double window_s_;
  int max_rollbacks_;
  std::vector<CheckpointInfo> good_;  // ascending id
  int streak_ = 0;                    // rollbacks in a row, each followed by a repeat fault
  uint64_t last_target_ = 0;          // id rolled back to last (0: none yet)
  double resumed_at_ = -1;
};

}  // namespace rwd::vm
