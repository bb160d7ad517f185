// StoreHarness: one store on the fault-injecting doubles (FaultInjectionFS
// for the journal and payload log, MemImage for the live image), a
// DiskModel of what must survive, and the checkpoints asked for.  Shared by
// the power-cut tests (tests/journal/powercut_test.cc) and the
// crash-at-every-I/O-operation tests (tests/journal/ioop_crash_test.cc).
//
// Operations record themselves in the model before the store is called;
// an operation that fails must fail because the power went (Cut()), else
// the test fails.  After a power cut or a kill the store is reopened and
// Verify checks, against the model: every sector holds its last durable
// value or a later one, as one prefix of the history; every acknowledged
// checkpoint is listed, no checkpoint that was never asked for is; a
// listed checkpoint reads back (through a snapshot) exactly as the disk was
// when it was taken; Extents never calls data a hole; and, every
// verify_every-th time, Store::Verify finds no damage.
//
// A power cut (PowerCut) stops both doubles at one instant, destroys the
// store, drops unsynced journal bytes (a random prefix may stay), undoes
// directory changes no directory fsync made durable, and lets a random
// subset of unsynced image writes persist, torn at sector granularity.  A
// kill (Kill) destroys the store with the doubles stopped, as kill -9
// would, but the machine stays up: everything written stays readable, and
// what was not synced is still not durable, so a later power cut can still
// lose it unless recovery synced it.
#pragma once

#include "support/disk_model.h"
#include "support/fault_fs.h"
#include "support/io_counter.h"
#include "support/mem_image.h"
#include "support/proc_util.h"

#include <rewind/journal/store.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace rwd::test {

uint64_t EnvU64(const char* name, uint64_t fallback);

struct HarnessConfig {
  uint64_t size;
  uint32_t block_size;
  uint32_t sync_interval_us;
  uint64_t write_buffer_bytes = 0;  // 0: the store's default
  uint64_t vlog_segment_bytes = 0;
  uint32_t image_sync_interval_ms = 1000;  // the tests wait for apply.after_image_sync
  // Store::Verify on every n-th Verify (0: never); the first always.
  uint32_t verify_every = 1;
  // Verify reads every listed checkpoint back, not only new ones.
  bool check_every_checkpoint = false;
  // StoreOptions::drop_damaged_journal.
  bool drop_damaged_journal = false;
};

// What a run checked, for the figures in docs/reliability.md.
struct HarnessStats {
  uint64_t power_cuts = 0;
  uint64_t kills = 0;
  uint64_t reopens_checked = 0;      // Verify calls that passed
  uint64_t acked_writes = 0;         // writes, zeros and trims acknowledged
  uint64_t acked_durable = 0;        // of those, made durable by FUA, flush or checkpoint
  uint64_t acked_flushes = 0;
  uint64_t acked_checkpoints = 0;
  uint64_t checkpoints_checked = 0;  // snapshot reads of a listed checkpoint compared
  uint64_t store_verifies = 0;       // Store::Verify runs with no damage
  uint64_t sectors_checked = 0;
};

class StoreHarness {
 public:
  StoreHarness(const HarnessConfig& cfg, uint64_t seed);
  ~StoreHarness();

  std::mt19937_64& rng() { return rng_; }
  DiskModel& model() { return model_; }
  Store& store() { return *store_; }
  bool has_store() const { return store_ != nullptr; }
  FaultInjectionFS& fs() { return *fs_; }
  MemImageFactory& images() { return *images_; }
  MemImage& image();
  const HarnessStats& stats() const { return stats_; }
  HarnessStats& mutable_stats() { return stats_; }
  const std::string& dir() const { return dir_; }
  HarnessConfig& config() { return cfg_; }
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  Status TryOpen();
  void Open();
  // Closes the store cleanly: everything becomes durable.
  void Close();
  // The same, but the power may go meanwhile: returns whether it closed.
  // The store is gone either way.
  bool CloseOrCut();

  // The instant of the cut, then everything a power cut does to the disks.
  void PowerCut();
  // kill -9: the store goes, the machine stays up (see the top).
  void Kill();
  // What the disks keep after a cut; the store must be gone already.
  void CutDisks();

  std::vector<char> ReadAll();
  // Checks the reopened store against the model and adopts what it holds.
  void Verify(const std::string& when);

  // A random range: [offset, offset+len) within the disk.
  std::pair<uint64_t, uint64_t> Range(uint64_t min_len, uint64_t max_len);

  // The store's answer to an operation: it must succeed unless the power
  // went (then the workload stops).  An answer of OK stays trustworthy
  // after a cut: the doubles fail every I/O from the cut on, so whatever
  // made it OK happened before.
  bool Succeeded(const Status& s, const char* what);
  bool Cut() const;
  // With errors expected (I/O error tests), a failed operation just stops
  // the workload; last_error() is its status.
  void set_expect_errors(bool on) { expect_errors_ = on; }
  const Status& last_error() const { return last_error_; }

  // The workload's operations; each returns whether the store acknowledged.
  bool WriteAt(uint64_t off, uint64_t len, bool fua);
  bool DoWrite(bool fua);
  bool ZeroAt(uint64_t off, uint64_t len, bool trim, bool fua);
  bool DoZero(bool trim, bool fua);
  bool DoFlush();
  // name "": "cp-<n>".
  bool DoCheckpoint(const std::string& name = "");
  // A whole-VM checkpoint as the store sees it: a pending checkpoint of kind
  // "vm", then its commit (the VM state in between is not the store's).
  bool DoVmCheckpoint();
  // Rolls the disk back to the named checkpoint (which must be listed).
  bool DoRollback(const std::string& checkpoint);
  void DoReadCheck();
  void DoExtentsCheck();
  // Store::Extents must cover [off, off+len) with consecutive regions, and
  // a region it calls a hole must read as zeros in content.
  void CheckExtents(uint64_t off, uint64_t len, const char* content);
  // n random operations, fewer if the power goes.
  void Run(int n);
  // Names of the checkpoints acknowledged so far.
  std::vector<std::string> AckedCheckpoints() const;

  // Arms a power cut at the hit-th pass of the named fault point, on
  // whichever thread passes it.  Returns whether it fired.
  std::shared_ptr<std::atomic<bool>> ArmCutAt(const std::string& point, int hit);
  void Disarm();

  // Numbers every mutating I/O of both doubles on counter (null: stop).
  void AttachCounter(std::shared_ptr<IoCounter> counter);

  // Saves the closed store (files, image, model, checkpoints) and brings
  // it back, so that many runs can start from one state.
  void SaveBase();
  void LoadBase();

 private:
  struct Cp {
    uint64_t ops_before = 0;  // operations issued before it
    bool acked = false;
    uint64_t hash = 0;        // of the disk's content when it was taken
    bool checked = false;     // its content was compared after it became durable
  };
  struct Base {
    DiskModel model{0};
    std::map<std::string, Cp> checkpoints;
    uint64_t next_tag = 1, next_cp = 1;
    std::shared_ptr<MemImageFactory> images;
    std::string image_path;
  };
  void CheckCheckpoint(const std::string& name, const Cp& cp);

  HarnessConfig cfg_;
  std::mt19937_64 rng_;
  DiskModel model_;
  TempDir tmp_;
  std::string dir_;
  std::shared_ptr<FaultInjectionFS> fs_;
  std::shared_ptr<MemImageFactory> images_;
  std::shared_ptr<IoCounter> counter_;
  std::unique_ptr<Store> store_;
  std::map<std::string, Cp> checkpoints_;
  uint64_t next_tag_ = 1;
  uint64_t next_cp_ = 1;
  std::shared_ptr<std::atomic<bool>> cut_;  // set while a cut is armed
  HarnessStats stats_;
  uint64_t verifies_ = 0;
  bool expect_errors_ = false;
  // A kill since the last Verify: the model's pending operations may have
  // died with the process, so a clean close no longer makes them durable.
  bool killed_ = false;
  Status last_error_;
  std::unique_ptr<Base> base_;
};

}  // namespace rwd::test
