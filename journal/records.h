// Encoding and decoding of journal keys and records (docs/journal-format.md).
#pragma once

#include "format.h"

#include <rewind/journal/status.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace rwd::records {

void PutBE64(char* p, uint64_t v);
uint64_t GetBE64(const char* p);
void PutLE64(char* p, uint64_t v);
uint64_t GetLE64(const char* p);
void PutLE32(char* p, uint32_t v);
uint32_t GetLE32(const char* p);

std::string RedoKey(uint64_t lsn);
[[nodiscard]] Status ParseRedoKey(std::string_view key, uint64_t* lsn);

struct RedoHeader {
  format::RedoType type = format::RedoType::kWrite;
  uint8_t flags = 0;
  uint32_t disk = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  int64_t time_ns = 0;
};
// Fills header[kRedoHeaderSize] including the checksum over key and payload.
void EncodeRedoHeader(uint64_t lsn, const RedoHeader& h, std::string_view payload, char* out);
// Decodes and verifies a redo value; payload points into value.
[[nodiscard]] Status DecodeRedo(uint64_t lsn, std::string_view value, RedoHeader* h,
                                std::string_view* payload);

std::string UndoKey(uint64_t epoch, uint32_t disk, uint64_t block);
[[nodiscard]] Status ParseUndoKey(std::string_view key, uint64_t* epoch, uint32_t* disk,
                                  uint64_t* block);
struct UndoHeader {
  format::UndoKind kind = format::UndoKind::kData;
  uint32_t length = 0;
  uint64_t lsn = 0;
};
// Builds the whole undo value (header + payload; no payload for kZeros).
std::string EncodeUndo(std::string_view key, const UndoHeader& h, std::string_view payload);
[[nodiscard]] Status DecodeUndo(std::string_view key, std::string_view value, UndoHeader* h,
                                std::string_view* payload);

std::string CheckpointKey(uint64_t id);
struct CheckpointRecord {
  uint64_t id = 0;
  format::CheckpointKind kind = format::CheckpointKind::kDisk;
  bool pinned = false;
  uint64_t lsn = 0;
  int64_t time_ns = 0;
  std::string name;
};
std::string EncodeCheckpoint(const CheckpointRecord& r);
[[nodiscard]] Status DecodeCheckpoint(std::string_view key, std::string_view value,
                                      CheckpointRecord* r);

std::string UndoBytesKey(uint64_t epoch);

}  // namespace rwd::records
