// Time-travel exports over NBD: "@NAME", "@lsn:N" and "@time:ISO" are
// read-only views of the disk at a point of history, listed (checkpoints)
// by NBD_OPT_LIST, refused when the point is unknown, and stable while the
// live disk is overwritten.
#include <libnbd.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kSize = 16 * kMiB;

std::unique_ptr<NbdClient> ConnectExport(const std::string& socket, const std::string& name) {
  NbdClientOptions o;
  o.export_name = name;
  return NbdClient::Connect(socket, o);
}

bool Listed(const std::vector<std::pair<std::string, std::string>>& list, const std::string& name) {
  for (const auto& e : list) {
    if (e.first == name) return true;
  }
  return false;
}

TEST_CASE("time travel: @checkpoint, @lsn:N and @time: read the past, read-only", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  auto live = NbdClient::Connect(server->socket());

  const auto a = Pattern(kMiB, 21);
  const auto b = Pattern(kMiB, 22);
  live->Pwrite(a, 2 * kMiB);
  live->Flush();
  nlohmann::json cp = RunCliJson({"checkpoint", dir, "--name", "one", "--json"});
  const uint64_t lsn_a = cp["lsn"];
  const std::string time_a = cp["time"];
  live->Pwrite(b, 2 * kMiB);
  live->Flush();
  REQUIRE(live->Pread(kMiB, 2 * kMiB) == b);

  for (const std::string& name :
       {std::string("@one"), fmt::format("@lsn:{}", lsn_a), "@time:" + time_a}) {
    INFO("export " << name);
    auto past = ConnectExport(server->socket(), name);
    CHECK(past->Size() == static_cast<int64_t>(kSize));
    CHECK(past->IsReadOnly());
    CHECK(past->Pread(kMiB, 2 * kMiB) == a);
    CHECK(past->Pread(kMiB, 0) == std::vector<uint8_t>(kMiB, 0));
    // libnbd refuses to send a write to a read-only export...
    try {
      past->Pwrite(Pattern(4096, 1), 2 * kMiB);
      FAIL("a write to " << name << " succeeded");
    } catch (const NbdError& e) {
      CHECK(e.error() == EPERM);
    }
    // ...and so does the server when the client sends one anyway.
    REQUIRE(nbd_set_strict_mode(past->handle(), 0) == 0);
    std::vector<uint8_t> junk = Pattern(4096, 2);
    CHECK(nbd_pwrite(past->handle(), junk.data(), junk.size(), 2 * kMiB, 0) == -1);
    CHECK(nbd_get_errno() == EPERM);
    CHECK(nbd_trim(past->handle(), 4096, 2 * kMiB, 0) == -1);
    CHECK(nbd_get_errno() == EPERM);
    CHECK(past->Pread(kMiB, 2 * kMiB) == a);
  }
  // lsn:0 is the disk as created.
  CHECK(ConnectExport(server->socket(), "@lsn:0")->Pread(kMiB, 2 * kMiB) ==
        std::vector<uint8_t>(kMiB, 0));
  // The newest write is the live disk's state.
  nlohmann::json info = RunCliJson({"info", dir, "--json"});
  CHECK(ConnectExport(server->socket(), fmt::format("@lsn:{}", info["newest_lsn"].get<uint64_t>()))
            ->Pread(kMiB, 2 * kMiB) == b);
  // Nothing written to the past reached the live disk.
  CHECK(live->Pread(kMiB, 2 * kMiB) == b);
}

TEST_CASE("time travel: the export list shows the live disk and every checkpoint", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  REQUIRE(RunCli({"checkpoint", dir, "--name", "one"}).ok());
  REQUIRE(RunCli({"checkpoint", dir, "--name", "two"}).ok());

  auto list = ListExportsWithDescriptions(server->socket());
  INFO("exports: " << list.size());
  CHECK(Listed(list, ""));
  CHECK(Listed(list, "@one"));
  CHECK(Listed(list, "@two"));
  CHECK(list.size() == 3);

  // nbdinfo --list, as an operator would run it.
  if (!FindInPath("nbdinfo").empty()) {
    ProcResult r =
        RunProcess({"nbdinfo", "--list", "--json", "nbd+unix:///?socket=" + server->socket()});
    INFO(r.Describe());
    REQUIRE(r.ok());
    nlohmann::json j = nlohmann::json::parse(r.out);
    std::vector<std::string> names;
    for (const auto& e : j["exports"]) names.push_back(e["export-name"]);
    CHECK(names == std::vector<std::string>{"", "@one", "@two"});
    for (const auto& e : j["exports"]) {
      CHECK(e["is_read_only"] == (e["export-name"] != ""));
    }
  }
}

TEST_CASE("time travel: unknown points and names are refused at the handshake", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  REQUIRE(RunCli({"checkpoint", dir, "--name", "one"}).ok());
  for (const std::string& name : std::vector<std::string>{
           "@nope", "@lsn:999", "@time:2001-01-01T00:00:00Z", "@bad/name", "disk", "@"}) {
    NbdClientOptions o;
    o.export_name = name;
    std::string err = TryConnect(server->socket(), o);
    INFO("export '" << name << "': " << err);
    CHECK_FALSE(err.empty());
  }
  // The server is unharmed.
  CHECK(ConnectExport(server->socket(), "@one")->Size() == static_cast<int64_t>(kSize));
  CHECK(server->Running());
}

// A snapshot export opened before a storm of overwrites keeps reading the
// old content, whatever the live disk does meanwhile.
TEST_CASE("time travel: a snapshot export is stable while the live disk is overwritten", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  auto live = NbdClient::Connect(server->socket());
  const auto a = Pattern(4 * kMiB, 31);
  live->Pwrite(a, 4 * kMiB);
  live->Flush();
  REQUIRE(RunCli({"checkpoint", dir, "--name", "one"}).ok());
  auto past = ConnectExport(server->socket(), "@one");

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};
  std::string writer_error;
  std::thread writer([&] {
    try {
      auto w = NbdClient::Connect(server->socket());
      for (uint64_t i = 0; !stop; ++i) {
        // Sizes and offsets that cross blocks in every way, over the range
        // the snapshot reads; now and then a zero or a trim.
        uint64_t off = 4 * kMiB + (i * 12289) % (4 * kMiB - 70000);
        if (i % 17 == 5) {
          w->Zero(65536, off - off % 4096);
        } else if (i % 23 == 7) {
          w->Trim(8192, off - off % 4096);
        } else {
          w->Pwrite(Pattern(1000 + (i * 7919) % 65536, 1000 + i), off);
        }
        if (i % 16 == 15) w->Flush();
        writes++;
      }
    } catch (const std::exception& e) {
      writer_error = e.what();
    }
  });
  // Read the snapshot whole and in odd pieces while the writer runs.
  int rounds = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    auto got = past->Pread(4 * kMiB, 4 * kMiB);
    std::string diff = FirstDifference(got.data(), a.data(), a.size(), 4 * kMiB);
    INFO("round " << rounds << ": " << diff);
    REQUIRE(diff.empty());
    uint64_t off = (rounds * 4099) % (3 * kMiB);
    auto piece = past->Pread(100000, 4 * kMiB + off);
    REQUIRE(FirstDifference(piece.data(), a.data() + off, piece.size(), 4 * kMiB + off).empty());
    rounds++;
  }
  stop = true;
  writer.join();
  INFO(writer_error);
  CHECK(writer_error.empty());
  CHECK(writes > 100);
  CHECK(rounds > 5);
  // A snapshot opened now (after the storm) still sees the checkpoint, and
  // the live disk is not the checkpoint any more.
  CHECK(ConnectExport(server->socket(), "@one")->Pread(4 * kMiB, 4 * kMiB) == a);
  CHECK(live->Pread(4 * kMiB, 4 * kMiB) != a);
}

}  // namespace
}  // namespace rwd::test
