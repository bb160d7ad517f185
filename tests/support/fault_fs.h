// FaultInjectionFS: a rocksdb::FileSystem that remembers what a power cut
// would lose, and can fail I/O on request.
//
// Model (after LevelDB's db/fault_injection_test.cc, our own code):
//  * Data.  Every file written through this file system has a length
//    appended and a length synced.  Sync and Fsync make everything appended
//    so far durable; RangeSync (sync_file_range) and Close do not.  Bytes
//    reach the real file at once, so a live process reads what it wrote;
//    DropUnsyncedData() later cuts each file back to what a power cut may
//    leave.
//  * Names.  Creating, renaming and deleting a file changes its directory;
//    the change is durable only once that directory is fsynced through an
//    FSDirectory from NewDirectory().  Until then it is logged, and
//    DeleteFilesCreatedAfterLastDirSync() undoes the log in reverse order:
//    new files disappear, renames are reversed (restoring a replaced
//    target), deleted files come back (they are parked in a trash directory
//    beside the store until their deletion is durable).  Directory creation
//    is treated as durable.
//  * Power.  SetActive(false) models the instant of the cut: from then on
//    every mutating call fails with IOError and changes nothing, so a store
//    being destroyed cannot "fix" the disk.  Reads still work.
//  * Errors.  FailSyncs/FailWrites make matching calls fail with IOError or
//    NoSpace without doing anything (a failed sync leaves the data unsynced).
//  * Counting.  With an IoCounter attached (SetIoCounter), every mutating
//    call is numbered on it, and the power goes off at the operation it
//    names (see io_counter.h).
//  * Random-access files (NewRandomRWFile: the payload log syncs its newest
//    segment this way when it opens) are passed through; their Fsync makes
//    a tracked file durable up to what was appended, their writes are not
//    tracked (nothing in the store writes through them).
//
// Syncs are not forwarded to the real file system by default: durability is
// what this double tracks, and real fsyncs would only slow the tests.
//
// Thread-safe.  Files opened through it must not outlive it.
#pragma once

#include "support/io_counter.h"

#include <rocksdb/file_system.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace rwd::test {

// Which calls an injected fault hits and how.
struct FsFault {
  enum class Kind { kIOError, kNoSpace };
  Kind kind = Kind::kIOError;
  uint64_t skip = 0;          // let this many matching calls succeed first
  int64_t times = 1;          // then fail this many; -1: every one from then on
  std::string path_contains;  // only paths containing this; "" matches all
};

class FaultInjectionFS : public rocksdb::FileSystemWrapper {
 public:
  explicit FaultInjectionFS(
      std::shared_ptr<rocksdb::FileSystem> base = rocksdb::FileSystem::Default());
  ~FaultInjectionFS() override;

  static const char* kClassName() { return "RewindFaultInjectionFS"; }
  const char* Name() const override { return kClassName(); }

  // ---- power ----
  void SetActive(bool active);
  bool IsActive() const;
  // Cuts every tracked file back to its synced length.  With rng, each
  // file's unsynced tail is instead lost, kept whole or kept up to a random
  // length (a prefix reached the disk before the power went), a third of
  // the time each.  Call with the files closed.
  // Returns what went wrong ("" when nothing did).
  std::string DropUnsyncedData(std::mt19937_64* rng = nullptr);
  // Undoes every create, rename and delete not made durable by a fsync of
  // its directory, newest first.  Call after DropUnsyncedData, files closed.
  // Returns what went wrong ("" when nothing did).
  std::string DeleteFilesCreatedAfterLastDirSync();
  // Forgets all tracking: what is on disk now counts as durable.
  void ResetState();
  // Forward Sync/Fsync/directory fsyncs to the real file system too.
  void set_forward_syncs(bool on);

  // ---- error injection ----
  void FailSyncs(const FsFault& f);   // file Sync/Fsync and directory fsyncs
  void FailWrites(const FsFault& f);  // Append/PositionedAppend/Truncate
  void ClearFaults();
  uint64_t injected_failures() const;
  // Numbers every mutating call on counter (null: none); the power goes off
  // when the counter says so.
  void SetIoCounter(std::shared_ptr<IoCounter> counter);
  // A broken disk, for tests that show their checks can fail: file syncs
  // report success and make nothing durable.
  void set_lying_syncs(bool on);

  // ---- observation (for tests and messages) ----
  struct FileInfo {
    uint64_t size = 0;    // bytes appended (the live length)
    uint64_t synced = 0;  // bytes durable
  };
  // Tracked files by path.
  std::map<std::string, FileInfo> Files() const;
  uint64_t syncs() const;      // successful file syncs
  uint64_t dir_syncs() const;  // successful directory fsyncs
  // Directory changes still undoable, e.g. "create /x/000012.log".
  std::vector<std::string> PendingDirOps() const;

  // ---- rocksdb::FileSystem ----
  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                      const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomRWFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& o,
                                 std::unique_ptr<rocksdb::FSDirectory>* r,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& f, const rocksdb::IOOptions& o,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& dst,
                             const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& f, size_t size, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDir(const std::string& d, const rocksdb::IOOptions& o,
                              rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDirIfMissing(const std::string& d, const rocksdb::IOOptions& o,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteDir(const std::string& d, const rocksdb::IOOptions& o,
                              rocksdb::IODebugContext* dbg) override;

 private:
  friend class FaultWritableFile;
  friend class FaultDirectory;
  friend class FaultRandomRWFile;

  struct FileState {
    uint64_t size = 0;
    uint64_t synced = 0;
  };
  // One directory change not yet made durable.
  struct DirOp {
    enum class Kind { kCreate, kDelete, kRename } kind;
    std::string path;    // kCreate: the new file; kDelete: the deleted file;
                         // kRename: the target
    std::string source;  // kRename: the old name
    std::string parked;  // kDelete, or kRename over an existing file: the
                         // old content's place in the trash ("" if none)
  };
  struct Injector {
    bool armed = false;
    FsFault fault;
    uint64_t seen = 0;
    int64_t failed = 0;
  };

  // The status for a mutating call (op, e.g. "append") on path, or OK:
  // the power, then the counter, then the injector.  Must hold mu_.
  rocksdb::IOStatus CheckLocked(Injector* inj, const std::string& path, const char* op);
  rocksdb::IOStatus Dead(const std::string& what) const;
  std::shared_ptr<FileState> TrackNewLocked(const std::string& path, bool existed);
  std::string ParkLocked(const std::string& path);  // moves a file to the trash
  void DirSyncedLocked(const std::string& dir);
  rocksdb::IOStatus WrapWritable(const std::string& f, bool existed, uint64_t initial,
                                 std::unique_ptr<rocksdb::FSWritableFile>* r);

  mutable std::mutex mu_;
  bool active_ = true;                                       // GUARDED_BY(mu_)
  bool forward_syncs_ = false;                               // GUARDED_BY(mu_)
  bool lying_syncs_ = false;                                 // GUARDED_BY(mu_)
  std::map<std::string, std::shared_ptr<FileState>> files_;  // GUARDED_BY(mu_)
  std::map<std::string, std::vector<DirOp>> dir_ops_;        // GUARDED_BY(mu_)
  Injector sync_inj_, write_inj_;                            // GUARDED_BY(mu_)
  uint64_t injected_ = 0;                                    // GUARDED_BY(mu_)
  uint64_t syncs_ = 0, dir_syncs_ = 0;                       // GUARDED_BY(mu_)
  uint64_t park_seq_ = 0;                                    // GUARDED_BY(mu_)
  std::shared_ptr<IoCounter> counter_;                       // GUARDED_BY(mu_)
  std::string trash_;                                        // created on first use
};

// The directory part of a path ("/a/b/c" -> "/a/b"), without trailing '/'.
std::string DirName(const std::string& path);

}  // namespace rwd::test
