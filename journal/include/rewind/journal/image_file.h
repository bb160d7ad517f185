// ImageFile: the live raw image, behind an interface so tests can replace it.
//
// Production uses an io_uring implementation (image_file_uring.cc); tests use
// a fault-injecting in-memory double that forgets unsynced writes on a
// simulated power cut.
#pragma once

#include <rewind/journal/status.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rwd {

struct IoVec {
  uint64_t offset;
  const void* data;
  uint32_t length;
};

class ImageFile {
 public:
  virtual ~ImageFile() = default;

  // Size in bytes of the image.
  virtual uint64_t Size() const = 0;
  // Reads exactly len bytes at offset (beyond EOF reads zeros).
  // Thread-safe.
  [[nodiscard]] virtual Status Read(uint64_t offset, uint32_t len, void* buf) = 0;
  // Writes every extent; returns when all are written (not synced).  The
  // extents must not overlap.  Called by one thread at a time.
  [[nodiscard]] virtual Status WriteV(const std::vector<IoVec>& extents) = 0;
  // Makes [offset, offset+len) read as zeros; punch_hole deallocates.
  [[nodiscard]] virtual Status Zero(uint64_t offset, uint64_t len, bool punch_hole) = 0;
  // fdatasync: every completed write is durable when this returns OK.
  [[nodiscard]] virtual Status Sync() = 0;
  // Calls fn(offset, length, is_data) for consecutive regions covering
  // [offset, offset+len).  Regions that are holes read as zeros.
  [[nodiscard]] virtual Status Extents(
      uint64_t offset, uint64_t len,
      const std::function<void(uint64_t, uint64_t, bool)>& fn) = 0;
};

class ImageFileFactory {
 public:
  virtual ~ImageFileFactory() = default;
  // Opens (creating when create is true) the image at path.  When create is
  // true and size is non-zero the file is made exactly size bytes.
  [[nodiscard]] virtual Status Open(const std::string& path, bool create, uint64_t size,
                                    std::unique_ptr<ImageFile>* out) = 0;
  // Whether a file exists at path.
  virtual bool Exists(const std::string& path) = 0;
};

// The production factory: io_uring for reads and writes, fallocate for
// zero and trim, SEEK_DATA/SEEK_HOLE for extents.
std::shared_ptr<ImageFileFactory> DefaultImageFileFactory();

}  // namespace rwd
