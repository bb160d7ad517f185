// The read path, store-wide queries and shutdown, and the small concurrent
// structures the write path uses (RangeLock, EpochStamps, Overlay).
#include "store_impl.h"

#include "records.h"

#include <rocksdb/options.h>

#include <chrono>
#include <cstring>

namespace rwd {

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsNoSpace()) return Status::NoSpace(what + ": " + s.ToString());
  if (s.IsCorruption()) return Status::Corruption(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

// ---- RangeLock ----

void RangeLock::Lock(uint64_t begin, uint64_t end) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] {
    auto it = held_.lower_bound(end);  // ranges starting before end
    while (it != held_.begin()) {
      --it;
      if (it->second > begin) return false;
      // Held ranges never overlap each other, so earlier ones end sooner.
      break;
    }
    return true;
  });
  held_.emplace(begin, end);
}

void RangeLock::Unlock(uint64_t begin, uint64_t end) {
  std::lock_guard<std::mutex> l(mu_);
  auto range = held_.equal_range(begin);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second == end) {
      held_.erase(it);
      break;
    }
  }
  cv_.notify_all();
}

// ---- EpochStamps ----

EpochStamps::EpochStamps(uint64_t blocks) : pages_((blocks + kPerPage - 1) / kPerPage) {}

EpochStamps::~EpochStamps() {
  for (auto& slot : pages_) delete[] slot.load();
}

uint32_t EpochStamps::Get(uint64_t block) const {
  std::atomic<uint32_t>* page = pages_[block / kPerPage].load(std::memory_order_acquire);
  return page ? page[block % kPerPage].load(std::memory_order_acquire) : 0;
}

void EpochStamps::Set(uint64_t block, uint32_t stamp) {
  auto& slot = pages_[block / kPerPage];
  std::atomic<uint32_t>* page = slot.load(std::memory_order_acquire);
  if (!page) {
    std::lock_guard<std::mutex> l(alloc_mu_);
    page = slot.load(std::memory_order_acquire);
    if (!page) {
      page = new std::atomic<uint32_t>[kPerPage]();
      slot.store(page, std::memory_order_release);
    }
  }
  page[block % kPerPage].store(stamp, std::memory_order_release);
}

// ---- Overlay ----

bool Overlay::Read(uint64_t page, char* out) const {
  const Shard& s = shards_[page % kShards];
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(page);
  if (it == s.map.end()) return false;
  std::memcpy(out, it->second.data.get(), page_size_);
  return true;
}

void Overlay::Put(uint64_t page, uint64_t lsn, std::shared_ptr<const char> data) {
  Shard& s = shards_[page % kShards];
  std::lock_guard<std::mutex> l(s.mu);
  auto [it, inserted] = s.map.try_emplace(page);
  it->second.lsn = lsn;
  it->second.data = std::move(data);
  if (inserted) count_.fetch_add(1, std::memory_order_release);
}

void Overlay::RemoveIf(uint64_t page, uint64_t lsn) {
  Shard& s = shards_[page % kShards];
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(page);
  if (it != s.map.end() && it->second.lsn == lsn) {
    s.map.erase(it);
    count_.fetch_sub(1, std::memory_order_release);
  }
}

// ---- StoreImpl ----

StoreImpl::StoreImpl(const StoreOptions& options, const MetaFile& meta)
    : options_(options),
      meta_(meta),
      page_size_(std::min<uint32_t>(meta.block_size, 4096)),
      stamps_((meta.size + meta.block_size - 1) / meta.block_size),
      overlay_(std::min<uint32_t>(meta.block_size, 4096)) {}

StoreImpl::~StoreImpl() { (void)Close(); }

uint64_t StoreImpl::NowNs() const {
  if (options_.clock) return static_cast<uint64_t>(options_.clock());
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

Status StoreImpl::Read(uint64_t offset, uint32_t len, void* buf) {
  if (offset > meta_.size || len > meta_.size - offset) {
    return Status::InvalidArgument("read beyond the end of the disk");
  }
  return ReadLogical(offset, len, static_cast<char*>(buf));
}

// The live disk's content: the overlay's pages where it has them, else the
// image.  Image runs between overlay pages are read in one request each.
Status StoreImpl::ReadLogical(uint64_t offset, uint64_t len, char* out) {
  if (overlay_.Empty()) return image_->Read(offset, static_cast<uint32_t>(len), out);
  const uint64_t ps = page_size_;
  const uint64_t end = offset + len;
  uint64_t run_begin = offset;  // start of the pending image run
  std::unique_ptr<char[]> tmp;
  for (uint64_t page = offset / ps; page * ps < end; page++) {
    const uint64_t pbegin = std::max(page * ps, offset);
    const uint64_t pend = std::min((page + 1) * ps, end);
    char* dst = out + (pbegin - offset);
    bool whole = pbegin == page * ps && pend == (page + 1) * ps;
    bool hit;
    if (whole) {
      hit = overlay_.Read(page, dst);
    } else {
      if (!tmp) tmp.reset(new char[ps]);
      hit = overlay_.Read(page, tmp.get());
      if (hit) std::memcpy(dst, tmp.get() + (pbegin - page * ps), pend - pbegin);
    }
    if (hit) {
      if (run_begin < pbegin) {
        Status s = image_->Read(run_begin, static_cast<uint32_t>(pbegin - run_begin),
                                out + (run_begin - offset));
        if (!s.ok()) return s;
      }
      run_begin = pend;
    }
  }
  if (run_begin < end) {
    return image_->Read(run_begin, static_cast<uint32_t>(end - run_begin), out + (run_begin - offset));
  }
  return Status::Ok();
}

Status StoreImpl::Extents(uint64_t offset, uint64_t len,
                          const std::function<void(uint64_t, uint64_t, bool)>& fn) {
  if (offset > meta_.size || len > meta_.size - offset) {
    return Status::InvalidArgument("extents beyond the end of the disk");
  }
  // Let the image catch up with every write that returned before this call,
  // so that its holes are the disk's holes.
  uint64_t seq;
  {
    std::lock_guard<std::mutex> q(seq_mu_);
    seq = next_seq_;
  }
  Status s = WaitApplied(seq);
  if (!s.ok() && !refused_.load()) return s;
  if (refused_.load()) {  // the image may lag: report all data, which is safe
    fn(offset, len, true);
    return Status::Ok();
  }
  return image_->Extents(offset, len, fn);
}

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

CheckpointInfo CheckpointInfoOf(const records::CheckpointRecord& r) {
  CheckpointInfo c;
  c.id = r.id;
  c.name = r.name;
  c.lsn = r.lsn;
  c.time_ns = r.time_ns;
  c.kind = r.kind == format::CheckpointKind::kVm ? "vm" : "disk";
  c.pinned = r.pinned;
  c.pending = r.pending;
  return c;
}

Status StoreImpl::ListCheckpoints(std::vector<CheckpointInfo>* out, bool with_pending) {
  out->clear();
  (void)WaitCommitted();  // before-image counters of acknowledged writes included
  std::vector<records::CheckpointRecord> cps;
  Status s = LoadCheckpoints(&cps);
  if (!s.ok()) return s;
  for (const auto& r : cps) {
    if (r.pending && !with_pending) continue;
    CheckpointInfo c = CheckpointInfoOf(r);
    std::string v;
    rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), meta_cf_, records::UndoBytesKey(r.id), &v);
    if (rs.ok() && v.size() == 8) c.undo_bytes = records::GetLE64(v.data());
    out->push_back(std::move(c));
  }
  return Status::Ok();
}

Status StoreImpl::GetInfo(StoreInfo* out) {
  *out = StoreInfo{};
  (void)WaitCommitted();  // every acknowledged write counted
  out->dir = options_.dir;
  out->image_path = meta_.image;
  out->format_version = meta_.format_version;
  out->size = meta_.size;
  out->block_size = meta_.block_size;
  out->created_ns = meta_.created_ns;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), redo_cf_));
  auto read_end = [&](uint64_t* lsn, int64_t* time) -> Status {
    if (!it->Valid()) return FromRocks(it->status(), "read redo journal");
    Status s = records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), lsn);
    if (!s.ok()) return s;
    records::RedoHeader h;
    s = records::DecodeRedo(*lsn, std::string_view(it->value().data(), it->value().size()), &h);
    if (!s.ok()) return s;
    *time = h.time_ns;
    return Status::Ok();
  };
  it->SeekToFirst();
  if (it->Valid()) {
    Status s = read_end(&out->oldest_lsn, &out->oldest_time_ns);
    if (!s.ok()) return s;
    it->SeekToLast();
    s = read_end(&out->newest_lsn, &out->newest_time_ns);
    if (!s.ok()) return s;
    out->redo_records = out->newest_lsn - out->oldest_lsn + 1;
  }
  // After a prune the oldest point is the prune point (its record is gone,
  // its checkpoint is not), and a prune may have left no record at all.
  if (const uint64_t start = history_start_.load(); start > 0) {
    std::vector<records::CheckpointRecord> cps;
    Status s = LoadCheckpoints(&cps);
    if (!s.ok()) return s;
    int64_t start_time = 0;
    for (const auto& r : cps) {
      if (r.lsn == start) start_time = r.time_ns;
    }
    if (out->newest_lsn == 0) {
      out->newest_lsn = start;
      out->newest_time_ns = start_time;
    }
    out->redo_records = out->newest_lsn - start;
    out->oldest_lsn = start;
    out->oldest_time_ns = start_time;
  }
  auto space = [&](rocksdb::ColumnFamilyHandle* cf) {
    uint64_t total = 0, v = 0;
    for (const char* p : {"rocksdb.total-sst-files-size", "rocksdb.total-blob-file-size",
                          "rocksdb.cur-size-all-mem-tables"}) {
      if (db_->GetIntProperty(cf, p, &v)) total += v;
    }
    return total;
  };
  // Before-images are counted per epoch as they are journaled (record and
  // payload); the rest of the payload log is redo.
  uint64_t undo_total = 0;
  {
    std::unique_ptr<rocksdb::Iterator> m(db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
    const std::string prefix = format::kMetaUndoBytesPrefix;
    for (m->Seek(prefix); m->Valid() && m->key().starts_with(prefix); m->Next()) {
      if (m->value().size() == 8) undo_total += records::GetLE64(m->value().data());
    }
  }
  const uint64_t vlog_bytes = vlog_->Bytes();
  out->undo_bytes = undo_total;
  out->redo_bytes = space(redo_cf_) + (vlog_bytes > undo_total ? vlog_bytes - undo_total : 0);
  uint64_t keys = 0;
  if (db_->GetIntProperty(undo_cf_, "rocksdb.estimate-num-keys", &keys)) out->undo_records = keys;
  {
    std::lock_guard<std::mutex> l(cp_mu_);
    out->checkpoints = checkpoint_names_.size();
  }
  out->durable_lsn = applied_lsn_.load();  // at least this much is durable
  {
    std::lock_guard<std::mutex> l(state_mu_);
    out->writes_refused = refused_.load();
    out->refused_reason = refused_reason_;
  }
  return Status::Ok();
}

Status StoreImpl::Close() {
  if (closed_) return Status::Ok();
  closed_ = true;
  Status result;
  if (committer_.joinable() && !refused_.load()) {
    uint64_t seq;
    {
      std::lock_guard<std::mutex> q(seq_mu_);
      seq = next_seq_;
    }
    result = WaitApplied(seq);
  }
  StopThreads();
  if (db_ && result.ok() && !refused_.load() && image_) {
    result = image_->Sync();
    if (result.ok() && applied_lsn_.load() > persisted_applied_) {
      result = PersistApplied(applied_lsn_.load());
    }
    if (result.ok()) {
      std::lock_guard<std::mutex> w(wal_mu_);
      if (!refused_.load()) result = FromRocks(db_->SyncWAL(), "journal sync");
    }
  }
  if (db_) {
    for (auto* cf : cfs_) (void)db_->DestroyColumnFamilyHandle(cf);
    cfs_.clear();
    Status s = FromRocks(db_->Close(), "close journal");
    if (result.ok() && !refused_.load()) result = s;
    db_.reset();
  }
  image_.reset();
  if (result.ok() && refused_.load()) {
    std::lock_guard<std::mutex> l(state_mu_);
    result = Status::IOError("closed after refusing writes since " + refused_reason_);
  }
  return result;
}

}  // namespace rwd
