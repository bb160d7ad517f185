// XXH3-64 built for AVX2: this file alone is compiled with -mavx2 (see
// CMakeLists.txt), and records.cc calls it only when the CPU has AVX2.
// XXH_INLINE_ALL makes every xxHash function static to this file, so no
// AVX2 code can leak into the rest of the program through a shared inline
// definition.  XXH3's result does not depend on the vector width.
#include "records.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace rwd::records {

uint64_t Xxh3Avx2(const void* p, size_t n) { return XXH3_64bits(p, n); }

}  // namespace rwd::records
