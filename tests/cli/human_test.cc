// The CLI's human-readable formatting: sizes, times, tables.
#include "human.h"

#include <catch2/catch.hpp>
#include <sstream>

namespace rwd::cli {
namespace {

TEST_CASE("HumanBytes picks the largest binary unit", "[cli]") {
  CHECK(HumanBytes(0) == "0 B");
  CHECK(HumanBytes(1023) == "1023 B");
  CHECK(HumanBytes(1024) == "1 KiB");
  CHECK(HumanBytes(1536) == "1.5 KiB");
  CHECK(HumanBytes(1572864) == "1.5 MiB");
  CHECK(HumanBytes(20ull << 30) == "20 GiB");
  CHECK(HumanBytes((1ull << 40) + 1) == "1.0 TiB");
  CHECK(HumanBytes(UINT64_MAX) == "16.0 EiB");
  CHECK(HumanBytesExact(512) == "512 bytes");
  CHECK(HumanBytesExact(21474836480ull) == "20 GiB (21474836480 bytes)");
}

TEST_CASE("HumanTime prints UTC to the millisecond", "[cli]") {
  CHECK(HumanTime(0) == "1970-01-01 00:00:00.000 UTC");
  CHECK(HumanTime(1795428900123456789, false) == "2026-11-23 10:15:00.123");
  CHECK(HumanTime(-1) == "1969-12-31 23:59:59.999 UTC");
}

TEST_CASE("KeyValueBlock aligns the values", "[cli]") {
  KeyValueBlock block;
  block.Add("size", "1 GiB");
  block.Add("block size", "4096 bytes");
  std::ostringstream out;
  block.Print(out);
  CHECK(out.str() ==
        "size:        1 GiB\n"
        "block size:  4096 bytes\n");
}

TEST_CASE("Table sizes columns to their widest cell", "[cli]") {
  Table table({{"ID", Table::Align::kRight},
               {"NAME", Table::Align::kLeft},
               {"UNDO", Table::Align::kRight},
               {"PINNED", Table::Align::kLeft}});
  table.AddRow({"1", "before-upgrade", "0 B", "no"});
  table.AddRow({"10", "x", "1.5 MiB", "yes"});
  std::ostringstream out;
  table.Print(out);
  CHECK(out.str() ==
        "ID  NAME               UNDO  PINNED\n"
        " 1  before-upgrade      0 B  no\n"
        "10  x               1.5 MiB  yes\n");
}

TEST_CASE("Table leaves no trailing blanks after a blank last cell", "[cli]") {
  Table table({{"NAME", Table::Align::kLeft},
               {"PINNED", Table::Align::kLeft},
               {"BY", Table::Align::kLeft}});
  table.AddRow({"a", "no", ""});
  table.AddRow({"auto-1", "yes", "supervise"});
  std::ostringstream out;
  table.Print(out);
  CHECK(out.str() ==
        "NAME    PINNED  BY\n"
        "a       no\n"
        "auto-1  yes     supervise\n");
}

}  // namespace
}  // namespace rwd::cli
