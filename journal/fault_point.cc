#include <rewind/journal/fault_point.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

namespace rwd {

namespace {

struct Armed {
  std::string name;
  long remaining = 1;
};

// Parsed once from REWIND_CRASH_AT; empty name means nothing armed.
Armed* EnvArmed() {
  static Armed* armed = [] {
    auto* a = new Armed;
    if (const char* env = std::getenv("REWIND_CRASH_AT")) {
      std::string s(env);
      size_t colon = s.rfind(':');
      if (colon != std::string::npos) {
        a->remaining = std::atol(s.c_str() + colon + 1);
        if (a->remaining < 1) a->remaining = 1;
        s.resize(colon);
      }
      a->name = s;
    }
    return a;
  }();
  return armed;
}

std::mutex hook_mu;
std::function<void(std::string_view)> hook;
std::atomic<bool> hook_set{false};

}  // namespace

void FaultPoint(std::string_view name) {
  Armed* a = EnvArmed();
  if (!a->name.empty() && a->name == name) {
    static std::mutex mu;
    std::lock_guard<std::mutex> l(mu);
    if (--a->remaining == 0) kill(getpid(), SIGKILL);
  }
  if (hook_set.load(std::memory_order_acquire)) {
    std::function<void(std::string_view)> h;
    {
      std::lock_guard<std::mutex> l(hook_mu);
      h = hook;
    }
    if (h) h(name);
  }
}

void SetFaultHook(std::function<void(std::string_view)> h) {
  std::lock_guard<std::mutex> l(hook_mu);
  hook = std::move(h);
  hook_set.store(static_cast<bool>(hook), std::memory_order_release);
}

const std::vector<std::string_view>& AllFaultPoints() {
  static const std::vector<std::string_view> points = {
      "write.before_commit",      // a write's pages and before-images are read, not sequenced
      "write.before_vlog",        // the committer built a group, its payloads not yet appended
      "write.after_commit",       // a group is in RocksDB (not synced)
      "write.before_ack",         // sequenced: visible in the overlay, about to return
      "flush.before_sync",        // a flush is about to sync the journal
      "flush.after_vlog_sync",    // payloads synced, RocksDB's WAL not yet
      "flush.after_sync",         // the journal is synced, flush not yet acknowledged
      "apply.before_image_write", // durable records are about to reach the image
      "apply.after_image_write",  // the image holds them, not yet synced
      "apply.after_image_sync",   // image synced, applied LSN not yet recorded
      "zero.after_commit",        // a zero/trim is durable and applied, not yet acknowledged
      "checkpoint.before_commit", // a checkpoint is sequenced, not yet durable
      "checkpoint.after_commit",  // a group with a checkpoint is in RocksDB, not synced
      "checkpoint.before_commit_pending",  // a pending checkpoint's commit, not yet written
      "rollback.after_checkpoint",  // the before-rollback checkpoint is durable, no marker
      "rollback.after_marker",    // the marker is durable, no block rewritten yet
      "rollback.after_write",     // one more run of blocks rewritten (not synced)
      "rollback.before_clear",    // every block rewritten and flushed, marker still there
      "prune.before_commit",      // prune chose what goes, nothing deleted yet
      "prune.after_commit",       // records deleted (synced), payload segments not yet
      "recovery.replay",          // recovery is replaying one record into the image
      "recovery.before_sync",     // recovery replayed the journal, image not synced
      "recovery.after_sync",      // image synced, applied LSN not yet recorded
      "recovery.rollback",        // open found a rollback marker, about to finish it
      "create.before_meta",       // a new store has its journal, no meta file yet
  };
  return points;
}

}  // namespace rwd
