// MemImage: an in-memory live image that forgets unsynced writes on a
// simulated power cut, and fails I/O on request.
//
// Model: an image has a durable copy and, on top of it, the list of writes
// and zeroes made since the last successful Sync.  Reads see everything.  A
// power cut lets a random subset of the unsynced operations reach the
// durable copy, in order, each possibly torn at 512-byte sector granularity
// (any subset of its sectors persists): the store must survive that because
// it writes the image only with records already durable in its journal.
// Creating an image is durable at once.
//
// MemImageFactory keeps its images by path for its whole life, so a store
// reopened with the same factory finds the state the last one left.
//
// The double also checks the ImageFile contract (no overlapping extents in
// one WriteV, nothing beyond the end) and records violations.
//
// Thread-safe.
#pragma once

#include "support/io_counter.h"

#include <rewind/journal/image_file.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace rwd::test {

class MemImage {
 public:
  MemImage(std::string path, uint64_t size);

  const std::string& path() const { return path_; }
  uint64_t size() const;

  // ---- power ----
  // Inactive: every write, zero and sync fails with EIO and changes nothing.
  void SetActive(bool active);
  // A random subset of the unsynced operations reaches the durable copy,
  // each possibly torn at sector granularity; then reads see the durable
  // copy.  How much survives is drawn per call (nothing, all, or a mix).
  void SimulatePowerCut(std::mt19937_64& rng);
  // Nothing unsynced survives.
  void DropUnsynced();
  // Everything unsynced survives (the process died, the machine did not).
  void KeepUnsynced();

  // ---- error injection ----
  enum class Op { kRead, kWrite, kSync };  // kWrite covers WriteV and Zero
  // After skip successful calls of op, the next `times` (-1: all) fail with
  // err (EIO, ENOSPC, ...), changing nothing.
  void InjectError(Op op, int err, uint64_t skip = 0, int64_t times = 1);
  void ClearErrors();
  uint64_t injected_failures() const;
  // Numbers every write, zero and sync on counter (null: none); the power
  // goes off when the counter says so (see io_counter.h).
  void SetIoCounter(std::shared_ptr<IoCounter> counter);

  // ---- observation ----
  std::vector<char> Live() const;
  std::vector<char> Durable() const;
  size_t unsynced_ops() const;
  uint64_t syncs() const;
  int open_handles() const;
  // Broken ImageFile contracts seen so far ("" when none).
  std::string violations() const;

 private:
  friend class MemImageFile;
  friend class MemImageFactory;

  struct Pending {
    uint64_t offset;
    uint64_t length;
    std::vector<char> data;  // empty: zeroes
    bool punch;
  };
  struct Injected {
    int err = 0;
    uint64_t skip = 0;
    int64_t times = 0;
    uint64_t seen = 0;
  };
  static constexpr uint64_t kPage = 4096;

  // Status of a call of op: EIO when inactive, an injected error, or OK.
  // Must hold mu_.
  Status CheckLocked(Op op, const char* what);
  void ApplyLocked(std::vector<char>* image, const Pending& p, uint64_t from, uint64_t to) const;
  void MarkLocked(uint64_t offset, uint64_t length, bool allocated);

  Status Read(uint64_t offset, uint32_t len, void* buf);
  Status WriteV(const std::vector<IoVec>& extents);
  Status Zero(uint64_t offset, uint64_t len, bool punch_hole);
  Status Sync();
  Status Extents(uint64_t offset, uint64_t len,
                 const std::function<void(uint64_t, uint64_t, bool)>& fn);
  void Resize(uint64_t size);

  const std::string path_;
  mutable std::mutex mu_;
  std::vector<char> live_;         // GUARDED_BY(mu_)
  std::vector<char> durable_;      // GUARDED_BY(mu_)
  std::vector<bool> allocated_;    // per 4 KiB page of live_; GUARDED_BY(mu_)
  std::deque<Pending> pending_;    // GUARDED_BY(mu_)
  bool active_ = true;             // GUARDED_BY(mu_)
  std::map<Op, Injected> inject_;  // GUARDED_BY(mu_)
  uint64_t injected_ = 0;          // GUARDED_BY(mu_)
  uint64_t syncs_ = 0;             // GUARDED_BY(mu_)
  int handles_ = 0;                // GUARDED_BY(mu_)
  std::string violations_;         // GUARDED_BY(mu_)
  std::shared_ptr<IoCounter> counter_;  // GUARDED_BY(mu_)
};

class MemImageFactory : public ImageFileFactory {
 public:
  Status Open(const std::string& path, bool create, uint64_t size,
              std::unique_ptr<ImageFile>* out) override;
  bool Exists(const std::string& path) override;

  // The image at path, or null.
  std::shared_ptr<MemImage> Get(const std::string& path) const;
  // The one image, when exactly one exists (else null).
  std::shared_ptr<MemImage> Only() const;
  // On every image.
  void SetActive(bool active);
  void SimulatePowerCut(std::mt19937_64& rng);
  // On every image, also those opened later.
  void SetIoCounter(std::shared_ptr<IoCounter> counter);
  // A new image at path with from's durable content and allocation, all
  // durable (for tests that start many runs from one saved state).
  // Replaces any image at path.
  void PutCopy(const std::string& path, const MemImage& from);

 private:
  mutable std::mutex mu_;
  std::shared_ptr<IoCounter> counter_;  // GUARDED_BY(mu_)
  std::map<std::string, std::shared_ptr<MemImage>> images_;  // GUARDED_BY(mu_)
};

}  // namespace rwd::test
