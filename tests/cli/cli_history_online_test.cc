// `rewind rollback`, `diff`, `verify` and `prune` while the plugin serves the
// store: the CLI asks the plugin over DIR/control.sock.  Rollback and prune
// are refused while an NBD client has the live disk open for writing (the
// plugin's exclusive hook).  Needs nbdkit (skipped, exit 77, without it).
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "cli_util.h"
#include "restore_util.h"
#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

using nlohmann::json;

constexpr uint64_t kSize = 16 << 20;
constexpr uint64_t kMiB = 1 << 20;

// Runs the CLI, again while the plugin still counts a client that has just
// disconnected (nbdkit closes its handle after the client has gone: a
// writer, or a time-travel export's snapshot), for at most 5 s.
ProcResult RunWhenFree(const std::vector<std::string>& args) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    ProcResult r = RunCli(args);
    const bool busy = r.status.code == 1 && (r.err.find("open for writing") != std::string::npos ||
                                             r.err.find("snapshot") != std::string::npos);
    if (!busy || std::chrono::steady_clock::now() > deadline) return r;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string ReadLive(const std::string& socket) {
  auto nbd = NbdClient::Connect(socket);
  std::vector<uint8_t> bytes = nbd->Pread(kSize, 0);
  nbd->Shutdown();
  return std::string(bytes.begin(), bytes.end());
}

uint64_t NewestLsn(const std::string& dir) {
  json info = RunCliJson({"info", dir, "--json"});
  REQUIRE(info["online"] == true);
  return info["newest_lsn"].get<uint64_t>();
}

TEST_CASE("rollback online: refused while a client writes, then the disk reads the old data",
          "[cli][history][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  auto nbd = NbdClient::Connect(server->socket());
  DiskImage model(kSize);
  auto write = [&](uint64_t offset, std::vector<uint8_t> data) {
    nbd->Pwrite(data, offset);
    model.Write(offset, data);
  };
  write(3 * kMiB, Pattern(256 << 10, 21));
  nbd->Flush();
  const std::string state_a = model.bytes();
  REQUIRE(RunCli({"checkpoint", dir, "--name", "one"}).ok());
  write(3 * kMiB + 4096, Pattern(128 << 10, 22));
  write(8 * kMiB, Pattern(64 << 10, 23));
  nbd->Flush();
  const std::string state_b = model.bytes();

  // A client holds the live disk open for writing: rollback and prune are
  // refused, and nothing is changed (no before-rollback checkpoint either).
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"rollback", dir, "--to", "one"},
        std::vector<std::string>{"prune", dir, "--keep-last", "1"}}) {
    ProcResult r = RunCli(args);
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CHECK(r.out.empty());
    CheckOneLineError(r, args[0]);
    CHECK(r.err.find("1 client has the live disk open for writing") != std::string::npos);
  }
  CHECK(NamesOf(RunCli({"list", dir, "--json"}).out) == std::vector<std::string>{"one"});
  CHECK(nbd->Pread(kSize, 0) == std::vector<uint8_t>(state_b.begin(), state_b.end()));
  nbd->Shutdown();
  nbd.reset();

  // A read-only time-travel export does not count as a writer.
  auto past = NbdClient::Connect(server->socket(), {"@one"});
  ProcResult r = RunWhenFree({"rollback", dir, "--to", "one"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(r.err.empty());
  std::smatch m;
  REQUIRE(std::regex_match(
      r.out, m,
      std::regex(R"(rolled back to lsn 1 \(checkpoint one, .* UTC\); the state before is )"
                 R"(checkpoint (before-rollback-\d{8}T\d{6}Z(-\d+)?): 'rewind rollback )" +
                 dir + R"( --to \1' undoes it\nexamined .*, rewrote 192 KiB, \d+\.\d s\n)")));
  const std::string before = m[1];
  CHECK(past->Pread(kSize, 0) == std::vector<uint8_t>(state_a.begin(), state_a.end()));
  past->Shutdown();

  // The live disk reads the old data over NBD and through restore.
  CHECK(ReadLive(server->socket()) == state_a);
  const uint64_t newest = NewestLsn(dir);
  REQUIRE(
      RunCli({"restore", dir, "--to", fmt::format("lsn:{}", newest), "--output", tmp / "now.raw"})
          .ok());
  CHECK(CompareFile(tmp / "now.raw", state_a) == "");

  // Rolling back to the before-rollback checkpoint undoes it.
  r = RunWhenFree({"rollback", dir, "--to", before, "--json"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  json j = json::parse(r.out);
  CHECK(j["point"]["checkpoint"] == before);
  CHECK(j["point"]["lsn"] == 3);
  CHECK(j["before"]["lsn"] == newest);
  CHECK(j["rewritten_bytes"] == 192 << 10);
  CHECK(ReadLive(server->socket()) == state_b);
  CHECK(NamesOf(RunCli({"list", dir, "--json"}).out).size() == 3);
  REQUIRE(server->Running());
}

TEST_CASE("diff, verify and prune online through the plugin", "[cli][history][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  auto nbd = NbdClient::Connect(server->socket());
  DiskImage model(kSize);
  auto write = [&](uint64_t offset, std::vector<uint8_t> data) {
    nbd->Pwrite(data, offset);
    model.Write(offset, data);
  };
  write(3 * kMiB, Pattern(256 << 10, 31));
  nbd->Flush();
  const std::string state_a = model.bytes();
  REQUIRE(RunCli({"checkpoint", dir, "--name", "one"}).ok());
  write(3 * kMiB + 4096, Pattern(128 << 10, 32));
  nbd->Zero(64 << 10, 10 * kMiB);  // zeros over zeros: written, but no difference
  write(12 * kMiB, Pattern(64 << 10, 33));
  nbd->Flush();
  REQUIRE(RunCli({"checkpoint", dir, "--name", "two"}).ok());
  const std::string state_b = model.bytes();

  // diff, with the writer still connected: it changes nothing.
  {
    ProcResult r = RunCli({"diff", dir, "--from", "one", "--to", "two"});
    INFO(r.Describe());
    REQUIRE(r.ok());
    std::vector<std::string> lines = NonEmptyLines(r.out);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0] == "3149824 131072  (128 KiB at 3.0 MiB)");
    CHECK(lines[1] == "12582912 65536  (64 KiB at 12 MiB)");
    CHECK(lines[2].rfind("2 ranges, 192 KiB (196608 bytes) differ between lsn 1 (checkpoint one, ",
                         0) == 0);
    CHECK(lines[2].find("; 3 records between them") != std::string::npos);
    json j = RunCliJson({"diff", dir, "--from", "two", "--to", "one", "--json"});
    json want = json::array();
    for (auto [off, len] : SectorDiff(state_a, state_b)) {
      want.push_back(json{{"offset", off}, {"length", len}});
    }
    CHECK(j["ranges"] == want);
    CHECK(j["bytes"] == 192 << 10);
    CHECK(j["records"] == 3);
    CHECK(j["from"]["checkpoint"] == "two");
    CHECK(j["to"]["checkpoint"] == "one");
  }
  // verify, too.
  {
    ProcResult r = RunCli({"verify", dir});
    INFO(r.Describe());
    REQUIRE(r.ok());
    CHECK(std::regex_match(r.out, std::regex(R"(checked 4 redo records, .*: clean\n)")));
    json j = RunCliJson({"verify", dir, "--json"});
    CHECK(j["clean"] == true);
    CHECK(j["redo_records"] == 4);
    CHECK(j["checkpoints"] == 2);
  }
  // prune: a dry run is answered while the client writes, and changes nothing.
  const std::string list_before = RunCli({"list", dir, "--json"}).out;
  {
    json j = RunCliJson({"prune", dir, "--keep-last", "1", "--dry-run", "--json"});
    CHECK(j["dry_run"] == true);
    CHECK(j["dropped"].size() == 1);
    CHECK(j["history_start_lsn"] == 4);
    CHECK(RunCli({"list", dir, "--json"}).out == list_before);
    REQUIRE(RunCli({"restore", dir, "--to", "lsn:1", "--output", tmp / "a.raw"}).ok());
    CHECK(CompareFile(tmp / "a.raw", state_a) == "");
  }
  nbd->Shutdown();
  nbd.reset();
  // An open time-travel export holds a snapshot: the store refuses.
  {
    auto past = NbdClient::Connect(server->socket(), {"@one"});
    ProcResult r = RunCli({"prune", dir, "--keep-last", "1"});
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CheckOneLineError(r, "prune");
    CHECK(r.err.find("snapshot") != std::string::npos);
    past->Shutdown();
  }
  ProcResult r = RunWhenFree({"prune", dir, "--keep-last", "1"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(ValueOf(r.out, "history") == "starts at lsn 4");
  CHECK(ValueOf(r.out, "checkpoints") == "kept 1, dropped 1");
  CHECK(NamesOf(RunCli({"list", dir, "--json"}).out) == std::vector<std::string>{"two"});
  for (const auto& [to, says] : std::vector<std::pair<std::string, std::string>>{
           {"lsn:1", "older than the history kept"}, {"one", "no checkpoint named 'one'"}}) {
    ProcResult refused = RunCli({"restore", dir, "--to", to, "--output", tmp / "x.raw"});
    INFO(refused.Describe());
    CHECK(refused.status.code == 1);
    CheckOneLineError(refused, "restore");
    CHECK(refused.err.find(says) != std::string::npos);
  }
  REQUIRE(RunCli({"restore", dir, "--to", "two", "--output", tmp / "b.raw"}).ok());
  CHECK(CompareFile(tmp / "b.raw", state_b) == "");
  REQUIRE(server->Running());
}

}  // namespace
}  // namespace rwd::test
