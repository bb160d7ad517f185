// StoreImpl: the journaled live disk.
//
// Design (docs/architecture.md has the long form):
//
//  * Write path.  A write locks its page range (RangeLock), builds the new
//    pages (read-modify-write at unaligned edges) and reads the before-image
//    of every recovery block it touches for the first time since the last
//    checkpoint.  It is then sequenced (under seq_mu_, briefly): it gets its
//    LSN, the blocks it is first to overwrite in the epoch get their stamps,
//    its pages go into the Overlay (later reads see them) and it joins the
//    journal queue.  A plain write is acknowledged right then, like a write
//    into a page cache: a flush or FUA waits until it is durable.
//  * Journaling.  The committer thread takes the whole queue at a time,
//    appends its payloads to the vlog with one write and its records to
//    RocksDB with one WriteBatch (WAL on, not synced).  It syncs the vlog and
//    then the WAL when a flush or FUA write asks for it (one sync serves
//    every waiter) and at least every sync_interval_us while unsynced
//    records exist.  A failed append or sync refuses all later writes and
//    fails every waiting flush: nothing is acknowledged as durable that is
//    not.
//  * Write-ahead order.  The live image is written only by the applier, and
//    only with records that are already durable.  So a before-image is on
//    stable storage before its block is overwritten, and the image never
//    holds a write the journal lacks.
//  * Recovery.  applied_lsn (in the meta column family) says which records
//    are in the image and synced there; Open replays the rest into the
//    image, syncs it and advances applied_lsn.  Replaying is idempotent.
//  * Checkpoints.  A checkpoint is sequenced like a write, so it orders
//    exactly between writes; it starts a new epoch, and the per-block "saved
//    in epoch" stamps make the next write of every block capture a
//    before-image again.  O(1).
//  * Disks.  A store holds one or several disks (DiskImpl), each with its
//    own image, range lock, epoch stamps and overlay; they share the
//    sequencer, the journal, the committer and the applier, so one LSN
//    sequence and one list of checkpoints cover them all.  Every operation
//    carries its disk's index, as its records do.
#pragma once

#include "format.h"
#include "records.h"
#include "meta_file.h"
#include "vlog.h"

#include <rewind/journal/store.h>

#include <rocksdb/db.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <string>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <unordered_map>
#include <vector>

namespace rwd {

class SnapshotImpl;

// A RocksDB status as a rewind Status, prefixed with what was being done.
Status FromRocks(const rocksdb::Status& s, const std::string& what);
// Whether n bytes at p are all zero.
bool AllZero(const char* p, size_t n);
// The public form of a checkpoint record (undo_bytes not filled in).
CheckpointInfo CheckpointInfoOf(const records::CheckpointRecord& r);

// Excludes overlapping byte ranges from each other.  Writers hold their
// page-aligned range from building their pages until they are sequenced
// (and, for zero and trim, until the applier has executed them); readers of
// snapshots hold a block's range while they decide where its old content
// lives.
class RangeLock {
 public:
  void Lock(uint64_t begin, uint64_t end);
  void Unlock(uint64_t begin, uint64_t end);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<uint64_t, uint64_t> held_;  // begin -> end; GUARDED_BY(mu_)
};

// Per-block "before-image saved in epoch E" stamps, stored as E+1 (0: never).
// Pages of stamps are allocated on first use so memory follows the blocks
// written, not the disk's size.
class EpochStamps {
 public:
  explicit EpochStamps(uint64_t blocks);
  ~EpochStamps();
  EpochStamps(const EpochStamps&) = delete;
  EpochStamps& operator=(const EpochStamps&) = delete;
  uint32_t Get(uint64_t block) const;
  void Set(uint64_t block, uint32_t stamp);

 private:
  static constexpr uint64_t kPerPage = 4096;
  std::vector<std::atomic<std::atomic<uint32_t>*>> pages_;
  std::mutex alloc_mu_;
};

// Pages whose newest content is journaled but not yet in the image.
//
// Every write puts its pages here and the applier removes them once they
// are in the image, so Put and RemoveIf are on the hot path of every
// request.  Each shard is an open-addressing hash table (linear probing,
// tombstones, no allocation per entry), locked by its own mutex.
class Overlay {
 public:
  explicit Overlay(uint32_t page_size) : page_size_(page_size) {}
  // Copies the page into out and returns true when the overlay holds it.
  bool Read(uint64_t page, char* out) const;
  void Put(uint64_t page, uint64_t lsn, std::shared_ptr<const char> data);
  // Removes the page if its entry is still the one written at lsn.
  void RemoveIf(uint64_t page, uint64_t lsn);
  bool Empty() const { return count_.load(std::memory_order_acquire) == 0; }

 private:
  static constexpr size_t kShards = 64;
  static constexpr uint64_t kFree = ~0ull;       // slot never used since the last rehash
  static constexpr uint64_t kRemoved = ~0ull - 1;  // tombstone: probing goes on past it
  struct Slot {
    uint64_t page = kFree;
    uint64_t lsn = 0;
    std::shared_ptr<const char> data;  // page_size bytes
  };
  struct Shard {
    mutable std::mutex mu;
    std::vector<Slot> slots;  // GUARDED_BY(mu); size 0 or a power of two
    size_t used = 0;          // GUARDED_BY(mu): live entries
    size_t removed = 0;       // GUARDED_BY(mu): tombstones
    // The slot holding page, or nullptr.
    const Slot* Find(uint64_t page) const;
    Slot* Find(uint64_t page) { return const_cast<Slot*>(std::as_const(*this).Find(page)); }
    // Rebuilds the table with room for at least want live entries.
    void Rehash(size_t want);
  };
  static size_t Hash(uint64_t page) {
    return static_cast<size_t>((page / kShards) * 0x9E3779B97F4A7C15ull >> 20);
  }
  uint32_t page_size_;
  Shard shards_[kShards];
  std::atomic<uint64_t> count_{0};
};

class StoreImpl;

// One disk of a store: the public handle (Disk), whose calls go to the
// StoreImpl with this disk, and the disk's own live state.  The image is
// set by StoreImpl::Init and released by Close; the rest lives as long as
// the store.
class DiskImpl final : public Disk {
 public:
  DiskImpl(StoreImpl* store, uint32_t index, const MetaDisk& meta, uint32_t block_size,
           uint32_t page_size);

  uint32_t index() const override { return index_; }
  const std::string& name() const override { return name_; }
  uint64_t size() const override { return size_; }
  Status Read(uint64_t offset, uint32_t len, void* buf) override;
  Status Write(uint64_t offset, uint32_t len, const void* buf, bool fua) override;
  Status Zero(uint64_t offset, uint64_t len, bool fua, bool trim) override;
  Status Flush() override;
  Status Extents(uint64_t offset, uint64_t len,
                 const std::function<void(uint64_t, uint64_t, bool)>& fn) override;
  Status OpenSnapshot(const PointInfo& point, std::unique_ptr<Snapshot>* out) override;
  Status Restore(const PointInfo& point, const RestoreOptions& options,
                 RestoreResult* out) override;
  Status Diff(const PointInfo& from, const PointInfo& to, DiffResult* out) override;

  const std::string& image_path() const { return image_path_; }
  uint64_t BlockCount() const { return blocks_; }
  // The length of a recovery block: block_size, short for the last one.
  uint64_t BlockLength(uint64_t block) const;
  // How messages name the disk after what they say: "" for an unnamed
  // disk, else " of disk NAME".
  std::string Of() const { return name_.empty() ? "" : " of disk " + name_; }

  std::unique_ptr<ImageFile> image;
  RangeLock range_lock;
  EpochStamps stamps;
  Overlay overlay;
  // Written since its last sync: set by the applier after each image write
  // completes, cleared by SyncImages just before it syncs.
  std::atomic<bool> image_dirty{false};

 private:
  StoreImpl* const store_;
  const uint32_t index_;
  const std::string name_;
  const uint64_t size_;
  const std::string image_path_;
  const uint32_t block_size_;
  const uint64_t blocks_;
};

// A before-image on its way into the journal.
struct UndoEntry {
  uint64_t block = 0;
  records::UndoHeader h;
  std::string content;  // empty for kZeros
  VlogRef ref;
};

// One entry of the journal queue: sequenced (LSN, epoch, before-images,
// visible to reads) and waiting for the committer to journal it.
struct JournalOp {
  enum class Kind { kWrite, kZero, kTrim, kCheckpoint } kind = Kind::kWrite;
  uint32_t disk = 0;   // the disk's index (not for kCheckpoint: it covers all)
  uint64_t seq = 0;    // order of sequencing; durability is tracked by it
  uint64_t lsn = 0;    // kCheckpoint: the LSN it covers (no LSN of its own)
  uint64_t epoch = 0;  // the epoch the operation belongs to
  int64_t time_ns = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool fua = false;
  // kWrite: the new content of pages [first_page, first_page + npages);
  // the bytes written start head bytes into it.
  uint64_t first_page = 0;
  uint64_t npages = 0;
  uint32_t head = 0;
  std::shared_ptr<char> pages;
  std::vector<UndoEntry> undo;
  // kCheckpoint
  uint64_t checkpoint_id = 0;
  std::string name;
  format::CheckpointKind checkpoint_kind = format::CheckpointKind::kDisk;
  bool pending = false;
  bool pinned = false;
  bool supervised = false;
};
using OpKind = JournalOp::Kind;

// An operation the applier must carry into the image, in LSN order.
struct ApplyOp {
  uint32_t disk = 0;
  uint64_t lsn = 0;
  uint64_t seq = 0;
  OpKind kind = OpKind::kWrite;
  uint64_t offset = 0;  // kWrite: first_page * page_size
  uint64_t length = 0;
  uint64_t first_page = 0;
  uint64_t npages = 0;
  std::shared_ptr<char> pages;
};

class StoreImpl final : public Store {
 public:
  StoreImpl(const StoreOptions& options, const MetaFile& meta);
  ~StoreImpl() override;

  // Opens RocksDB, runs recovery and starts the background threads.
  [[nodiscard]] Status Init(bool created);

  uint64_t size() const override { return disks_[0]->size(); }
  uint32_t block_size() const override { return meta_.block_size; }
  const std::string& dir() const override { return options_.dir; }
  size_t disk_count() const override { return disks_.size(); }
  Disk* disk(size_t i) override { return i < disks_.size() ? disks_[i].get() : nullptr; }

  Status Read(uint64_t offset, uint32_t len, void* buf) override;
  Status Write(uint64_t offset, uint32_t len, const void* buf, bool fua) override;
  Status Zero(uint64_t offset, uint64_t len, bool fua, bool trim) override;
  Status Flush() override;
  Status Extents(uint64_t offset, uint64_t len,
                 const std::function<void(uint64_t, uint64_t, bool)>& fn) override;
  using Store::Checkpoint;
  using Store::ListCheckpoints;
  Status Checkpoint(const CheckpointOptions& options, CheckpointInfo* out) override;
  Status CommitCheckpoint(uint64_t id, CheckpointInfo* out) override;
  Status SetPinned(const std::string& name, bool pinned, CheckpointInfo* out) override;
  // r as ListCheckpoints reports it: with the undo bytes it holds.
  CheckpointInfo InfoWithUndo(const records::CheckpointRecord& r);
  Status ListCheckpoints(std::vector<CheckpointInfo>* out, bool with_pending) override;
  Status GetInfo(StoreInfo* out) override;
  Status ResolvePoint(const std::string& text, PointInfo* out) override;
  Status OpenSnapshot(const PointInfo& point, std::unique_ptr<Snapshot>* out) override;
  Status Restore(const PointInfo& point, const RestoreOptions& options,
                 RestoreResult* out) override;
  Status Rollback(const PointInfo& point, const RollbackOptions& options,
                  RollbackResult* out) override;
  Status Diff(const PointInfo& from, const PointInfo& to, DiffResult* out) override;
  Status Verify(const ProgressFn& progress, VerifyReport* out) override;
  Status Prune(const PrunePolicy& policy, PruneResult* out) override;
  Status Close() override;

  // The calls of a disk (Store's own act on the first disk).
  Status ReadOn(DiskImpl& d, uint64_t offset, uint32_t len, void* buf);
  Status WriteOn(DiskImpl& d, uint64_t offset, uint32_t len, const void* buf, bool fua);
  Status ZeroOn(DiskImpl& d, uint64_t offset, uint64_t len, bool fua, bool trim);
  Status ExtentsOn(DiskImpl& d, uint64_t offset, uint64_t len,
                   const std::function<void(uint64_t, uint64_t, bool)>& fn);
  Status OpenSnapshotOn(DiskImpl& d, const PointInfo& point, std::unique_ptr<Snapshot>* out);
  Status RestoreOn(DiskImpl& d, const PointInfo& point, const RestoreOptions& options,
                   RestoreResult* out);
  Status DiffOn(DiskImpl& d, const PointInfo& from, const PointInfo& to, DiffResult* out);

 private:
  // store_open.cc
  Status OpenDb(bool created);
  Status CheckDbMeta(bool created);
  Status OpenImages(bool created);
  Status Recover();
  Status LoadState();

  // history.cc
  friend class SnapshotImpl;
  Status LoadCheckpoints(std::vector<records::CheckpointRecord>* out);
  Status GetRedo(uint64_t lsn, records::RedoHeader* h);
  // Reads a record's payload from the vlog and checks its hash: Corruption
  // when it is missing, short or damaged.  what names the record.
  Status ReadPayload(const records::PayloadRef& ref, uint64_t length, const std::string& what,
                     std::string* out);
  // history.cc (rollback)
  // Writes the old content of every block changed since lsn, on every
  // disk; the caller holds rollback_mu_.  examined/rewritten: bytes.
  Status ApplyRollback(uint64_t lsn, const ProgressFn& progress, uint64_t* examined,
                       uint64_t* rewritten);
  Status RollbackDisk(DiskImpl& d, SnapshotImpl& snap, const std::vector<uint64_t>& blocks,
                      const ProgressFn& progress, uint64_t total, uint64_t* examined,
                      uint64_t* rewritten);
  // The rollback marker in the meta family, written and deleted with a
  // synced WAL write (payload log synced first).
  Status PutRollbackMarker(uint64_t lsn, uint64_t checkpoint_id);
  Status DeleteRollbackMarker();
  Status SyncedMetaWrite(rocksdb::WriteBatch* batch);
  // Finishes a rollback a crash interrupted (Init calls it).
  Status ResumeRollback();
  std::mutex rollback_mu_;  // one rollback or prune at a time
  // The oldest reachable LSN (meta history_start), raised by Prune.
  std::atomic<uint64_t> history_start_{0};
  std::atomic<uint64_t> open_snapshots_{0};

  // store_write.cc
  Status CheckWritable() const;
  Status ReadLogical(DiskImpl& d, uint64_t offset, uint64_t len, char* out);
  // Reads the content of every block of d in [first, last] not yet saved
  // in epoch (the caller holds the range lock of the pages it writes).
  Status ReadBefore(DiskImpl& d, uint64_t first, uint64_t last, uint64_t epoch,
                    std::map<uint64_t, std::string>* out);
  // Gives op its seq, LSN and epoch, keeps the before-images of the blocks
  // of d it is the first to overwrite in the epoch, makes a write visible
  // to reads and queues op for the committer.  Returns op's seq.  d is null
  // for a checkpoint.
  Status Sequence(JournalOp&& op, DiskImpl* d, std::map<uint64_t, std::string>* before,
                  uint64_t read_epoch, uint64_t* seq, CheckpointInfo* cp_out = nullptr);
  Status ZeroChunk(DiskImpl& d, uint64_t offset, uint64_t len, bool trim);
  Status WaitDurable(uint64_t seq);
  Status WaitApplied(uint64_t seq);
  // Waits until everything sequenced so far is in RocksDB (not synced).
  Status WaitCommitted();
  Status WaitForRoom(uint64_t bytes);
  void Refuse(const Status& why);

  // committer.cc
  void CommitterLoop();
  Status CommitOps(std::vector<JournalOp>& ops);
  Status SyncJournal();

  // applier.cc
  void ApplierLoop();
  void SyncerLoop();
  // Asks the syncer to sync the images and record lsn as applied; false
  // when it is still busy with an earlier request (ask again later).
  bool RequestImageSync(uint64_t lsn);
  Status ApplyOps(std::vector<ApplyOp>& ops);
  Status ApplyWrites(std::vector<ApplyOp>& ops, size_t begin, size_t end);
  Status PersistApplied(uint64_t lsn);
  // ApplyWrites' working space, kept across rounds (applier thread only).
  struct PageToApply {
    uint32_t disk;
    uint64_t page;
    uint64_t lsn;
    const char* data;
  };
  std::vector<PageToApply> apply_pages_;
  std::vector<IoVec> apply_iov_;
  void StopThreads();

  uint64_t NowNs() const;
  // The disk a record names, or null when the store has no such disk.
  DiskImpl* DiskOf(uint32_t index) const {
    return index < disks_.size() ? disks_[index].get() : nullptr;
  }
  // Syncs the image of every disk written since its last sync
  // (image_dirty), or of every disk when all is true.
  Status SyncImages(bool all);

  const StoreOptions options_;
  const MetaFile meta_;
  const uint32_t page_size_;
  // Every disk, in order: disks_[i] has index i.  Fixed at construction.
  std::vector<std::unique_ptr<DiskImpl>> disks_;
  std::unique_ptr<rocksdb::Env> env_;  // wraps options_.fs when given
  std::unique_ptr<rocksdb::DB> db_;
  std::unique_ptr<Vlog> vlog_;  // payloads; synced before the WAL
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* redo_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* undo_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* cp_cf_ = nullptr;

  // The sequencer: everything that orders operations happens under seq_mu_
  // (LSNs, seqs, epochs and stamps, overlay publication, the queue).
  std::mutex seq_mu_;
  std::condition_variable committer_cv_;                  // on seq_mu_
  std::vector<JournalOp> journal_queue_;                  // GUARDED_BY(seq_mu_)
  uint64_t next_seq_ = 0;                                 // GUARDED_BY(seq_mu_)
  uint64_t sync_wanted_ = 0;                              // GUARDED_BY(seq_mu_)
  bool committer_stop_ = false;                           // GUARDED_BY(seq_mu_)
  // The journal queue is committed once it holds kCommitWakeOps operations,
  // when someone waits for it (commit_wanted_, sync_wanted_), or at the
  // latest every sync_interval_us: non-FUA writes are acknowledged already,
  // so waking the committer for each one would only cost context switches.
  static constexpr size_t kCommitWakeOps = 64;
  uint64_t commit_wanted_ = 0;                            // GUARDED_BY(seq_mu_)
  std::atomic<uint64_t> last_lsn_{0};                     // highest LSN given out
  // Time of the newest operation: times never decrease with the LSN, even
  // when the wall clock steps back (time: points search on that).
  int64_t last_time_ns_ = 0;                              // GUARDED_BY(seq_mu_)
  std::atomic<uint64_t> epoch_{0};                        // newest checkpoint id
  uint64_t next_checkpoint_id_ = 1;                       // GUARDED_BY(seq_mu_)
  std::mutex cp_mu_;
  std::map<std::string, uint64_t> checkpoint_names_;      // GUARDED_BY(cp_mu_)

  // Serialises db_->Write with db_->SyncWAL.  After a failed WAL write,
  // RocksDB must not be asked to sync that WAL (7.8 aborts on an assertion
  // in WritableFileWriter); under this mutex the failure is recorded in
  // refused_ before any sync can start.
  std::mutex wal_mu_;

  // Durability and application state.  Every JournalOp has a seq; an op is
  // in RocksDB once committed_seq_ reaches its seq and synced once
  // durable_seq_ does.
  std::mutex state_mu_;
  std::condition_variable state_cv_;
  std::atomic<uint64_t> committed_seq_{0};
  std::atomic<uint64_t> durable_seq_{0};
  std::atomic<uint64_t> applied_seq_{0};     // every op of groups <= this is in the image
  std::atomic<uint64_t> applied_lsn_{0};     // every LSN <= this is in the image
  std::deque<ApplyOp> apply_queue_;          // GUARDED_BY(state_mu_)
  std::atomic<uint64_t> pending_bytes_{0};   // sequenced write bytes not yet in the image
  std::atomic<uint64_t> unsynced_bytes_{0};  // sequenced write bytes not yet durable
  // The applied_lsn last recorded in RocksDB: by recovery, the syncer, Close.
  std::atomic<uint64_t> persisted_applied_{0};
  uint64_t recovery_cut_records_ = 0;        // redo records dropped by the last Open
  // Recovery found a damaged payload at or below synced_lsn: the error, and
  // whether drop_damaged_journal made it cut there anyway.
  Status recovery_damage_;
  // newest: the larger of applied_lsn and synced_lsn, as recovery read them.
  Status CheckWalAgainstMarks(const std::string& damaged, uint64_t newest);
  Status LowerSyncMarks(uint64_t lsn);
  Status ReadHistoryStart(uint64_t* out);
  bool dropped_damaged_ = false;
  // The committer's: the highest LSN in a batch written to the WAL, and the
  // synced_lsn it last wrote there (committer.cc, SyncJournal).
  uint64_t committed_lsn_ = 0;
  uint64_t synced_mark_ = 0;
  // The newest sync mark in the payload log (found by recovery, then the
  // last one the committer appended).
  uint64_t vlog_marked_ = 0;
  bool stopping_ = false;                    // GUARDED_BY(state_mu_)
  std::atomic<bool> refused_{false};
  std::string refused_reason_;               // GUARDED_BY(state_mu_)
  std::thread committer_;
  std::thread applier_;
  // The image syncer (applier.cc, thread rwd-imgsync): syncs the images and
  // then records applied_lsn, on request of the applier, which goes on
  // applying meanwhile.
  std::thread syncer_;
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  uint64_t sync_request_lsn_ = 0;  // GUARDED_BY(sync_mu_): 0 when none is waiting
  bool sync_busy_ = false;         // GUARDED_BY(sync_mu_): a request taken, not finished
  bool sync_stop_ = false;         // GUARDED_BY(sync_mu_)
  bool closed_ = false;
};

}  // namespace rwd
