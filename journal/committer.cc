// The committer: journals sequenced operations (group commit) and makes
// them durable.  One thread does both, so a RocksDB WAL write and a WAL
// sync never overlap, and a failed write is known before any sync.
#include "records.h"
#include "store_impl.h"

#include <rewind/journal/fault_point.h>

#include <rocksdb/write_batch.h>

#include <chrono>

namespace rwd {

namespace {
// Caps one commit group: its payloads are staged in one buffer.
constexpr size_t kMaxGroupOps = 4096;
constexpr uint64_t kMaxGroupBytes = 64ull << 20;
}  // namespace

void StoreImpl::CommitterLoop() {
  using Clock = std::chrono::steady_clock;
  const auto interval = std::chrono::microseconds(options_.sync_interval_us);
  auto last_sync = Clock::now();
  // Bytes of the writes committed since the last sync (as WaitForRoom
  // counted them): given back to unsynced_bytes_ when they are durable.
  // Only counted under a limit (max_unsynced_bytes).
  const bool count_unsynced = options_.max_unsynced_bytes != 0;
  uint64_t committed_unsynced = 0;
  std::vector<JournalOp> ops, rest;
  std::unique_lock<std::mutex> l(seq_mu_);
  for (;;) {
    committer_cv_.wait_until(l, last_sync + interval, [&] {
      return committer_stop_ || journal_queue_.size() >= kCommitWakeOps ||
             (!journal_queue_.empty() && commit_wanted_ > committed_seq_.load()) ||
             sync_wanted_ > durable_seq_.load(std::memory_order_relaxed) ||
             refused_.load(std::memory_order_relaxed);
    });
    if (refused_.load()) return;
    ops.clear();
    ops.swap(journal_queue_);
    const uint64_t wanted = sync_wanted_;
    const bool stop = committer_stop_;
    l.unlock();

    // Journal the queue in groups of bounded size, in order.
    size_t begin = 0;
    while (begin < ops.size()) {
      size_t end = begin;
      uint64_t bytes = 0;
      while (end < ops.size() && end - begin < kMaxGroupOps && bytes <= kMaxGroupBytes) {
        bytes += ops[end].kind == OpKind::kWrite ? ops[end].length : 0;
        bytes += ops[end].undo.size() * meta_.block_size;
        end++;
      }
      rest.clear();
      for (size_t i = begin; i < end; i++) {
        if (count_unsynced && ops[i].kind == OpKind::kWrite) {
          committed_unsynced += ops[i].npages * page_size_;
        }
        rest.push_back(std::move(ops[i]));
      }
      Status s = CommitOps(rest);
      if (!s.ok()) {
        Refuse(s);
        return;
      }
      begin = end;
    }

    const uint64_t committed = committed_seq_.load(std::memory_order_acquire);
    const uint64_t durable = durable_seq_.load(std::memory_order_acquire);
    if (committed > durable &&
        (wanted > durable || stop || Clock::now() - last_sync >= interval)) {
      Status s = SyncJournal();
      if (!s.ok()) {
        Refuse(s);
        return;
      }
      last_sync = Clock::now();
      std::lock_guard<std::mutex> g(state_mu_);
      durable_seq_.store(committed, std::memory_order_release);
      if (committed_unsynced != 0) {
        unsynced_bytes_.fetch_sub(committed_unsynced, std::memory_order_acq_rel);
        committed_unsynced = 0;
      }
      state_cv_.notify_all();
    } else if (committed == durable) {
      last_sync = Clock::now();
    }
    l.lock();
    if (stop && journal_queue_.empty()) return;
  }
}

// Payloads first (one vlog append), then the records pointing at them
// (one WriteBatch), then hand the operations to the applier.
Status StoreImpl::CommitOps(std::vector<JournalOp>& ops) {
  std::vector<Vlog::Piece> pieces;
  for (JournalOp& op : ops) {
    for (UndoEntry& u : op.undo) {
      if (u.h.kind != format::UndoKind::kData) continue;
      u.h.payload.hash = records::PayloadHash(u.content);
      pieces.push_back(Vlog::Piece{u.content, &u.ref});
    }
  }
  std::vector<VlogRef> refs(ops.size());
  std::vector<uint64_t> hashes(ops.size());
  for (size_t i = 0; i < ops.size(); i++) {
    JournalOp& op = ops[i];
    if (op.kind != OpKind::kWrite) continue;
    std::string_view payload(op.pages.get() + op.head, op.length);
    hashes[i] = records::PayloadHash(payload);
    pieces.push_back(Vlog::Piece{payload, &refs[i]});
  }
  FaultPoint("write.before_vlog");
  // A sync completed since the last mark: this append carries the newest
  // one's LSN for recovery to check the WAL against.
  const uint64_t mark = !pieces.empty() && synced_mark_ > vlog_marked_ ? synced_mark_ : 0;
  Status s = vlog_->Append(pieces, mark);
  if (!s.ok()) return s;
  if (mark != 0) vlog_marked_ = mark;

  rocksdb::WriteBatch batch;
  rocksdb::Status rs;
  std::map<uint64_t, uint64_t> undo_bytes;  // epoch -> bytes
  bool has_checkpoint = false;
  for (size_t i = 0; i < ops.size() && rs.ok(); i++) {
    JournalOp& op = ops[i];
    if (op.kind == OpKind::kCheckpoint) {
      records::CheckpointRecord rec;
      rec.id = op.checkpoint_id;
      rec.name = op.name;
      rec.kind = op.checkpoint_kind;
      rec.pending = op.pending;
      rec.pinned = op.pinned;
      rec.supervised = op.supervised;
      rec.lsn = op.lsn;
      rec.time_ns = op.time_ns;
      rs = batch.Put(cp_cf_, records::CheckpointKey(rec.id), records::EncodeCheckpoint(rec));
      has_checkpoint = true;
      continue;
    }
    for (UndoEntry& u : op.undo) {
      if (u.h.kind == format::UndoKind::kData) {
        u.h.payload.segment = u.ref.segment;
        u.h.payload.offset = u.ref.offset;
      }
      std::string key = records::UndoKey(op.epoch, op.disk, u.block);
      std::string value = records::EncodeUndo(key, u.h);
      undo_bytes[op.epoch] += key.size() + value.size() + u.content.size();
      if (rs.ok()) rs = batch.Put(undo_cf_, key, value);
    }
    records::RedoHeader h;
    h.type = op.kind == OpKind::kWrite  ? format::RedoType::kWrite
             : op.kind == OpKind::kZero ? format::RedoType::kZero
                                        : format::RedoType::kTrim;
    h.flags = op.fua ? format::kRedoFlagFua : 0;
    h.disk = op.disk;
    h.offset = op.offset;
    h.length = op.length;
    h.time_ns = op.time_ns;
    if (op.kind == OpKind::kWrite) h.payload = records::PayloadRef{refs[i].segment, refs[i].offset, hashes[i]};
    char value[format::kRedoValueSize];
    records::EncodeRedo(op.lsn, h, value);
    if (rs.ok()) {
      rs = batch.Put(redo_cf_, records::RedoKey(op.lsn), rocksdb::Slice(value, sizeof value));
    }
  }
  for (const auto& [epoch, bytes] : undo_bytes) {
    char buf[8];
    records::PutLE64(buf, bytes);
    if (rs.ok()) rs = batch.Merge(meta_cf_, records::UndoBytesKey(epoch), rocksdb::Slice(buf, 8));
  }
  if (!rs.ok()) return FromRocks(rs, "build journal batch");
  {
    std::lock_guard<std::mutex> w(wal_mu_);
    s = FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "journal write");
  }
  if (!s.ok()) return s;
  FaultPoint(has_checkpoint ? "checkpoint.after_commit" : "write.after_commit");

  // To the applier, which writes the image once they are durable.
  const uint64_t ps = page_size_;
  std::lock_guard<std::mutex> g(state_mu_);
  for (JournalOp& op : ops) {
    if (op.kind == OpKind::kCheckpoint) continue;
    ApplyOp a;
    a.disk = op.disk;
    a.lsn = op.lsn;
    a.seq = op.seq;
    a.kind = op.kind;
    if (op.kind == OpKind::kWrite) {
      a.first_page = op.first_page;
      a.npages = op.npages;
      a.pages = std::move(op.pages);
      a.offset = op.first_page * ps;
      a.length = op.npages * ps;
    } else {
      a.offset = op.offset;
      a.length = op.length;
    }
    apply_queue_.push_back(std::move(a));
  }
  committed_lsn_ = std::max(committed_lsn_, ops.back().lsn);  // ops are in LSN order
  committed_seq_.store(ops.back().seq, std::memory_order_release);
  state_cv_.notify_all();
  return Status::Ok();
}

// The vlog before the WAL: a record made durable by the WAL sync must find
// its payload durable too.  Between the two, synced_lsn records that every
// record written so far has its payloads synced: it reaches the disk with
// (or, written back early, after) those records, so recovery can tell a
// damaged payload at or below it from the torn tail of a crash
// (docs/journal-format.md, "The recovery cut").
Status StoreImpl::SyncJournal() {
  FaultPoint("flush.before_sync");
  Status s = vlog_->Sync();
  if (!s.ok()) return s;
  FaultPoint("flush.after_vlog_sync");
  const uint64_t mark = committed_lsn_;
  {
    // A failed WAL write (here or in PersistApplied) is recorded in
    // refused_ under wal_mu_; RocksDB 7.8 must not be asked to sync then.
    std::lock_guard<std::mutex> w(wal_mu_);
    if (refused_.load(std::memory_order_acquire)) return CheckWritable();
    if (mark > synced_mark_) {
      char buf[8];
      records::PutLE64(buf, mark);
      s = FromRocks(db_->Put(rocksdb::WriteOptions(), meta_cf_, format::kMetaSyncedLsn,
                             rocksdb::Slice(buf, 8)),
                    "record synced LSN");
      if (!s.ok()) {
        Refuse(s);
        return s;
      }
    }
    s = FromRocks(db_->SyncWAL(), "journal sync");
  }
  if (!s.ok()) return s;
  synced_mark_ = std::max(synced_mark_, mark);
  FaultPoint("flush.after_sync");
  return Status::Ok();
}

}  // namespace rwd
