// DIR/rewind.meta: the store's identity, in a small text file that can be
// read without opening RocksDB (nbdkit checks parameters before it forks,
// and RocksDB's threads must not be started before a fork).
#pragma once

#include <rewind/journal/status.h>

#include <cstdint>
#include <string>
#include <vector>

namespace rwd {

// One disk of a store; its index in MetaFile::disks is its id in the journal.
struct MetaDisk {
  std::string name;   // "" for the one unnamed disk of a version-2 store
  uint64_t size = 0;
  std::string image;  // absolute path of its live image
};

struct MetaFile {
  uint32_t format_version = 0;
  uint64_t size = 0;  // the first disk's
  uint32_t block_size = 0;
  std::string image;  // absolute path of the first disk's live image
  int64_t created_ns = 0;
  std::string uuid;
  // Every disk, in order.  Version 2: one unnamed disk {"", size, image};
  // version 3: the disk.<i>.* lines, of which the first repeats size and
  // image.
  std::vector<MetaDisk> disks;
};

std::string MetaFilePath(const std::string& dir);
// NotFound when absent, Corruption when its checksum or syntax is bad.  The
// format version is returned as found; the caller checks it.
[[nodiscard]] Status ReadMetaFile(const std::string& dir, MetaFile* out);
// The same on the file's contents; path names the file in messages.
[[nodiscard]] Status ParseMetaText(const std::string& path, const std::string& text, MetaFile* out);
// The file's contents as WriteMetaFile writes them, checksum line included.
std::string MetaFileText(const MetaFile& m);
// The disk lines of a version-3 meta file ("disk.<i>.name=...\n" and so on
// for every disk), also stored in the journal's meta column family.
std::string DisksText(const MetaFile& m);
// Atomically (temp file, fsync, rename, directory fsync).
[[nodiscard]] Status WriteMetaFile(const std::string& dir, const MetaFile& m);
// fsync of a directory.
[[nodiscard]] Status SyncDir(const std::string& dir);

}  // namespace rwd
