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

namespace rocksdb {
class FileSystem;
}

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
  // An invalid or taken id changes nothing: the writer can still commit
  // under another id.  After any other failure only Abort is meaningful.
  [[nodiscard]] virtual Status Commit(const std::string& id, const nlohmann::json& meta,
                                      StateInfo* out) = 0;
  // Drops everything written; leaves the store as before.
  virtual void Abort() = 0;
};

struct StateStoreOptions {
  // Test doubles; null means the real file system (the lock file DIR/lock
  // is always taken on the real one) and CLOCK_REALTIME.
  std::shared_ptr<rocksdb::FileSystem> fs;
  std::function<int64_t()> clock;
  // Threads per writer that compress and append its new chunks while the
  // caller goes on chunking; 0: one per CPU, at most 4.
  unsigned compress_threads = 0;
  // zstd level of the chunks: 1 keeps up with QEMU's pipe on two cores;
  // higher levels save a little space for much more CPU.
  int zstd_level = 1;
};

// Thread-safe: writers, reads and removals may run concurrently; a
// removal never takes away a pack a live writer or read still uses.
class StateStore {
 public:
  // Opens (creating when missing) the state store in dir, removes packs no
  // manifest names (left by an interrupted save), and loads the chunk index.
  // The parent of dir must exist.
  [[nodiscard]] static Status Open(const std::string& dir, std::unique_ptr<StateStore>* out);
  [[nodiscard]] static Status Open(const std::string& dir, const StateStoreOptions& options,
                                   std::unique_ptr<StateStore>* out);
  // Every writer must be destroyed before its store.
  virtual ~StateStore() = default;

  [[nodiscard]] virtual Status NewWriter(std::unique_ptr<StateWriter>* out) = 0;
  // Streams saved state id to sink in order, each chunk hash-checked
  // (Corruption naming the chunk otherwise).  A sink error stops the read
  // and is returned.
  [[nodiscard]] virtual Status Read(const std::string& id,
                                    const std::function<Status(const void*, size_t)>& sink) = 0;
  [[nodiscard]] virtual Status Get(const std::string& id, StateInfo* out) = 0;
  // The readable saved states, by id.  A state whose manifest was found
  // damaged at Open is left out (Get and Read give Corruption, Verify names
  // it, Remove removes it).
  [[nodiscard]] virtual Status List(std::vector<StateInfo>* out) = 0;
  // Removes a saved state and deletes the packs no remaining state needs.
  [[nodiscard]] virtual Status Remove(const std::string& id) = 0;
  // Reads every saved state and checks every chunk; damage goes to
  // *damage, one line each (OK status); the status fails only when
  // verification itself could not run.
  [[nodiscard]] virtual Status Verify(std::vector<std::string>* damage) = 0;
  // Bytes DIR/vmstate takes on disk (packs and manifests).
  virtual uint64_t bytes_used() const = 0;
};

// Bytes a state store directory takes without opening it (for `rewind
// info` while another process holds the lock); 0 when it does not exist.
uint64_t StateStoreBytes(const std::string& dir);

// The manifest of saved state id in the state store dir, read without
// opening the store (no lock: for `rewind list` while a checkpoint may be
// running).  NotFound when there is no such state; Corruption when its
// manifest is damaged.  Its chunks are not read.
[[nodiscard]] Status PeekState(const std::string& dir, const std::string& id, StateInfo* out);

}  // namespace rwd::vm
