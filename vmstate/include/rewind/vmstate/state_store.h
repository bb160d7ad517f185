// StateStore: the saved device and memory state of whole-VM checkpoints.
//
// QEMU's migration stream of a checkpoint is cut into content-defined
// chunks (FastCDC over a gear hash, so an insertion early in the stream
// does not shift every later chunk), each named by its XXH3-128 hash,
// compressed with zstd and stored once: a chunk that any earlier saved
// state already holds is referenced, not written again.  A second
// checkpoint of a mostly idle guest therefore stores little.
//
// On disk (DIR/vmstate/, see docs/journal-format.md):
//   packs/NNNNNNNN.pack   the new chunks of one saved state, appended
//   states/ID.state       the manifest: metadata and the ordered chunk list
// A saved state exists once its manifest is in place: the pack is synced,
// then the manifest written to a temporary file, synced and renamed, and the
// directory synced.  An interrupted save leaves at most a pack no manifest
// names, which Open deletes.  Every chunk is hash-checked when read: damage
// is reported, never served.
//
// One process at a time: Open takes an exclusive lock (Busy otherwise).
#pragma once

#include <rewind/journal/status.h>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rwd::vm {

// An identifier of a saved state: 1-128 characters from [A-Za-z0-9._+-].
[[nodiscard]] Status ValidateStateId(const std::string& id);

struct StateInfo {
  std::string id;
  nlohmann::json meta;         // what the writer passed to Commit
  uint64_t stream_bytes = 0;   // length of the migration stream
  uint64_t chunks = 0;         // chunks in the stream
  uint64_t new_chunks = 0;     // of which were stored by this save
  uint64_t new_bytes = 0;      // bytes this save added to DIR/vmstate (compressed)
  int64_t time_ns = 0;         // when it was committed
};

// Receives a migration stream and stores it.  Not thread-safe; Append may
// use worker threads inside.
class StateWriter {
 public:
  virtual ~StateWriter() = default;  // without Commit: as Abort
  // Appends stream bytes.  Fails on I/O errors (NoSpace on a full disk);
  // after a failure only Abort is meaningful.
  [[nodiscard]] virtual Status Append(const void* data, size_t len) = 0;
  // Makes the saved state durable and visible under id (AlreadyExists when
  // taken).  meta is stored with it (checkpoint name, LSNs, QEMU version...).
  [[nodiscard]] virtual Status Commit(const std::string& id, const nlohmann::json& meta,
                                      StateInfo* out) = 0;
  // Drops everything written; leaves the store as before.
  virtual void Abort() = 0;
};

class StateStore {
 public:
  // Opens (creating when missing) the state store in dir, removes packs no
  // manifest names (left by an interrupted save), and loads the chunk index.
  [[nodiscard]] static Status Open(const std::string& dir, std::unique_ptr<StateStore>* out);
  virtual ~StateStore() = default;

  [[nodiscard]] virtual Status NewWriter(std::unique_ptr<StateWriter>* out) = 0;
  // Streams saved state id to sink in order, each chunk hash-checked
  // (Corruption naming the chunk otherwise).  A sink error stops the read
  // and is returned.
  [[nodiscard]] virtual Status Read(const std::string& id,
                                    const std::function<Status(const void*, size_t)>& sink) = 0;
  [[nodiscard]] virtual Status Get(const std::string& id, StateInfo* out) = 0;
  [[nodiscard]] virtual Status List(std::vector<StateInfo>* out) = 0;
  // Removes a saved state and deletes the packs no remaining state needs.
  [[nodiscard]] virtual Status Remove(const std::string& id) = 0;
  // Reads every saved state and checks every chunk; damage goes to
  // *damage, one line each.
  [[nodiscard]] virtual Status Verify(std::vector<std::string>* damage) = 0;
  // Bytes DIR/vmstate takes on disk (packs and manifests).
  virtual uint64_t bytes_used() const = 0;
};

// Bytes a state store directory takes without opening it (for `rewind
// info` while another process holds the lock); 0 when it does not exist.
uint64_t StateStoreBytes(const std::string& dir);

}  // namespace rwd::vm
