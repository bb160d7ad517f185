// A power cut at every I/O operation, SQLite style (src/test6.c): for each
// scripted scenario, number every mutating I/O it makes on the journal's
// file system (RocksDB's WAL, tables, MANIFEST, directories; the payload
// log) and on the live image, with one IoCounter shared by both doubles
// (tests/support/io_counter.h).  Run the scenario again and again, cutting
// the power at operation 1, 2, ... N: operations before N happen, N and
// every later one fail, then unsynced data is dropped (a random prefix of
// each file's unsynced tail may stay, a random subset of unsynced image
// writes persists, torn at sector granularity) and unsynced directory
// changes are undone.  Stop when a run finishes untouched: N is then the
// number of mutating I/O operations of the scenario.
//
// After each cut the store is reopened (without counting) and checked by
// StoreHarness::Verify: every acknowledged durable write is there, the
// disk is one prefix of the history (no torn or reordered write), every
// acknowledged checkpoint is listed and reads back exactly, nothing
// unasked-for is listed, and Store::Verify finds no damage.
//
// Every scenario starts from the same saved store (writes, trims, two
// checkpoints, all durable), opened without counting; the counted part is
// the operation and the Close that follows it (which syncs and applies
// what the operation left).  Background timers are long (10 s), so the
// numbering does not depend on timing.
//
// REWIND_IOOP_STRIDE=k cuts at 1, 1+k, 1+2k, ... (default 1: every
// operation); `make ioop-crashes` runs the full sweep under a second seed.
#include <catch2/catch.hpp>

#include "support/store_harness.h"

#include <rewind/journal/store.h>

#include <fmt/format.h>
#include <xxhash.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

using rwd::Status;
using rwd::test::EnvU64;
using rwd::test::HarnessConfig;
using rwd::test::IoCounter;
using rwd::test::StoreHarness;

namespace {

constexpr uint64_t kDisk = 1ull << 20;
constexpr uint64_t kKiB = 1024;

HarnessConfig Config() {
  HarnessConfig c{kDisk, 4096, 10'000'000};
  c.image_sync_interval_ms = 10'000;
  c.verify_every = 1;
  c.check_every_checkpoint = true;
  return c;
}

struct Scenario {
  std::string name;
  // Unarmed, on the opened base store (may kill it: then run opens it).
  std::function<void(StoreHarness&)> prepare;
  // Armed: the operation; the harness closes the store after it if open.
  std::function<void(StoreHarness&, IoCounter&)> run;
  std::string note;
};

struct Outcome {
  uint64_t n = 0;           // mutating I/O operations of the untouched run
  uint64_t cuts = 0;        // runs with a cut
  uint64_t acked_cuts = 0;  // of which the operation had been acknowledged
  std::map<std::string, uint64_t> tally;  // the untouched run's operations by kind
};

std::vector<Scenario> Scenarios() {
  std::vector<Scenario> v;
  v.push_back({"write", nullptr, [](StoreHarness& h, IoCounter&) { h.WriteAt(100 * kKiB, 16 * kKiB, false); },
               "a plain write (write-back), then close"});
  v.push_back({"FUA write", nullptr,
               [](StoreHarness& h, IoCounter&) { h.WriteAt(100 * kKiB, 16 * kKiB, true); },
               "acknowledged once durable"});
  v.push_back({"flush", nullptr,
               [](StoreHarness& h, IoCounter&) {
                 h.WriteAt(4 * kKiB, 8 * kKiB, false);
                 h.WriteAt(500 * kKiB, 4 * kKiB, false);
                 h.WriteAt(900 * kKiB, 20 * kKiB, false);
                 h.DoFlush();
               },
               "three plain writes, then a flush"});
  v.push_back({"trim", nullptr,
               [](StoreHarness& h, IoCounter&) { h.ZeroAt(64 * kKiB, 128 * kKiB, true, false); },
               "a trim across written and unwritten blocks"});
  v.push_back({"zero", nullptr,
               [](StoreHarness& h, IoCounter&) { h.ZeroAt(10 * kKiB, 100 * kKiB, false, false); },
               "a zero (no trim), unaligned"});
  v.push_back({"checkpoint", nullptr,
               [](StoreHarness& h, IoCounter&) {
                 h.WriteAt(300 * kKiB, 8 * kKiB, false);
                 h.DoCheckpoint();
               },
               "a plain write, then a checkpoint"});
  v.push_back({"whole-VM checkpoint (store side)", nullptr,
               [](StoreHarness& h, IoCounter&) {
                 h.WriteAt(300 * kKiB, 8 * kKiB, false);
                 h.DoVmCheckpoint();
               },
               "a pending checkpoint of kind vm, then its commit"});
  v.push_back({"rollback", nullptr, [](StoreHarness& h, IoCounter&) { h.DoRollback("base-a"); },
               "to a checkpoint with writes and a trim after it"});
  v.push_back({"restore", nullptr,
               [](StoreHarness& h, IoCounter& counter) {
                 rwd::PointInfo point;
                 REQUIRE(h.store().ResolvePoint("base-a", &point).ok());
                 const std::string out = h.dir() + "-restored.raw";
                 std::filesystem::remove(out);
                 rwd::RestoreOptions o;
                 o.output = out;
                 rwd::RestoreResult r;
                 const uint64_t before = counter.ops();
                 Status s = h.store().Restore(point, o, &r);
                 INFO("restore: " << s.ToString());
                 REQUIRE(s.ok());
                 // It changes nothing in the store: no cut can reach it.
                 CHECK(counter.ops() == before);
                 CHECK(std::filesystem::file_size(out) == kDisk);
               },
               "to a file outside the store (its own I/O is not counted)"});
  v.push_back({"recovery",
               [](StoreHarness& h) {
                 // Durable records the image lacks, and journaled records
                 // not yet synced (a group commit without a sync), then
                 // kill -9: the next Open has work to do.
                 h.WriteAt(0, 64 * kKiB, true);
                 for (int i = 0; i < 70; i++) h.WriteAt(128 * kKiB + i * 4 * kKiB, 4 * kKiB, false);
                 std::this_thread::sleep_for(std::chrono::milliseconds(100));
                 h.Kill();
               },
               [](StoreHarness& h, IoCounter&) {
                 Status s = h.TryOpen();
                 if (!h.Succeeded(s, "open")) return;
                 // What it recovered (checked by reads, which are not
                 // counted) must stay after any later cut.
                 h.Verify("right after recovery");
               },
               "Open after kill -9 with journaled records unsynced and not applied"});
  return v;
}

Outcome RunScenario(StoreHarness& h, const std::shared_ptr<IoCounter>& counter,
                    const Scenario& sc, uint64_t stride) {
  Outcome out;
  for (uint64_t n = 1;; n += stride) {
    INFO("scenario " << sc.name << ": power cut at I/O operation " << n);
    REQUIRE(n < 100000);
    h.LoadBase();
    h.Open();
    if (sc.prepare) sc.prepare(h);
    counter->CutAt(n);
    sc.run(h, *counter);
    if (h.has_store()) h.CloseOrCut();
    const bool cut = counter->cut();
    const uint64_t ops = counter->ops();
    const auto tally = counter->tally();
    INFO("the cut came at " << counter->cut_label());
    h.PowerCut();
    h.Open();
    h.Verify(cut ? "after the cut" : "after the untouched run");
    h.Close();
    if (!cut) {
      out.n = ops;
      out.tally = tally;
      return out;
    }
    out.cuts++;
  }
}

std::string Tally(const std::map<std::string, uint64_t>& t) {
  std::string s;
  for (const auto& [k, v] : t) s += fmt::format("{}{} {}", s.empty() ? "" : ", ", k, v);
  return s;
}

}  // namespace

TEST_CASE("a power cut at every I/O operation of each scenario loses nothing acknowledged",
          "[journal][ioop]") {
  const uint64_t stride = std::max<uint64_t>(1, EnvU64("REWIND_IOOP_STRIDE", 1));
  const uint64_t seed = EnvU64("REWIND_IOOP_SEED", 20240612);
  auto counter = std::make_shared<IoCounter>();
  StoreHarness h(Config(), seed);
  // The starting state: history with two checkpoints, writes and a trim
  // after the first, everything durable.
  h.Open();
  for (int i = 0; i < 12; i++) h.WriteAt((i * 80 * kKiB) % (kDisk - 16 * kKiB), 12 * kKiB, false);
  h.ZeroAt(200 * kKiB, 40 * kKiB, true, false);
  h.DoFlush();
  REQUIRE(h.DoCheckpoint("base-a"));
  for (int i = 0; i < 6; i++) h.WriteAt(50 * kKiB + i * 120 * kKiB, 8 * kKiB, false);
  h.ZeroAt(600 * kKiB, 64 * kKiB, true, false);
  REQUIRE(h.DoCheckpoint("base-b"));
  h.WriteAt(700 * kKiB, 4 * kKiB, false);
  h.Close();
  h.Open();
  h.Verify("the base store");
  h.Close();
  h.SaveBase();
  h.AttachCounter(counter);

  std::vector<std::pair<Scenario, Outcome>> results;
  for (const Scenario& sc : Scenarios()) {
    const auto start = std::chrono::steady_clock::now();
    Outcome o = RunScenario(h, counter, sc, stride);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("ioop scenario '{}': N = {} mutating I/O operations, {} power cuts ({:.1f} s): {}\n",
               sc.name, o.n, o.cuts, secs, Tally(o.tally));
    CHECK(o.n > 0);
    results.emplace_back(sc, o);
  }
  fmt::print("\n| scenario | N | cuts run (stride {}) | operations of the untouched run |\n", stride);
  fmt::print("|---|---|---|---|\n");
  for (const auto& [sc, o] : results) {
    fmt::print("| {} ({}) | {} | {} | {} |\n", sc.name, sc.note, o.n, o.cuts, Tally(o.tally));
  }
  const auto& st = h.stats();
  fmt::print("\nchecked reopens {}, checkpoint contents checked {}, Store::Verify runs {}, "
             "violations 0\n",
             st.reopens_checked, st.checkpoints_checked, st.store_verifies);
}

TEST_CASE("ioop self-check: a disk whose syncs lie loses an acknowledged FUA write, and the check says so",
          "[journal][ioop]") {
  // The checker above is only as good as its ability to fail: with file
  // syncs that report success and make nothing durable, a power cut after
  // a FUA write's acknowledgement must show up as a lost write.
  StoreHarness h(Config(), 99);
  h.Open();
  h.WriteAt(0, 16 * kKiB, true);
  h.Close();
  h.PowerCut();
  h.Open();
  h.Verify("the honest disk");
  h.fs().set_lying_syncs(true);
  REQUIRE(h.WriteAt(64 * kKiB, 16 * kKiB, true));  // acknowledged as durable
  // A power cut that keeps nothing unsynced (PowerCut may keep a random
  // part, which could save the write by luck).
  h.Kill();
  h.fs().set_lying_syncs(false);
  REQUIRE(h.fs().DropUnsyncedData(nullptr).empty());
  REQUIRE(h.fs().DeleteFilesCreatedAfterLastDirSync().empty());
  h.fs().ResetState();
  h.image().DropUnsynced();
  const Status s = h.TryOpen();
  if (s.ok()) {
    std::vector<char> disk = h.ReadAll();
    uint64_t recovered = 0;
    const std::string err = h.model().CheckRecovered(disk.data(), 0, &recovered);
    INFO("what the model says about the lying disk: " << err);
    CHECK_FALSE(err.empty());
    CHECK(err.find("durable") != std::string::npos);
  } else {
    // Or the store cannot even open what the lying disk left: also caught.
    INFO("open: " << s.ToString());
    SUCCEED();
  }
}
