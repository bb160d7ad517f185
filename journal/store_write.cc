// The write path: range locks, before-images, the commit queue (group
// commit), checkpoints, zero and trim.  See the design note in store_impl.h.
#include "records.h"
#include "store_impl.h"

#include <rewind/journal/fault_point.h>

#include <rocksdb/write_batch.h>

#include <cstring>
#include <optional>

namespace rwd {

namespace {

constexpr uint64_t kZeroChunkBytes = 16ull << 20;

// Holds a RangeLock range for a scope.
class RangeGuard {
 public:
  RangeGuard(RangeLock* l, uint64_t b, uint64_t e) : l_(l), b_(b), e_(e) { l_->Lock(b, e); }
  ~RangeGuard() { Release(); }
  void Release() {
    if (l_) l_->Unlock(b_, e_);
    l_ = nullptr;
  }
  RangeGuard(const RangeGuard&) = delete;
  RangeGuard& operator=(const RangeGuard&) = delete;

 private:
  RangeLock* l_;
  uint64_t b_, e_;
};


}  // namespace

Status StoreImpl::CheckWritable() const {
  if (refused_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> l(const_cast<std::mutex&>(state_mu_));
    return Status::ReadOnly("writes refused since " + refused_reason_ +
                            "; restart nbdkit to recover the store");
  }
  return Status::Ok();
}

void StoreImpl::Refuse(const Status& why) {
  std::lock_guard<std::mutex> l(state_mu_);
  if (!refused_.load()) {
    refused_reason_ = why.message();
    refused_.store(true, std::memory_order_release);
  }
  state_cv_.notify_all();
}

Status StoreImpl::WriteOn(DiskImpl& d, uint64_t offset, uint32_t len, const void* buf, bool fua) {
  if (len == 0) return Status::Ok();
  if (offset > d.size() || len > d.size() - offset) {
    return Status::InvalidArgument("write beyond the end of the disk");
  }
  if (len > format::kMaxWriteBytes) {
    return Status::InvalidArgument("a write of " + std::to_string(len) +
                                   " bytes is longer than the journal takes (" +
                                   std::to_string(format::kMaxWriteBytes) + "); split it");
  }
  Status s = CheckWritable();
  if (!s.ok()) return s;
  const uint64_t ps = page_size_;
  JournalOp op;
  op.kind = OpKind::kWrite;
  op.disk = d.index();
  op.offset = offset;
  op.length = len;
  op.fua = fua;
  op.first_page = offset / ps;
  const uint64_t end_page = (offset + len + ps - 1) / ps;
  op.npages = end_page - op.first_page;
  const uint64_t room = op.npages * ps;
  s = WaitForRoom(room);
  if (!s.ok()) return s;
  // Until sequenced, the bytes counted as pending are ours to give back.
  bool sequenced = false;
  struct GiveBack {
    std::atomic<uint64_t>* pending;
    std::atomic<uint64_t>* unsynced;
    uint64_t bytes;
    const bool* done;
    ~GiveBack() {
      if (!*done) {
        pending->fetch_sub(bytes);
        if (unsynced != nullptr) unsynced->fetch_sub(bytes);
      }
    }
  } give_back{&pending_bytes_, options_.max_unsynced_bytes != 0 ? &unsynced_bytes_ : nullptr, room,
              &sequenced};
  RangeGuard guard(&d.range_lock, op.first_page * ps, end_page * ps);

  // One allocation for the buffer and its reference count; the overlay, the
  // committer and the applier share it (aliasing shared_ptrs, no copies).
  {
    auto buffer = std::make_shared_for_overwrite<char[]>(op.npages * ps);
    char* raw = buffer.get();
    op.pages = std::shared_ptr<char>(std::move(buffer), raw);
  }
  char* pages = op.pages.get();
  op.head = static_cast<uint32_t>(offset - op.first_page * ps);
  if (op.head != 0) {
    s = ReadLogical(d, op.first_page * ps, ps, pages);
    if (!s.ok()) return s;
  }
  if ((offset + len) % ps != 0 && (op.npages > 1 || op.head == 0)) {
    s = ReadLogical(d, (end_page - 1) * ps, ps, pages + (op.npages - 1) * ps);
    if (!s.ok()) return s;
  }
  std::memcpy(pages + op.head, buf, len);

  const uint64_t read_epoch = epoch_.load(std::memory_order_acquire);
  std::map<uint64_t, std::string> before;
  s = ReadBefore(d, offset / meta_.block_size, (offset + len - 1) / meta_.block_size, read_epoch,
                 &before);
  if (!s.ok()) return s;
  FaultPoint("write.before_commit");
  uint64_t seq = 0;
  s = Sequence(std::move(op), &d, &before, read_epoch, &seq);
  if (!s.ok()) return s;
  sequenced = true;
  FaultPoint("write.before_ack");
  // Overlapping writes are ordered by their LSNs already: waiting for the
  // sync need not hold them up.
  guard.Release();
  if (fua) return WaitDurable(seq);
  return Status::Ok();
}

Status StoreImpl::ReadBefore(DiskImpl& d, uint64_t first, uint64_t last, uint64_t epoch,
                             std::map<uint64_t, std::string>* out) {
  const uint32_t stamp = static_cast<uint32_t>(epoch + 1);
  uint64_t b = first;
  while (b <= last) {
    if (d.stamps.Get(b) == stamp) {
      b++;
      continue;
    }
    uint64_t e = b;  // read a run of unsaved blocks at once
    while (e + 1 <= last && d.stamps.Get(e + 1) != stamp) e++;
    uint64_t begin = b * meta_.block_size;
    uint64_t end = std::min<uint64_t>((e + 1) * meta_.block_size, d.size());
    std::string run(end - begin, '\0');
    Status s = ReadLogical(d, begin, end - begin, run.data());
    if (!s.ok()) return s;
    for (uint64_t k = b; k <= e; k++) {
      uint64_t off = (k - b) * meta_.block_size;
      out->emplace(k, run.substr(off, d.BlockLength(k)));
    }
    b = e + 1;
  }
  return Status::Ok();
}

// The before-image of a block is its content just before the first write
// to it in an epoch.  The caller read the candidates (ReadBefore) under its
// range lock, before taking seq_mu_; they are right for every block whose
// stamp is still unset when sequencing, provided the epoch did not change in
// between: a write to another part of the same block that was sequenced
// meanwhile would have set the stamp.  If a checkpoint came between, the
// blocks are read again here, under seq_mu_, where nothing can be sequenced
// and every sequenced write is visible through the overlay.
Status StoreImpl::Sequence(JournalOp&& op, DiskImpl* d, std::map<uint64_t, std::string>* before,
                           uint64_t read_epoch, uint64_t* seq, CheckpointInfo* cp_out) {
  const uint64_t ps = page_size_;
  std::unique_lock<std::mutex> l(seq_mu_);
  if (refused_.load(std::memory_order_acquire)) {
    l.unlock();
    return CheckWritable();
  }
  const uint64_t epoch = epoch_.load(std::memory_order_relaxed);
  const uint32_t stamp = static_cast<uint32_t>(epoch + 1);
  op.seq = ++next_seq_;
  op.epoch = epoch;
  op.time_ns = std::max(static_cast<int64_t>(NowNs()), last_time_ns_);
  last_time_ns_ = op.time_ns;
  if (op.kind == OpKind::kCheckpoint) {
    op.lsn = last_lsn_.load(std::memory_order_relaxed);
    op.checkpoint_id = next_checkpoint_id_;
    {
      std::lock_guard<std::mutex> c(cp_mu_);
      if (op.name.empty()) {  // never collide with a name a user chose
        op.name = "cp-" + std::to_string(op.checkpoint_id);
        for (int n = 2; checkpoint_names_.count(op.name); n++) {
          op.name = "cp-" + std::to_string(op.checkpoint_id) + "-" + std::to_string(n);
        }
      } else if (checkpoint_names_.count(op.name)) {
        --next_seq_;
        return Status::AlreadyExists("a checkpoint named '" + op.name + "' already exists");
      }
      // A pending checkpoint takes its name only when committed.
      if (!op.pending) checkpoint_names_[op.name] = op.checkpoint_id;
    }
    next_checkpoint_id_++;
    // Later operations belong to the new epoch: their blocks need new
    // before-images.
    epoch_.store(op.checkpoint_id, std::memory_order_release);
    if (cp_out) {
      cp_out->id = op.checkpoint_id;
      cp_out->name = op.name;
      cp_out->lsn = op.lsn;
      cp_out->time_ns = op.time_ns;
      cp_out->kind = op.checkpoint_kind == format::CheckpointKind::kVm ? "vm" : "disk";
      cp_out->pinned = op.pinned;
      cp_out->supervised = op.supervised;
      cp_out->pending = op.pending;
      cp_out->undo_bytes = 0;
    }
  } else {
    op.lsn = last_lsn_.fetch_add(1, std::memory_order_relaxed) + 1;
    const uint64_t first = op.offset / meta_.block_size;
    const uint64_t last = (op.offset + op.length - 1) / meta_.block_size;
    for (uint64_t b = first; b <= last; b++) {
      if (d->stamps.Get(b) == stamp) continue;
      UndoEntry u;
      u.block = b;
      auto it = before->find(b);
      if (read_epoch == epoch && it != before->end()) {
        u.content = std::move(it->second);
      } else {
        u.content.resize(d->BlockLength(b));
        Status s = ReadLogical(*d, b * meta_.block_size, u.content.size(), u.content.data());
        if (!s.ok()) {
          // Stamps of earlier blocks are set already: refusing keeps every
          // stamp truthful.
          l.unlock();
          Refuse(s);
          return s;
        }
      }
      u.h.length = static_cast<uint32_t>(u.content.size());
      u.h.lsn = op.lsn;
      u.h.kind = AllZero(u.content.data(), u.content.size()) ? format::UndoKind::kZeros
                                                              : format::UndoKind::kData;
      if (u.h.kind == format::UndoKind::kZeros) u.content.clear();
      op.undo.push_back(std::move(u));
      d->stamps.Set(b, stamp);
    }
    if (op.kind == OpKind::kWrite) {
      for (uint64_t p = 0; p < op.npages; p++) {
        d->overlay.Put(op.first_page + p, op.lsn,
                     std::shared_ptr<const char>(op.pages, op.pages.get() + p * ps));
      }
    }
  }
  *seq = op.seq;
  const bool wake = journal_queue_.size() + 1 == kCommitWakeOps || op.kind == OpKind::kCheckpoint;
  journal_queue_.push_back(std::move(op));
  l.unlock();
  if (wake) committer_cv_.notify_one();
  return Status::Ok();
}

// Takes room for bytes of sequenced-but-unapplied writes, waiting while the
// limit would be passed.  Room is only ever taken whole (never reserved
// while waiting), so waiting writers cannot starve each other; a request
// larger than the whole limit goes alone, once nothing else is pending.
//
// Two limits: bytes not yet in the image (max_pending_bytes, given back by
// the applier) and bytes not yet durable (max_unsynced_bytes, given back by
// the committer when it syncs).  The second keeps the journal close behind
// the writers, so that a flush or a checkpoint waits for a few milliseconds
// of journaling, not for hundreds of MiB queued in front of it.  It is
// checked, not reserved: a few writers may pass it together.
Status StoreImpl::WaitForRoom(uint64_t bytes) {
  const uint64_t limit = options_.max_pending_bytes;
  const uint64_t unsynced_limit = options_.max_unsynced_bytes;
  auto take = [&] {
    if (unsynced_limit != 0) {
      const uint64_t unsynced = unsynced_bytes_.load(std::memory_order_acquire);
      if (unsynced != 0 && unsynced + bytes > unsynced_limit) return false;
    }
    uint64_t cur = pending_bytes_.load(std::memory_order_acquire);
    while (cur + bytes <= limit || cur == 0) {
      if (pending_bytes_.compare_exchange_weak(cur, cur + bytes, std::memory_order_acq_rel)) {
        // Counted only under a limit: no shared counter on the write path
        // for nothing.
        if (unsynced_limit != 0) unsynced_bytes_.fetch_add(bytes, std::memory_order_acq_rel);
        return true;
      }
    }
    return false;
  };
  if (take()) return Status::Ok();
  // Over the limit: ask the committer to sync now, so that the applier can
  // carry the queued writes into the image and give their room back.
  {
    std::lock_guard<std::mutex> q(seq_mu_);
    sync_wanted_ = std::max(sync_wanted_, next_seq_);
  }
  committer_cv_.notify_one();
  std::unique_lock<std::mutex> l(state_mu_);
  bool taken = false;
  state_cv_.wait(l, [&] { return refused_.load() || stopping_ || (taken = take()); });
  if (taken) return Status::Ok();  // a refusal now is the caller's to see
  if (stopping_) return Status::Aborted("the store is closing");
  return Status::ReadOnly("writes refused since " + refused_reason_);
}

Status StoreImpl::WaitDurable(uint64_t seq) {
  if (durable_seq_.load(std::memory_order_acquire) >= seq) return Status::Ok();
  {
    std::lock_guard<std::mutex> q(seq_mu_);
    sync_wanted_ = std::max(sync_wanted_, seq);
  }
  committer_cv_.notify_one();
  std::unique_lock<std::mutex> l(state_mu_);
  state_cv_.wait(l, [&] { return durable_seq_.load() >= seq || refused_.load() || stopping_; });
  if (durable_seq_.load() >= seq) return Status::Ok();
  if (refused_.load()) {
    return Status::IOError("not durable: " + refused_reason_ + "; writes are refused until restart");
  }
  return Status::Aborted("the store is closing");
}

Status StoreImpl::WaitCommitted() {
  uint64_t seq;
  {
    std::lock_guard<std::mutex> q(seq_mu_);
    seq = next_seq_;
    commit_wanted_ = std::max(commit_wanted_, seq);
  }
  committer_cv_.notify_one();
  std::unique_lock<std::mutex> l(state_mu_);
  state_cv_.wait(l, [&] { return committed_seq_.load() >= seq || refused_.load() || stopping_; });
  return Status::Ok();  // a refusing store lists what it has
}

Status StoreImpl::WaitApplied(uint64_t seq) {
  Status s = WaitDurable(seq);
  if (!s.ok()) return s;
  std::unique_lock<std::mutex> l(state_mu_);
  state_cv_.wait(l, [&] { return applied_seq_.load() >= seq || refused_.load() || stopping_; });
  if (applied_seq_.load() >= seq) return Status::Ok();
  if (refused_.load()) return Status::IOError("not applied: " + refused_reason_);
  return Status::Aborted("the store is closing");
}

// Everything sequenced before the flush, so every write acknowledged
// before it, becomes durable.
Status StoreImpl::Flush() {
  Status s = CheckWritable();
  if (!s.ok()) return s;
  uint64_t seq;
  {
    std::lock_guard<std::mutex> q(seq_mu_);
    seq = next_seq_;
  }
  return WaitDurable(seq);
}

Status StoreImpl::ZeroOn(DiskImpl& d, uint64_t offset, uint64_t len, bool fua, bool trim) {
  (void)fua;  // a zero or trim returns only once it is durable and applied
  if (len == 0) return Status::Ok();
  if (offset > d.size() || len > d.size() - offset) {
    return Status::InvalidArgument("zero beyond the end of the disk");
  }
  // Chunks end on block boundaries so that each holds its blocks' before-images.
  uint64_t chunk = std::max<uint64_t>(kZeroChunkBytes, meta_.block_size);
  while (len > 0) {
    uint64_t end = std::min(offset + len, (offset / chunk + 1) * chunk);
    Status s = ZeroChunk(d, offset, end - offset, trim);
    if (!s.ok()) return s;
    len -= end - offset;
    offset = end;
  }
  return Status::Ok();
}

Status StoreImpl::ZeroChunk(DiskImpl& d, uint64_t offset, uint64_t len, bool trim) {
  Status s = CheckWritable();
  if (!s.ok()) return s;
  const uint64_t ps = page_size_;
  RangeGuard guard(&d.range_lock, offset / ps * ps, (offset + len + ps - 1) / ps * ps);
  JournalOp op;
  op.kind = trim ? OpKind::kTrim : OpKind::kZero;
  op.disk = d.index();
  op.offset = offset;
  op.length = len;
  const uint64_t read_epoch = epoch_.load(std::memory_order_acquire);
  std::map<uint64_t, std::string> before;
  s = ReadBefore(d, offset / meta_.block_size, (offset + len - 1) / meta_.block_size, read_epoch,
                 &before);
  if (!s.ok()) return s;
  uint64_t seq = 0;
  s = Sequence(std::move(op), &d, &before, read_epoch, &seq);
  if (!s.ok()) return s;
  // The applier zeroes the image after every earlier write to the range; we
  // hold the range until then so that no later write can overtake it.
  s = WaitDurable(seq);
  if (!s.ok()) return s;
  FaultPoint("zero.after_commit");
  return WaitApplied(seq);
}

Status StoreImpl::Checkpoint(const CheckpointOptions& options, CheckpointInfo* out) {
  const std::string& name = options.name;
  format::CheckpointKind kind;
  if (options.kind == "disk") {
    kind = format::CheckpointKind::kDisk;
  } else if (options.kind == "vm") {
    kind = format::CheckpointKind::kVm;
  } else {
    return Status::InvalidArgument("unknown checkpoint kind '" + options.kind +
                                   "' (disk or vm)");
  }
  if (!name.empty()) {
    Status s = ValidateCheckpointName(name);
    if (!s.ok()) return s;
    if (name.rfind("lsn:", 0) == 0 || name.rfind("time:", 0) == 0) {
      return Status::InvalidArgument("checkpoint name '" + name + "' looks like a point");
    }
  }
  Status s = CheckWritable();
  if (!s.ok()) return s;
  JournalOp op;
  op.kind = OpKind::kCheckpoint;
  op.name = name;
  op.checkpoint_kind = kind;
  op.pending = options.pending;
  op.pinned = options.pinned;
  op.supervised = options.supervised;
  CheckpointInfo info;
  uint64_t seq = 0;
  s = Sequence(std::move(op), nullptr, nullptr, 0, &seq, &info);
  if (!s.ok()) return s;
  FaultPoint("checkpoint.before_commit");
  s = WaitDurable(seq);
  if (!s.ok()) return s;
  if (out) *out = info;
  return Status::Ok();
}

// Rewrites the checkpoint record without its pending flag, synced.  Under
// cp_mu_ so that no checkpoint of the same name is sequenced meanwhile, and
// prune (which takes rollback_mu_ and then cp_mu_) cannot drop it halfway.
Status StoreImpl::CommitCheckpoint(uint64_t id, CheckpointInfo* out) {
  Status s = CheckWritable();
  if (!s.ok()) return s;
  s = WaitCommitted();  // the record of a checkpoint just taken is in RocksDB
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> rb(rollback_mu_);
  std::lock_guard<std::mutex> c(cp_mu_);
  std::string v;
  const std::string key = records::CheckpointKey(id);
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), cp_cf_, key, &v);
  if (rs.IsNotFound()) {
    return Status::NotFound("no checkpoint with id " + std::to_string(id) + " in " +
                            options_.dir + " (pruned?)");
  }
  if (!rs.ok()) return FromRocks(rs, "read checkpoint " + std::to_string(id));
  records::CheckpointRecord r;
  s = records::DecodeCheckpoint(key, v, &r);
  if (!s.ok()) return s;
  if (r.pending) {
    if (auto it = checkpoint_names_.find(r.name); it != checkpoint_names_.end()) {
      return Status::AlreadyExists("a checkpoint named '" + r.name + "' already exists");
    }
    r.pending = false;
    rocksdb::WriteBatch b;
    rs = b.Put(cp_cf_, key, records::EncodeCheckpoint(r));
    if (!rs.ok()) return FromRocks(rs, "commit checkpoint");
    FaultPoint("checkpoint.before_commit_pending");
    s = SyncedMetaWrite(&b);
    if (!s.ok()) return s;
    checkpoint_names_[r.name] = r.id;
  }
  if (out) *out = InfoWithUndo(r);
  return Status::Ok();
}

// Rewrites a visible checkpoint's record with its pinned flag, synced.
// Under rollback_mu_ so that a prune, which decides what to keep from the
// records it reads under the same lock, sees the flag before or after the
// change, never a record rewritten behind it; and cp_mu_ so that no commit
// of a pending checkpoint takes the name meanwhile.
Status StoreImpl::SetPinned(const std::string& name, bool pinned, CheckpointInfo* out) {
  Status s = ValidateCheckpointName(name);
  if (!s.ok()) return s;
  s = CheckWritable();
  if (!s.ok()) return s;
  s = WaitCommitted();  // the record of a checkpoint just taken is in RocksDB
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> rb(rollback_mu_);
  std::lock_guard<std::mutex> c(cp_mu_);
  auto it = checkpoint_names_.find(name);
  if (it == checkpoint_names_.end()) {
    return Status::NotFound("no checkpoint named '" + name + "' in " + options_.dir +
                            " ('rewind list' shows them)");
  }
  const uint64_t id = it->second;
  std::string v;
  const std::string key = records::CheckpointKey(id);
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), cp_cf_, key, &v);
  if (rs.IsNotFound()) {
    return Status::NotFound("no checkpoint named '" + name + "' in " + options_.dir +
                            " ('rewind list' shows them)");
  }
  if (!rs.ok()) return FromRocks(rs, "read checkpoint '" + name + "'");
  records::CheckpointRecord r;
  s = records::DecodeCheckpoint(key, v, &r);
  if (!s.ok()) return s;
  if (r.pinned != pinned) {
    r.pinned = pinned;
    rocksdb::WriteBatch b;
    rs = b.Put(cp_cf_, key, records::EncodeCheckpoint(r));
    if (!rs.ok()) return FromRocks(rs, "pin checkpoint");
    s = SyncedMetaWrite(&b);
    if (!s.ok()) return s;
  }
  if (out) *out = InfoWithUndo(r);
  return Status::Ok();
}

}  // namespace rwd
