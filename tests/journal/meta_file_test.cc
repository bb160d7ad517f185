// rewind.meta as text: ParseMetaText and MetaFileText (journal/meta_file.h).
#include "meta_file.h"

#include <catch2/catch.hpp>

#include <xxhash.h>

#include <cinttypes>
#include <cstdio>
#include <string>

using rwd::MetaFile;
using rwd::Status;

namespace {

MetaFile TwoDisks() {
  MetaFile m;
  m.format_version = 3;
  m.size = 1 << 20;
  m.block_size = 4096;
  m.image = "/srv/store/disks/d0.raw";
  m.created_ns = -5;
  m.uuid = "0b6f1c1e";
  m.disks = {{"d0", 1 << 20, "/srv/store/disks/d0.raw"}, {"d1", 2 << 20, "/srv/d1.raw"}};
  return m;
}

// text (without a checksum line) with its checksum line.
std::string Sealed(const std::string& text) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "checksum=%016" PRIx64 "\n", XXH3_64bits(text.data(), text.size()));
  return text + buf;
}

}  // namespace

TEST_CASE("rewind.meta text reads back as written", "[journal][meta]") {
  const MetaFile m = TwoDisks();
  MetaFile back;
  REQUIRE(rwd::ParseMetaText("rewind.meta", rwd::MetaFileText(m), &back).ok());
  CHECK(back.format_version == 3);
  CHECK(back.size == m.size);
  CHECK(back.block_size == m.block_size);
  CHECK(back.image == m.image);
  CHECK(back.created_ns == -5);
  CHECK(back.uuid == m.uuid);
  REQUIRE(back.disks.size() == 2);
  CHECK(back.disks[1].name == "d1");
  CHECK(back.disks[1].size == (2u << 20));
  CHECK(back.disks[1].image == "/srv/d1.raw");
}

// Regression (found with fuzz/records_fuzz): a 20-digit number above
// 2^64-1 wrapped around (size=18446744073709551617 read as 1) instead of
// being refused as out of range.
TEST_CASE("rewind.meta refuses a number beyond 64 bits", "[journal][meta]") {
  const std::string fields = "format_version=2\nblock_size=4096\nimage=/i\ncreated_ns=0\nuuid=u\n";
  MetaFile m;
  REQUIRE(rwd::ParseMetaText("rewind.meta", Sealed(fields + "size=18446744073709551615\n"), &m).ok());
  CHECK(m.size == UINT64_MAX);
  for (const char* size : {"18446744073709551616", "18446744073709551617", "99999999999999999999"}) {
    INFO(size);
    Status s = rwd::ParseMetaText("rewind.meta", Sealed(fields + "size=" + size + "\n"), &m);
    CHECK(s.code() == Status::Code::kCorruption);
  }
  Status s = rwd::ParseMetaText(
      "rewind.meta", Sealed("format_version=3\nsize=1\nblock_size=4096\nimage=/i\ncreated_ns=0\n"
                            "uuid=u\ndisks=1\ndisk.0.name=d\ndisk.0.size=18446744073709551617\n"
                            "disk.0.image=/i\n"),
      &m);
  CHECK(s.code() == Status::Code::kCorruption);
}
