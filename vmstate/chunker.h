// FastCDC content-defined chunking (Xia et al., "FastCDC: a Fast and
// Efficient Content-Defined Chunking Approach for Data Deduplication",
// USENIX ATC 2016), used by the saved-state store to cut QEMU's migration
// stream into chunks whose boundaries depend on the bytes around them, not
// on their offset: an insertion early in the stream moves only the chunks it
// touches, and every later chunk keeps its name.
//
// A gear hash (fp = (fp << 1) + kGear[byte]) is rolled over the bytes from
// kMinChunk on; a cut is made after the first byte where the hash's top bits
// are zero.  Normalized chunking (level 2): before kAvgChunk the test uses
// 18 bits (cuts are rare), from kAvgChunk on 14 bits (cuts are likely), so
// chunk sizes cluster around the average; kMaxChunk is a hard cut.  The top
// bits of a gear hash depend on the last 64 bytes, so a boundary is a
// function of a 64-byte window.
//
// Why 16/64/256 KiB: QEMU sends RAM as 4 KiB pages with an 8-byte header, so
// a dirtied page changes one chunk of about 64 KiB (16 pages).  Smaller
// chunks would dedup slightly better but cost more index memory and more
// records: a 4 GiB guest's stream is about 65,000 chunks, 2.6 MB of manifest
// and a few MB of in-memory index.  A run of equal bytes (a zeroed area) has
// a constant hash after 64 bytes, which makes no cut, so it is cut into
// kMaxChunk pieces that are all the same chunk.
//
// Chunk boundaries are not part of the on-disk format (a reader only follows
// the manifest), but changing the table or the parameters makes new saves
// share nothing with older ones.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rwd::vm {

inline constexpr size_t kMinChunk = 16 << 10;
inline constexpr size_t kAvgChunk = 64 << 10;
inline constexpr size_t kMaxChunk = 256 << 10;
static_assert(kMinChunk < kAvgChunk && kAvgChunk < kMaxChunk);
static_assert(kMaxChunk <= UINT32_MAX, "chunk lengths are stored as u32");

// The length of the chunk that starts at data, when n bytes are available:
// in [1, min(n, kMaxChunk)].  When n < kMaxChunk and more of the stream
// follows, the result is only final if it is < n: call again with more
// bytes otherwise (the caller keeps kMaxChunk bytes buffered, or calls at
// the end of the stream, where the remainder is the last chunk).
size_t FastCdcCut(const uint8_t* data, size_t n);

}  // namespace rwd::vm
