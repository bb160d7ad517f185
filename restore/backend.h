// Backend: how the CLI reaches a store.
//
// RocksDB lets one process open a store, so while the plugin runs the CLI
// must ask it, over DIR/control.sock (docs/control-protocol.md); when nothing
// listens there the CLI opens the store itself.  Both ways give the same
// objects, so a command neither knows nor cares which one it got, except to
// report it (`online`).
#pragma once

#include <rewind/journal/status.h>
#include <rewind/journal/store.h>

#include <memory>
#include <string>
#include <vector>

namespace rwd::cli {

class Backend {
 public:
  virtual ~Backend() = default;

  // True when a running plugin answers for the store.
  virtual bool online() const = 0;

  [[nodiscard]] virtual Status GetInfo(StoreInfo* out) = 0;
  // options.name has passed ValidateCheckpointName, or is empty (the store
  // picks "cp-<id>"); kind, pending, pinned and supervised as the store
  // takes them.  The checkpoint is durable when this returns.  Online, a
  // plugin that ignores pinned or supervised (one older than this CLI) is
  // NotSupported, though the checkpoint it took stays.
  [[nodiscard]] virtual Status Checkpoint(const CheckpointOptions& options,
                                          CheckpointInfo* out) = 0;
  // A disk checkpoint of that name, nothing else set.
  [[nodiscard]] Status Checkpoint(const std::string& name, CheckpointInfo* out) {
    CheckpointOptions o;
    o.name = name;
    return Checkpoint(o, out);
  }
  // Pins (pinned) or unpins the visible checkpoint named name, durably
  // (Store::SetPinned); *out is the checkpoint afterwards.  NotFound for an
  // unknown name.
  [[nodiscard]] virtual Status Pin(const std::string& name, bool pinned, CheckpointInfo* out) = 0;
  // Oldest first.
  [[nodiscard]] virtual Status ListCheckpoints(std::vector<CheckpointInfo>* out) = 0;
  // Writes a sparse raw image of the disk at point (a POINT as the user
  // gave it) to output; disk names the disk of a store of several (empty:
  // the store's only disk; a store of several refuses that), an absolute path; an existing file is replaced only
  // when force.  progress (may be empty) is called as the work goes on;
  // returning false cancels it (Aborted), as a failure does, leaving no
  // output and no temporary file.  The live disk keeps serving meanwhile.
  [[nodiscard]] virtual Status Restore(const std::string& point, const std::string& disk,
                                       const std::string& output, bool force, const ProgressFn& progress,
                                       RestoreResult* out) = 0;
  // Puts the live disk back to point (a POINT as the user gave it), in
  // place, after recording a before-rollback-... checkpoint that undoes it.
  // It cannot be cancelled: progress (may be empty; bytes of changed blocks
  // examined) only watches, and its answer is ignored.  Online, the plugin
  // refuses with Busy while an NBD client has the live disk open for
  // writing.
  [[nodiscard]] virtual Status Rollback(const std::string& point, const ProgressFn& progress,
                                        RollbackResult* out) = 0;
  // The byte ranges whose content differs between two points (POINTs as
  // the user gave them), of disk as for Restore.
  [[nodiscard]] virtual Status Diff(const std::string& from, const std::string& to,
                                    const std::string& disk, DiffResult* out) = 0;
  // Checks every checksum and invariant; damage goes into *out, the status
  // fails only when verification could not run.  progress (may be empty)
  // counts records; returning false cancels (Aborted).
  [[nodiscard]] virtual Status Verify(const ProgressFn& progress, VerifyReport* out) = 0;
  // Drops history by policy (a dry run changes nothing).  Online, the
  // plugin refuses a prune (not a dry run) with Busy while an NBD client has
  // the live disk open for writing; the store refuses one with Busy while a
  // snapshot (a time-travel export) is open.
  [[nodiscard]] virtual Status Prune(const PrunePolicy& policy, PruneResult* out) = 0;
  // Releases the store (a local store is synced and closed).  The
  // destructor closes too, but cannot report a failure.
  [[nodiscard]] virtual Status Close() = 0;
};

// DIR/control.sock.
std::string ControlSocketPath(const std::string& dir);

// Talks to the plugin that listens on socket_path.  *not_listening is set
// when nothing listens there (no socket, or a stale one); the returned
// status is then not ok and the caller may open the store itself.
[[nodiscard]] Status ConnectOnline(const std::string& socket_path, std::unique_ptr<Backend>* out,
                                   bool* not_listening);

// dir made absolute and normal, without a trailing '/': what the store
// records and reports as its dir, the same as the plugin does.
std::string AbsoluteDir(const std::string& dir);

// NotFound or InvalidArgument, with a message for people, unless dir is an
// existing directory.
[[nodiscard]] Status CheckDirectory(const std::string& dir);

// Opens the existing store in dir in this process.  Fails with a clear
// message when dir holds no store or another process has it open.
// drop_damaged_journal: see StoreOptions.
[[nodiscard]] Status OpenLocal(const std::string& dir, std::unique_ptr<Backend>* out,
                               bool drop_damaged_journal = false);

// The plugin serving dir if one answers, otherwise the store opened locally.
// *online (optional) tells which.
[[nodiscard]] Status OpenBackend(const std::string& dir, std::unique_ptr<Backend>* out,
                                 bool drop_damaged_journal = false, bool* online = nullptr);

}  // namespace rwd::cli
