// DIR/rewind.meta: the store's identity, in a small text file that can be
// read without opening RocksDB (nbdkit checks parameters before it forks,
// and RocksDB's threads must not be started before a fork).
#pragma once

#include <rewind/journal/status.h>

#include <cstdint>
#include <string>

namespace rwd {

struct MetaFile {
  uint32_t format_version = 0;
  uint64_t size = 0;
  uint32_t block_size = 0;
  std::string image;  // absolute path of the live image
  int64_t created_ns = 0;
  std::string uuid;
};

std::string MetaFilePath(const std::string& dir);
// NotFound when absent, Corruption when its checksum or syntax is bad.  The
// format version is returned as found; the caller checks it.
[[nodiscard]] Status ReadMetaFile(const std::string& dir, MetaFile* out);
// Atomically (temp file, fsync, rename, directory fsync).
[[nodiscard]] Status WriteMetaFile(const std::string& dir, const MetaFile& m);
// fsync of a directory.
[[nodiscard]] Status SyncDir(const std::string& dir);

}  // namespace rwd
