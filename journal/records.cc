#include "records.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <cstring>

namespace rwd::records {

static void PutBE32(char* p, uint32_t v) {
  for (int i = 3; i >= 0; i--) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}
static uint32_t GetBE32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

namespace {

// XXH3 over up to three consecutive pieces.
uint64_t Checksum(std::string_view a, std::string_view b, std::string_view c = {}) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, a.data(), a.size());
  XXH3_64bits_update(&state, b.data(), b.size());
  if (!c.empty()) XXH3_64bits_update(&state, c.data(), c.size());
  return XXH3_64bits_digest(&state);
}

}  // namespace

std::string RedoKey(uint64_t lsn) {
  std::string k(format::kRedoKeySize, '\0');
  PutBE64(k.data(), lsn);
  return k;
}

Status ParseRedoKey(std::string_view key, uint64_t* lsn) {
  if (key.size() != format::kRedoKeySize) return Status::Corruption("redo key of bad length");
  *lsn = GetBE64(key.data());
  return Status::Ok();
}

namespace {

// XXH3 gives the same hash whatever vector width computes it, so the
// payload hash (the bulk of the committer's CPU time for 4 KiB writes: about
// 4,500 instructions per 4 KiB with Debian's SSE2 build of libxxhash) is
// computed by an AVX2 build of it where the CPU has AVX2 (xxh3_avx2.cc).
using HashFn = uint64_t (*)(const void*, size_t);
uint64_t LibraryXxh3(const void* p, size_t n) { return XXH3_64bits(p, n); }
HashFn ChoosePayloadHash() {
  if (__builtin_cpu_supports("avx2")) return Xxh3Avx2;
  return LibraryXxh3;
}
const HashFn kPayloadHash = ChoosePayloadHash();

}  // namespace

uint64_t PayloadHash(std::string_view payload) { return kPayloadHash(payload.data(), payload.size()); }
uint64_t PayloadHashPortable(std::string_view payload) {
  return LibraryXxh3(payload.data(), payload.size());
}

Status CheckPayload(const PayloadRef& ref, std::string_view payload, const std::string& what) {
  if (PayloadHash(payload) != ref.hash) return Status::Corruption(what + ": payload fails its hash");
  return Status::Ok();
}

void EncodeRedo(uint64_t lsn, const RedoHeader& h, char* out) {
  std::memset(out, 0, format::kRedoValueSize);
  out[0] = static_cast<char>(h.type);
  out[1] = static_cast<char>(h.flags);
  PutLE32(out + 4, h.disk);
  PutLE64(out + 8, h.offset);
  PutLE64(out + 16, h.length);
  PutLE64(out + 24, static_cast<uint64_t>(h.time_ns));
  PutLE32(out + 32, h.payload.segment);
  PutLE64(out + 40, h.payload.offset);
  PutLE64(out + 48, h.payload.hash);
  std::string key = RedoKey(lsn);
  PutLE64(out + format::kRedoChecksumOffset,
          Checksum(key, std::string_view(out, format::kRedoChecksumOffset)));
}

Status DecodeRedo(uint64_t lsn, std::string_view value, RedoHeader* h) {
  const std::string what = "redo record " + std::to_string(lsn);
  if (value.size() != format::kRedoValueSize) return Status::Corruption(what + " has a bad length");
  const char* p = value.data();
  std::string key = RedoKey(lsn);
  if (Checksum(key, value.substr(0, format::kRedoChecksumOffset)) !=
      GetLE64(p + format::kRedoChecksumOffset)) {
    return Status::Corruption(what + " fails its checksum");
  }
  uint8_t type = static_cast<uint8_t>(p[0]);
  if (type < 1 || type > 3) return Status::Corruption(what + " has an unknown type");
  h->type = static_cast<format::RedoType>(type);
  h->flags = static_cast<uint8_t>(p[1]);
  h->disk = GetLE32(p + 4);
  h->offset = GetLE64(p + 8);
  h->length = GetLE64(p + 16);
  h->time_ns = static_cast<int64_t>(GetLE64(p + 24));
  h->payload.segment = GetLE32(p + 32);
  h->payload.offset = GetLE64(p + 40);
  h->payload.hash = GetLE64(p + 48);
  bool has_payload = h->payload.segment != 0;
  if (has_payload != (h->type == format::RedoType::kWrite) ||
      (h->type == format::RedoType::kWrite && (h->length == 0 || h->length > format::kMaxWriteBytes))) {
    return Status::Corruption(what + " is inconsistent");
  }
  return Status::Ok();
}

std::string UndoKey(uint64_t epoch, uint32_t disk, uint64_t block) {
  std::string k(format::kUndoKeySize, '\0');
  PutBE64(k.data(), epoch);
  PutBE32(k.data() + 8, disk);
  PutBE64(k.data() + 12, block);
  return k;
}

Status ParseUndoKey(std::string_view key, uint64_t* epoch, uint32_t* disk, uint64_t* block) {
  if (key.size() != format::kUndoKeySize) return Status::Corruption("undo key of bad length");
  *epoch = GetBE64(key.data());
  *disk = GetBE32(key.data() + 8);
  *block = GetBE64(key.data() + 12);
  return Status::Ok();
}

std::string EncodeUndo(std::string_view key, const UndoHeader& h) {
  std::string v(format::kUndoValueSize, '\0');
  v[0] = static_cast<char>(h.kind);
  PutLE32(v.data() + 4, h.length);
  PutLE64(v.data() + 8, h.lsn);
  if (h.kind == format::UndoKind::kData) {
    PutLE32(v.data() + 16, h.payload.segment);
    PutLE64(v.data() + 24, h.payload.offset);
    PutLE64(v.data() + 32, h.payload.hash);
  }
  PutLE64(v.data() + format::kUndoChecksumOffset,
          Checksum(key, std::string_view(v.data(), format::kUndoChecksumOffset)));
  return v;
}

Status DecodeUndo(std::string_view key, std::string_view value, UndoHeader* h) {
  if (value.size() != format::kUndoValueSize) return Status::Corruption("undo record of bad length");
  const char* p = value.data();
  if (Checksum(key, value.substr(0, format::kUndoChecksumOffset)) !=
      GetLE64(p + format::kUndoChecksumOffset)) {
    return Status::Corruption("undo record fails its checksum");
  }
  uint8_t kind = static_cast<uint8_t>(p[0]);
  if (kind != 1 && kind != 2) return Status::Corruption("undo record of unknown kind");
  h->kind = static_cast<format::UndoKind>(kind);
  h->length = GetLE32(p + 4);
  h->lsn = GetLE64(p + 8);
  h->payload.segment = GetLE32(p + 16);
  h->payload.offset = GetLE64(p + 24);
  h->payload.hash = GetLE64(p + 32);
  if ((h->kind == format::UndoKind::kData) != (h->payload.segment != 0)) {
    return Status::Corruption("undo record is inconsistent");
  }
  return Status::Ok();
}

std::string CheckpointKey(uint64_t id) { return RedoKey(id); }

std::string EncodeCheckpoint(const CheckpointRecord& r) {
  std::string v(format::kCheckpointFixedSize, '\0');
  v[0] = static_cast<char>(r.kind);
  v[1] = static_cast<char>((r.pinned ? format::kCheckpointFlagPinned : 0) |
                           (r.pending ? format::kCheckpointFlagPending : 0) |
                           (r.supervised ? format::kCheckpointFlagSupervised : 0));
  v[2] = static_cast<char>(r.name.size() & 0xff);
  v[3] = static_cast<char>(r.name.size() >> 8);
  PutLE64(v.data() + 8, r.lsn);
  PutLE64(v.data() + 16, static_cast<uint64_t>(r.time_ns));
  v += r.name;
  std::string key = CheckpointKey(r.id);
  char sum[8];
  PutLE64(sum, Checksum(key, v));
  v.append(sum, 8);
  return v;
}

Status DecodeCheckpoint(std::string_view key, std::string_view value, CheckpointRecord* r) {
  if (key.size() != 8) return Status::Corruption("checkpoint key of bad length");
  r->id = GetBE64(key.data());
  std::string what = "checkpoint record " + std::to_string(r->id);
  if (value.size() < format::kCheckpointFixedSize + 8) return Status::Corruption(what + " truncated");
  const char* p = value.data();
  size_t name_len = static_cast<uint8_t>(p[2]) | (static_cast<size_t>(static_cast<uint8_t>(p[3])) << 8);
  if (value.size() != format::kCheckpointFixedSize + name_len + 8) {
    return Status::Corruption(what + " has a bad length");
  }
  std::string_view body = value.substr(0, value.size() - 8);
  if (Checksum(key, body) != GetLE64(p + body.size())) {
    return Status::Corruption(what + " fails its checksum");
  }
  uint8_t kind = static_cast<uint8_t>(p[0]);
  if (kind != 1 && kind != 2) return Status::Corruption(what + " has an unknown kind");
  r->kind = static_cast<format::CheckpointKind>(kind);
  r->pinned = (p[1] & format::kCheckpointFlagPinned) != 0;
  r->pending = (p[1] & format::kCheckpointFlagPending) != 0;
  r->supervised = (p[1] & format::kCheckpointFlagSupervised) != 0;
  r->lsn = GetLE64(p + 8);
  r->time_ns = static_cast<int64_t>(GetLE64(p + 16));
  r->name.assign(p + format::kCheckpointFixedSize, name_len);
  return Status::Ok();
}

std::string UndoBytesKey(uint64_t epoch) {
  std::string k = format::kMetaUndoBytesPrefix;
  char buf[8];
  PutBE64(buf, epoch);
  k.append(buf, 8);
  return k;
}

}  // namespace rwd::records
