// Vlog: the payload log.  Journal payloads (the bytes of every write and
// every before-image) are appended here; RocksDB keeps the small records
// that point at them (WiscKey-style key/value separation).  Keeping 4 KiB
// payloads out of RocksDB's WAL, memtables and blob files means each
// journaled byte is written once, checksummed with XXH3 once, and never
// copied by a flush or compaction.
//
// Layout: DIR/vlog/NNNNNNNN.vlog segments, numbered from 1.  Each Open
// appends to a new segment, so the torn tail a crash may leave in the last
// one is never written over: it is simply never referenced.  A segment is a
// sequence of commit groups; a group is its payloads back to back, padded
// with zeros to the next multiple of 4 KiB when the segment is written with
// O_DIRECT.  Payloads carry no header: the RocksDB record that points at a
// payload holds its segment, offset, length and XXH3 hash, and is itself
// checksummed (docs/journal-format.md).
//
// I/O: appends use O_DIRECT where the file system allows it (the payloads
// are written once and read only by recovery and restores, so caching them
// would only cost a copy and a later writeback), else the page cache.
//
// Durability: Sync makes everything appended before it durable (it may run
// while later appends go on).  The journal syncs the vlog before RocksDB's
// WAL, so a durable record's payload is always durable too.
//
// Sync marks: Append can add a 64-byte mark after a group's payloads, which
// records the newest LSN a completed journal sync covered.  The WAL is the
// only other place that knows it, so a WAL cut short leaves a mark that
// recovery finds with NewestMark (docs/journal-format.md, "Sync marks").
//
// Thread safety: Append is called by one thread at a time (the committer);
// Sync and Read may run concurrently with it and each other.
#pragma once

#include <rewind/journal/status.h>

#include <rocksdb/file_system.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace rwd {

// Where a payload lives: segment 0 means "no payload".
struct VlogRef {
  uint32_t segment = 0;
  uint64_t offset = 0;  // of the payload in the segment
};

class Vlog {
 public:
  static constexpr uint64_t kDefaultSegmentBytes = 1ull << 30;
  static constexpr size_t kAlign = 4096;

  // Opens (creating when missing) DIR/vlog.  fs: the file system to use.
  [[nodiscard]] static Status Open(std::shared_ptr<rocksdb::FileSystem> fs,
                                   const std::string& store_dir, uint64_t segment_bytes,
                                   std::unique_ptr<Vlog>* out);
  ~Vlog();
  Vlog(const Vlog&) = delete;
  Vlog& operator=(const Vlog&) = delete;

  struct Piece {
    std::string_view payload;
    VlogRef* ref = nullptr;  // filled by Append
  };
  // Appends the pieces with one write and fills their refs; with mark != 0,
  // a sync mark of that LSN after them (with no pieces: the mark alone).
  // On failure nothing appended may be referenced; the caller must stop
  // writing.
  [[nodiscard]] Status Append(const std::vector<Piece>& pieces, uint64_t mark = 0);
  // Appends a sync mark of lsn (0 allowed) alone.
  [[nodiscard]] Status AppendMark(uint64_t lsn);
  // The key marks are checksummed with (the store's uuid); set before the
  // first Append or NewestMark.
  void set_mark_key(std::string key) { mark_key_ = std::move(key); }
  // The synced_lsn of the newest valid sync mark: searched from the end of
  // the newest segment that holds data, then of the one before it; *found
  // false when neither holds a mark.  *where names it for messages.
  [[nodiscard]] Status NewestMark(bool* found, uint64_t* lsn, std::string* where);
  // Makes every completed Append durable.
  [[nodiscard]] Status Sync();
  // Reads length bytes at ref.  Missing or short is Corruption (after a
  // crash: never made durable); the caller checks the payload's hash.
  // what names the record in messages.
  [[nodiscard]] Status Read(VlogRef ref, uint32_t length, const std::string& what,
                            std::string* out);
  // Whether appends bypass the page cache.
  bool direct() const { return direct_; }
  // Bytes in all segments.
  uint64_t Bytes();
  // Every segment on disk but the one being appended to, ascending.
  [[nodiscard]] Status SealedSegments(std::vector<uint32_t>* out);
  // Removes a sealed segment (prune: nothing refers to it any more); the
  // removal is made durable.
  [[nodiscard]] Status DeleteSegment(uint32_t segment);
  static std::string SegmentName(uint32_t segment);

 private:
  Vlog(std::shared_ptr<rocksdb::FileSystem> fs, std::string dir, uint64_t segment_bytes)
      : fs_(std::move(fs)), dir_(std::move(dir)), segment_bytes_(segment_bytes) {}
  Status StartSegment();
  Status ReaderFor(uint32_t segment, std::shared_ptr<rocksdb::FSRandomAccessFile>* out);
  std::string PathOf(uint32_t segment) const;
  std::string EncodeMark(uint64_t lsn, uint32_t segment, uint64_t offset) const;
  // The newest valid mark in one segment.
  Status NewestMarkIn(uint32_t segment, bool* found, uint64_t* lsn, uint64_t* offset);
  Status AppendImpl(const std::vector<Piece>& pieces, bool with_mark, uint64_t mark);

  const std::shared_ptr<rocksdb::FileSystem> fs_;
  const std::string dir_;  // DIR/vlog
  const uint64_t segment_bytes_;
  std::string mark_key_;
  bool direct_ = false;  // the current segment is written with O_DIRECT
  // Append staging, aligned for O_DIRECT; Append only.
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> buf_;
  size_t buf_cap_ = 0;

  std::mutex mu_;
  std::shared_ptr<rocksdb::FSWritableFile> writer_;  // GUARDED_BY(mu_) for the pointer
  uint32_t segment_ = 0;                             // GUARDED_BY(mu_)
  uint64_t tail_ = 0;                                // bytes in the current segment
  uint64_t sealed_bytes_ = 0;                        // GUARDED_BY(mu_): older segments
  std::map<uint32_t, std::shared_ptr<rocksdb::FSRandomAccessFile>> readers_;  // GUARDED_BY(mu_)
};

}  // namespace rwd
