// libFuzzer target: the decoders of the journal's records (journal/records.cc,
// docs/journal-format.md) and of rewind.meta (journal/meta_file.cc).
//
// Every record carries a checksum, so random bytes rarely get past it.  The
// first input byte picks what to decode; in most modes the harness writes a
// valid checksum over the rest before decoding, so that the decoding past
// the checksum is what gets fuzzed:
//   0  redo record: key (8 bytes) then value, checksum fixed up
//   1  undo record: key (20 bytes) then value, checksum fixed up
//   2  checkpoint record: key (8 bytes) then value, checksum fixed up
//   3  rewind.meta text, checksum line appended
//   4  the rest split into key and value as in mode 0..3 by the next byte,
//      without fixing anything: a damaged record must be refused
// Invariants: a decoder that refuses says Corruption; one that accepts
// yields a record whose encoding decodes to the same record and equals the
// input on every byte that is not reserved; a key that parses re-encodes to
// itself; an accepted meta file's text, written again, reads back the same.
#include "fuzz_check.h"

#include "meta_file.h"
#include "records.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace {

using namespace rwd;
using namespace rwd::records;

// XXH3_64bits(key || body), the checksum of every journal record.
uint64_t KeyedChecksum(std::string_view key, std::string_view body) {
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, key.data(), key.size());
  XXH3_64bits_update(&st, body.data(), body.size());
  return XXH3_64bits_digest(&st);
}

void CheckRefusal(const Status& s) {
  FUZZ_CHECK(s.code() == Status::Code::kCorruption);
  FUZZ_CHECK(fuzz::OneLine(s.message()));
}

// Bytes [from, to) of a and b are equal.
bool SameRange(std::string_view a, std::string_view b, size_t from, size_t to) {
  return a.substr(from, to - from) == b.substr(from, to - from);
}

void Redo(std::string_view key, std::string value, bool fix) {
  uint64_t lsn = 0;
  Status ks = ParseRedoKey(key, &lsn);
  if (!ks.ok()) {
    CheckRefusal(ks);
    return;
  }
  FUZZ_CHECK(RedoKey(lsn) == key);
  if (fix && value.size() == format::kRedoValueSize) {
    PutLE64(value.data() + format::kRedoChecksumOffset,
            KeyedChecksum(key, std::string_view(value).substr(0, format::kRedoChecksumOffset)));
  }
  RedoHeader h;
  Status s = DecodeRedo(lsn, value, &h);
  if (!s.ok()) {
    CheckRefusal(s);
    return;
  }
  FUZZ_CHECK(h.type == format::RedoType::kWrite || h.type == format::RedoType::kZero ||
             h.type == format::RedoType::kTrim);
  if (h.type == format::RedoType::kWrite) {
    FUZZ_CHECK(h.length > 0 && h.length <= format::kMaxWriteBytes && h.payload.segment != 0);
  }
  std::string again(format::kRedoValueSize, '\0');
  EncodeRedo(lsn, h, again.data());
  // Reserved: bytes 2-3 and 36-39; the checksum differs when they do.
  if (SameRange(again, value, 2, 4) && SameRange(again, value, 36, 40)) FUZZ_CHECK(again == value);
  FUZZ_CHECK(SameRange(again, value, 0, 2) && SameRange(again, value, 4, 36) &&
             SameRange(again, value, 40, format::kRedoChecksumOffset));
  RedoHeader h2;
  FUZZ_CHECK(DecodeRedo(lsn, again, &h2).ok());
  FUZZ_CHECK(h2.type == h.type && h2.flags == h.flags && h2.disk == h.disk &&
             h2.offset == h.offset && h2.length == h.length && h2.time_ns == h.time_ns &&
             h2.payload.segment == h.payload.segment && h2.payload.offset == h.payload.offset &&
             h2.payload.hash == h.payload.hash);
  // A record is bound to its key: under another LSN it fails its checksum.
  RedoHeader other;
  FUZZ_CHECK(!DecodeRedo(lsn + 1, again, &other).ok());
}

void Undo(std::string_view key, std::string value, bool fix) {
  uint64_t epoch = 0, block = 0;
  uint32_t disk = 0;
  Status ks = ParseUndoKey(key, &epoch, &disk, &block);
  if (!ks.ok()) {
    CheckRefusal(ks);
    return;
  }
  FUZZ_CHECK(UndoKey(epoch, disk, block) == key);
  if (fix && value.size() == format::kUndoValueSize) {
    PutLE64(value.data() + format::kUndoChecksumOffset,
            KeyedChecksum(key, std::string_view(value).substr(0, format::kUndoChecksumOffset)));
  }
  UndoHeader h;
  Status s = DecodeUndo(key, value, &h);
  if (!s.ok()) {
    CheckRefusal(s);
    return;
  }
  const bool data = h.kind == format::UndoKind::kData;
  FUZZ_CHECK(data || h.kind == format::UndoKind::kZeros);
  FUZZ_CHECK(data == (h.payload.segment != 0));
  std::string again = EncodeUndo(key, h);
  FUZZ_CHECK(again.size() == format::kUndoValueSize);
  FUZZ_CHECK(SameRange(again, value, 0, 1) && SameRange(again, value, 4, 20));
  if (data) FUZZ_CHECK(SameRange(again, value, 24, format::kUndoChecksumOffset));
  UndoHeader h2;
  FUZZ_CHECK(DecodeUndo(key, again, &h2).ok());
  FUZZ_CHECK(h2.kind == h.kind && h2.length == h.length && h2.lsn == h.lsn);
  if (data) {
    FUZZ_CHECK(h2.payload.segment == h.payload.segment && h2.payload.offset == h.payload.offset &&
               h2.payload.hash == h.payload.hash);
  }
}

void Checkpoint(std::string_view key, std::string value, bool fix) {
  if (fix && value.size() >= format::kCheckpointFixedSize + 8) {
    // Make the name length agree with the size, then fix the checksum.
    const size_t name_len = value.size() - format::kCheckpointFixedSize - 8;
    if (name_len <= 0xffff) {
      value[2] = static_cast<char>(name_len & 0xff);
      value[3] = static_cast<char>(name_len >> 8);
    }
    const size_t body = value.size() - 8;
    PutLE64(value.data() + body, KeyedChecksum(key, std::string_view(value).substr(0, body)));
  }
  CheckpointRecord r;
  Status s = DecodeCheckpoint(key, value, &r);
  if (!s.ok()) {
    CheckRefusal(s);
    return;
  }
  FUZZ_CHECK(CheckpointKey(r.id) == key);
  FUZZ_CHECK(r.kind == format::CheckpointKind::kDisk || r.kind == format::CheckpointKind::kVm);
  std::string again = EncodeCheckpoint(r);
  FUZZ_CHECK(again.size() == value.size());
  FUZZ_CHECK(SameRange(again, value, 0, 1) && SameRange(again, value, 2, 4) &&
             SameRange(again, value, 8, value.size() - 8));
  CheckpointRecord r2;
  FUZZ_CHECK(DecodeCheckpoint(key, again, &r2).ok());
  FUZZ_CHECK(r2.id == r.id && r2.kind == r.kind && r2.pinned == r.pinned &&
             r2.pending == r.pending && r2.supervised == r.supervised && r2.lsn == r.lsn &&
             r2.time_ns == r.time_ns && r2.name == r.name);
}

bool SameMeta(const MetaFile& a, const MetaFile& b) {
  if (a.format_version != b.format_version || a.size != b.size || a.block_size != b.block_size ||
      a.image != b.image || a.created_ns != b.created_ns || a.uuid != b.uuid ||
      a.disks.size() != b.disks.size()) {
    return false;
  }
  for (size_t i = 0; i < a.disks.size(); i++) {
    if (a.disks[i].name != b.disks[i].name || a.disks[i].size != b.disks[i].size ||
        a.disks[i].image != b.disks[i].image) {
      return false;
    }
  }
  return true;
}

bool NoNewline(const std::string& s) { return s.find('\n') == std::string::npos; }

// The value of the last line "key=..." before the checksum line, as the
// meta file reader takes it; nullptr when there is none.
const std::string* LastValue(const std::string& text, const std::string& key, std::string* buf) {
  bool found = false;
  size_t start = 0;
  const size_t end = text.rfind("checksum=");
  while (start < end) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos || nl > end) nl = end;
    if (text.compare(start, key.size() + 1, key + "=") == 0) {
      *buf = text.substr(start + key.size() + 1, nl - start - key.size() - 1);
      found = true;
    }
    start = nl + 1;
  }
  return found ? buf : nullptr;
}

// A decimal field read as -magnitude (negative) or magnitude: its text is
// that number up to leading zeros (a field that overflowed would read as
// another number).
bool SameNumber(const std::string& text, const std::string& key, uint64_t magnitude,
                bool negative = false) {
  std::string buf;
  const std::string* field = LastValue(text, key, &buf);
  if (field == nullptr) return false;
  std::string digits = *field;
  if (!digits.empty() && digits[0] == '-') {
    if (!negative && magnitude != 0) return false;
    digits.erase(0, 1);
  } else if (negative) {
    return false;
  }
  const size_t nz = digits.find_first_not_of('0');
  digits = nz == std::string::npos ? "0" : digits.substr(nz);
  return digits == std::to_string(magnitude);
}

void Meta(std::string text, bool fix) {
  if (fix) {
    if (!text.empty() && text.back() != '\n') text += '\n';
    // The checksum covers everything before its line.
    char buf[40];
    std::snprintf(buf, sizeof buf, "checksum=%016llx\n",
                  static_cast<unsigned long long>(XXH3_64bits(text.data(), text.size())));
    text += buf;
  }
  MetaFile m;
  Status s = ParseMetaText("rewind.meta", text, &m);
  if (!s.ok()) {
    CheckRefusal(s);
    return;
  }
  FUZZ_CHECK(!m.disks.empty());
  FUZZ_CHECK(SameNumber(text, "size", m.size));
  FUZZ_CHECK(SameNumber(text, "block_size", m.block_size));
  FUZZ_CHECK(SameNumber(text, "format_version", m.format_version));
  const bool negative = m.created_ns < 0;
  const uint64_t created = static_cast<uint64_t>(m.created_ns);
  FUZZ_CHECK(SameNumber(text, "created_ns", negative ? 0 - created : created, negative));
  if (m.format_version == format::kFormatVersionDisks) {
    FUZZ_CHECK(m.disks.size() <= format::kMaxDisks);
    FUZZ_CHECK(m.disks[0].size == m.size && m.disks[0].image == m.image);
    for (size_t i = 0; i < m.disks.size(); i++) {
      FUZZ_CHECK(SameNumber(text, "disk." + std::to_string(i) + ".size", m.disks[i].size));
    }
  }
  // Values come from lines, so none holds a newline; written again, the
  // text must read back as the same store.
  FUZZ_CHECK(NoNewline(m.image) && NoNewline(m.uuid));
  MetaFile m2;
  Status s2 = ParseMetaText("rewind.meta", MetaFileText(m), &m2);
  FUZZ_CHECK(s2.ok());
  FUZZ_CHECK(SameMeta(m, m2));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint8_t mode = data[0] % 5;
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  bool fix = true;
  if (mode == 4) {
    if (rest.empty()) return 0;
    mode = static_cast<uint8_t>(rest[0]) % 4;
    rest.remove_prefix(1);
    fix = false;
  }
  const size_t key_len = mode == 1 ? format::kUndoKeySize : format::kRedoKeySize;
  const std::string_view key = rest.substr(0, std::min(key_len, rest.size()));
  const std::string value(rest.substr(key.size()));
  switch (mode) {
    case 0: Redo(key, value, fix); break;
    case 1: Undo(key, value, fix); break;
    case 2: Checkpoint(key, value, fix); break;
    case 3: Meta(std::string(rest), fix); break;
  }
  return 0;
}
