// FastCDC cut-point search; see chunker.h.
#include "chunker.h"

#include <algorithm>
#include <array>

namespace rwd::vm {

namespace {

// The gear table: 256 pseudo-random 64-bit values, the first outputs of
// splitmix64 seeded with "rwdgear1".  Fixed forever within a format: see
// chunker.h on what changing it costs.
constexpr std::array<uint64_t, 256> MakeGear() {
  std::array<uint64_t, 256> g{};
  uint64_t state = 0x7277646765617231ull;  // "rwdgear1"
  for (auto& v : g) {
    state += 0x9e3779b97f4a7c15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    v = z ^ (z >> 31);
  }
  return g;
}

constexpr std::array<uint64_t, 256> kGear = MakeGear();

// Top-bit masks: 18 bits (p = 2^-18 per byte) before the average point,
// 14 bits (p = 2^-14) after it; "normalization level 2" of the paper
// around log2(kAvgChunk) = 16.
constexpr uint64_t kMaskS = ~uint64_t{0} << (64 - 18);
constexpr uint64_t kMaskL = ~uint64_t{0} << (64 - 14);
static_assert(kAvgChunk == size_t{1} << 16, "the masks assume a 64 KiB average");

}  // namespace

size_t FastCdcCut(const uint8_t* data, size_t n) {
  n = std::min(n, kMaxChunk);
  if (n <= kMinChunk) return n;
  const size_t normal = std::min(n, kAvgChunk);
  uint64_t fp = 0;
  // The hash is started 64 bytes before kMinChunk so that, as everywhere
  // else, a boundary depends only on the 64-byte window before it.
  size_t i = kMinChunk - 64;
  for (; i < kMinChunk; ++i) fp = (fp << 1) + kGear[data[i]];
  for (; i < normal; ++i) {
    fp = (fp << 1) + kGear[data[i]];
    if ((fp & kMaskS) == 0) return i + 1;
  }
  for (; i < n; ++i) {
    fp = (fp << 1) + kGear[data[i]];
    if ((fp & kMaskL) == 0) return i + 1;
  }
  return n;
}

}  // namespace rwd::vm
