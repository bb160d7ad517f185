// Unit tests of the store: the write and read paths, checkpoints, reopening,
// and the one-line errors on bad input.
#include <catch2/catch.hpp>

#include "records.h"
#include "store_impl.h"

#include <rewind/journal/store.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

namespace fs = std::filesystem;
using rwd::Status;
using rwd::Store;
using rwd::StoreOptions;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/rewind-store-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string dir() const { return (path / "store").string(); }
};

std::unique_ptr<Store> OpenStore(const std::string& dir, uint64_t size = 8 << 20,
                                 uint32_t block_size = 0) {
  StoreOptions o;
  o.dir = dir;
  o.size = size;
  o.block_size = block_size;
  std::unique_ptr<Store> s;
  Status st = Store::Open(o, &s);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return s;
}

std::vector<char> Pattern(size_t n, uint32_t seed) {
  std::vector<char> v(n);
  std::mt19937 rng(seed);
  for (auto& c : v) c = static_cast<char>(rng());
  return v;
}

std::vector<char> ReadBack(Store& s, uint64_t off, uint32_t len) {
  std::vector<char> v(len);
  REQUIRE(s.Read(off, len, v.data()).ok());
  return v;
}

}  // namespace

TEST_CASE("a new store reads as zeros and reads back what is written", "[journal]") {
  TempDir t;
  auto s = OpenStore(t.dir());
  CHECK(s->size() == 8u << 20);
  CHECK(s->block_size() == 4096);
  CHECK(ReadBack(*s, 0, 4096) == std::vector<char>(4096, 0));

  auto a = Pattern(4096, 1);
  REQUIRE(s->Write(8192, 4096, a.data(), false).ok());
  CHECK(ReadBack(*s, 8192, 4096) == a);

  // Unaligned write across a page boundary keeps the neighbouring bytes.
  auto b = Pattern(1000, 2);
  REQUIRE(s->Write(8192 + 3500, 1000, b.data(), false).ok());
  auto got = ReadBack(*s, 8192, 8192);
  CHECK(std::memcmp(got.data(), a.data(), 3500) == 0);
  CHECK(std::memcmp(got.data() + 3500, b.data(), 1000) == 0);
  CHECK(std::all_of(got.begin() + 4500, got.end(), [](char c) { return c == 0; }));

  REQUIRE(s->Flush().ok());
  REQUIRE(s->Close().ok());
  s = OpenStore(t.dir(), 0);
  got = ReadBack(*s, 8192, 8192);
  CHECK(std::memcmp(got.data(), a.data(), 3500) == 0);
  CHECK(std::memcmp(got.data() + 3500, b.data(), 1000) == 0);
}

TEST_CASE("zero and trim read back as zeros and survive a reopen", "[journal]") {
  TempDir t;
  auto s = OpenStore(t.dir());
  auto a = Pattern(1 << 20, 3);
  REQUIRE(s->Write(0, 1 << 20, a.data(), false).ok());
  REQUIRE(s->Zero(4096, 8192, false, false).ok());
  REQUIRE(s->Zero(100000, 300000, true, true).ok());
  auto check = [&](Store& st) {
    auto got = ReadBack(st, 0, 1 << 20);
    for (size_t i = 0; i < got.size(); i++) {
      bool zero = (i >= 4096 && i < 12288) || (i >= 100000 && i < 400000);
      if (got[i] != (zero ? 0 : a[i])) FAIL("byte " << i << " is wrong");
    }
  };
  check(*s);
  REQUIRE(s->Close().ok());
  s = OpenStore(t.dir(), 0);
  check(*s);
}

TEST_CASE("checkpoints are ordered, named, unique and survive a reopen", "[journal]") {
  TempDir t;
  auto s = OpenStore(t.dir());
  auto a = Pattern(4096, 4);
  REQUIRE(s->Write(0, 4096, a.data(), false).ok());
  rwd::CheckpointInfo c1, c2, c3;
  REQUIRE(s->Checkpoint("first", &c1).ok());
  REQUIRE(s->Write(4096, 4096, a.data(), false).ok());
  REQUIRE(s->Checkpoint("", &c2).ok());
  CHECK(c1.lsn == 1);
  CHECK(c2.lsn == 2);
  CHECK(c2.name == "cp-2");
  CHECK(s->Checkpoint("first", &c3).code() == Status::Code::kAlreadyExists);
  CHECK(s->Checkpoint("a/b", &c3).code() == Status::Code::kInvalidArgument);
  // Block 1's first write after "first" saved a (zero) before-image in
  // epoch 1; block 0's overwrite after cp-2 saves its data in epoch 2.
  auto b = Pattern(4096, 5);
  REQUIRE(s->Write(0, 4096, b.data(), false).ok());
  std::vector<rwd::CheckpointInfo> list;
  REQUIRE(s->ListCheckpoints(&list).ok());
  REQUIRE(list.size() == 2);
  CHECK(list[0].name == "first");
  CHECK(list[0].undo_bytes > 0);
  CHECK(list[0].undo_bytes < 4096);
  CHECK(list[1].undo_bytes > 4096);
  REQUIRE(s->Close().ok());
  s = OpenStore(t.dir(), 0);
  REQUIRE(s->ListCheckpoints(&list).ok());
  REQUIRE(list.size() == 2);
  CHECK(list[1].name == "cp-2");
  CHECK(list[1].lsn == 2);
  rwd::StoreInfo info;
  REQUIRE(s->GetInfo(&info).ok());
  CHECK(info.oldest_lsn == 1);
  CHECK(info.newest_lsn == 3);
  CHECK(info.checkpoints == 2);
}

// The latency of one checkpoint after one 4 KiB write to a fresh block.
static double CheckpointMicros(Store& s, int i) {
  static const auto a = Pattern(4096, 6);
  uint64_t off = (static_cast<uint64_t>(i) * 1048576) % s.size();
  REQUIRE(s.Write(off, 4096, a.data(), false).ok());
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(s.Checkpoint("", nullptr).ok());
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

TEST_CASE("a checkpoint costs the same on a 1 MiB and a 64 GiB disk", "[journal]") {
  // Absolute figures (dominated by one WAL fsync) are in docs/performance.md;
  // here the point is O(1): no dependence on the disk's size or on how many
  // blocks were written before.  The two stores take turns, so that other
  // load on the machine falls on both alike.
  TempDir small_dir, big_dir;
  auto small = OpenStore(small_dir.dir(), 1 << 20);
  auto big = OpenStore(big_dir.dir(), 64ull << 30);  // sparse
  std::vector<char> block(1 << 20, 'x');
  for (int i = 0; i < 64; i++) {  // 64 MiB written across the big disk
    REQUIRE(big->Write(static_cast<uint64_t>(i) << 30, block.size(), block.data(), false).ok());
  }
  std::vector<double> us_small, us_big;
  for (int i = 0; i < 101; i++) {
    us_small.push_back(CheckpointMicros(*small, i));
    us_big.push_back(CheckpointMicros(*big, i));
  }
  std::sort(us_small.begin(), us_small.end());
  std::sort(us_big.begin(), us_big.end());
  const double p_small = us_small[us_small.size() / 2], p_big = us_big[us_big.size() / 2];
  INFO("p50 1 MiB disk " << p_small << " us, 64 GiB disk " << p_big << " us");
  CHECK(p_big < 2 * p_small + 500.0);
}

TEST_CASE("concurrent writers to distinct and overlapping blocks", "[journal]") {
  TempDir t;
  auto s = OpenStore(t.dir(), 16 << 20);
  constexpr int kThreads = 8, kWrites = 400;
  // Catch2's assertions are not thread-safe (TSan reported the race in its
  // counters): the writers count failures and the main thread checks them.
  std::atomic<int> failures{0};
  std::vector<std::thread> th;
  for (int w = 0; w < kThreads; w++) {
    th.emplace_back([&, w] {
      std::mt19937 rng(w);
      std::vector<char> buf(4096);
      for (int i = 0; i < kWrites; i++) {
        uint64_t block = rng() % 1024;
        std::memset(buf.data(), w + 1, buf.size());
        if (!s->Write(block * 4096, 4096, buf.data(), i % 10 == 0).ok()) failures++;
        if (i % 97 == 0 && !s->Checkpoint("", nullptr).ok()) failures++;
      }
    });
  }
  for (auto& x : th) x.join();
  REQUIRE(failures == 0);
  REQUIRE(s->Flush().ok());
  // No block is torn: each holds one writer's fill byte throughout.
  auto check = [](Store& st) {
    std::vector<char> buf(4096);
    for (uint64_t b = 0; b < 1024; b++) {
      REQUIRE(st.Read(b * 4096, 4096, buf.data()).ok());
      REQUIRE(std::all_of(buf.begin(), buf.end(), [&](char c) { return c == buf[0]; }));
    }
  };
  check(*s);
  std::vector<char> before(16 << 20);
  REQUIRE(s->Read(0, before.size(), before.data()).ok());
  REQUIRE(s->Close().ok());
  s = OpenStore(t.dir(), 0);
  std::vector<char> after(16 << 20);
  REQUIRE(s->Read(0, after.size(), after.data()).ok());
  CHECK(before == after);
}

TEST_CASE("bad input gets a clear error and leaves the store unchanged", "[journal]") {
  TempDir t;
  StoreOptions o;
  o.dir = t.dir();
  std::unique_ptr<Store> s;
  Status st = Store::Open(o, &s);
  CHECK(st.code() == Status::Code::kInvalidArgument);
  CHECK(st.message().find("size=") != std::string::npos);
  CHECK_FALSE(Store::Exists(t.dir()));

  o.size = 1 << 20;
  o.block_size = 3000;
  CHECK(Store::Open(o, &s).message().find("power of two") != std::string::npos);
  o.block_size = 2 << 20;
  CHECK(Store::Open(o, &s).code() == Status::Code::kInvalidArgument);

  o.block_size = 0;
  REQUIRE(Store::Open(o, &s).ok());
  REQUIRE(s->Close().ok());
  s.reset();
  o.size = 2 << 20;
  st = Store::Open(o, &s);
  CHECK(st.code() == Status::Code::kInvalidArgument);
  CHECK(st.message().find("does not match") != std::string::npos);
  o.size = 0;
  o.block_size = 8192;
  CHECK(Store::Open(o, &s).code() == Status::Code::kInvalidArgument);

  // The store is in use: a second open is refused, not corrupted.
  o.block_size = 0;
  std::unique_ptr<Store> first;
  REQUIRE(Store::Open(o, &first).ok());
  st = Store::Open(o, &s);
  CHECK(st.code() == Status::Code::kBusy);
  CHECK(first->Close().ok());
}

TEST_CASE("size and name parsing", "[journal]") {
  uint64_t v = 0;
  REQUIRE(rwd::ParseSize("20G", &v).ok());
  CHECK(v == 20ull << 30);
  REQUIRE(rwd::ParseSize("512M", &v).ok());
  CHECK(v == 512ull << 20);
  REQUIRE(rwd::ParseSize("4096", &v).ok());
  CHECK(v == 4096);
  REQUIRE(rwd::ParseSize("1.5KiB", &v).ok());
  CHECK(v == 1536);
  CHECK_FALSE(rwd::ParseSize("12Q", &v).ok());
  CHECK_FALSE(rwd::ParseSize("-1", &v).ok());
  CHECK_FALSE(rwd::ParseSize("", &v).ok());
  CHECK(rwd::ValidateCheckpointName("before-upgrade_1.2").ok());
  CHECK_FALSE(rwd::ValidateCheckpointName("a/b").ok());
  CHECK_FALSE(rwd::ValidateCheckpointName("..").ok());
  CHECK_FALSE(rwd::ValidateCheckpointName("-x").ok());
  CHECK_FALSE(rwd::ValidateCheckpointName("lsn:5").ok());
  CHECK_FALSE(rwd::ValidateCheckpointName(std::string(129, 'a')).ok());
  CHECK(rwd::ValidateBlockSize(512).ok());
  CHECK(rwd::ValidateBlockSize(1 << 20).ok());
  CHECK_FALSE(rwd::ValidateBlockSize(256).ok());
  CHECK_FALSE(rwd::ValidateBlockSize(4097).ok());
}

TEST_CASE("journal records detect damage", "[journal]") {
  using namespace rwd::records;
  RedoHeader h;
  h.offset = 4096;
  h.length = 5;
  h.payload.segment = 3;
  h.payload.offset = 123;
  h.payload.hash = PayloadHash("hello");
  char buf[rwd::format::kRedoValueSize];
  EncodeRedo(7, h, buf);
  std::string value(buf, sizeof buf);
  RedoHeader out;
  REQUIRE(DecodeRedo(7, value, &out).ok());
  CHECK(out.payload.segment == 3);
  CHECK(out.payload.offset == 123);
  CHECK(CheckPayload(out.payload, "hello", "x").ok());
  CHECK(CheckPayload(out.payload, "hellO", "x").code() == Status::Code::kCorruption);
  CHECK(DecodeRedo(8, value, &out).code() == Status::Code::kCorruption);  // wrong key
  for (size_t i = 0; i < value.size(); i++) {
    std::string bad = value;
    bad[i] ^= 0x01;
    CHECK_FALSE(DecodeRedo(7, bad, &out).ok());
  }
  CHECK_FALSE(DecodeRedo(7, value.substr(0, value.size() - 1), &out).ok());

  UndoHeader u;
  u.length = 4096;
  u.lsn = 9;
  u.payload = PayloadRef{2, 77, PayloadHash("x")};
  std::string key = UndoKey(1, 0, 5);
  std::string uv = EncodeUndo(key, u);
  UndoHeader uo;
  REQUIRE(DecodeUndo(key, uv, &uo).ok());
  CHECK(uo.lsn == 9);
  CHECK(uo.payload.offset == 77);
  CHECK_FALSE(DecodeUndo(UndoKey(1, 0, 6), uv, &uo).ok());  // moved to another block
  for (size_t i = 0; i < uv.size(); i++) {
    std::string bad = uv;
    bad[i] ^= 0x01;
    CHECK_FALSE(DecodeUndo(key, bad, &uo).ok());
  }
}
TEST_CASE("the payload hash is XXH3-64 whichever route computes it and keys keep their byte order",
          "[journal]") {
  using namespace rwd::records;
  // Payload hashes are stored: a faster route (AVX2) must give exactly the
  // library's result, for every length and alignment the committer meets.
  std::mt19937_64 rng(7);
  std::string data(70000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t len : {0, 1, 3, 16, 17, 128, 129, 240, 241, 1000, 4096, 4097, 65536, 69999}) {
    for (size_t at : {0, 1, 7}) {
      if (at + len > data.size()) continue;
      std::string_view piece(data.data() + at, len);
      INFO("length " << len << " at " << at);
      CHECK(PayloadHash(piece) == PayloadHashPortable(piece));
    }
  }
  CHECK(PayloadHash("") == 0x2d06800538d394c2ull);  // XXH3-64 of nothing, seed 0

  char b[8];
  PutBE64(b, 0x0102030405060708ull);
  CHECK(std::string(b, 8) == std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  CHECK(GetBE64(b) == 0x0102030405060708ull);
  PutLE64(b, 0x0102030405060708ull);
  CHECK(std::string(b, 8) == std::string("\x08\x07\x06\x05\x04\x03\x02\x01", 8));
  CHECK(GetLE64(b) == 0x0102030405060708ull);
  PutLE32(b, 0x0a0b0c0du);
  CHECK(std::string(b, 4) == std::string("\x0d\x0c\x0b\x0a", 4));
  CHECK(GetLE32(b) == 0x0a0b0c0du);
  // Keys sort by LSN because they are big-endian.
  CHECK(RedoKey(0x100) > RedoKey(0xff));
}


TEST_CASE("creation never deletes a journal/ or image.raw it did not make", "[journal]") {
  TempDir t;
  fs::create_directories(fs::path(t.dir()) / "journal");
  { std::ofstream(fs::path(t.dir()) / "journal" / "precious") << "user data"; }
  StoreOptions o;
  o.dir = t.dir();
  o.size = 1 << 20;
  std::unique_ptr<Store> s;
  Status st = Store::Open(o, &s);
  CHECK(st.code() == Status::Code::kInvalidArgument);
  CHECK(st.message().find("will not overwrite") != std::string::npos);
  CHECK(fs::exists(fs::path(t.dir()) / "journal" / "precious"));
  CHECK_FALSE(Store::Exists(t.dir()));
}

TEST_CASE("an unnamed checkpoint never collides with a user's cp-N name", "[journal]") {
  TempDir t;
  auto s = OpenStore(t.dir());
  rwd::CheckpointInfo a, b;
  REQUIRE(s->Checkpoint("cp-2", &a).ok());
  REQUIRE(s->Checkpoint("", &b).ok());
  CHECK(b.id == 2);
  CHECK(b.name == "cp-2-2");
}

TEST_CASE("the overlay agrees with a map under random puts and removals", "[journal]") {
  // The overlay's shards are open-addressing tables with tombstones: growth,
  // rehashes that drop tombstones, and shards that empty and start afresh
  // must never lose or resurrect a page.
  constexpr uint32_t kPage = 64;
  rwd::Overlay overlay(kPage);
  std::map<uint64_t, std::pair<uint64_t, char>> model;  // page -> (lsn, fill byte)
  std::mt19937_64 rng(11);
  uint64_t lsn = 0;
  char out[kPage];
  for (int round = 0; round < 40; round++) {
    // Pages from a range that is sometimes tiny (many rewrites of a few
    // pages) and sometimes wide (growth); removals catch up in bursts.
    const uint64_t span = round % 3 == 0 ? 50 : 20000;
    const int puts = static_cast<int>(rng() % 3000);
    for (int i = 0; i < puts; i++) {
      const uint64_t page = rng() % span;
      const char fill = static_cast<char>(rng());
      auto data = std::shared_ptr<char>(new char[kPage], std::default_delete<char[]>());
      std::memset(data.get(), fill, kPage);
      overlay.Put(page, ++lsn, data);
      model[page] = {lsn, fill};
    }
    // Remove most entries, some with a stale LSN (must be kept).
    for (auto it = model.begin(); it != model.end();) {
      const int what = static_cast<int>(rng() % 10);
      if (what < 7) {
        overlay.RemoveIf(it->first, it->second.first);
        it = model.erase(it);
      } else {
        if (what == 7) overlay.RemoveIf(it->first, it->second.first - 1);  // stale: no effect
        ++it;
      }
    }
    for (uint64_t page = 0; page < span; page++) {
      auto it = model.find(page);
      const bool held = overlay.Read(page, out);
      REQUIRE(held == (it != model.end()));
      if (held) REQUIRE(out[0] == it->second.second);
    }
    REQUIRE(overlay.Empty() == model.empty());
  }
  for (auto& [page, v] : model) overlay.RemoveIf(page, v.first);
  CHECK(overlay.Empty());
}
