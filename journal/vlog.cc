// The payload log; see vlog.h.
#include "vlog.h"

#include "format.h"
#include "records.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace rwd {

namespace {

Status FromIO(const rocksdb::IOStatus& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsNoSpace()) return Status::NoSpace(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

Status SyncDirectory(rocksdb::FileSystem* fs, const std::string& dir) {
  std::unique_ptr<rocksdb::FSDirectory> d;
  rocksdb::IOStatus s = fs->NewDirectory(dir, rocksdb::IOOptions(), &d, nullptr);
  if (s.ok()) s = d->Fsync(rocksdb::IOOptions(), nullptr);
  return FromIO(s, "sync directory " + dir);
}

}  // namespace

std::string Vlog::SegmentName(uint32_t segment) {
  char name[32];
  std::snprintf(name, sizeof name, "%08u.vlog", segment);
  return name;
}

std::string Vlog::PathOf(uint32_t segment) const { return dir_ + "/" + SegmentName(segment); }

Status Vlog::Open(std::shared_ptr<rocksdb::FileSystem> fs, const std::string& store_dir,
                  uint64_t segment_bytes, std::unique_ptr<Vlog>* out) {
  if (!fs) fs = rocksdb::FileSystem::Default();
  std::string dir = store_dir + "/vlog";
  bool existed = fs->FileExists(dir, rocksdb::IOOptions(), nullptr).ok();
  Status s = FromIO(fs->CreateDirIfMissing(dir, rocksdb::IOOptions(), nullptr), "create " + dir);
  if (!s.ok()) return s;
  if (!existed) {
    s = SyncDirectory(fs.get(), store_dir);
    if (!s.ok()) return s;
  }
  std::unique_ptr<Vlog> v(new Vlog(fs, dir, segment_bytes ? segment_bytes : kDefaultSegmentBytes));
  std::vector<std::string> names;
  s = FromIO(fs->GetChildren(dir, rocksdb::IOOptions(), &names, nullptr), "list " + dir);
  if (!s.ok()) return s;
  for (const std::string& n : names) {
    unsigned seg = 0;
    char tail[8] = {};
    if (std::sscanf(n.c_str(), "%8u.%5s", &seg, tail) != 2 || std::strcmp(tail, "vlog") != 0) continue;
    uint64_t size = 0;
    s = FromIO(fs->GetFileSize(dir + "/" + n, rocksdb::IOOptions(), &size, nullptr), "stat " + n);
    if (!s.ok()) return s;
    v->sealed_bytes_ += size;
    v->segment_ = std::max<uint32_t>(v->segment_, seg);
  }
  // The newest segment may hold appends that were never synced (the
  // process died): sync it before recovery replays any of them into the
  // image, or a power cut could leave the image ahead of its payloads.
  if (v->segment_ != 0) {
    std::unique_ptr<rocksdb::FSRandomRWFile> f;
    const std::string path = v->PathOf(v->segment_);
    rocksdb::IOStatus io = fs->NewRandomRWFile(path, rocksdb::FileOptions(), &f, nullptr);
    if (io.ok()) io = f->Fsync(rocksdb::IOOptions(), nullptr);
    if (io.ok()) io = f->Close(rocksdb::IOOptions(), nullptr);
    s = FromIO(io, "sync " + path);
    if (!s.ok()) return s;
  }
  *out = std::move(v);
  return Status::Ok();
}

Vlog::~Vlog() {
  if (writer_) (void)writer_->Close(rocksdb::IOOptions(), nullptr);
}

// Seals the current segment (synced) and starts the next one.  The new
// file's name is made durable at once: every later sync relies on it.
Status Vlog::StartSegment() {
  std::shared_ptr<rocksdb::FSWritableFile> old;
  uint32_t next = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    old = writer_;
    next = segment_ + 1;
  }
  if (old) {
    Status s = FromIO(old->Sync(rocksdb::IOOptions(), nullptr), "sync " + PathOf(next - 1));
    if (!s.ok()) return s;
  }
  // O_DIRECT where the file system takes it (not tmpfs before Linux 6.6,
  // for one); the page cache otherwise.
  std::unique_ptr<rocksdb::FSWritableFile> f;
  rocksdb::FileOptions fo;
  fo.use_direct_writes = true;
  rocksdb::IOStatus io = fs_->NewWritableFile(PathOf(next), fo, &f, nullptr);
  bool direct = io.ok();
  if (!io.ok()) {
    (void)fs_->DeleteFile(PathOf(next), rocksdb::IOOptions(), nullptr);
    io = fs_->NewWritableFile(PathOf(next), rocksdb::FileOptions(), &f, nullptr);
  }
  Status s = FromIO(io, "create " + PathOf(next));
  if (!s.ok()) return s;
  if (direct && f->GetRequiredBufferAlignment() > kAlign) {  // never seen: reopen buffered
    (void)f->Close(rocksdb::IOOptions(), nullptr);
    f.reset();
    direct = false;
    s = FromIO(fs_->NewWritableFile(PathOf(next), rocksdb::FileOptions(), &f, nullptr),
               "create " + PathOf(next));
    if (!s.ok()) return s;
  }
  s = SyncDirectory(fs_.get(), dir_);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> l(mu_);
  if (old) sealed_bytes_ += tail_;
  writer_ = std::move(f);
  direct_ = direct;
  segment_ = next;
  tail_ = 0;
  return Status::Ok();
}

std::string Vlog::EncodeMark(uint64_t lsn, uint32_t segment, uint64_t offset) const {
  std::string m(format::kVlogMarkSize, '\0');
  std::memcpy(m.data(), format::kVlogMarkMagic, sizeof format::kVlogMarkMagic);
  records::PutLE64(m.data() + 16, lsn);
  records::PutLE32(m.data() + 24, segment);
  records::PutLE64(m.data() + 32, offset);
  std::string keyed = mark_key_;
  keyed.append(m.data(), 56);
  records::PutLE64(m.data() + 56, XXH3_64bits(keyed.data(), keyed.size()));
  return m;
}

Status Vlog::Append(const std::vector<Piece>& pieces, uint64_t mark) {
  return AppendImpl(pieces, mark != 0, mark);
}

Status Vlog::AppendMark(uint64_t lsn) { return AppendImpl({}, true, lsn); }

Status Vlog::AppendImpl(const std::vector<Piece>& pieces, bool with_mark, uint64_t mark) {
  if (pieces.empty() && !with_mark) return Status::Ok();
  if (!writer_ || tail_ >= segment_bytes_) {
    Status s = StartSegment();
    if (!s.ok()) return s;
  }
  size_t total = 0;
  for (const Piece& p : pieces) total += p.payload.size();
  if (with_mark) total += format::kVlogMarkSize;
  const size_t padded = direct_ ? (total + kAlign - 1) / kAlign * kAlign : total;
  if (padded > buf_cap_) {
    size_t cap = std::max(padded, buf_cap_ * 2);
    cap = (cap + kAlign - 1) / kAlign * kAlign;
    void* p = nullptr;
    if (posix_memalign(&p, kAlign, cap) != 0) return Status::IOError("out of memory for the payload log");
    buf_.reset(static_cast<char*>(p));
    buf_cap_ = cap;
  }
  char* out = buf_.get();
  size_t pos = 0;
  for (const Piece& p : pieces) {
    p.ref->segment = segment_;
    p.ref->offset = tail_ + pos;
    std::memcpy(out + pos, p.payload.data(), p.payload.size());
    pos += p.payload.size();
  }
  if (with_mark) {
    const std::string m = EncodeMark(mark, segment_, tail_ + pos);
    std::memcpy(out + pos, m.data(), m.size());
    pos += m.size();
  }
  std::memset(out + pos, 0, padded - pos);
  const uint64_t off = tail_ + padded;
  Status s = FromIO(writer_->Append(rocksdb::Slice(out, padded), rocksdb::IOOptions(), nullptr),
                    "append to " + PathOf(segment_));
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> l(mu_);
  tail_ = off;
  return Status::Ok();
}

Status Vlog::Sync() {
  std::shared_ptr<rocksdb::FSWritableFile> w;
  uint32_t seg = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    w = writer_;
    seg = segment_;
  }
  if (!w) return Status::Ok();  // nothing appended since Open; sealed segments are synced
  return FromIO(w->Sync(rocksdb::IOOptions(), nullptr), "sync " + PathOf(seg));
}

Status Vlog::ReaderFor(uint32_t segment, std::shared_ptr<rocksdb::FSRandomAccessFile>* out) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = readers_.find(segment);
  if (it != readers_.end()) {
    *out = it->second;
    return Status::Ok();
  }
  std::unique_ptr<rocksdb::FSRandomAccessFile> f;
  rocksdb::IOStatus s =
      fs_->NewRandomAccessFile(PathOf(segment), rocksdb::FileOptions(), &f, nullptr);
  if (s.IsPathNotFound() || s.IsNotFound()) {
    return Status::Corruption("payload log segment " + PathOf(segment) + " is missing");
  }
  if (!s.ok()) return FromIO(s, "open " + PathOf(segment));
  std::shared_ptr<rocksdb::FSRandomAccessFile> sf(std::move(f));
  readers_.emplace(segment, sf);
  *out = std::move(sf);
  return Status::Ok();
}

Status Vlog::Read(VlogRef ref, uint32_t length, const std::string& what, std::string* out) {
  const std::string where =
      "payload of " + what + " at " + SegmentName(ref.segment) + ":" + std::to_string(ref.offset);
  if (ref.segment == 0) return Status::Corruption(where + ": no segment");
  std::shared_ptr<rocksdb::FSRandomAccessFile> f;
  Status s = ReaderFor(ref.segment, &f);
  if (!s.ok()) return s;
  out->resize(length);
  rocksdb::Slice got;
  rocksdb::IOStatus io = f->Read(ref.offset, length, rocksdb::IOOptions(), &got, out->data(), nullptr);
  if (!io.ok()) return FromIO(io, "read " + where);
  if (got.size() != length) return Status::Corruption(where + " is cut short");
  if (got.data() != out->data()) std::memcpy(out->data(), got.data(), length);
  return Status::Ok();
}

Status Vlog::SealedSegments(std::vector<uint32_t>* out) {
  out->clear();
  std::vector<std::string> names;
  Status s = FromIO(fs_->GetChildren(dir_, rocksdb::IOOptions(), &names, nullptr), "list " + dir_);
  if (!s.ok()) return s;
  uint32_t current = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    current = writer_ ? segment_ : 0;
  }
  for (const std::string& n : names) {
    unsigned seg = 0;
    char tail[8] = {};
    if (std::sscanf(n.c_str(), "%8u.%5s", &seg, tail) != 2 || std::strcmp(tail, "vlog") != 0) continue;
    if (seg != current) out->push_back(seg);
  }
  std::sort(out->begin(), out->end());
  return Status::Ok();
}

Status Vlog::DeleteSegment(uint32_t segment) {
  uint64_t size = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (writer_ && segment == segment_) {
      return Status::InvalidArgument("payload log segment " + SegmentName(segment) + " is in use");
    }
    readers_.erase(segment);
  }
  const std::string path = PathOf(segment);
  Status s = FromIO(fs_->GetFileSize(path, rocksdb::IOOptions(), &size, nullptr), "stat " + path);
  if (s.ok()) s = FromIO(fs_->DeleteFile(path, rocksdb::IOOptions(), nullptr), "delete " + path);
  if (s.ok()) s = SyncDirectory(fs_.get(), dir_);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> l(mu_);
  sealed_bytes_ -= std::min(sealed_bytes_, size);
  return Status::Ok();
}

// Searches backwards in windows of 1 MiB that overlap by a mark's size, so
// a mark across a window's edge is whole in one of them.  Appends are
// written whole, so the newest mark is near the end: usually one window.
Status Vlog::NewestMarkIn(uint32_t segment, bool* found, uint64_t* lsn, uint64_t* offset) {
  *found = false;
  const std::string path = PathOf(segment);
  uint64_t size = 0;
  Status s = FromIO(fs_->GetFileSize(path, rocksdb::IOOptions(), &size, nullptr), "stat " + path);
  if (!s.ok()) return s;
  std::unique_ptr<rocksdb::FSRandomAccessFile> f;
  s = FromIO(fs_->NewRandomAccessFile(path, rocksdb::FileOptions(), &f, nullptr), "open " + path);
  if (!s.ok()) return s;
  constexpr uint64_t kWindow = 1 << 20;
  std::string buf(kWindow, '\0');
  uint64_t end = size;
  while (end >= format::kVlogMarkSize) {
    const uint64_t begin = end > kWindow ? end - kWindow : 0;
    rocksdb::Slice got;
    rocksdb::IOStatus io = f->Read(begin, end - begin, rocksdb::IOOptions(), &got, buf.data(), nullptr);
    if (!io.ok()) return FromIO(io, "read " + path);
    const std::string_view w(got.data(), got.size());
    const std::string_view magic(format::kVlogMarkMagic, sizeof format::kVlogMarkMagic);
    for (size_t at = w.rfind(magic); at != std::string_view::npos;
         at = at == 0 ? std::string_view::npos : w.rfind(magic, at - 1)) {
      if (at + format::kVlogMarkSize > w.size()) continue;
      const uint64_t lsn_there = records::GetLE64(w.data() + at + 16);
      const std::string want = EncodeMark(lsn_there, segment, begin + at);
      if (w.compare(at, format::kVlogMarkSize, want) == 0) {
        *found = true;
        *lsn = lsn_there;
        *offset = begin + at;
        return Status::Ok();
      }
    }
    if (begin == 0) break;
    end = begin + format::kVlogMarkSize - 1;
  }
  return Status::Ok();
}

Status Vlog::NewestMark(bool* found, uint64_t* lsn, std::string* where) {
  *found = false;
  std::vector<std::string> names;
  Status s = FromIO(fs_->GetChildren(dir_, rocksdb::IOOptions(), &names, nullptr), "list " + dir_);
  if (!s.ok()) return s;
  std::vector<uint32_t> segs;
  for (const std::string& n : names) {
    unsigned seg = 0;
    char tail[8] = {};
    if (std::sscanf(n.c_str(), "%8u.%5s", &seg, tail) != 2 || std::strcmp(tail, "vlog") != 0) continue;
    segs.push_back(seg);
  }
  std::sort(segs.rbegin(), segs.rend());
  int with_data = 0;
  for (uint32_t seg : segs) {
    uint64_t size = 0;
    s = FromIO(fs_->GetFileSize(PathOf(seg), rocksdb::IOOptions(), &size, nullptr), "stat " + PathOf(seg));
    if (!s.ok()) return s;
    if (size == 0) continue;
    uint64_t offset = 0;
    s = NewestMarkIn(seg, found, lsn, &offset);
    if (!s.ok()) return s;
    if (*found) {
      *where = SegmentName(seg) + ":" + std::to_string(offset);
      return Status::Ok();
    }
    if (++with_data == 2) break;
  }
  return Status::Ok();
}

uint64_t Vlog::Bytes() {
  std::lock_guard<std::mutex> l(mu_);
  return sealed_bytes_ + tail_;
}

}  // namespace rwd
