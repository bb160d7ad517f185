// Store::Prune against a model of the disk at every LSN: what is kept reads
// back exactly, what is dropped is refused, and space comes back.
#include <catch2/catch.hpp>

#include "support/proc_util.h"

#include <rewind/journal/fault_point.h>
#include <rewind/journal/store.h>

#include <filesystem>
#include <random>

namespace {

namespace fs = std::filesystem;
using rwd::PointInfo;
using rwd::PrunePolicy;
using rwd::PruneResult;
using rwd::Status;
using rwd::Store;
using rwd::StoreOptions;

constexpr uint64_t kSize = 1 << 20;

struct Clock {
  int64_t now = 20780LL * 86400 * 1000000000LL;  // 2026-11-23T00:00:00Z
};

std::unique_ptr<Store> OpenStore(const std::string& dir, Clock* clock, uint32_t block_size) {
  StoreOptions o;
  o.dir = dir;
  o.size = kSize;
  o.block_size = block_size;
  o.vlog_segment_bytes = 256 << 10;  // many segments: some become free
  o.clock = [clock] { return clock->now; };
  std::unique_ptr<Store> s;
  Status st = Store::Open(o, &s);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return s;
}

std::vector<char> ReadPoint(Store& s, uint64_t lsn) {
  PointInfo p;
  Status st = s.ResolvePoint("lsn:" + std::to_string(lsn), &p);
  INFO("lsn:" << lsn << ": " << st.ToString());
  REQUIRE(st.ok());
  std::unique_ptr<rwd::Snapshot> snap;
  st = s.OpenSnapshot(p, &snap);
  INFO(st.ToString());
  REQUIRE(st.ok());
  std::vector<char> out(kSize);
  REQUIRE(snap->Read(0, kSize, out.data()).ok());
  return out;
}

size_t Segments(const std::string& store) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(store + "/vlog")) n += e.path().extension() == ".vlog";
  return n;
}

}  // namespace

TEST_CASE("prune keeps what the policy says, exactly, and reclaims the rest", "[prune]") {
  const uint32_t block_size = GENERATE(4096u, 65536u);
  rwd::test::TempDir t("rwprune");
  const std::string dir = t / "store";
  Clock clock;
  std::mt19937_64 rng(block_size);
  std::vector<std::vector<char>> at{std::vector<char>(kSize, 0)};
  std::vector<std::pair<std::string, uint64_t>> cps;  // name, lsn
  {
    auto s = OpenStore(dir, &clock, block_size);
    // Ten hours, a checkpoint an hour, writes in between (some reopen).
    for (int hour = 0; hour < 10; hour++) {
      for (int i = 0; i < 25; i++) {
        clock.now += 60LL * 1000000000LL;
        std::vector<char> next = at.back();
        const uint64_t off = rng() % (kSize - 1);
        const uint64_t len = 1 + rng() % std::min<uint64_t>(30000, kSize - off);
        if (rng() % 6 == 0) {
          REQUIRE(s->Zero(off, len, false, rng() % 2 == 0).ok());
          std::fill(next.begin() + off, next.begin() + off + len, 0);
        } else {
          std::vector<char> data(len);
          for (auto& c : data) c = static_cast<char>(rng());
          REQUIRE(s->Write(off, static_cast<uint32_t>(len), data.data(), false).ok());
          std::copy(data.begin(), data.end(), next.begin() + off);
        }
        at.push_back(std::move(next));
      }
      rwd::CheckpointInfo cp;
      REQUIRE(s->Checkpoint("h" + std::to_string(hour), &cp).ok());
      REQUIRE(cp.lsn == at.size() - 1);
      cps.emplace_back(cp.name, cp.lsn);
    }
    REQUIRE(s->Close().ok());
  }
  auto s = OpenStore(dir, &clock, block_size);
  const size_t segments_before = Segments(dir);

  SECTION("dry run changes nothing") {
    PrunePolicy p;
    p.keep_last = 3;
    p.dry_run = true;
    PruneResult r;
    REQUIRE(s->Prune(p, &r).ok());
    CHECK(r.kept.size() == 3);
    CHECK(r.dropped.size() == 7);
    CHECK(r.history_start_lsn == cps[7].second);
    CHECK(ReadPoint(*s, 0) == at[0]);
    std::vector<rwd::CheckpointInfo> list;
    REQUIRE(s->ListCheckpoints(&list).ok());
    CHECK(list.size() == 10);
  }

  SECTION("keep-last and keep-within, with a merged epoch in between") {
    // Checkpoints are 25 minutes apart: keep-within 150 min keeps the
    // newest few; the oldest of them becomes the start.
    PrunePolicy p;
    p.keep_within_ns = 150LL * 60 * 1000000000LL;
    p.keep_last = 1;
    PruneResult r;
    Status st = s->Prune(p, &r);
    INFO(st.ToString());
    REQUIRE(st.ok());
    REQUIRE(!r.kept.empty());
    const uint64_t start = r.history_start_lsn;
    CHECK(start == r.kept.front().lsn);
    CHECK(r.redo_records_dropped == start);
    CHECK(r.bytes_after < r.bytes_before);
    CHECK(Segments(dir) < segments_before);
    // Every point from the start on reads back exactly; older ones are refused.
    for (uint64_t lsn = start; lsn < at.size(); lsn++) {
      INFO("lsn " << lsn);
      CHECK(ReadPoint(*s, lsn) == at[lsn]);
    }
    PointInfo pi;
    CHECK(s->ResolvePoint("lsn:" + std::to_string(start - 1), &pi).code() ==
          Status::Code::kNotFound);
    CHECK(s->ResolvePoint("h0", &pi).code() == Status::Code::kNotFound);
    rwd::VerifyReport v;
    REQUIRE(s->Verify(nullptr, &v).ok());
    INFO((v.damage.empty() ? "" : v.damage.front()));
    CHECK(v.clean());
    // And after a reopen, with new writes on top.
    REQUIRE(s->Close().ok());
    s = OpenStore(dir, &clock, block_size);
    std::vector<char> data(5000, 'x');
    REQUIRE(s->Write(1000, 5000, data.data(), true).ok());
    for (uint64_t lsn = start; lsn < at.size(); lsn++) CHECK(ReadPoint(*s, lsn) == at[lsn]);
    CHECK(s->ResolvePoint("lsn:" + std::to_string(start - 1), &pi).code() ==
          Status::Code::kNotFound);
  }

  SECTION("dropping checkpoints between kept ones merges their epochs") {
    // keep-last 10 keeps all ten: nothing goes...
    PrunePolicy all;
    all.keep_last = 10;
    PruneResult r;
    REQUIRE(s->Prune(all, &r).ok());
    CHECK(r.dropped.empty());
    // ... then keep-daily 1: all ten fall on one UTC day, so only h9 stays
    // and the start moves to it.
    PrunePolicy daily;
    daily.keep_daily = 1;
    REQUIRE(s->Prune(daily, &r).ok());
    CHECK(r.kept.size() == 1);
    CHECK(r.history_start_lsn == cps[9].second);
    for (uint64_t lsn = cps[9].second; lsn < at.size(); lsn++) CHECK(ReadPoint(*s, lsn) == at[lsn]);
  }

  SECTION("a prune while a snapshot is open is refused") {
    PointInfo p;
    REQUIRE(s->ResolvePoint("h1", &p).ok());
    std::unique_ptr<rwd::Snapshot> snap;
    REQUIRE(s->OpenSnapshot(p, &snap).ok());
    PrunePolicy pol;
    pol.keep_last = 1;
    PruneResult r;
    CHECK(s->Prune(pol, &r).code() == Status::Code::kBusy);
    snap.reset();
    CHECK(s->Prune(pol, &r).ok());
  }

  SECTION("a policy is required") {
    PruneResult r;
    CHECK(s->Prune(PrunePolicy{}, &r).code() == Status::Code::kInvalidArgument);
  }
  REQUIRE(s->Close().ok());
}

TEST_CASE("prune with kept checkpoints on both sides of dropped ones", "[prune]") {
  // Three checkpoints a day for two days; keep-daily 2 keeps the newest of
  // each day (c2, c5) and drops c3 and c4 between them: their epochs merge
  // into c2's, and every point from c2 on must still read back exactly.
  rwd::test::TempDir t("rwprune");
  const std::string dir = t / "store";
  Clock clock;
  std::mt19937_64 rng(5);
  std::vector<std::vector<char>> at{std::vector<char>(kSize, 0)};
  auto s = OpenStore(dir, &clock, 4096);
  std::vector<uint64_t> cp_lsn;
  for (int k = 0; k < 6; k++) {
    for (int i = 0; i < 30; i++) {
      clock.now += 1000000000LL;
      std::vector<char> next = at.back();
      // A small region, so that blocks recur across epochs.
      const uint64_t off = (rng() % 64) * 4096 + rng() % 100;
      const uint64_t len = 1 + rng() % 9000;
      std::vector<char> data(len);
      for (auto& c : data) c = static_cast<char>(rng());
      REQUIRE(s->Write(off, static_cast<uint32_t>(len), data.data(), false).ok());
      std::copy(data.begin(), data.end(), next.begin() + off);
      at.push_back(std::move(next));
    }
    rwd::CheckpointInfo cp;
    REQUIRE(s->Checkpoint("", &cp).ok());
    cp_lsn.push_back(cp.lsn);
    clock.now += 8 * 3600LL * 1000000000LL;
  }
  PrunePolicy p;
  p.keep_daily = 2;
  PruneResult r;
  REQUIRE(s->Prune(p, &r).ok());
  REQUIRE(r.kept.size() == 2);
  CHECK(r.kept[0].lsn == cp_lsn[2]);
  CHECK(r.kept[1].lsn == cp_lsn[5]);
  CHECK(r.dropped.size() == 4);
  CHECK(r.undo_records_dropped > 0);
  const uint64_t start = r.history_start_lsn;
  CHECK(start == cp_lsn[2]);
  for (uint64_t lsn = start; lsn < at.size(); lsn++) {
    INFO("lsn " << lsn);
    CHECK(ReadPoint(*s, lsn) == at[lsn]);
  }
  rwd::VerifyReport v;
  REQUIRE(s->Verify(nullptr, &v).ok());
  INFO((v.damage.empty() ? "" : v.damage.front()));
  CHECK(v.clean());
  REQUIRE(s->Close().ok());
  s = OpenStore(dir, &clock, 4096);
  for (uint64_t lsn = start; lsn < at.size(); lsn++) CHECK(ReadPoint(*s, lsn) == at[lsn]);
  REQUIRE(s->Close().ok());
}
