// Looking at history without changing it: diff and verify.
#include "records.h"
#include "store_impl.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

namespace rwd {

namespace {

// Disjoint, non-adjacent byte ranges: begin -> end.
void AddRange(std::map<uint64_t, uint64_t>* set, uint64_t begin, uint64_t end) {
  auto it = set->upper_bound(begin);
  if (it != set->begin()) {
    auto prev = std::prev(it);
    if (prev->second >= begin) {
      begin = prev->first;
      end = std::max(end, prev->second);
      it = set->erase(prev);
    }
  }
  while (it != set->end() && it->first <= end) {
    end = std::max(end, it->second);
    it = set->erase(it);
  }
  set->emplace(begin, end);
}

}  // namespace

// ---------------------------------------------------------------------------
// Diff
//
// Only the ranges written between the two points can differ.  They are read
// at both points (through snapshots, so from the journal where the live disk
// no longer holds them) and compared in 512-byte sectors: a range reported
// is a run of sectors of which each holds at least one differing byte,
// clipped to what was written.

Status StoreImpl::DiffOn(DiskImpl& d, const PointInfo& from, const PointInfo& to,
                         DiffResult* out) {
  const uint64_t a = std::min(from.lsn, to.lsn);
  const uint64_t b = std::max(from.lsn, to.lsn);
  if (a < history_start_.load()) {
    return Status::NotFound("lsn:" + std::to_string(a) + " is older than the history kept");
  }
  const uint64_t newest = last_lsn_.load(std::memory_order_acquire);
  (void)WaitCommitted();
  if (b > newest) {
    return Status::NotFound("lsn:" + std::to_string(b) + " is beyond the newest write (lsn:" +
                            std::to_string(newest) + ")");
  }
  DiffResult r;
  r.from = from;
  r.to = to;
  r.disk = d.name();
  std::map<uint64_t, uint64_t> written;
  if (b > a) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), redo_cf_));
    uint64_t expect = a + 1;
    for (it->Seek(records::RedoKey(expect)); it->Valid() && expect <= b; it->Next(), expect++) {
      uint64_t lsn = 0;
      Status s = records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &lsn);
      if (s.ok() && lsn != expect) {
        s = Status::Corruption("redo record " + std::to_string(expect) + " is missing");
      }
      records::RedoHeader h;
      if (s.ok()) {
        s = records::DecodeRedo(lsn, std::string_view(it->value().data(), it->value().size()), &h);
      }
      const DiskImpl* rd = s.ok() ? DiskOf(h.disk) : nullptr;
      if (s.ok() && rd == nullptr) {
        s = Status::Corruption("redo record " + std::to_string(lsn) + " names disk " +
                               std::to_string(h.disk) + ", which the store does not have");
      }
      if (s.ok() && h.offset + h.length > rd->size()) {
        s = Status::Corruption("redo record " + std::to_string(lsn) + " lies beyond the disk");
      }
      if (!s.ok()) return s;
      if (rd != &d) continue;  // another disk's
      if (h.length > 0) AddRange(&written, h.offset, h.offset + h.length);
      r.records++;
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read the redo journal");
    if (expect <= b) return Status::Corruption("redo record " + std::to_string(expect) + " is missing");
  }
  if (!written.empty()) {
    PointInfo pa = from.lsn <= to.lsn ? from : to;
    PointInfo pb = from.lsn <= to.lsn ? to : from;
    std::unique_ptr<Snapshot> sa, sb;
    Status s = OpenSnapshotOn(d, pa, &sa);
    if (s.ok()) s = OpenSnapshotOn(d, pb, &sb);
    if (!s.ok()) return s;
    constexpr uint64_t kSector = 512;
    constexpr uint64_t kChunk = 1 << 20;
    std::vector<char> ba(kChunk), bb(kChunk);
    std::map<uint64_t, uint64_t> differ;
    for (const auto& [begin, end] : written) {
      for (uint64_t off = begin; off < end; off += kChunk) {
        const uint64_t n = std::min(kChunk, end - off);
        s = sa->Read(off, static_cast<uint32_t>(n), ba.data());
        if (s.ok()) s = sb->Read(off, static_cast<uint32_t>(n), bb.data());
        if (!s.ok()) return s;
        // Sectors of the disk, clipped to [off, off + n).
        for (uint64_t p = off; p < off + n;) {
          const uint64_t q = std::min(off + n, (p / kSector + 1) * kSector);
          if (std::memcmp(ba.data() + (p - off), bb.data() + (p - off), q - p) != 0) {
            AddRange(&differ, p, q);
          }
          p = q;
        }
      }
    }
    for (const auto& [begin, end] : differ) {
      r.ranges.push_back(DiffRange{begin, end - begin});
      r.bytes += end - begin;
    }
  }
  *out = std::move(r);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Verify

Status StoreImpl::Verify(const ProgressFn& progress, VerifyReport* out) {
  VerifyReport r;
  const uint64_t newest = last_lsn_.load(std::memory_order_acquire);
  uint64_t seq_now;
  {
    std::lock_guard<std::mutex> q(seq_mu_);
    seq_now = next_seq_;
  }
  // Everything up to newest in RocksDB and in the image (zeros and trims
  // reach reads only through the image).
  (void)WaitApplied(seq_now);
  auto damage = [&](std::string what) {
    if (r.damage.size() < 1000) r.damage.push_back(std::move(what));
  };
  // Work: every record; progress in records.
  uint64_t done = 0, total = 0;
  {
    uint64_t n = 0;
    if (db_->GetIntProperty(redo_cf_, "rocksdb.estimate-num-keys", &n)) total += n;
    if (db_->GetIntProperty(undo_cf_, "rocksdb.estimate-num-keys", &n)) total += n;
  }
  auto tick = [&]() -> bool {
    done++;
    if (progress && done % 4096 == 0) return progress(done, std::max(total, done));
    return true;
  };
  const auto cancelled = [] { return Status::Aborted("verify interrupted"); };
  std::string payload;

  // 1. Checkpoints.
  std::vector<records::CheckpointRecord> cps;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cp_cf_));
    std::set<std::string> names;
    uint64_t prev_id = 0, prev_lsn = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      records::CheckpointRecord c;
      Status s = records::DecodeCheckpoint(std::string_view(it->key().data(), it->key().size()),
                                           std::string_view(it->value().data(), it->value().size()),
                                           &c);
      r.checkpoints++;
      if (!s.ok()) {
        damage("checkpoint: " + s.message());
        continue;
      }
      const std::string what = "checkpoint " + std::to_string(c.id) + " (" + c.name + ")";
      if (c.lsn > newest) damage(what + " covers lsn " + std::to_string(c.lsn) + " beyond the newest write");
      if (c.lsn < prev_lsn) damage(what + " has a lower lsn than checkpoint " + std::to_string(prev_id));
      // Only visible checkpoints reserve their names: a pending one may share
      // its name with a visible one or another pending one.
      if (!c.pending && !names.insert(c.name).second) {
        damage(what + ": the name is used twice");
      }
      prev_id = c.id;
      prev_lsn = c.lsn;
      cps.push_back(c);
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read checkpoints");
  }
  // A before-image of epoch e names an lsn after the newest checkpoint at
  // or before e and at most the next one's (prune may have dropped the
  // checkpoints between, merging their epochs).
  auto epoch_bounds = [&](uint64_t e, uint64_t* lo, uint64_t* hi) {  // lsn in (lo, hi]
    *lo = 0;
    *hi = newest;
    for (const auto& c : cps) {
      if (c.id <= e) *lo = c.lsn;
      if (c.id > e) {
        *hi = c.lsn;
        break;
      }
    }
  };
  const uint64_t start = history_start_.load();

  // 2. Redo records: contiguous LSNs, checksums, payload hashes.
  uint64_t oldest = 0, last = 0;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), redo_cf_));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      uint64_t lsn = 0;
      Status s = records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &lsn);
      if (!s.ok()) {
        damage("redo journal: " + s.message());
        continue;
      }
      if (lsn > newest) break;  // written since verify began
      r.redo_records++;
      if (oldest == 0) oldest = lsn;
      if (last != 0 && lsn != last + 1) {
        damage("redo records " + std::to_string(last + 1) + " to " + std::to_string(lsn - 1) +
               " are missing");
      }
      last = lsn;
      records::RedoHeader h;
      s = records::DecodeRedo(lsn, std::string_view(it->value().data(), it->value().size()), &h);
      const DiskImpl* rd = s.ok() ? DiskOf(h.disk) : nullptr;
      if (s.ok() && rd == nullptr) {
        s = Status::Corruption("redo record " + std::to_string(lsn) + " names disk " +
                               std::to_string(h.disk) + ", which the store does not have");
      }
      if (s.ok() && h.offset + h.length > rd->size()) {
        s = Status::Corruption("redo record " + std::to_string(lsn) + " lies beyond the disk");
      }
      if (s.ok() && h.type == format::RedoType::kWrite) {
        const std::string what = "redo record " + std::to_string(lsn);
        s = ReadPayload(h.payload, h.length, what, &payload);
        if (s.ok()) r.payload_bytes += h.length;
      }
      if (!s.ok()) {
        if (s.code() != Status::Code::kCorruption) return s;
        damage(s.message());
      }
      if (!tick()) return cancelled();
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read the redo journal");
    // Records run to the newest LSN, from after the last one seen (or
    // after the prune point when a prune left none).
    if (const uint64_t from = std::max(last, start) + 1; newest >= from) {
      damage("redo records " + std::to_string(from) + " to " + std::to_string(newest) +
             " are missing");
    }
    if (oldest > start + 1) {
      damage("redo records " + std::to_string(start + 1) + " to " + std::to_string(oldest - 1) +
             " are missing");
    }
    if (oldest != 0 && oldest <= start) {
      damage("redo record " + std::to_string(oldest) + " is older than the history kept (lsn " +
             std::to_string(start) + ") but was not pruned");
    }
  }

  // 3. Before-images: checksums, payload hashes, and each one's lsn within
  // its epoch.
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), undo_cf_));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key(it->key().data(), it->key().size());
      uint64_t e = 0, b = 0;
      uint32_t disk = 0;
      records::UndoHeader h;
      Status s = records::ParseUndoKey(key, &e, &disk, &b);
      if (s.ok()) s = records::DecodeUndo(key, std::string_view(it->value().data(), it->value().size()), &h);
      const DiskImpl* ud = DiskOf(disk);
      const std::string what = "before-image of block " + std::to_string(b) +
                               (ud ? ud->Of() : " of disk " + std::to_string(disk)) +
                               " in epoch " + std::to_string(e);
      if (s.ok() && h.lsn > newest) continue;  // written since verify began
      r.undo_records++;
      if (s.ok() && ud == nullptr) {
        s = Status::Corruption(what + " names a disk the store does not have");
      }
      if (s.ok() && (b >= ud->BlockCount() || h.length != ud->BlockLength(b))) {
        s = Status::Corruption(what + " does not fit the disk");
      }
      if (s.ok()) {
        uint64_t lo = 0, hi = 0;
        epoch_bounds(e, &lo, &hi);
        if (h.lsn <= lo || h.lsn > hi) {
          s = Status::Corruption(what + " names lsn " + std::to_string(h.lsn) +
                                 ", outside its epoch (" + std::to_string(lo) + ", " +
                                 std::to_string(hi) + "]");
        }
      }
      if (s.ok() && h.kind == format::UndoKind::kData) {
        s = ReadPayload(h.payload, h.length, what, &payload);
        if (s.ok()) r.payload_bytes += h.length;
      }
      if (!s.ok()) {
        if (s.code() != Status::Code::kCorruption) return s;
        damage(s.message());
      }
      if (!tick()) return cancelled();
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read before-images");
  }

  // 4. The live images against the newest writes: walking the redo journal
  // back from the newest record, a page whose newest record covers it whole
  // must hold that record's bytes.  Bounded to the newest kImageCheckRecords
  // records.  Pages written again while verify runs are checked again below.
  constexpr uint64_t kImageCheckRecords = 1 << 18;
  {
    const uint64_t ps = page_size_;
    using Page = std::pair<uint32_t, uint64_t>;  // disk, page
    std::set<Page> seen;
    std::vector<Page> bad_pages;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), redo_cf_));
    std::vector<char> live(ps);
    uint64_t walked = 0;
    for (it->Seek(records::RedoKey(newest)); it->Valid() && walked < kImageCheckRecords;
         it->Prev(), walked++) {
      uint64_t lsn = 0;
      records::RedoHeader h;
      if (!records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &lsn).ok() ||
          lsn > newest ||
          !records::DecodeRedo(lsn, std::string_view(it->value().data(), it->value().size()), &h)
               .ok() ||
          DiskOf(h.disk) == nullptr || h.length == 0 ||
          h.offset + h.length > DiskOf(h.disk)->size()) {
        continue;  // reported above
      }
      DiskImpl& d = *DiskOf(h.disk);
      const uint64_t first = h.offset / ps, end_page = (h.offset + h.length + ps - 1) / ps;
      bool have_payload = false;
      for (uint64_t p = first; p < end_page; p++) {
        if (!seen.insert(Page{h.disk, p}).second) continue;
        const uint64_t pb = p * ps, pe = std::min(pb + ps, d.size());
        if (pb < h.offset || pe > h.offset + h.length) continue;  // partly written: older data
        if (h.type == format::RedoType::kWrite && !have_payload) {
          if (!ReadPayload(h.payload, h.length, "redo", &payload).ok()) {
            // Reported above; its pages' newest content is unknown.
            for (uint64_t q = p; q < end_page; q++) seen.insert(Page{h.disk, q});
            break;
          }
          have_payload = true;
        }
        Status s = ReadOn(d, pb, static_cast<uint32_t>(pe - pb), live.data());
        if (!s.ok()) return s;
        r.image_pages_checked++;
        const bool same = h.type == format::RedoType::kWrite
                              ? std::memcmp(live.data(), payload.data() + (pb - h.offset), pe - pb) == 0
                              : std::all_of(live.begin(), live.begin() + (pe - pb), [](char c) { return c == 0; });
        if (!same) bad_pages.push_back(Page{h.disk, p});
      }
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read the redo journal");
    // Drop pages written after verify began (the plugin may be serving).
    if (!bad_pages.empty()) {
      const uint64_t now = last_lsn_.load(std::memory_order_acquire);
      (void)WaitCommitted();
      std::set<Page> rewritten;
      for (uint64_t lsn = newest + 1; lsn <= now; lsn++) {
        records::RedoHeader h;
        if (!GetRedo(lsn, &h).ok() || h.length == 0) continue;
        for (uint64_t p = h.offset / ps; p <= (h.offset + h.length - 1) / ps; p++) {
          rewritten.insert(Page{h.disk, p});
        }
      }
      for (const Page& p : bad_pages) {
        if (rewritten.count(p)) continue;
        damage("the live image" + disks_[p.first]->Of() + " at offset " +
               std::to_string(p.second * ps) + " does not hold the bytes of the newest write to it");
      }
    }
  }
  *out = std::move(r);
  return Status::Ok();
}

}  // namespace rwd
