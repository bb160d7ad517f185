// Helpers of the restore tests: a model of the disk's bytes, writes made
// through the store in this process, and checks on what a restore leaves in
// a directory.
#pragma once

#include <rewind/journal/store.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "support/proc_util.h"

namespace rwd::test {

// The bytes a disk should hold: starts as zeros, follows the writes.
class DiskImage {
 public:
  explicit DiskImage(uint64_t size) : bytes_(size, '\0') {}
  void Write(uint64_t offset, const std::vector<uint8_t>& data) {
    bytes_.replace(offset, data.size(), reinterpret_cast<const char*>(data.data()), data.size());
  }
  void Zero(uint64_t offset, uint64_t len) { bytes_.replace(offset, len, len, '\0'); }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

// The byte ranges {offset, length} where a and b (two disk images of one
// size) differ, in 512-byte sectors, merged: what Store::Diff reports when
// every write between them was sector-aligned.
std::vector<std::pair<uint64_t, uint64_t>> SectorDiff(const std::string& a, const std::string& b);

// Opens the existing store in dir in this process; REQUIREs success.
std::unique_ptr<Store> OpenStore(const std::string& dir);

// "" when the file at path holds exactly want, else where they first differ.
std::string CompareFile(const std::string& path, const std::string& want);

// Names in dir that a restore may leave behind by mistake: its temporary
// files (".NAME.rewind-XXXXXX").
std::vector<std::string> TempFilesIn(const std::string& dir);

// Waits until a temporary file of a restore appears in dir; false on timeout.
bool WaitForTempFile(const std::string& dir, std::chrono::milliseconds timeout);
// Waits until no temporary file of a restore is left in dir; false on timeout.
bool WaitNoTempFile(const std::string& dir, std::chrono::milliseconds timeout);

// Bytes allocated to the file at path (st_blocks * 512).
uint64_t AllocatedBytes(const std::string& path);

// The rewind CLI run as `cd cwd && rewind args...`.
ProcResult RewindIn(const std::string& cwd, const std::vector<std::string>& args);

// Runs the rewind CLI with its stdout and stderr on a new pseudo-terminal
// and returns all it wrote there, and its exit status.
ProcResult RewindOnTerminal(const std::vector<std::string>& args);

}  // namespace rwd::test
