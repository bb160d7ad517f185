// Recovery after a crash cuts the journal at the first record whose payload
// is missing or damaged, as the torn tail of the crash, only above the
// newest LSN a completed sync covered (the synced_lsn record,
// docs/journal-format.md "The recovery cut").  Below it, the same damage
// fails Open with Corruption: cutting there would drop acknowledged writes.
#include <catch2/catch.hpp>

#include "support/store_files.h"
#include "support/store_harness.h"

#include <rewind/journal/store.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using rwd::Status;
using rwd::StoreInfo;

namespace {

namespace fs = std::filesystem;
using Harness = rwd::test::StoreHarness;
using Config = rwd::test::HarnessConfig;

std::vector<std::string> Segments(const std::string& dir) {
  return rwd::test::FilesIn(dir, "vlog", ".vlog");
}
using rwd::test::FlipByte;

// Flips a byte inside the last copy of bytes in the file.
void FlipInLast(const std::string& path, const std::string& bytes) {
  std::ifstream f(path, std::ios::binary);
  const std::string content((std::istreambuf_iterator<char>(f)), {});
  const size_t at = content.rfind(bytes);
  REQUIRE(at != std::string::npos);
  FlipByte(path, at + 10);
}

// No image sync for a minute: every record stays above applied_lsn, where
// recovery replays it and checks its payload.  No timed journal sync
// either: only FUA writes sync.
Config QuietConfig() {
  Config c{1ull << 20, 4096, 60'000'000};
  c.image_sync_interval_ms = 60'000;
  return c;
}

}  // namespace

TEST_CASE("a damaged payload of a synced write fails recovery instead of being cut as a torn tail",
          "[journal][recovery]") {
  Harness h(QuietConfig(), 21);
  h.Open();
  // Three FUA writes of whole, fresh blocks: acknowledged as durable.  Their
  // blocks were zeros, so their before-images have no payload and the first
  // write's payload is the first bytes of the segment.
  REQUIRE(h.WriteAt(0, 4096, true));
  REQUIRE(h.WriteAt(8192, 4096, true));
  REQUIRE(h.WriteAt(16384, 4096, true));
  h.Kill();
  const std::vector<std::string> segs = Segments(h.dir());
  REQUIRE(segs.size() == 1);
  FlipByte(segs[0], 100);

  Status s = h.TryOpen();
  INFO(s.ToString());
  CHECK(s.code() == Status::Code::kCorruption);
  CHECK(s.message().find("redo record 1") != std::string::npos);
  CHECK(s.message().find("synced through LSN 3") != std::string::npos);
  CHECK(s.message().find("--drop-damaged-journal") != std::string::npos);
  CHECK_FALSE(h.has_store());

  // Refused again, nothing changed by the first attempt.
  CHECK(h.TryOpen().code() == Status::Code::kCorruption);

  // Asked to, recovery cuts there: all three writes are dropped, and it
  // says so.
  h.config().drop_damaged_journal = true;
  s = h.TryOpen();
  INFO(s.ToString());
  REQUIRE(s.ok());
  StoreInfo info;
  REQUIRE(h.store().GetInfo(&info).ok());
  CHECK(info.recovery_cut_records == 3);
  CHECK(info.recovery_dropped_damage.find("cut at LSN 1") != std::string::npos);
  CHECK(info.newest_lsn == 0);

  // The LSNs from the cut on are given out again, unsynced: a crash that
  // tears the payload of a new one is a torn tail again, not damage below
  // the old synced_lsn or the old sync marks.
  h.config().drop_damaged_journal = false;
  REQUIRE(h.WriteAt(0, 4096, true));       // LSN 1 again, synced
  REQUIRE(h.WriteAt(8192, 4096, false));   // LSN 2 again, not synced
  REQUIRE(h.store().GetInfo(&info).ok());  // in the WAL
  std::string written(4096, '\0');
  REQUIRE(h.store().Read(8192, 4096, written.data()).ok());
  h.Kill();
  FlipInLast(Segments(h.dir()).back(), written);  // LSN 2's payload
  s = h.TryOpen();
  INFO(s.ToString());
  REQUIRE(s.ok());
  REQUIRE(h.store().GetInfo(&info).ok());
  CHECK(info.recovery_cut_records == 1);
  CHECK(info.newest_lsn == 1);
  REQUIRE(h.store().Close().ok());
}

TEST_CASE("a damaged before-image of a synced write fails recovery too", "[journal][recovery]") {
  Harness h(QuietConfig(), 22);
  h.Open();
  REQUIRE(h.WriteAt(0, 4096, false));
  std::string block0(4096, '\0');
  REQUIRE(h.store().Read(0, 4096, block0.data()).ok());
  REQUIRE(h.DoCheckpoint("cp1"));  // synced; the next write of block 0 saves it
  REQUIRE(h.WriteAt(0, 4096, true));
  h.Kill();
  // The before-image is block 0 as the first write left it: the second
  // copy of those bytes in the payload log (the first is that write's own
  // payload).
  FlipInLast(Segments(h.dir()).back(), block0);
  Status s = h.TryOpen();
  INFO(s.ToString());
  CHECK(s.code() == Status::Code::kCorruption);
  CHECK(s.message().find("before-image of LSN 2") != std::string::npos);
  CHECK(s.message().find("synced through LSN 2") != std::string::npos);
}

TEST_CASE("an unsynced write whose payload is damaged is still cut as a torn tail",
          "[journal][recovery]") {
  Harness h(QuietConfig(), 23);
  h.Open();
  REQUIRE(h.WriteAt(0, 4096, true));       // LSN 1, synced
  REQUIRE(h.WriteAt(8192, 4096, false));   // LSN 2, never synced
  // GetInfo waits until every acknowledged write is in the WAL (committed,
  // not synced): LSN 2's record and payload are written, never synced.
  StoreInfo info;
  REQUIRE(h.store().GetInfo(&info).ok());
  const std::string seg = Segments(h.dir()).back();
  REQUIRE(fs::file_size(seg) >= 8192);
  h.Kill();
  FlipByte(seg, 4096 + 10);  // LSN 2's payload
  Status s = h.TryOpen();
  INFO(s.ToString());
  REQUIRE(s.ok());
  REQUIRE(h.store().GetInfo(&info).ok());
  CHECK(info.recovery_cut_records == 1);
  CHECK(info.recovery_dropped_damage.empty());
  CHECK(info.newest_lsn == 1);
  std::vector<char> got(4096);
  REQUIRE(h.store().Read(8192, 4096, got.data()).ok());
  CHECK(got == std::vector<char>(4096, 0));
  REQUIRE(h.store().Close().ok());
}

// The WAL's last records lost whole (a truncation that ends on a record
// boundary, or a torn last record that RocksDB drops as a crash's): the
// payload log's sync marks say how far a completed sync reached.
TEST_CASE("a WAL cut short below a completed sync fails recovery", "[journal][recovery]") {
  Harness h(QuietConfig(), 24);
  h.Open();
  // Eight FUA writes of fresh blocks: each is synced, and each group after
  // the first carries the mark of the sync before it (LSN 7 in the last).
  for (uint64_t i = 0; i < 8; i++) REQUIRE(h.WriteAt(i * 8192, 4096, true));
  h.Kill();
  const std::vector<std::string> wals = rwd::test::FilesIn(h.dir(), "journal", ".log");
  REQUIRE(!wals.empty());
  const uint64_t size = fs::file_size(wals.back());
  fs::resize_file(wals.back(), size / 2);  // about half of the records go

  Status s = h.TryOpen();
  INFO(s.ToString());
  CHECK(s.code() == Status::Code::kCorruption);
  CHECK(s.message().find("completed sync through LSN 7") != std::string::npos);
  CHECK(s.message().find("lost synced records") != std::string::npos);
  CHECK_FALSE(h.has_store());

  // Asked to, it opens without them, and marks what is left, so that the
  // next plain open does not refuse again.
  h.config().drop_damaged_journal = true;
  s = h.TryOpen();
  INFO(s.ToString());
  REQUIRE(s.ok());
  StoreInfo info;
  REQUIRE(h.store().GetInfo(&info).ok());
  CHECK(info.recovery_dropped_damage.find("lost synced records") != std::string::npos);
  CHECK(info.newest_lsn < 7);
  REQUIRE(h.store().Close().ok());
  h.config().drop_damaged_journal = false;
  s = h.TryOpen();
  INFO(s.ToString());
  REQUIRE(s.ok());
  REQUIRE(h.store().Close().ok());
}

TEST_CASE("a torn WAL tail that no completed sync covered is not taken for damage",
          "[journal][recovery]") {
  Harness h(QuietConfig(), 25);
  h.Open();
  for (uint64_t i = 0; i < 4; i++) REQUIRE(h.WriteAt(i * 8192, 4096, true));
  // Unsynced writes after them: lost with the WAL's tail, as a power cut
  // loses them.
  for (uint64_t i = 4; i < 8; i++) REQUIRE(h.WriteAt(i * 8192, 4096, false));
  StoreInfo info;
  REQUIRE(h.store().GetInfo(&info).ok());  // committed, not synced
  h.Kill();
  REQUIRE(h.fs().DropUnsyncedData(nullptr).empty());
  h.fs().ResetState();
  Status s = h.TryOpen();
  INFO(s.ToString());
  REQUIRE(s.ok());
  REQUIRE(h.store().GetInfo(&info).ok());
  CHECK(info.newest_lsn == 4);
  REQUIRE(h.store().Close().ok());
}
