// `rewind verify` on a store that crashed with a damaged payload in the part
// of its journal a sync covered (docs/journal-format.md, "Recovery and the
// recovery cut"): recovery refuses to cut the journal there and verify fails
// with that one line, changing nothing; `--drop-damaged-journal` cuts it
// there, says how many records it dropped, and verify then reports the live
// image that still holds a dropped write; the cut is durable.  Without
// damage, `--drop-damaged-journal` says there was none to drop, and on a
// store the plugin serves (its journal opened whole) that nothing was.
#include <rewind/journal/store.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli_util.h"
#include "support/nbd_rewind.h"
#include "support/patterns.h"
#include "support/proc_util.h"
#include "support/store_files.h"

namespace rwd::test {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kBlock = 4096;

std::vector<std::string> Segments(const std::string& dir) {
  return rwd::test::FilesIn(dir, "vlog", ".vlog");
}

// A payload byte (Pattern has no zeros), not padding, flipped.
void FlipByte(const std::string& path, uint64_t offset) {
  REQUIRE(ReadFile(path).at(offset) != 0);
  rwd::test::FlipByte(path, offset);
}

constexpr const char* kCrashChildName = "recovery damage: the crashing writer (child process)";

// A store in dir whose journal holds, above applied_lsn, writes that were
// acknowledged as durable and that a crash left behind:
//   LSN 1: block 0 = A, written and closed cleanly (applied_lsn 1);
//   LSN 2: block 0 = B, FUA;  LSN 3: block 2 = C, FUA;
// by a process that saw both in the live image and then died without
// closing the store.  LSN 2's payload is the first bytes of the crashed
// run's segment (each Open starts a new one; block 0 was saved in this
// epoch by LSN 1, so LSN 2 has no before-image).  Returns that segment.
std::string MakeCrashedStore(const std::string& dir) {
  {
    ProcResult r = Rewind({"create", dir, "--size", "1M"});
    INFO(r.Describe());
    REQUIRE(r.ok());
  }
  {
    const std::vector<uint8_t> a = Pattern(kBlock, 1);
    StoreOptions o;
    o.dir = dir;
    o.create_if_missing = false;
    std::unique_ptr<Store> store;
    REQUIRE(Store::Open(o, &store).ok());
    REQUIRE(store->Write(0, kBlock, a.data(), true).ok());
    REQUIRE(store->Close().ok());
  }
  const std::vector<std::string> before = Segments(dir);
  REQUIRE(before.size() == 1);
  // The crash in a child process: this binary again, exec'd, not a bare
  // fork of this one, whose RocksDB threads make a forked child unsafe
  // (TSan refuses it; ASan's allocator lock can be held for ever).
  const std::string out_file = dir + ".crash-child.out";
  const ExitStatus st = RunSelfAsChild(kCrashChildName, {{"REWIND_CLI_CRASH_DIR", dir}},
                                       "REWIND_CLI_CRASH_", out_file, std::chrono::seconds(60));
  INFO("crash child: " << st.ToString() << "\n" << ReadFile(out_file));
  REQUIRE(st.exited);
  REQUIRE(st.code == 0);
  const std::vector<std::string> after = Segments(dir);
  REQUIRE(after.size() == 2);
  REQUIRE(after[0] == before[0]);
  REQUIRE(fs::file_size(after[1]) >= 2 * kBlock);
  return after[1];
}

std::string Escaped(const std::string& s) {
  return std::regex_replace(s, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)");
}

// What verify prints for this store once the journal lost LSN 2 and 3: the
// image still holds B at block 0, where the newest write left is A.
void CheckImageDamageReport(const ProcResult& r, const std::string& dir) {
  CHECK(r.status.exited);
  CHECK(r.status.code == 1);
  const std::vector<std::string> out = NonEmptyLines(r.out);
  REQUIRE(out.size() == 2);
  CHECK(std::regex_match(out[0], std::regex(R"(.*: 1 problem)")));
  CHECK(out[1] == "  the live image at offset 0 does not hold the bytes of the newest write to it");
  CHECK(r.err.find("rewind: verify: store " + dir + " is damaged: 1 problem\n") != std::string::npos);
}

TEST_CASE("verify refuses a crashed store whose synced journal has a damaged payload, and "
          "--drop-damaged-journal cuts it there, durably",
          "[cli][recovery]") {
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  const std::string seg = MakeCrashedStore(dir);
  FlipByte(seg, 100);  // inside LSN 2's payload

  // Plain verify: recovery refuses, one line, and nothing changes: the
  // second run gives the same answer.
  const std::string refusal =
      "rewind: verify: recovery cannot replay the journal of " + dir +
      ": redo record 2: payload fails its hash; the journal was synced through LSN 3, so this is "
      "damage, not the torn tail of a crash, and cutting the journal at LSN 2 would drop "
      "acknowledged writes (rewind verify " + dir + " --drop-damaged-journal cuts it there)\n";
  ProcResult first = Rewind({"verify", dir});
  {
    INFO(first.Describe());
    CheckOneLineError(first, "verify");
    CHECK(first.status.code == 1);
    CHECK(first.out.empty());
    CHECK(first.err == refusal);
  }
  ProcResult second = Rewind({"verify", dir});
  {
    INFO(second.Describe());
    CHECK(second.status.code == first.status.code);
    CHECK(second.out == first.out);
    CHECK(second.err == first.err);
  }

  // Asked to, recovery cuts at LSN 2 (LSN 2 and 3 dropped: the refusals
  // above cut nothing) and says so; verify then finds block 0 of the image
  // holding B, which the journal no longer has.
  ProcResult dropped = Rewind({"verify", dir, "--drop-damaged-journal"});
  {
    INFO(dropped.Describe());
    const std::vector<std::string> err = NonEmptyLines(dropped.err);
    REQUIRE(err.size() == 2);
    CHECK(err[0] ==
          "rewind: redo record 2: payload fails its hash: the journal, synced through LSN 3, was "
          "cut at LSN 2 as asked (drop_damaged_journal); 2 redo records dropped from the journal");
    CheckImageDamageReport(dropped, dir);
  }

  // The cut is durable: a plain open now succeeds, the journal ends at
  // LSN 1, and verify reports the same image damage and nothing else.
  ProcResult again = Rewind({"verify", dir});
  {
    INFO(again.Describe());
    CheckOneLineError(again, "verify");
    CheckImageDamageReport(again, dir);
  }
  ProcResult info = Rewind({"info", dir, "--json"});
  {
    INFO(info.Describe());
    REQUIRE(info.ok());
    nlohmann::json j = nlohmann::json::parse(info.out);
    CHECK(j.at("newest_lsn") == 1);
    CHECK(j.at("redo_records") == 1);
  }
  // --drop-damaged-journal on the store that was cut finds nothing more.
  ProcResult twice = Rewind({"verify", dir, "--drop-damaged-journal"});
  {
    INFO(twice.Describe());
    CHECK(std::regex_search(twice.err, std::regex("^rewind: recovery found no damage to drop in " +
                                                  Escaped(dir) + "\n")));
    CheckImageDamageReport(twice, dir);
  }
}

TEST_CASE("verify --drop-damaged-journal on a crashed store without damage drops nothing",
          "[cli][recovery]") {
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  (void)MakeCrashedStore(dir);
  ProcResult r = Rewind({"verify", dir, "--drop-damaged-journal"});
  INFO(r.Describe());
  CHECK(r.ok());
  CHECK(r.err == "rewind: recovery found no damage to drop in " + dir + "\n");
  const std::vector<std::string> out = NonEmptyLines(r.out);
  REQUIRE(out.size() == 1);
  CHECK(std::regex_match(out[0], std::regex(R"(.*: clean)")));
  // Recovery replayed LSN 2 and 3 and kept them.
  ProcResult info = Rewind({"info", dir, "--json"});
  REQUIRE(info.ok());
  CHECK(nlohmann::json::parse(info.out).at("newest_lsn") == 3);
}

TEST_CASE("verify --drop-damaged-journal on a store the plugin serves drops nothing and verifies it",
          "[cli][recovery]") {
  RequireNbdkitOrSkip();
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=16M"});
  auto c = NbdClient::Connect(server->socket());
  const auto data = Pattern(4 * kBlock, 5);
  c->Pwrite(data, 8 * kBlock, LIBNBD_CMD_FLAG_FUA);
  ProcResult r = Rewind({"verify", dir, "--drop-damaged-journal"});
  INFO(r.Describe());
  CHECK(r.ok());
  CHECK(r.err == "rewind: the plugin serves " + dir +
                     ", so its journal opened whole: nothing was dropped\n");
  const std::vector<std::string> out = NonEmptyLines(r.out);
  REQUIRE(out.size() == 1);
  CHECK(std::regex_match(out[0], std::regex(R"(.*: clean)")));
  // The plugin went on serving, with its journal whole.
  REQUIRE(server->Running());
  CHECK(c->Pread(data.size(), 8 * kBlock) == data);
  ProcResult info = Rewind({"info", dir, "--json"});
  REQUIRE(info.ok());
  CHECK(nlohmann::json::parse(info.out).at("newest_lsn") == 1);
  c.reset();
  CHECK(server->Stop().success());
}

// The crash of MakeCrashedStore, run only as its child process (hidden):
// LSN 2 and 3 written with FUA and applied to the live image, then an
// exit without closing the store, as kill -9 would leave it.
TEST_CASE(kCrashChildName, "[.cli-crash-child]") {
  const char* dir = std::getenv("REWIND_CLI_CRASH_DIR");
  REQUIRE(dir != nullptr);
  const std::vector<uint8_t> b = Pattern(kBlock, 2), c = Pattern(kBlock, 3);
  StoreOptions o;
  o.dir = dir;
  o.create_if_missing = false;
  o.image_sync_interval_ms = 60'000;  // no image sync: applied_lsn stays 1
  std::unique_ptr<Store> crashing;
  REQUIRE(Store::Open(o, &crashing).ok());
  REQUIRE(crashing->Write(0, kBlock, b.data(), true).ok());
  REQUIRE(crashing->Write(2 * kBlock, kBlock, c.data(), true).ok());
  // Extents waits until the applier has put every write into the image.
  REQUIRE(crashing->Extents(0, crashing->size(), [](uint64_t, uint64_t, bool) {}).ok());
  std::fflush(nullptr);
  _exit(0);  // as kill -9 would: no Close
}

}  // namespace
}  // namespace rwd::test
