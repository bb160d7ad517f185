// Checkpoints through the rewind CLI while the plugin serves writes, and the
// CLI's list/info online (through the control socket) and offline (after
// nbdkit was killed or stopped).
#include <atomic>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

constexpr uint64_t kGiB = 1ull << 30;
// A large sparse disk (PRODUCT.md's example size): a checkpoint must not
// depend on the disk's size.
constexpr uint64_t kDiskSize = 20 * kGiB;

// Writes 4 KiB blocks in a loop on its own connection, flushing now and
// then, until stopped; counts acknowledged writes.
class BackgroundWriter {
 public:
  explicit BackgroundWriter(const std::string& socket)
      : client_(NbdClient::Connect(socket)), thread_([this] { Run(); }) {}
  ~BackgroundWriter() { Stop(); }

  uint64_t acked() const { return acked_.load(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::string error() {
    std::lock_guard lock(mu_);
    return error_;
  }
  // Waits until more than n writes are acknowledged.
  bool WaitAckedAbove(uint64_t n, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (acked_.load() <= n) {
      if (std::chrono::steady_clock::now() >= deadline || !error().empty()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

 private:
  void Run() {
    std::mt19937_64 rng(42);
    try {
      for (uint64_t i = 0; !stop_; ++i) {
        // Mostly sequential through the first 64 MiB, sometimes anywhere on
        // the disk.  (Few extents: deleting a sparse image with thousands of
        // them takes seconds on a filesystem mounted with discard.)
        uint64_t offset = i % 64 == 0 ? (rng() % (kDiskSize / 4096)) * 4096
                                      : (i % 16384) * uint64_t{4096};
        client_->Pwrite(Pattern(4096, i), offset);
        acked_.fetch_add(1);
        if (i % 32 == 31) client_->Flush();
      }
      client_->Flush();
    } catch (const std::exception& e) {
      std::lock_guard lock(mu_);
      error_ = e.what();
    }
  }

  std::unique_ptr<NbdClient> client_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> acked_{0};
  std::mutex mu_;
  std::string error_;
  std::thread thread_;
};

bool IsOffline(const nlohmann::json& info) {
  return !info.contains("online") || info["online"] == false;
}

// The checkpoints of `rewind list DIR --json`.
nlohmann::json ListCheckpoints(const std::string& dir) {
  nlohmann::json j = RunCliJson({"list", dir, "--json"});
  INFO(j.dump());
  REQUIRE(j.contains("checkpoints"));
  REQUIRE(j["checkpoints"].is_array());
  return j["checkpoints"];
}

TEST_CASE("checkpoint: the CLI takes checkpoints while the plugin serves writes, online and "
          "offline",
          "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=20G"});

  struct Taken {
    std::string name;
    uint64_t id;
    uint64_t lsn;
  };
  std::vector<Taken> taken;
  double slowest = 0;
  {
    BackgroundWriter writer(server->socket());
    constexpr int kCheckpoints = 10;
    uint64_t prev_lsn = 0;
    uint64_t acked_at_prev = 0;
    for (int i = 1; i <= kCheckpoints; ++i) {
      // At least one more write returned since the previous checkpoint, so
      // this one must have a larger LSN.
      INFO("writer error: " << writer.error());
      REQUIRE(writer.WaitAckedAbove(acked_at_prev, std::chrono::seconds(20)));
      const uint64_t acked_before = writer.acked();
      const std::string name = fmt::format("cp{}", i);
      ProcResult r = RunCli({"checkpoint", dir, "--name", name, "--json"});
      INFO(r.Describe());
      REQUIRE(r.ok());
      slowest = std::max(slowest, r.seconds);
      // The CLI is a process start plus one request; the checkpoint itself
      // is O(1) however big the disk.
      CHECK(r.seconds < 2.0);
      nlohmann::json cp = nlohmann::json::parse(r.out, nullptr, false);
      REQUIRE_FALSE(cp.is_discarded());
      REQUIRE(cp.is_object());
      CHECK(cp.value("name", "") == name);
      CHECK(cp.value("kind", "") == "disk");
      REQUIRE(cp.contains("lsn"));
      REQUIRE(cp["lsn"].is_number_unsigned());
      REQUIRE(cp.contains("id"));
      const uint64_t lsn = cp["lsn"].get<uint64_t>();
      const uint64_t id = cp["id"].get<uint64_t>();
      // Increasing, and covering every write acknowledged before the call
      // (each write has its own LSN, from 1).
      CHECK(lsn > prev_lsn);
      CHECK(lsn >= acked_before);
      CHECK(id == static_cast<uint64_t>(i));
      CHECK(cp.contains("time_ns"));
      taken.push_back({name, id, lsn});
      prev_lsn = lsn;
      acked_at_prev = writer.acked();
    }

    // The timeline, online, while the writes go on.
    nlohmann::json list = ListCheckpoints(dir);
    INFO(list.dump());
    REQUIRE(list.size() == taken.size());
    for (size_t i = 0; i < taken.size(); ++i) {
      CHECK(list[i].value("name", "") == taken[i].name);
      CHECK(list[i].value("lsn", uint64_t{0}) == taken[i].lsn);
      CHECK(list[i].value("id", uint64_t{0}) == taken[i].id);
    }
    nlohmann::json info = RunCliJson({"info", dir, "--json"});
    INFO(info.dump());
    CHECK(info.value("online", false) == true);
    CHECK(info.value("checkpoints", uint64_t{0}) == taken.size());
    CHECK(info.value("size", uint64_t{0}) == kDiskSize);
    CHECK(info.value("block_size", uint64_t{0}) == 4096);
    CHECK(info.value("format_version", uint64_t{0}) == 2);
    CHECK(info.value("newest_lsn", uint64_t{0}) >= taken.back().lsn);
    CHECK(info.value("redo_records", uint64_t{0}) >= taken.back().lsn);

    writer.Stop();
    CHECK(writer.error() == "");
  }
  std::cerr << fmt::format("checkpoint: slowest `rewind checkpoint` took {:.3f} s\n", slowest);

  // Crash: every checkpoint was durable when the CLI returned.  The CLI
  // finds nobody on the stale control.sock and opens the store itself.
  server->Kill9();
  {
    nlohmann::json list = ListCheckpoints(dir);
    INFO("after kill -9: " << list.dump());
    REQUIRE(list.size() == taken.size());
    for (size_t i = 0; i < taken.size(); ++i) {
      CHECK(list[i].value("name", "") == taken[i].name);
      CHECK(list[i].value("lsn", uint64_t{0}) == taken[i].lsn);
    }
    nlohmann::json info = RunCliJson({"info", dir, "--json"});
    INFO(info.dump());
    CHECK(IsOffline(info));
    CHECK(info.value("checkpoints", uint64_t{0}) == taken.size());
    // A durable checkpoint implies the writes it covers are durable.
    CHECK(info.value("newest_lsn", uint64_t{0}) >= taken.back().lsn);
  }

  // A checkpoint offline, then the plugin again: it sees all of them.
  {
    nlohmann::json cp = RunCliJson({"checkpoint", dir, "--name", "offline-1", "--json"});
    INFO(cp.dump());
    CHECK(cp.value("name", "") == "offline-1");
    CHECK(cp.value("lsn", uint64_t{0}) >= taken.back().lsn);
    CHECK(cp.value("id", uint64_t{0}) == taken.size() + 1);
  }
  server = StartRewind(tmp, {"dir=" + dir});
  {
    nlohmann::json list = ListCheckpoints(dir);
    INFO(list.dump());
    REQUIRE(list.size() == taken.size() + 1);
    CHECK(list.back().value("name", "") == "offline-1");
    nlohmann::json info = RunCliJson({"info", dir, "--json"});
    CHECK(info.value("online", false) == true);
    CHECK(info.value("checkpoints", uint64_t{0}) == taken.size() + 1);

    // A name is unique within a store.
    ProcResult dup = RunCli({"checkpoint", dir, "--name", "cp3", "--json"});
    INFO(dup.Describe());
    CHECK_FALSE(dup.ok());
    CHECK(NonEmptyLines(dup.err).size() == 1);
    CHECK(dup.err.find("cp3") != std::string::npos);
    CHECK(ListCheckpoints(dir).size() == taken.size() + 1);

    // Without --name the store picks cp-<id>.
    nlohmann::json unnamed = RunCliJson({"checkpoint", dir, "--json"});
    CHECK(unnamed.value("name", "") == fmt::format("cp-{}", taken.size() + 2));
  }

  // A clean stop, then offline again.
  ExitStatus st = server->Stop();
  INFO(server->log());
  REQUIRE(st.success());
  nlohmann::json info = RunCliJson({"info", dir, "--json"});
  INFO(info.dump());
  CHECK(IsOffline(info));
  CHECK(info.value("checkpoints", uint64_t{0}) == taken.size() + 2);
  CHECK(ListCheckpoints(dir).size() == taken.size() + 2);
}

}  // namespace
}  // namespace rwd::test

namespace rwd::test {
namespace {

// Regression: a checkpoint that was the last thing committed (no write
// after it) left the store waiting forever for it to be "applied" to the
// image: Extents, Close (so nbdkit's clean exit) and the CLI's offline
// `rewind checkpoint` hung.
TEST_CASE("checkpoint: extents, clean stop and offline checkpoint right after a checkpoint "
          "do not hang",
          "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=16M"});
  auto c = NbdClient::Connect(server->socket());
  c->Pwrite(Pattern(4096, 1), 0);
  c->Flush();
  RunCliJson({"checkpoint", dir, "--name", "last", "--json"});

  // Block status answers (polled with a deadline, so a hang fails the test).
  bool done = false;
  int error = -1;
  REQUIRE(c->AioBlockStatus(1 << 20, 0, [&](int err) {
    done = true;
    error = err;
  }) > 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done && std::chrono::steady_clock::now() < deadline) {
    REQUIRE(c->Poll(100) != -1);
  }
  CHECK(done);
  CHECK(error == 0);
  c.reset();

  // nbdkit exits cleanly and promptly on SIGTERM.
  ExitStatus st = server->Stop(std::chrono::seconds(10));
  INFO(server->log());
  CHECK(st.success());

  // Offline: checkpoint then close the store.
  ProcResult r = RunCli({"checkpoint", dir, "--name", "offline", "--json"}, std::chrono::seconds(10));
  INFO(r.Describe());
  CHECK(r.ok());
  r = RunCli({"checkpoint", dir, "--json"}, std::chrono::seconds(10));
  INFO(r.Describe());
  CHECK(r.ok());
}

}  // namespace
}  // namespace rwd::test
