// Crash torture: kill -9 of nbdkit, again and again, on one rewind store,
// under a random load from several connections (writes, FUA writes,
// flushes, trims, zeroes) and checkpoints through the control socket and
// the CLI.  After every restart:
//   - every unit of the test region holds its durable value or a later
//     request's, never a torn or mixed one (tests/support/crash_model.h);
//   - every acknowledged checkpoint is listed with its LSN, and reading its
//     time-travel export `@NAME` gives, unit by unit, the model's value at
//     the checkpoint: exactly, for a unit with no request in flight across
//     the checkpoint (all of them for a checkpoint taken with the writers
//     paused), else one of the values in flight then;
//   - a checkpoint that was in flight at the kill either is gone or, when
//     listed, reads back the same way.
// Old checkpoints are read again after later kills (round-robin), and
// every few cycles a prune (keep the newest few) keeps the store small, so
// kept checkpoints must survive prunes too.
//
// REWIND_TORTURE_KILLS sets the number of kills (default 200, the short
// variant in `make test`; `make torture` runs 5000), REWIND_TORTURE_SEED
// the seed (printed, so a failure can be replayed).
#include <libnbd.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <random>
#include <thread>

#include "support/crash_model.h"
#include "support/env.h"
#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

struct TortureConfig {
  int kills = 200;
  uint64_t seed = 1;
  // The region (set by the test cases: 1024 units of 4 KiB at 4 MiB, 16
  // requests in flight per writer, 1 in 100 of them a flush).
  RegionConfig region;
  // Starts the server for cycle c (1..kills+2: the last two are the final
  // checks, after a kill and after a clean stop).
  std::function<std::unique_ptr<NbdServer>(int cycle)> start;
  // A rewind store: checkpoints are taken and read back.  Empty: none (a
  // plain NBD server, for the self-check).
  std::string store_dir;
  // Load per cycle, in ms: uniform in [min, max).
  int load_ms_min = 10;
  int load_ms_max = 100;
  int prune_every = 25;      // cycles
  int keep_last = 4;         // checkpoints a prune keeps
  int reread_per_cycle = 1;  // old checkpoints read again per cycle
  // Checkpoints per cycle: uniform in [min, 2] (the self-check asks for at
  // least one, so that its first cycle has a checkpoint to catch).
  int min_checkpoints_per_cycle = 0;
};

struct TortureStats {
  int kills = 0;
  uint64_t checkpoints_acked = 0;
  uint64_t checkpoints_quiesced = 0;
  uint64_t checkpoints_cli = 0;
  uint64_t checkpoints_in_flight_at_kill = 0;
  uint64_t in_flight_answered = 0;            // of those, answered before the kill
  uint64_t in_flight_checkpoints_listed = 0;  // unanswered, found after the restart
  uint64_t checkpoints_verified = 0;          // distinct checkpoints read back
  uint64_t checkpoint_reads = 0;              // exports read back (re-reads too)
  uint64_t checkpoint_units_exact = 0;
  uint64_t checkpoint_units_ambiguous = 0;
  uint64_t flushes_at_kill = 0;  // flushes sent by the checker just before a kill
  uint64_t prunes = 0;
  uint64_t checkpoints_pruned = 0;
  double seconds = 0;
  double slowest_cycle = 0;
  double restart_seconds = 0;  // sum over restarts: spawn until it serves
  double slowest_restart = 0;
  double check_seconds = 0;  // sum over restarts: reading back and checking
  CrashStats model;

  std::string ToString() const {
    const double per = kills > 0 ? 1000.0 / kills : 0.0;
    const double per_restart = 1000.0 / (kills + 1);
    std::string s = fmt::format(
        "{} kills in {:.1f} s ({:.0f} ms per kill cycle, slowest {:.0f} ms; restart {:.0f} ms "
        "and checks {:.0f} ms on average, slowest restart {:.0f} ms)",
        kills, seconds, per * seconds, 1000 * slowest_cycle, per_restart * restart_seconds,
        per_restart * check_seconds, 1000 * slowest_restart);
    s += fmt::format(
        "; {} requests acked: {} writes ({} with FUA), {} zeroes, {} trims, {} flushes; {} "
        "requests cut off by the kills",
        model.acked, model.writes_acked, model.fua_acked, model.zeros_acked, model.trims_acked,
        model.flushes, model.failed);
    s += fmt::format(
        "; {} checkpoints acked ({} with the writers paused, {} through the CLI); {} sent just "
        "before a kill ({} answered before it, {} of the others found after the restart)",
        checkpoints_acked, checkpoints_quiesced, checkpoints_cli, checkpoints_in_flight_at_kill,
        in_flight_answered, in_flight_checkpoints_listed);
    s += fmt::format(
        "; {} checkpoints verified through @NAME in {} reads ({} units exact, {} among values "
        "in flight); {} units checked after restarts ({} newer than durable); {} prunes dropped "
        "{} checkpoints",
        checkpoints_verified, checkpoint_reads, checkpoint_units_exact, checkpoint_units_ambiguous,
        model.units_checked, model.later_value_seen, prunes, checkpoints_pruned);
    return s;
  }
};

struct TortureResult {
  std::vector<std::string> failures;
  TortureStats stats;
};

// A checkpoint the model knows: acknowledged, or found after a restart
// though it was in flight at the kill.
struct CheckpointRecord {
  TakenCheckpoint cp;
  CheckpointCandidates cands;
  int reads = 0;
};

class Torture {
 public:
  explicit Torture(const TortureConfig& cfg)
      : cfg_(cfg), m_(cfg.region.region_units), rng_(cfg.seed) {}

  TortureResult Run() {
    double t0 = NowSeconds();
    try {
      for (int cycle = 1; cycle <= cfg_.kills && res_.failures.empty(); ++cycle) {
        Cycle(cycle);
        // A sign of life in long runs.
        if (cycle % 500 == 0 && cycle < cfg_.kills) {
          std::cerr << fmt::format("torture: {} kills of {} in {:.0f} s, {} violations\n", cycle,
                                   cfg_.kills, NowSeconds() - t0, res_.failures.size());
        }
      }
      if (res_.failures.empty()) Final();
    } catch (const std::exception& e) {
      res_.failures.push_back(fmt::format("after {} kills: {}", res_.stats.kills, e.what()));
    }
    res_.stats.seconds = NowSeconds() - t0;
    std::lock_guard lock(m_.mu);
    for (const auto& e : m_.harness_errors) res_.failures.push_back("harness: " + e);
    res_.stats.model = m_.stats;
    return res_;
  }

 private:
  std::unique_ptr<NbdServer> Start(int cycle) {
    double t = NowSeconds();
    auto s = cfg_.start(cycle);
    double d = NowSeconds() - t;
    res_.stats.restart_seconds += d;
    res_.stats.slowest_restart = std::max(res_.stats.slowest_restart, d);
    return s;
  }

  std::vector<TakenCheckpoint> Acked() const {
    std::vector<TakenCheckpoint> out;
    for (const auto& r : cps_) out.push_back(r.cp);
    return out;
  }

  // Reads checkpoint rec through its export and checks it.
  bool VerifyCheckpoint(const std::string& socket, CheckpointRecord& rec, const std::string& when) {
    NbdClientOptions o;
    o.export_name = "@" + rec.cp.name;
    o.request_allocation = false;
    std::unique_ptr<NbdClient> c;
    try {
      c = NbdClient::Connect(socket, o);
    } catch (const std::exception& e) {
      res_.failures.push_back(
          fmt::format("{}: checkpoint {} (lsn {}): its export does not open: {}", when, rec.cp.name,
                      rec.cp.lsn, e.what()));
      return false;
    }
    if (rec.reads == 0) ++res_.stats.checkpoints_verified;
    ++rec.reads;
    ++res_.stats.checkpoint_reads;
    return VerifyCheckpointRegion(
        *c, rec.cands, cfg_.region,
        fmt::format("{}: checkpoint {} (lsn {})", when, rec.cp.name, rec.cp.lsn),
        &res_.stats.checkpoint_units_exact, &res_.stats.checkpoint_units_ambiguous, &res_.failures);
  }

  // After a restart: the region, the list of checkpoints, the new
  // checkpoints and a few old ones (all of them after a failure in the
  // region, so that a report shows both).  Fills observed.
  bool CheckAfterRestart(NbdServer& server, NbdClient& checker, const std::string& when,
                         std::vector<uint64_t>* observed, bool all_checkpoints) {
    const double t0 = NowSeconds();
    struct AddTime {
      double t0;
      double* sum;
      ~AddTime() { *sum += NowSeconds() - t0; }
    } add_time{t0, &res_.stats.check_seconds};
    if (!VerifyRegion(checker, m_, cfg_.region, when, observed, &res_.failures)) {
      all_checkpoints = true;
    }
    if (cfg_.store_dir.empty()) return res_.failures.empty();
    // A checkpoint in flight at the kill may or may not have been made.
    if (!unknown_.empty()) {
      std::vector<TakenCheckpoint> list;
      std::string error;
      if (!ListCheckpoints(cfg_.store_dir, &list, &error)) {
        res_.failures.push_back(when + ": " + error);
        return false;
      }
      for (auto& rec : unknown_) {
        for (const auto& cp : list) {
          if (cp.name != rec.cp.name) continue;
          rec.cp.lsn = cp.lsn;
          NoteLsn(rec.cp, false, 0);
          ++res_.stats.in_flight_checkpoints_listed;
          cps_.push_back(std::move(rec));
          break;
        }
      }
      unknown_.clear();
    }
    VerifyCheckpoints(cfg_.store_dir, Acked(), when, &res_.failures);
    for (auto& rec : cps_) {
      if (rec.reads == 0 || all_checkpoints) VerifyCheckpoint(server.socket(), rec, when);
    }
    for (int k = 0; k < cfg_.reread_per_cycle && !all_checkpoints && !cps_.empty(); ++k) {
      CheckpointRecord& rec = cps_[reread_pos_++ % cps_.size()];
      VerifyCheckpoint(server.socket(), rec, when);
    }
    return res_.failures.empty();
  }

  // Drops all but the newest keep_last checkpoints (the store may keep
  // more); nobody may have the live disk open.
  void Prune(const std::string& when) {
    nlohmann::json req = {{"v", 1}, {"op", "prune"}, {"keep_last", cfg_.keep_last}};
    std::string line;
    // A connection just closed may not be gone on the server's side yet
    // (busy): try again for up to 10 s.
    for (int attempt = 0; attempt < 2000; ++attempt) {
      line = LineClient::Connect(cfg_.store_dir + "/control.sock")->Request(req.dump());
      if (line.find("\"busy\"") == std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    nlohmann::json resp = nlohmann::json::parse(line, nullptr, false);
    if (resp.is_discarded() || resp.value("ok", false) != true) {
      res_.failures.push_back(when + ": prune failed: " + line);
      return;
    }
    std::vector<std::string> kept;
    for (const auto& cp : resp["result"]["kept"]) kept.push_back(cp.value("name", ""));
    size_t before = cps_.size();
    std::erase_if(cps_, [&](const CheckpointRecord& r) {
      return std::find(kept.begin(), kept.end(), r.cp.name) == kept.end();
    });
    ++res_.stats.prunes;
    res_.stats.checkpoints_pruned += before - cps_.size();
  }

  // Checkpoint LSNs never go backwards, and a checkpoint sent after a write
  // that was issued after the previous checkpoint's answer has a higher LSN.
  void NoteLsn(const TakenCheckpoint& cp, bool wrote_since, int cycle) {
    if (cp.lsn < last_lsn_ || (wrote_since && cp.lsn == last_lsn_)) {
      res_.failures.push_back(
          fmt::format("cycle {}: checkpoint {} has lsn {}, previous checkpoint lsn {}{}", cycle,
                      cp.name, cp.lsn, last_lsn_,
                      wrote_since ? " though a later write was acknowledged in between" : ""));
    }
    last_lsn_ = std::max(last_lsn_, cp.lsn);
    data_issued_at_cp_ = m_.DataIssued();
  }

  // Takes one checkpoint while the writers run (or are paused); returns
  // false on a failure.
  bool TakeOne(LineClient* ctl, int cycle, int k, std::atomic<bool>* pause) {
    const bool quiesce = rng_() % 3 == 0;
    const bool via_cli = rng_() % 8 == 0;
    const std::string name = fmt::format("t{}-{}", cycle, k);
    if (quiesce) {
      *pause = true;
      double deadline = NowSeconds() + 10;
      while (m_.InFlight() > 0 && NowSeconds() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (m_.InFlight() > 0) {
        res_.failures.push_back(
            fmt::format("cycle {}: requests still in flight after 10 s", cycle));
        return false;
      }
    }
    std::vector<size_t> lo = m_.SnapshotAcked();
    const bool wrote_since = m_.NewestAckedData() > data_issued_at_cp_;
    TakenCheckpoint cp;
    std::string error;
    bool ok;
    if (via_cli) {
      ProcResult r = RunCli({"checkpoint", cfg_.store_dir, "--name", name, "--json"});
      nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
      ok = r.ok() && !j.is_discarded() && j.contains("lsn");
      if (ok) cp = TakenCheckpoint{name, j["lsn"].get<uint64_t>()};
      if (!ok) error = r.Describe();
    } else {
      nlohmann::json req = {{"v", 1}, {"op", "checkpoint"}, {"name", name}};
      ok = ParseCheckpointResponse(ctl->Request(req.dump()), name, &cp, &error);
    }
    if (!ok) {
      *pause = false;
      res_.failures.push_back(
          fmt::format("cycle {}: checkpoint {} failed: {}", cycle, name, error));
      return false;
    }
    CheckpointRecord rec{cp, CheckpointCandidates::Capture(m_, lo), 0};
    *pause = false;
    NoteLsn(rec.cp, wrote_since, cycle);
    m_.ApplyDurable(lo);
    ++res_.stats.checkpoints_acked;
    res_.stats.checkpoints_quiesced += quiesce;
    res_.stats.checkpoints_cli += via_cli;
    if (quiesce && rec.cands.exact_units != cfg_.region.region_units) {
      res_.failures.push_back(
          fmt::format("harness: a checkpoint with the writers paused has {} "
                      "exact units of {}",
                      rec.cands.exact_units, cfg_.region.region_units));
    }
    cps_.push_back(std::move(rec));
    return true;
  }

  void Cycle(int cycle) {
    double t0 = NowSeconds();
    auto server = Start(cycle);
    const std::string when = fmt::format("after kill {}", cycle - 1);
    std::vector<uint64_t> observed;
    auto checker = NbdClient::Connect(server->socket());
    if (!CheckAfterRestart(*server, *checker, when, &observed, false)) return;
    if (!cfg_.store_dir.empty() && cycle % cfg_.prune_every == 0 &&
        cps_.size() > static_cast<size_t>(cfg_.keep_last)) {
      checker.reset();
      Prune(when);
      if (!res_.failures.empty()) return;
      checker = NbdClient::Connect(server->socket());
    }
    m_.Reset(observed);
    checker->Flush();  // what was recovered is durable from here on
    m_.round = static_cast<uint32_t>(cycle);
    m_.next_seq = 1;

    // The load.
    const bool multi_conn = checker->CanMultiConn();
    const int nconn = multi_conn ? 2 + static_cast<int>(rng_() % 3) : 1;
    std::vector<std::unique_ptr<NbdClient>> clients;
    for (int i = 0; i < nconn; ++i) clients.push_back(NbdClient::Connect(server->socket()));
    std::unique_ptr<LineClient> ctl;
    if (!cfg_.store_dir.empty()) ctl = LineClient::Connect(cfg_.store_dir + "/control.sock");
    std::atomic<bool> stop{false}, pause{false};
    std::vector<std::thread> threads;
    // On an exception (a control request that fails because nbdkit died,
    // say) the writers still have to be stopped and joined.
    struct StopWriters {
      CrashModel* m;
      NbdServer* server;
      std::atomic<bool>* stop;
      std::vector<std::thread>* threads;
      ~StopWriters() {
        if (threads->empty() || !threads->front().joinable()) return;
        m->killing = true;
        server->Kill9();
        *stop = true;
        for (auto& t : *threads) t.join();
      }
    } stop_writers{&m_, server.get(), &stop, &threads};
    for (int i = 0; i < nconn; ++i) {
      threads.emplace_back(WriterLoop, clients[i].get(), &m_, &cfg_.region, rng_(), &stop, &pause);
    }
    const double load_end =
        NowSeconds() + (cfg_.load_ms_min + rng_() % (cfg_.load_ms_max - cfg_.load_ms_min)) / 1e3;
    const int ncp = cfg_.store_dir.empty()
                        ? 0
                        : std::max(cfg_.min_checkpoints_per_cycle, static_cast<int>(rng_() % 3));
    std::vector<double> at;
    for (int k = 0; k < ncp; ++k)
      at.push_back(NowSeconds() + (load_end - NowSeconds()) * (rng_() % 1000) / 1e3);
    std::sort(at.begin(), at.end());
    bool ok = true;
    for (int k = 0; k < ncp && ok; ++k) {
      double wait = at[k] - NowSeconds();
      if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
      ok = TakeOne(ctl.get(), cycle, k, &pause);
    }
    if (ok) {
      double wait = load_end - NowSeconds();
      if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
    }

    // The kill: under load only, with a flush in flight, or with a
    // checkpoint in flight.
    const int mode = ok ? static_cast<int>(rng_() % 3) : 0;
    std::vector<size_t> lo;
    bool flush_done = false;
    int flush_err = 0;
    std::string cp_name;
    if (mode == 1) {
      lo = m_.SnapshotAcked();
      checker->AioFlush([&](int err) {
        flush_done = true;
        flush_err = err;
      });
      ++res_.stats.flushes_at_kill;
    } else if (mode == 2 && ctl) {
      lo = m_.SnapshotAcked();
      cp_name = fmt::format("t{}-kill", cycle);
      nlohmann::json req = {{"v", 1}, {"op", "checkpoint"}, {"name", cp_name}};
      ctl->Send(req.dump() + "\n");
    }
    if (mode != 0) std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 1000));
    if (!server->Running()) {
      res_.failures.push_back(
          fmt::format("cycle {}: nbdkit ended by itself ({}) before the kill; "
                      "log:\n{}",
                      cycle, server->status().ToString(), server->log()));
    }
    {
      std::lock_guard lock(m_.mu);
      m_.stats.unacked_at_kill += m_.stats.issued - m_.stats.acked - m_.stats.failed;
      for (const auto& u : m_.units) m_.stats.durable_checked += u.durable > 0;
    }
    m_.killing = true;
    server->Kill9();
    stop = true;
    pause = false;
    for (auto& t : threads) t.join();
    ++res_.stats.kills;
    // Replies that arrived before the kill count as acknowledged.
    if (mode == 1) {
      while (checker->InFlight() > 0 && checker->Poll(1000) > 0) {
      }
      if (flush_done && flush_err == 0) {
        m_.ApplyDurable(lo);
        std::lock_guard lock(m_.mu);
        ++m_.stats.flushes;
      }
    } else if (!cp_name.empty()) {
      ++res_.stats.checkpoints_in_flight_at_kill;
      std::optional<std::string> line = ctl->ReadLine(std::chrono::milliseconds(1000));
      CheckpointRecord rec{TakenCheckpoint{cp_name, 0}, CheckpointCandidates::Capture(m_, lo), 0};
      std::string error;
      if (line && ParseCheckpointResponse(*line, cp_name, &rec.cp, &error)) {
        NoteLsn(rec.cp, false, cycle);
        m_.ApplyDurable(lo);
        ++res_.stats.checkpoints_acked;
        ++res_.stats.in_flight_answered;
        cps_.push_back(std::move(rec));
      } else {
        unknown_.push_back(std::move(rec));
      }
    }
    clients.clear();
    checker.reset();
    ++m_.stats.rounds;
    if (res_.failures.empty() && server->status().signal != SIGKILL) {
      res_.failures.push_back(fmt::format("cycle {}: nbdkit ended with {}, not by our SIGKILL",
                                          cycle, server->status().ToString()));
    }
    res_.stats.slowest_cycle = std::max(res_.stats.slowest_cycle, NowSeconds() - t0);
  }

  // After the last kill: everything checked (every checkpoint read), then a
  // clean stop and a restart must show the same.
  void Final() {
    const int cycle = cfg_.kills + 1;
    std::vector<uint64_t> observed;
    {
      auto server = Start(cycle);
      auto checker = NbdClient::Connect(server->socket());
      if (!CheckAfterRestart(*server, *checker, fmt::format("after kill {}", cfg_.kills), &observed,
                             true)) {
        return;
      }
      m_.Reset(observed);
      checker->Flush();
      checker->Shutdown();
      checker.reset();
      ExitStatus st = server->Stop();
      if (!st.success()) {
        res_.failures.push_back(fmt::format("clean stop after recovery ended with {}; log:\n{}",
                                            st.ToString(), server->log()));
        return;
      }
    }
    auto server = Start(cycle + 1);
    auto checker = NbdClient::Connect(server->socket());
    CheckAfterRestart(*server, *checker, "after a clean restart", &observed, true);
  }

  const TortureConfig& cfg_;
  CrashModel m_;
  std::mt19937_64 rng_;
  TortureResult res_;
  std::vector<CheckpointRecord> cps_;      // in the store, oldest first
  std::vector<CheckpointRecord> unknown_;  // in flight at the last kill
  size_t reread_pos_ = 0;
  uint64_t last_lsn_ = 0;           // of the newest checkpoint known
  uint64_t data_issued_at_cp_ = 0;  // m_.DataIssued() when it was answered
};

TortureResult RunTorture(const TortureConfig& cfg) { return Torture(cfg).Run(); }

int KillsFromEnv(int dflt) { return rwd::test::PositiveIntFromEnv("REWIND_TORTURE_KILLS", dflt); }
uint64_t SeedFromEnv() { return rwd::test::SeedFromEnv("REWIND_TORTURE_SEED"); }

std::string Report(const TortureResult& r) {
  std::string s = r.stats.ToString();
  s += fmt::format("; {} violations", r.failures.size());
  // The first 20, and the first 5 about checkpoints if those came later.
  size_t shown = 0, checkpoint_shown = 0;
  for (size_t i = 0; i < r.failures.size(); ++i) {
    const bool about_checkpoint = r.failures[i].find(": checkpoint ") != std::string::npos;
    if (i < 20 || (about_checkpoint && checkpoint_shown < 5)) {
      s += "\n  " + r.failures[i];
      ++shown;
      checkpoint_shown += about_checkpoint;
    }
  }
  if (shown < r.failures.size()) s += fmt::format("\n... and {} more", r.failures.size() - shown);
  return s;
}

TEST_CASE(
    "torture: repeated kill -9 under load from several connections loses no durable "
    "write, tears no block, and every checkpoint reads back exactly",
    "[torture]") {
  RequireNbdkitOrSkip();
  TempDir tmp("rwtort");
  const std::string dir = tmp / "store";
  TortureConfig cfg;
  cfg.kills = KillsFromEnv(200);
  cfg.seed = SeedFromEnv();
  cfg.region.region_units = 1024;
  cfg.region.queue_depth = 16;
  cfg.region.flush_permille = 10;
  cfg.store_dir = dir;
  cfg.start = [&](int cycle) {
    std::vector<std::string> params = {"dir=" + dir};
    if (cycle == 1) params.push_back("size=64M");
    return StartRewind(tmp, params);
  };
  INFO("seed " << cfg.seed << " (rerun with REWIND_TORTURE_SEED=" << cfg.seed << ")");
  TortureResult r = RunTorture(cfg);
  std::cerr << "torture: " << Report(r) << fmt::format(" (seed {})", cfg.seed) << "\n";
  INFO(Report(r));
  REQUIRE(r.failures.empty());
  // The run did real work: otherwise it proves nothing.
  CHECK(r.stats.kills == cfg.kills);
  CHECK(r.stats.model.writes_acked >= 20u * static_cast<uint64_t>(cfg.kills));
  CHECK(r.stats.model.fua_acked > 0);
  CHECK(r.stats.model.zeros_acked > 0);
  CHECK(r.stats.model.trims_acked > 0);
  CHECK(r.stats.model.flushes > 0);
  CHECK(r.stats.model.failed > 0);
  CHECK(r.stats.checkpoints_acked > 0);
  CHECK(r.stats.checkpoints_quiesced > 0);
  CHECK(r.stats.checkpoints_verified > 0);
  CHECK(r.stats.checkpoint_units_exact > 0);
  if (cfg.kills >= 100) {
    CHECK(r.stats.checkpoints_cli > 0);
    CHECK(r.stats.checkpoints_in_flight_at_kill > 0);
    CHECK(r.stats.prunes > 0);
  }
}

// The checker catches what it claims to: a server that loses everything at
// a kill (nbdkit's memory plugin), and checkpoints that miss acknowledged
// writes (rewind behind nbdkit's cache filter in writeback mode, which
// acknowledges writes it keeps in its own cache until a flush: a checkpoint
// taken through the control socket meanwhile does not hold them, and the
// filter serves its cache on every export, the past ones too).
TEST_CASE(
    "torture self-check: catches the memory plugin and checkpoints that miss acknowledged "
    "writes",
    "[torture][selfcheck]") {
  RequireNbdkitOrSkip();
  TempDir tmp("rwtort");
  TortureConfig cfg;
  cfg.kills = 5;
  cfg.seed = SeedFromEnv();
  cfg.region.region_units = 1024;
  cfg.region.queue_depth = 16;
  cfg.region.flush_permille = 10;
  INFO("seed " << cfg.seed);

  cfg.start = [&](int) {
    return NbdServer::Start(MemoryPluginOptions(tmp.path()));
  };
  TortureResult memory = RunTorture(cfg);
  INFO("memory plugin: " << Report(memory));
  REQUIRE_FALSE(memory.failures.empty());
  CHECK(memory.failures[0].find("after kill 1: unit") != std::string::npos);

  const std::string dir = tmp / "store";
  cfg.store_dir = dir;
  cfg.kills = 30;
  // The run stops after its first cycle with a violation, which is nearly
  // always the first: that cycle must have acknowledged checkpoints.
  cfg.min_checkpoints_per_cycle = 2;
  cfg.start = [&](int cycle) {
    NbdServerOptions o = RewindOptions(tmp, {"dir=" + dir, "cache=writeback"});
    if (cycle == 1) o.params.push_back("size=64M");
    o.nbdkit_flags = {"--filter=cache"};
    return NbdServer::Start(o);
  };
  TortureResult cached = RunTorture(cfg);
  INFO("rewind behind the cache filter: " << Report(cached));
  REQUIRE_FALSE(cached.failures.empty());
  bool checkpoint_caught = false;
  for (const auto& f : cached.failures) {
    checkpoint_caught = checkpoint_caught || f.find(": checkpoint t") != std::string::npos;
  }
  CHECK(checkpoint_caught);
}

}  // namespace
}  // namespace rwd::test
