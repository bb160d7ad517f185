// DiskModel: what a store's disk may hold after a crash.
//
// The model keeps the disk's content at the last durable point (the base)
// and every operation issued since, in order.  After a crash the store may
// recover to the state after any number c of those operations, from the
// durable point up to all of them: a prefix of the history, since the
// journal is one ordered log.  CheckRecovered verifies a recovered disk
// against that, sector by sector (512 bytes) first -- each sector must hold
// its durable value or one written later, never garbage -- and then as a
// whole: one c must explain every sector at once (so no write is torn and
// none overtakes an earlier one).  Listed checkpoints raise the lower bound:
// a checkpoint covers every operation issued before it.
//
// Write payloads come from FillPattern, which encodes the write's tag and
// each 8-byte word's disk offset, so a failure message can say which write
// a sector's bytes came from and whether they landed in the right place.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rwd::test {

inline constexpr uint64_t kSectorSize = 512;

// Payload of the write tagged `tag` (1 .. 2^24-1) for [offset, offset+len).
void FillPattern(uint64_t tag, uint64_t offset, uint64_t len, char* out);
// What a sector's bytes look like, as runs of 8-byte words: "zeros",
// "tag 17x64", "tag 9x3 tag 17x61", "tag 17 moved by 4096 bytes x64" (a
// write landed in the wrong place), "?x2 ... (bytes start 0011...)" for
// words no write produced whole (garbage, or two writes meeting mid-word).
std::string DescribeSector(const char* data, uint64_t offset, uint64_t len);

class DiskModel {
 public:
  // A disk of size bytes; origin: where it starts on the store's disk when
  // it models a region (only for naming offsets in messages and patterns).
  explicit DiskModel(uint64_t size, uint64_t origin = 0);
  uint64_t size() const { return size_; }

  // Records an operation as issued, before the store returns, and returns
  // its number (from 1).  label is for messages.
  uint64_t Write(uint64_t offset, const char* data, uint64_t len, std::string label);
  uint64_t Zero(uint64_t offset, uint64_t len, std::string label);
  // The last operation recorded certainly did not happen (the store refused
  // it before journaling): forget it.
  void DropLast();
  // Every operation recorded so far survives any crash from now on.
  void MarkDurable();
  // Operations recorded so far.
  uint64_t ops() const { return durable_ops_ + pending_.size(); }
  uint64_t durable_ops() const { return durable_ops_; }

  // The content if every recorded operation took effect.
  void ReadCurrent(uint64_t offset, uint64_t len, char* out) const;
  const std::vector<char>& current() const { return current_; }

  // Checks a recovered disk (size() bytes).  min_ops: operations the
  // recovered state must include at least (e.g. those before a listed
  // checkpoint).  Returns "" and sets *recovered_ops when the disk is the
  // state after some c in [max(durable, min_ops), ops()] operations;
  // otherwise a description of what is wrong.
  std::string CheckRecovered(const char* disk, uint64_t min_ops, uint64_t* recovered_ops) const;
  // Adopts a checked recovered disk as the new durable state: the
  // operations it lacks are forgotten (they were lost in the crash).
  void Reset(const char* disk);

 private:
  struct Op {
    uint64_t number;
    uint64_t offset;
    uint64_t length;
    std::vector<char> data;  // empty: zeroes
    std::string label;
  };
  void ApplyTo(const Op& op, char* image, uint64_t image_offset, uint64_t image_len) const;

  uint64_t size_;
  uint64_t origin_;
  std::vector<char> base_;     // content after durable_ops_ operations
  std::vector<char> current_;  // content after every recorded operation
  uint64_t durable_ops_ = 0;
  std::vector<Op> pending_;  // operations after the durable point
};

}  // namespace rwd::test
