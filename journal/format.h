// The on-disk format of a rewind store.  docs/journal-format.md is the
// normative description; this file holds its constants.  Changing any value
// or layout here requires a new kFormatVersion.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rwd::format {

// 1: payloads inside RocksDB values (never released).
// 2: payloads in the vlog; RocksDB records point at them.
inline constexpr uint32_t kFormatVersion = 2;
// 3: version 2 with named disks (disk=NAME), one or several: rewind.meta and
// the meta column family list them, and the disk field of redo values and
// undo keys is the disk's index in that list.  A store made without disk=
// is still version 2; this rewind reads both, and a rewind that reads only
// version 2 refuses a version-3 store rather than replaying the writes of
// one disk into the image of another.
inline constexpr uint32_t kFormatVersionDisks = 3;
// The most disks one store holds.
inline constexpr uint32_t kMaxDisks = 256;

// Files inside the store directory.
inline constexpr const char* kMetaFileName = "rewind.meta";
inline constexpr const char* kJournalDirName = "journal";
inline constexpr const char* kImageFileName = "image.raw";
inline constexpr const char* kControlSocketName = "control.sock";
inline constexpr const char* kVlogDirName = "vlog";  // payload segments (journal/vlog.h)
// Version 3: the live image of disk NAME is DIR/disks/NAME.raw unless adopted.
inline constexpr const char* kDisksDirName = "disks";
inline constexpr const char* kDiskImageSuffix = ".raw";

// RocksDB column families.
inline constexpr const char* kMetaCF = "default";
inline constexpr const char* kRedoCF = "redo";
inline constexpr const char* kUndoCF = "undo";
inline constexpr const char* kCheckpointCF = "checkpoints";

// Keys of the meta column family.
inline constexpr const char* kMetaFormatVersion = "format_version";  // decimal
inline constexpr const char* kMetaSize = "size";                      // decimal
inline constexpr const char* kMetaBlockSize = "block_size";           // decimal
inline constexpr const char* kMetaImage = "image";                    // path
inline constexpr const char* kMetaCreated = "created_ns";             // decimal
inline constexpr const char* kMetaUuid = "uuid";
// Version 3: the disk lines of rewind.meta ("disk.<i>.name=...\n", ".size",
// ".image", for every disk in order), as text (DisksText in meta_file.h).
inline constexpr const char* kMetaDisks = "disks";
// Every redo record with LSN <= applied_lsn is in the image and the image
// was synced after it was written (u64, little-endian).
inline constexpr const char* kMetaAppliedLsn = "applied_lsn";
// Every record with LSN <= synced_lsn, and its payloads, were covered by a
// completed sync of the payload log, and the WAL holds them before this
// record (u64, little-endian; absent: 0).  Written after the payload log
// sync and before the WAL sync of each journal sync: recovery takes a
// damaged payload at or below it for damage, not for a torn tail.
inline constexpr const char* kMetaSyncedLsn = "synced_lsn";
// A sync mark in the payload log (docs/journal-format.md, "Sync marks"):
// 64 bytes appended after a group's payloads when a journal sync completed
// since the last mark; it says that a completed sync covered every record
// with LSN <= synced_lsn, so the WAL must hold them.
//   0  16 bytes magic kVlogMarkMagic
//  16  u64 synced_lsn   24 u32 segment   28 u32 reserved (0)
//  32  u64 offset of the mark in its segment   40 16 bytes reserved (0)
//  56  u64 checksum = XXH3_64bits(uuid || bytes[0..56)), uuid as in rewind.meta
inline constexpr char kVlogMarkMagic[16] = {'r', 'e', 'w', 'i', 'n', 'd', '-', 's',
                                            'y', 'n', 'c', '-', 'm', 'a', 'r', 'k'};
inline constexpr size_t kVlogMarkSize = 64;
// Present while a rollback runs (synced before its first write, deleted,
// synced, after its flush); Open finishes the rollback it names.  Value
// (little-endian): u64 target lsn, u64 id of the before-rollback
// checkpoint, u64 checksum = XXH3_64bits(key || value[0..16)).
inline constexpr const char* kMetaRollback = "rollback";
inline constexpr size_t kRollbackValueSize = 24;
// The oldest reachable point after a prune: every record for an LSN at or
// below it may be gone (decimal; absent: 0, the store's creation).
inline constexpr const char* kMetaHistoryStart = "history_start";
// Prefix of the per-epoch before-image byte counters (merge: u64 add).
inline constexpr const char* kMetaUndoBytesPrefix = "undo_bytes/";

// Redo record: key = LSN (u64 big-endian); value (little-endian):
//   0  u8  type           1  u8 flags       2 u16 reserved (0)
//   4  u32 disk: the index of the disk in the store's list (0: the first)
//   8  u64 offset        16  u64 length
//  24  i64 time_ns
//  32  u32 vlog segment of the payload (0: none, for zero and trim)
//  36  u32 reserved (0)
//  40  u64 offset of the payload in its vlog segment
//  48  u64 payload hash = XXH3_64bits(payload) (0 without payload)
//  56  u64 checksum = XXH3_64bits(key || value[0..56))
enum class RedoType : uint8_t { kWrite = 1, kZero = 2, kTrim = 3 };
inline constexpr uint8_t kRedoFlagFua = 1;
inline constexpr size_t kRedoKeySize = 8;
inline constexpr size_t kRedoValueSize = 64;
// The longest write one redo record holds; Store::Write refuses longer.
inline constexpr uint64_t kMaxWriteBytes = 64ull << 20;
inline constexpr size_t kRedoChecksumOffset = 56;

// Undo record (a recovery block's before-image):
//   key = epoch (u64 BE) || disk (u32 BE) || block index (u64 BE)
// epoch is the id of the newest checkpoint when the block was first
// overwritten after it (0: before any checkpoint).
// value (little-endian):
//   0  u8  kind (1 data, 2 zeros: no payload)   1 u8[3] reserved
//   4  u32 length of the block in bytes (the last block may be short)
//   8  u64 lsn of the write that first overwrote the block in this epoch
//  16  u32 vlog segment of the payload (0 for kZeros)   20 u32 reserved
//  24  u64 offset of the payload in its vlog segment
//  32  u64 payload hash = XXH3_64bits(payload) (0 for kZeros)
//  40  u64 checksum = XXH3_64bits(key || value[0..40))
enum class UndoKind : uint8_t { kData = 1, kZeros = 2 };
inline constexpr size_t kUndoKeySize = 20;
inline constexpr size_t kUndoValueSize = 48;
inline constexpr size_t kUndoChecksumOffset = 40;

// Checkpoint record: key = checkpoint id (u64 BE, from 1).
//   0  u8  kind (1 disk, 2 vm)
//   1  u8  flags (bit 0 pinned, bit 1 pending, bit 2 supervised; readers
//          ignore the others, writers leave them 0)
//   2  u16 name length
//   4  u32 reserved (0)
//   8  u64 lsn                  16 i64 time_ns
//  24  name bytes
//  end u64 checksum = XXH3_64bits(key || everything before it)
enum class CheckpointKind : uint8_t { kDisk = 1, kVm = 2 };
inline constexpr uint8_t kCheckpointFlagPinned = 1;
// Taken but not committed: invisible to users (Store::CommitCheckpoint).
inline constexpr uint8_t kCheckpointFlagPending = 2;
// Taken by `rewind supervise`: informational only.
inline constexpr uint8_t kCheckpointFlagSupervised = 4;
inline constexpr size_t kCheckpointFixedSize = 24;
inline constexpr size_t kMaxCheckpointName = 128;

static_assert(kRedoValueSize == kRedoChecksumOffset + 8);
static_assert(kFormatVersionDisks == kFormatVersion + 1);
static_assert(kMaxDisks <= UINT32_MAX);
static_assert(kUndoKeySize == 8 + 4 + 8);
static_assert(kUndoValueSize == kUndoChecksumOffset + 8);

}  // namespace rwd::format
