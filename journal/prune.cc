// Prune: drop history by a retention policy and reclaim its space.
//
// The policy picks the checkpoints to keep (pinned ones and the newest one
// always).  K0, the oldest kept, becomes the oldest reachable point:
//   - redo records with LSN <= K0.lsn go (the disk at K0 and later needs
//     only the records after it);
//   - before-images of epochs older than K0 go (every later point takes a
//     block's first record at or after its own epoch);
//   - a dropped checkpoint D between kept ones merges its epoch into the
//     previous one: a before-image (D, b) goes when block b already has one
//     in an epoch from the previous kept checkpoint up to D (that one comes
//     first for every point that could read it); otherwise it stays, as the
//     first record of b for those points.  Snapshots handle merged epochs:
//     a first record whose lsn is <= the point is replayed over
//     (docs/architecture.md, "Reading the past").
// All of that, the dropped checkpoints and the new history_start go in one
// synced WriteBatch.  Then payload log segments no record refers to any more
// are deleted, and RocksDB compacts the ranges it dropped.
#include "records.h"
#include "store_impl.h"

#include <rewind/journal/fault_point.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>
#include <set>
#include <unordered_set>

namespace rwd {

namespace {

int64_t UtcDay(int64_t ns) { return ns / (86400LL * 1000000000LL) - (ns < 0 ? 1 : 0); }

}  // namespace

Status StoreImpl::Prune(const PrunePolicy& policy, PruneResult* out) {
  if (policy.keep_last == 0 && policy.keep_within_ns <= 0 && policy.keep_daily == 0) {
    return Status::InvalidArgument(
        "prune needs a policy: --keep-last N, --keep-within DURATION or --keep-daily N");
  }
  std::lock_guard<std::mutex> rb(rollback_mu_);
  if (open_snapshots_.load() > 0) {
    return Status::Busy("a snapshot (a time-travel export, restore or diff) is open; prune "
                        "when it has ended");
  }
  {
    std::string v;
    rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), meta_cf_, format::kMetaRollback, &v);
    if (rs.ok()) {
      return Status::Busy("an interrupted rollback is not finished; reopen the store first");
    }
    if (!rs.IsNotFound()) return FromRocks(rs, "read the rollback marker");
  }
  PruneResult r;
  StoreInfo before;
  Status s = GetInfo(&before);  // waits for the committer
  if (!s.ok()) return s;
  r.bytes_before = before.redo_bytes + before.undo_bytes;

  std::vector<records::CheckpointRecord> cps;
  if (s = LoadCheckpoints(&cps); !s.ok()) return s;
  if (cps.empty()) {
    r.history_start_lsn = history_start_.load();
    r.bytes_after = r.bytes_before;
    *out = r;
    return Status::Ok();  // nothing to measure history by
  }

  // 1. What to keep.
  const int64_t now = static_cast<int64_t>(NowNs());
  // The policy counts visible checkpoints only: pending ones (whole-VM
  // checkpoints never committed) are dropped, except the newest record of
  // all, which is always kept (it may be a whole-VM checkpoint under way).
  std::vector<const records::CheckpointRecord*> visible;
  for (const auto& c : cps) {
    if (!c.pending) visible.push_back(&c);
  }
  std::set<uint64_t> keep;  // checkpoint ids
  keep.insert(cps.back().id);
  if (!visible.empty()) keep.insert(visible.back()->id);
  for (size_t i = 0; i < visible.size(); i++) {
    const auto& c = *visible[i];
    if (c.pinned) keep.insert(c.id);
    if (i + policy.keep_last >= visible.size()) keep.insert(c.id);
    if (policy.keep_within_ns > 0 && now - c.time_ns < policy.keep_within_ns) keep.insert(c.id);
  }
  if (policy.keep_daily > 0) {
    std::set<int64_t> days;
    for (auto it = visible.rbegin(); it != visible.rend() && days.size() <= policy.keep_daily;
         ++it) {
      const int64_t day = UtcDay((*it)->time_ns);
      if (days.count(day)) continue;
      if (days.size() == policy.keep_daily) break;
      days.insert(day);
      keep.insert((*it)->id);  // the newest of its day
    }
  }
  const records::CheckpointRecord* k0 = nullptr;
  for (const auto& c : cps) {
    if (keep.count(c.id)) {
      if (!k0) k0 = &c;
      r.kept.push_back(CheckpointInfoOf(c));
    } else {
      r.dropped.push_back(CheckpointInfoOf(c));
    }
  }
  const uint64_t start = std::max(history_start_.load(), k0->lsn);
  r.history_start_lsn = start;

  // 2. The records to drop.
  rocksdb::WriteBatch batch;
  auto put = [&](rocksdb::Status rs) {
    if (s.ok() && !rs.ok()) s = FromRocks(rs, "prune");
  };
  // Redo up to start.
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), redo_cf_));
    it->SeekToFirst();
    if (it->Valid()) {
      uint64_t first = 0;
      if (records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &first)
              .ok() &&
          first <= start) {
        r.redo_records_dropped = start - first + 1;
      }
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read the redo journal");
  }
  if (r.redo_records_dropped > 0) {
    put(batch.DeleteRange(redo_cf_, records::RedoKey(0), records::RedoKey(start + 1)));
  }
  // Before-images: older epochs go whole; dropped epochs merge.
  std::map<uint64_t, uint64_t> counters;  // epoch -> bytes kept (dropped epochs only)
  std::set<uint64_t> dropped_ids;
  for (const auto& c : r.dropped) dropped_ids.insert(c.id);
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), undo_cf_));
    // Per disk: blocks with a record since the last kept epoch.
    std::vector<std::unordered_set<uint64_t>> seen(disks_.size());
    uint64_t cur_epoch = UINT64_MAX;
    bool cur_dropped = false;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key(it->key().data(), it->key().size());
      uint64_t e = 0, b = 0;
      uint32_t disk = 0;
      if (!records::ParseUndoKey(key, &e, &disk, &b).ok()) continue;  // verify reports it
      records::UndoHeader h;
      const bool decoded =
          records::DecodeUndo(key, std::string_view(it->value().data(), it->value().size()), &h)
              .ok();
      const uint64_t bytes = key.size() + it->value().size() +
                             (decoded && h.kind == format::UndoKind::kData ? h.length : 0);
      if (e < k0->id) {  // older than the oldest kept point
        put(batch.Delete(undo_cf_, it->key()));
        r.undo_records_dropped++;
        continue;
      }
      if (e != cur_epoch) {
        cur_epoch = e;
        cur_dropped = dropped_ids.count(e) != 0;
        if (!cur_dropped) {
          for (auto& blocks : seen) blocks.clear();  // a kept epoch starts a new span
        }
      }
      if (disk >= seen.size()) continue;  // verify reports it
      const bool first = seen[disk].insert(b).second;
      if (cur_dropped) {
        if (first) {
          counters[e] += bytes;
        } else {
          put(batch.Delete(undo_cf_, it->key()));
          r.undo_records_dropped++;
        }
      }
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read before-images");
  }
  if (!s.ok()) return s;
  if (policy.dry_run) {
    r.bytes_after = r.bytes_before;  // not measured without doing it
    *out = r;
    return Status::Ok();
  }
  for (const auto& c : cps) {
    if (dropped_ids.count(c.id)) put(batch.Delete(cp_cf_, records::CheckpointKey(c.id)));
  }
  // Counters: epochs before K0 go; dropped epochs hold what stayed.
  for (uint64_t e = 0; e < k0->id; e++) put(batch.Delete(meta_cf_, records::UndoBytesKey(e)));
  for (uint64_t id : dropped_ids) {
    if (id < k0->id) continue;
    char buf[8];
    records::PutLE64(buf, counters[id]);
    put(batch.Put(meta_cf_, records::UndoBytesKey(id), rocksdb::Slice(buf, 8)));
  }
  put(batch.Put(meta_cf_, format::kMetaHistoryStart, std::to_string(start)));
  if (!s.ok()) return s;
  // Readers of history must not see the cut half made: points below the
  // new start are refused from here on.
  history_start_.store(start);
  FaultPoint("prune.before_commit");
  s = SyncedMetaWrite(&batch);
  if (!s.ok()) return s;
  FaultPoint("prune.after_commit");
  {
    std::lock_guard<std::mutex> c(cp_mu_);
    for (const auto& c : r.dropped) {
      // A pending checkpoint's name may belong to a visible one.
      if (auto it = checkpoint_names_.find(c.name); it != checkpoint_names_.end() && it->second == c.id) {
        checkpoint_names_.erase(it);
      }
    }
  }

  // 3. Payload log segments nothing refers to.
  std::vector<uint32_t> sealed;
  if (s = vlog_->SealedSegments(&sealed); !s.ok()) return s;
  if (!sealed.empty()) {
    std::set<uint32_t> used;
    {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), redo_cf_));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        uint64_t lsn = 0;
        records::RedoHeader h;
        if (records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &lsn).ok() &&
            records::DecodeRedo(lsn, std::string_view(it->value().data(), it->value().size()), &h)
                .ok() &&
            h.payload.segment != 0) {
          used.insert(h.payload.segment);
        }
      }
      if (!it->status().ok()) return FromRocks(it->status(), "read the redo journal");
    }
    {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), undo_cf_));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        records::UndoHeader h;
        const std::string_view key(it->key().data(), it->key().size());
        if (records::DecodeUndo(key, std::string_view(it->value().data(), it->value().size()), &h)
                .ok() &&
            h.payload.segment != 0) {
          used.insert(h.payload.segment);
        }
      }
      if (!it->status().ok()) return FromRocks(it->status(), "read before-images");
    }
    for (uint32_t seg : sealed) {
      if (used.count(seg)) continue;
      if (s = vlog_->DeleteSegment(seg); !s.ok()) return s;
      r.segments_deleted++;
    }
  }
  // 4. Let RocksDB drop what was deleted.
  rocksdb::CompactRangeOptions co;
  (void)db_->CompactRange(co, redo_cf_, nullptr, nullptr);
  (void)db_->CompactRange(co, undo_cf_, nullptr, nullptr);
  StoreInfo after;
  if (GetInfo(&after).ok()) r.bytes_after = after.redo_bytes + after.undo_bytes;
  *out = r;
  return Status::Ok();
}

}  // namespace rwd
