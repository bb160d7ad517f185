// The content-addressed store of saved VM state; see state_store.h and the
// section "Saved VM state" of docs/journal-format.md for the bytes.
//
// Design note.
//  * Write path.  The caller's thread buffers the stream, cuts it with
//    FastCDC (chunker.h), names each chunk by XXH3-128 and looks the name up:
//    first among the chunks this writer already stored, then in the store's
//    index of every committed chunk.  A new chunk is copied into a job that a
//    PackWriter thread compresses (zstd) and appends to the writer's pack; a
//    bounded queue keeps the caller at most a few chunks ahead.  Pack offsets
//    are assigned in the order the threads finish, which the manifest
//    records, so no ordering between the threads is needed.
//  * Commit point.  Pack fsync, packs/ fsync, manifest to ID.state.tmp,
//    fsync, rename to ID.state, states/ fsync.  Before the rename nothing is
//    visible; after the states/ fsync the state survives a power cut.
//  * Pack lifetime.  A pack is deleted whole, once no manifest references
//    it and nobody holds a pin on it.  A writer pins each committed pack it
//    dedups against until it commits or aborts, and Read pins the packs of
//    the state it reads, so Remove may run concurrently with both.
//  * Index.  hash -> location of one copy, built at Open from every
//    manifest (only chunks whose record lies inside its pack's current
//    size), extended at each commit, trimmed when a pack is deleted.  A pack
//    damaged in place still feeds dedup: Verify finds it.
//  * Locking.  mu_ guards the store's maps; it is never held across I/O
//    once the store is shared (Load holds it, before).
//    One process per directory: flock on DIR/lock.
#include <rewind/vmstate/state_store.h>

#include "chunker.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <fmt/format.h>
#include <rocksdb/file_system.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>

namespace rwd::vm {

namespace {

static_assert(std::endian::native == std::endian::little, "the encoders memcpy LE integers");

// ---- format (docs/journal-format.md, "Saved VM state") ----
constexpr char kManifestMagic[8] = {'R', 'W', 'D', 'S', 'T', 'A', 'T', 'E'};
constexpr uint32_t kManifestVersion = 1;
constexpr size_t kManifestFixed = 64;  // bytes before the id
constexpr size_t kEntrySize = 40;      // one chunk reference
constexpr size_t kTrailerSize = 8;     // XXH3_64 of everything before it
constexpr char kPackMagic[8] = {'R', 'W', 'D', '-', 'P', 'A', 'C', 'K'};
constexpr uint32_t kPackVersion = 1;
constexpr size_t kPackHeaderSize = 16;
constexpr char kRecordMagic[4] = {'R', 'W', 'D', 'C'};
constexpr size_t kRecordHeaderSize = 32;
constexpr uint8_t kFlagZstd = 1;
constexpr size_t kMaxIdLen = 128;
static_assert(kManifestFixed == 8 + 4 + 4 + 5 * 8 + 4 + 4);
static_assert(kEntrySize == 16 + 8 + 4 + 4 + 4 + 1 + 3);
static_assert(kRecordHeaderSize == 4 + 1 + 3 + 4 + 4 + 16);

constexpr const char* kStateSuffix = ".state";
constexpr const char* kTmpSuffix = ".tmp";
constexpr const char* kPackSuffix = ".pack";

// ---- small helpers ----
struct Hash128 {
  uint64_t hi = 0, lo = 0;
  bool operator==(const Hash128&) const = default;
};
struct Hash128Hasher {
  size_t operator()(const Hash128& h) const { return static_cast<size_t>(h.lo); }
};

Hash128 HashOf(const void* p, size_t n) {
  XXH128_hash_t h = XXH3_128bits(p, n);
  return {h.high64, h.low64};
}
// The canonical (big-endian, high half first) form, as xxh128sum prints it.
void PutHash(uint8_t* p, const Hash128& h) {
  XXH128_hash_t x;
  x.high64 = h.hi;
  x.low64 = h.lo;
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, x);
  std::memcpy(p, c.digest, 16);
}
Hash128 GetHash(const uint8_t* p) {
  XXH128_canonical_t c;
  std::memcpy(c.digest, p, 16);
  XXH128_hash_t x = XXH128_hashFromCanonical(&c);
  return {x.high64, x.low64};
}
std::string HashHex(const Hash128& h) { return fmt::format("{:016x}{:016x}", h.hi, h.lo); }

template <typename T>
void PutLE(std::string* s, T v) {
  s->append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <typename T>
void PutAt(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
template <typename T>
T GetLE(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

bool EndsWith(const std::string& s, const char* suffix) {
  size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

Status FromIO(const rocksdb::IOStatus& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsNoSpace()) return Status::NoSpace(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

Status SyncDir(rocksdb::FileSystem* fs, const std::string& dir) {
  std::unique_ptr<rocksdb::FSDirectory> d;
  rocksdb::IOStatus s = fs->NewDirectory(dir, rocksdb::IOOptions(), &d, nullptr);
  if (s.ok()) s = d->Fsync(rocksdb::IOOptions(), nullptr);
  return FromIO(s, "sync directory " + dir);
}

std::string PackName(uint32_t pack) { return fmt::format("{:08}{}", pack, kPackSuffix); }

// The number of a pack file name, 0 when it is not one.
uint32_t ParsePackName(const std::string& name) {
  if (!EndsWith(name, kPackSuffix)) return 0;
  std::string digits = name.substr(0, name.size() - std::strlen(kPackSuffix));
  if (digits.empty() || digits.size() > 10) return 0;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v <= UINT32_MAX ? static_cast<uint32_t>(v) : 0;
}

// ---- manifests ----
struct ChunkLoc {
  uint32_t pack = 0;
  uint64_t offset = 0;  // of the record header in the pack
  uint32_t raw_len = 0;
  uint32_t stored_len = 0;
  uint8_t flags = 0;
};
struct ChunkRef {
  Hash128 hash;
  ChunkLoc loc;
};

struct Manifest {
  std::string id;
  nlohmann::json meta;
  uint64_t stream_bytes = 0;
  int64_t time_ns = 0;
  uint64_t new_chunks = 0;
  uint64_t new_bytes = 0;
  std::vector<ChunkRef> chunks;
};

std::string EncodeManifest(const Manifest& m) {
  // Never throws: invalid UTF-8 in the metadata is replaced, not refused.
  const std::string meta = m.meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string s;
  s.reserve(kManifestFixed + m.id.size() + meta.size() + m.chunks.size() * kEntrySize +
            kTrailerSize);
  s.append(kManifestMagic, sizeof kManifestMagic);
  PutLE<uint32_t>(&s, kManifestVersion);
  PutLE<uint32_t>(&s, 0);
  PutLE<uint64_t>(&s, m.stream_bytes);
  PutLE<uint64_t>(&s, m.chunks.size());
  PutLE<int64_t>(&s, m.time_ns);
  PutLE<uint64_t>(&s, m.new_chunks);
  PutLE<uint64_t>(&s, m.new_bytes);
  PutLE<uint32_t>(&s, static_cast<uint32_t>(m.id.size()));
  PutLE<uint32_t>(&s, static_cast<uint32_t>(meta.size()));
  s += m.id;
  s += meta;
  for (const ChunkRef& c : m.chunks) {
    uint8_t e[kEntrySize] = {};
    PutHash(e, c.hash);
    PutAt<uint64_t>(e + 16, c.loc.offset);
    PutAt<uint32_t>(e + 24, c.loc.pack);
    PutAt<uint32_t>(e + 28, c.loc.raw_len);
    PutAt<uint32_t>(e + 32, c.loc.stored_len);
    e[36] = c.loc.flags;
    s.append(reinterpret_cast<const char*>(e), sizeof e);
  }
  PutLE<uint64_t>(&s, XXH3_64bits(s.data(), s.size()));
  return s;
}

// Corruption (without the state's name) when bytes is not a whole, intact
// manifest of id; NotSupported for another version.
Status DecodeManifest(const std::string& id, const std::string& bytes, Manifest* out) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  if (n < kManifestFixed + kTrailerSize) {
    return Status::Corruption(fmt::format("manifest is cut short ({} bytes)", n));
  }
  if (std::memcmp(p, kManifestMagic, sizeof kManifestMagic) != 0) {
    return Status::Corruption("manifest has a bad magic number");
  }
  if (XXH3_64bits(p, n - kTrailerSize) != GetLE<uint64_t>(p + n - kTrailerSize)) {
    return Status::Corruption("manifest fails its checksum");
  }
  const uint32_t version = GetLE<uint32_t>(p + 8);
  if (version != kManifestVersion) {
    return Status::NotSupported(fmt::format("manifest has format version {}; this rewind reads {}",
                                            version, kManifestVersion));
  }
  Manifest m;
  m.stream_bytes = GetLE<uint64_t>(p + 16);
  const uint64_t count = GetLE<uint64_t>(p + 24);
  m.time_ns = GetLE<int64_t>(p + 32);
  m.new_chunks = GetLE<uint64_t>(p + 40);
  m.new_bytes = GetLE<uint64_t>(p + 48);
  const uint64_t id_len = GetLE<uint32_t>(p + 56);
  const uint64_t meta_len = GetLE<uint32_t>(p + 60);
  const uint64_t body = n - kManifestFixed - kTrailerSize;
  if (id_len > kMaxIdLen || meta_len > body || count > body / kEntrySize ||
      id_len + meta_len + count * kEntrySize != body) {
    return Status::Corruption("manifest lengths do not add up");
  }
  m.id.assign(bytes, kManifestFixed, id_len);
  if (m.id != id) return Status::Corruption(fmt::format("manifest is that of '{}'", m.id));
  m.meta = nlohmann::json::parse(
      bytes.begin() + static_cast<ptrdiff_t>(kManifestFixed + id_len),
      bytes.begin() + static_cast<ptrdiff_t>(kManifestFixed + id_len + meta_len), nullptr, false);
  if (m.meta.is_discarded()) return Status::Corruption("manifest metadata is not JSON");
  m.chunks.resize(count);
  const uint8_t* e = p + kManifestFixed + id_len + meta_len;
  uint64_t total = 0;
  for (ChunkRef& c : m.chunks) {
    c.hash = GetHash(e);
    c.loc.offset = GetLE<uint64_t>(e + 16);
    c.loc.pack = GetLE<uint32_t>(e + 24);
    c.loc.raw_len = GetLE<uint32_t>(e + 28);
    c.loc.stored_len = GetLE<uint32_t>(e + 32);
    c.loc.flags = e[36];
    const bool zstd = (c.loc.flags & kFlagZstd) != 0;
    if (c.loc.pack == 0 || c.loc.raw_len == 0 || c.loc.raw_len > kMaxChunk ||
        (c.loc.flags & ~kFlagZstd) != 0 || c.loc.stored_len > c.loc.raw_len ||
        (!zstd && c.loc.stored_len != c.loc.raw_len) || c.loc.offset < kPackHeaderSize) {
      return Status::Corruption("manifest holds an impossible chunk reference");
    }
    total += c.loc.raw_len;
    e += kEntrySize;
  }
  if (total != m.stream_bytes) return Status::Corruption("manifest chunks do not add up");
  *out = std::move(m);
  return Status::Ok();
}

StateInfo InfoOf(const Manifest& m) {
  StateInfo i;
  i.id = m.id;
  i.meta = m.meta;
  i.stream_bytes = m.stream_bytes;
  i.chunks = m.chunks.size();
  i.new_chunks = m.new_chunks;
  i.new_bytes = m.new_bytes;
  i.time_ns = m.time_ns;
  return i;
}

Status ReadWholeFile(rocksdb::FileSystem* fs, const std::string& path, std::string* out) {
  out->clear();
  return FromIO(rocksdb::ReadFileToString(fs, path, out), "read " + path);
}

// Reads and checks the chunks of one state from its packs.
class ChunkReader {
 public:
  ChunkReader(rocksdb::FileSystem* fs, std::string packs_dir)
      : fs_(fs), dir_(std::move(packs_dir)), dctx_(ZSTD_createDCtx()) {}
  ~ChunkReader() { ZSTD_freeDCtx(dctx_); }
  ChunkReader(const ChunkReader&) = delete;
  ChunkReader& operator=(const ChunkReader&) = delete;

  // The chunk's bytes in *out (which it may point into) after every check;
  // Corruption without context when damaged.
  Status Read(const ChunkRef& c, const uint8_t** out) {
    if (dctx_ == nullptr) return Status::IOError("out of memory for zstd");
    rocksdb::FSRandomAccessFile* f = nullptr;
    Status s = OpenPack(c.loc.pack, &f);
    if (!s.ok()) return s;
    const size_t n = kRecordHeaderSize + c.loc.stored_len;
    if (rec_.size() < n) rec_.resize(n);
    rocksdb::Slice got;
    s = FromIO(f->Read(c.loc.offset, n, rocksdb::IOOptions(), &got, rec_.data(), nullptr),
               "read " + PackPath(c.loc.pack));
    if (!s.ok()) return s;
    if (got.size() != n) {
      return Status::Corruption(fmt::format("pack {} is cut short", PackName(c.loc.pack)));
    }
    const auto* r = reinterpret_cast<const uint8_t*>(got.data());
    if (std::memcmp(r, kRecordMagic, sizeof kRecordMagic) != 0 || r[4] != c.loc.flags ||
        GetLE<uint32_t>(r + 8) != c.loc.raw_len || GetLE<uint32_t>(r + 12) != c.loc.stored_len ||
        !(GetHash(r + 16) == c.hash)) {
      return Status::Corruption(fmt::format("record header in pack {} at offset {} is damaged",
                                            PackName(c.loc.pack), c.loc.offset));
    }
    const uint8_t* data = r + kRecordHeaderSize;
    if (c.loc.flags & kFlagZstd) {
      if (raw_.size() < c.loc.raw_len) raw_.resize(c.loc.raw_len);
      size_t z = ZSTD_decompressDCtx(dctx_, raw_.data(), c.loc.raw_len, data, c.loc.stored_len);
      if (ZSTD_isError(z) || z != c.loc.raw_len) {
        return Status::Corruption(fmt::format("chunk in pack {} at offset {} does not decompress",
                                              PackName(c.loc.pack), c.loc.offset));
      }
      data = raw_.data();
    }
    if (!(HashOf(data, c.loc.raw_len) == c.hash)) {
      return Status::Corruption(fmt::format("chunk in pack {} at offset {} fails its hash",
                                            PackName(c.loc.pack), c.loc.offset));
    }
    *out = data;
    return Status::Ok();
  }

 private:
  std::string PackPath(uint32_t pack) const { return dir_ + "/" + PackName(pack); }

  Status OpenPack(uint32_t pack, rocksdb::FSRandomAccessFile** out) {
    auto it = files_.find(pack);
    if (it != files_.end()) {
      *out = it->second.get();
      return Status::Ok();
    }
    const std::string path = PackPath(pack);
    std::unique_ptr<rocksdb::FSRandomAccessFile> f;
    rocksdb::IOStatus io = fs_->NewRandomAccessFile(path, rocksdb::FileOptions(), &f, nullptr);
    if (io.IsPathNotFound() || io.IsNotFound()) {
      return Status::Corruption(fmt::format("pack {} is missing", PackName(pack)));
    }
    Status s = FromIO(io, "open " + path);
    if (!s.ok()) return s;
    char scratch[kPackHeaderSize];
    rocksdb::Slice got;
    s = FromIO(f->Read(0, kPackHeaderSize, rocksdb::IOOptions(), &got, scratch, nullptr),
               "read " + path);
    if (!s.ok()) return s;
    const auto* h = reinterpret_cast<const uint8_t*>(got.data());
    if (got.size() != kPackHeaderSize || std::memcmp(h, kPackMagic, sizeof kPackMagic) != 0 ||
        GetLE<uint32_t>(h + 8) != kPackVersion || GetLE<uint32_t>(h + 12) != pack) {
      return Status::Corruption(fmt::format("pack {} has a damaged header", PackName(pack)));
    }
    *out = f.get();
    files_[pack] = std::move(f);
    return Status::Ok();
  }

  rocksdb::FileSystem* fs_;
  std::string dir_;
  ZSTD_DCtx* dctx_;
  std::map<uint32_t, std::unique_ptr<rocksdb::FSRandomAccessFile>> files_;
  std::vector<char> rec_;
  std::vector<uint8_t> raw_;
};

}  // namespace

Status ValidateStateId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= kMaxIdLen;
  for (char c : id) {
    ok = ok && ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '+' || c == '-');
  }
  if (ok) return Status::Ok();
  std::string shown = id.size() > 40 ? id.substr(0, 40) + "..." : id;
  return Status::InvalidArgument(fmt::format(
      "invalid saved state id '{}': use 1-128 characters from A-Z a-z 0-9 . _ + -", shown));
}

uint64_t StateStoreBytes(const std::string& dir) {
  namespace fs = std::filesystem;
  uint64_t total = 0;
  for (const std::string& d : {dir, dir + "/packs", dir + "/states"}) {
    std::error_code ec;
    for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
      struct stat st;
      if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        total += static_cast<uint64_t>(st.st_size);
      }
    }
  }
  return total;
}

Status PeekState(const std::string& dir, const std::string& id, StateInfo* out) {
  if (Status s = ValidateStateId(id); !s.ok()) return s;
  const std::string path = dir + "/states/" + id + kStateSuffix;
  std::string bytes;
  rocksdb::IOStatus io = rocksdb::ReadFileToString(rocksdb::FileSystem::Default().get(), path, &bytes);
  if (io.IsPathNotFound() || io.IsNotFound()) {
    return Status::NotFound(fmt::format("no saved VM state '{}' in {}", id, dir));
  }
  if (Status s = FromIO(io, "read " + path); !s.ok()) return s;
  Manifest m;
  if (Status s = DecodeManifest(id, bytes, &m); !s.ok()) return s.WithPrefix(path);
  *out = InfoOf(m);
  return Status::Ok();
}

// ======================================================================
// The store.
// ======================================================================

namespace {

class StateStoreImpl;

// Where a writer's new chunk ended up.
struct NewLoc {
  uint64_t offset = 0;
  uint32_t stored_len = 0;
  uint8_t flags = 0;
};

// Compresses and appends a writer's new chunks to its pack on worker
// threads.  The pack file is created with the first record.  Submit is
// called by the writer's thread only.
class PackWriter {
 public:
  PackWriter(StateStoreImpl* store, unsigned threads, int level)
      : store_(store), nthreads_(std::max(1u, threads)), level_(level) {}
  ~PackWriter() { Stop(); }

  Status Start();
  // Queues chunk index (the writer's count of new chunks so far) for
  // compression; blocks while the queue is full.  Returns the first failure
  // of any earlier chunk.
  Status Submit(uint32_t index, const Hash128& hash, const uint8_t* data, size_t len);
  // Waits for every chunk, joins the threads and makes the pack durable.
  Status Finish();
  // Stops the threads and deletes the pack (unless keep).
  void Discard();
  uint32_t pack() const { return pack_; }
  uint64_t bytes() const { return size_; }
  const std::vector<NewLoc>& locs() const { return locs_; }

 private:
  struct Job {
    uint32_t index = 0;
    Hash128 hash;
    std::vector<uint8_t> raw;
    size_t len = 0;
    std::vector<uint8_t> out;  // record header and stored bytes
  };
  void Worker();
  void Compress(Job* job, ZSTD_CCtx* cctx) const;
  Status Write(const Job& job);  // appends one record; takes write_mu_
  void Stop();

  StateStoreImpl* const store_;
  const unsigned nthreads_;
  const int level_;
  std::vector<std::thread> threads_;

  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::unique_ptr<Job>> queue_;  // GUARDED_BY(mu_)
  std::vector<std::unique_ptr<Job>> free_;  // GUARDED_BY(mu_)
  size_t busy_ = 0;                         // queued or in a worker; GUARDED_BY(mu_)
  bool stop_ = false;                       // GUARDED_BY(mu_)
  Status error_;                            // the first failure; GUARDED_BY(mu_)

  // After Finish or Stop the writer's thread reads these without the lock.
  std::mutex write_mu_;
  std::unique_ptr<rocksdb::FSWritableFile> file_;  // GUARDED_BY(write_mu_)
  uint32_t pack_ = 0;                              // GUARDED_BY(write_mu_)
  uint64_t size_ = 0;                              // GUARDED_BY(write_mu_)
  std::vector<NewLoc> locs_;                       // GUARDED_BY(write_mu_)
};

class StateStoreImpl final : public StateStore {
 public:
  StateStoreImpl(std::string dir, const StateStoreOptions& o, int lock_fd)
      : dir_(std::move(dir)),
        packs_dir_(dir_ + "/packs"),
        states_dir_(dir_ + "/states"),
        opt_(o),
        lock_fd_(lock_fd) {
    if (!opt_.fs) opt_.fs = rocksdb::FileSystem::Default();
    if (opt_.compress_threads == 0) {
      opt_.compress_threads = std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
    }
    opt_.zstd_level = std::clamp(opt_.zstd_level, 1, 19);
  }
  ~StateStoreImpl() override {
    if (lock_fd_ >= 0) ::close(lock_fd_);
  }

  Status Load();

  Status NewWriter(std::unique_ptr<StateWriter>* out) override;
  Status Read(const std::string& id,
              const std::function<Status(const void*, size_t)>& sink) override;
  Status Get(const std::string& id, StateInfo* out) override;
  Status List(std::vector<StateInfo>* out) override;
  Status Remove(const std::string& id) override;
  Status Verify(std::vector<std::string>* damage) override;
  uint64_t bytes_used() const override { return StateStoreBytes(dir_); }

  // ---- for writers ----
  rocksdb::FileSystem* fs() const { return opt_.fs.get(); }
  const StateStoreOptions& options() const { return opt_; }
  std::string PackPath(uint32_t pack) const { return packs_dir_ + "/" + PackName(pack); }
  const std::string& packs_dir() const { return packs_dir_; }
  const std::string& states_dir() const { return states_dir_; }
  int64_t Now() const {
    if (opt_.clock) return opt_.clock();
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  // A fresh pack number, marked as being written (Open's and Remove's
  // clean-up leave it alone) until ForgetWritingPack.
  uint32_t NewPackNumber();
  void ForgetWritingPack(uint32_t pack);
  // Looks a chunk up among the committed ones; on a hit pins its pack (once
  // per writer: *pinned holds the writer's pins).
  bool LookupAndPin(const Hash128& h, uint32_t raw_len, ChunkLoc* loc, std::set<uint32_t>* pinned);
  void Unpin(const std::set<uint32_t>& packs);
  // Reserves id for a commit: AlreadyExists when taken, ReadOnly after a
  // failed sync.
  Status ReserveId(const std::string& id);
  void Unreserve(const std::string& id);
  // Makes a durable manifest visible: state, references, index.  Releases
  // the reservation, the writer's pins and its pack's writing mark.
  void Publish(const Manifest& m, uint32_t own_pack, const std::set<uint32_t>& pinned);
  // After a failed fsync the store refuses every further change.
  void SetFailed(const Status& s);
  Status CheckWritable() const;

 private:
  struct State {
    StateInfo info;
    std::vector<uint32_t> packs;  // distinct packs its chunks are in
  };

  // Drops packs from the index; returns those to delete (no reference, no
  // pin, not being written).  Must be called with mu_ held.
  std::vector<uint32_t> ReapLocked(const std::vector<uint32_t>& candidates);
  void DeletePacks(const std::vector<uint32_t>& packs);
  void AddStateLocked(const Manifest& m);
  // The numbers of the pack files in packs/ (lists the directory).
  std::vector<uint32_t> PacksOnDisk() const;
  Status ReadState(const std::string& id, const std::vector<uint32_t>& pinned,
                   const std::function<Status(const void*, size_t)>& sink);

  const std::string dir_, packs_dir_, states_dir_;
  StateStoreOptions opt_;
  const int lock_fd_;

  mutable std::mutex mu_;
  std::map<std::string, State> states_;                         // GUARDED_BY(mu_)
  std::map<std::string, std::string> damaged_;                  // id -> why; GUARDED_BY(mu_)
  std::set<std::string> reserved_, removing_;                   // GUARDED_BY(mu_)
  std::unordered_map<Hash128, ChunkLoc, Hash128Hasher> index_;  // GUARDED_BY(mu_)
  std::map<uint32_t, uint32_t> refs_;                           // pack -> states; GUARDED_BY(mu_)
  std::map<uint32_t, uint32_t> pins_;                           // pack -> pins; GUARDED_BY(mu_)
  std::set<uint32_t> writing_;  // packs of live writers; GUARDED_BY(mu_)
  uint32_t next_pack_ = 1;      // GUARDED_BY(mu_)
  Status failed_;               // GUARDED_BY(mu_)
};

// ---- PackWriter ----

Status PackWriter::Start() {
  try {
    for (unsigned i = 0; i < nthreads_; ++i) threads_.emplace_back([this] { Worker(); });
  } catch (const std::system_error& e) {
    Stop();
    return Status::IOError(std::string("cannot start compression threads: ") + e.what());
  }
  return Status::Ok();
}

Status PackWriter::Submit(uint32_t index, const Hash128& hash, const uint8_t* data, size_t len) {
  std::unique_ptr<Job> job;
  {
    std::unique_lock<std::mutex> l(mu_);
    done_cv_.wait(l, [&] { return busy_ < 2 * nthreads_ + 2 || !error_.ok(); });
    if (!error_.ok()) return error_;
    if (!free_.empty()) {
      job = std::move(free_.back());
      free_.pop_back();
    }
  }
  if (!job) job = std::make_unique<Job>();
  job->index = index;
  job->hash = hash;
  if (job->raw.size() < len) job->raw.resize(kMaxChunk);
  std::memcpy(job->raw.data(), data, len);
  job->len = len;
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(std::move(job));
    ++busy_;
  }
  work_cv_.notify_one();
  return Status::Ok();
}

void PackWriter::Worker() {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    work_cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stop_
    std::unique_ptr<Job> job = std::move(queue_.front());
    queue_.pop_front();
    const bool failed = !error_.ok();
    l.unlock();
    Status s;
    if (!failed) {
      Compress(job.get(), cctx);
      s = Write(*job);
    }
    l.lock();
    if (!s.ok() && error_.ok()) error_ = s;
    free_.push_back(std::move(job));
    --busy_;
    done_cv_.notify_all();
  }
  l.unlock();
  ZSTD_freeCCtx(cctx);
}

// Stored compressed only when that saves at least 1/32 of the chunk: less
// would cost every read a decompression for nothing.
void PackWriter::Compress(Job* job, ZSTD_CCtx* cctx) const {
  const size_t len = job->len;
  if (job->out.size() < kRecordHeaderSize + kMaxChunk)
    job->out.resize(kRecordHeaderSize + kMaxChunk);
  uint8_t* h = job->out.data();
  size_t stored = len;
  uint8_t flags = 0;
  if (cctx != nullptr && len >= 64) {
    size_t z = ZSTD_compressCCtx(cctx, h + kRecordHeaderSize, len - len / 32 - 1, job->raw.data(),
                                 len, level_);
    if (!ZSTD_isError(z)) {
      stored = z;
      flags = kFlagZstd;
    }
  }
  if (flags == 0) std::memcpy(h + kRecordHeaderSize, job->raw.data(), len);
  std::memset(h, 0, kRecordHeaderSize);
  std::memcpy(h, kRecordMagic, sizeof kRecordMagic);
  h[4] = flags;
  PutAt<uint32_t>(h + 8, static_cast<uint32_t>(len));
  PutAt<uint32_t>(h + 12, static_cast<uint32_t>(stored));
  PutHash(h + 16, job->hash);
}

Status PackWriter::Write(const Job& job) {
  const uint8_t* h = job.out.data();
  const uint32_t stored = GetLE<uint32_t>(h + 12);
  std::lock_guard<std::mutex> l(write_mu_);
  rocksdb::FileSystem* fs = store_->fs();
  if (!file_) {
    pack_ = store_->NewPackNumber();
    const std::string path = store_->PackPath(pack_);
    Status s = FromIO(fs->NewWritableFile(path, rocksdb::FileOptions(), &file_, nullptr),
                      "create " + path);
    if (!s.ok()) {
      file_.reset();
      return s;
    }
    uint8_t ph[kPackHeaderSize];
    std::memcpy(ph, kPackMagic, sizeof kPackMagic);
    PutAt<uint32_t>(ph + 8, kPackVersion);
    PutAt<uint32_t>(ph + 12, pack_);
    s = FromIO(file_->Append(rocksdb::Slice(reinterpret_cast<const char*>(ph), sizeof ph),
                             rocksdb::IOOptions(), nullptr),
               "write " + path);
    if (!s.ok()) return s;
    size_ = kPackHeaderSize;
  }
  Status s = FromIO(
      file_->Append(rocksdb::Slice(reinterpret_cast<const char*>(h), kRecordHeaderSize + stored),
                    rocksdb::IOOptions(), nullptr),
      "write " + store_->PackPath(pack_));
  if (!s.ok()) return s;
  if (locs_.size() <= job.index) locs_.resize(job.index + 1);
  locs_[job.index] = NewLoc{size_, stored, h[4]};
  size_ += kRecordHeaderSize + stored;
  return Status::Ok();
}

void PackWriter::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    busy_ -= queue_.size();
    queue_.clear();
  }
  work_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

Status PackWriter::Finish() {
  {
    std::unique_lock<std::mutex> l(mu_);
    done_cv_.wait(l, [&] { return busy_ == 0; });
  }
  Stop();
  if (!error_.ok()) return error_;
  if (!file_) return Status::Ok();
  const std::string path = store_->PackPath(pack_);
  Status s = FromIO(file_->Fsync(rocksdb::IOOptions(), nullptr), "sync " + path);
  if (s.ok()) s = FromIO(file_->Close(rocksdb::IOOptions(), nullptr), "close " + path);
  if (!s.ok()) return s;
  file_.reset();
  return SyncDir(store_->fs(), store_->packs_dir());
}

void PackWriter::Discard() {
  Stop();
  if (pack_ == 0) return;
  if (file_) (void)file_->Close(rocksdb::IOOptions(), nullptr);
  file_.reset();
  // Not synced: a pack that comes back after a crash is an orphan that the
  // next Open deletes.
  (void)store_->fs()->DeleteFile(store_->PackPath(pack_), rocksdb::IOOptions(), nullptr);
  store_->ForgetWritingPack(pack_);
  pack_ = 0;
}

// ---- StateWriterImpl ----

class StateWriterImpl final : public StateWriter {
 public:
  explicit StateWriterImpl(StateStoreImpl* store) : store_(store), buf_(2 * kMaxChunk) {}
  ~StateWriterImpl() override {
    if (phase_ == Phase::kOpen) Abort();
  }

  Status Append(const void* data, size_t len) override;
  Status Commit(const std::string& id, const nlohmann::json& meta, StateInfo* out) override;
  void Abort() override;

 private:
  enum class Phase { kOpen, kCommitted, kAborted };
  struct Entry {
    Hash128 hash;
    int64_t new_index = -1;  // >= 0: stored by this writer
    ChunkLoc loc;            // when new_index < 0
  };

  // Cuts chunks off the buffer while kMaxChunk bytes are buffered, or all
  // of it at the end of the stream.
  Status Cut(bool end);
  Status AddChunk(const uint8_t* p, size_t n);
  Status CommitReserved(const std::string& id, const nlohmann::json& meta, StateInfo* out);
  Status WriteManifest(const std::string& id, const std::string& bytes);
  Status Fail(Status s) {
    if (failed_.ok()) failed_ = s;
    return s;
  }

  StateStoreImpl* const store_;
  Phase phase_ = Phase::kOpen;
  Status failed_;  // after a failure only Abort is meaningful
  std::vector<uint8_t> buf_;
  size_t begin_ = 0, end_ = 0;  // buffered bytes: buf_[begin_, end_)
  uint64_t stream_bytes_ = 0;
  std::vector<Entry> entries_;
  std::unordered_map<Hash128, uint32_t, Hash128Hasher> own_;  // hash -> new index
  uint32_t new_chunks_ = 0;
  std::set<uint32_t> pinned_;
  std::unique_ptr<PackWriter> pack_;
  bool keep_pack_ = false;  // a manifest may name it: never delete
};

Status StateWriterImpl::Append(const void* data, size_t len) {
  if (phase_ != Phase::kOpen) return Status::InvalidArgument("saved state writer is closed");
  if (!failed_.ok()) return failed_;
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    if (end_ == buf_.size()) {  // < kMaxChunk bytes buffered: room for kMaxChunk more
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    const size_t n = std::min(len, buf_.size() - end_);
    std::memcpy(buf_.data() + end_, p, n);
    end_ += n;
    p += n;
    len -= n;
    stream_bytes_ += n;
    Status s = Cut(false);
    if (!s.ok()) return Fail(s);
  }
  return Status::Ok();
}

Status StateWriterImpl::Cut(bool end) {
  while (end_ - begin_ >= kMaxChunk || (end && end_ > begin_)) {
    const size_t n = FastCdcCut(buf_.data() + begin_, end_ - begin_);
    Status s = AddChunk(buf_.data() + begin_, n);
    if (!s.ok()) return s;
    begin_ += n;
  }
  if (begin_ == end_) begin_ = end_ = 0;
  return Status::Ok();
}

Status StateWriterImpl::AddChunk(const uint8_t* p, size_t n) {
  Entry e;
  e.hash = HashOf(p, n);
  auto own = own_.find(e.hash);
  if (own != own_.end()) {
    e.new_index = own->second;
  } else if (!store_->LookupAndPin(e.hash, static_cast<uint32_t>(n), &e.loc, &pinned_)) {
    if (!pack_) {
      pack_ = std::make_unique<PackWriter>(store_, store_->options().compress_threads,
                                           store_->options().zstd_level);
      Status s = pack_->Start();
      if (!s.ok()) return s;
    }
    e.new_index = new_chunks_;
    Status s = pack_->Submit(new_chunks_, e.hash, p, n);
    if (!s.ok()) return s;
    own_.emplace(e.hash, new_chunks_++);
  }
  e.loc.raw_len = static_cast<uint32_t>(n);
  entries_.push_back(e);
  return Status::Ok();
}

Status StateWriterImpl::Commit(const std::string& id, const nlohmann::json& meta, StateInfo* out) {
  if (phase_ != Phase::kOpen) return Status::InvalidArgument("saved state writer is closed");
  if (!failed_.ok()) return failed_;
  Status s = ValidateStateId(id);
  if (s.ok()) s = store_->ReserveId(id);
  if (!s.ok()) return s;  // the writer stays usable
  s = CommitReserved(id, meta, out);
  if (!s.ok()) {
    store_->Unreserve(id);
    return Fail(s);
  }
  return s;
}

Status StateWriterImpl::CommitReserved(const std::string& id, const nlohmann::json& meta,
                                       StateInfo* out) {
  Status s = Cut(true);
  if (s.ok() && pack_) s = pack_->Finish();
  if (!s.ok()) return s;
  const uint32_t own_pack = pack_ ? pack_->pack() : 0;
  Manifest m;
  m.id = id;
  m.meta = meta;
  m.stream_bytes = stream_bytes_;
  m.time_ns = store_->Now();
  m.new_chunks = new_chunks_;
  m.chunks.reserve(entries_.size());
  for (const Entry& e : entries_) {
    ChunkRef c{e.hash, e.loc};
    if (e.new_index >= 0) {
      const NewLoc& n = pack_->locs()[static_cast<size_t>(e.new_index)];
      c.loc = ChunkLoc{own_pack, n.offset, e.loc.raw_len, n.stored_len, n.flags};
    }
    m.chunks.push_back(c);
  }
  // new_bytes counts the manifest too; its length does not depend on it.
  const uint64_t pack_bytes = pack_ ? pack_->bytes() : 0;
  m.new_bytes = pack_bytes + EncodeManifest(m).size();
  s = WriteManifest(id, EncodeManifest(m));
  if (!s.ok()) return s;
  store_->Publish(m, own_pack, pinned_);
  pinned_.clear();
  pack_.reset();  // threads joined, file closed: the pack now belongs to the store
  phase_ = Phase::kCommitted;
  if (out) *out = InfoOf(m);
  return Status::Ok();
}

Status StateWriterImpl::WriteManifest(const std::string& id, const std::string& bytes) {
  rocksdb::FileSystem* fs = store_->fs();
  const std::string path = store_->states_dir() + "/" + id + kStateSuffix;
  const std::string tmp = path + kTmpSuffix;
  std::unique_ptr<rocksdb::FSWritableFile> f;
  Status s = FromIO(fs->NewWritableFile(tmp, rocksdb::FileOptions(), &f, nullptr), "create " + tmp);
  if (s.ok()) s = FromIO(f->Append(bytes, rocksdb::IOOptions(), nullptr), "write " + tmp);
  if (s.ok()) s = FromIO(f->Fsync(rocksdb::IOOptions(), nullptr), "sync " + tmp);
  if (s.ok()) s = FromIO(f->Close(rocksdb::IOOptions(), nullptr), "close " + tmp);
  if (s.ok()) s = FromIO(fs->RenameFile(tmp, path, rocksdb::IOOptions(), nullptr), "rename " + tmp);
  if (!s.ok()) {
    if (f) (void)f->Close(rocksdb::IOOptions(), nullptr);
    (void)fs->DeleteFile(tmp, rocksdb::IOOptions(), nullptr);
    return s;
  }
  s = SyncDir(fs, store_->states_dir());
  if (s.ok()) return s;
  // The manifest is in place but maybe not durable: take it back.  The
  // store refuses further changes (what a crash keeps is uncertain now).
  store_->SetFailed(s);
  if (!fs->DeleteFile(path, rocksdb::IOOptions(), nullptr).ok()) keep_pack_ = true;
  return s;
}

void StateWriterImpl::Abort() {
  if (phase_ != Phase::kOpen) return;
  phase_ = Phase::kAborted;
  if (pack_ && !keep_pack_) pack_->Discard();
  pack_.reset();
  store_->Unpin(pinned_);
  pinned_.clear();
}

// ---- StateStoreImpl ----

uint32_t StateStoreImpl::NewPackNumber() {
  std::lock_guard<std::mutex> l(mu_);
  writing_.insert(next_pack_);
  return next_pack_++;
}

void StateStoreImpl::ForgetWritingPack(uint32_t pack) {
  std::lock_guard<std::mutex> l(mu_);
  writing_.erase(pack);
}

bool StateStoreImpl::LookupAndPin(const Hash128& h, uint32_t raw_len, ChunkLoc* loc,
                                  std::set<uint32_t>* pinned) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = index_.find(h);
  if (it == index_.end() || it->second.raw_len != raw_len) return false;
  *loc = it->second;
  if (pinned->insert(loc->pack).second) ++pins_[loc->pack];
  return true;
}

void StateStoreImpl::Unpin(const std::set<uint32_t>& packs) {
  if (packs.empty()) return;
  std::vector<uint32_t> dead;
  {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<uint32_t> candidates;
    for (uint32_t p : packs) {
      auto it = pins_.find(p);
      if (it != pins_.end() && --it->second == 0) {
        pins_.erase(it);
        candidates.push_back(p);
      }
    }
    dead = ReapLocked(candidates);
  }
  DeletePacks(dead);
}

std::vector<uint32_t> StateStoreImpl::ReapLocked(const std::vector<uint32_t>& candidates) {
  std::set<uint32_t> dead;
  for (uint32_t p : candidates) {
    if (!refs_.count(p) && !pins_.count(p) && !writing_.count(p)) dead.insert(p);
  }
  if (dead.empty()) return {};
  for (auto it = index_.begin(); it != index_.end();) {
    it = dead.count(it->second.pack) ? index_.erase(it) : std::next(it);
  }
  return {dead.begin(), dead.end()};
}

// Deletion is not synced: a pack that a crash brings back is an orphan that
// the next Open deletes.
void StateStoreImpl::DeletePacks(const std::vector<uint32_t>& packs) {
  for (uint32_t p : packs) (void)fs()->DeleteFile(PackPath(p), rocksdb::IOOptions(), nullptr);
}

Status StateStoreImpl::ReserveId(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  if (!failed_.ok()) return failed_;
  if (states_.count(id) || damaged_.count(id) || reserved_.count(id)) {
    return Status::AlreadyExists(fmt::format("a saved VM state named '{}' already exists", id));
  }
  reserved_.insert(id);
  return Status::Ok();
}

void StateStoreImpl::Unreserve(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  reserved_.erase(id);
}

void StateStoreImpl::AddStateLocked(const Manifest& m) {
  State st;
  st.info = InfoOf(m);
  std::set<uint32_t> packs;
  for (const ChunkRef& c : m.chunks) packs.insert(c.loc.pack);
  st.packs.assign(packs.begin(), packs.end());
  for (uint32_t p : st.packs) ++refs_[p];
  states_[m.id] = std::move(st);
}

void StateStoreImpl::Publish(const Manifest& m, uint32_t own_pack,
                             const std::set<uint32_t>& pinned) {
  {
    std::lock_guard<std::mutex> l(mu_);
    AddStateLocked(m);
    for (const ChunkRef& c : m.chunks) {
      if (c.loc.pack == own_pack) index_.emplace(c.hash, c.loc);
    }
    reserved_.erase(m.id);
    writing_.erase(own_pack);
  }
  Unpin(pinned);  // every pinned pack is now referenced: nothing to delete
}

void StateStoreImpl::SetFailed(const Status& s) {
  std::lock_guard<std::mutex> l(mu_);
  if (failed_.ok()) {
    failed_ = Status::ReadOnly(fmt::format(
        "saved VM state in {} refuses changes after a failed sync: {}", dir_, s.message()));
  }
}

Status StateStoreImpl::CheckWritable() const {
  std::lock_guard<std::mutex> l(mu_);
  return failed_;
}

Status StateStoreImpl::NewWriter(std::unique_ptr<StateWriter>* out) {
  Status s = CheckWritable();
  if (!s.ok()) return s;
  try {
    *out = std::make_unique<StateWriterImpl>(this);
  } catch (const std::bad_alloc&) {
    return Status::IOError("out of memory for a saved state writer");
  }
  return Status::Ok();
}

Status StateStoreImpl::Get(const std::string& id, StateInfo* out) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = states_.find(id);
  if (it != states_.end()) {
    *out = it->second.info;
    return Status::Ok();
  }
  auto d = damaged_.find(id);
  if (d != damaged_.end()) {
    return Status::Corruption(fmt::format("saved VM state '{}': {}", id, d->second));
  }
  return Status::NotFound(fmt::format("no saved VM state named '{}'", id));
}

Status StateStoreImpl::List(std::vector<StateInfo>* out) {
  std::lock_guard<std::mutex> l(mu_);
  out->clear();
  for (const auto& [id, st] : states_) out->push_back(st.info);
  return Status::Ok();
}

Status StateStoreImpl::Read(const std::string& id,
                            const std::function<Status(const void*, size_t)>& sink) {
  std::vector<uint32_t> packs;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = states_.find(id);
    if (it == states_.end()) {
      auto d = damaged_.find(id);
      if (d != damaged_.end()) {
        return Status::Corruption(fmt::format("saved VM state '{}': {}", id, d->second));
      }
      return Status::NotFound(fmt::format("no saved VM state named '{}'", id));
    }
    packs = it->second.packs;
    for (uint32_t p : packs) ++pins_[p];
  }
  Status s = ReadState(id, packs, sink);
  Unpin({packs.begin(), packs.end()});
  return s;
}

Status StateStoreImpl::ReadState(const std::string& id, const std::vector<uint32_t>& pinned,
                                 const std::function<Status(const void*, size_t)>& sink) {
  const std::string path = states_dir_ + "/" + id + kStateSuffix;
  const std::string what = fmt::format("saved VM state '{}'", id);
  std::string bytes;
  rocksdb::IOStatus io = rocksdb::ReadFileToString(fs(), path, &bytes);
  if (io.IsPathNotFound() || io.IsNotFound()) {
    return Status::Corruption(what + ": manifest " + path + " is missing");
  }
  Status s = FromIO(io, "read " + path);
  if (!s.ok()) return s;
  Manifest m;
  s = DecodeManifest(id, bytes, &m);
  if (!s.ok()) return s.WithPrefix(what + ": " + path);
  ChunkReader reader(fs(), packs_dir_);
  uint64_t offset = 0;
  for (const ChunkRef& c : m.chunks) {
    if (!std::binary_search(pinned.begin(), pinned.end(), c.loc.pack)) {
      return Status::Corruption(what + ": manifest changed since the store was opened");
    }
    const uint8_t* data = nullptr;
    s = reader.Read(c, &data);
    if (s.code() == Status::Code::kCorruption) {
      return s.WithPrefix(
          fmt::format("{}: chunk {} at stream offset {}", what, HashHex(c.hash), offset));
    }
    if (!s.ok()) return s.WithPrefix(what);
    s = sink(data, c.loc.raw_len);
    if (!s.ok()) return s;
    offset += c.loc.raw_len;
  }
  return Status::Ok();
}

Status StateStoreImpl::Verify(std::vector<std::string>* damage) {
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, why] : damaged_) {
      damage->push_back(fmt::format("saved VM state '{}': {}", id, why));
    }
    for (const auto& [id, st] : states_) ids.push_back(id);
  }
  const auto discard = [](const void*, size_t) { return Status::Ok(); };
  for (const std::string& id : ids) {
    Status s = Read(id, discard);
    if (s.code() == Status::Code::kCorruption || s.code() == Status::Code::kNotSupported) {
      damage->push_back(s.message());
    } else if (!s.ok() && s.code() != Status::Code::kNotFound) {  // NotFound: removed meanwhile
      return s;
    }
  }
  return Status::Ok();
}

Status StateStoreImpl::Remove(const std::string& id) {
  bool damaged = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!failed_.ok()) return failed_;
    damaged = damaged_.count(id) != 0;
    if (!states_.count(id) && !damaged) {
      return Status::NotFound(fmt::format("no saved VM state named '{}'", id));
    }
    if (!removing_.insert(id).second) {
      return Status::Busy(fmt::format("saved VM state '{}' is being removed", id));
    }
  }
  const std::string path = states_dir_ + "/" + id + kStateSuffix;
  Status s = FromIO(fs()->DeleteFile(path, rocksdb::IOOptions(), nullptr), "delete " + path);
  if (!s.ok()) {
    std::lock_guard<std::mutex> l(mu_);
    removing_.erase(id);
    return s;
  }
  Status synced = SyncDir(fs(), states_dir_);
  if (!synced.ok()) SetFailed(synced);
  // A damaged manifest's packs were unknown: once none is left, every pack
  // on disk is accounted for and the unreferenced ones can go.
  const std::vector<uint32_t> on_disk = damaged ? PacksOnDisk() : std::vector<uint32_t>();
  std::vector<uint32_t> dead;
  {
    std::lock_guard<std::mutex> l(mu_);
    removing_.erase(id);
    std::vector<uint32_t> candidates;
    if (auto it = states_.find(id); it != states_.end()) {
      for (uint32_t p : it->second.packs) {
        if (--refs_[p] == 0) {
          refs_.erase(p);
          candidates.push_back(p);
        }
      }
      states_.erase(it);
    } else {
      damaged_.erase(id);
      if (damaged_.empty()) candidates = on_disk;
    }
    // Until the removal is durable a crash could bring the manifest back:
    // keep its packs.
    if (synced.ok()) dead = ReapLocked(candidates);
  }
  DeletePacks(dead);
  return synced;
}

std::vector<uint32_t> StateStoreImpl::PacksOnDisk() const {
  std::vector<std::string> names;
  std::vector<uint32_t> out;
  if (!fs()->GetChildren(packs_dir_, rocksdb::IOOptions(), &names, nullptr).ok()) return out;
  for (const std::string& n : names) {
    if (uint32_t p = ParsePackName(n); p != 0) out.push_back(p);
  }
  return out;
}

// Loads every manifest, deletes leftovers of interrupted saves, builds the
// index.  Runs before the store is shared.
Status StateStoreImpl::Load() {
  rocksdb::FileSystem* f = fs();
  std::vector<std::string> names;
  Status s = FromIO(f->GetChildren(states_dir_, rocksdb::IOOptions(), &names, nullptr),
                    "list " + states_dir_);
  if (!s.ok()) return s;
  std::sort(names.begin(), names.end());
  std::vector<Manifest> manifests;
  std::lock_guard<std::mutex> l(mu_);
  for (const std::string& n : names) {
    const std::string path = states_dir_ + "/" + n;
    if (EndsWith(n, kTmpSuffix)) {  // a commit that never reached its rename
      (void)f->DeleteFile(path, rocksdb::IOOptions(), nullptr);
      continue;
    }
    if (!EndsWith(n, kStateSuffix)) continue;
    const std::string id = n.substr(0, n.size() - std::strlen(kStateSuffix));
    if (!ValidateStateId(id).ok()) continue;  // not a name this store writes
    std::string bytes;
    s = ReadWholeFile(f, path, &bytes);
    if (!s.ok()) return s;
    Manifest m;
    s = DecodeManifest(id, bytes, &m);
    if (!s.ok()) {
      damaged_[id] = "manifest " + path + " is damaged: " + s.message();
      continue;
    }
    AddStateLocked(m);
    manifests.push_back(std::move(m));
  }
  // Pack numbers go on from the highest on disk or referenced.
  names.clear();
  s = FromIO(f->GetChildren(packs_dir_, rocksdb::IOOptions(), &names, nullptr),
             "list " + packs_dir_);
  if (!s.ok()) return s;
  std::map<uint32_t, uint64_t> sizes;
  for (const std::string& n : names) {
    const uint32_t p = ParsePackName(n);
    if (p == 0) continue;
    next_pack_ = std::max(next_pack_, p + 1);
    uint64_t size = 0;
    if (f->GetFileSize(packs_dir_ + "/" + n, rocksdb::IOOptions(), &size, nullptr).ok()) {
      sizes[p] = size;
    }
  }
  if (!refs_.empty()) next_pack_ = std::max(next_pack_, refs_.rbegin()->first + 1);
  // With a damaged manifest the packs it needs are unknown: delete nothing.
  if (damaged_.empty()) {
    std::vector<uint32_t> orphans = ReapLocked(PacksOnDisk());
    for (uint32_t p : orphans) sizes.erase(p);
    DeletePacks(orphans);
    if (!orphans.empty()) (void)SyncDir(f, packs_dir_);
  }
  // A chunk is offered for dedup only if its record lies inside its pack.
  for (const Manifest& m : manifests) {
    for (const ChunkRef& c : m.chunks) {
      auto it = sizes.find(c.loc.pack);
      if (it != sizes.end() && c.loc.offset + kRecordHeaderSize + c.loc.stored_len <= it->second) {
        index_.emplace(c.hash, c.loc);
      }
    }
  }
  return Status::Ok();
}

}  // namespace

// ---- Open ----

Status StateStore::Open(const std::string& dir, std::unique_ptr<StateStore>* out) {
  return Open(dir, StateStoreOptions(), out);
}

Status StateStore::Open(const std::string& dir, const StateStoreOptions& options,
                        std::unique_ptr<StateStore>* out) {
  std::shared_ptr<rocksdb::FileSystem> fsp =
      options.fs ? options.fs : rocksdb::FileSystem::Default();
  rocksdb::FileSystem* f = fsp.get();
  const auto exists = [&](const std::string& p) {
    return f->FileExists(p, rocksdb::IOOptions(), nullptr).ok();
  };
  if (!exists(dir)) {
    Status s = FromIO(f->CreateDirIfMissing(dir, rocksdb::IOOptions(), nullptr), "create " + dir);
    if (!s.ok()) return s;
    std::string parent = std::filesystem::path(dir).parent_path().string();
    s = SyncDir(f, parent.empty() ? "." : parent);
    if (!s.ok()) return s;
  }
  // The lock is taken on the real file system: it is not data.
  const std::string lock_path = dir + "/lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "open " + lock_path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return Status::Busy("another rewind process is using the saved VM state in " + dir);
    }
    return Status::FromErrno(err, "lock " + lock_path);
  }
  StateStoreOptions o = options;
  o.fs = fsp;
  auto store = std::make_unique<StateStoreImpl>(dir, o, fd);  // owns fd from here
  bool created = false;
  for (const std::string& sub : {store->packs_dir(), store->states_dir()}) {
    if (exists(sub)) continue;
    Status s = FromIO(f->CreateDirIfMissing(sub, rocksdb::IOOptions(), nullptr), "create " + sub);
    if (!s.ok()) return s;
    created = true;
  }
  if (created) {
    Status s = SyncDir(f, dir);
    if (!s.ok()) return s;
  }
  Status s = store->Load();
  if (!s.ok()) return s;
  *out = std::move(store);
  return Status::Ok();
}

}  // namespace rwd::vm
