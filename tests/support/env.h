// Test knobs from the environment (REWIND_E2E_SEED, REWIND_TORTURE_KILLS, ...):
// the long and the reproducible runs of a test are the same code with
// other numbers.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>

namespace rwd::test {

// The positive integer in the variable name, else fallback.
inline int PositiveIntFromEnv(const char* name, int fallback) {
  const char* e = std::getenv(name);
  const int v = e != nullptr ? std::atoi(e) : 0;
  return v > 0 ? v : fallback;
}

// The seed in the variable name (decimal, or hex with 0x), else a random
// one: print it, so that a failure can be run again.
inline uint64_t SeedFromEnv(const char* name) {
  const char* e = std::getenv(name);
  if (e != nullptr) return std::strtoull(e, nullptr, 0);
  return std::random_device{}();
}

}  // namespace rwd::test
