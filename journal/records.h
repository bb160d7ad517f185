// Encoding and decoding of journal keys and records (docs/journal-format.md).
#pragma once

#include "format.h"

#include <rewind/journal/status.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace rwd::records {

// Fixed-width integers in a byte order of their own.  Inline: the committer
// encodes several per record, and out of line they cost a loop per byte.
inline uint64_t ByteSwap(uint64_t v) { return __builtin_bswap64(v); }
inline uint32_t ByteSwap(uint32_t v) { return __builtin_bswap32(v); }
template <typename T>
inline T ToOrder(T v, std::endian order) {
  return order == std::endian::native ? v : ByteSwap(v);
}
inline void PutBE64(char* p, uint64_t v) {
  v = ToOrder(v, std::endian::big);
  std::memcpy(p, &v, sizeof v);
}
inline uint64_t GetBE64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return ToOrder(v, std::endian::big);
}
inline void PutLE64(char* p, uint64_t v) {
  v = ToOrder(v, std::endian::little);
  std::memcpy(p, &v, sizeof v);
}
inline uint64_t GetLE64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return ToOrder(v, std::endian::little);
}
inline void PutLE32(char* p, uint32_t v) {
  v = ToOrder(v, std::endian::little);
  std::memcpy(p, &v, sizeof v);
}
inline uint32_t GetLE32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return ToOrder(v, std::endian::little);
}

// XXH3-64 computed with AVX2 (xxh3_avx2.cc, built with -mavx2); call only
// where the CPU has AVX2.  Same result as XXH3_64bits.
uint64_t Xxh3Avx2(const void* p, size_t n);

std::string RedoKey(uint64_t lsn);
[[nodiscard]] Status ParseRedoKey(std::string_view key, uint64_t* lsn);

// Where a record's payload lives in the vlog (segment 0: no payload).
struct PayloadRef {
  uint32_t segment = 0;
  uint64_t offset = 0;
  uint64_t hash = 0;  // XXH3_64bits of the payload
};
uint64_t PayloadHash(std::string_view payload);
// The same hash by Debian's libxxhash, whatever the CPU: for tests that
// PayloadHash's faster route agrees with it.
uint64_t PayloadHashPortable(std::string_view payload);
// Checks a payload read from the vlog against the record's hash.
[[nodiscard]] Status CheckPayload(const PayloadRef& ref, std::string_view payload,
                                  const std::string& what);

struct RedoHeader {
  format::RedoType type = format::RedoType::kWrite;
  uint8_t flags = 0;
  uint32_t disk = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  int64_t time_ns = 0;
  PayloadRef payload;  // kWrite only
};
// Fills out[kRedoValueSize] including the checksum.
void EncodeRedo(uint64_t lsn, const RedoHeader& h, char* out);
// Decodes and verifies a redo value (the payload is checked when read).
[[nodiscard]] Status DecodeRedo(uint64_t lsn, std::string_view value, RedoHeader* h);

std::string UndoKey(uint64_t epoch, uint32_t disk, uint64_t block);
[[nodiscard]] Status ParseUndoKey(std::string_view key, uint64_t* epoch, uint32_t* disk,
                                  uint64_t* block);
struct UndoHeader {
  format::UndoKind kind = format::UndoKind::kData;
  uint32_t length = 0;
  uint64_t lsn = 0;
  PayloadRef payload;  // kData only
};
std::string EncodeUndo(std::string_view key, const UndoHeader& h);
[[nodiscard]] Status DecodeUndo(std::string_view key, std::string_view value, UndoHeader* h);

std::string CheckpointKey(uint64_t id);
struct CheckpointRecord {
  uint64_t id = 0;
  format::CheckpointKind kind = format::CheckpointKind::kDisk;
  bool pinned = false;
  bool pending = false;
  bool supervised = false;
  uint64_t lsn = 0;
  int64_t time_ns = 0;
  std::string name;
};
std::string EncodeCheckpoint(const CheckpointRecord& r);
[[nodiscard]] Status DecodeCheckpoint(std::string_view key, std::string_view value,
                                      CheckpointRecord* r);

std::string UndoBytesKey(uint64_t epoch);

}  // namespace rwd::records
