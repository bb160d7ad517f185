// The applier: carries durable records into the live image, in LSN order.
#include "records.h"
#include "store_impl.h"

#include <rewind/journal/fault_point.h>

#include <algorithm>
#include <chrono>
#include <map>

namespace rwd {

namespace {
constexpr size_t kMaxOpsPerRound = 4096;
constexpr uint64_t kDefaultImageSyncBytes = 1ull << 30;
constexpr uint32_t kDefaultImageSyncIntervalMs = 5000;
}  // namespace

void StoreImpl::ApplierLoop() {
  const uint64_t sync_bytes =
      options_.image_sync_bytes ? options_.image_sync_bytes : kDefaultImageSyncBytes;
  const auto sync_interval = std::chrono::milliseconds(
      options_.image_sync_interval_ms ? options_.image_sync_interval_ms : kDefaultImageSyncIntervalMs);
  uint64_t bytes_since_sync = 0;
  auto last_sync = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> l(state_mu_);
  for (;;) {
    state_cv_.wait_for(l, sync_interval, [&] {
      return stopping_ || refused_.load() || applied_seq_.load() < durable_seq_.load();
    });
    if (refused_.load()) return;
    std::vector<ApplyOp> ops;
    const uint64_t durable = durable_seq_.load();
    while (!apply_queue_.empty() && apply_queue_.front().seq <= durable &&
           (ops.size() < kMaxOpsPerRound || apply_queue_.front().seq == ops.back().seq)) {
      ops.push_back(std::move(apply_queue_.front()));
      apply_queue_.pop_front();
    }
    // Groups without image work (checkpoints) count as applied too.
    const uint64_t covered =
        apply_queue_.empty() || apply_queue_.front().seq > durable ? durable : ops.back().seq;
    const bool idle = ops.empty();
    if (idle && stopping_ && apply_queue_.empty() && applied_seq_.load() >= durable) break;
    l.unlock();
    uint64_t bytes = 0;
    for (const ApplyOp& op : ops) {
      if (op.kind == OpKind::kWrite) bytes += op.length;
    }
    Status s = idle ? Status::Ok() : ApplyOps(ops);
    if (!s.ok()) {
      Refuse(s);
      return;
    }
    bytes_since_sync += bytes;
    const uint64_t applied = idle ? applied_lsn_.load() : ops.back().lsn;
    {
      std::lock_guard<std::mutex> g(state_mu_);
      applied_lsn_.store(applied);
      if (covered > applied_seq_.load()) applied_seq_.store(covered, std::memory_order_release);
      pending_bytes_.fetch_sub(bytes);
      state_cv_.notify_all();
    }
    auto now = std::chrono::steady_clock::now();
    // The sync runs on the syncer's thread: an fdatasync of an image with
    // a gigabyte of dirty pages takes the device a second, and applying
    // must not stop for it (writers would fill max_pending_bytes and
    // wait).  If the syncer is still busy the request is made again after
    // a later round.
    if (applied > persisted_applied_.load() &&
        (bytes_since_sync >= sync_bytes || now - last_sync >= sync_interval) &&
        RequestImageSync(applied)) {
      bytes_since_sync = 0;
      last_sync = now;
    }
    l.lock();
  }
}

bool StoreImpl::RequestImageSync(uint64_t lsn) {
  std::lock_guard<std::mutex> g(sync_mu_);
  if (sync_busy_ || sync_request_lsn_ != 0) return false;
  sync_request_lsn_ = lsn;
  sync_cv_.notify_all();
  return true;
}

// Invariant: applied_lsn is recorded only after the images hold every
// record <= it and are synced.  The request's lsn was applied (its image
// writes completed, image_dirty set) before the request was made, so the
// syncs made after taking it cover it; writes the applier makes meanwhile
// are newer and leave image_dirty set for the next sync.
void StoreImpl::SyncerLoop() {
  std::unique_lock<std::mutex> g(sync_mu_);
  for (;;) {
    sync_cv_.wait(g, [&] { return sync_stop_ || sync_request_lsn_ != 0; });
    if (sync_request_lsn_ == 0) return;  // stopping, nothing asked
    const uint64_t lsn = sync_request_lsn_;
    sync_request_lsn_ = 0;
    sync_busy_ = true;
    g.unlock();
    Status s = refused_.load() ? Status::Ok() : SyncImages(/*all=*/false);
    if (s.ok() && !refused_.load()) {
      FaultPoint("apply.after_image_sync");
      s = PersistApplied(lsn);
    }
    if (!s.ok()) Refuse(s);
    g.lock();
    sync_busy_ = false;
    sync_cv_.notify_all();
  }
}

Status StoreImpl::ApplyOps(std::vector<ApplyOp>& ops) {
  size_t begin = 0;
  for (size_t i = 0; i < ops.size(); i++) {
    if (ops[i].kind == OpKind::kWrite) continue;
    Status s = ApplyWrites(ops, begin, i);  // writes before the zero first
    if (!s.ok()) return s;
    DiskImpl& d = *disks_[ops[i].disk];
    s = d.image->Zero(ops[i].offset, ops[i].length, ops[i].kind == OpKind::kTrim);
    if (!s.ok()) return s;
    d.image_dirty = true;  // after the write: a sync that clears it covers it
    begin = i + 1;
  }
  return ApplyWrites(ops, begin, ops.size());
}

// Writes the newest content of every page written by ops[begin, end) and
// then drops those pages from the overlay unless a newer write replaced
// them: disk by disk (the disks' images are independent).
Status StoreImpl::ApplyWrites(std::vector<ApplyOp>& ops, size_t begin, size_t end) {
  if (begin >= end) return Status::Ok();
  const uint64_t ps = page_size_;
  // Every page the writes touch, sorted by (disk, page, LSN): the newest
  // content of each page comes last and is the one kept.  A sort of a
  // vector kept across rounds: no allocation per page.
  std::vector<PageToApply>& pages = apply_pages_;
  pages.clear();
  for (size_t i = begin; i < end; i++) {
    const ApplyOp& op = ops[i];
    for (uint64_t p = 0; p < op.npages; p++) {
      pages.push_back(PageToApply{op.disk, op.first_page + p, op.lsn, op.pages.get() + p * ps});
    }
  }
  std::sort(pages.begin(), pages.end(), [](const PageToApply& a, const PageToApply& b) {
    if (a.disk != b.disk) return a.disk < b.disk;
    return a.page != b.page ? a.page < b.page : a.lsn < b.lsn;
  });
  size_t kept = 0;
  for (size_t i = 0; i < pages.size(); i++) {
    const bool newest =
        i + 1 == pages.size() || pages[i + 1].disk != pages[i].disk || pages[i + 1].page != pages[i].page;
    if (newest) pages[kept++] = pages[i];
  }
  pages.resize(kept);
  for (size_t first = 0; first < pages.size();) {
    size_t last = first;
    while (last < pages.size() && pages[last].disk == pages[first].disk) last++;
    DiskImpl& d = *disks_[pages[first].disk];
    std::vector<IoVec>& iov = apply_iov_;
    iov.clear();
    for (size_t i = first; i < last; i++) {
      const PageToApply& n = pages[i];
      uint64_t off = n.page * ps;
      uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(ps, d.size() - off));
      if (!iov.empty()) {
        IoVec& prev = iov.back();
        if (prev.offset + prev.length == off &&
            static_cast<const char*>(prev.data) + prev.length == n.data &&
            prev.length < (4u << 20)) {
          prev.length += len;
          continue;
        }
      }
      iov.push_back(IoVec{off, n.data, len});
    }
    FaultPoint("apply.before_image_write");
    Status s = d.image->WriteV(iov);
    if (!s.ok()) return s;
    d.image_dirty = true;  // after the write: a sync that clears it covers it
    FaultPoint("apply.after_image_write");
    for (size_t i = first; i < last; i++) d.overlay.RemoveIf(pages[i].page, pages[i].lsn);
    first = last;
  }
  return Status::Ok();
}

void StoreImpl::StopThreads() {
  {
    std::lock_guard<std::mutex> l(state_mu_);
    stopping_ = true;
    state_cv_.notify_all();
  }
  {
    std::lock_guard<std::mutex> q(seq_mu_);
    committer_stop_ = true;
  }
  committer_cv_.notify_all();
  if (committer_.joinable()) committer_.join();
  if (applier_.joinable()) applier_.join();
  // After the applier: it makes no more requests.  A request already made
  // is carried out first.
  {
    std::lock_guard<std::mutex> g(sync_mu_);
    sync_stop_ = true;
  }
  sync_cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
}

}  // namespace rwd
