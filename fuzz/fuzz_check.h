// What the fuzz targets share: an invariant check that stops the run.
//
// A harness checks more than "no crash": a violated invariant (a round trip
// that changes a value, a message that is not one line) is reported with
// FUZZ_CHECK, which prints the condition and aborts, so libFuzzer saves the
// input as a crash artifact like any sanitizer finding.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

namespace rwd::fuzz {

// A message for people: one line, no control characters.
inline bool OneLine(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace rwd::fuzz
