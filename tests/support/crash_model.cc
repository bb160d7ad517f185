#include "support/crash_model.h"

#include <libnbd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "support/patterns.h"

namespace rwd::test {

namespace {

constexpr uint64_t kMagic = 0x52574E4432453245ull;  // "E2E2DNWR"
constexpr uint64_t kMiB = 1024 * 1024;

}  // namespace

// ------------------------------------------------------------- unit values

uint64_t UnitValue(uint32_t round, uint32_t seq) { return (uint64_t{round} << 32) | seq; }

std::string UnitValueName(uint64_t v) {
  if (v == 0) return "zeros";
  return fmt::format("r{}s{}", v >> 32, v & 0xffffffffu);
}

void FillUnit(uint64_t value, uint64_t unit_index, uint8_t* out, size_t len) {
  uint64_t header[4] = {kMagic, value, unit_index,
                        kMagic ^ value ^ (unit_index * 0x9E3779B97F4A7C15ull)};
  std::memcpy(out, header, sizeof header);
  uint64_t st = value * 0xD1B54A32D192ED03ull ^ unit_index;
  for (size_t i = sizeof header; i < len; i += 8) {
    uint64_t v = SplitMix64(&st);
    std::memcpy(out + i, &v, 8);
  }
}

ClassifiedUnit ClassifyUnit(const uint8_t* buf, uint64_t unit_index, size_t len) {
  ClassifiedUnit c;
  if (std::all_of(buf, buf + len, [](uint8_t b) { return b == 0; })) {
    c.valid = true;
    return c;
  }
  uint64_t header[4];
  std::memcpy(header, buf, sizeof header);
  if (header[0] != kMagic ||
      header[3] != (kMagic ^ header[1] ^ (header[2] * 0x9E3779B97F4A7C15ull))) {
    std::string hex;
    for (int i = 0; i < 32; ++i) hex += fmt::format("{:02x}", buf[i]);
    size_t zeros = static_cast<size_t>(std::count(buf, buf + len, 0));
    c.problem = fmt::format(
        "neither zeros nor a unit this test wrote (torn or garbage): first 32 bytes {}, {} zero "
        "bytes of {}",
        hex, zeros, len);
    return c;
  }
  if (header[2] != unit_index) {
    c.problem =
        fmt::format("misplaced: holds {} written to unit {}", UnitValueName(header[1]), header[2]);
    return c;
  }
  std::vector<uint8_t> want(len);
  FillUnit(header[1], unit_index, want.data(), len);
  if (std::memcmp(want.data(), buf, len) != 0) {
    c.problem = fmt::format("torn: header says {} but the body differs ({})",
                            UnitValueName(header[1]), FirstDifference(buf, want.data(), len, 0));
    return c;
  }
  c.valid = true;
  c.value = header[1];
  return c;
}

// ------------------------------------------------------------------ model

std::string CrashStats::ToString() const {
  return fmt::format(
      "{} rounds: {} requests issued, {} acked ({} FUA), {} failed by the kill, {} flushes, "
      "{} checkpoints, {} in flight at the kills, {} blocks checked against a durable write of "
      "their round, {} blocks held a value newer than the durable one",
      rounds, issued, acked, fua_acked, failed, flushes, checkpoints, unacked_at_kill,
      durable_checked, later_value_seen);
}

CrashModel::CrashModel(uint32_t region_units) {
  units.resize(region_units);
  for (auto& u : units) {
    u.history = {0};
    u.fua = {false};
  }
}

void CrashModel::Reset(const std::vector<uint64_t>& baseline) {
  std::lock_guard lock(mu);
  for (size_t i = 0; i < units.size(); ++i)
    units[i] = UnitState{{baseline[i]}, {false}, 0, 0, false};
  killing = false;
}

std::vector<size_t> CrashModel::SnapshotAcked() {
  std::lock_guard lock(mu);
  std::vector<size_t> acked(units.size());
  for (size_t i = 0; i < units.size(); ++i) acked[i] = units[i].acked;
  return acked;
}

void CrashModel::ApplyDurable(const std::vector<size_t>& acked) {
  std::lock_guard lock(mu);
  for (size_t i = 0; i < units.size(); ++i) {
    units[i].durable = std::max(units[i].durable, acked[i]);
  }
}

uint64_t CrashModel::InFlight() {
  std::lock_guard lock(mu);
  return stats.issued - stats.acked - stats.failed;
}

uint64_t CrashModel::DataIssued() {
  std::lock_guard lock(mu);
  return data_issued;
}

uint64_t CrashModel::NewestAckedData() {
  std::lock_guard lock(mu);
  return newest_acked_data;
}

void CrashModel::RecordUnexpectedError(const std::string& what, int err) {
  // Called with mu held.
  harness_errors.push_back(fmt::format("round {}: {} failed before the kill: {} ({})", round, what,
                                       std::strerror(err), err));
}

void WriterLoop(NbdClient* client, CrashModel* m, const RegionConfig* cfg, uint64_t seed,
                const std::atomic<bool>* stop, const std::atomic<bool>* pause) {
  const uint64_t unit = cfg->unit;
  const uint32_t hi = cfg->region_units;
  std::mt19937_64 rng(seed);
  for (;;) {
    while (!stop->load() && (pause == nullptr || !pause->load()) &&
           client->InFlight() < cfg->queue_depth) {
      if (cfg->flush_permille > 0 && rng() % 1000 < cfg->flush_permille) {
        std::vector<size_t> acked;
        {
          // pause is checked under mu so that a pause seen by InFlight()
          // == 0 is never overtaken by a request issued after it.
          std::lock_guard lock(m->mu);
          if (pause != nullptr && pause->load()) break;
          acked.resize(m->units.size());
          for (size_t i = 0; i < acked.size(); ++i) acked[i] = m->units[i].acked;
          ++m->stats.issued;
        }
        auto done = [m, acked = std::move(acked)](int err) {
          if (err == 0) m->ApplyDurable(acked);
          std::lock_guard lock(m->mu);
          if (err != 0) {
            ++m->stats.failed;
            ++m->stats.flushes_failed;
            if (!m->killing) m->RecordUnexpectedError("a flush", err);
            return;
          }
          ++m->stats.acked;
          ++m->stats.flushes;
        };
        if (client->AioFlush(done) == -1) {
          std::lock_guard lock(m->mu);
          ++m->stats.failed;  // never sent: the connection is gone
          return;
        }
        continue;
      }
      uint32_t op = rng() % 100;  // <4 zero, <7 trim, else write
      uint32_t n = op < 7 ? 1 + (op < 4 ? rng() % 2 : 0)
                          : (rng() % 10 < 6 ? 1 : 1 + rng() % cfg->max_units_per_write);
      bool fua = rng() % 8 == 0;
      uint32_t first = 0;
      uint64_t value = 0;
      uint64_t number = 0;
      std::vector<size_t> idx(n);
      {
        std::lock_guard lock(m->mu);
        if (pause != nullptr && pause->load()) break;
        bool found = false;
        for (int attempt = 0; attempt < 16 && !found; ++attempt) {
          first = static_cast<uint32_t>(rng() % (hi - n + 1));
          found = true;
          for (uint32_t k = 0; k < n; ++k) found = found && !m->units[first + k].busy;
        }
        if (!found) break;
        if (op >= 7) value = UnitValue(m->round, m->next_seq++);
        for (uint32_t k = 0; k < n; ++k) {
          UnitState& b = m->units[first + k];
          b.busy = true;
          b.history.push_back(value);
          b.fua.push_back(fua);
          idx[k] = b.history.size() - 1;
        }
        ++m->stats.issued;
        if (op >= 7) number = ++m->data_issued;
      }
      auto done = [m, first, n, idx, fua, op, number](int err) {
        std::lock_guard lock(m->mu);
        if (err != 0) {
          ++m->stats.failed;  // stays busy: nothing more goes to these units
          if (!m->killing) {
            m->RecordUnexpectedError(fmt::format("a {} of units {}..{}",
                                                 op < 4   ? "zero"
                                                 : op < 7 ? "trim"
                                                          : "write",
                                                 first, first + n - 1),
                                     err);
          }
          return;
        }
        ++m->stats.acked;
        m->newest_acked_data = std::max(m->newest_acked_data, number);
        if (op < 4) {
          ++m->stats.zeros_acked;
        } else if (op < 7) {
          ++m->stats.trims_acked;
        } else {
          ++m->stats.writes_acked;
        }
        if (fua) ++m->stats.fua_acked;
        for (uint32_t k = 0; k < n; ++k) {
          UnitState& b = m->units[first + k];
          if (idx[k] <= b.acked && idx[k] != 0) {
            m->harness_errors.push_back(fmt::format("unit {} acked out of order", first + k));
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
        for (uint32_t k = 0; k < n; ++k) FillUnit(value, first + k, data.data() + k * unit, unit);
        cookie = client->AioPwrite(std::move(data), offset, flags, done);
      }
      if (cookie == -1) {  // never sent: the connection is gone
        std::lock_guard lock(m->mu);
        ++m->stats.failed;
        return;
      }
    }
    if (stop->load() && client->InFlight() == 0) return;
    if (client->Poll(pause != nullptr && pause->load() ? 5 : 50) == -1) return;
  }
}

namespace {

// The MiB before and after the region was never written: it reads as zeros.
void CheckGuards(NbdClient& c, const RegionConfig& cfg, const std::string& when,
                 std::vector<std::string>* failures) {
  const uint64_t region_len = uint64_t{cfg.region_units} * cfg.unit;
  std::vector<uint8_t> buf(kMiB);
  for (uint64_t guard : {cfg.region_offset - kMiB, cfg.region_offset + region_len}) {
    c.Pread(buf.data(), kMiB, guard);
    if (!std::all_of(buf.begin(), buf.end(), [](uint8_t x) { return x == 0; })) {
      failures->push_back(fmt::format("{}: the never-written guard range [{}, {}) is not zero",
                                      when, guard, guard + kMiB));
    }
  }
}

// Reads the region in 1 MiB chunks and calls fn(unit, buf) for each unit.
template <typename Fn>
void ForEachUnit(NbdClient& c, const RegionConfig& cfg, Fn fn) {
  constexpr uint64_t kChunk = 1 * kMiB;
  const uint64_t unit = cfg.unit;
  const uint64_t region_len = uint64_t{cfg.region_units} * unit;
  std::vector<uint8_t> buf(kChunk);
  for (uint64_t off = 0; off < region_len; off += kChunk) {
    uint64_t len = std::min(kChunk, region_len - off);
    c.Pread(buf.data(), len, cfg.region_offset + off);
    for (uint64_t i = 0; i < len / unit; ++i) {
      fn(static_cast<uint32_t>(off / unit + i), buf.data() + i * unit);
    }
  }
}

}  // namespace

bool VerifyRegion(NbdClient& c, CrashModel& m, const RegionConfig& cfg, const std::string& when,
                  std::vector<uint64_t>* observed, std::vector<std::string>* failures) {
  const size_t before = failures->size();
  observed->assign(cfg.region_units, 0);
  const uint64_t unit = cfg.unit;
  ForEachUnit(c, cfg, [&](uint32_t u, const uint8_t* data) {
    ++m.stats.units_checked;
    ClassifiedUnit got = ClassifyUnit(data, u, unit);
    const UnitState& b = m.units[u];
    if (!got.valid) {
      failures->push_back(fmt::format("{}: unit {} (disk offset {}): {}; durable value {}", when, u,
                                      cfg.region_offset + uint64_t{u} * unit, got.problem,
                                      UnitValueName(b.history[b.durable])));
      return;
    }
    (*observed)[u] = got.value;
    bool allowed = false;
    for (size_t j = b.durable; j < b.history.size() && !allowed; ++j) {
      allowed = b.history[j] == got.value;
    }
    if (!allowed) {
      std::string hist;
      size_t from = b.history.size() > 12 ? b.history.size() - 12 : 0;
      for (size_t j = from; j < b.history.size(); ++j) {
        hist += fmt::format(" [{}]{}{}{}", j, UnitValueName(b.history[j]), b.fua[j] ? "/fua" : "",
                            j == b.durable ? "<-durable" : (j == b.acked ? "<-acked" : ""));
      }
      failures->push_back(fmt::format(
          "{}: unit {} (disk offset {}) holds {}, but its durable value is {} (history index "
          "{} of {}, last acked index {}); history:{}",
          when, u, cfg.region_offset + uint64_t{u} * unit, UnitValueName(got.value),
          UnitValueName(b.history[b.durable]), b.durable, b.history.size() - 1, b.acked, hist));
    }
    if (got.value != b.history[b.durable]) ++m.stats.later_value_seen;
  });
  CheckGuards(c, cfg, when, failures);
  return failures->size() == before;
}

CheckpointCandidates CheckpointCandidates::Capture(CrashModel& m, const std::vector<size_t>& lo) {
  CheckpointCandidates c;
  std::lock_guard lock(m.mu);
  c.first.reserve(m.units.size() + 1);
  c.values.reserve(m.units.size());
  for (size_t i = 0; i < m.units.size(); ++i) {
    const UnitState& u = m.units[i];
    c.first.push_back(static_cast<uint32_t>(c.values.size()));
    for (size_t j = lo[i]; j < u.history.size(); ++j) c.values.push_back(u.history[j]);
    c.exact_units += u.history.size() - lo[i] == 1;
  }
  c.first.push_back(static_cast<uint32_t>(c.values.size()));
  return c;
}

bool CheckpointCandidates::Allows(uint32_t unit, uint64_t value) const {
  for (uint32_t j = first[unit]; j < first[unit + 1]; ++j) {
    if (values[j] == value) return true;
  }
  return false;
}

std::string CheckpointCandidates::Describe(uint32_t unit) const {
  std::string s;
  uint32_t n = first[unit + 1] - first[unit];
  uint32_t from = n > 12 ? first[unit + 1] - 12 : first[unit];
  for (uint32_t j = from; j < first[unit + 1]; ++j) s += " " + UnitValueName(values[j]);
  return fmt::format("{} candidate{}:{}", n, n == 1 ? "" : "s", s);
}

bool VerifyCheckpointRegion(NbdClient& c, const CheckpointCandidates& cands,
                            const RegionConfig& cfg, const std::string& when, uint64_t* exact,
                            uint64_t* ambiguous, std::vector<std::string>* failures) {
  const size_t before = failures->size();
  ForEachUnit(c, cfg, [&](uint32_t u, const uint8_t* data) {
    ClassifiedUnit got = ClassifyUnit(data, u, cfg.unit);
    if (cands.first[u + 1] - cands.first[u] == 1) {
      ++*exact;
    } else {
      ++*ambiguous;
    }
    if (!got.valid) {
      failures->push_back(fmt::format("{}: unit {} (disk offset {}): {}; expected {}", when, u,
                                      cfg.region_offset + uint64_t{u} * cfg.unit, got.problem,
                                      cands.Describe(u)));
    } else if (!cands.Allows(u, got.value)) {
      failures->push_back(fmt::format("{}: unit {} (disk offset {}) holds {}; expected {}", when, u,
                                      cfg.region_offset + uint64_t{u} * cfg.unit,
                                      UnitValueName(got.value), cands.Describe(u)));
    }
  });
  CheckGuards(c, cfg, when, failures);
  return failures->size() == before;
}

// ---------------------------------------------------------- control socket

bool ParseCheckpointResponse(const std::string& line, const std::string& name, TakenCheckpoint* out,
                             std::string* error) {
  nlohmann::json resp = nlohmann::json::parse(line, nullptr, false);
  if (resp.is_discarded() || !resp.is_object() || resp.value("ok", false) != true ||
      !resp.contains("result") || !resp["result"].contains("lsn")) {
    *error = "checkpoint " + name + " failed: " + line;
    return false;
  }
  *out = TakenCheckpoint{name, resp["result"]["lsn"].get<uint64_t>()};
  return true;
}

bool TakeCheckpoint(const std::string& store_dir, const std::string& name, TakenCheckpoint* out,
                    std::string* error) {
  try {
    auto ctl = LineClient::Connect(store_dir + "/control.sock");
    nlohmann::json req = {{"v", 1}, {"op", "checkpoint"}, {"name", name}};
    return ParseCheckpointResponse(ctl->Request(req.dump()), name, out, error);
  } catch (const std::exception& e) {
    *error = "checkpoint " + name + " failed: " + e.what();
    return false;
  }
}

bool ListCheckpoints(const std::string& store_dir, std::vector<TakenCheckpoint>* out,
                     std::string* error) {
  out->clear();
  try {
    auto ctl = LineClient::Connect(store_dir + "/control.sock");
    std::string line = ctl->Request(R"({"v": 1, "op": "list"})");
    nlohmann::json resp = nlohmann::json::parse(line, nullptr, false);
    if (resp.is_discarded() || !resp.is_object() || resp.value("ok", false) != true) {
      *error = "list failed: " + line;
      return false;
    }
    for (const auto& cp : resp["result"]["checkpoints"]) {
      out->push_back(TakenCheckpoint{cp.value("name", ""), cp.value("lsn", uint64_t{0})});
    }
    return true;
  } catch (const std::exception& e) {
    *error = std::string("list failed: ") + e.what();
    return false;
  }
}

void VerifyCheckpoints(const std::string& store_dir, const std::vector<TakenCheckpoint>& taken,
                       const std::string& when, std::vector<std::string>* failures) {
  std::vector<TakenCheckpoint> list;
  std::string error;
  if (!ListCheckpoints(store_dir, &list, &error)) {
    failures->push_back(when + ": " + error);
    return;
  }
  auto dump = [&] {
    std::string s;
    for (const auto& cp : list) s += fmt::format(" {}@{}", cp.name, cp.lsn);
    return s;
  };
  size_t pos = 0;
  uint64_t prev_lsn = 0;
  for (const auto& cp : list) {
    if (cp.lsn < prev_lsn) {
      failures->push_back(fmt::format("{}: checkpoint LSNs go backwards:{}", when, dump()));
    }
    prev_lsn = cp.lsn;
    if (pos < taken.size() && cp.name == taken[pos].name) {
      if (cp.lsn != taken[pos].lsn) {
        failures->push_back(
            fmt::format("{}: checkpoint {} was acknowledged with lsn {} but is listed with lsn {}",
                        when, taken[pos].name, taken[pos].lsn, cp.lsn));
      }
      ++pos;
    }
  }
  if (pos < taken.size()) {
    failures->push_back(fmt::format("{}: acknowledged checkpoint {} (lsn {}) is missing; list:{}",
                                    when, taken[pos].name, taken[pos].lsn, dump()));
  }
}

}  // namespace rwd::test
