// Durability under kill -9: many writes in flight on several connections,
// flushes and FUA writes, then SIGKILL to nbdkit in the middle of the load,
// restart on the same store and check a model of what must have survived.
//
// The model.  The test region is a run of units (4 KiB blocks, or 512-byte
// sectors in one variant); every request covers whole units.  No two
// requests touching one unit are ever in flight together, so the requests
// to a unit are totally ordered: history[0] is the unit's value when the
// round started (read back and flushed), history[1..] the writes, trims and
// zeroes issued to it in order.  A unit's entry becomes
//   acked    when its reply arrived without error;
//   durable  when it was a FUA request and was acked, or it was acked
//            before a flush (on any connection: the export advertises
//            multi-conn) or a checkpoint was sent and that was acked.
// After the kill and restart every unit must hold exactly one value from
// history[durable..]: the durable value or a later request's (acked or
// not).  Every written unit carries a header naming its round, sequence
// number and unit number, and its remaining bytes are derived from them, so
// a torn, mixed, misplaced or stale unit is told apart from every
// legitimate value.  Requests in flight on different connections may touch
// disjoint units of one page, so a lost read-modify-write shows up too.
#include <libnbd.h>
#include <signal.h>

#include <atomic>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kMagic = 0x52574E4432453245ull;  // "E2E2DNWR"

// A value of a block: 0 is all zeros, else (round << 32) | seq.
uint64_t ValueOf(uint32_t round, uint32_t seq) { return (uint64_t{round} << 32) | seq; }

std::string ValueName(uint64_t v) {
  if (v == 0) return "zeros";
  return fmt::format("r{}s{}", v >> 32, v & 0xffffffffu);
}

void FillBlock(uint64_t value, uint64_t block, uint8_t* out, size_t unit) {
  uint64_t header[4] = {kMagic, value, block, kMagic ^ value ^ (block * 0x9E3779B97F4A7C15ull)};
  std::memcpy(out, header, sizeof header);
  uint64_t st = value * 0xD1B54A32D192ED03ull ^ block;
  for (size_t i = sizeof header; i < unit; i += 8) {
    uint64_t v = SplitMix64(&st);
    std::memcpy(out + i, &v, 8);
  }
}

struct Classified {
  bool valid = false;
  uint64_t value = 0;
  std::string problem;  // when !valid
};

Classified Classify(const uint8_t* buf, uint64_t block, size_t unit) {
  Classified c;
  if (std::all_of(buf, buf + unit, [](uint8_t b) { return b == 0; })) {
    c.valid = true;
    return c;
  }
  uint64_t header[4];
  std::memcpy(header, buf, sizeof header);
  if (header[0] != kMagic || header[3] != (kMagic ^ header[1] ^ (header[2] * 0x9E3779B97F4A7C15ull))) {
    std::string hex;
    for (int i = 0; i < 32; ++i) hex += fmt::format("{:02x}", buf[i]);
    size_t zeros = static_cast<size_t>(std::count(buf, buf + unit, 0));
    c.problem = fmt::format("neither zeros nor a block this test wrote (torn or garbage): "
                            "first 32 bytes {}, {} zero bytes of {}",
                            hex, zeros, unit);
    return c;
  }
  if (header[2] != block) {
    c.problem = fmt::format("misplaced: holds {} written to block {}", ValueName(header[1]),
                            header[2]);
    return c;
  }
  std::vector<uint8_t> want(unit);
  FillBlock(header[1], block, want.data(), unit);
  if (std::memcmp(want.data(), buf, unit) != 0) {
    c.problem = fmt::format("torn: header says {} but the body differs ({})",
                            ValueName(header[1]), FirstDifference(buf, want.data(), unit, 0));
    return c;
  }
  c.valid = true;
  c.value = header[1];
  return c;
}

struct BlockState {
  std::vector<uint64_t> history;  // [0]: value at the round's start
  std::vector<bool> fua;          // per history entry
  size_t acked = 0;
  size_t durable = 0;
  bool busy = false;
};

struct Stats {
  uint64_t issued = 0;
  uint64_t acked = 0;
  uint64_t failed = 0;  // completed with an error (the kill)
  uint64_t fua_acked = 0;
  uint64_t flushes = 0;
  uint64_t checkpoints = 0;
  uint64_t unacked_at_kill = 0;     // requests in flight when SIGKILL was sent
  uint64_t durable_checked = 0;     // blocks whose durable value is a write of that round
  uint64_t later_value_seen = 0;    // blocks found holding a newer-than-durable value
  uint64_t rounds = 0;

  std::string ToString() const {
    return fmt::format(
        "{} rounds: {} requests issued, {} acked ({} FUA), {} failed by the kill, {} flushes, "
        "{} checkpoints, {} in flight at the kills, {} blocks checked against a durable write of "
        "their round, {} blocks held a value newer than the durable one",
        rounds, issued, acked, fua_acked, failed, flushes, checkpoints, unacked_at_kill,
        durable_checked, later_value_seen);
  }
};

struct Model {
  std::mutex mu;
  std::vector<BlockState> blocks;
  uint32_t round = 0;
  uint32_t next_seq = 1;
  Stats stats;
  std::vector<std::string> harness_errors;
};

struct DurabilityConfig {
  int rounds = 12;
  uint64_t seed = 1;
  uint64_t region_offset = 4 * kMiB;
  // The unit of the model ("block" below): every request covers whole
  // units at unit-aligned offsets, and each unit must hold exactly one
  // value.  4096: the 4 KiB blocks of the contract.  512: sectors, so that
  // requests are not page-aligned and several in flight (on different
  // connections) touch disjoint parts of one page.
  uint32_t unit = 4096;
  uint32_t region_blocks = 2048;  // units; 8 MiB of 4 KiB
  uint32_t max_units_per_write = 4;
  int queue_depth = 32;
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
  Stats stats;
};

// One connection's writer: keeps queue_depth requests in flight to random
// free units of the region (shared with the other connections) until stop
// or the connection dies.
void WriterLoop(NbdClient* client, Model* m, const DurabilityConfig* cfg, uint64_t seed,
                const std::atomic<bool>* stop) {
  const uint64_t unit = cfg->unit;
  const uint32_t lo = 0, hi = cfg->region_blocks;
  std::mt19937_64 rng(seed);
  for (;;) {
    while (!stop->load() && client->InFlight() < cfg->queue_depth) {
      uint32_t op = rng() % 100;  // <4 zero, <7 trim, else write
      uint32_t n = op < 7 ? 1 + (op < 4 ? rng() % 2 : 0)
                          : (rng() % 10 < 6 ? 1 : 1 + rng() % cfg->max_units_per_write);
      bool fua = rng() % 8 == 0;
      uint32_t first = 0;
      uint64_t value = 0;
      std::vector<size_t> idx(n);
      {
        std::lock_guard lock(m->mu);
        bool found = false;
        for (int attempt = 0; attempt < 16 && !found; ++attempt) {
          first = lo + static_cast<uint32_t>(rng() % (hi - lo - n + 1));
          found = true;
          for (uint32_t k = 0; k < n; ++k) found = found && !m->blocks[first + k].busy;
        }
        if (!found) break;
        if (op >= 7) value = ValueOf(m->round, m->next_seq++);
        for (uint32_t k = 0; k < n; ++k) {
          BlockState& b = m->blocks[first + k];
          b.busy = true;
          b.history.push_back(value);
          b.fua.push_back(fua);
          idx[k] = b.history.size() - 1;
        }
        ++m->stats.issued;
      }
      auto done = [m, first, n, idx, fua](int err) {
        std::lock_guard lock(m->mu);
        if (err != 0) {
          ++m->stats.failed;  // stays busy: nothing more goes to these blocks
          return;
        }
        ++m->stats.acked;
        if (fua) ++m->stats.fua_acked;
        for (uint32_t k = 0; k < n; ++k) {
          BlockState& b = m->blocks[first + k];
          if (idx[k] <= b.acked && idx[k] != 0) {
            m->harness_errors.push_back(fmt::format("block {} acked out of order", first + k));
          }
          b.acked = idx[k];
          if (fua) b.durable = std::max(b.durable, idx[k]);
          b.busy = false;
        }
      };
      const uint64_t offset = cfg->region_offset + uint64_t{first} * unit;
      const uint32_t flags = fua ? LIBNBD_CMD_FLAG_FUA : 0;
      int64_t cookie;
      if (op < 4) {
        cookie = client->AioZero(n * unit, offset, flags, done);
      } else if (op < 7) {
        cookie = client->AioTrim(n * unit, offset, flags, done);
      } else {
        std::vector<uint8_t> data(n * unit);
        for (uint32_t k = 0; k < n; ++k) {
          FillBlock(value, first + k, data.data() + k * unit, unit);
        }
        cookie = client->AioPwrite(std::move(data), offset, flags, done);
      }
      if (cookie == -1) return;  // the connection is gone
    }
    if (stop->load() && client->InFlight() == 0) return;
    if (client->Poll(50) == -1) return;
  }
}

// Reads the region back and checks every block against the model.  Fills
// observed with the values found.  Returns false when it found a problem.
bool VerifyRegion(NbdClient& c, Model& m, const DurabilityConfig& cfg, const std::string& when,
                  std::vector<uint64_t>* observed, std::vector<std::string>* failures) {
  const size_t before = failures->size();
  observed->assign(cfg.region_blocks, 0);
  constexpr uint64_t kChunk = 1 * kMiB;
  const uint64_t unit = cfg.unit;
  const uint64_t region_len = uint64_t{cfg.region_blocks} * unit;
  std::vector<uint8_t> buf(kChunk);
  for (uint64_t off = 0; off < region_len; off += kChunk) {
    uint64_t len = std::min(kChunk, region_len - off);
    c.Pread(buf.data(), len, cfg.region_offset + off);
    for (uint64_t i = 0; i < len / unit; ++i) {
      uint32_t block = static_cast<uint32_t>(off / unit + i);
      Classified got = Classify(buf.data() + i * unit, block, unit);
      const BlockState& b = m.blocks[block];
      if (!got.valid) {
        failures->push_back(fmt::format("{}: unit {} (disk offset {}): {}; durable value {}",
                                        when, block, cfg.region_offset + uint64_t{block} * unit,
                                        got.problem, ValueName(b.history[b.durable])));
        continue;
      }
      (*observed)[block] = got.value;
      bool allowed = false;
      for (size_t j = b.durable; j < b.history.size() && !allowed; ++j) {
        allowed = b.history[j] == got.value;
      }
      if (!allowed) {
        std::string hist;
        size_t from = b.history.size() > 12 ? b.history.size() - 12 : 0;
        for (size_t j = from; j < b.history.size(); ++j) {
          hist += fmt::format(" [{}]{}{}{}", j, ValueName(b.history[j]), b.fua[j] ? "/fua" : "",
                              j == b.durable ? "<-durable" : (j == b.acked ? "<-acked" : ""));
        }
        failures->push_back(fmt::format(
            "{}: unit {} (disk offset {}) holds {}, but its durable value is {} (history index "
            "{} of {}, last acked index {}); history:{}",
            when, block, cfg.region_offset + uint64_t{block} * unit, ValueName(got.value),
            ValueName(b.history[b.durable]), b.durable, b.history.size() - 1, b.acked, hist));
      }
      if (got.value != b.history[b.durable]) ++m.stats.later_value_seen;
    }
  }
  // Nothing leaked outside the region.
  for (uint64_t guard : {cfg.region_offset - kMiB, cfg.region_offset + region_len}) {
    c.Pread(buf.data(), kMiB, guard);
    if (!std::all_of(buf.begin(), buf.end(), [](uint8_t x) { return x == 0; })) {
      failures->push_back(fmt::format("{}: the never-written guard range [{}, {}) is not zero",
                                      when, guard, guard + kMiB));
    }
  }
  return failures->size() == before;
}

struct TakenCheckpoint {
  std::string name;
  uint64_t lsn;
};

// Takes a checkpoint through the control socket; false (and *error) when
// it was not acknowledged.
bool TakeCheckpoint(const std::string& store_dir, const std::string& name, TakenCheckpoint* out,
                    std::string* error) {
  try {
    auto ctl = LineClient::Connect(store_dir + "/control.sock");
    nlohmann::json req = {{"v", 1}, {"op", "checkpoint"}, {"name", name}};
    std::string line = ctl->Request(req.dump());
    nlohmann::json resp = nlohmann::json::parse(line, nullptr, false);
    if (resp.is_discarded() || resp.value("ok", false) != true || !resp.contains("result") ||
        !resp["result"].contains("lsn")) {
      *error = "checkpoint " + name + " failed: " + line;
      return false;
    }
    *out = TakenCheckpoint{name, resp["result"]["lsn"].get<uint64_t>()};
    return true;
  } catch (const std::exception& e) {
    *error = "checkpoint " + name + " failed: " + e.what();
    return false;
  }
}

// Every acknowledged checkpoint is listed, in order, with its LSN.
void VerifyCheckpoints(const std::string& store_dir, const std::vector<TakenCheckpoint>& taken,
                       const std::string& when, std::vector<std::string>* failures) {
  nlohmann::json list;
  try {
    auto ctl = LineClient::Connect(store_dir + "/control.sock");
    std::string line = ctl->Request(R"({"v": 1, "op": "list"})");
    nlohmann::json resp = nlohmann::json::parse(line, nullptr, false);
    if (resp.is_discarded() || resp.value("ok", false) != true) {
      failures->push_back(when + ": list failed: " + line);
      return;
    }
    list = resp["result"]["checkpoints"];
  } catch (const std::exception& e) {
    failures->push_back(when + ": list failed: " + e.what());
    return;
  }
  size_t pos = 0;
  uint64_t prev_lsn = 0;
  for (const auto& cp : list) {
    uint64_t lsn = cp.value("lsn", uint64_t{0});
    if (lsn < prev_lsn) {
      failures->push_back(fmt::format("{}: checkpoint LSNs go backwards: {}", when, list.dump()));
    }
    prev_lsn = lsn;
    if (pos < taken.size() && cp.value("name", "") == taken[pos].name) {
      if (lsn != taken[pos].lsn) {
        failures->push_back(fmt::format("{}: checkpoint {} was acknowledged with lsn {} but is "
                                        "listed with lsn {}",
                                        when, taken[pos].name, taken[pos].lsn, lsn));
      }
      ++pos;
    }
  }
  if (pos < taken.size()) {
    failures->push_back(fmt::format("{}: acknowledged checkpoint {} (lsn {}) is missing; list: {}",
                                    when, taken[pos].name, taken[pos].lsn, list.dump()));
  }
}

DurabilityResult RunDurabilityRounds(const DurabilityConfig& cfg) {
  DurabilityResult res;
  Model m;
  m.blocks.resize(cfg.region_blocks);
  for (auto& b : m.blocks) {
    b.history = {0};
    b.fua = {false};
  }
  std::mt19937_64 rng(cfg.seed);
  std::vector<uint64_t> observed;
  std::vector<TakenCheckpoint> taken;
  // Every return: the statistics so far and any inconsistency the harness
  // noticed in itself.
  auto finish = [&]() -> DurabilityResult {
    std::lock_guard lock(m.mu);
    for (const auto& e : m.harness_errors) res.failures.push_back("harness: " + e);
    res.stats = m.stats;
    return res;
  };

  auto reset_model = [&](const std::vector<uint64_t>& baseline) {
    for (uint32_t i = 0; i < cfg.region_blocks; ++i) {
      m.blocks[i] = BlockState{{baseline[i]}, {false}, 0, 0, false};
    }
  };

  for (int round = 1; round <= cfg.rounds; ++round) {
    auto server = cfg.start(round);
    auto flusher = NbdClient::Connect(server->socket());
    if (!flusher->CanMultiConn() || !flusher->CanFua() || !flusher->CanFlush()) {
      res.failures.push_back("the export does not advertise multi-conn, FUA and flush");
      return finish();
    }
    // What survived the previous round (the first round: a new, zero disk).
    if (!VerifyRegion(*flusher, m, cfg, fmt::format("after the kill in round {}", round - 1),
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
      threads.emplace_back(WriterLoop, clients[i].get(), &m, &cfg, rng(), &stop);
    }
    auto snapshot_acked = [&] {
      std::vector<size_t> acked(cfg.region_blocks);
      std::lock_guard lock(m.mu);
      for (uint32_t i = 0; i < cfg.region_blocks; ++i) acked[i] = m.blocks[i].acked;
      return acked;
    };
    auto apply_flush = [&](const std::vector<size_t>& acked) {
      std::lock_guard lock(m.mu);
      for (uint32_t i = 0; i < cfg.region_blocks; ++i) {
        m.blocks[i].durable = std::max(m.blocks[i].durable, acked[i]);
      }
      ++m.stats.flushes;
    };

    std::string error;
    const int nflush = 2 + static_cast<int>(rng() % 4);
    for (int f = 0; f < nflush && error.empty(); ++f) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 40));
      auto acked = snapshot_acked();
      if (!cfg.store_dir.empty() && f % 2 == 1) {
        TakenCheckpoint cp;
        if (TakeCheckpoint(cfg.store_dir, fmt::format("r{}-{}", round, f), &cp, &error)) {
          apply_flush(acked);
          --m.stats.flushes;
          ++m.stats.checkpoints;
          if (!taken.empty() && cp.lsn <= taken.back().lsn) {
            error = fmt::format("checkpoint {} has lsn {}, not above the previous one's {} though "
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
      for (const auto& b : m.blocks) m.stats.durable_checked += b.durable > 0;
    }
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
      res.failures.push_back(fmt::format("round {}: nbdkit ended with {}, not by our SIGKILL", round,
                                         server->status().ToString()));
      return finish();
    }
  }

  // After the last kill: check, then a clean stop and restart must show
  // exactly the same blocks.
  {
    auto server = cfg.start(cfg.rounds + 1);
    auto c = NbdClient::Connect(server->socket());
    if (!VerifyRegion(*c, m, cfg, fmt::format("after the kill in round {}", cfg.rounds), &observed,
                      &res.failures)) {
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
    VerifyRegion(*c, m, cfg, "after a clean restart", &again, &res.failures);
    if (!cfg.store_dir.empty()) {
      VerifyCheckpoints(cfg.store_dir, taken, "after a clean restart", &res.failures);
    }
  }
  return finish();
}

int RoundsFromEnv(int dflt) {
  const char* e = std::getenv("REWIND_E2E_ROUNDS");
  return e != nullptr && std::atoi(e) > 0 ? std::atoi(e) : dflt;
}

uint64_t SeedFromEnv() {
  const char* e = std::getenv("REWIND_E2E_SEED");
  if (e != nullptr) return std::strtoull(e, nullptr, 0);
  return std::random_device{}();
}

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

TEST_CASE("durability: kill -9 under load of 512-byte-aligned requests sharing pages across "
          "connections",
          "[e2e][crash]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  DurabilityConfig cfg;
  cfg.rounds = std::max(4, RoundsFromEnv(20) / 2);
  cfg.seed = SeedFromEnv();
  cfg.unit = 512;
  cfg.region_blocks = 2048;  // 1 MiB: 256 pages under 3 x 32 requests in flight
  cfg.max_units_per_write = 16;
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
    NbdServerOptions o;
    o.plugin = "memory";
    o.params = {"size=64M"};
    o.workdir = tmp.path();
    return NbdServer::Start(o);
  };
  DurabilityResult bad = RunDurabilityRounds(cfg);
  INFO("memory plugin: " << Report(bad));
  CHECK_FALSE(bad.failures.empty());
}

}  // namespace
}  // namespace rwd::test
