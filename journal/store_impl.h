// StoreImpl: the journaled live disk.
//
// Design (docs/architecture.md has the long form):
//
//  * Write path.  A write locks its page range (RangeLock), builds the new
//    pages (read-modify-write at unaligned edges) and reads the before-image
//    of every recovery block it touches for the first time since the last
//    checkpoint.  It then joins the commit queue.  The queue's leader gives
//    the queued requests consecutive LSNs, puts their redo and undo records
//    into one RocksDB WriteBatch (WAL on, not synced) and publishes the new
//    pages in the Overlay.  The write is then acknowledged: later reads see
//    it through the overlay.
//  * Write-ahead order.  The live image is written only by the applier, and
//    only with records that are already durable in the WAL (LSN <= durable
//    LSN).  So a before-image is on stable storage before its block is
//    overwritten, and the image never holds a write the journal lacks.
//  * Group commit.  The syncer thread syncs the WAL when a flush or FUA write
//    asks for it (one sync serves every waiter) and at least every
//    sync_interval_us while unsynced records exist.
//  * Recovery.  applied_lsn (in the meta column family) says which records
//    are in the image and synced there; Open replays the rest into the
//    image, syncs it and advances applied_lsn.  Replaying is idempotent.
//  * Checkpoints.  A checkpoint is one small record put through the commit
//    queue in a group of its own, so it orders exactly between writes; it
//    starts a new epoch, and the per-block "saved in epoch" stamps make the
//    next write of every block capture a before-image again.  O(1).
#pragma once

#include "format.h"
#include "meta_file.h"

#include <rewind/journal/store.h>

#include <rocksdb/db.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

namespace rwd {

// A RocksDB status as a rewind Status, prefixed with what was being done.
Status FromRocks(const rocksdb::Status& s, const std::string& what);

// Excludes overlapping byte ranges from each other.  Writers hold their
// page-aligned range from building their pages until the commit (and, for
// zero and trim, until the applier has executed them).
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
class Overlay {
 public:
  struct Entry {
    uint64_t lsn = 0;
    std::shared_ptr<const char> data;  // page_size bytes
  };
  explicit Overlay(uint32_t page_size) : page_size_(page_size) {}
  // Copies the page into out and returns true when the overlay holds it.
  bool Read(uint64_t page, char* out) const;
  void Put(uint64_t page, uint64_t lsn, std::shared_ptr<const char> data);
  // Removes the page if its entry is still the one written at lsn.
  void RemoveIf(uint64_t page, uint64_t lsn);
  bool Empty() const { return count_.load(std::memory_order_acquire) == 0; }

 private:
  static constexpr size_t kShards = 64;
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, Entry> map;  // GUARDED_BY(mu)
  };
  uint32_t page_size_;
  Shard shards_[kShards];
  std::atomic<uint64_t> count_{0};
};

// One request in the commit queue.
struct CommitRequest {
  enum class Kind { kWrite, kZero, kTrim, kCheckpoint } kind = Kind::kWrite;
  uint64_t offset = 0;
  uint64_t length = 0;
  const char* payload = nullptr;  // the bytes written (kWrite)
  bool fua = false;
  // kWrite: the new content of pages [first_page, first_page + npages).
  uint64_t first_page = 0;
  uint64_t npages = 0;
  std::shared_ptr<char> pages;
  // Before-images read before joining the queue, valid if read_epoch is
  // still the epoch when the leader commits.
  uint64_t read_epoch = 0;
  std::map<uint64_t, std::string> before;  // block -> content
  // kCheckpoint
  std::string name;
  CheckpointInfo* checkpoint_out = nullptr;
  // Filled by the leader.
  uint64_t lsn = 0;
  uint64_t seq = 0;  // commit group sequence: durability is tracked by it
  bool done = false;
  Status status;
  std::condition_variable cv;
};

// An operation the applier must carry into the image, in LSN order.
struct ApplyOp {
  uint64_t lsn = 0;
  uint64_t seq = 0;
  CommitRequest::Kind kind = CommitRequest::Kind::kWrite;
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

  uint64_t size() const override { return meta_.size; }
  uint32_t block_size() const override { return meta_.block_size; }
  const std::string& dir() const override { return options_.dir; }

  Status Read(uint64_t offset, uint32_t len, void* buf) override;
  Status Write(uint64_t offset, uint32_t len, const void* buf, bool fua) override;
  Status Zero(uint64_t offset, uint64_t len, bool fua, bool trim) override;
  Status Flush() override;
  Status Extents(uint64_t offset, uint64_t len,
                 const std::function<void(uint64_t, uint64_t, bool)>& fn) override;
  Status Checkpoint(const std::string& name, CheckpointInfo* out) override;
  Status ListCheckpoints(std::vector<CheckpointInfo>* out) override;
  Status GetInfo(StoreInfo* out) override;
  Status Close() override;

 private:
  // store_open.cc
  Status OpenDb(bool created);
  Status CheckDbMeta(bool created);
  Status Recover();
  Status LoadState();

  // store_write.cc
  Status CheckWritable() const;
  Status ReadLogical(uint64_t offset, uint64_t len, char* out);
  Status ReadBefore(uint64_t first_block, uint64_t last_block, CommitRequest* req);
  Status Commit(CommitRequest* req);
  void LeadGroup(std::unique_lock<std::mutex>& l);
  Status BuildBatch(const std::vector<CommitRequest*>& group, rocksdb::WriteBatch* batch);
  Status AddUndo(CommitRequest* r, rocksdb::WriteBatch* batch);
  Status AddCheckpoint(CommitRequest* r, rocksdb::WriteBatch* batch);
  void Publish(const std::vector<CommitRequest*>& group);
  Status ZeroChunk(uint64_t offset, uint64_t len, bool trim);
  Status WaitDurable(uint64_t seq);
  Status WaitApplied(uint64_t seq);
  Status WaitForRoom();
  void Refuse(const Status& why);

  // applier.cc
  void SyncerLoop();
  void ApplierLoop();
  Status ApplyOps(std::vector<ApplyOp>& ops);
  Status ApplyWrites(std::vector<ApplyOp>& ops, size_t begin, size_t end);
  Status PersistApplied(uint64_t lsn);
  void StopThreads();

  uint64_t NowNs() const;
  uint64_t BlockCount() const { return (meta_.size + meta_.block_size - 1) / meta_.block_size; }
  uint64_t BlockLength(uint64_t block) const;

  const StoreOptions options_;
  const MetaFile meta_;
  const uint32_t page_size_;
  std::unique_ptr<ImageFile> image_;
  std::unique_ptr<rocksdb::Env> env_;  // wraps options_.fs when given
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* redo_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* undo_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* cp_cf_ = nullptr;

  RangeLock range_lock_;
  EpochStamps stamps_;
  Overlay overlay_;

  // Commit queue (leader/follower group commit, after LevelDB's writers_).
  std::mutex commit_mu_;
  std::deque<CommitRequest*> queue_;                     // GUARDED_BY(commit_mu_)
  std::atomic<uint64_t> last_lsn_{0};                    // highest LSN given out
  std::atomic<uint64_t> epoch_{0};                       // newest checkpoint id
  uint64_t next_checkpoint_id_ = 1;                      // leader only
  std::mutex cp_mu_;
  std::map<std::string, uint64_t> checkpoint_names_;     // GUARDED_BY(cp_mu_)

  // Serialises db_->Write with db_->SyncWAL.  After a failed WAL write,
  // RocksDB must not be asked to sync that WAL (7.8 aborts on an assertion
  // in WritableFileWriter); under this mutex the failure is recorded in
  // refused_ before any sync can start.
  std::mutex wal_mu_;

  // Durability and application state.
  std::mutex state_mu_;
  std::condition_variable state_cv_;
  // Commit groups are numbered by seq; a group's records are in the WAL
  // once committed_seq_ reaches it and synced once durable_seq_ does.
  uint64_t next_seq_ = 0;                    // GUARDED_BY(commit_mu_)
  std::atomic<uint64_t> committed_seq_{0};
  std::atomic<uint64_t> durable_seq_{0};
  std::atomic<uint64_t> applied_seq_{0};     // every op of groups <= this is in the image
  std::atomic<uint64_t> applied_lsn_{0};     // every LSN <= this is in the image
  uint64_t sync_wanted_ = 0;                 // GUARDED_BY(state_mu_)
  std::deque<ApplyOp> apply_queue_;          // GUARDED_BY(state_mu_)
  uint64_t pending_bytes_ = 0;               // GUARDED_BY(state_mu_)
  uint64_t persisted_applied_ = 0;           // applier thread only
  bool stopping_ = false;                    // GUARDED_BY(state_mu_)
  std::atomic<bool> refused_{false};
  std::string refused_reason_;               // GUARDED_BY(state_mu_)
  std::thread syncer_;
  std::thread applier_;
  bool closed_ = false;
};

}  // namespace rwd
