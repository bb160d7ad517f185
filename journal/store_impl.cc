// The read path, store-wide queries and shutdown, and the small concurrent
// structures the write path uses (RangeLock, EpochStamps, Overlay).
#include "store_impl.h"

#include "records.h"

#include <rocksdb/options.h>

#include <chrono>
#include <cstring>
#include <filesystem>

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

const Overlay::Slot* Overlay::Shard::Find(uint64_t page) const {
  if (slots.empty()) return nullptr;
  const size_t mask = slots.size() - 1;
  for (size_t i = Hash(page) & mask;; i = (i + 1) & mask) {
    const Slot& slot = slots[i];
    if (slot.page == page) return &slot;
    if (slot.page == kFree) return nullptr;
  }
}

void Overlay::Shard::Rehash(size_t want) {
  size_t cap = 16;
  while (cap * 5 / 8 < want) cap *= 2;  // at most 5/8 full after a rehash
  std::vector<Slot> old(cap);
  old.swap(slots);
  removed = 0;
  const size_t mask = cap - 1;
  for (Slot& from : old) {
    if (from.page == kFree || from.page == kRemoved) continue;
    size_t i = Hash(from.page) & mask;
    while (slots[i].page != kFree) i = (i + 1) & mask;
    slots[i] = std::move(from);
  }
}

bool Overlay::Read(uint64_t page, char* out) const {
  const Shard& s = shards_[page % kShards];
  std::lock_guard<std::mutex> l(s.mu);
  const Slot* slot = s.Find(page);
  if (slot == nullptr) return false;
  std::memcpy(out, slot->data.get(), page_size_);
  return true;
}

void Overlay::Put(uint64_t page, uint64_t lsn, std::shared_ptr<const char> data) {
  Shard& s = shards_[page % kShards];
  std::lock_guard<std::mutex> l(s.mu);
  if (Slot* slot = s.Find(page)) {
    slot->lsn = lsn;
    slot->data = std::move(data);
    return;
  }
  // Free and removed slots together must stay above 1/4 of the table, or
  // probes for absent pages grow long.
  if ((s.used + s.removed + 1) * 4 > s.slots.size() * 3) s.Rehash(s.used + 1);
  const size_t mask = s.slots.size() - 1;
  size_t i = Hash(page) & mask;
  while (s.slots[i].page != kFree && s.slots[i].page != kRemoved) i = (i + 1) & mask;
  if (s.slots[i].page == kRemoved) s.removed--;
  s.slots[i].page = page;
  s.slots[i].lsn = lsn;
  s.slots[i].data = std::move(data);
  s.used++;
  count_.fetch_add(1, std::memory_order_release);
}

void Overlay::RemoveIf(uint64_t page, uint64_t lsn) {
  Shard& s = shards_[page % kShards];
  std::lock_guard<std::mutex> l(s.mu);
  Slot* slot = s.Find(page);
  if (slot == nullptr || slot->lsn != lsn) return;
  slot->page = kRemoved;
  slot->data.reset();
  s.used--;
  s.removed++;
  count_.fetch_sub(1, std::memory_order_release);
  // An emptied shard starts afresh: no tombstones to probe past.  A table
  // much larger than what it holds shrinks.
  if (s.used == 0) {
    if (s.slots.size() > 1024) {
      std::vector<Slot>().swap(s.slots);
    } else {
      for (Slot& x : s.slots) x.page = kFree;
    }
    s.removed = 0;
  }
}

// ---- DiskImpl ----

DiskImpl::DiskImpl(StoreImpl* store, uint32_t index, const MetaDisk& meta, uint32_t block_size,
                   uint32_t page_size)
    : stamps((meta.size + block_size - 1) / block_size),
      overlay(page_size),
      store_(store),
      index_(index),
      name_(meta.name),
      size_(meta.size),
      image_path_(meta.image),
      block_size_(block_size),
      blocks_((meta.size + block_size - 1) / block_size) {}

uint64_t DiskImpl::BlockLength(uint64_t block) const {
  return std::min<uint64_t>(block_size_, size_ - block * block_size_);
}

Status DiskImpl::Read(uint64_t offset, uint32_t len, void* buf) {
  return store_->ReadOn(*this, offset, len, buf);
}
Status DiskImpl::Write(uint64_t offset, uint32_t len, const void* buf, bool fua) {
  return store_->WriteOn(*this, offset, len, buf, fua);
}
Status DiskImpl::Zero(uint64_t offset, uint64_t len, bool fua, bool trim) {
  return store_->ZeroOn(*this, offset, len, fua, trim);
}
Status DiskImpl::Flush() { return store_->Flush(); }
Status DiskImpl::Extents(uint64_t offset, uint64_t len,
                         const std::function<void(uint64_t, uint64_t, bool)>& fn) {
  return store_->ExtentsOn(*this, offset, len, fn);
}
Status DiskImpl::OpenSnapshot(const PointInfo& point, std::unique_ptr<Snapshot>* out) {
  return store_->OpenSnapshotOn(*this, point, out);
}
Status DiskImpl::Restore(const PointInfo& point, const RestoreOptions& options,
                         RestoreResult* out) {
  return store_->RestoreOn(*this, point, options, out);
}
Status DiskImpl::Diff(const PointInfo& from, const PointInfo& to, DiffResult* out) {
  return store_->DiffOn(*this, from, to, out);
}

// ---- StoreImpl ----

StoreImpl::StoreImpl(const StoreOptions& options, const MetaFile& meta)
    : options_(options), meta_(meta), page_size_(std::min<uint32_t>(meta.block_size, 4096)) {
  for (size_t i = 0; i < meta.disks.size(); i++) {
    disks_.push_back(std::make_unique<DiskImpl>(this, static_cast<uint32_t>(i), meta.disks[i],
                                                meta.block_size, page_size_));
  }
}

// The store's own calls act on its first disk.
Status StoreImpl::Read(uint64_t offset, uint32_t len, void* buf) {
  return ReadOn(*disks_[0], offset, len, buf);
}
Status StoreImpl::Write(uint64_t offset, uint32_t len, const void* buf, bool fua) {
  return WriteOn(*disks_[0], offset, len, buf, fua);
}
Status StoreImpl::Zero(uint64_t offset, uint64_t len, bool fua, bool trim) {
  return ZeroOn(*disks_[0], offset, len, fua, trim);
}
Status StoreImpl::Extents(uint64_t offset, uint64_t len,
                          const std::function<void(uint64_t, uint64_t, bool)>& fn) {
  return ExtentsOn(*disks_[0], offset, len, fn);
}
Status StoreImpl::OpenSnapshot(const PointInfo& point, std::unique_ptr<Snapshot>* out) {
  return OpenSnapshotOn(*disks_[0], point, out);
}
Status StoreImpl::Restore(const PointInfo& point, const RestoreOptions& options,
                          RestoreResult* out) {
  return RestoreOn(*disks_[0], point, options, out);
}
Status StoreImpl::Diff(const PointInfo& from, const PointInfo& to, DiffResult* out) {
  return DiffOn(*disks_[0], from, to, out);
}

Status StoreImpl::SyncImages(bool all) {
  for (auto& d : disks_) {
    // Cleared before the sync: a write completing after this sets it again
    // and the next sync covers it; one completed before is covered by this.
    if (!d->image_dirty.exchange(false) && !all) continue;
    Status s = d->image->Sync();
    if (!s.ok()) {
      d->image_dirty = true;
      return s;
    }
  }
  return Status::Ok();
}

StoreImpl::~StoreImpl() { (void)Close(); }

uint64_t StoreImpl::NowNs() const {
  if (options_.clock) return static_cast<uint64_t>(options_.clock());
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

Status StoreImpl::ReadOn(DiskImpl& d, uint64_t offset, uint32_t len, void* buf) {
  if (offset > d.size() || len > d.size() - offset) {
    return Status::InvalidArgument("read beyond the end of the disk");
  }
  return ReadLogical(d, offset, len, static_cast<char*>(buf));
}

// The live disk's content: the overlay's pages where it has them, else the
// image.  Image runs between overlay pages are read in one request each.
Status StoreImpl::ReadLogical(DiskImpl& d, uint64_t offset, uint64_t len, char* out) {
  ImageFile& image = *d.image;
  if (d.overlay.Empty()) return image.Read(offset, static_cast<uint32_t>(len), out);
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
      hit = d.overlay.Read(page, dst);
    } else {
      if (!tmp) tmp.reset(new char[ps]);
      hit = d.overlay.Read(page, tmp.get());
      if (hit) std::memcpy(dst, tmp.get() + (pbegin - page * ps), pend - pbegin);
    }
    if (hit) {
      if (run_begin < pbegin) {
        Status s = image.Read(run_begin, static_cast<uint32_t>(pbegin - run_begin),
                              out + (run_begin - offset));
        if (!s.ok()) return s;
      }
      run_begin = pend;
    }
  }
  if (run_begin < end) {
    return image.Read(run_begin, static_cast<uint32_t>(end - run_begin), out + (run_begin - offset));
  }
  return Status::Ok();
}

Status StoreImpl::ExtentsOn(DiskImpl& d, uint64_t offset, uint64_t len,
                            const std::function<void(uint64_t, uint64_t, bool)>& fn) {
  if (offset > d.size() || len > d.size() - offset) {
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
  return d.image->Extents(offset, len, fn);
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
  c.supervised = r.supervised;
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
    out->push_back(InfoWithUndo(r));
  }
  return Status::Ok();
}

CheckpointInfo StoreImpl::InfoWithUndo(const records::CheckpointRecord& r) {
  CheckpointInfo c = CheckpointInfoOf(r);
  std::string v;
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), meta_cf_, records::UndoBytesKey(r.id), &v);
  if (rs.ok() && v.size() == 8) c.undo_bytes = records::GetLE64(v.data());
  return c;
}

Status StoreImpl::GetInfo(StoreInfo* out) {
  *out = StoreInfo{};
  (void)WaitCommitted();  // every acknowledged write counted
  out->dir = options_.dir;
  out->image_path = disks_[0]->image_path();
  out->format_version = meta_.format_version;
  out->size = disks_[0]->size();
  for (const auto& d : disks_) out->disks.push_back(DiskInfo{d->name(), d->size(), d->image_path()});
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
  // Saved VM states (vmstate/, written by the vmstate module): the bytes of
  // its files.  Best effort: a file removed while we walk is skipped.
  {
    std::error_code ec;
    const std::filesystem::path vm = std::filesystem::path(options_.dir) / "vmstate";
    for (auto it = std::filesystem::recursive_directory_iterator(vm, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code fec;
      if (it->is_regular_file(fec)) {
        const uintmax_t n = it->file_size(fec);
        if (!fec) out->vmstate_bytes += n;
      }
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
    out->recovery_cut_records = recovery_cut_records_;
    if (dropped_damaged_) out->recovery_dropped_damage = recovery_damage_.message();
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
  const bool images_open = !disks_.empty() && disks_.back()->image != nullptr;
  if (db_ && result.ok() && !refused_.load() && images_open) {
    result = SyncImages(/*all=*/true);
    if (result.ok() && applied_lsn_.load() > persisted_applied_.load()) {
      result = PersistApplied(applied_lsn_.load());
    }
    if (result.ok()) {
      std::lock_guard<std::mutex> w(wal_mu_);
      if (!refused_.load()) result = FromRocks(db_->SyncWAL(), "journal sync");
    }
    // At rest the journal is in tables, whose blocks are checksummed and
    // checked on every read; the WAL then holds nothing the store needs, so
    // a WAL damaged or cut short while the store is closed loses nothing.
    if (result.ok()) {
      rocksdb::FlushOptions fo;
      fo.wait = true;
      result = FromRocks(db_->Flush(fo, cfs_), "flush the journal");
    }
  }
  if (db_) {
    for (auto* cf : cfs_) (void)db_->DestroyColumnFamilyHandle(cf);
    cfs_.clear();
    Status s = FromRocks(db_->Close(), "close journal");
    if (result.ok() && !refused_.load()) result = s;
    db_.reset();
  }
  for (auto& d : disks_) d->image.reset();
  if (result.ok() && refused_.load()) {
    std::lock_guard<std::mutex> l(state_mu_);
    result = Status::IOError("closed after refusing writes since " + refused_reason_);
  }
  return result;
}

}  // namespace rwd
