// Basic NBD behaviour of the rewind plugin under a real nbdkit: reads and
// writes at aligned and unaligned offsets, flush, FUA, trim, zero, extents,
// size and the advertised capabilities, and persistence across a clean
// restart.
#include <libnbd.h>

#include <algorithm>
#include <cstring>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kDiskSize = 64 * kMiB;

// The expected content of the whole disk, kept beside a connection.
class DiskModel {
 public:
  explicit DiskModel(uint64_t size) : bytes_(size, 0) {}

  void Write(NbdClient& c, uint64_t offset, size_t len, uint64_t seed, uint32_t flags = 0) {
    auto data = Pattern(len, seed);
    INFO(fmt::format("pwrite offset={} len={} flags={:#x}", offset, len, flags));
    c.Pwrite(data, offset, flags);
    std::memcpy(bytes_.data() + offset, data.data(), len);
  }
  void Zeroed(uint64_t offset, uint64_t len) { std::memset(bytes_.data() + offset, 0, len); }

  // Reads [offset, offset+len) through c and compares with the model.
  void Check(NbdClient& c, uint64_t offset, uint64_t len) {
    auto got = c.Pread(len, offset);
    std::string diff = FirstDifference(got.data(), bytes_.data() + offset, len, offset);
    INFO(fmt::format("reading back [{}, {})", offset, offset + len));
    CHECK(diff == "");
  }
  // Checks a window around a range written or zeroed: the range and its
  // neighbours, which must be unchanged.
  void CheckAround(NbdClient& c, uint64_t offset, uint64_t len) {
    uint64_t lo = offset >= 8 * kKiB ? offset - 8 * kKiB : 0;
    uint64_t hi = std::min<uint64_t>(offset + len + 8 * kKiB, bytes_.size());
    Check(c, lo, hi - lo);
  }
  void CheckAll(NbdClient& c) {
    for (uint64_t off = 0; off < bytes_.size(); off += 4 * kMiB) Check(c, off, 4 * kMiB);
  }
  bool AllZero(uint64_t offset, uint64_t len) const {
    return std::all_of(bytes_.begin() + static_cast<ptrdiff_t>(offset),
                       bytes_.begin() + static_cast<ptrdiff_t>(offset + len),
                       [](uint8_t b) { return b == 0; });
  }

 private:
  std::vector<uint8_t> bytes_;
};

// Extents of [offset, offset+len): contiguous, covering the range, and never
// claiming "reads as zeros" over bytes the model says are not zero.
void CheckExtentsAgainstModel(NbdClient& c, const DiskModel& model, uint64_t offset, uint64_t len) {
  auto extents = c.BlockStatus(offset, len);
  REQUIRE_FALSE(extents.empty());
  uint64_t pos = offset;
  for (const auto& e : extents) {
    INFO(fmt::format("extent [{}, {}) flags={}", e.offset, e.offset + e.length, e.flags));
    REQUIRE(e.offset == pos);
    REQUIRE(e.length > 0);
    if (e.flags & LIBNBD_STATE_ZERO) {
      CHECK(model.AllZero(e.offset, e.length));
    }
    pos += e.length;
  }
  CHECK(pos == offset + len);
}

// Every extent in [offset, offset+len) is reported as a hole.
void CheckAllHole(NbdClient& c, uint64_t offset, uint64_t len) {
  auto extents = c.BlockStatus(offset, len);
  REQUIRE_FALSE(extents.empty());
  for (const auto& e : extents) {
    INFO(fmt::format("never-written extent [{}, {}) flags={}", e.offset, e.offset + e.length,
                     e.flags));
    CHECK((e.flags & LIBNBD_STATE_HOLE) != 0);
  }
}

TEST_CASE("basic: pread/pwrite, flush, FUA, trim, zero, extents and flags on a new store",
          "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=64M"});
  auto c = NbdClient::Connect(server->socket());

  // Size and what the export advertises.
  CHECK(c->Size() == static_cast<int64_t>(kDiskSize));
  CHECK_FALSE(c->IsReadOnly());
  CHECK(c->CanFlush());
  CHECK(c->CanFua());
  CHECK(c->CanTrim());
  CHECK(c->CanZero());
  CHECK(c->CanMultiConn());
  REQUIRE(c->CanMetaContext(LIBNBD_CONTEXT_BASE_ALLOCATION));

  DiskModel model(kDiskSize);

  // A new disk reads as zeros and is one big hole.
  model.Check(*c, 0, 2 * kMiB);
  model.Check(*c, kDiskSize - 2 * kMiB, 2 * kMiB);
  CheckAllHole(*c, 0, kDiskSize);

  // Aligned writes.
  model.Write(*c, 0, 64 * kKiB, 1);
  model.CheckAround(*c, 0, 64 * kKiB);
  model.Write(*c, 1 * kMiB, 4 * kKiB, 2);
  model.CheckAround(*c, 1 * kMiB, 4 * kKiB);
  // Unaligned: inside a block, across block boundaries, one byte, a large
  // write starting mid-sector, and partial overwrites of earlier data.
  model.Write(*c, 1 * kMiB + 3 * 4096 + 123, 10000, 3);
  model.CheckAround(*c, 1 * kMiB + 3 * 4096 + 123, 10000);
  model.Write(*c, 5 * kMiB + 7, 1, 4);
  model.CheckAround(*c, 5 * kMiB + 7, 1);
  model.Write(*c, 2 * kMiB - 100, 200, 5);
  model.CheckAround(*c, 2 * kMiB - 100, 200);
  model.Write(*c, 4 * kMiB + 513, 3 * kMiB + 5, 6);
  model.CheckAround(*c, 4 * kMiB + 513, 3 * kMiB + 5);
  model.Write(*c, 100, 50, 7);
  model.CheckAround(*c, 100, 50);
  model.Write(*c, 1 * kMiB + 4000, 200, 8);  // straddles the 4 KiB write at 1 MiB
  model.CheckAround(*c, 1 * kMiB + 4000, 200);
  // The very end of the disk.
  model.Write(*c, kDiskSize - 4096 - 17, 4096 + 17, 9);
  model.CheckAround(*c, kDiskSize - 4096 - 17, 4096 + 17);
  model.Write(*c, kDiskSize - 1, 1, 10);
  model.CheckAround(*c, kDiskSize - 1, 1);

  // Flush, then a FUA write (unaligned) and an aligned FUA write.
  REQUIRE_NOTHROW(c->Flush());
  model.Write(*c, 8 * kMiB + 77, 12345, 11, LIBNBD_CMD_FLAG_FUA);
  model.CheckAround(*c, 8 * kMiB + 77, 12345);
  model.Write(*c, 9 * kMiB, 64 * kKiB, 12, LIBNBD_CMD_FLAG_FUA);
  model.CheckAround(*c, 9 * kMiB, 64 * kKiB);

  // Trim reads back as zeros: aligned, unaligned, with FUA.
  c->Trim(32 * kKiB, 0);
  model.Zeroed(0, 32 * kKiB);
  model.CheckAround(*c, 0, 32 * kKiB);
  c->Trim(5000, 1 * kMiB + 3 * 4096 + 200);
  model.Zeroed(1 * kMiB + 3 * 4096 + 200, 5000);
  model.CheckAround(*c, 1 * kMiB + 3 * 4096 + 200, 5000);
  c->Trim(16 * kKiB, 9 * kMiB + 16 * kKiB, LIBNBD_CMD_FLAG_FUA);
  model.Zeroed(9 * kMiB + 16 * kKiB, 16 * kKiB);
  model.CheckAround(*c, 9 * kMiB + 16 * kKiB, 16 * kKiB);

  // Zero reads back as zeros: aligned, unaligned, NO_HOLE, FUA.
  c->Zero(256 * kKiB, 5 * kMiB);
  model.Zeroed(5 * kMiB, 256 * kKiB);
  model.CheckAround(*c, 5 * kMiB, 256 * kKiB);
  c->Zero(100, 2 * kMiB - 50, LIBNBD_CMD_FLAG_NO_HOLE);
  model.Zeroed(2 * kMiB - 50, 100);
  model.CheckAround(*c, 2 * kMiB - 50, 100);
  c->Zero(1 * kMiB + 1, 4 * kMiB + 4096 + 1, LIBNBD_CMD_FLAG_FUA);
  model.Zeroed(4 * kMiB + 4096 + 1, 1 * kMiB + 1);
  model.CheckAround(*c, 4 * kMiB + 4096 + 1, 1 * kMiB + 1);
  // A write over a zeroed range shows again.
  model.Write(*c, 5 * kMiB + 4096, 8192, 13);
  model.CheckAround(*c, 5 * kMiB + 4096, 8192);

  // Extents: a never-written region is a hole; nothing that holds data is
  // claimed to read as zeros.
  CheckAllHole(*c, 16 * kMiB, 32 * kMiB);
  CheckExtentsAgainstModel(*c, model, 0, kDiskSize);

  // A second connection sees the same disk (multi-conn).
  {
    auto c2 = NbdClient::Connect(server->socket());
    model.Check(*c2, 0, 12 * kMiB);
    model.Write(*c2, 10 * kMiB + 5, 4096, 14);
    model.Check(*c, 10 * kMiB, 8192);
  }

  model.CheckAll(*c);
  REQUIRE_NOTHROW(c->Flush());
  c->Shutdown();
  c.reset();

  // A clean stop exits 0; the store reopens with the same content, with
  // size= given (it must match) and without.
  ExitStatus st = server->Stop();
  INFO(server->log());
  REQUIRE(st.success());
  // Nothing above was an error.
  CHECK(server->log().find("error") == std::string::npos);
  for (const char* size_param : {"size=67108864", ""}) {
    std::vector<std::string> params = {"dir=" + dir};
    if (size_param[0] != '\0') params.push_back(size_param);
    INFO("restart with: " << (size_param[0] ? size_param : "(no size=)"));
    server = StartRewind(tmp, params);
    c = NbdClient::Connect(server->socket());
    CHECK(c->Size() == static_cast<int64_t>(kDiskSize));
    model.CheckAll(*c);
    CheckAllHole(*c, 16 * kMiB, 32 * kMiB);
    CheckExtentsAgainstModel(*c, model, 0, kDiskSize);
    c->Shutdown();
    c.reset();
    ExitStatus st2 = server->Stop();
    INFO(server->log());
    REQUIRE(st2.success());
  }
}

TEST_CASE("basic: many requests in flight on several connections read back consistently",
          "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=64M"});
  constexpr int kConns = 3;
  constexpr int kWritesPerConn = 600;
  constexpr uint64_t kBlock = 4096;
  std::vector<std::unique_ptr<NbdClient>> conns;
  for (int i = 0; i < kConns; ++i) conns.push_back(NbdClient::Connect(server->socket()));

  // Connection i writes blocks i, i+kConns, ...: disjoint, so the final
  // content is known whatever the order the server runs them in.
  std::vector<uint8_t> expect(kConns * kWritesPerConn * kBlock);
  int errors = 0;
  int done = 0;
  for (int i = 0; i < kConns; ++i) {
    for (int k = 0; k < kWritesPerConn; ++k) {
      uint64_t block = static_cast<uint64_t>(k) * kConns + i;
      auto data = Pattern(kBlock, 1000 + block);
      std::memcpy(expect.data() + block * kBlock, data.data(), kBlock);
      uint32_t flags = k % 16 == 0 ? LIBNBD_CMD_FLAG_FUA : 0;
      int64_t cookie = conns[i]->AioPwrite(std::move(data), block * kBlock, flags, [&](int err) {
        ++done;
        if (err != 0) ++errors;
      });
      REQUIRE(cookie > 0);
    }
  }
  // All three connections' queues drain.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (done < kConns * kWritesPerConn && std::chrono::steady_clock::now() < deadline) {
    for (auto& c : conns) {
      if (c->InFlight() > 0) REQUIRE(c->Poll(10) != -1);
    }
  }
  REQUIRE(done == kConns * kWritesPerConn);
  CHECK(errors == 0);
  conns[1]->Flush();

  // Every connection reads every other connection's writes.
  for (auto& c : conns) {
    auto got = c->Pread(expect.size(), 0);
    CHECK(FirstDifference(got.data(), expect.data(), expect.size(), 0) == "");
  }
  // Many reads in flight too.
  std::vector<std::vector<uint8_t>> bufs(256, std::vector<uint8_t>(kBlock));
  int reads_done = 0;
  int read_errors = 0;
  for (size_t i = 0; i < bufs.size(); ++i) {
    uint64_t block = (i * 7) % (kConns * kWritesPerConn);
    int64_t cookie = nbd_aio_pread(
        conns[0]->handle(), bufs[i].data(), kBlock, block * kBlock,
        nbd_completion_callback{[](void* u, int* err) {
                                  auto* p = static_cast<std::pair<int*, int*>*>(u);
                                  ++*p->first;
                                  if (*err != 0) ++*p->second;
                                  return 1;
                                },
                                new std::pair<int*, int*>(&reads_done, &read_errors),
                                [](void* u) { delete static_cast<std::pair<int*, int*>*>(u); }},
        0);
    REQUIRE(cookie > 0);
  }
  REQUIRE(conns[0]->Drain(std::chrono::seconds(60)));
  REQUIRE(reads_done == static_cast<int>(bufs.size()));
  CHECK(read_errors == 0);
  for (size_t i = 0; i < bufs.size(); ++i) {
    uint64_t block = (i * 7) % (kConns * kWritesPerConn);
    INFO("block " << block);
    CHECK(FirstDifference(bufs[i].data(), expect.data() + block * kBlock, kBlock, block * kBlock) ==
          "");
  }
}

TEST_CASE("basic: a clean stop keeps every acknowledged write, flushed or not", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=64M"});
  auto c = NbdClient::Connect(server->socket());
  DiskModel model(kDiskSize);
  // Acknowledged, never flushed; then the client drops the connection
  // without NBD_CMD_DISC.  (nbdkit 1.32 itself waits for connected clients
  // on SIGTERM, so the stop comes after they are gone.)
  for (uint64_t i = 0; i < 64; ++i) model.Write(*c, i * 100 * kKiB + i, 4096 + i, 500 + i);
  c->Zero(64 * kKiB, 32 * kMiB);
  model.Zeroed(32 * kMiB, 64 * kKiB);
  c.reset();
  ExitStatus st = server->Stop(std::chrono::seconds(20));
  INFO("nbdkit: " << st.ToString() << "\n" << server->log());
  REQUIRE(st.success());
  server = StartRewind(tmp, {"dir=" + dir});
  c = NbdClient::Connect(server->socket());
  model.CheckAll(*c);
}

TEST_CASE("basic: an unknown export name is refused, the default export still served",
          "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=16M"});
  for (const char* name : {"no-such-disk", "nosuch@", "../etc"}) {
    NbdClientOptions o;
    o.export_name = name;
    std::string err = TryConnect(server->socket(), o);
    INFO("export name '" << name << "'");
    CHECK(err != "");
    CHECK(server->log().find(fmt::format("unknown export '{}'", name)) != std::string::npos);
  }
  REQUIRE(server->Running());
  auto c = NbdClient::Connect(server->socket());
  CHECK(c->Size() == static_cast<int64_t>(16 * kMiB));
}

}  // namespace
}  // namespace rwd::test
