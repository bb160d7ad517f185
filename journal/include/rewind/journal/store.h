// Store: a journaled live disk, or the several disks of one VM.
//
// A store is a directory holding the live raw image of each disk and a
// RocksDB database with the redo journal (every write, trim and zero in LSN
// order), the copy-on-write recovery blocks (before-images), the
// checkpoints and the metadata.  See docs/architecture.md and
// docs/journal-format.md.
//
// The disks of a store share one timeline: one LSN sequence and one list of
// checkpoints, so a checkpoint covers every disk at one instant.  A store
// made without disk names has one unnamed disk; Store's own Read, Write,
// ..., OpenSnapshot, Restore and Diff act on its first disk, so code that
// knows one disk needs nothing else.  disk(i) gives every disk.
//
// Thread safety: every method may be called from any thread concurrently,
// except Open/Create.  Writes to overlapping ranges are applied in the order
// they are given LSNs.
#pragma once

#include <rewind/journal/image_file.h>
#include <rewind/journal/status.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rocksdb {
class FileSystem;
}

namespace rwd {

inline constexpr uint32_t kDefaultBlockSize = 4096;
inline constexpr uint32_t kMinBlockSize = 512;
inline constexpr uint32_t kMaxBlockSize = 1u << 20;

// One disk of a store (disk=NAME).
struct DiskSpec {
  // ValidateDiskName: 1-128 characters from [A-Za-z0-9._+-], not starting
  // with '.' or '-'; unique in the store.
  std::string name;
  // Size of a new disk in bytes; for an existing store it must match.  0:
  // the adopted image's size, or the existing disk's.
  uint64_t size = 0;
  // Adopt this raw image as the disk's live image (a new store only; for an
  // existing one it must be the disk's image).  Empty: DIR/disks/NAME.raw.
  std::string image;
};

struct StoreOptions {
  // The store directory.  Required.
  std::string dir;
  // The disks of a store with named disks, in order (the first is disk 0).
  // Empty: one unnamed disk described by size and image below, as in a
  // store made without disk=; then, for an existing store, whatever disks it
  // has.  For an existing store the names must be the store's, in its
  // order: a disk cannot be added or removed.
  std::vector<DiskSpec> disks;
  // Size of a new disk in bytes; when set for an existing store it must
  // match (its first disk's).  Unset (0) for an existing store, and when
  // disks is given.
  uint64_t size = 0;
  // Adopt this raw image as the live disk of a new store (its content is the
  // first point of history).  Empty: the store keeps DIR/image.raw.  Unset
  // when disks is given.
  std::string image;
  // Recovery-block granularity of a new store; 0 means kDefaultBlockSize.
  // When set for an existing store it must match.
  uint32_t block_size = 0;
  // Create the store when DIR holds none.
  bool create_if_missing = true;
  // Recovery after a crash cuts the journal at the first record whose
  // payload is missing or damaged, as the torn tail of the crash, only above
  // the newest LSN that a completed sync covered; below it the damage fails
  // Open with Corruption, since the cut would drop acknowledged writes.
  // true: cut there anyway (rewind verify --drop-damaged-journal).
  bool drop_damaged_journal = false;
  // Test doubles; null means the real file system.
  std::shared_ptr<rocksdb::FileSystem> fs;
  std::shared_ptr<ImageFileFactory> image_factory;
  // Wall clock in nanoseconds since the epoch; null means CLOCK_REALTIME.
  std::function<int64_t()> clock;
  // Tuning of group commit: journal records are synced at the latest this
  // long after they are written when nobody flushes, and the live image
  // trails the journal by at most max_pending_bytes.
  uint32_t sync_interval_us = 20000;
  uint64_t max_pending_bytes = 256ull << 20;
  // Bytes of writes sequenced (acknowledged, for plain writes) but not yet
  // durable; 0: no limit but max_pending_bytes.  Writers wait beyond it
  // while the journal syncs.  It bounds what a flush, FUA write or
  // checkpoint waits for behind a writer at full speed, and what a crash
  // takes of unflushed writes, at a cost in write throughput: measured in
  // docs/performance.md ("Checkpoint and flush latency under load"), 16 MiB
  // cut a checkpoint's p99 under a saturating writer from 1.3 s to 0.11 s
  // and 4 KiB random write throughput by a fifth, so it is off by default.
  uint64_t max_unsynced_bytes = 0;
  // The applier syncs the live image and records applied_lsn (so recovery
  // replays only what follows) every image_sync_interval_ms or every
  // image_sync_bytes applied, whichever comes first; 0: 5000 ms, 1 GiB.
  // Shorter bounds recovery after a crash tighter and costs write speed
  // (each sync writes back the image's dirty pages; docs/performance.md).
  uint32_t image_sync_interval_ms = 0;
  uint64_t image_sync_bytes = 0;
  // Size at which the payload log starts a new segment; 0: 1 GiB.
  uint64_t vlog_segment_bytes = 0;
  // RocksDB memtable size of the redo and undo families; 0: 64 MiB.
  uint64_t journal_write_buffer_bytes = 0;
  // Memory a restore uses for the blocks it builds from a before-image with
  // redo records laid over it (one batch; larger restores take several
  // passes over the redo records); 0: 256 MiB.
  uint64_t restore_batch_bytes = 0;
};

struct CheckpointInfo {
  uint64_t id = 0;        // order of creation, from 1
  std::string name;
  uint64_t lsn = 0;       // the checkpoint covers every record with LSN <= lsn
  int64_t time_ns = 0;    // wall-clock time it was taken
  std::string kind = "disk";  // "disk", or "vm" for a whole-VM checkpoint
  // Kept by every Prune whatever its policy (CheckpointOptions::pinned,
  // Store::SetPinned).
  bool pinned = false;
  // Taken by `rewind supervise` (CheckpointOptions::supervised): a mark of
  // who made it, for `rewind list`; nothing else depends on it.
  bool supervised = false;
  // Taken but not yet committed (CommitCheckpoint): hidden from
  // ListCheckpoints, ResolvePoint and the exports, and its name is not
  // reserved.  A whole-VM checkpoint is pending until its saved VM state is.
  bool pending = false;
  uint64_t undo_bytes = 0;    // before-images held for this checkpoint
};

// One disk of a store, as StoreInfo describes it.
struct DiskInfo {
  std::string name;  // "" for the unnamed disk of a store made without names
  uint64_t size = 0;
  std::string image_path;
};

struct StoreInfo {
  std::string dir;
  std::string image_path;  // the first disk's
  uint32_t format_version = 0;
  uint64_t size = 0;       // the first disk's
  uint32_t block_size = 0;
  int64_t created_ns = 0;
  uint64_t oldest_lsn = 0;   // 0 when the journal is empty
  uint64_t newest_lsn = 0;
  int64_t oldest_time_ns = 0;
  int64_t newest_time_ns = 0;
  uint64_t redo_records = 0;
  uint64_t redo_bytes = 0;    // bytes of redo records (keys + values)
  uint64_t undo_records = 0;
  uint64_t undo_bytes = 0;
  uint64_t vmstate_bytes = 0;
  uint64_t checkpoints = 0;
  uint64_t durable_lsn = 0;   // every record <= this is synced
  bool writes_refused = false;  // a sync failed; see refused_reason
  std::string refused_reason;
  // The last Open's recovery cut the journal: the redo records it dropped
  // (a crash's torn tail), and whether it cut at damage below the synced
  // LSN because drop_damaged_journal asked it to (then the message).
  uint64_t recovery_cut_records = 0;
  std::string recovery_dropped_damage;
  std::vector<DiskInfo> disks;  // every disk, in order; never empty for an open store
};

struct CheckpointOptions {
  std::string name;           // empty: "cp-<id>"
  std::string kind = "disk";  // "disk" or "vm"
  bool pending = false;       // see CheckpointInfo::pending
  bool pinned = false;        // see CheckpointInfo::pinned
  bool supervised = false;    // see CheckpointInfo::supervised
};

// A point of history: the disk as it was right after the write with LSN
// `lsn` (0: as the store was created, before any write).
struct PointInfo {
  uint64_t lsn = 0;
  // When the checkpoint was taken, for a checkpoint; else when write `lsn`
  // was made (the store's creation for lsn 0).
  int64_t time_ns = 0;
  uint64_t checkpoint_id = 0;  // the checkpoint the point names, else 0
  std::string checkpoint;      // its name
  std::string text;            // the POINT as given, for messages
};

// The POINT syntax, parsed but not yet looked up in a store.
struct ParsedPoint {
  enum class Kind { kCheckpoint, kLsn, kTime, kRelative } kind = Kind::kCheckpoint;
  std::string name;      // kCheckpoint
  uint64_t lsn = 0;      // kLsn
  int64_t time_ns = 0;   // kTime: nanoseconds since the epoch (UTC)
  int64_t ago_ns = 0;    // kRelative: how long before now (> 0)
};
// "NAME", "lsn:N", "time:2026-11-23T10:15:00Z" (also with fractional
// seconds and a +HH:MM offset), "-10m" (s, m, h, d, w; also combined as
// "-1h30m").  InvalidArgument with a one-line message otherwise.
[[nodiscard]] Status ParsePoint(const std::string& text, ParsedPoint* out);

// The disk as it was at a point of history, read-only.  Reads are
// consistent while the live disk keeps changing.  Every Snapshot must be
// destroyed before its Store is closed.
class Snapshot {
 public:
  virtual ~Snapshot() = default;
  virtual const PointInfo& point() const = 0;
  virtual uint64_t size() const = 0;
  // len > 0, range within size().  Corruption when a record the point
  // needs is damaged: a damaged point is never served.
  [[nodiscard]] virtual Status Read(uint64_t offset, uint32_t len, void* buf) = 0;
  // Bytes the snapshot takes from the journal rather than the live disk,
  // as of opening: the blocks changed since the newest checkpoint at or
  // before the point (a measure of its cost, not an exact diff).
  virtual uint64_t changed_bytes() const = 0;
};

// Progress of long work: done out of total (same unit, usually bytes).
// Returning false cancels the work, which then fails with Aborted.
using ProgressFn = std::function<bool(uint64_t done, uint64_t total)>;

struct RestoreOptions {
  std::string output;       // the raw image to write
  bool overwrite = false;   // replace an existing file
  ProgressFn progress;      // may be null
};

struct RestoreResult {
  PointInfo point;
  std::string disk;            // the disk restored ("" for an unnamed disk)
  uint64_t bytes = 0;          // the image's size
  uint64_t data_bytes = 0;     // bytes written (the rest are holes)
  uint64_t changed_bytes = 0;  // bytes taken from the journal, not the live disk
  double seconds = 0;
};

struct RollbackOptions {
  // May be null; bytes of changed blocks examined.  A rollback cannot be
  // cancelled: its return value is ignored.
  ProgressFn progress;
};

struct RollbackResult {
  PointInfo point;          // where the disks were put back to (all of them)
  CheckpointInfo before;    // the before-rollback-... checkpoint: the undo
  // Blocks compared with the target, on every disk: those changed since the
  // newest checkpoint at or before the point (a bound on what may differ).
  uint64_t examined_bytes = 0;
  uint64_t rewritten_bytes = 0;  // of which differed from the target and were written
  double seconds = 0;
};

struct DiffRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct DiffResult {
  PointInfo from, to;
  std::string disk;               // the disk compared ("" for an unnamed disk)
  std::vector<DiffRange> ranges;  // ascending, disjoint, not adjacent
  uint64_t bytes = 0;             // total length of the ranges
  uint64_t records = 0;           // redo records between the points
};

// What verification found.  clean() when nothing is damaged.
struct VerifyReport {
  uint64_t redo_records = 0;
  uint64_t undo_records = 0;
  uint64_t checkpoints = 0;
  uint64_t payload_bytes = 0;    // payloads read and hash-checked
  uint64_t image_pages_checked = 0;
  std::vector<std::string> damage;  // one line each, naming what is damaged
  bool clean() const { return damage.empty(); }
};

// Which checkpoints prune keeps; the rest of history older than the oldest
// kept checkpoint becomes unreachable, and checkpoints between kept ones
// are dropped.  Pinned checkpoints and the newest checkpoint are always
// kept.
struct PrunePolicy {
  uint64_t keep_last = 0;       // the newest N checkpoints
  int64_t keep_within_ns = 0;   // checkpoints taken less than this long ago
  uint64_t keep_daily = 0;      // the newest checkpoint of each of the last N UTC days with one
  bool dry_run = false;         // report what would go, change nothing
};

struct PruneResult {
  std::vector<CheckpointInfo> kept, dropped;
  uint64_t history_start_lsn = 0;  // the oldest point reachable afterwards
  uint64_t redo_records_dropped = 0;
  uint64_t undo_records_dropped = 0;
  uint64_t segments_deleted = 0;   // payload log files removed
  uint64_t bytes_before = 0;       // redo + undo + payload log, as GetInfo counts
  uint64_t bytes_after = 0;
};

// One disk of a store: its live content and its past.  Owned by its Store,
// valid while the Store exists; thread-safe like the Store.  The past is
// read on the store's one timeline: a PointInfo (a checkpoint, lsn:N,
// time:...) names the same instant on every disk.
class Disk {
 public:
  virtual ~Disk() = default;
  // Its id in the journal: the order of creation, 0 for the first disk.
  virtual uint32_t index() const = 0;
  // "" for the one unnamed disk of a store made without names.
  virtual const std::string& name() const = 0;
  virtual uint64_t size() const = 0;

  // As Store's, on this disk.  Flush makes every write that returned before
  // it durable, on every disk (they share one journal).
  [[nodiscard]] virtual Status Read(uint64_t offset, uint32_t len, void* buf) = 0;
  [[nodiscard]] virtual Status Write(uint64_t offset, uint32_t len, const void* buf, bool fua) = 0;
  [[nodiscard]] virtual Status Zero(uint64_t offset, uint64_t len, bool fua, bool trim) = 0;
  [[nodiscard]] virtual Status Flush() = 0;
  [[nodiscard]] virtual Status Extents(uint64_t offset, uint64_t len,
                                       const std::function<void(uint64_t, uint64_t, bool)>& fn) = 0;
  [[nodiscard]] virtual Status OpenSnapshot(const PointInfo& point,
                                            std::unique_ptr<Snapshot>* out) = 0;
  [[nodiscard]] virtual Status Restore(const PointInfo& point, const RestoreOptions& options,
                                       RestoreResult* out) = 0;
  [[nodiscard]] virtual Status Diff(const PointInfo& from, const PointInfo& to,
                                    DiffResult* out) = 0;
};

class Store {
 public:
  // Opens the store in options.dir, creating it when create_if_missing and
  // the directory holds no store, and runs crash recovery.  Fails with a
  // one-line message on a bad parameter, a size or block-size mismatch, a
  // store of another format version or a store opened by another process;
  // the store is left unchanged then.
  [[nodiscard]] static Status Open(const StoreOptions& options, std::unique_ptr<Store>* out);
  // Whether dir holds a rewind store (its metadata file exists).
  static bool Exists(const std::string& dir);
  // Checks options against the store in options.dir (or, for a new store,
  // on their own) without opening the journal or starting any thread: for
  // nbdkit's config_complete, which runs before nbdkit forks.  Reports the
  // same one-line errors as Open.
  [[nodiscard]] static Status Check(const StoreOptions& options);

  virtual ~Store() = default;

  virtual uint64_t size() const = 0;  // the first disk's
  virtual uint32_t block_size() const = 0;
  virtual const std::string& dir() const = 0;

  // The disks, in the order they were created: disk(0) is the first, the
  // one the methods below that read or write a disk act on.  disk(i) is
  // null when i >= disk_count().
  virtual size_t disk_count() const = 0;
  virtual Disk* disk(size_t i) = 0;
  // The disk named name ("" finds an unnamed disk), or null.
  Disk* FindDisk(const std::string& name);

  // Reads the live disk.  len > 0, range within size().
  [[nodiscard]] virtual Status Read(uint64_t offset, uint32_t len, void* buf) = 0;
  // Journals and applies a write.  Returns once the write is visible to
  // every later Read; with fua it is also durable.
  [[nodiscard]] virtual Status Write(uint64_t offset, uint32_t len, const void* buf, bool fua) = 0;
  // Zeroes a range (trim=true: also deallocates it).  Reads return zeros
  // afterwards in both cases.
  [[nodiscard]] virtual Status Zero(uint64_t offset, uint64_t len, bool fua, bool trim) = 0;
  // Makes every write that returned before this call durable.
  [[nodiscard]] virtual Status Flush() = 0;
  // Sparse regions of the live disk.
  [[nodiscard]] virtual Status Extents(uint64_t offset, uint64_t len,
                                       const std::function<void(uint64_t, uint64_t, bool)>& fn) = 0;

  // Records a crash-consistent checkpoint after every write that returned
  // before this call.  O(1): does not depend on the disk's size.  An empty
  // name picks "cp-<id>".  The checkpoint is durable when this returns.
  [[nodiscard]] Status Checkpoint(const std::string& name, CheckpointInfo* out) {
    CheckpointOptions o;
    o.name = name;
    return Checkpoint(o, out);
  }
  // The same with a kind, or pending: a pending checkpoint is a marker in
  // the timeline like any other (the same instant, the same O(1) cost) but
  // stays invisible until CommitCheckpoint, so that a whole-VM checkpoint
  // appears only once its VM state is saved.  One that is never committed
  // stays hidden and is dropped by the next Prune.
  [[nodiscard]] virtual Status Checkpoint(const CheckpointOptions& options,
                                          CheckpointInfo* out) = 0;
  // Makes pending checkpoint id visible, durably.  AlreadyExists when a
  // visible checkpoint has taken its name meanwhile; NotFound when there is
  // no such checkpoint (pruned); OK when it is already committed.
  [[nodiscard]] virtual Status CommitCheckpoint(uint64_t id, CheckpointInfo* out) = 0;
  // Pins (pinned) or unpins the visible checkpoint named name: rewrites its
  // record with the flag, synced before this returns.  A pinned checkpoint
  // is kept by every Prune.  InvalidArgument for a name that is not a
  // checkpoint name; NotFound for an unknown one (a pending checkpoint has
  // none yet); OK, changing nothing, when it already is so.
  // out (may be null): the checkpoint afterwards.
  [[nodiscard]] virtual Status SetPinned(const std::string& name, bool pinned,
                                         CheckpointInfo* out) = 0;
  // The visible checkpoints, oldest first; with_pending: also the pending.
  [[nodiscard]] virtual Status ListCheckpoints(std::vector<CheckpointInfo>* out,
                                               bool with_pending) = 0;
  [[nodiscard]] Status ListCheckpoints(std::vector<CheckpointInfo>* out) {
    return ListCheckpoints(out, false);
  }
  [[nodiscard]] virtual Status GetInfo(StoreInfo* out) = 0;

  // Looks a POINT up: NotFound for an unknown checkpoint or an LSN or time
  // outside the history held; InvalidArgument for bad syntax.
  [[nodiscard]] virtual Status ResolvePoint(const std::string& text, PointInfo* out) = 0;
  // A read-only view of the disk at point.  Its cost grows with the data
  // changed since the point, not with the disk's size.
  [[nodiscard]] virtual Status OpenSnapshot(const PointInfo& point,
                                            std::unique_ptr<Snapshot>* out) = 0;
  // Writes a sparse raw image of the disk at point to options.output, via
  // a temporary file in the same directory that is renamed into place once
  // synced: a failed restore leaves no output file.  The live disk keeps
  // serving meanwhile.
  [[nodiscard]] virtual Status Restore(const PointInfo& point, const RestoreOptions& options,
                                       RestoreResult* out) = 0;
  // Puts the live disks back to point, in place: every disk of the store
  // (a VM's disks go back together).  First records a checkpoint named
  // before-rollback-<UTC time> (so the rollback can itself be undone), then
  // writes, through the journal like any write, the old content of every
  // block changed since point.  History is kept: every
  // later point stays reachable.  Crash-safe: a rollback interrupted by a
  // crash is finished when the store is next opened.  The caller must keep
  // other writers away while it runs.
  [[nodiscard]] virtual Status Rollback(const PointInfo& point, const RollbackOptions& options,
                                        RollbackResult* out) = 0;
  // The byte ranges whose content differs between two points (in either
  // order), from the redo records between them: only the ranges written in
  // between are read, at both points, to drop those written back to the
  // same bytes.
  [[nodiscard]] virtual Status Diff(const PointInfo& from, const PointInfo& to,
                                    DiffResult* out) = 0;
  // Checks every record's checksum and payload hash, the journal's
  // invariants and, where the journal holds a page's newest content, the
  // live images against it, on every disk.  Damage goes into the report (OK status); the
  // status fails only when verification itself could not run.
  [[nodiscard]] virtual Status Verify(const ProgressFn& progress, VerifyReport* out) = 0;
  // Drops history by a retention policy (PrunePolicy) and reclaims its
  // space.  Busy while a snapshot is open.  Writes may go on meanwhile.
  [[nodiscard]] virtual Status Prune(const PrunePolicy& policy, PruneResult* out) = 0;

  // Stops background work, syncs everything and closes.  Called by the
  // destructor when not called before.
  [[nodiscard]] virtual Status Close() = 0;
};

// "20G", "512M", "4096", "1.5T" -> bytes.  Suffixes K, M, G, T, P (powers
// of 1024), optionally followed by "iB" or "B".
[[nodiscard]] Status ParseSize(const std::string& text, uint64_t* out);
// A checkpoint name: 1-128 characters from [A-Za-z0-9._+-], not starting
// with '.' or '-', not of the form "lsn:..."/"time:...".
[[nodiscard]] Status ValidateCheckpointName(const std::string& name);
// A disk name (disk=NAME): the rules of a checkpoint name, so never '@',
// '/' or ':'.
[[nodiscard]] Status ValidateDiskName(const std::string& name);
// Block size: a power of two from kMinBlockSize to kMaxBlockSize.
[[nodiscard]] Status ValidateBlockSize(uint64_t block_size);

}  // namespace rwd
