// A Store for the control tests that implements nothing: every method fails
// with NotSupported.  A test derives from it and implements what the
// control protocol reaches in that test.  When rwd::Store gains a method,
// add it here.
#pragma once

#include <rewind/journal/store.h>

#include <string>

namespace rwd::control::test {

class UnusedStore : public Store {
 public:
  explicit UnusedStore(std::string dir) : dir_(std::move(dir)) {}

  uint64_t size() const override { return 1 << 20; }
  uint32_t block_size() const override { return 4096; }
  const std::string& dir() const override { return dir_; }
  size_t disk_count() const override { return 1; }
  Disk* disk(size_t) override { return nullptr; }
  Status Read(uint64_t, uint32_t, void*) override { return Unused(); }
  Status Write(uint64_t, uint32_t, const void*, bool) override { return Unused(); }
  Status Zero(uint64_t, uint64_t, bool, bool) override { return Unused(); }
  Status Flush() override { return Unused(); }
  Status Extents(uint64_t, uint64_t,
                 const std::function<void(uint64_t, uint64_t, bool)>&) override {
    return Unused();
  }
  using Store::Checkpoint;
  using Store::ListCheckpoints;
  Status Checkpoint(const CheckpointOptions&, CheckpointInfo*) override { return Unused(); }
  Status CommitCheckpoint(uint64_t, CheckpointInfo*) override { return Unused(); }
  Status SetPinned(const std::string&, bool, CheckpointInfo*) override { return Unused(); }
  Status ListCheckpoints(std::vector<CheckpointInfo>*, bool) override { return Unused(); }
  Status GetInfo(StoreInfo*) override { return Unused(); }
  Status ResolvePoint(const std::string&, PointInfo*) override { return Unused(); }
  Status OpenSnapshot(const PointInfo&, std::unique_ptr<Snapshot>*) override { return Unused(); }
  Status Restore(const PointInfo&, const RestoreOptions&, RestoreResult*) override {
    return Unused();
  }
  Status Rollback(const PointInfo&, const RollbackOptions&, RollbackResult*) override {
    return Unused();
  }
  Status Diff(const PointInfo&, const PointInfo&, DiffResult*) override { return Unused(); }
  Status Verify(const ProgressFn&, VerifyReport*) override { return Unused(); }
  Status Prune(const PrunePolicy&, PruneResult*) override { return Unused(); }
  Status Close() override { return Status::Ok(); }

 protected:
  static Status Unused() { return Status::NotSupported("not used by this test"); }

 private:
  const std::string dir_;
};

}  // namespace rwd::control::test
