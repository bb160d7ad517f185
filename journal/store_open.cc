// Opening a store: parameter checks, creation, RocksDB, crash recovery.
#include "records.h"
#include "store_impl.h"

#include <rewind/journal/fault_point.h>

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <set>

namespace rwd {

namespace fs = std::filesystem;

namespace {

// Adds little-endian u64 operands: the per-epoch before-image byte counters.
class U64AddOperator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice&, const rocksdb::Slice* existing, const rocksdb::Slice& value,
             std::string* new_value, rocksdb::Logger*) const override {
    uint64_t a = existing && existing->size() == 8 ? records::GetLE64(existing->data()) : 0;
    uint64_t b = value.size() == 8 ? records::GetLE64(value.data()) : 0;
    new_value->assign(8, '\0');
    records::PutLE64(new_value->data(), a + b);
    return true;
  }
  const char* Name() const override { return "rewind.U64Add"; }
};

std::string NewUuid() {
  std::random_device rd;
  std::uniform_int_distribution<uint64_t> d;
  char buf[40];
  uint64_t a = d(rd), b = d(rd);
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                static_cast<unsigned>(((b >> 48) & 0x3fff) | 0x8000),
                static_cast<unsigned long long>(b & 0xffffffffffffull));
  return buf;
}

std::string CreatingMarker(const std::string& dir) { return dir + "/rewind.creating"; }

// The disks the options describe: the named ones, or one unnamed disk
// from size= and image=.  Paths as given; size 0 when not given.
std::vector<DiskSpec> SpecsOf(const StoreOptions& o) {
  if (!o.disks.empty()) return o.disks;
  return {DiskSpec{"", o.size, o.image}};
}

std::string DiskImagePath(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / format::kDisksDirName / (name + format::kDiskImageSuffix)).string();
}

// Names, count and form of the disks given, on their own.
Status CheckDiskSpecs(const StoreOptions& o) {
  if (o.disks.empty()) return Status::Ok();
  if (o.size != 0 || !o.image.empty()) {
    return Status::InvalidArgument(
        "a store with named disks takes each disk's size and image with its name "
        "(size=NAME:SIZE, image=NAME:FILE), not a plain size= or image=");
  }
  if (o.disks.size() > format::kMaxDisks) {
    return Status::InvalidArgument(std::to_string(o.disks.size()) + " disks are more than a store holds (" +
                                   std::to_string(format::kMaxDisks) + ")");
  }
  std::set<std::string> names;
  for (const DiskSpec& d : o.disks) {
    Status s = ValidateDiskName(d.name);
    if (!s.ok()) return s;
    if (!names.insert(d.name).second) {
      return Status::InvalidArgument("disk '" + d.name + "' is given twice");
    }
  }
  return Status::Ok();
}

// A new store's disks: the size of each (from the options or its adopted
// image) into specs.
Status CheckNewStore(const StoreOptions& o, std::vector<DiskSpec>* specs) {
  if (!o.create_if_missing) return Status::NotFound(o.dir + " is not a rewind store");
  if (o.dir.find('\n') != std::string::npos) {
    return Status::InvalidArgument("dir= path contains a newline");
  }
  *specs = SpecsOf(o);
  // Files of a store's names without its rewind.meta are only ever removed
  // when our own creation marker says a creation of ours left them.
  std::error_code ec;
  bool leftovers = fs::exists(fs::path(o.dir) / format::kJournalDirName, ec) ||
                   fs::exists(fs::path(o.dir) / format::kVlogDirName, ec) ||
                   fs::exists(fs::path(o.dir) / format::kDisksDirName, ec) ||
                   (o.disks.empty() && o.image.empty() &&
                    fs::exists(fs::path(o.dir) / format::kImageFileName, ec));
  if (leftovers && !fs::exists(CreatingMarker(o.dir), ec)) {
    return Status::InvalidArgument(o.dir + " holds a journal/, vlog/, disks/ or image.raw but no " +
                                   format::kMetaFileName +
                                   ": it is not a rewind store, and rewind will not overwrite it");
  }
  // The file (device, inode) -> disk: two spellings of one file (a symbolic
  // or hard link) are one image, and two disks on one file would mix their
  // writes and their history.
  std::map<std::pair<dev_t, ino_t>, std::string> adopted;
  for (DiskSpec& d : *specs) {
    const std::string what = d.name.empty() ? "" : d.name + ":";
    if (!d.image.empty()) {
      struct stat st;
      if (stat(d.image.c_str(), &st) != 0) {
        return Status::FromErrno(errno, "image=" + what + d.image);
      }
      if (!S_ISREG(st.st_mode)) {
        return Status::InvalidArgument("image=" + what + d.image + " is not a regular file");
      }
      if (d.image.find('\n') != std::string::npos) {
        return Status::InvalidArgument("image= path contains a newline");
      }
      uint64_t isz = static_cast<uint64_t>(st.st_size);
      if (d.size != 0 && d.size != isz) {
        return Status::InvalidArgument("size=" + what + std::to_string(d.size) +
                                       " does not match image " + d.image + " (" +
                                       std::to_string(isz) + " bytes)");
      }
      d.size = isz;
      auto [it, fresh] = adopted.emplace(std::make_pair(st.st_dev, st.st_ino), d.name);
      if (!fresh) {
        return Status::InvalidArgument("disks '" + it->second + "' and '" + d.name +
                                       "' adopt the same image file " + d.image +
                                       " (the same file, through a link or another path)");
      }
    }
    if (d.size == 0) {
      if (d.name.empty()) {
        return Status::InvalidArgument(o.dir + " holds no rewind store yet: give size= to create one");
      }
      return Status::InvalidArgument(o.dir + " holds no rewind store yet: disk '" + d.name +
                                     "' needs a size (size=" + d.name + ":SIZE) or an image (image=" +
                                     d.name + ":FILE) to create it");
    }
  }
  return Status::Ok();
}

std::string Names(const std::vector<MetaDisk>& disks) {
  std::string out;
  for (const MetaDisk& d : disks) out += (out.empty() ? "" : ", ") + d.name;
  return out;
}

// The disks given for an existing store against its own.
Status CheckExistingDisks(const StoreOptions& o, const MetaFile& m) {
  if (o.disks.empty()) return Status::Ok();
  if (m.format_version != format::kFormatVersionDisks) {
    return Status::InvalidArgument("the store " + o.dir +
                                   " was made without disk names: it has one unnamed disk; "
                                   "give no disk=");
  }
  for (size_t i = 0; i < o.disks.size(); i++) {
    const DiskSpec& d = o.disks[i];
    auto it = std::find_if(m.disks.begin(), m.disks.end(),
                           [&](const MetaDisk& md) { return md.name == d.name; });
    if (it == m.disks.end()) {
      return Status::InvalidArgument("the store " + o.dir + " has no disk '" + d.name +
                                     "' (its disks: " + Names(m.disks) +
                                     "); disks cannot be added to an existing store");
    }
    if (static_cast<size_t>(it - m.disks.begin()) != i) {
      return Status::InvalidArgument("disk= gives the disks of the store " + o.dir +
                                     " in another order than theirs (" + Names(m.disks) + ")");
    }
    if (d.size != 0 && d.size != it->size) {
      return Status::InvalidArgument("size=" + d.name + ":" + std::to_string(d.size) +
                                     " does not match disk '" + d.name + "' of the store " + o.dir +
                                     " (" + std::to_string(it->size) + " bytes)");
    }
    if (!d.image.empty() && fs::absolute(d.image).lexically_normal().string() != it->image) {
      return Status::InvalidArgument("image=" + d.name + ":" + d.image + " is not the image of disk '" +
                                     d.name + "' of the store " + o.dir + " (" + it->image + ")");
    }
  }
  if (o.disks.size() < m.disks.size()) {
    return Status::InvalidArgument("the store " + o.dir + " also has disk '" +
                                   m.disks[o.disks.size()].name +
                                   "': give every disk= of the store, in its order (" +
                                   Names(m.disks) + "), or none");
  }
  return Status::Ok();
}

}  // namespace

bool Store::Exists(const std::string& dir) {
  return access(MetaFilePath(dir).c_str(), F_OK) == 0;
}

Status Store::Check(const StoreOptions& o) {
  if (o.dir.empty()) return Status::InvalidArgument("dir= is required");
  if (o.block_size != 0) {
    Status s = ValidateBlockSize(o.block_size);
    if (!s.ok()) return s;
  }
  Status s = CheckDiskSpecs(o);
  if (!s.ok()) return s;
  MetaFile m;
  s = ReadMetaFile(o.dir, &m);
  if (s.code() == Status::Code::kNotFound) {
    std::vector<DiskSpec> specs;
    return CheckNewStore(o, &specs);
  }
  if (!s.ok()) return s;
  if (m.format_version != format::kFormatVersion &&
      m.format_version != format::kFormatVersionDisks) {
    return Status::NotSupported("store " + o.dir + " has format version " +
                                std::to_string(m.format_version) + "; this rewind reads versions " +
                                std::to_string(format::kFormatVersion) + " and " +
                                std::to_string(format::kFormatVersionDisks));
  }
  // A plain size= or image= given for a store of named disks: they would
  // be checked against its first disk only, which is not what was meant.
  const bool named = !m.disks.empty() && !m.disks.front().name.empty();
  if (named && o.disks.empty() && (o.size != 0 || !o.image.empty())) {
    return Status::InvalidArgument(
        std::string(o.size != 0 ? "size=" : "image=") + " without a disk name, but the store " +
        o.dir + " has named disks (" + Names(m.disks) +
        "): give disk=NAME for each with size=NAME:SIZE or image=NAME:FILE, or leave them out");
  }
  if (o.size != 0 && o.size != m.size) {
    return Status::InvalidArgument("size=" + std::to_string(o.size) + " does not match the store " +
                                   o.dir + " (" + std::to_string(m.size) + " bytes)");
  }
  if (o.block_size != 0 && o.block_size != m.block_size) {
    return Status::InvalidArgument("block-size=" + std::to_string(o.block_size) +
                                   " does not match the store " + o.dir + " (" +
                                   std::to_string(m.block_size) + ")");
  }
  if (!o.image.empty() && fs::absolute(o.image).lexically_normal().string() != m.image) {
    return Status::InvalidArgument("image=" + o.image + " is not the image of the store " + o.dir +
                                   " (" + m.image + ")");
  }
  return CheckExistingDisks(o, m);
}

Status Store::Open(const StoreOptions& options, std::unique_ptr<Store>* out) {
  Status s = Check(options);
  if (!s.ok()) return s;
  MetaFile meta;
  bool created = false;
  s = ReadMetaFile(options.dir, &meta);
  if (s.code() == Status::Code::kNotFound) {
    created = true;
    std::error_code ec;
    fs::create_directories(options.dir, ec);
    if (ec) return Status::IOError("create " + options.dir + ": " + ec.message());
    std::vector<DiskSpec> specs;
    s = CheckNewStore(options, &specs);
    if (!s.ok()) return s;
    // The store holds every byte the disk ever held, and the control
    // socket: its directory is the owner's alone.
    if (::chmod(options.dir.c_str(), 0700) != 0) {
      return Status::FromErrno(errno, "chmod " + options.dir);
    }
    // A creation of ours that crashed before its meta file left no store:
    // start over.  CheckNewStore refused anything else.
    if (fs::exists(CreatingMarker(options.dir), ec)) {
      fs::remove_all(fs::path(options.dir) / format::kJournalDirName, ec);
      fs::remove_all(fs::path(options.dir) / format::kVlogDirName, ec);
      for (const DiskSpec& d : specs) {
        if (!d.image.empty()) continue;
        fs::remove(d.name.empty() ? fs::path(options.dir) / format::kImageFileName
                                  : fs::path(DiskImagePath(options.dir, d.name)),
                   ec);
      }
    } else {
      int fd = open(CreatingMarker(options.dir).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0) return Status::FromErrno(errno, "create " + CreatingMarker(options.dir));
      close(fd);
      s = SyncDir(options.dir);
      if (!s.ok()) return s;
    }
    meta.format_version =
        options.disks.empty() ? format::kFormatVersion : format::kFormatVersionDisks;
    meta.block_size = options.block_size ? options.block_size : kDefaultBlockSize;
    for (const DiskSpec& d : specs) {
      const fs::path own = d.name.empty() ? fs::path(options.dir) / format::kImageFileName
                                          : fs::path(DiskImagePath(options.dir, d.name));
      const fs::path image = d.image.empty() ? own : fs::path(d.image);
      meta.disks.push_back(MetaDisk{d.name, d.size, fs::absolute(image).lexically_normal().string()});
    }
    meta.size = meta.disks[0].size;
    meta.image = meta.disks[0].image;
    meta.created_ns = options.clock ? options.clock()
                                    : std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::system_clock::now().time_since_epoch()).count();
    meta.uuid = NewUuid();
  } else if (!s.ok()) {
    return s;
  }
  auto impl = std::make_unique<StoreImpl>(options, meta);
  s = impl->Init(created);
  if (!s.ok()) {
    (void)impl->Close();
    return s;
  }
  if (created) {
    FaultPoint("create.before_meta");
    s = WriteMetaFile(options.dir, meta);
    if (!s.ok()) {
      (void)impl->Close();
      return s;
    }
    unlink(CreatingMarker(options.dir).c_str());  // the meta file now marks the store
  }
  *out = std::move(impl);
  return Status::Ok();
}

Status StoreImpl::OpenDb(bool created) {
  rocksdb::DBOptions dbo;
  dbo.create_if_missing = created;
  dbo.create_missing_column_families = created;  // a lost family is damage, not new
  // A record that fails its checksum inside the WAL is damage, and the open
  // fails (Corruption naming the file); only an incomplete record at the
  // end of a log, which a crash in the middle of an append leaves, is
  // dropped.  kPointInTimeRecovery would stop the replay silently at the
  // damage and drop every later record, synced and acknowledged ones too:
  // the store would reopen with history cut short, and reads of the past
  // would take blocks from a live image that holds newer writes
  // (docs/reliability.md, "Corruption").
  dbo.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  dbo.max_background_jobs = 2;
  dbo.max_total_wal_size = 512ull << 20;
  dbo.keep_log_file_num = 3;
  dbo.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  dbo.bytes_per_sync = 1 << 20;
  if (options_.fs) {
    env_ = rocksdb::NewCompositeEnv(options_.fs);
    dbo.env = env_.get();
  }

  rocksdb::ColumnFamilyOptions meta_opts;
  meta_opts.merge_operator = std::make_shared<U64AddOperator>();
  rocksdb::ColumnFamilyOptions bulk;  // redo and undo: small fixed-size values, append-mostly keys
  bulk.write_buffer_size =
      options_.journal_write_buffer_bytes ? options_.journal_write_buffer_bytes : 64ull << 20;
  bulk.compression = rocksdb::kNoCompression;
  {
    // Debian's RocksDB is built without hardware CRC32C ("Fast CRC32 supported:
    // Not supported on x86" in its LOG), so table blocks use XXH3 instead.
    rocksdb::BlockBasedTableOptions t;
    t.checksum = rocksdb::kXXH3;
    t.block_size = 64 << 10;
    bulk.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  }
  rocksdb::ColumnFamilyOptions small;

  std::vector<rocksdb::ColumnFamilyDescriptor> cfds = {
      {format::kMetaCF, meta_opts},
      {format::kRedoCF, bulk},
      {format::kUndoCF, bulk},
      {format::kCheckpointCF, small},
  };
  std::string path = options_.dir + "/" + format::kJournalDirName;
  rocksdb::DB* db = nullptr;
  rocksdb::Status rs = rocksdb::DB::Open(dbo, path, cfds, &cfs_, &db);
  if (!rs.ok()) {
    std::string msg = rs.ToString();
    if (rs.IsIOError() && (msg.find("lock") != std::string::npos || msg.find("LOCK") != std::string::npos)) {
      return Status::Busy("store " + options_.dir +
                          " is in use by another process (a running nbdkit or rewind)");
    }
    return FromRocks(rs, "open journal " + path);
  }
  db_.reset(db);
  meta_cf_ = cfs_[0];
  redo_cf_ = cfs_[1];
  undo_cf_ = cfs_[2];
  cp_cf_ = cfs_[3];
  return Status::Ok();
}

Status StoreImpl::CheckDbMeta(bool created) {
  if (created) {
    rocksdb::WriteBatch b;
    b.Put(meta_cf_, format::kMetaFormatVersion, std::to_string(meta_.format_version));
    b.Put(meta_cf_, format::kMetaSize, std::to_string(meta_.size));
    b.Put(meta_cf_, format::kMetaBlockSize, std::to_string(meta_.block_size));
    b.Put(meta_cf_, format::kMetaImage, meta_.image);
    b.Put(meta_cf_, format::kMetaCreated, std::to_string(meta_.created_ns));
    b.Put(meta_cf_, format::kMetaUuid, meta_.uuid);
    if (meta_.format_version == format::kFormatVersionDisks) {
      b.Put(meta_cf_, format::kMetaDisks, DisksText(meta_));
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return FromRocks(db_->Write(wo, &b), "write store metadata");
  }
  auto expect = [&](const char* key, const std::string& want) -> Status {
    std::string got;
    rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), meta_cf_, key, &got);
    if (!rs.ok()) return FromRocks(rs, std::string("read metadata ") + key);
    if (got != want) {
      return Status::Corruption(std::string("store ") + options_.dir + ": journal metadata " + key +
                                "=" + got + " disagrees with " + format::kMetaFileName + " (" +
                                want + ")");
    }
    return Status::Ok();
  };
  for (auto [k, v] : {std::pair<const char*, std::string>{format::kMetaFormatVersion,
                                                           std::to_string(meta_.format_version)},
                      {format::kMetaSize, std::to_string(meta_.size)},
                      {format::kMetaBlockSize, std::to_string(meta_.block_size)},
                      {format::kMetaUuid, meta_.uuid}}) {
    Status s = expect(k, v);
    if (!s.ok()) return s;
  }
  if (meta_.format_version == format::kFormatVersionDisks) {
    return expect(format::kMetaDisks, DisksText(meta_));
  }
  return Status::Ok();
}

Status StoreImpl::Init(bool created) {
  Status s = OpenDb(created);
  if (!s.ok()) return s;
  s = CheckDbMeta(created);
  if (!s.ok()) return s;
  if (!created && !fs::exists(fs::path(options_.dir) / format::kVlogDirName)) {
    return Status::Corruption("store " + options_.dir + " has no " + format::kVlogDirName +
                              "/ directory: its journal payloads are missing");
  }
  s = Vlog::Open(options_.fs, options_.dir, options_.vlog_segment_bytes, &vlog_);
  if (!s.ok()) return s;
  vlog_->set_mark_key(meta_.uuid);
  s = OpenImages(created);
  if (!s.ok()) return s;
  s = Recover();
  if (!s.ok()) return s;
  s = LoadState();
  if (!s.ok()) return s;
  // Named so that top -H, perf and gdb tell them from nbdkit's threads.
  committer_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "rwd-committer");
    CommitterLoop();
  });
  applier_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "rwd-applier");
    ApplierLoop();
  });
  syncer_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "rwd-imgsync");
    SyncerLoop();
  });
  return ResumeRollback();
}

// Opens the live image of every disk; a new store's own images are made
// (DIR/image.raw, or DIR/disks/NAME.raw), sparse and synced, with their
// directory entries synced before rewind.meta can exist.
Status StoreImpl::OpenImages(bool created) {
  auto factory = options_.image_factory ? options_.image_factory : DefaultImageFileFactory();
  const std::vector<DiskSpec> specs = SpecsOf(options_);
  bool own_named = false;
  for (size_t i = 0; i < disks_.size(); i++) {
    const bool own = created && i < specs.size() && specs[i].image.empty();
    own_named = own_named || (own && !disks_[i]->name().empty());
  }
  const std::string disks_dir = (fs::path(options_.dir) / format::kDisksDirName).string();
  if (own_named) {
    std::error_code ec;
    fs::create_directories(disks_dir, ec);
    if (ec) return Status::IOError("create " + disks_dir + ": " + ec.message());
    Status s = SyncDir(options_.dir);
    if (!s.ok()) return s;
  }
  for (size_t i = 0; i < disks_.size(); i++) {
    DiskImpl& d = *disks_[i];
    const bool own = created && i < specs.size() && specs[i].image.empty();
    if (!created && !factory->Exists(d.image_path())) {
      return Status::NotFound("the live image " + d.image_path() + d.Of() + " of store " +
                              options_.dir + " is missing");
    }
    Status s = factory->Open(d.image_path(), own, own ? d.size() : 0, &d.image);
    if (!s.ok()) return s;
    if (own) {
      s = d.image->Sync();  // its size must be durable before rewind.meta exists
      if (!s.ok()) return s;
    }
    if (d.image->Size() != d.size()) {
      return Status::Corruption("image " + d.image_path() + " is " +
                                std::to_string(d.image->Size()) + " bytes but the store says " +
                                std::to_string(d.size()));
    }
  }
  return own_named ? SyncDir(disks_dir) : Status::Ok();
}

// Brings the image in line with the journal: replays every redo record
// after applied_lsn.  Records after applied_lsn were maybe never synced: a
// power cut can keep a record in RocksDB's WAL while losing its payload in
// the vlog.  Such a record was never acknowledged as durable (the vlog is
// synced before the WAL, and syncs cover a prefix of the commit groups), and
// neither was anything after it, so the journal is cut there: the record,
// every later one, and every before-image and checkpoint from the cut on.
Status StoreImpl::Recover() {
  std::string v;
  uint64_t applied = 0;
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), meta_cf_, format::kMetaAppliedLsn, &v);
  if (rs.ok() && v.size() == 8) {
    applied = records::GetLE64(v.data());
  } else if (!rs.ok() && !rs.IsNotFound()) {
    return FromRocks(rs, "read applied LSN");
  }
  const std::string damaged = "recovery cannot replay the journal of " + options_.dir + ": ";
  // Every payload at or below synced_lsn was synced before the crash: one
  // that is missing or fails its hash there was damaged afterwards, and
  // cutting the journal at it would drop acknowledged writes.
  uint64_t synced = 0;
  rs = db_->Get(rocksdb::ReadOptions(), meta_cf_, format::kMetaSyncedLsn, &v);
  if (rs.ok() && v.size() == 8) {
    synced = records::GetLE64(v.data());
  } else if (!rs.ok() && !rs.IsNotFound()) {
    return FromRocks(rs, "read synced LSN");
  }
  synced_mark_ = synced;
  if (Status s = CheckWalAgainstMarks(damaged, std::max(applied, synced)); !s.ok()) return s;
  uint64_t cut = UINT64_MAX;  // the lowest LSN whose payload is missing or damaged
  auto damaged_below_sync = [&](uint64_t lsn, const Status& why) -> bool {
    if (lsn > synced) return false;  // maybe the torn tail of a crash: cut there
    if (options_.drop_damaged_journal) {
      if (!dropped_damaged_ || lsn < cut) {
        recovery_damage_ = Status::Corruption(
            why.message() + ": the journal, synced through LSN " + std::to_string(synced) +
            ", was cut at LSN " + std::to_string(lsn) + " as asked (drop_damaged_journal)");
      }
      dropped_damaged_ = true;
      return false;
    }
    recovery_damage_ = Status::Corruption(
        damaged + why.message() + "; the journal was synced through LSN " + std::to_string(synced) +
        ", so this is damage, not the torn tail of a crash, and cutting the journal at LSN " +
        std::to_string(lsn) + " would drop acknowledged writes (rewind verify " + options_.dir +
        " --drop-damaged-journal cuts it there)");
    return true;
  };

  // 1. Checkpoints, to find the epochs that may hold unapplied before-images.
  std::vector<records::CheckpointRecord> cps;
  uint64_t first_epoch = 0;
  {
    Status s = LoadCheckpoints(&cps);
    if (s.code() == Status::Code::kCorruption) return Status::Corruption(damaged + s.message());
    if (!s.ok()) return s;
    for (const auto& r : cps) {
      if (r.lsn <= applied) first_epoch = std::max(first_epoch, r.id);
    }
  }

  // 2. Before-images written after applied_lsn: is each payload there?
  struct LateUndo {
    std::string key;
    uint64_t epoch, lsn, bytes;
  };
  std::vector<LateUndo> late;
  std::string payload;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), undo_cf_));
    for (it->Seek(records::UndoKey(first_epoch, 0, 0)); it->Valid(); it->Next()) {
      std::string_view key(it->key().data(), it->key().size());
      uint64_t epoch = 0, block = 0;
      uint32_t disk = 0;
      records::UndoHeader h;
      Status s = records::ParseUndoKey(key, &epoch, &disk, &block);
      if (s.ok()) s = records::DecodeUndo(key, std::string_view(it->value().data(), it->value().size()), &h);
      if (!s.ok()) return Status::Corruption(damaged + s.message());
      if (h.lsn <= applied) continue;
      late.push_back(LateUndo{std::string(key), epoch, h.lsn,
                              key.size() + it->value().size() +
                                  (h.kind == format::UndoKind::kData ? h.length : 0)});
      if (h.kind != format::UndoKind::kData || h.lsn >= cut) continue;
      s = ReadPayload(h.payload, h.length, "before-image of LSN " + std::to_string(h.lsn),
                      &payload);
      if (s.code() == Status::Code::kCorruption) {
        if (damaged_below_sync(h.lsn, s)) return recovery_damage_;
        cut = h.lsn;
      } else if (!s.ok()) {
        return s;
      }
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read undo journal");
  }

  // 3. Replay redo records into the image up to the cut.
  uint64_t last = applied;
  uint64_t replayed = 0;
  uint64_t newest = applied;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), redo_cf_));
    for (it->Seek(records::RedoKey(applied + 1)); it->Valid(); it->Next()) {
      uint64_t lsn = 0;
      Status s = records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &lsn);
      if (!s.ok()) return s;
      newest = lsn;
      if (lsn >= cut) continue;  // still walk to the end to learn the newest LSN
      records::RedoHeader h;
      s = records::DecodeRedo(lsn, std::string_view(it->value().data(), it->value().size()), &h);
      if (!s.ok()) return Status::Corruption(damaged + s.message());
      DiskImpl* d = DiskOf(h.disk);
      if (d == nullptr) {
        return Status::Corruption(damaged + "redo record " + std::to_string(lsn) + " names disk " +
                                  std::to_string(h.disk) + ", which the store does not have");
      }
      if (h.offset + h.length > d->size()) {
        return Status::Corruption(damaged + "redo record " + std::to_string(lsn) +
                                  " lies beyond the disk");
      }
      if (h.type == format::RedoType::kWrite) {
        s = ReadPayload(h.payload, h.length, "redo record " + std::to_string(lsn), &payload);
        if (s.code() == Status::Code::kCorruption) {
          if (damaged_below_sync(lsn, s)) return recovery_damage_;
          cut = lsn;
          continue;
        }
        if (!s.ok()) return s;
      }
      FaultPoint("recovery.replay");
      d->image_dirty = true;
      if (h.type == format::RedoType::kWrite) {
        s = d->image->WriteV({IoVec{h.offset, payload.data(), static_cast<uint32_t>(h.length)}});
      } else {
        s = d->image->Zero(h.offset, h.length, h.type == format::RedoType::kTrim);
      }
      if (!s.ok()) return s;
      last = lsn;
      replayed++;
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read redo journal");
  }

  // 4. Cut the journal where the payloads end, durably, before anything
  //    new can take those LSNs.
  if (cut != UINT64_MAX) {
    rocksdb::WriteBatch b;
    rocksdb::Status ws = b.DeleteRange(redo_cf_, records::RedoKey(cut), records::RedoKey(newest + 1));
    std::map<uint64_t, uint64_t> freed;  // epoch -> bytes
    for (const LateUndo& u : late) {
      if (u.lsn < cut || !ws.ok()) continue;
      ws = b.Delete(undo_cf_, u.key);
      freed[u.epoch] += u.bytes;
    }
    for (const auto& [epoch, bytes] : freed) {
      char buf[8];
      records::PutLE64(buf, 0 - bytes);  // the counters add modulo 2^64
      if (ws.ok()) ws = b.Merge(meta_cf_, records::UndoBytesKey(epoch), rocksdb::Slice(buf, 8));
    }
    for (const auto& c : cps) {
      if (c.lsn >= cut && ws.ok()) ws = b.Delete(cp_cf_, records::CheckpointKey(c.id));
    }
    // A cut at or below synced_lsn (drop_damaged_journal): the LSNs from
    // the cut on are given out again, unsynced, so synced_lsn and the sync
    // marks must come down to what is left.
    const bool below_sync = cut <= synced;
    if (below_sync && ws.ok()) {
      char buf[8];
      records::PutLE64(buf, cut - 1);
      ws = b.Put(meta_cf_, format::kMetaSyncedLsn, rocksdb::Slice(buf, 8));
    }
    if (!ws.ok()) return FromRocks(ws, "cut the journal");
    rocksdb::WriteOptions wo;
    wo.sync = true;
    Status s = FromRocks(db_->Write(wo, &b), "cut the journal");
    if (!s.ok()) return s;
    recovery_cut_records_ = newest >= cut ? newest - cut + 1 : 0;
    if (below_sync) {
      synced_mark_ = cut - 1;
      s = LowerSyncMarks(cut - 1);
      if (!s.ok()) return s;
    }
  }
  if (replayed == 0) {
    persisted_applied_ = applied;
    return Status::Ok();
  }
  FaultPoint("recovery.before_sync");
  Status s = SyncImages(/*all=*/false);
  if (!s.ok()) return s;
  FaultPoint("recovery.after_sync");
  return PersistApplied(last);
}

// The newest sync mark in the payload log names an LSN that a completed
// sync covered; a WAL that ends below it lost synced records (cut short,
// which RocksDB takes for the torn tail of a crash).  Checked before
// anything is replayed into the image.
Status StoreImpl::CheckWalAgainstMarks(const std::string& damaged, uint64_t newest) {
  bool found = false;
  uint64_t mark = 0;
  std::string where;
  Status s = vlog_->NewestMark(&found, &mark, &where);
  if (!s.ok()) return s;
  vlog_marked_ = mark;
  if (!found || mark == 0) return Status::Ok();
  uint64_t start = 0;
  if (ReadHistoryStart(&start).ok()) newest = std::max(newest, start);
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), redo_cf_));
    it->SeekToLast();
    uint64_t lsn = 0;
    if (it->Valid() &&
        records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &lsn).ok()) {
      newest = std::max(newest, lsn);
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read redo journal");
  }
  std::vector<records::CheckpointRecord> cps;
  if (LoadCheckpoints(&cps).ok()) {
    for (const auto& c : cps) newest = std::max(newest, c.lsn);
  }
  if (newest >= mark) return Status::Ok();
  const std::string why = "the journal ends at LSN " + std::to_string(newest) +
                          ", but the payload log's sync mark at " + where +
                          " records a completed sync through LSN " + std::to_string(mark) +
                          ": the journal's WAL lost synced records";
  if (options_.drop_damaged_journal) {
    // Nothing left to cut: the records are gone.  A mark of what is left,
    // synced, so that the next open does not find the old one newest.
    dropped_damaged_ = true;
    recovery_damage_ = Status::Corruption(why + "; going on without them, as asked (drop_damaged_journal)");
    return LowerSyncMarks(newest);
  }
  recovery_damage_ = Status::Corruption(damaged + why + ", acknowledged writes among them (rewind verify " +
                                        options_.dir + " --drop-damaged-journal opens it without them)");
  return recovery_damage_;
}

// history_start (decimal; absent: 0).
Status StoreImpl::ReadHistoryStart(uint64_t* out) {
  *out = 0;
  std::string v;
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), meta_cf_, format::kMetaHistoryStart, &v);
  if (rs.IsNotFound()) return Status::Ok();
  if (!rs.ok()) return FromRocks(rs, "read history start");
  if (v.empty() || v.size() > 20 || v.find_first_not_of("0123456789") != std::string::npos) {
    return Status::Corruption("the store's history_start record is damaged");
  }
  *out = std::stoull(v);
  return Status::Ok();
}

// After a cut at or below the synced LSN (drop_damaged_journal), the LSNs
// above lsn are given out again, unsynced: a sync mark of lsn, synced, so
// that no older mark claims them.
Status StoreImpl::LowerSyncMarks(uint64_t lsn) {
  Status s = vlog_->AppendMark(lsn);
  if (s.ok()) s = vlog_->Sync();
  if (s.ok()) vlog_marked_ = lsn;
  return s;
}

Status StoreImpl::LoadState() {
  uint64_t last = persisted_applied_;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), redo_cf_));
    it->SeekToLast();
    if (it->Valid()) {
      uint64_t lsn = 0;
      Status s = records::ParseRedoKey(std::string_view(it->key().data(), it->key().size()), &lsn);
      if (!s.ok()) return s;
      last = std::max(last, lsn);
      records::RedoHeader h;
      if (records::DecodeRedo(lsn, std::string_view(it->value().data(), it->value().size()), &h)
              .ok()) {
        last_time_ns_ = std::max(last_time_ns_, h.time_ns);
      }
    }
    if (!it->status().ok()) return FromRocks(it->status(), "read redo journal");
  }
  uint64_t epoch = 0;
  {
    std::vector<records::CheckpointRecord> cps;
    Status s = LoadCheckpoints(&cps);
    if (!s.ok()) return s;
    for (const auto& r : cps) {
      if (!r.pending) checkpoint_names_[r.name] = r.id;
      epoch = std::max(epoch, r.id);
      last_time_ns_ = std::max(last_time_ns_, r.time_ns);
      last = std::max(last, r.lsn);
    }
  }
  {
    uint64_t start = 0;
    Status s = ReadHistoryStart(&start);
    if (!s.ok()) return s;
    history_start_.store(start);
  }
  next_checkpoint_id_ = epoch + 1;
  epoch_.store(epoch);
  last_lsn_.store(last);
  applied_lsn_.store(last);
  committed_lsn_ = last;
  // Blocks already saved in the current epoch need no second before-image.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), undo_cf_));
  std::string prefix = records::UndoKey(epoch, 0, 0).substr(0, 8);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    uint64_t e = 0, block = 0;
    uint32_t disk = 0;
    Status s = records::ParseUndoKey(std::string_view(it->key().data(), it->key().size()), &e,
                                     &disk, &block);
    if (!s.ok()) return s;
    DiskImpl* d = DiskOf(disk);
    if (d != nullptr && block < d->BlockCount()) d->stamps.Set(block, static_cast<uint32_t>(epoch + 1));
  }
  return FromRocks(it->status(), "read undo journal");
}

Status StoreImpl::PersistApplied(uint64_t lsn) {
  char buf[8];
  records::PutLE64(buf, lsn);
  rocksdb::WriteOptions wo;
  std::lock_guard<std::mutex> w(wal_mu_);  // a failed WAL write must refuse before a sync
  Status s = FromRocks(db_->Put(wo, meta_cf_, format::kMetaAppliedLsn, rocksdb::Slice(buf, 8)),
                      "record applied LSN");
  if (s.ok()) {
    persisted_applied_ = lsn;
  } else {
    Refuse(s);
  }
  return s;
}

}  // namespace rwd
