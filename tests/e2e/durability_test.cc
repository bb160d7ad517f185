// Durability under kill -9: many writes in flight on several connections,
// flushes and FUA writes, then SIGKILL to nbdkit in the middle of the load,
// restart on the same store and check a model of what must have survived.
// One kill per round; tests/torture/ runs the same model over thousands of
// kills.  The model (tests/support/crash_model.h): every unit of the region
// must hold its durable value or a later request's (acked or not), never a
// torn, mixed, misplaced or stale one.
#include <libnbd.h>
#include <signal.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "support/crash_model.h"
#include "support/env.h"
#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
struct DurabilityConfig {
  int rounds = 12;
  uint64_t seed = 1;
  // The region and the load.  unit 4096: the 4 KiB blocks of the contract;
  // 512: sectors, so that requests are not page-aligned and several in
  // flight (on different connections) touch disjoint parts of one page.
  RegionConfig region;  // default: 2048 units of 4 KiB at 4 MiB, 32 in flight
  // Starts the server for round r (1..rounds, then rounds+1 and rounds+2
  // for the final checks).
  std::function<std::unique_ptr<NbdServer>(int round)> start;
  // When set (a rewind store), every other durability point is a
  // checkpoint through DIR/control.sock instead of a flush: a checkpoint is
  // durable when acknowledged and covers every write acknowledged before it,
  // so those writes must survive like flushed ones.  After each restart every
  // acknowledged checkpoint must be listed with its LSN.
  std::string store_dir;
};

struct DurabilityResult {
  std::vector<std::string> failures;
  CrashStats stats;
};

DurabilityResult RunDurabilityRounds(const DurabilityConfig& cfg) {
  DurabilityResult res;
  CrashModel m(cfg.region.region_units);
  std::mt19937_64 rng(cfg.seed);
  std::vector<uint64_t> observed;
  std::vector<TakenCheckpoint> taken;
  uint64_t data_issued_at_checkpoint = 0;
  // Every return: the statistics so far and any inconsistency the harness
  // noticed in itself.
  auto finish = [&]() -> DurabilityResult {
    std::lock_guard lock(m.mu);
    for (const auto& e : m.harness_errors) res.failures.push_back("harness: " + e);
    res.stats = m.stats;
    return res;
  };

  auto reset_model = [&](const std::vector<uint64_t>& baseline) { m.Reset(baseline); };

  for (int round = 1; round <= cfg.rounds; ++round) {
    auto server = cfg.start(round);
    auto flusher = NbdClient::Connect(server->socket());
    if (!flusher->CanMultiConn() || !flusher->CanFua() || !flusher->CanFlush()) {
      res.failures.push_back("the export does not advertise multi-conn, FUA and flush");
      return finish();
    }
    // What survived the previous round (the first round: a new, zero disk).
    if (!VerifyRegion(*flusher, m, cfg.region, fmt::format("after the kill in round {}", round - 1),
                      &observed, &res.failures)) {
      return finish();
    }
    if (!cfg.store_dir.empty()) {
      VerifyCheckpoints(cfg.store_dir, taken, fmt::format("after the kill in round {}", round - 1),
                        &res.failures);
      if (!res.failures.empty()) return finish();
    }
    reset_model(observed);
    flusher->Flush();
    m.round = static_cast<uint32_t>(round);
    m.next_seq = 1;

    const int nconn = 1 + round % 3;
    std::vector<std::unique_ptr<NbdClient>> clients;
    for (int i = 0; i < nconn; ++i) clients.push_back(NbdClient::Connect(server->socket()));
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < nconn; ++i) {
      threads.emplace_back(WriterLoop, clients[i].get(), &m, &cfg.region, rng(), &stop, nullptr);
    }
    auto snapshot_acked = [&] { return m.SnapshotAcked(); };
    auto apply_flush = [&](const std::vector<size_t>& acked) {
      m.ApplyDurable(acked);
      std::lock_guard lock(m.mu);
      ++m.stats.flushes;
    };

    std::string error;
    const int nflush = 2 + static_cast<int>(rng() % 4);
    for (int f = 0; f < nflush && error.empty(); ++f) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 40));
      auto acked = snapshot_acked();
      if (!cfg.store_dir.empty() && f % 2 == 1) {
        TakenCheckpoint cp;
        // A write issued after the previous checkpoint was answered has
        // been acknowledged: this checkpoint must have a higher LSN.
        const bool wrote_since = m.NewestAckedData() > data_issued_at_checkpoint;
        if (TakeCheckpoint(cfg.store_dir, fmt::format("r{}-{}", round, f), &cp, &error)) {
          data_issued_at_checkpoint = m.DataIssued();
          apply_flush(acked);
          --m.stats.flushes;
          ++m.stats.checkpoints;
          if (!taken.empty() && wrote_since && cp.lsn <= taken.back().lsn) {
            error = fmt::format(
                "checkpoint {} has lsn {}, not above the previous one's {} though "
                "writes were acknowledged in between",
                cp.name, cp.lsn, taken.back().lsn);
          }
          taken.push_back(cp);
        }
        continue;
      }
      try {
        flusher->Flush();
        apply_flush(acked);
      } catch (const std::exception& e) {
        error = fmt::format("round {}: flush {} failed: {}", round, f + 1, e.what());
      }
    }
    // The kill: after more unflushed writes, or with a flush in flight.
    const int mode = static_cast<int>(rng() % 3);
    if (mode == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10 + rng() % 40));
    } else if (mode == 1) {
      flusher->AioFlush(nullptr);
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    }
    if (!server->Running()) {
      error = fmt::format("round {}: nbdkit ended by itself ({}) before the kill; log:\n{}", round,
                          server->status().ToString(), server->log());
    }
    {
      std::lock_guard lock(m.mu);
      m.stats.unacked_at_kill += m.stats.issued - m.stats.acked - m.stats.failed;
      for (const auto& b : m.units) m.stats.durable_checked += b.durable > 0;
    }
    m.killing = true;
    server->Kill9();
    stop = true;
    for (auto& t : threads) t.join();
    clients.clear();
    flusher.reset();
    ++m.stats.rounds;
    if (!error.empty()) {
      res.failures.push_back(error);
      return finish();
    }
    if (server->status().signal != SIGKILL) {
      res.failures.push_back(fmt::format("round {}: nbdkit ended with {}, not by our SIGKILL",
                                         round, server->status().ToString()));
      return finish();
    }
  }

  // After the last kill: check, then a clean stop and restart must show
  // exactly the same blocks.
  {
    auto server = cfg.start(cfg.rounds + 1);
    auto c = NbdClient::Connect(server->socket());
    if (!VerifyRegion(*c, m, cfg.region, fmt::format("after the kill in round {}", cfg.rounds),
                      &observed, &res.failures)) {
      return finish();
    }
    if (!cfg.store_dir.empty()) {
      VerifyCheckpoints(cfg.store_dir, taken, fmt::format("after the kill in round {}", cfg.rounds),
                        &res.failures);
    }
    reset_model(observed);
    c->Flush();
    c->Shutdown();
    c.reset();
    ExitStatus st = server->Stop();
    if (!st.success()) {
      res.failures.push_back(fmt::format("clean stop after recovery ended with {}; log:\n{}",
                                         st.ToString(), server->log()));
      return finish();
    }
  }
  {
    auto server = cfg.start(cfg.rounds + 2);
    auto c = NbdClient::Connect(server->socket());
    std::vector<uint64_t> again;
    VerifyRegion(*c, m, cfg.region, "after a clean restart", &again, &res.failures);
    if (!cfg.store_dir.empty()) {
      VerifyCheckpoints(cfg.store_dir, taken, "after a clean restart", &res.failures);
    }
  }
  return finish();
}

int RoundsFromEnv(int dflt) { return rwd::test::PositiveIntFromEnv("REWIND_E2E_ROUNDS", dflt); }
uint64_t SeedFromEnv() { return rwd::test::SeedFromEnv("REWIND_E2E_SEED"); }

std::string Report(const DurabilityResult& r) {
  std::string s = r.stats.ToString();
  size_t n = 0;
  for (const auto& f : r.failures) {
    if (++n > 20) {
      s += fmt::format("\n... and {} more", r.failures.size() - 20);
      break;
    }
    s += "\n  " + f;
  }
  return s;
}

void RunAndCheck(const DurabilityConfig& cfg, const std::string& label) {
  INFO("seed " << cfg.seed << " (rerun with REWIND_E2E_SEED=" << cfg.seed << ")");
  double t0 = NowSeconds();
  DurabilityResult r = RunDurabilityRounds(cfg);
  INFO(Report(r));
  std::cerr << label << ": " << r.stats.ToString()
            << fmt::format(" in {:.1f} s (seed {})", NowSeconds() - t0, cfg.seed) << "\n";
  REQUIRE(r.failures.empty());
  // The run did real work: otherwise it proves nothing.
  CHECK(r.stats.rounds == static_cast<uint64_t>(cfg.rounds));
  CHECK(r.stats.acked >= 50u * cfg.rounds);
  CHECK(r.stats.fua_acked > 0);
  CHECK(r.stats.durable_checked > 0);
  CHECK(r.stats.unacked_at_kill > 0);
  if (!cfg.store_dir.empty()) CHECK(r.stats.checkpoints > 0);
}

TEST_CASE("durability: kill -9 under load loses no flushed or FUA write and tears no block",
          "[e2e][crash]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  DurabilityConfig cfg;
  cfg.rounds = RoundsFromEnv(20);
  cfg.seed = SeedFromEnv();
  cfg.start = [&](int round) {
    // A new store in round 1; later rounds alternate between giving the
    // (matching) size and not.
    std::vector<std::string> params = {"dir=" + dir};
    if (round == 1 || round % 2 == 0) params.push_back("size=64M");
    return StartRewind(tmp, params);
  };
  cfg.store_dir = dir;
  RunAndCheck(cfg, "durability");
}

TEST_CASE("durability: kill -9 under load with block-size=64K and an adopted image",
          "[e2e][crash]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  const std::string image = tmp / "adopted.raw";
  REQUIRE(RunProcess({"truncate", "-s", "64M", image}).ok());
  DurabilityConfig cfg;
  cfg.rounds = std::max(4, RoundsFromEnv(20) / 2);
  cfg.seed = SeedFromEnv();
  cfg.start = [&](int round) {
    std::vector<std::string> params = {"dir=" + dir};
    if (round == 1) {
      params.push_back("image=" + image);
      params.push_back("block-size=64K");
    }
    return StartRewind(tmp, params);
  };
  cfg.store_dir = dir;
  RunAndCheck(cfg, "durability (64K blocks, image=)");
}

TEST_CASE(
    "durability: kill -9 under load of 512-byte-aligned requests sharing pages across "
    "connections",
    "[e2e][crash]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  DurabilityConfig cfg;
  cfg.rounds = std::max(4, RoundsFromEnv(20) / 2);
  cfg.seed = SeedFromEnv();
  cfg.region.unit = 512;
  cfg.region.region_units = 2048;  // 1 MiB: 256 pages under 3 x 32 requests in flight
  cfg.region.max_units_per_write = 16;
  cfg.start = [&](int round) {
    std::vector<std::string> params = {"dir=" + dir};
    if (round == 1) params.push_back("size=64M");
    return StartRewind(tmp, params);
  };
  cfg.store_dir = dir;
  RunAndCheck(cfg, "durability (512-byte units)");
}

// Self-checks of the harness above, hidden from the default run: the model
// must accept nbdkit's file plugin (which keeps acknowledged writes in the
// page cache across kill -9) and must catch the memory plugin (which loses
// everything).  Run with: e2e_tests '[harness]'.
TEST_CASE("durability harness: accepts the file plugin, catches the memory plugin",
          "[.][harness]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string image = tmp / "disk.img";
  {
    ProcResult r = RunProcess({"truncate", "-s", "64M", image});
    REQUIRE(r.ok());
  }
  DurabilityConfig cfg;
  cfg.rounds = 4;
  cfg.seed = SeedFromEnv();
  cfg.start = [&](int) {
    NbdServerOptions o;
    o.plugin = "file";
    o.params = {"file=" + image};
    o.workdir = tmp.path();
    return NbdServer::Start(o);
  };
  DurabilityResult good = RunDurabilityRounds(cfg);
  INFO("file plugin: " << Report(good));
  CHECK(good.failures.empty());

  cfg.start = [&](int) {
    return NbdServer::Start(MemoryPluginOptions(tmp.path()));
  };
  DurabilityResult bad = RunDurabilityRounds(cfg);
  INFO("memory plugin: " << Report(bad));
  CHECK_FALSE(bad.failures.empty());
}

}  // namespace
}  // namespace rwd::test
