// Reaching into a store's files, for tests that damage them on purpose.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rwd::test {

// The files directly in dir/sub whose names end in ext (".vlog", ".log"),
// as paths, sorted (so oldest first for numbered files).
std::vector<std::string> FilesIn(const std::string& dir, const std::string& sub, const std::string& ext);

// XORs the byte at offset of path with 0x5a, in place; fails the test if
// the file has no such byte.
void FlipByte(const std::string& path, uint64_t offset);

}  // namespace rwd::test
