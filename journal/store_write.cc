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

constexpr size_t kMaxGroupRequests = 256;
constexpr uint64_t kMaxGroupBytes = 16ull << 20;
constexpr uint64_t kZeroChunkBytes = 16ull << 20;

// Holds a RangeLock range for a scope.
class RangeGuard {
 public:
  RangeGuard(RangeLock* l, uint64_t b, uint64_t e) : l_(l), b_(b), e_(e) { l_->Lock(b, e); }
  ~RangeGuard() { l_->Unlock(b_, e_); }
  RangeGuard(const RangeGuard&) = delete;
  RangeGuard& operator=(const RangeGuard&) = delete;

 private:
  RangeLock* l_;
  uint64_t b_, e_;
};

bool AllZero(const char* p, size_t n) {
  static const char zeros[4096] = {};
  while (n > 0) {
    size_t k = std::min(n, sizeof zeros);
    if (std::memcmp(p, zeros, k) != 0) return false;
    p += k;
    n -= k;
  }
  return true;
}

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

uint64_t StoreImpl::BlockLength(uint64_t block) const {
  uint64_t begin = block * meta_.block_size;
  return std::min<uint64_t>(meta_.block_size, meta_.size - begin);
}

Status StoreImpl::Write(uint64_t offset, uint32_t len, const void* buf, bool fua) {
  if (len == 0) return Status::Ok();
  if (offset > meta_.size || len > meta_.size - offset) {
    return Status::InvalidArgument("write beyond the end of the disk");
  }
  Status s = CheckWritable();
  if (!s.ok()) return s;
  s = WaitForRoom();
  if (!s.ok()) return s;

  const uint64_t ps = page_size_;
  CommitRequest req;
  req.kind = CommitRequest::Kind::kWrite;
  req.offset = offset;
  req.length = len;
  req.payload = static_cast<const char*>(buf);
  req.fua = fua;
  req.first_page = offset / ps;
  uint64_t end_page = (offset + len + ps - 1) / ps;
  req.npages = end_page - req.first_page;
  std::optional<RangeGuard> guard;
  guard.emplace(&range_lock_, req.first_page * ps, end_page * ps);

  req.pages = std::shared_ptr<char>(new char[req.npages * ps], std::default_delete<char[]>());
  char* pages = req.pages.get();
  const uint64_t head = offset - req.first_page * ps;
  if (head != 0) {
    s = ReadLogical(req.first_page * ps, ps, pages);
    if (!s.ok()) return s;
  }
  if ((offset + len) % ps != 0 && (req.npages > 1 || head == 0)) {
    s = ReadLogical((end_page - 1) * ps, ps, pages + (req.npages - 1) * ps);
    if (!s.ok()) return s;
  }
  std::memcpy(pages + head, buf, len);

  req.read_epoch = epoch_.load(std::memory_order_acquire);
  s = ReadBefore(offset / meta_.block_size, (offset + len - 1) / meta_.block_size, &req);
  if (!s.ok()) return s;
  FaultPoint("write.before_commit");
  s = Commit(&req);
  if (!s.ok()) return s;
  guard.reset();  // later writes may overtake now; FUA waits without the lock
  FaultPoint("write.before_ack");
  if (fua) return WaitDurable(req.seq);
  return Status::Ok();
}

// Reads the before-image of each block in [first, last] that has none in
// the current epoch yet.  The caller holds the range lock of its own pages;
// the content is only used if this request turns out to be the first to
// overwrite the block in req->read_epoch (see AddUndo).
Status StoreImpl::ReadBefore(uint64_t first, uint64_t last, CommitRequest* req) {
  const uint32_t stamp = static_cast<uint32_t>(req->read_epoch + 1);
  uint64_t b = first;
  while (b <= last) {
    if (stamps_.Get(b) == stamp) {
      b++;
      continue;
    }
    uint64_t e = b;  // read a run of unsaved blocks at once
    while (e + 1 <= last && stamps_.Get(e + 1) != stamp) e++;
    uint64_t begin = b * meta_.block_size;
    uint64_t end = std::min<uint64_t>((e + 1) * meta_.block_size, meta_.size);
    std::string run(end - begin, '\0');
    Status s = ReadLogical(begin, end - begin, run.data());
    if (!s.ok()) return s;
    for (uint64_t k = b; k <= e; k++) {
      uint64_t off = (k - b) * meta_.block_size;
      req->before.emplace(k, run.substr(off, BlockLength(k)));
    }
    b = e + 1;
  }
  return Status::Ok();
}

Status StoreImpl::Commit(CommitRequest* req) {
  std::unique_lock<std::mutex> l(commit_mu_);
  queue_.push_back(req);
  while (!req->done && req != queue_.front()) req->cv.wait(l);
  if (req->done) return req->status;
  LeadGroup(l);
  return req->status;
}

// Called with commit_mu_ held by the request at the front of the queue.
// Commits a group of queued requests with one RocksDB write.
void StoreImpl::LeadGroup(std::unique_lock<std::mutex>& l) {
  std::vector<CommitRequest*> group;
  const uint64_t epoch = epoch_.load(std::memory_order_acquire);
  CommitRequest* front = queue_.front();
  group.push_back(front);
  // A checkpoint commits alone, so every group lies within one epoch; so does
  // a request whose before-images were read in an older epoch, so that it may
  // re-read them while the overlay holds everything committed before it.
  if (front->kind != CommitRequest::Kind::kCheckpoint && front->read_epoch == epoch) {
    uint64_t bytes = front->length;
    for (size_t i = 1; i < queue_.size() && group.size() < kMaxGroupRequests; i++) {
      CommitRequest* r = queue_[i];
      if (r->kind == CommitRequest::Kind::kCheckpoint || r->read_epoch != epoch) break;
      if (r->kind == CommitRequest::Kind::kWrite) bytes += r->length;
      if (bytes > kMaxGroupBytes) break;
      group.push_back(r);
    }
  }
  const uint64_t seq = ++next_seq_;
  for (CommitRequest* r : group) {
    r->seq = seq;
    r->lsn = r->kind == CommitRequest::Kind::kCheckpoint ? last_lsn_.load() : ++last_lsn_;
  }
  l.unlock();

  rocksdb::WriteBatch batch;
  Status s = BuildBatch(group, &batch);
  // A failed build may have stamped blocks whose before-images never reach
  // the journal; refusing further writes keeps every stamp truthful.
  if (!s.ok()) Refuse(s);
  if (s.ok() && batch.Count() > 0) {
    rocksdb::WriteOptions wo;  // WAL on, not synced: the syncer makes it durable
    std::lock_guard<std::mutex> w(wal_mu_);
    s = FromRocks(db_->Write(wo, &batch), "journal write");
    if (!s.ok()) Refuse(s);
  }
  if (s.ok()) {
    FaultPoint(front->kind == CommitRequest::Kind::kCheckpoint ? "checkpoint.after_commit"
                                                               : "write.after_commit");
    Publish(group);
  }

  l.lock();
  for (CommitRequest* r : group) {
    if (r->status.ok()) r->status = s;
    r->done = true;
    queue_.pop_front();
    if (r != front) r->cv.notify_one();
  }
  if (!queue_.empty()) queue_.front()->cv.notify_one();
}

Status StoreImpl::BuildBatch(const std::vector<CommitRequest*>& group, rocksdb::WriteBatch* batch) {
  const int64_t now = static_cast<int64_t>(NowNs());
  for (CommitRequest* r : group) {
    if (r->kind == CommitRequest::Kind::kCheckpoint) {
      Status s = AddCheckpoint(r, batch);
      if (!s.ok()) r->status = s;  // only this request fails
      continue;
    }
    Status s = AddUndo(r, batch);
    if (!s.ok()) return s;
    records::RedoHeader h;
    h.type = r->kind == CommitRequest::Kind::kWrite  ? format::RedoType::kWrite
             : r->kind == CommitRequest::Kind::kZero ? format::RedoType::kZero
                                                     : format::RedoType::kTrim;
    h.flags = r->fua ? format::kRedoFlagFua : 0;
    h.offset = r->offset;
    h.length = r->length;
    h.time_ns = now;
    std::string_view payload =
        r->kind == CommitRequest::Kind::kWrite ? std::string_view(r->payload, r->length) : "";
    char header[format::kRedoHeaderSize];
    records::EncodeRedoHeader(r->lsn, h, payload, header);
    std::string key = records::RedoKey(r->lsn);
    rocksdb::Slice key_part(key);
    rocksdb::Slice parts[2] = {rocksdb::Slice(header, sizeof header),
                               rocksdb::Slice(payload.data(), payload.size())};
    rocksdb::Status rs = batch->Put(redo_cf_, rocksdb::SliceParts(&key_part, 1),
                                    rocksdb::SliceParts(parts, payload.empty() ? 1 : 2));
    if (!rs.ok()) return FromRocks(rs, "build journal batch");
  }
  return Status::Ok();
}

// Adds the before-image of every block r overwrites first in this epoch.
// Leader only: stamps_ and epoch_ change nowhere else.
Status StoreImpl::AddUndo(CommitRequest* r, rocksdb::WriteBatch* batch) {
  const uint64_t epoch = epoch_.load(std::memory_order_acquire);
  const uint32_t stamp = static_cast<uint32_t>(epoch + 1);
  const uint64_t first = r->offset / meta_.block_size;
  const uint64_t last = (r->offset + r->length - 1) / meta_.block_size;
  uint64_t added = 0;
  for (uint64_t b = first; b <= last; b++) {
    if (stamps_.Get(b) == stamp) continue;
    std::string fresh;
    const std::string* content = nullptr;
    auto it = r->before.find(b);
    if (r->read_epoch == epoch && it != r->before.end()) {
      content = &it->second;
    } else {  // a checkpoint came between: this request leads its own group
      fresh.resize(BlockLength(b));
      Status s = ReadLogical(b * meta_.block_size, fresh.size(), fresh.data());
      if (!s.ok()) return s;
      content = &fresh;
    }
    records::UndoHeader h;
    h.length = static_cast<uint32_t>(content->size());
    h.lsn = r->lsn;
    h.kind = AllZero(content->data(), content->size()) ? format::UndoKind::kZeros
                                                        : format::UndoKind::kData;
    std::string key = records::UndoKey(epoch, 0, b);
    std::string value = records::EncodeUndo(key, h, *content);
    added += key.size() + value.size();
    rocksdb::Status rs = batch->Put(undo_cf_, key, value);
    if (!rs.ok()) return FromRocks(rs, "build journal batch");
    stamps_.Set(b, stamp);
  }
  if (added > 0) {
    char buf[8];
    records::PutLE64(buf, added);
    rocksdb::Status rs = batch->Merge(meta_cf_, records::UndoBytesKey(epoch), rocksdb::Slice(buf, 8));
    if (!rs.ok()) return FromRocks(rs, "build journal batch");
  }
  return Status::Ok();
}

Status StoreImpl::AddCheckpoint(CommitRequest* r, rocksdb::WriteBatch* batch) {
  records::CheckpointRecord rec;
  rec.id = next_checkpoint_id_;
  rec.name = r->name.empty() ? "cp-" + std::to_string(rec.id) : r->name;
  if (r->name.empty()) {  // never collide with a name a user chose
    std::lock_guard<std::mutex> l(cp_mu_);
    for (int n = 2; checkpoint_names_.count(rec.name); n++) {
      rec.name = "cp-" + std::to_string(rec.id) + "-" + std::to_string(n);
    }
  }
  rec.lsn = r->lsn;
  rec.time_ns = static_cast<int64_t>(NowNs());
  {
    std::lock_guard<std::mutex> l(cp_mu_);
    if (checkpoint_names_.count(rec.name)) {
      return Status::AlreadyExists("a checkpoint named '" + rec.name + "' already exists");
    }
  }
  FaultPoint("checkpoint.before_commit");
  rocksdb::Status rs =
      batch->Put(cp_cf_, records::CheckpointKey(rec.id), records::EncodeCheckpoint(rec));
  if (!rs.ok()) return FromRocks(rs, "build journal batch");
  if (r->checkpoint_out) {
    r->checkpoint_out->id = rec.id;
    r->checkpoint_out->name = rec.name;
    r->checkpoint_out->lsn = rec.lsn;
    r->checkpoint_out->time_ns = rec.time_ns;
    r->checkpoint_out->kind = "disk";
    r->checkpoint_out->pinned = false;
    r->checkpoint_out->undo_bytes = 0;
  }
  r->name = rec.name;
  return Status::Ok();
}

// Makes a committed group visible: pages to the overlay, operations to the
// applier, and a checkpoint's new epoch.  Leader only, in commit order.
void StoreImpl::Publish(const std::vector<CommitRequest*>& group) {
  const uint64_t ps = page_size_;
  std::vector<ApplyOp> ops;
  uint64_t bytes = 0;
  for (CommitRequest* r : group) {
    if (!r->status.ok()) continue;
    if (r->kind == CommitRequest::Kind::kCheckpoint) {
      {
        std::lock_guard<std::mutex> l(cp_mu_);
        checkpoint_names_[r->name] = next_checkpoint_id_;
      }
      epoch_.store(next_checkpoint_id_++, std::memory_order_release);
      continue;
    }
    ApplyOp op;
    op.lsn = r->lsn;
    op.seq = r->seq;
    op.kind = r->kind;
    if (r->kind == CommitRequest::Kind::kWrite) {
      for (uint64_t p = 0; p < r->npages; p++) {
        overlay_.Put(r->first_page + p, r->lsn,
                     std::shared_ptr<const char>(r->pages, r->pages.get() + p * ps));
      }
      op.first_page = r->first_page;
      op.npages = r->npages;
      op.pages = r->pages;
      op.offset = r->first_page * ps;
      op.length = r->npages * ps;
      bytes += op.length;
    } else {
      op.offset = r->offset;
      op.length = r->length;
    }
    ops.push_back(std::move(op));
  }
  std::lock_guard<std::mutex> l(state_mu_);
  for (ApplyOp& op : ops) apply_queue_.push_back(std::move(op));
  pending_bytes_ += bytes;
  committed_seq_.store(group.front()->seq, std::memory_order_release);
}

Status StoreImpl::WaitForRoom() {
  std::unique_lock<std::mutex> l(state_mu_);
  if (pending_bytes_ <= options_.max_pending_bytes) return Status::Ok();
  sync_wanted_ = std::max(sync_wanted_, committed_seq_.load());
  state_cv_.notify_all();
  state_cv_.wait(l, [&] {
    return pending_bytes_ <= options_.max_pending_bytes / 2 || refused_.load() || stopping_;
  });
  if (refused_.load()) return Status::ReadOnly("writes refused since " + refused_reason_);
  if (stopping_) return Status::Aborted("the store is closing");
  return Status::Ok();
}

Status StoreImpl::WaitDurable(uint64_t seq) {
  std::unique_lock<std::mutex> l(state_mu_);
  if (durable_seq_.load() >= seq) return Status::Ok();
  sync_wanted_ = std::max(sync_wanted_, seq);
  state_cv_.notify_all();
  state_cv_.wait(l, [&] { return durable_seq_.load() >= seq || refused_.load() || stopping_; });
  if (durable_seq_.load() >= seq) return Status::Ok();
  if (refused_.load()) {
    return Status::IOError("not durable: " + refused_reason_ + "; writes are refused until restart");
  }
  return Status::Aborted("the store is closing");
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

Status StoreImpl::Flush() {
  Status s = CheckWritable();
  if (!s.ok()) return s;
  return WaitDurable(committed_seq_.load(std::memory_order_acquire));
}

Status StoreImpl::Zero(uint64_t offset, uint64_t len, bool fua, bool trim) {
  (void)fua;  // a zero or trim returns only once it is durable and applied
  if (len == 0) return Status::Ok();
  if (offset > meta_.size || len > meta_.size - offset) {
    return Status::InvalidArgument("zero beyond the end of the disk");
  }
  // Chunks end on block boundaries so that each holds its blocks' before-images.
  uint64_t chunk = std::max<uint64_t>(kZeroChunkBytes, meta_.block_size);
  while (len > 0) {
    uint64_t end = std::min(offset + len, (offset / chunk + 1) * chunk);
    Status s = ZeroChunk(offset, end - offset, trim);
    if (!s.ok()) return s;
    len -= end - offset;
    offset = end;
  }
  return Status::Ok();
}

Status StoreImpl::ZeroChunk(uint64_t offset, uint64_t len, bool trim) {
  Status s = CheckWritable();
  if (!s.ok()) return s;
  const uint64_t ps = page_size_;
  RangeGuard guard(&range_lock_, offset / ps * ps, (offset + len + ps - 1) / ps * ps);
  CommitRequest req;
  req.kind = trim ? CommitRequest::Kind::kTrim : CommitRequest::Kind::kZero;
  req.offset = offset;
  req.length = len;
  req.read_epoch = epoch_.load(std::memory_order_acquire);
  s = ReadBefore(offset / meta_.block_size, (offset + len - 1) / meta_.block_size, &req);
  if (!s.ok()) return s;
  s = Commit(&req);
  if (!s.ok()) return s;
  FaultPoint("zero.after_commit");
  // The applier zeroes the image after every earlier write to the range; we
  // hold the range until then so that no later write can overtake it.
  return WaitApplied(req.seq);
}

Status StoreImpl::Checkpoint(const std::string& name, CheckpointInfo* out) {
  if (!name.empty()) {
    Status s = ValidateCheckpointName(name);
    if (!s.ok()) return s;
    if (name.rfind("lsn:", 0) == 0 || name.rfind("time:", 0) == 0) {
      return Status::InvalidArgument("checkpoint name '" + name + "' looks like a point");
    }
  }
  Status s = CheckWritable();
  if (!s.ok()) return s;
  CommitRequest req;
  req.kind = CommitRequest::Kind::kCheckpoint;
  req.name = name;
  CheckpointInfo info;
  req.checkpoint_out = &info;
  s = Commit(&req);
  if (!s.ok()) return s;
  s = WaitDurable(req.seq);
  if (!s.ok()) return s;
  if (out) *out = info;
  return Status::Ok();
}

}  // namespace rwd
