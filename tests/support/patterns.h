// Test data patterns shared by the suites: a tiny PRNG, pseudo-random
// payloads without zero bytes, and a description of where two buffers
// differ.  Header-only and free of the e2e defines, so tests/support's
// library can use it as well as nbd_rewind.h.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace rwd::test {

inline uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// len pseudo-random bytes from seed, no byte of them zero (so "reads back
// as zeros" and "was written" can never be confused).
inline std::vector<uint8_t> Pattern(size_t len, uint64_t seed) {
  std::vector<uint8_t> out(len);
  uint64_t st = seed * 0x2545F4914F6CDD1Dull + 1;
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = SplitMix64(&st);
    for (size_t k = 0; k < 8 && i + k < len; ++k) {
      uint8_t b = static_cast<uint8_t>(v >> (8 * k));
      out[i + k] = b == 0 ? 0xA5 : b;
    }
  }
  return out;
}

// "" when equal, else where and how a and b first differ.
inline std::string FirstDifference(const uint8_t* got, const uint8_t* want, size_t len,
                                   uint64_t base_offset) {
  for (size_t i = 0; i < len; ++i) {
    if (got[i] != want[i]) {
      size_t end = i;
      while (end < len && got[end] != want[end]) ++end;
      size_t n = 0;
      for (size_t k = i; k < len; ++k) n += got[k] != want[k];
      return fmt::format(
          "first difference at disk offset {} (got {:#04x}, want {:#04x}); "
          "first run of differing bytes is {} long, {} bytes differ in all",
          base_offset + i, got[i], want[i], end - i, n);
    }
  }
  return "";
}

}  // namespace rwd::test
