// LocalBackend: the store opened in the CLI's own process, for when no plugin
// runs.  Store::Open takes RocksDB's lock on the store, so a plugin that
// starts meanwhile fails cleanly rather than sharing the journal.
#include <fmt/format.h>
#include <rewind/control/protocol.h>

#include "backend.h"

namespace rwd::cli {
namespace {

class LocalBackend final : public Backend {
 public:
  explicit LocalBackend(std::unique_ptr<Store> store) : store_(std::move(store)) {}
  ~LocalBackend() override {
    if (store_ != nullptr) (void)store_->Close();
  }

  bool online() const override { return false; }

  Status GetInfo(StoreInfo* out) override { return store_->GetInfo(out); }

  using Backend::Checkpoint;
  Status Checkpoint(const CheckpointOptions& options, CheckpointInfo* out) override {
    return store_->Checkpoint(options, out);
  }

  Status Pin(const std::string& name, bool pinned, CheckpointInfo* out) override {
    return store_->SetPinned(name, pinned, out);
  }

  Status ListCheckpoints(std::vector<CheckpointInfo>* out) override {
    return store_->ListCheckpoints(out);
  }

  Status Restore(const std::string& point, const std::string& disk, const std::string& output,
                 bool force, const ProgressFn& progress, RestoreResult* out) override {
    Disk* d = nullptr;
    if (Status s = control::PickDisk(*store_, disk, "restore", &d); !s.ok()) return s;
    PointInfo resolved;
    if (Status s = store_->ResolvePoint(point, &resolved); !s.ok()) return s;
    StoreInfo info;
    if (Status s = store_->GetInfo(&info); !s.ok()) return s;
    if (Status s = control::CheckRestoreOutput(output, info); !s.ok()) return s;
    RestoreOptions options;
    options.output = output;
    options.overwrite = force;
    options.progress = progress;
    return d ? d->Restore(resolved, options, out) : store_->Restore(resolved, options, out);
  }

  Status Rollback(const std::string& point, const ProgressFn& progress,
                  RollbackResult* out) override {
    PointInfo resolved;
    if (Status s = store_->ResolvePoint(point, &resolved); !s.ok()) return s;
    RollbackOptions options;
    options.progress = progress;
    return store_->Rollback(resolved, options, out);
  }

  Status Diff(const std::string& from, const std::string& to, const std::string& disk,
              DiffResult* out) override {
    Disk* d = nullptr;
    Status s = control::PickDisk(*store_, disk, "diff", &d);
    PointInfo a, b;
    if (s.ok()) s = store_->ResolvePoint(from, &a);
    if (s.ok()) s = store_->ResolvePoint(to, &b);
    if (!s.ok()) return s;
    return d ? d->Diff(a, b, out) : store_->Diff(a, b, out);
  }

  Status Verify(const ProgressFn& progress, VerifyReport* out) override {
    return store_->Verify(progress, out);
  }

  Status Prune(const PrunePolicy& policy, PruneResult* out) override {
    return store_->Prune(policy, out);
  }

  Status Close() override {
    if (store_ == nullptr) return Status::Ok();
    Status s = store_->Close();
    store_.reset();
    return s;
  }

 private:
  std::unique_ptr<Store> store_;
};

}  // namespace

Status OpenLocal(const std::string& dir, std::unique_ptr<Backend>* out, bool drop_damaged_journal) {
  if (Status s = CheckDirectory(dir); !s.ok()) return s;
  if (!Store::Exists(dir)) {
    return Status::NotFound(fmt::format(
        "'{}' is not a rewind store (make one with 'rewind create {} --size SIZE')", dir, dir));
  }
  StoreOptions options;
  options.dir = AbsoluteDir(dir);
  options.create_if_missing = false;
  options.drop_damaged_journal = drop_damaged_journal;
  std::unique_ptr<Store> store;
  Status s = Store::Open(options, &store);
  if (s.code() == Status::Code::kBusy) {
    return Status::Busy(
        fmt::format("store '{}' is in use by another process, and no plugin answers on {}", dir,
                    ControlSocketPath(dir)));
  }
  if (!s.ok()) return s;
  *out = std::make_unique<LocalBackend>(std::move(store));
  return Status::Ok();
}

}  // namespace rwd::cli
