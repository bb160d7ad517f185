// Points of history, snapshots and restores.  Points are the store's (one
// timeline for all its disks); a snapshot and a restore are of one disk,
// a rollback is of every disk.
//
// The disk at a point L (the instant after the write with LSN L) is built
// from the live disk and the journal, without replaying history from the
// start (docs/architecture.md, "Reading the past"):
//
//   Let e be the newest checkpoint with lsn <= L (epoch 0 when none) and
//   L_e its lsn.  For each block b, the first undo record (E, b) with
//   E >= e, in epoch order, says where b's content at L lives:
//     - E == e and the record's lsn > L: b was not written in (L_e, L];
//       the record holds its content at L_e, which is its content at L.
//     - E == e and lsn <= L: b was written in (L_e, L]; its content is the
//       record's (at L_e) with the redo records in (L_e, L] that touch b
//       laid over it in LSN order.
//     - E > e: b was not written in (L_e, L_E]; the record holds its
//       content at L_E, which is its content at L.
//   A block with no such record has not been written since L: the live
//   disk holds its content at L.
//
// A snapshot scans the undo records once when it opens (cost: the blocks
// changed since L), and keeps a map of the blocks it must not take from
// the live disk.  A block first overwritten after that scan gets a new
// before-image, which a read finds through the block's epoch stamp: the
// reader holds the block's range lock, so no write can slip in between
// looking at the stamp and reading the live disk.
#include "records.h"
#include "store_impl.h"

#include <rewind/journal/fault_point.h>
#include <rocksdb/write_batch.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <thread>
#include <tuple>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>

namespace rwd {

namespace {

std::string FormatTime(int64_t ns) {
  time_t t = static_cast<time_t>(ns / 1000000000LL);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>((ns / 1000000) % 1000));
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------
// Resolving points

Status StoreImpl::LoadCheckpoints(std::vector<records::CheckpointRecord>* out) {
  out->clear();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cp_cf_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    records::CheckpointRecord r;
    Status s = records::DecodeCheckpoint(std::string_view(it->key().data(), it->key().size()),
                                         std::string_view(it->value().data(), it->value().size()),
                                         &r);
    if (!s.ok()) return s;
    out->push_back(std::move(r));
  }
  return FromRocks(it->status(), "read checkpoints");
}

Status StoreImpl::GetRedo(uint64_t lsn, records::RedoHeader* h) {
  std::string value;
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), redo_cf_, records::RedoKey(lsn), &value);
  if (rs.IsNotFound()) {
    return Status::Corruption("redo record " + std::to_string(lsn) + " is missing from " +
                              options_.dir);
  }
  if (!rs.ok()) return FromRocks(rs, "read redo record " + std::to_string(lsn));
  return records::DecodeRedo(lsn, value, h);
}

Status StoreImpl::ReadPayload(const records::PayloadRef& ref, uint64_t length,
                              const std::string& what, std::string* out) {
  Status s = vlog_->Read(VlogRef{ref.segment, ref.offset}, static_cast<uint32_t>(length), what, out);
  if (s.ok()) s = records::CheckPayload(ref, *out, what);
  return s;
}

Status StoreImpl::ResolvePoint(const std::string& text, PointInfo* out) {
  ParsedPoint pp;
  Status s = ParsePoint(text, &pp);
  if (!s.ok()) return s;
  // Newest first: every LSN up to it is then in RocksDB after the wait.
  const uint64_t newest = last_lsn_.load(std::memory_order_acquire);
  (void)WaitCommitted();
  PointInfo p;
  p.text = text;
  switch (pp.kind) {
    case ParsedPoint::Kind::kCheckpoint: {
      std::vector<records::CheckpointRecord> cps;
      if (s = LoadCheckpoints(&cps); !s.ok()) return s;
      for (const auto& r : cps) {
        if (r.name != pp.name || r.pending) continue;
        p.lsn = r.lsn;
        p.time_ns = r.time_ns;
        p.checkpoint_id = r.id;
        p.checkpoint = r.name;
        *out = p;
        return Status::Ok();
      }
      return Status::NotFound("no checkpoint named '" + pp.name + "' in " + options_.dir +
                              " ('rewind list' shows them)");
    }
    case ParsedPoint::Kind::kLsn: {
      if (pp.lsn < history_start_.load()) {
        return Status::NotFound("lsn:" + std::to_string(pp.lsn) +
                                " is older than the history kept (pruned up to lsn:" +
                                std::to_string(history_start_.load()) + ")");
      }
      if (pp.lsn > newest) {
        return Status::NotFound("lsn:" + std::to_string(pp.lsn) +
                                " is beyond the newest write (lsn:" + std::to_string(newest) + ")");
      }
      p.lsn = pp.lsn;
      if (p.lsn == 0) {
        p.time_ns = meta_.created_ns;
      } else if (p.lsn == history_start_.load()) {
        // Its record was pruned; the checkpoint there remains.
        std::vector<records::CheckpointRecord> cps;
        if (s = LoadCheckpoints(&cps); !s.ok()) return s;
        for (const auto& r : cps) {
          if (r.lsn == p.lsn) p.time_ns = r.time_ns;
        }
      } else {
        records::RedoHeader h;
        if (s = GetRedo(p.lsn, &h); !s.ok()) return s;
        p.time_ns = h.time_ns;
      }
      *out = p;
      return Status::Ok();
    }
    case ParsedPoint::Kind::kTime:
    case ParsedPoint::Kind::kRelative: {
      const int64_t now = static_cast<int64_t>(NowNs());
      const int64_t t = pp.kind == ParsedPoint::Kind::kTime ? pp.time_ns : now - pp.ago_ns;
      if (t < meta_.created_ns) {
        return Status::NotFound("'" + text + "' (" + FormatTime(t) +
                                ") is before the store was created (" +
                                FormatTime(meta_.created_ns) + ")");
      }
      if (t > now) {
        return Status::NotFound("'" + text + "' (" + FormatTime(t) +
                                ") is in the future: the history ends now, at lsn:" +
                                std::to_string(newest));
      }
      // The last write at or before t: times never decrease with the LSN.
      // Answer in [lo, hi]; lsn 0 is creation.  After a prune the search
      // starts at the oldest point kept: its time bounds what is kept.
      uint64_t lo = 0, hi = newest;
      int64_t lo_time = meta_.created_ns;
      if (const uint64_t start = history_start_.load(); start > 0) {
        records::RedoHeader h;
        std::vector<records::CheckpointRecord> cps;
        if (s = LoadCheckpoints(&cps); !s.ok()) return s;
        int64_t start_time = 0;
        for (const auto& r : cps) {
          if (r.lsn == start) start_time = r.time_ns;
        }
        if (t < start_time) {
          return Status::NotFound("'" + text + "' (" + FormatTime(t) +
                                  ") is older than the history kept (pruned up to " +
                                  FormatTime(start_time) + ", lsn:" + std::to_string(start) + ")");
        }
        lo = start;
        lo_time = start_time;
      }
      while (lo < hi) {
        uint64_t mid = lo + (hi - lo + 1) / 2;
        records::RedoHeader h;
        if (s = GetRedo(mid, &h); !s.ok()) return s;
        if (h.time_ns <= t) {
          lo = mid;
          lo_time = h.time_ns;
        } else {
          hi = mid - 1;
        }
      }
      if (lo < history_start_.load()) {
        return Status::NotFound("'" + text + "' (" + FormatTime(t) +
                                ") is older than the history kept (pruned up to lsn:" +
                                std::to_string(history_start_.load()) + ")");
      }
      p.lsn = lo;
      p.time_ns = lo_time;
      *out = p;
      return Status::Ok();
    }
  }
  return Status::InvalidArgument("unknown point kind");
}

// ---------------------------------------------------------------------------
// Snapshots

class SnapshotImpl final : public Snapshot {
 public:
  SnapshotImpl(StoreImpl* store, DiskImpl& disk, PointInfo point)
      : store_(store), disk_(disk), point_(std::move(point)) {
    store_->open_snapshots_.fetch_add(1);
  }
  ~SnapshotImpl() override { store_->open_snapshots_.fetch_sub(1); }

  const PointInfo& point() const override { return point_; }
  uint64_t size() const override { return disk_.size(); }
  uint64_t changed_bytes() const override { return changed_bytes_; }

  Status Build();
  Status Read(uint64_t offset, uint32_t len, void* buf) override;
  // Whether a block in [offset, offset + len) not taken from the journal
  // was first overwritten since the scan (checked after the caller looked
  // at the live image).
  bool AnyLateBlock(uint64_t offset, uint64_t len) {
    StoreImpl& st = *store_;
    const uint64_t bs = st.meta_.block_size;
    std::atomic_thread_fence(std::memory_order_acquire);
    for (uint64_t b = offset / bs; b <= (offset + len - 1) / bs; b++) {
      const uint32_t stamp = disk_.stamps.Get(b);
      if (stamp != 0 && stamp - 1 >= scan_epoch_) return true;
    }
    return false;
  }
  // Read, except that the blocks found in the journal at Build are left
  // as zeros: a restore fetches those in payload order (FetchJournalBlocks).
  Status ReadLiveBlocks(uint64_t offset, uint32_t len, void* buf) {
    return ReadImpl(offset, len, buf, /*journal_blocks=*/false);
  }
  // Calls fn(block, content) for every block found in the journal at
  // Build, reading before-images in payload log order, with nearby ones
  // coalesced into one read: a restore's journal part reads the log
  // nearly sequentially rather than one random block at a time.
  Status FetchJournalBlocks(const std::function<Status(uint64_t, const char*)>& fn);
  // Lays the redo records of (L_e, L] over the blocks of where (block ->
  // its content, holding its before-image), in LSN order.
  Status LayRedo(const std::unordered_map<uint64_t, char*>& where);
  // The blocks changed since the point (as of Build), ascending.
  std::vector<uint64_t> ChangedBlocks() {
    std::lock_guard<std::shared_mutex> l(mu_);
    std::vector<uint64_t> out;
    out.reserve(blocks_.size());
    for (const auto& [b, src] : blocks_) out.push_back(b);
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  struct Source {
    records::UndoHeader undo;
    std::vector<uint64_t> redo;  // LSNs laid over the before-image, in order
  };
  Status ReadImpl(uint64_t offset, uint32_t len, void* buf, bool journal_blocks);
  // The content of block b at the point, from its source.
  Status Materialize(uint64_t b, const Source& src, char* out);
  // The source of block b if it was first overwritten after the scan, in
  // epoch from..to; Corruption when no record is found.
  Status FindLateUndo(uint64_t b, uint64_t from, uint64_t to, Source* out);

  StoreImpl* const store_;
  DiskImpl& disk_;  // the disk whose past this is
  const PointInfo point_;
  uint64_t epoch_ = 0;       // e: the newest checkpoint with lsn <= point
  uint64_t epoch_lsn_ = 0;   // L_e
  uint64_t scan_epoch_ = 0;  // the store's epoch when the scan began
  uint64_t changed_bytes_ = 0;
  std::shared_mutex mu_;  // readers share it; late before-images are added
  std::unordered_map<uint64_t, Source> blocks_;  // GUARDED_BY(mu_)
};

Status SnapshotImpl::Build() {
  StoreImpl& st = *store_;
  const uint64_t L = point_.lsn;
  // Epoch first, then wait: every before-image sequenced before the wait is
  // in RocksDB for the scan; every later one has an epoch >= scan_epoch_.
  scan_epoch_ = st.epoch_.load(std::memory_order_acquire);
  const uint64_t newest = st.last_lsn_.load(std::memory_order_acquire);
  (void)st.WaitCommitted();
  if (L > newest) {
    return Status::NotFound("lsn:" + std::to_string(L) + " is beyond the newest write");
  }
  if (L < st.history_start_.load()) {
    return Status::NotFound("lsn:" + std::to_string(L) + " is older than the history kept");
  }
  std::vector<records::CheckpointRecord> cps;
  Status s = st.LoadCheckpoints(&cps);
  if (!s.ok()) return Status::Corruption("cannot read the checkpoints: " + s.message());
  for (const auto& r : cps) {
    // A checkpoint newer than scan_epoch_ (taken since) must not pick the
    // epoch: blocks saved in scan_epoch_ after it would be missed.
    if (r.id > scan_epoch_) continue;
    if (r.lsn <= L && r.id > epoch_) {
      epoch_ = r.id;
      epoch_lsn_ = r.lsn;
    }
  }
  // (For a checkpoint point this is the checkpoint itself or a later one
  // at the same LSN: no write lies between them, so the same state.)

  // 1. Undo records of epochs >= e: the first per block wins.  Keys sort
  //    by epoch, then disk: within each epoch the scan seeks to this disk's
  //    records and leaves at the next epoch.
  std::unordered_set<uint64_t> replay;  // blocks written in (L_e, L]
  const uint32_t me = disk_.index();
  {
    std::unique_ptr<rocksdb::Iterator> it(
        st.db_->NewIterator(rocksdb::ReadOptions(), st.undo_cf_));
    for (it->Seek(records::UndoKey(epoch_, me, 0)); it->Valid();) {
      const std::string_view key(it->key().data(), it->key().size());
      uint64_t e = 0, b = 0;
      uint32_t disk = 0;
      s = records::ParseUndoKey(key, &e, &disk, &b);
      if (s.ok() && disk < me) {
        it->Seek(records::UndoKey(e, me, 0));
        continue;
      }
      if (s.ok() && disk > me) {
        if (e == UINT64_MAX) break;
        it->Seek(records::UndoKey(e + 1, me, 0));
        continue;
      }
      Source src;
      if (s.ok()) {
        s = records::DecodeUndo(key, std::string_view(it->value().data(), it->value().size()),
                                &src.undo);
      }
      if (!s.ok()) return Status::Corruption("the point " + point_.text + " needs a damaged record: " + s.message());
      if (b >= disk_.BlockCount()) {
        return Status::Corruption("before-image of block " + std::to_string(b) + disk_.Of() +
                                  " lies beyond the disk");
      }
      it->Next();
      if (blocks_.count(b)) continue;
      // Written at or before L (only in epoch e, unless pruning merged
      // epochs): the record is b's content before its first write after
      // L_e, and the redo records up to L go on top.
      if (src.undo.lsn <= L) replay.insert(b);
      blocks_.emplace(b, std::move(src));
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read before-images");
  }

  // 2. Redo records in (L_e, L] over the blocks they touch.
  if (L > epoch_lsn_) {
    std::unique_ptr<rocksdb::Iterator> it(
        st.db_->NewIterator(rocksdb::ReadOptions(), st.redo_cf_));
    uint64_t expect = epoch_lsn_ + 1;
    for (it->Seek(records::RedoKey(expect)); it->Valid() && expect <= L; it->Next(), expect++) {
      uint64_t lsn = 0;
      s = records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &lsn);
      records::RedoHeader h;
      if (s.ok() && lsn != expect) {
        s = Status::Corruption("redo record " + std::to_string(expect) + " is missing");
      }
      if (s.ok()) s = records::DecodeRedo(lsn, std::string_view(it->value().data(), it->value().size()), &h);
      const DiskImpl* rd = s.ok() ? st.DiskOf(h.disk) : nullptr;
      if (s.ok() && rd == nullptr) {
        s = Status::Corruption("redo record " + std::to_string(lsn) + " names disk " +
                               std::to_string(h.disk) + ", which the store does not have");
      }
      if (s.ok() && (h.length == 0 || h.offset + h.length > rd->size())) {
        s = Status::Corruption("redo record " + std::to_string(lsn) + " lies beyond the disk");
      }
      if (!s.ok()) return Status::Corruption("the point " + point_.text + " needs a damaged record: " + s.message());
      if (h.disk != me) continue;  // another disk's
      const uint64_t bs = st.meta_.block_size;
      for (uint64_t b = h.offset / bs; b <= (h.offset + h.length - 1) / bs; b++) {
        if (!replay.count(b)) {
          return Status::Corruption("block " + std::to_string(b) + disk_.Of() +
                                    " written by lsn " + std::to_string(lsn) +
                                    " has no before-image in epoch " + std::to_string(epoch_));
        }
        blocks_[b].redo.push_back(lsn);
      }
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read the redo journal");
    if (expect <= L) {
      return Status::Corruption("redo record " + std::to_string(expect) + " is missing");
    }
  }
  changed_bytes_ = 0;
  for (const auto& [b, src] : blocks_) changed_bytes_ += disk_.BlockLength(b);
  return Status::Ok();
}

Status SnapshotImpl::Materialize(uint64_t b, const Source& src, char* out) {
  StoreImpl& st = *store_;
  const uint64_t bs = st.meta_.block_size;
  const uint64_t begin = b * bs;
  const uint64_t len = disk_.BlockLength(b);
  std::string payload;
  if (src.undo.kind == format::UndoKind::kZeros) {
    std::memset(out, 0, len);
  } else {
    if (src.undo.length != len) {
      return Status::Corruption("before-image of block " + std::to_string(b) + " has length " +
                                std::to_string(src.undo.length));
    }
    const std::string what = "before-image of block " + std::to_string(b);
    Status s = st.ReadPayload(src.undo.payload, src.undo.length, what, &payload);
    if (!s.ok()) return s;
    std::memcpy(out, payload.data(), len);
  }
  for (uint64_t lsn : src.redo) {
    records::RedoHeader h;
    Status s = st.GetRedo(lsn, &h);
    if (!s.ok()) return s;
    const uint64_t lo = std::max(begin, h.offset);
    const uint64_t hi = std::min(begin + len, h.offset + h.length);
    if (lo >= hi) continue;
    if (h.type == format::RedoType::kWrite) {
      const std::string what = "redo record " + std::to_string(lsn);
      s = st.ReadPayload(h.payload, h.length, what, &payload);
      if (!s.ok()) return s;
      std::memcpy(out + (lo - begin), payload.data() + (lo - h.offset), hi - lo);
    } else {
      std::memset(out + (lo - begin), 0, hi - lo);
    }
  }
  return Status::Ok();
}

namespace {

// A payload to read from the payload log.
struct PayloadWant {
  records::PayloadRef ref;
  uint64_t length = 0;
};

// Neighbours in the payload log closer than kGap, in a span under kSpan,
// are read with one read.
constexpr uint64_t kGap = 256 << 10, kSpan = 4 << 20;

// Reads wants (in the order given; ascending in the log reads it nearly
// sequentially), coalescing neighbours into one read, checks each payload's
// hash and calls fn(i, payload) for wants[i].  what(i) names a payload in an
// error.
Status ReadPayloadsInOrder(Vlog& vlog, const std::vector<PayloadWant>& wants,
                           const std::function<std::string(size_t)>& what,
                           const std::function<Status(size_t, std::string_view)>& fn) {
  std::string span;
  size_t i = 0;
  while (i < wants.size()) {
    const records::PayloadRef& first = wants[i].ref;
    uint64_t end = first.offset + wants[i].length;
    size_t j = i + 1;
    while (j < wants.size()) {
      const records::PayloadRef& p = wants[j].ref;
      const uint64_t pend = p.offset + wants[j].length;
      if (p.segment != first.segment || p.offset < first.offset || p.offset > end + kGap ||
          pend - first.offset > kSpan) {
        break;
      }
      end = std::max(end, pend);
      j++;
    }
    Status s = vlog.Read(VlogRef{first.segment, first.offset},
                         static_cast<uint32_t>(end - first.offset), what(i), &span);
    if (!s.ok()) return s;
    for (size_t k = i; k < j; k++) {
      std::string_view payload(span.data() + (wants[k].ref.offset - first.offset), wants[k].length);
      if (records::PayloadHash(payload) != wants[k].ref.hash) {
        return Status::Corruption(what(k) + ": payload fails its hash");
      }
      s = fn(k, payload);
      if (!s.ok()) return s;
    }
    i = j;
  }
  return Status::Ok();
}

}  // namespace

Status SnapshotImpl::FetchJournalBlocks(const std::function<Status(uint64_t, const char*)>& fn) {
  StoreImpl& st = *store_;
  const uint64_t bs = st.meta_.block_size;
  struct Item {
    uint64_t block;
    Source src;
  };
  std::vector<Item> items;
  {
    std::lock_guard<std::shared_mutex> l(mu_);
    items.reserve(blocks_.size());
    for (const auto& [b, src] : blocks_) items.push_back(Item{b, src});
  }
  auto length_ok = [&](const Item& it) -> Status {
    if (it.src.undo.length == disk_.BlockLength(it.block)) return Status::Ok();
    return Status::Corruption("before-image of block " + std::to_string(it.block) + " has length " +
                              std::to_string(it.src.undo.length));
  };
  auto undo_what = [&](const Item& it) { return "before-image of block " + std::to_string(it.block); };

  // 1. Blocks whose content is their before-image: read in payload log
  //    order.
  std::vector<Item*> plain, layered;
  for (Item& it : items) {
    (it.src.redo.empty() && it.src.undo.kind == format::UndoKind::kData ? plain : layered)
        .push_back(&it);
  }
  std::sort(plain.begin(), plain.end(), [](const Item* a, const Item* b) {
    return std::tie(a->src.undo.payload.segment, a->src.undo.payload.offset) <
           std::tie(b->src.undo.payload.segment, b->src.undo.payload.offset);
  });
  {
    std::vector<PayloadWant> wants;
    wants.reserve(plain.size());
    for (const Item* it : plain) {
      Status s = length_ok(*it);
      if (!s.ok()) return s;
      wants.push_back(PayloadWant{it->src.undo.payload, it->src.undo.length});
    }
    Status s = ReadPayloadsInOrder(
        *st.vlog_, wants, [&](size_t i) { return undo_what(*plain[i]); },
        [&](size_t i, std::string_view payload) { return fn(plain[i]->block, payload.data()); });
    if (!s.ok()) return s;
  }

  // 2. Blocks with redo records to lay over their before-image (or whose
  //    before-image is zeros), in batches held in memory: each batch's
  //    before-images are read in payload log order, then the redo records
  //    of (L_e, L] in LSN order, which is also payload log order.  So a
  //    restore to a point deep inside a long epoch reads the log nearly
  //    sequentially once per batch, instead of a record lookup and a
  //    random read per record and block.
  const uint64_t batch_bytes =
      st.options_.restore_batch_bytes != 0 ? st.options_.restore_batch_bytes : 256ull << 20;
  const size_t per_batch = std::max<uint64_t>(1, batch_bytes / bs);
  std::sort(layered.begin(), layered.end(),
            [](const Item* a, const Item* b) { return a->block < b->block; });
  for (size_t bi = 0; bi < layered.size();) {
    const size_t bj = std::min(layered.size(), bi + per_batch);
    std::unique_ptr<char[]> buf(new char[(bj - bi) * bs]);
    std::unordered_map<uint64_t, char*> where;  // block -> its content in buf
    where.reserve(bj - bi);
    std::vector<Item*> with_data;
    bool any_redo = false;
    for (size_t k = bi; k < bj; k++) {
      Item& it = *layered[k];
      char* out = buf.get() + (k - bi) * bs;
      where.emplace(it.block, out);
      if (!it.src.redo.empty()) any_redo = true;
      if (it.src.undo.kind == format::UndoKind::kZeros) {
        std::memset(out, 0, disk_.BlockLength(it.block));
        continue;
      }
      Status s = length_ok(it);
      if (!s.ok()) return s;
      with_data.push_back(&it);
    }
    std::sort(with_data.begin(), with_data.end(), [](const Item* a, const Item* b) {
      return std::tie(a->src.undo.payload.segment, a->src.undo.payload.offset) <
             std::tie(b->src.undo.payload.segment, b->src.undo.payload.offset);
    });
    std::vector<PayloadWant> wants;
    wants.reserve(with_data.size());
    for (const Item* it : with_data) wants.push_back(PayloadWant{it->src.undo.payload, it->src.undo.length});
    Status s = ReadPayloadsInOrder(
        *st.vlog_, wants, [&](size_t i) { return undo_what(*with_data[i]); },
        [&](size_t i, std::string_view payload) {
          std::memcpy(where[with_data[i]->block], payload.data(), payload.size());
          return Status::Ok();
        });
    if (!s.ok()) return s;
    if (any_redo) {
      s = LayRedo(where);
      if (!s.ok()) return s;
    }
    for (size_t k = bi; k < bj; k++) {
      s = fn(layered[k]->block, where[layered[k]->block]);
      if (!s.ok()) return s;
    }
    bi = bj;
  }
  return Status::Ok();
}

// The redo records of (L_e, L] of this disk, laid in LSN order over the
// blocks of where (block -> its content, holding its before-image).
// Writes are gathered into runs whose payloads lie close together in the
// log, each read with one read.
Status SnapshotImpl::LayRedo(const std::unordered_map<uint64_t, char*>& where) {
  StoreImpl& st = *store_;
  const uint64_t bs = st.meta_.block_size;
  const uint64_t L = point_.lsn;
  std::vector<records::RedoHeader> run;
  std::vector<PayloadWant> wants;
  std::vector<uint64_t> run_lsns;
  auto lay = [&](const records::RedoHeader& h, const char* payload) {
    for (uint64_t b = h.offset / bs; b <= (h.offset + h.length - 1) / bs; b++) {
      auto w = where.find(b);
      if (w == where.end()) continue;
      const uint64_t begin = b * bs;
      const uint64_t lo = std::max(begin, h.offset);
      const uint64_t hi = std::min(begin + disk_.BlockLength(b), h.offset + h.length);
      if (lo >= hi) continue;
      if (payload != nullptr) {
        std::memcpy(w->second + (lo - begin), payload + (lo - h.offset), hi - lo);
      } else {
        std::memset(w->second + (lo - begin), 0, hi - lo);
      }
    }
  };
  auto flush = [&]() -> Status {
    Status s = ReadPayloadsInOrder(
        *st.vlog_, wants, [&](size_t i) { return "redo record " + std::to_string(run_lsns[i]); },
        [&](size_t i, std::string_view payload) {
          lay(run[i], payload.data());
          return Status::Ok();
        });
    run.clear();
    wants.clear();
    run_lsns.clear();
    return s;
  };
  std::unique_ptr<rocksdb::Iterator> it(st.db_->NewIterator(rocksdb::ReadOptions(), st.redo_cf_));
  uint64_t expect = epoch_lsn_ + 1;
  for (it->Seek(records::RedoKey(expect)); it->Valid() && expect <= L; it->Next(), expect++) {
    uint64_t lsn = 0;
    Status s = records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &lsn);
    if (s.ok() && lsn != expect) {
      s = Status::Corruption("redo record " + std::to_string(expect) + " is missing");
    }
    records::RedoHeader h;
    if (s.ok()) s = records::DecodeRedo(lsn, std::string_view(it->value().data(), it->value().size()), &h);
    if (s.ok() && (h.length == 0 || h.offset + h.length > disk_.size()) && h.disk == disk_.index()) {
      s = Status::Corruption("redo record " + std::to_string(lsn) + " lies beyond the disk");
    }
    if (!s.ok()) return Status::Corruption("the point " + point_.text + " needs a damaged record: " + s.message());
    if (h.disk != disk_.index()) continue;
    bool touches = false;
    for (uint64_t b = h.offset / bs; !touches && b <= (h.offset + h.length - 1) / bs; b++) {
      touches = where.count(b) != 0;
    }
    if (!touches) continue;
    if (h.type == format::RedoType::kWrite) {
      run.push_back(h);
      wants.push_back(PayloadWant{h.payload, h.length});
      run_lsns.push_back(lsn);
      if (run.size() >= 4096) s = flush();
    } else {  // zero or trim: after the writes before it
      s = flush();
      if (s.ok()) lay(h, nullptr);
    }
    if (!s.ok()) return s;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "read the redo journal");
  if (expect <= L) return Status::Corruption("redo record " + std::to_string(expect) + " is missing");
  return flush();
}

Status SnapshotImpl::FindLateUndo(uint64_t b, uint64_t from, uint64_t to, Source* out) {
  StoreImpl& st = *store_;
  (void)st.WaitCommitted();
  for (uint64_t e = from; e <= to; e++) {
    const std::string key = records::UndoKey(e, disk_.index(), b);
    std::string value;
    rocksdb::Status rs = st.db_->Get(rocksdb::ReadOptions(), st.undo_cf_, key, &value);
    if (rs.IsNotFound()) continue;
    if (!rs.ok()) return FromRocks(rs, "read before-image");
    return records::DecodeUndo(key, value, &out->undo);
  }
  return Status::Corruption("block " + std::to_string(b) +
                            " changed after the snapshot opened but has no before-image");
}

Status SnapshotImpl::Read(uint64_t offset, uint32_t len, void* buf) {
  return ReadImpl(offset, len, buf, /*journal_blocks=*/true);
}

Status SnapshotImpl::ReadImpl(uint64_t offset, uint32_t len, void* buf, bool journal_blocks) {
  StoreImpl& st = *store_;
  if (offset > disk_.size() || len > disk_.size() - offset) {
    return Status::InvalidArgument("read beyond the end of the disk");
  }
  if (len == 0) return Status::Ok();
  char* const dst = static_cast<char*>(buf);
  const uint64_t bs = st.meta_.block_size;
  const uint64_t end = offset + len;
  const uint64_t last = (end - 1) / bs;
  std::unique_ptr<char[]> block(new char[bs]);
  uint64_t b = offset / bs;
  while (b <= last) {
    // A block of the past, or a run of blocks the live disk still holds.
    Source src;
    uint64_t run_end = b;
    {
      std::shared_lock<std::shared_mutex> l(mu_);
      auto it = blocks_.find(b);
      if (it != blocks_.end()) {
        src = it->second;
      } else {
        run_end = b + 1;
        while (run_end <= last && !blocks_.count(run_end)) run_end++;
      }
    }
    const uint64_t lo = std::max(offset, b * bs);
    if (run_end == b) {  // from the journal
      const uint64_t hi = std::min(end, (b + 1) * bs);
      if (!journal_blocks) {  // the caller fetches these itself
        std::memset(dst + (lo - offset), 0, hi - lo);
        b++;
        continue;
      }
      Status s = Materialize(b, src, block.get());
      if (!s.ok()) return s;
      std::memcpy(dst + (lo - offset), block.get() + (lo - b * bs), hi - lo);
      b++;
      continue;
    }
    // From the live disk, unless a block was first overwritten since the
    // scan.  No lock: the content is read first and the stamps after.  A
    // writer stamps a block (seq_mu_, release) before its new bytes can be
    // seen (overlay, then image), so a read that saw new bytes sees the
    // stamp too, and the block's before-image is used instead.
    const uint64_t hi = std::min(end, run_end * bs);
    std::vector<std::pair<uint64_t, uint32_t>> late;  // block, stamp
    {
      Status s = st.ReadLogical(disk_, lo, hi - lo, dst + (lo - offset));
      if (!s.ok()) return s;
      std::atomic_thread_fence(std::memory_order_acquire);
      for (uint64_t x = b; x < run_end; x++) {
        const uint32_t stamp = disk_.stamps.Get(x);
        if (stamp != 0 && stamp - 1 >= scan_epoch_) late.emplace_back(x, stamp);
      }
    }
    for (const auto& [x, stamp] : late) {
      Source late_src;
      Status s = FindLateUndo(x, scan_epoch_, stamp - 1, &late_src);
      if (!s.ok()) return s;
      {
        std::lock_guard<std::shared_mutex> l(mu_);
        blocks_.emplace(x, late_src);
      }
      s = Materialize(x, late_src, block.get());
      if (!s.ok()) return s;
      const uint64_t xlo = std::max(lo, x * bs);
      const uint64_t xhi = std::min(hi, (x + 1) * bs);
      std::memcpy(dst + (xlo - offset), block.get() + (xlo - x * bs), xhi - xlo);
    }
    b = run_end;
  }
  return Status::Ok();
}

Status StoreImpl::OpenSnapshotOn(DiskImpl& d, const PointInfo& point,
                                 std::unique_ptr<Snapshot>* out) {
  auto snap = std::make_unique<SnapshotImpl>(this, d, point);
  Status s = snap->Build();
  if (!s.ok()) return s;
  *out = std::move(snap);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Restore

namespace {


Status WriteAll(int fd, const char* p, size_t len, uint64_t off, const std::string& path) {
  while (len > 0) {
    ssize_t r = pwrite(fd, p, len, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno(errno, "write " + path);
    p += r;
    off += static_cast<uint64_t>(r);
    len -= static_cast<size_t>(r);
  }
  return Status::Ok();
}

}  // namespace

Status StoreImpl::RestoreOn(DiskImpl& disk, const PointInfo& point, const RestoreOptions& options,
                            RestoreResult* result) {
  const auto start = std::chrono::steady_clock::now();
  const std::string& output = options.output;
  if (output.empty()) return Status::InvalidArgument("restore needs an output file");
  std::string dir = ".", base = output;
  if (size_t slash = output.rfind('/'); slash != std::string::npos) {
    dir = slash == 0 ? "/" : output.substr(0, slash);
    base = output.substr(slash + 1);
  }
  if (base.empty() || base == "." || base == "..") {
    return Status::InvalidArgument("restore output '" + output + "' is not a file name");
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::NotFound("restore output directory '" + dir + "' does not exist");
  }
  // Never into the store (a rename over image.raw would replace the live
  // disk) nor onto an adopted image.
  {
    char* real_dir = realpath(dir.c_str(), nullptr);
    char* real_store = realpath(options_.dir.c_str(), nullptr);
    bool inside = false;
    if (real_dir && real_store) {
      const std::string d = real_dir, st_dir = real_store;
      inside = d == st_dir || d.rfind(st_dir + "/", 0) == 0;
    }
    free(real_dir);
    free(real_store);
    // Not onto any disk's live image.
    struct stat out_st, image_st;
    bool is_image = false;
    if (stat(output.c_str(), &out_st) == 0) {
      for (const auto& d : disks_) {
        is_image = is_image || (stat(d->image_path().c_str(), &image_st) == 0 &&
                                out_st.st_dev == image_st.st_dev &&
                                out_st.st_ino == image_st.st_ino);
      }
    }
    if (inside || is_image) {
      return Status::InvalidArgument("restore output '" + output + "' is " +
                                     (is_image ? "the live image" : "inside the store") + " " +
                                     options_.dir + "; write it elsewhere");
    }
  }
  if (stat(output.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument("restore output '" + output + "' is a directory");
    }
    if (!options.overwrite) {
      return Status::AlreadyExists("restore output '" + output +
                                   "' exists (--force replaces it)");
    }
  }

  std::unique_ptr<SnapshotImpl> snap(new SnapshotImpl(this, disk, point));
  Status s = snap->Build();
  if (!s.ok()) return s;

  std::string tmp = dir + "/." + base + ".rewind-XXXXXX";
  int fd = mkstemp(tmp.data());
  if (fd < 0) return Status::FromErrno(errno, "create a temporary file in " + dir);
  bool keep = false;
  struct Cleanup {
    int& fd;
    const std::string& path;
    bool& keep;
    ~Cleanup() {
      if (fd >= 0) close(fd);
      if (!keep) unlink(path.c_str());
    }
  } cleanup{fd, tmp, keep};

  const uint64_t size = disk.size();
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) return Status::FromErrno(errno, "truncate " + tmp);
  constexpr uint64_t kChunk = 1 << 20;
  constexpr uint64_t kPiece = 4096;
  uint64_t data_bytes = 0;
  // Two passes: the live disk in order (the journal's blocks left as
  // holes), then the journal's blocks in payload log order.
  const uint64_t total = size + snap->changed_bytes();
  // The first pass on a few threads: chunks are independent, and reading
  // the live image (often cold) and writing the output overlap.  Progress
  // is reported from this thread only.
  {
    constexpr int kWorkers = 3;
    std::atomic<uint64_t> next{0}, done{0}, written{0};
    std::atomic<bool> stop{false};
    std::mutex err_mu;
    Status first_error;
    auto worker = [&] {
      std::unique_ptr<char[]> wbuf(new char[kChunk]);
      for (;;) {
        const uint64_t off = next.fetch_add(kChunk);
        if (off >= size || stop.load()) return;
        const uint64_t n = std::min(kChunk, size - off);
        // A chunk the live image holds no data in reads as zeros at the
        // point too (its blocks unchanged since the point were holes then;
        // the others come from the journal in the second pass): skip it.
        // A write not yet applied leaves the image as it was, which is
        // still the content at the point for blocks not taken from the
        // journal.
        // Unless a block in it was first overwritten (or trimmed) since the
        // snapshot's scan: its stamp, set before the image changed, says so.
        bool any_data = false;
        Status ws = disk.image->Extents(off, n, [&](uint64_t, uint64_t, bool data) {
          any_data = any_data || data;
        });
        if (ws.ok() && !any_data && !snap->AnyLateBlock(off, n)) {
          done.fetch_add(n);
          continue;
        }
        if (ws.ok()) ws = snap->ReadLiveBlocks(off, static_cast<uint32_t>(n), wbuf.get());
        // Runs of pieces that are not all zeros; the rest stays a hole.
        uint64_t run = 0;
        bool in_run = false;
        for (uint64_t pos = 0; ws.ok() && pos < n; pos += kPiece) {
          const bool zero = AllZero(wbuf.get() + pos, std::min(kPiece, n - pos));
          if (!zero && !in_run) {
            run = pos;
            in_run = true;
          } else if (zero && in_run) {
            ws = WriteAll(fd, wbuf.get() + run, pos - run, off + run, tmp);
            written.fetch_add(pos - run);
            in_run = false;
          }
        }
        if (ws.ok() && in_run) {
          ws = WriteAll(fd, wbuf.get() + run, n - run, off + run, tmp);
          written.fetch_add(n - run);
        }
        if (!ws.ok()) {
          std::lock_guard<std::mutex> l(err_mu);
          if (first_error.ok()) first_error = ws;
          stop.store(true);
          return;
        }
        done.fetch_add(n);
      }
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < kWorkers; i++) threads.emplace_back(worker);
    bool cancelled = false;
    while (done.load() < size && !stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (options.progress && !options.progress(done.load(), total)) {
        cancelled = true;
        stop.store(true);
      }
    }
    for (auto& t : threads) t.join();
    if (!first_error.ok()) return first_error;
    if (cancelled) return Status::Aborted("restore interrupted");
    data_bytes += written.load();
    if (options.progress && !options.progress(size, total)) {
      return Status::Aborted("restore interrupted");
    }
  }
  uint64_t journal_done = 0;
  const uint64_t bs = meta_.block_size;
  s = snap->FetchJournalBlocks([&](uint64_t b, const char* content) -> Status {
    const uint64_t len = disk.BlockLength(b);
    journal_done += len;
    if (!AllZero(content, len)) {  // else the hole left by the first pass
      Status w = WriteAll(fd, content, len, b * bs, tmp);
      if (!w.ok()) return w;
      data_bytes += len;
    }
    if (options.progress && journal_done % (1 << 20) < len &&
        !options.progress(size + journal_done, total)) {
      return Status::Aborted("restore interrupted");
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if (options.progress && !options.progress(total, total)) {
    return Status::Aborted("restore interrupted");
  }
  if (fdatasync(fd) != 0) return Status::FromErrno(errno, "sync " + tmp);
  if (close(fd) != 0) {
    fd = -1;
    return Status::FromErrno(errno, "close " + tmp);
  }
  fd = -1;
  if (options.overwrite) {
    if (rename(tmp.c_str(), output.c_str()) != 0) return Status::FromErrno(errno, "rename to " + output);
  } else {
    // Never replace a file that appeared meanwhile.
    if (link(tmp.c_str(), output.c_str()) != 0) {
      if (errno == EEXIST) {
        return Status::AlreadyExists("restore output '" + output + "' exists (--force replaces it)");
      }
      return Status::FromErrno(errno, "create " + output);
    }
    unlink(tmp.c_str());
  }
  keep = true;
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    const int rc = fsync(dfd);
    const int err = errno;
    close(dfd);
    if (rc != 0) return Status::FromErrno(err, "sync directory " + dir);
  }
  if (result) {
    result->point = snap->point();
    result->disk = disk.name();
    result->bytes = size;
    result->data_bytes = data_bytes;
    result->changed_bytes = snap->changed_bytes();
    result->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Rollback
//
// 1. A checkpoint before-rollback-<time>: the state being left, so that the
//    rollback can be undone like any other change.
// 2. The marker (meta "rollback": target lsn, that checkpoint's id), synced.
// 3. For every block changed since the target, on every disk of the store,
//    the target content is written through the journal where it differs
//    from the live disk (zeros as a trim), then a flush.
// 4. The marker is deleted, synced.
// A crash after 2 leaves the marker: Open runs step 3 and 4 again.  Step 3
// is idempotent (it writes the target content of the blocks that differ),
// and the target's content never changes, so finishing later gives the
// same disk.  Before 2, the checkpoint alone is left: harmless.

namespace {

std::string RollbackCheckpointName(int64_t ns) {
  time_t t = static_cast<time_t>(ns / 1000000000LL);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "before-rollback-%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string EncodeRollbackMarker(uint64_t lsn, uint64_t checkpoint_id) {
  std::string v(format::kRollbackValueSize, '\0');
  records::PutLE64(v.data(), lsn);
  records::PutLE64(v.data() + 8, checkpoint_id);
  std::string covered = std::string(format::kMetaRollback) + v.substr(0, 16);
  records::PutLE64(v.data() + 16, records::PayloadHash(covered));
  return v;
}

Status DecodeRollbackMarker(const std::string& v, uint64_t* lsn, uint64_t* checkpoint_id) {
  if (v.size() != format::kRollbackValueSize) {
    return Status::Corruption("the rollback marker has " + std::to_string(v.size()) + " bytes");
  }
  std::string covered = std::string(format::kMetaRollback) + v.substr(0, 16);
  if (records::GetLE64(v.data() + 16) != records::PayloadHash(covered)) {
    return Status::Corruption("the rollback marker fails its checksum");
  }
  *lsn = records::GetLE64(v.data());
  *checkpoint_id = records::GetLE64(v.data() + 8);
  return Status::Ok();
}

}  // namespace

// A synced write of meta records.  The payload log is synced first, under
// wal_mu_: syncing the WAL makes every record in it durable, and each of
// those found its payload appended before it could take wal_mu_.
Status StoreImpl::SyncedMetaWrite(rocksdb::WriteBatch* batch) {
  std::lock_guard<std::mutex> w(wal_mu_);
  if (refused_.load(std::memory_order_acquire)) return CheckWritable();
  Status s = vlog_->Sync();
  if (!s.ok()) {
    Refuse(s);
    return s;
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  s = FromRocks(db_->Write(wo, batch), "write store metadata");
  if (!s.ok()) Refuse(s);
  return s;
}

Status StoreImpl::PutRollbackMarker(uint64_t lsn, uint64_t checkpoint_id) {
  rocksdb::WriteBatch b;
  rocksdb::Status rs = b.Put(meta_cf_, format::kMetaRollback, EncodeRollbackMarker(lsn, checkpoint_id));
  if (!rs.ok()) return FromRocks(rs, "rollback marker");
  return SyncedMetaWrite(&b);
}

Status StoreImpl::DeleteRollbackMarker() {
  rocksdb::WriteBatch b;
  rocksdb::Status rs = b.Delete(meta_cf_, format::kMetaRollback);
  if (!rs.ok()) return FromRocks(rs, "rollback marker");
  return SyncedMetaWrite(&b);
}

Status StoreImpl::ApplyRollback(uint64_t lsn, const ProgressFn& progress, uint64_t* examined,
                                uint64_t* rewritten) {
  PointInfo target;
  target.lsn = lsn;
  target.text = "lsn:" + std::to_string(lsn);
  // Every disk goes back: a snapshot of each at the target, and the blocks
  // changed since on each.
  std::vector<std::unique_ptr<SnapshotImpl>> snaps;
  std::vector<std::vector<uint64_t>> blocks;
  uint64_t total = 0;
  for (auto& d : disks_) {
    snaps.emplace_back(new SnapshotImpl(this, *d, target));
    Status s = snaps.back()->Build();
    if (!s.ok()) return s;
    blocks.push_back(snaps.back()->ChangedBlocks());
    for (uint64_t b : blocks.back()) total += d->BlockLength(b);
  }
  *examined = 0;
  *rewritten = 0;
  for (size_t i = 0; i < disks_.size(); i++) {
    Status s = RollbackDisk(*disks_[i], *snaps[i], blocks[i], progress, total, examined, rewritten);
    if (!s.ok()) return s;
  }
  return Flush();
}

// Writes back the blocks of d that differ from the snapshot's, of those
// listed (ascending), in runs of consecutive blocks of at most 1 MiB.
Status StoreImpl::RollbackDisk(DiskImpl& d, SnapshotImpl& snap, const std::vector<uint64_t>& blocks,
                               const ProgressFn& progress, uint64_t total, uint64_t* examined,
                               uint64_t* rewritten) {
  const uint64_t bs = meta_.block_size;
  constexpr uint64_t kRunBytes = 1 << 20;
  std::vector<char> want, have;
  size_t i = 0;
  while (i < blocks.size()) {
    // A run of consecutive changed blocks, at most kRunBytes.
    size_t j = i + 1;
    while (j < blocks.size() && blocks[j] == blocks[j - 1] + 1 && (j - i) * bs < kRunBytes) j++;
    const uint64_t off = blocks[i] * bs;
    const uint64_t len = std::min<uint64_t>((j - i) * bs, d.size() - off);
    want.resize(len);
    have.resize(len);
    Status s = snap.Read(off, static_cast<uint32_t>(len), want.data());
    if (s.ok()) s = ReadOn(d, off, static_cast<uint32_t>(len), have.data());
    if (!s.ok()) return s;
    // Write the blocks that differ, a differing stretch at a time.
    uint64_t pos = 0;
    while (pos < len) {
      const uint64_t blen = std::min(bs, len - pos);
      if (std::memcmp(want.data() + pos, have.data() + pos, blen) == 0) {
        pos += blen;
        continue;
      }
      uint64_t end = pos + blen;
      while (end < len) {
        const uint64_t n = std::min(bs, len - end);
        if (std::memcmp(want.data() + end, have.data() + end, n) == 0) break;
        end += n;
      }
      // Zeros as a trim (the image stays sparse), data as a write.
      uint64_t p = pos;
      while (p < end) {
        const bool zero = AllZero(want.data() + p, std::min(bs, end - p));
        uint64_t q = p;
        while (q < end && AllZero(want.data() + q, std::min(bs, end - q)) == zero) {
          q += std::min(bs, end - q);
        }
        s = zero ? ZeroOn(d, off + p, q - p, false, /*trim=*/true)
                 : WriteOn(d, off + p, static_cast<uint32_t>(q - p), want.data() + p, false);
        if (!s.ok()) return s;
        FaultPoint("rollback.after_write");
        p = q;
      }
      *rewritten += end - pos;
      pos = end;
    }
    *examined += len;
    // A rollback is not cancelled half way (the disk would be a mix, or a
    // resume at the next open would revert writes made in between): the
    // progress callback's answer is ignored.
    if (progress) (void)progress(std::min(*examined, total), total);
    i = j;
  }
  return Status::Ok();
}

Status StoreImpl::Rollback(const PointInfo& point, const RollbackOptions& options,
                           RollbackResult* out) {
  const auto start = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> rb(rollback_mu_);
  Status s = CheckWritable();
  if (!s.ok()) return s;
  if (point.lsn > last_lsn_.load(std::memory_order_acquire)) {
    return Status::NotFound("lsn:" + std::to_string(point.lsn) + " is beyond the newest write");
  }
  if (point.lsn < history_start_.load()) {
    return Status::NotFound("lsn:" + std::to_string(point.lsn) + " is older than the history kept");
  }
  // The target must be readable before anything is changed, on every
  // disk: a marker whose target cannot be built would keep the store from
  // opening.
  for (auto& d : disks_) {
    SnapshotImpl probe(this, *d, point);
    s = probe.Build();
    if (!s.ok()) return s;
  }
  // 1. The state being left, as a checkpoint.
  CheckpointInfo before;
  const std::string base = RollbackCheckpointName(static_cast<int64_t>(NowNs()));
  for (int n = 1;; n++) {
    s = Checkpoint(n == 1 ? base : base + "-" + std::to_string(n), &before);
    if (s.code() != Status::Code::kAlreadyExists) break;
  }
  if (!s.ok()) return s;
  FaultPoint("rollback.after_checkpoint");
  // 2. The marker.
  s = PutRollbackMarker(point.lsn, before.id);
  if (!s.ok()) return s;
  FaultPoint("rollback.after_marker");
  // 3. The blocks.
  uint64_t examined = 0, rewritten = 0;
  s = ApplyRollback(point.lsn, options.progress, &examined, &rewritten);
  if (!s.ok()) return s;
  FaultPoint("rollback.before_clear");
  // 4. Done.
  s = DeleteRollbackMarker();
  if (!s.ok()) return s;
  if (out) {
    out->point = point;
    out->before = before;
    out->examined_bytes = examined;
    out->rewritten_bytes = rewritten;
    out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return Status::Ok();
}

Status StoreImpl::ResumeRollback() {
  std::string v;
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), meta_cf_, format::kMetaRollback, &v);
  if (rs.IsNotFound()) return Status::Ok();
  if (!rs.ok()) return FromRocks(rs, "read the rollback marker");
  uint64_t lsn = 0, cp = 0;
  Status s = DecodeRollbackMarker(v, &lsn, &cp);
  if (!s.ok()) return Status::Corruption("cannot finish an interrupted rollback: " + s.message());
  std::lock_guard<std::mutex> rb(rollback_mu_);
  FaultPoint("recovery.rollback");
  uint64_t examined = 0, rewritten = 0;
  s = ApplyRollback(lsn, nullptr, &examined, &rewritten);
  if (!s.ok()) {
    return s.WithPrefix("finishing an interrupted rollback to lsn " + std::to_string(lsn));
  }
  return DeleteRollbackMarker();
}

}  // namespace rwd
