// FaultInjectionFS: see the model in fault_fs.h.
//
// Lock order: mu_ is held across the forwarded call of every mutating
// operation, so SetActive(false) is one instant: no append or sync can
// straddle it.  The real file system never calls back into us.
#include "support/fault_fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace rwd::test {

namespace fs = std::filesystem;
using rocksdb::IOStatus;

std::string DirName(const std::string& path) {
  std::string p = fs::path(path).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return p.substr(0, slash);
}

namespace {

std::string Normal(const std::string& path) {
  std::string p = fs::path(path).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

bool PathExists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

// rename(2), falling back to copy and unlink across file systems.
bool MovePath(const std::string& from, const std::string& to, std::string* err) {
  if (rename(from.c_str(), to.c_str()) == 0) return true;
  if (errno != EXDEV) {
    *err += "rename " + from + " -> " + to + ": " + std::strerror(errno) + "\n";
    return false;
  }
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) {
    *err += "copy " + from + " -> " + to + ": " + ec.message() + "\n";
    return false;
  }
  unlink(from.c_str());
  return true;
}

}  // namespace

// ---- the file and directory wrappers ----

class FaultWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultWritableFile(FaultInjectionFS* fs, std::string path,
                    std::shared_ptr<FaultInjectionFS::FileState> state,
                    std::unique_ptr<rocksdb::FSWritableFile> target)
      : FSWritableFileOwnerWrapper(std::move(target)),
        fs_(fs),
        path_(std::move(path)),
        state_(std::move(state)) {}

  IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                  rocksdb::IODebugContext* dbg) override {
    std::lock_guard<std::mutex> l(fs_->mu_);
    IOStatus s = fs_->CheckLocked(&fs_->write_inj_, path_, "append");
    if (!s.ok()) return s;
    s = target()->Append(data, o, dbg);
    if (s.ok()) state_->size += data.size();
    return s;
  }
  IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                  const rocksdb::DataVerificationInfo&, rocksdb::IODebugContext* dbg) override {
    return Append(data, o, dbg);
  }
  IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                            const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    std::lock_guard<std::mutex> l(fs_->mu_);
    IOStatus s = fs_->CheckLocked(&fs_->write_inj_, path_, "append");
    if (!s.ok()) return s;
    s = target()->PositionedAppend(data, offset, o, dbg);
    if (s.ok()) state_->size = std::max<uint64_t>(state_->size, offset + data.size());
    return s;
  }
  IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                            const rocksdb::IOOptions& o, const rocksdb::DataVerificationInfo&,
                            rocksdb::IODebugContext* dbg) override {
    return PositionedAppend(data, offset, o, dbg);
  }
  IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& o,
                    rocksdb::IODebugContext* dbg) override {
    std::lock_guard<std::mutex> l(fs_->mu_);
    IOStatus s = fs_->CheckLocked(&fs_->write_inj_, path_, "truncate");
    if (!s.ok()) return s;
    s = target()->Truncate(size, o, dbg);
    if (s.ok()) {
      state_->size = size;
      state_->synced = std::min(state_->synced, size);
    }
    return s;
  }
  IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return DoSync(o, dbg, false);
  }
  IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return DoSync(o, dbg, true);
  }
  // sync_file_range starts writeback but promises nothing: not durable.
  IOStatus RangeSync(uint64_t, uint64_t, const rocksdb::IOOptions&,
                     rocksdb::IODebugContext*) override {
    std::lock_guard<std::mutex> l(fs_->mu_);
    if (!fs_->active_) return fs_->Dead("range sync " + path_);
    return IOStatus::OK();
  }
  IOStatus Close(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    std::lock_guard<std::mutex> l(fs_->mu_);
    // The descriptor is released even after the cut; the file's content is
    // fixed up by DropUnsyncedData, not by this close.
    IOStatus s = target()->Close(o, dbg);
    if (!fs_->active_) return fs_->Dead("close " + path_);
    return s;
  }

 private:
  IOStatus DoSync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg, bool full) {
    std::lock_guard<std::mutex> l(fs_->mu_);
    IOStatus s = fs_->CheckLocked(&fs_->sync_inj_, path_, "sync");
    if (!s.ok()) return s;
    if (fs_->forward_syncs_) {
      s = full ? target()->Fsync(o, dbg) : target()->Sync(o, dbg);
      if (!s.ok()) return s;
    }
    if (fs_->lying_syncs_) return IOStatus::OK();
    state_->synced = state_->size;
    fs_->syncs_++;
    return IOStatus::OK();
  }

  FaultInjectionFS* fs_;
  const std::string path_;
  std::shared_ptr<FaultInjectionFS::FileState> state_;
};

class FaultDirectory : public rocksdb::FSDirectoryWrapper {
 public:
  FaultDirectory(FaultInjectionFS* fs, std::string dir, std::unique_ptr<rocksdb::FSDirectory> t)
      : FSDirectoryWrapper(std::move(t)), fs_(fs), dir_(std::move(dir)) {}

  IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return DoSync([&] { return FSDirectoryWrapper::Fsync(o, dbg); });
  }
  IOStatus FsyncWithDirOptions(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg,
                               const rocksdb::DirFsyncOptions& d) override {
    return DoSync([&] { return FSDirectoryWrapper::FsyncWithDirOptions(o, dbg, d); });
  }

 private:
  template <typename F>
  IOStatus DoSync(F forward) {
    std::lock_guard<std::mutex> l(fs_->mu_);
    IOStatus s = fs_->CheckLocked(&fs_->sync_inj_, dir_, "sync");
    if (!s.ok()) return s;
    if (fs_->forward_syncs_) {
      s = forward();
      if (!s.ok()) return s;
    }
    fs_->DirSyncedLocked(dir_);
    return IOStatus::OK();
  }

  FaultInjectionFS* fs_;
  const std::string dir_;
};

// Passes reads and writes through; Fsync/Sync make the tracked file (if
// any) durable up to its appended length, as fsync(2) of the whole file.
class FaultRandomRWFile : public rocksdb::FSRandomRWFileOwnerWrapper {
 public:
  FaultRandomRWFile(FaultInjectionFS* fs, std::string path,
                    std::unique_ptr<rocksdb::FSRandomRWFile> target)
      : FSRandomRWFileOwnerWrapper(std::move(target)), fs_(fs), path_(std::move(path)) {}

  IOStatus Write(uint64_t offset, const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                 rocksdb::IODebugContext* dbg) override {
    std::lock_guard<std::mutex> l(fs_->mu_);
    IOStatus s = fs_->CheckLocked(&fs_->write_inj_, path_, "write");
    if (!s.ok()) return s;
    return target()->Write(offset, data, o, dbg);
  }
  IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return DoSync(o, dbg, false);
  }
  IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return DoSync(o, dbg, true);
  }
  IOStatus Close(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    std::lock_guard<std::mutex> l(fs_->mu_);
    IOStatus s = target()->Close(o, dbg);
    if (!fs_->active_) return fs_->Dead("close " + path_);
    return s;
  }

 private:
  IOStatus DoSync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg, bool full) {
    std::lock_guard<std::mutex> l(fs_->mu_);
    IOStatus s = fs_->CheckLocked(&fs_->sync_inj_, path_, "sync");
    if (!s.ok()) return s;
    if (fs_->forward_syncs_) {
      s = full ? target()->Fsync(o, dbg) : target()->Sync(o, dbg);
      if (!s.ok()) return s;
    }
    auto it = fs_->files_.find(path_);
    if (it != fs_->files_.end()) it->second->synced = it->second->size;
    fs_->syncs_++;
    return IOStatus::OK();
  }

  FaultInjectionFS* fs_;
  const std::string path_;
};

// ---- FaultInjectionFS ----

FaultInjectionFS::FaultInjectionFS(std::shared_ptr<rocksdb::FileSystem> base)
    : FileSystemWrapper(std::move(base)) {}

FaultInjectionFS::~FaultInjectionFS() {
  if (!trash_.empty()) {
    std::error_code ec;
    fs::remove_all(trash_, ec);
  }
}

void FaultInjectionFS::SetActive(bool active) {
  std::lock_guard<std::mutex> l(mu_);
  active_ = active;
}

bool FaultInjectionFS::IsActive() const {
  std::lock_guard<std::mutex> l(mu_);
  return active_;
}

void FaultInjectionFS::set_lying_syncs(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  lying_syncs_ = on;
}

void FaultInjectionFS::set_forward_syncs(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  forward_syncs_ = on;
}

IOStatus FaultInjectionFS::Dead(const std::string& what) const {
  return IOStatus::IOError("FaultInjectionFS: power is off", what);
}

void FaultInjectionFS::SetIoCounter(std::shared_ptr<IoCounter> counter) {
  std::lock_guard<std::mutex> l(mu_);
  counter_ = std::move(counter);
}

IOStatus FaultInjectionFS::CheckLocked(Injector* inj, const std::string& path, const char* op) {
  if (!active_) return Dead(path);
  if (counter_ && !counter_->Use(std::string(op) + " " + IoCounter::KindOf(path))) {
    active_ = false;  // the power went just before this operation
    return Dead(std::string(op) + " " + path);
  }
  if (inj == nullptr || !inj->armed) return IOStatus::OK();
  const FsFault& f = inj->fault;
  if (!f.path_contains.empty() && path.find(f.path_contains) == std::string::npos) {
    return IOStatus::OK();
  }
  if (inj->seen++ < f.skip) return IOStatus::OK();
  if (f.times >= 0 && inj->failed >= f.times) return IOStatus::OK();
  inj->failed++;
  injected_++;
  if (f.kind == FsFault::Kind::kNoSpace) return IOStatus::NoSpace("injected ENOSPC", path);
  return IOStatus::IOError("injected EIO", path);
}

void FaultInjectionFS::FailSyncs(const FsFault& f) {
  std::lock_guard<std::mutex> l(mu_);
  sync_inj_ = Injector{true, f, 0, 0};
}

void FaultInjectionFS::FailWrites(const FsFault& f) {
  std::lock_guard<std::mutex> l(mu_);
  write_inj_ = Injector{true, f, 0, 0};
}

void FaultInjectionFS::ClearFaults() {
  std::lock_guard<std::mutex> l(mu_);
  sync_inj_ = Injector{};
  write_inj_ = Injector{};
}

uint64_t FaultInjectionFS::injected_failures() const {
  std::lock_guard<std::mutex> l(mu_);
  return injected_;
}

uint64_t FaultInjectionFS::syncs() const {
  std::lock_guard<std::mutex> l(mu_);
  return syncs_;
}

uint64_t FaultInjectionFS::dir_syncs() const {
  std::lock_guard<std::mutex> l(mu_);
  return dir_syncs_;
}

std::map<std::string, FaultInjectionFS::FileInfo> FaultInjectionFS::Files() const {
  std::lock_guard<std::mutex> l(mu_);
  std::map<std::string, FileInfo> out;
  for (const auto& [path, st] : files_) out[path] = FileInfo{st->size, st->synced};
  return out;
}

std::vector<std::string> FaultInjectionFS::PendingDirOps() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::string> out;
  for (const auto& [dir, ops] : dir_ops_) {
    for (const DirOp& op : ops) {
      switch (op.kind) {
        case DirOp::Kind::kCreate: out.push_back("create " + op.path); break;
        case DirOp::Kind::kDelete: out.push_back("delete " + op.path); break;
        case DirOp::Kind::kRename: out.push_back("rename " + op.source + " -> " + op.path); break;
      }
    }
  }
  return out;
}

std::shared_ptr<FaultInjectionFS::FileState> FaultInjectionFS::TrackNewLocked(
    const std::string& path, bool existed) {
  auto st = std::make_shared<FileState>();
  files_[path] = st;
  if (!existed) dir_ops_[DirName(path)].push_back(DirOp{DirOp::Kind::kCreate, path, "", ""});
  return st;
}

std::string FaultInjectionFS::ParkLocked(const std::string& path) {
  if (trash_.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/rewind-fault-trash-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) return "";
    trash_ = tmpl;
  }
  std::string parked = trash_ + "/" + std::to_string(++park_seq_);
  std::string err;
  if (!MovePath(path, parked, &err)) return "";
  auto it = files_.find(path);
  if (it != files_.end()) {
    files_[parked] = it->second;
    files_.erase(it);
  }
  return parked;
}

void FaultInjectionFS::DirSyncedLocked(const std::string& dir) {
  dir_syncs_++;
  auto it = dir_ops_.find(dir);
  if (it == dir_ops_.end()) return;
  // The changes are durable now: a parked old content is gone for good.
  for (const DirOp& op : it->second) {
    if (op.parked.empty()) continue;
    files_.erase(op.parked);
    unlink(op.parked.c_str());
  }
  dir_ops_.erase(it);
}

IOStatus FaultInjectionFS::WrapWritable(const std::string& f, bool existed, uint64_t initial,
                                        std::unique_ptr<rocksdb::FSWritableFile>* r) {
  // Called with mu_ held and the target file opened into *r.
  std::shared_ptr<FileState> st;
  auto it = files_.find(f);
  if (existed && it != files_.end()) {
    st = it->second;
    st->size = initial;
    st->synced = std::min(st->synced, initial);
  } else {
    st = TrackNewLocked(f, existed);
    st->size = st->synced = initial;
  }
  *r = std::make_unique<FaultWritableFile>(this, f, st, std::move(*r));
  return IOStatus::OK();
}

IOStatus FaultInjectionFS::NewWritableFile(const std::string& fname, const rocksdb::FileOptions& o,
                                           std::unique_ptr<rocksdb::FSWritableFile>* r,
                                           rocksdb::IODebugContext* dbg) {
  const std::string f = Normal(fname);
  std::lock_guard<std::mutex> l(mu_);
  IOStatus s = CheckLocked(nullptr, f, "create");
  if (!s.ok()) return s;
  bool existed = PathExists(f);
  s = target()->NewWritableFile(f, o, r, dbg);
  if (!s.ok()) return s;
  return WrapWritable(f, existed, 0, r);
}

IOStatus FaultInjectionFS::ReopenWritableFile(const std::string& fname,
                                              const rocksdb::FileOptions& o,
                                              std::unique_ptr<rocksdb::FSWritableFile>* r,
                                              rocksdb::IODebugContext* dbg) {
  const std::string f = Normal(fname);
  std::lock_guard<std::mutex> l(mu_);
  IOStatus s = CheckLocked(nullptr, f, "reopen");
  if (!s.ok()) return s;
  struct stat st;
  bool existed = stat(f.c_str(), &st) == 0;
  uint64_t size = existed ? static_cast<uint64_t>(st.st_size) : 0;
  s = target()->ReopenWritableFile(f, o, r, dbg);
  if (!s.ok()) return s;
  if (existed && files_.find(f) == files_.end()) {
    // Not written through us before: what is there counts as durable.
    auto fst = std::make_shared<FileState>();
    fst->size = fst->synced = size;
    files_[f] = fst;
  }
  return WrapWritable(f, existed, size, r);
}

IOStatus FaultInjectionFS::ReuseWritableFile(const std::string& fname, const std::string&,
                                             const rocksdb::FileOptions&,
                                             std::unique_ptr<rocksdb::FSWritableFile>*,
                                             rocksdb::IODebugContext*) {
  // Recycled WAL files are overwritten in place, which this model does not
  // track; the store does not enable recycle_log_file_num.
  return IOStatus::NotSupported("FaultInjectionFS does not model ReuseWritableFile", fname);
}

IOStatus FaultInjectionFS::NewRandomRWFile(const std::string& fname, const rocksdb::FileOptions& o,
                                           std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                                           rocksdb::IODebugContext* dbg) {
  // See FaultRandomRWFile: passed through, its fsync tracked.
  const std::string f = Normal(fname);
  std::lock_guard<std::mutex> l(mu_);
  IOStatus s = CheckLocked(nullptr, f, "open read-write");
  if (!s.ok()) return s;
  s = target()->NewRandomRWFile(f, o, r, dbg);
  if (!s.ok()) return s;
  *r = std::make_unique<FaultRandomRWFile>(this, f, std::move(*r));
  return IOStatus::OK();
}

IOStatus FaultInjectionFS::NewDirectory(const std::string& name, const rocksdb::IOOptions& o,
                                        std::unique_ptr<rocksdb::FSDirectory>* r,
                                        rocksdb::IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSDirectory> d;
  IOStatus s = target()->NewDirectory(name, o, &d, dbg);
  if (!s.ok()) return s;
  *r = std::make_unique<FaultDirectory>(this, Normal(name), std::move(d));
  return IOStatus::OK();
}

IOStatus FaultInjectionFS::DeleteFile(const std::string& fname, const rocksdb::IOOptions& o,
                                      rocksdb::IODebugContext* dbg) {
  const std::string f = Normal(fname);
  std::lock_guard<std::mutex> l(mu_);
  if (IOStatus s = CheckLocked(nullptr, f, "delete"); !s.ok()) return s;
  if (!PathExists(f)) return target()->DeleteFile(f, o, dbg);  // its own NotFound
  // Park the file instead of deleting it, so that an undone delete can
  // bring back its durable content.
  std::string parked = ParkLocked(f);
  if (parked.empty()) return IOStatus::IOError("FaultInjectionFS: cannot park", f);
  dir_ops_[DirName(f)].push_back(DirOp{DirOp::Kind::kDelete, f, "", parked});
  return IOStatus::OK();
}

IOStatus FaultInjectionFS::RenameFile(const std::string& src_in, const std::string& dst_in,
                                      const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) {
  const std::string src = Normal(src_in), dst = Normal(dst_in);
  std::lock_guard<std::mutex> l(mu_);
  if (IOStatus s = CheckLocked(nullptr, dst, "rename to"); !s.ok()) return s;
  if (!PathExists(src)) return target()->RenameFile(src, dst, o, dbg);
  std::string parked;
  if (PathExists(dst)) {
    parked = ParkLocked(dst);
    if (parked.empty()) return IOStatus::IOError("FaultInjectionFS: cannot park", dst);
  }
  IOStatus s = target()->RenameFile(src, dst, o, dbg);
  if (!s.ok()) {
    std::string err;
    if (!parked.empty()) MovePath(parked, dst, &err);
    return s;
  }
  auto it = files_.find(src);
  if (it != files_.end()) {
    files_[dst] = it->second;
    files_.erase(it);
  }
  dir_ops_[DirName(dst)].push_back(DirOp{DirOp::Kind::kRename, dst, src, parked});
  return IOStatus::OK();
}

IOStatus FaultInjectionFS::LinkFile(const std::string& src_in, const std::string& dst_in,
                                    const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) {
  const std::string src = Normal(src_in), dst = Normal(dst_in);
  std::lock_guard<std::mutex> l(mu_);
  if (IOStatus s = CheckLocked(nullptr, dst, "link"); !s.ok()) return s;
  IOStatus s = target()->LinkFile(src, dst, o, dbg);
  if (!s.ok()) return s;
  auto st = TrackNewLocked(dst, false);
  auto it = files_.find(src);
  if (it != files_.end()) *st = *it->second;
  return s;
}

IOStatus FaultInjectionFS::Truncate(const std::string& fname, size_t size,
                                    const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) {
  const std::string f = Normal(fname);
  std::lock_guard<std::mutex> l(mu_);
  IOStatus s = CheckLocked(&write_inj_, f, "truncate");
  if (!s.ok()) return s;
  s = target()->Truncate(f, size, o, dbg);
  auto it = files_.find(f);
  if (s.ok() && it != files_.end()) {
    it->second->size = size;
    it->second->synced = std::min<uint64_t>(it->second->synced, size);
  }
  return s;
}

IOStatus FaultInjectionFS::CreateDir(const std::string& d, const rocksdb::IOOptions& o,
                                     rocksdb::IODebugContext* dbg) {
  std::lock_guard<std::mutex> l(mu_);
  if (IOStatus s = CheckLocked(nullptr, Normal(d), "mkdir"); !s.ok()) return s;
  return target()->CreateDir(d, o, dbg);
}

IOStatus FaultInjectionFS::CreateDirIfMissing(const std::string& d, const rocksdb::IOOptions& o,
                                              rocksdb::IODebugContext* dbg) {
  std::lock_guard<std::mutex> l(mu_);
  if (!active_) return Dead("mkdir " + d);
  // Counted only when it creates something.
  if (PathExists(Normal(d))) return target()->CreateDirIfMissing(d, o, dbg);
  if (IOStatus s = CheckLocked(nullptr, Normal(d), "mkdir"); !s.ok()) return s;
  return target()->CreateDirIfMissing(d, o, dbg);
}

IOStatus FaultInjectionFS::DeleteDir(const std::string& d, const rocksdb::IOOptions& o,
                                     rocksdb::IODebugContext* dbg) {
  std::lock_guard<std::mutex> l(mu_);
  if (IOStatus s = CheckLocked(nullptr, Normal(d), "rmdir"); !s.ok()) return s;
  return target()->DeleteDir(d, o, dbg);
}

// ---- the power cut ----

std::string FaultInjectionFS::DropUnsyncedData(std::mt19937_64* rng) {
  std::lock_guard<std::mutex> l(mu_);
  std::string err;
  for (auto& [path, st] : files_) {
    struct stat sb;
    if (stat(path.c_str(), &sb) != 0) continue;  // gone for good (e.g. its dir removed)
    // The unsynced tail: lost, kept whole (written back in time) or cut
    // at a random length, a third of the time each.
    uint64_t keep = st->synced;
    if (rng != nullptr && st->size > st->synced) {
      switch ((*rng)() % 3) {
        case 0: break;
        case 1: keep = st->size; break;
        default: keep += (*rng)() % (st->size - st->synced + 1); break;
      }
    }
    if (static_cast<uint64_t>(sb.st_size) != keep) {
      if (truncate(path.c_str(), static_cast<off_t>(keep)) != 0) {
        err += "truncate " + path + ": " + std::strerror(errno) + "\n";
        continue;
      }
    }
    st->size = st->synced = keep;
  }
  return err;
}

std::string FaultInjectionFS::DeleteFilesCreatedAfterLastDirSync() {
  std::lock_guard<std::mutex> l(mu_);
  std::string err;
  auto move_state = [&](const std::string& from, const std::string& to) {
    auto it = files_.find(from);
    if (it == files_.end()) return;
    files_[to] = it->second;
    files_.erase(it);
  };
  for (auto& [dir, ops] : dir_ops_) {
    for (auto op = ops.rbegin(); op != ops.rend(); ++op) {
      switch (op->kind) {
        case DirOp::Kind::kCreate:
          if (PathExists(op->path) && unlink(op->path.c_str()) != 0) {
            err += "unlink " + op->path + ": " + std::strerror(errno) + "\n";
          }
          files_.erase(op->path);
          break;
        case DirOp::Kind::kDelete:
          if (MovePath(op->parked, op->path, &err)) move_state(op->parked, op->path);
          break;
        case DirOp::Kind::kRename:
          if (PathExists(op->path) && MovePath(op->path, op->source, &err)) {
            move_state(op->path, op->source);
          }
          if (!op->parked.empty() && MovePath(op->parked, op->path, &err)) {
            move_state(op->parked, op->path);
          }
          break;
      }
    }
  }
  dir_ops_.clear();
  return err;
}

void FaultInjectionFS::ResetState() {
  std::lock_guard<std::mutex> l(mu_);
  files_.clear();
  dir_ops_.clear();
  if (!trash_.empty()) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(trash_, ec)) fs::remove_all(e.path(), ec);
  }
}

}  // namespace rwd::test
