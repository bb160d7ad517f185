// IoCounter: one numbering of the mutating I/O operations that reach the
// fault-injecting doubles (FaultInjectionFS for the journal and payload
// log, MemImage for the live image), and a power cut at operation N.
//
// SQLite's crash test (src/test6.c) numbers every write and sync and
// crashes at each in turn; this is the same for a store: attach one
// counter to both doubles, CutAt(n), run a scenario.  Operations 1 .. n-1
// happen; operation n and every later one, on any thread, fail with EIO
// and change nothing, as if the power went just before n.  The test then
// destroys the store and lets the doubles drop what was not durable.
//
// What counts (see fault_fs.cc and mem_image.cc): every call that changes
// a file's content, length, durability or name -- create, append,
// truncate, sync, directory fsync, delete, rename, link, mkdir, rmdir --
// and every image write, zero and sync.  Reads, closes and
// sync_file_range (which promises nothing) do not count; they fail too
// once the power is off, when they would touch the disk.
//
// Thread-safe; the doubles call it with their own locks held and it calls
// nothing back.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace rwd::test {

class IoCounter {
 public:
  // Numbers the next operation (label: what it is, e.g. "append .vlog").
  // Returns false when the power is off, or goes off at this operation:
  // the caller must then fail without doing it.
  bool Use(const std::string& label);

  // Counts from 0 again, power on; the cut happens at operation n (from 1).
  // 0: never.
  void CutAt(uint64_t n);
  // Operations numbered since the last CutAt, including the one cut.
  uint64_t ops() const;
  // Whether the power went.
  bool cut() const;
  // The operation at which it went ("" before).
  std::string cut_label() const;
  // Operations by label since the last CutAt (those after the cut
  // excluded).  For reports.
  std::map<std::string, uint64_t> tally() const;

  // A label's file kind from its path: "WAL" (*.log), "SST", "payload log"
  // (*.vlog), "MANIFEST", "CURRENT", "OPTIONS", "IDENTITY", "LOCK",
  // "directory" (no dot in the last component) or "other".
  static std::string KindOf(const std::string& path);

 private:
  mutable std::mutex mu_;
  uint64_t limit_ = 0;  // GUARDED_BY(mu_)
  uint64_t ops_ = 0;    // GUARDED_BY(mu_)
  bool cut_ = false;    // GUARDED_BY(mu_)
  std::string cut_label_;                    // GUARDED_BY(mu_)
  std::map<std::string, uint64_t> tally_;    // GUARDED_BY(mu_)
};

}  // namespace rwd::test
