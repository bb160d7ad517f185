// Power-cut tests of the store: a seeded random workload runs against the
// fault-injecting doubles (FaultInjectionFS for the journal, MemImage for
// the live image) while a DiskModel tracks what must survive.  At a random
// moment the power goes: both doubles stop accepting I/O, the store is
// destroyed, unsynced journal bytes are dropped (a random prefix may stay),
// directory changes that were not fsynced are undone, and a random subset
// of unsynced image writes persists, torn at sector granularity.  The
// reopened store must hold, in every sector, its last durable value or a
// later one, as one prefix of the history, and list every acknowledged
// checkpoint.  The workload then continues on the reopened store.
//
// Also: power cuts during and right after recovery (idempotence), and
// injected sync, append and image errors, after which the store must refuse
// writes and still recover everything it acknowledged.
//
// REWIND_POWERCUT_ITERATIONS scales the main loop (default 60 cuts in all);
// REWIND_POWERCUT_SEED picks its seed (default fixed).
#include <catch2/catch.hpp>

#include "support/disk_model.h"
#include "support/fault_fs.h"
#include "support/mem_image.h"
#include "support/proc_util.h"
#include "support/store_harness.h"

#include <rewind/journal/fault_point.h>
#include <rewind/journal/store.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <tuple>

using rwd::Status;
using rwd::Store;
using rwd::StoreOptions;
using rwd::test::DiskModel;
using rwd::test::FaultInjectionFS;
using rwd::test::FsFault;
using rwd::test::MemImage;
using rwd::test::MemImageFactory;

namespace {

using Config = rwd::test::HarnessConfig;
using Harness = rwd::test::StoreHarness;
using rwd::test::EnvU64;

// Totals over every loop of the run, printed by the test case.
rwd::test::HarnessStats g_totals;

void AddStats(const rwd::test::HarnessStats& s) {
  g_totals.power_cuts += s.power_cuts;
  g_totals.kills += s.kills;
  g_totals.reopens_checked += s.reopens_checked;
  g_totals.acked_writes += s.acked_writes;
  g_totals.acked_durable += s.acked_durable;
  g_totals.acked_flushes += s.acked_flushes;
  g_totals.acked_checkpoints += s.acked_checkpoints;
  g_totals.checkpoints_checked += s.checkpoints_checked;
  g_totals.store_verifies += s.store_verifies;
  g_totals.sectors_checked += s.sectors_checked;
}

std::string Describe(const rwd::test::HarnessStats& s) {
  return fmt::format(
      "power cuts {}, kills {}, reopens checked {}, acknowledged writes/zeros/trims {} (made "
      "durable {}), flushes {}, checkpoints acknowledged {}, checkpoint contents checked {}, "
      "Store::Verify runs {}, sectors checked {}, violations 0",
      s.power_cuts, s.kills, s.reopens_checked, s.acked_writes, s.acked_durable, s.acked_flushes,
      s.acked_checkpoints, s.checkpoints_checked, s.store_verifies, s.sectors_checked);
}

// One store through `iterations` cuts.
void PowerCutStore(const Config& cfg, uint64_t seed, int iterations) {
  INFO(fmt::format("seed {} (REWIND_POWERCUT_SEED), size {}, block size {}", seed, cfg.size,
                   cfg.block_size));
  Harness h(cfg, seed);
  h.Open();
  h.Verify("after creation");
  for (int iter = 0; iter < iterations; iter++) {
    INFO("iteration " << iter);
    h.Run(static_cast<int>(h.Rand(120)) + 1);
    if (h.Rand(10) == 0) {
      // A clean close keeps everything.
      h.Close();
      h.PowerCut();
      h.Open();
      h.Verify("after a clean close and reopen");
      h.Run(static_cast<int>(h.Rand(60)) + 1);
    }
    if (h.Rand(8) == 0) {
      // Roll back to an acknowledged checkpoint (the workload goes on after).
      std::vector<std::string> cps = h.AckedCheckpoints();
      if (!cps.empty()) {
        h.DoRollback(cps[h.Rand(cps.size())]);
        h.Run(static_cast<int>(h.Rand(30)));
      }
    }
    if (h.Rand(4) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(h.Rand(30)));
    if (h.Rand(6) == 0) {
      h.Kill();
    } else {
      h.PowerCut();
    }

    switch (h.Rand(5)) {
      case 0: {  // the power fails again inside recovery
        static const char* const kPoints[] = {"recovery.replay", "recovery.before_sync",
                                              "recovery.after_sync"};
        std::string point = kPoints[h.Rand(3)];
        int hit = point == "recovery.replay" ? static_cast<int>(h.Rand(3)) + 1 : 1;
        INFO("power cut at " << point << " hit " << hit);
        auto fired = h.ArmCutAt(point, hit);
        Status s = h.TryOpen();
        h.Disarm();
        if (*fired) {
          INFO("open after a cut inside recovery: " << s.ToString());
          CHECK_FALSE(s.ok());  // recovery could not finish its I/O
          h.PowerCut();         // destroys whatever opened, then cuts
        } else {
          REQUIRE(s.ok());  // nothing to recover: the point was not reached
          h.PowerCut();
        }
        h.Open();
        h.Verify("after a power cut inside recovery");
        break;
      }
      case 1: {  // the power fails again right after recovery
        h.Open();
        h.Verify("after the first reopen");
        h.PowerCut();
        h.Open();
        h.Verify("after a power cut right after recovery (must equal the first reopen)");
        break;
      }
      default:
        h.Open();
        h.Verify("after a power cut");
        break;
    }
  }
  h.Close();
  fmt::print("power-cut loop (size {}, block size {}, seed {}, {} iterations): {}\n", cfg.size,
             cfg.block_size, seed, iterations, Describe(h.stats()));
  std::fflush(stdout);  // a long run shows its progress
  AddStats(h.stats());
}

// A long run starts a fresh store every REWIND_POWERCUT_PER_STORE (100)
// iterations: history, Store::Verify and checkpoint reads grow with a
// store's age, and this keeps the cost of a cut bounded.
void PowerCutLoop(Config cfg, uint64_t seed, int iterations) {
  cfg.verify_every = 8;  // Store::Verify reads the whole history
  const int per_store = static_cast<int>(std::max<uint64_t>(1, EnvU64("REWIND_POWERCUT_PER_STORE", 100)));
  for (int done = 0, round = 0; done < iterations; round++) {
    const int n = std::min(per_store, iterations - done);
    PowerCutStore(cfg, seed + 7919 * static_cast<uint64_t>(round), n);
    done += n;
  }
}

int Iterations(int share_of_60) {
  uint64_t total = EnvU64("REWIND_POWERCUT_ITERATIONS", 60);
  return static_cast<int>(std::max<uint64_t>(1, total * static_cast<uint64_t>(share_of_60) / 60));
}

}  // namespace

TEST_CASE("power cuts at random moments keep every acknowledged write", "[journal][powercut]") {
  const uint64_t seed = EnvU64("REWIND_POWERCUT_SEED", 20240611);
  SECTION("4 KiB blocks, a disk ending in a partial block") {
    PowerCutLoop(Config{(5ull << 20) + 1536, 4096, 2000}, seed, Iterations(30));
  }
  SECTION("512-byte blocks") {
    PowerCutLoop(Config{2ull << 20, 512, 5000}, seed + 1, Iterations(15));
  }
  SECTION("64 KiB blocks, slow background sync") {
    PowerCutLoop(Config{3ull << 20, 64 << 10, 20000}, seed + 2, Iterations(15));
  }
  // Sections run one per pass: the totals are complete after the last.
  fmt::print("power cuts at random moments, all loops so far: {}\n", Describe(g_totals));
  std::fflush(stdout);
}

TEST_CASE("power cuts at each named fault point keep every acknowledged write",
          "[journal][powercut]") {
  // The write, flush, apply, zero and checkpoint points; creation and
  // recovery have their own tests.  The cut happens on whichever thread
  // passes the point (the applier's and syncer's included).
  const uint64_t seed = EnvU64("REWIND_POWERCUT_SEED", 20240611);
  std::vector<std::string> never_reached;
  uint64_t n = 0;
  for (std::string_view p : rwd::AllFaultPoints()) {
    const std::string point(p);
    if (point.starts_with("create.") || point.starts_with("recovery.")) continue;
    if (point.starts_with("rollback.") || point.starts_with("prune.")) continue;  // rollback_test, prune_test
    if (point.ends_with("_pending")) continue;  // pending_checkpoint_test
    for (int hit : {1, 2, 3}) {
      INFO("power cut at " << point << " hit " << hit << ", seed " << seed + n);
      Harness h(Config{2ull << 20, 4096, 5000}, seed + n++);
      h.Open();
      h.Run(10);
      h.DoFlush();
      auto fired = h.ArmCutAt(point, hit);
      // The applier syncs the image once a second: wait for that point.
      const auto min_time =
          std::chrono::milliseconds(point == "apply.after_image_sync" ? 1100 * hit : 0);
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; !*fired; i++) {
        auto elapsed = std::chrono::steady_clock::now() - start;
        if ((i >= 150 && elapsed >= min_time) || elapsed > std::chrono::seconds(10)) break;
        h.Run(1);
      }
      const bool reached = *fired;
      h.PowerCut();
      h.Disarm();
      if (!reached && hit == 1) never_reached.push_back(point);
      h.Open();
      h.Verify(reached ? "after a power cut at the point"
                       : "after a power cut (point not reached)");
      h.Run(30);
      h.DoFlush();
      h.PowerCut();
      h.Open();
      h.Verify("after a second power cut");
    }
  }
  INFO("fault points a workload never passed: " << fmt::format("{}",
                                                               fmt::join(never_reached, ", ")));
  CHECK(never_reached.empty());
}

TEST_CASE("power cuts while the journal memtables flush keep every acknowledged write",
          "[journal][powercut]") {
  // Small memtables and vlog segments, so that RocksDB flushes memtables
  // into table files and the payload log starts new segments while the
  // store runs: the cut lands in or after that.
  const uint64_t seed = EnvU64("REWIND_POWERCUT_SEED", 20240611) + 200;
  INFO("seed " << seed);
  Harness h(Config{8ull << 20, 4096, 2000, 64u << 10, 8u << 20}, seed);
  h.Open();
  uint64_t tag = 1u << 22;
  for (int iter = 0; iter < 2; iter++) {
    INFO("iteration " << iter);
    const int writes = 1100 + static_cast<int>(h.Rand(700));
    std::vector<char> data(64 << 10);
    for (int i = 0; i < writes; i++) {
      uint64_t off = (64 << 10) * h.Rand((8ull << 20) / (64 << 10));
      rwd::test::FillPattern(tag, off, data.size(), data.data());
      h.model().Write(off, data.data(), data.size(),
                      fmt::format("write tag {} [{}, +65536)", tag, off));
      tag++;
      Status s = h.store().Write(off, static_cast<uint32_t>(data.size()), data.data(), false);
      INFO("write: " << s.ToString());
      REQUIRE(s.ok());
      if (i % 40 == 39) h.DoFlush();  // keeps the model's history short
      if (i % 200 == 199) h.DoCheckpoint();
    }
    uint64_t table_files = 0, segments = 0;
    for (const auto& [path, info] : h.fs().Files()) {
      table_files += path.ends_with(".sst");
      segments += path.ends_with(".vlog");
    }
    CHECK(table_files > 0);  // a memtable flush happened
    CHECK(segments > 1);     // the payload log rolled over
    h.PowerCut();
    h.Open();
    h.Verify("after a power cut amid memtable flushes");
  }
  REQUIRE(h.store().Close().ok());
}

// ---- concurrent writers ----

namespace {

void AtomicMax(std::atomic<uint64_t>& a, uint64_t v) {
  uint64_t cur = a.load();
  while (cur < v && !a.compare_exchange_weak(cur, v)) {
  }
}

// One writer thread's share of the disk: its own region, model and floors.
struct Writer {
  uint64_t base = 0, len = 0;
  std::unique_ptr<DiskModel> model;
  std::atomic<uint64_t> returned{0};  // model ops whose call has returned
  std::atomic<uint64_t> floor{0};     // model ops known durable
  std::string error;                  // an unexpected failure, reported by the main thread
};

void WriterLoop(Store* store, Writer* w, std::vector<std::unique_ptr<Writer>>* all,
                std::atomic<uint64_t>* next_tag, const std::atomic<bool>* stop,
                const std::shared_ptr<std::atomic<bool>>& cut, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto rand = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  std::vector<char> data;
  while (!stop->load() && !cut->load()) {
    uint64_t r = rand(100);
    Status s;
    std::vector<uint64_t> snapshot;
    bool durable = false;
    if (r < 80) {
      uint64_t len = 512 + rand(std::min<uint64_t>(w->len, 32 << 10) - 512 + 1);
      if (rand(2)) len = (len + 511) / 512 * 512;
      uint64_t off = rand(w->len - len + 1);
      bool fua = rand(8) == 0;
      uint64_t tag = next_tag->fetch_add(1);
      data.resize(len);
      rwd::test::FillPattern(tag, w->base + off, len, data.data());
      w->model->Write(
          off, data.data(), len,
          fmt::format("write tag {} [{}, +{}){}", tag, w->base + off, len, fua ? " fua" : ""));
      s = store->Write(w->base + off, static_cast<uint32_t>(len), data.data(), fua);
      durable = fua;
    } else if (r < 90) {
      uint64_t len = 1 + rand(64 << 10);
      uint64_t off = rand(w->len - len + 1);
      bool trim = rand(2), fua = rand(4) == 0;
      w->model->Zero(off, len,
                     fmt::format("{} [{}, +{})", trim ? "trim" : "zero", w->base + off, len));
      s = store->Zero(w->base + off, len, fua, trim);
      durable = fua;
    } else {
      // A flush covers every write that returned before it, in any thread.
      for (auto& o : *all) snapshot.push_back(o->returned.load());
      s = store->Flush();
    }
    if (!s.ok()) {
      if (!cut->load()) w->error = "unexpected failure before the power cut: " + s.ToString();
      return;
    }
    w->returned.store(w->model->ops());
    if (durable) AtomicMax(w->floor, w->model->ops());
    for (size_t i = 0; i < snapshot.size(); i++) AtomicMax((*all)[i]->floor, snapshot[i]);
  }
}

}  // namespace

TEST_CASE("power cuts under concurrent writers keep every acknowledged write",
          "[journal][powercut]") {
  // Writers on disjoint regions share the commit queue (group commit); each
  // region's recovered content must be a prefix of its own history, above
  // every floor set by a FUA write, a flush from any thread, or a listed
  // checkpoint (which covers every write that returned before it).
  const uint64_t seed = EnvU64("REWIND_POWERCUT_SEED", 20240611) + 100;
  const int cuts = Iterations(12);
  constexpr int kWriters = 4;
  constexpr uint64_t kRegion = 512 << 10;
  INFO("seed " << seed);
  Harness h(Config{kWriters * kRegion, 4096, 3000}, seed);
  std::vector<std::unique_ptr<Writer>> writers;
  for (int i = 0; i < kWriters; i++) {
    auto w = std::make_unique<Writer>();
    w->base = static_cast<uint64_t>(i) * kRegion;
    w->len = kRegion;
    w->model = std::make_unique<DiskModel>(kRegion, w->base);
    writers.push_back(std::move(w));
  }
  // Checkpoints: name -> (floors per writer, acknowledged).
  std::map<std::string, std::pair<std::vector<uint64_t>, bool>> cps;
  std::atomic<uint64_t> next_tag{1};
  int cp_seq = 0;
  h.Open();
  for (int iter = 0; iter < cuts; iter++) {
    INFO("iteration " << iter);
    std::atomic<bool> stop{false};
    auto cut = h.ArmCutAt("(none)", 1);  // only for the flag
    std::vector<std::thread> threads;
    for (int i = 0; i < kWriters; i++) {
      threads.emplace_back(WriterLoop, &h.store(), writers[i].get(), &writers, &next_tag, &stop,
                           cut, seed * 131 + static_cast<uint64_t>(iter * kWriters + i));
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(5 + h.Rand(60));
    std::string cp_error;
    while (std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::microseconds(h.Rand(4000)));
      std::string name = fmt::format("cc-{}", ++cp_seq);
      std::vector<uint64_t> floors;
      for (auto& w : writers) floors.push_back(w->returned.load());
      cps[name] = {floors, false};
      Status s = h.store().Checkpoint(name, nullptr);
      if (!s.ok()) {
        cp_error = s.ToString();
        break;
      }
      cps[name].second = true;
    }
    // The instant of the cut, while the writers run (the flag first, so that
    // no writer takes the cut's failures for the store's).
    cut->store(true);
    h.images().SetActive(false);
    h.fs().SetActive(false);
    stop.store(true);
    for (auto& t : threads) t.join();
    h.Disarm();
    INFO("checkpoint failed before the cut: " << cp_error);
    REQUIRE(cp_error.empty());
    for (auto& w : writers) {
      INFO(w->error);
      REQUIRE(w->error.empty());
    }
    h.PowerCut();
    h.Open();

    std::vector<rwd::CheckpointInfo> listed;
    REQUIRE(h.store().ListCheckpoints(&listed).ok());
    std::vector<uint64_t> min_ops(kWriters, 0);
    std::set<std::string> names;
    for (const auto& c : listed) {
      INFO("listed checkpoint " << c.name);
      auto it = cps.find(c.name);
      REQUIRE(it != cps.end());
      names.insert(c.name);
      for (int i = 0; i < kWriters; i++) min_ops[i] = std::max(min_ops[i], it->second.first[i]);
    }
    for (auto it = cps.begin(); it != cps.end();) {
      INFO("acknowledged checkpoint " << it->first << " is not listed");
      if (it->second.second) CHECK(names.count(it->first) == 1);
      if (names.count(it->first)) {
        it->second.second = true;
        ++it;
      } else {
        it = cps.erase(it);
      }
    }
    std::vector<char> disk = h.ReadAll();
    for (int i = 0; i < kWriters; i++) {
      Writer& w = *writers[i];
      INFO("writer " << i << " region [" << w.base << ", +" << w.len << ")");
      uint64_t lo = std::max(min_ops[i], w.floor.load());
      uint64_t recovered = 0;
      std::string err = w.model->CheckRecovered(disk.data() + w.base, lo, &recovered);
      INFO(err);
      REQUIRE(err.empty());
      if (std::getenv("REWIND_POWERCUT_VERBOSE")) {
        fmt::print("writer {}: durable {}, floor {}, issued {}, recovered {}\n", i,
                   w.model->durable_ops(), lo, w.model->ops(), recovered);
      }
      // Numbers continue: the lost operations vanish, the rest is durable.
      w.model->Reset(disk.data() + w.base);
      w.returned.store(w.model->ops());
      w.floor.store(w.model->ops());
    }
  }
  REQUIRE(h.store().Close().ok());
}

// ---- injected errors ----

namespace {

// Writes n blocks and flushes; returns with them durable in the model.
void WriteDurable(Harness& h, int n) {
  for (int i = 0; i < n; i++) h.DoWrite(false);
  h.DoFlush();
}

bool IsRefusal(const Status& s) {
  return s.code() == Status::Code::kReadOnly || s.code() == Status::Code::kIOError;
}

// After the store reported a failure: every further write, zero, flush and
// checkpoint fails, and is recorded nowhere.
void RequireRefusing(Harness& h) {
  std::vector<char> data(4096, 'x');
  for (int i = 0; i < 5; i++) {
    Status s = h.store().Write(4096 * static_cast<uint64_t>(i), 4096, data.data(), i % 2 == 0);
    INFO("write after the failure: " << s.ToString() << " (" << s.CodeName() << ")");
    REQUIRE_FALSE(s.ok());
    CHECK(IsRefusal(s));
  }
  Status s = h.store().Zero(0, 8192, true, false);
  INFO("zero after the failure: " << s.ToString());
  REQUIRE_FALSE(s.ok());
  s = h.store().Flush();
  INFO("flush after the failure: " << s.ToString());
  REQUIRE_FALSE(s.ok());
  s = h.store().Checkpoint("after-failure", nullptr);
  INFO("checkpoint after the failure: " << s.ToString());
  REQUIRE_FALSE(s.ok());
  rwd::StoreInfo info;
  REQUIRE(h.store().GetInfo(&info).ok());
  CHECK(info.writes_refused);
  CHECK_FALSE(info.refused_reason.empty());
}

// The faults are cleared, the process dies (with a power cut or without), and the reopened store
// must hold what was acknowledged.
void ReopenAndVerify(Harness& h, bool power_cut) {
  h.fs().ClearFaults();
  if (auto img = h.images().Only()) img->ClearErrors();
  if (power_cut) {
    h.PowerCut();
  } else {
    h.Kill();
  }
  h.Open();
  h.Verify("after reopening a store that refused writes");
  // And it works again.
  h.Run(20);
  h.DoFlush();
}

}  // namespace

TEST_CASE("a failed journal sync makes the store refuse writes", "[journal][powercut]") {
  const bool nospace = GENERATE(false, true);
  const bool persistent = GENERATE(false, true);
  const bool via_fua = GENERATE(false, true);
  const bool power_cut = GENERATE(false, true);
  INFO(fmt::format("nospace {} persistent {} via_fua {} power_cut {}", nospace, persistent, via_fua,
                   power_cut));
  // Background syncs every second only: the flush below meets the fault.
  Harness h(Config{1ull << 20, 4096, 1000000}, 7);
  h.Open();
  WriteDurable(h, 8);
  h.DoWrite(false);  // unsynced when the sync fails
  FsFault f;
  f.kind = nospace ? FsFault::Kind::kNoSpace : FsFault::Kind::kIOError;
  f.times = persistent ? -1 : 1;
  f.path_contains = ".log";
  h.fs().FailSyncs(f);
  if (via_fua) {
    std::vector<char> data(8192);
    rwd::test::FillPattern(1u << 20, 65536, data.size(), data.data());
    h.model().Write(65536, data.data(), data.size(), "fua write meeting the failed sync");
    Status s = h.store().Write(65536, 8192, data.data(), true);
    INFO("fua write with a failing sync: " << s.ToString());
    REQUIRE_FALSE(s.ok());
  } else {
    Status s = h.store().Flush();
    INFO("flush with a failing sync: " << s.ToString());
    REQUIRE_FALSE(s.ok());
  }
  CHECK(h.fs().injected_failures() >= 1);
  RequireRefusing(h);
  ReopenAndVerify(h, power_cut);
}

TEST_CASE("a failed journal append makes the store refuse writes", "[journal][powercut]") {
  const bool nospace = GENERATE(false, true);
  const bool power_cut = GENERATE(false, true);
  // RocksDB's WAL or the payload log.
  const std::string file = GENERATE(std::string(".log"), std::string(".vlog"));
  INFO(fmt::format("nospace {} power_cut {} file {}", nospace, power_cut, file));
  Harness h(Config{1ull << 20, 4096, 1000000}, 8);
  h.Open();
  WriteDurable(h, 8);
  FsFault f;
  f.kind = nospace ? FsFault::Kind::kNoSpace : FsFault::Kind::kIOError;
  f.times = 1;
  f.path_contains = file;
  h.fs().FailWrites(f);
  std::vector<char> data(4096);
  rwd::test::FillPattern(1u << 20, 8192, data.size(), data.data());
  h.model().Write(8192, data.data(), data.size(), "write meeting the failed append");
  // A plain write is acknowledged once ordered (write-back); the flush that
  // would make it durable must fail.
  Status s = h.store().Write(8192, 4096, data.data(), false);
  INFO("write with a failing append: " << s.ToString());
  Status fl = h.store().Flush();
  INFO("flush after it: " << fl.ToString());
  REQUIRE_FALSE(fl.ok());
  CHECK(h.fs().injected_failures() == 1);
  RequireRefusing(h);
  ReopenAndVerify(h, power_cut);
}

TEST_CASE("a failed image write or sync makes the store refuse writes", "[journal][powercut]") {
  const auto op = GENERATE(MemImage::Op::kWrite, MemImage::Op::kSync);
  const int err = GENERATE(EIO, ENOSPC);
  const bool power_cut = GENERATE(false, true);
  INFO(fmt::format("op {} errno {} power_cut {}", op == MemImage::Op::kWrite ? "write" : "sync",
                   err, power_cut));
  Harness h(Config{1ull << 20, 4096, 2000}, 9);
  h.Open();
  WriteDurable(h, 8);
  h.image().InjectError(op, err, 0, -1);
  // The journal is fine, so FUA writes are acknowledged; the applier meets
  // the fault (an image sync is due once a second) and the store must then
  // refuse everything.
  Status s;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int acked = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    auto [off, len] = h.Range(512, 16 << 10);
    std::vector<char> data(len);
    rwd::test::FillPattern((1u << 20) + static_cast<uint64_t>(acked), off, len, data.data());
    h.model().Write(off, data.data(), len,
                    fmt::format("fua write {} while the image fails", acked));
    s = h.store().Write(off, static_cast<uint32_t>(len), data.data(), true);
    if (!s.ok()) break;
    h.model().MarkDurable();
    acked++;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO("first failure after " << acked << " acknowledged writes: " << s.ToString());
  REQUIRE_FALSE(s.ok());
  CHECK(h.image().injected_failures() >= 1);
  RequireRefusing(h);
  ReopenAndVerify(h, power_cut);
}

TEST_CASE("the fault-injection file system drops unsynced data and undoes unsynced renames",
          "[journal][powercut]") {
  // The double is only as good as its model: check it on its own.
  rwd::test::TempDir tmp("rwfs");
  const std::string dir = tmp.path();
  FaultInjectionFS fs;
  rocksdb::IOOptions io;
  auto write_file = [&](const std::string& name, const std::string& a, bool sync,
                        const std::string& b) {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    REQUIRE(fs.NewWritableFile(dir + "/" + name, rocksdb::FileOptions(), &f, nullptr).ok());
    REQUIRE(f->Append(a, io, nullptr).ok());
    if (sync) REQUIRE(f->Sync(io, nullptr).ok());
    REQUIRE(f->Append(b, io, nullptr).ok());
    REQUIRE(f->Close(io, nullptr).ok());
  };
  std::unique_ptr<rocksdb::FSDirectory> d;
  REQUIRE(fs.NewDirectory(dir, io, &d, nullptr).ok());

  write_file("a", "durable", true, "-lost");
  write_file("old", "old content", true, "");
  REQUIRE(d->Fsync(io, nullptr).ok());
  write_file("new", "never dir-synced", true, "");
  write_file("tmp", "replacement", true, "");
  REQUIRE(fs.RenameFile(dir + "/tmp", dir + "/old", io, nullptr).ok());
  REQUIRE(fs.DeleteFile(dir + "/a", io, nullptr).ok());
  CHECK(rwd::test::ReadFile(dir + "/old") == "replacement");

  fs.SetActive(false);
  std::unique_ptr<rocksdb::FSWritableFile> f;
  CHECK_FALSE(fs.NewWritableFile(dir + "/x", rocksdb::FileOptions(), &f, nullptr).ok());
  CHECK_FALSE(fs.DeleteFile(dir + "/old", io, nullptr).ok());
  CHECK_FALSE(d->Fsync(io, nullptr).ok());

  REQUIRE(fs.DropUnsyncedData().empty());
  REQUIRE(fs.DeleteFilesCreatedAfterLastDirSync().empty());
  CHECK(rwd::test::ReadFile(dir + "/a") == "durable");
  CHECK(rwd::test::ReadFile(dir + "/old") == "old content");
  CHECK_FALSE(std::filesystem::exists(dir + "/new"));
  CHECK_FALSE(std::filesystem::exists(dir + "/tmp"));

  // A failed sync leaves the data unsynced.
  fs.SetActive(true);
  fs.ResetState();
  fs.FailSyncs(FsFault{FsFault::Kind::kIOError, 0, 1, ""});
  REQUIRE(fs.NewWritableFile(dir + "/b", rocksdb::FileOptions(), &f, nullptr).ok());
  REQUIRE(f->Append("data", io, nullptr).ok());
  CHECK(f->Sync(io, nullptr).IsIOError());
  REQUIRE(f->Close(io, nullptr).ok());
  CHECK(fs.Files()[dir + "/b"].synced == 0);
}

TEST_CASE("the in-memory image forgets unsynced writes on a power cut", "[journal][powercut]") {
  MemImageFactory factory;
  std::unique_ptr<rwd::ImageFile> f;
  REQUIRE_FALSE(factory.Open("/img", false, 0, &f).ok());
  REQUIRE(factory.Open("/img", true, 1 << 20, &f).ok());
  CHECK(factory.Exists("/img"));
  std::vector<char> a(8192, 'a'), b(8192, 'b'), got(8192);
  REQUIRE(f->WriteV({rwd::IoVec{0, a.data(), 8192}}).ok());
  REQUIRE(f->Sync().ok());
  REQUIRE(f->WriteV({rwd::IoVec{0, b.data(), 8192}}).ok());
  REQUIRE(f->Read(0, 8192, got.data()).ok());
  CHECK(got == b);
  f.reset();
  auto img = factory.Get("/img");
  REQUIRE(img);
  img->DropUnsynced();
  REQUIRE(factory.Open("/img", false, 0, &f).ok());  // the same image again
  REQUIRE(f->Read(0, 8192, got.data()).ok());
  CHECK(got == a);
  // Torn: every sector is an a or a b, never anything else.
  REQUIRE(f->WriteV({rwd::IoVec{0, b.data(), 8192}}).ok());
  std::mt19937_64 rng(3);
  for (int i = 0; i < 20 && img->unsynced_ops() > 0; i++) img->SimulatePowerCut(rng);
  REQUIRE(f->Read(0, 8192, got.data()).ok());
  for (size_t s = 0; s < 16; s++) {
    char c = got[s * 512];
    CHECK((c == 'a' || c == 'b'));
    CHECK(std::all_of(got.begin() + static_cast<long>(s * 512),
                      got.begin() + static_cast<long>(s * 512 + 512),
                      [c](char x) { return x == c; }));
  }
  img->InjectError(MemImage::Op::kSync, ENOSPC, 1, 1);
  CHECK(f->Sync().ok());
  Status s = f->Sync();
  CHECK(s.code() == Status::Code::kNoSpace);
  CHECK(f->Sync().ok());
  img->SetActive(false);
  CHECK_FALSE(f->WriteV({rwd::IoVec{0, a.data(), 512}}).ok());
  CHECK(f->Read(0, 512, got.data()).ok());
  CHECK(img->violations().empty());
}

TEST_CASE("the payload log goes through the fault-injecting file system and a power cut drops its unsynced tail",
          "[journal][powercut]") {
  // The payload log (journal/vlog.cc) opens its segments through
  // StoreOptions::fs, so the double sees its appends and syncs: a group
  // committed but not synced is unsynced there, and the cut takes it.
  Harness h(Config{1ull << 20, 4096, 10'000'000}, 11);
  h.Open();
  h.WriteAt(0, 4096, true);
  // 70 plain writes: the committer journals a group at 64 queued
  // operations, without a sync (the sync interval is 10 s).
  for (int i = 0; i < 70; i++) h.WriteAt(8192 + 4096 * static_cast<uint64_t>(i), 4096, false);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::map<std::string, rwd::test::FaultInjectionFS::FileInfo> unsynced;
  for (const auto& [path, info] : h.fs().Files()) {
    if (path.ends_with(".vlog") && info.size > info.synced) unsynced[path] = info;
  }
  INFO("no payload log segment with unsynced bytes in the double");
  REQUIRE(unsynced.size() == 1);
  h.Kill();
  REQUIRE(h.fs().DropUnsyncedData(nullptr).empty());
  REQUIRE(h.fs().DeleteFilesCreatedAfterLastDirSync().empty());
  h.image().DropUnsynced();
  for (const auto& [path, info] : unsynced) {
    INFO(path);
    CHECK(std::filesystem::file_size(path) == info.synced);
  }
  h.fs().ResetState();
  h.Open();
  h.Verify("after the payload log lost its unsynced tail");  // the FUA write is there
  h.Close();
}
