// Store::Diff and Store::Verify against a model of the disk at every LSN.
#include <catch2/catch.hpp>

#include "support/proc_util.h"

#include <rewind/journal/store.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

namespace {

namespace fs = std::filesystem;
using rwd::DiffResult;
using rwd::PointInfo;
using rwd::Status;
using rwd::Store;
using rwd::StoreOptions;
using rwd::VerifyReport;

constexpr uint64_t kSize = 1 << 20;

std::unique_ptr<Store> OpenStore(const std::string& dir) {
  StoreOptions o;
  o.dir = dir;
  o.size = kSize;
  std::unique_ptr<Store> s;
  Status st = Store::Open(o, &s);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return s;
}

PointInfo Resolve(Store& s, const std::string& text) {
  PointInfo p;
  Status st = s.ResolvePoint(text, &p);
  INFO(text << ": " << st.ToString());
  REQUIRE(st.ok());
  return p;
}

// A random history: disk content at every LSN.
std::vector<std::vector<char>> MakeHistory(Store& s, uint64_t seed, int ops) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<char>> at{std::vector<char>(kSize, 0)};
  for (int i = 0; i < ops; i++) {
    std::vector<char> next = at.back();
    const uint64_t off = rng() % (kSize - 1);
    const uint64_t len = 1 + rng() % std::min<uint64_t>(20000, kSize - off);
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 7) {
      std::vector<char> data(len);
      // Some writes repeat what is there: diff must not report them.
      if (kind == 0) {
        std::copy(next.begin() + off, next.begin() + off + len, data.begin());
      } else {
        for (auto& c : data) c = static_cast<char>(rng());
      }
      REQUIRE(s.Write(off, static_cast<uint32_t>(len), data.data(), false).ok());
      std::copy(data.begin(), data.end(), next.begin() + off);
    } else {
      REQUIRE(s.Zero(off, len, false, kind == 9).ok());
      std::fill(next.begin() + off, next.begin() + off + len, 0);
    }
    at.push_back(std::move(next));
    if (rng() % 8 == 0) REQUIRE(s.Checkpoint("", nullptr).ok());
  }
  return at;
}

// The sectors (512 bytes) where a and b differ, as merged ranges.
std::vector<std::pair<uint64_t, uint64_t>> SectorDiff(const std::vector<char>& a,
                                                      const std::vector<char>& b) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (uint64_t p = 0; p < a.size(); p += 512) {
    if (std::equal(a.begin() + p, a.begin() + p + 512, b.begin() + p)) continue;
    if (!out.empty() && out.back().second == p) {
      out.back().second = p + 512;
    } else {
      out.emplace_back(p, p + 512);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("diff reports exactly the sectors that differ between two points", "[inspect]") {
  rwd::test::TempDir t("rwinspect");
  auto s = OpenStore(t / "store");
  auto at = MakeHistory(*s, 7, 120);
  std::mt19937_64 rng(11);
  for (int i = 0; i < 60; i++) {
    const uint64_t a = rng() % at.size(), b = rng() % at.size();
    PointInfo pa = Resolve(*s, "lsn:" + std::to_string(a));
    PointInfo pb = Resolve(*s, "lsn:" + std::to_string(b));
    DiffResult d;
    Status st = s->Diff(pa, pb, &d);
    INFO("diff lsn:" << a << " lsn:" << b << ": " << st.ToString());
    REQUIRE(st.ok());
    // The model's differing sectors, clipped to written ranges, are a subset
    // of what diff reports, and every reported byte's sector differs.
    auto want = SectorDiff(at[a], at[b]);
    uint64_t covered = 0;
    for (const auto& r : d.ranges) {
      REQUIRE(r.length > 0);
      for (uint64_t p = r.offset / 512 * 512; p < r.offset + r.length; p += 512) {
        CHECK(!std::equal(at[a].begin() + p, at[a].begin() + p + 512, at[b].begin() + p));
      }
      covered += r.length;
    }
    CHECK(covered == d.bytes);
    for (const auto& [lo, hi] : want) {
      for (uint64_t p = lo; p < hi; p++) {
        if (at[a][p] == at[b][p]) continue;
        bool in = false;
        for (const auto& r : d.ranges) in = in || (p >= r.offset && p < r.offset + r.length);
        INFO("differing byte at " << p);
        REQUIRE(in);
      }
    }
    if (a == b) CHECK(d.ranges.empty());
  }
  REQUIRE(s->Close().ok());
}

TEST_CASE("verify is clean on a healthy store and names damage", "[inspect]") {
  rwd::test::TempDir t("rwinspect");
  {
    auto s = OpenStore(t / "store");
    MakeHistory(*s, 3, 80);
    VerifyReport r;
    REQUIRE(s->Verify(nullptr, &r).ok());
    INFO((r.damage.empty() ? "" : r.damage.front()));
    CHECK(r.clean());
    CHECK(r.redo_records == 80);
    CHECK(r.undo_records > 0);
    CHECK(r.payload_bytes > 0);
    CHECK(r.image_pages_checked > 0);
    REQUIRE(s->Close().ok());
  }
  SECTION("a flipped byte in the payload log") {
    for (const auto& e : fs::directory_iterator(t / "store/vlog")) {
      if (fs::file_size(e.path()) < 8192) continue;
      std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(4100);
      char c = 0;
      f.seekg(4100);
      f.get(c);
      f.seekp(4100);
      f.put(static_cast<char>(c ^ 0x5a));
    }
    auto s = OpenStore(t / "store");
    VerifyReport r;
    REQUIRE(s->Verify(nullptr, &r).ok());
    REQUIRE_FALSE(r.clean());
    INFO(r.damage.front());
    CHECK(r.damage.front().find("payload") != std::string::npos);
    REQUIRE(s->Close().ok());
  }
  SECTION("a changed byte in the live image") {
    {
      auto s = OpenStore(t / "store");
      std::vector<char> page(4096, static_cast<char>(0xab));
      REQUIRE(s->Write(8192, 4096, page.data(), false).ok());
      REQUIRE(s->Close().ok());
    }
    {
      std::fstream f(t / "store/image.raw", std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(8192 + 10);
      f.put('\x01');
    }
    auto s = OpenStore(t / "store");
    VerifyReport r;
    REQUIRE(s->Verify(nullptr, &r).ok());
    REQUIRE_FALSE(r.clean());
    INFO(r.damage.front());
    CHECK(r.damage.front().find("live image at offset 8192") != std::string::npos);
    REQUIRE(s->Close().ok());
  }
}

TEST_CASE("a damaged point is refused by restore and snapshots and never served", "[inspect]") {
  rwd::test::TempDir t("rwinspect");
  PointInfo p;
  {
    auto s = OpenStore(t / "store");
    std::vector<char> a(1 << 16, 'a'), b(1 << 16, 'b');
    REQUIRE(s->Write(0, a.size(), a.data(), true).ok());
    REQUIRE(s->Checkpoint("one", nullptr).ok());
    REQUIRE(s->Write(0, b.size(), b.data(), true).ok());  // before-images of 'a' journaled
    REQUIRE(s->Close().ok());
  }
  // Flip one byte in every payload log segment's data: the before-images
  // of "one" (and the redo payloads) no longer match their hashes.
  for (const auto& e : fs::directory_iterator(t / "store/vlog")) {
    const auto size = fs::file_size(e.path());
    if (size == 0) continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    for (std::streamoff off = 100; off < static_cast<std::streamoff>(size); off += 4096) {
      char c = 0;
      f.seekg(off);
      f.get(c);
      f.seekp(off);
      f.put(static_cast<char>(c ^ 0x20));
    }
  }
  auto s = OpenStore(t / "store");
  p = Resolve(*s, "one");
  rwd::RestoreOptions ro;
  ro.output = t / "one.raw";
  rwd::RestoreResult rr;
  Status st = s->Restore(p, ro, &rr);
  INFO(st.ToString());
  CHECK(st.code() == Status::Code::kCorruption);
  CHECK_FALSE(fs::exists(t / "one.raw"));
  std::unique_ptr<rwd::Snapshot> snap;
  REQUIRE(s->OpenSnapshot(p, &snap).ok());
  std::vector<char> buf(4096);
  CHECK(snap->Read(0, 4096, buf.data()).code() == Status::Code::kCorruption);
  snap.reset();
  // The live disk does not depend on the damaged payloads (the image holds it).
  REQUIRE(s->Read(0, 4096, buf.data()).ok());
  CHECK(buf == std::vector<char>(4096, 'b'));
  VerifyReport r;
  REQUIRE(s->Verify(nullptr, &r).ok());
  CHECK_FALSE(r.clean());
  REQUIRE(s->Close().ok());
}
