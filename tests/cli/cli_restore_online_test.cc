// `rewind restore` while the plugin serves the store: the CLI asks the
// plugin over DIR/control.sock, and the plugin writes the image while its
// clients keep using the live disk.  Needs nbdkit (skipped, exit 77,
// without it).
#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli_util.h"
#include "restore_util.h"
#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSize = 16 << 20;
constexpr uint64_t kMiB = 1 << 20;

uint64_t NewestLsn(const std::string& dir) {
  nlohmann::json info = RunCliJson({"info", dir, "--json"});
  REQUIRE(info["online"] == true);
  return info["newest_lsn"].get<uint64_t>();
}

TEST_CASE("restore online through the plugin", "[cli][restore][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  auto nbd = NbdClient::Connect(server->socket());
  DiskImage model(kSize);

  auto a = Pattern(256 << 10, 11);
  nbd->Pwrite(a, 3 * kMiB);
  model.Write(3 * kMiB, a);
  nbd->Flush();
  const std::string state_a = model.bytes();
  const uint64_t lsn_a = NewestLsn(dir);
  REQUIRE(RunCli({"checkpoint", dir, "--name", "one"}).ok());
  auto b = Pattern(128 << 10, 12);
  nbd->Pwrite(b, 3 * kMiB + 4096);
  model.Write(3 * kMiB + 4096, b);
  nbd->Flush();
  const uint64_t lsn_b = NewestLsn(dir);
  REQUIRE(lsn_b > lsn_a);

  fs::create_directory(tmp / "out");
  {
    ProcResult r = RunCli({"restore", dir, "--to", "one", "--output", tmp / "out/one.raw"});
    INFO(r.Describe());
    REQUIRE(r.ok());
    CHECK(r.err.empty());
    CHECK(std::regex_match(
        r.out, std::regex(R"(restored lsn \d+ \(checkpoint one, .* UTC\) to )" +
                          tmp / "out/one.raw" + R"(: 16 MiB, .* from the journal, \d+\.\d s\n)")));
    CHECK(CompareFile(tmp / "out/one.raw", state_a) == "");
  }
  {
    nlohmann::json j = RunCliJson({"restore", dir, "--to", fmt::format("lsn:{}", lsn_a), "--output",
                                   tmp / "out/a.raw", "--json"});
    CHECK(j["point"]["lsn"] == lsn_a);
    CHECK(j["point"]["text"] == fmt::format("lsn:{}", lsn_a));
    CHECK(j["output"] == tmp / "out/a.raw");
    CHECK(j["bytes"] == kSize);
    CHECK(j["data_bytes"] == a.size());
    CHECK(j["seconds"].is_number());
    CHECK(CompareFile(tmp / "out/a.raw", state_a) == "");
  }
  {
    ProcResult r = RunCli(
        {"restore", dir, "--to", fmt::format("lsn:{}", lsn_b), "--output", tmp / "out/b.raw"});
    INFO(r.Describe());
    REQUIRE(r.ok());
    CHECK(CompareFile(tmp / "out/b.raw", model.bytes()) == "");
  }
  // A relative output is the CLI's, not the plugin's working directory.
  {
    ProcResult r = RewindIn(tmp / "out", {"restore", dir, "--to", "one", "--output", "rel.raw"});
    INFO(r.Describe());
    REQUIRE(r.ok());
    CHECK(CompareFile(tmp / "out/rel.raw", state_a) == "");
  }
  // --force, and the errors, as offline.
  {
    ProcResult r = RunCli({"restore", dir, "--to", "lsn:0", "--output", tmp / "out/one.raw"});
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CheckOneLineError(r, "restore");
    CHECK(r.err.find("--force") != std::string::npos);
    CHECK(CompareFile(tmp / "out/one.raw", state_a) == "");
    r = RunCli({"restore", dir, "--to", "lsn:0", "--output", tmp / "out/one.raw", "--force"});
    INFO(r.Describe());
    REQUIRE(r.ok());
    CHECK(CompareFile(tmp / "out/one.raw", std::string(kSize, '\0')) == "");
  }
  for (const auto& [to, output, says] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"nope", tmp / "out/x.raw", "no checkpoint named 'nope'"},
           {"lsn:100000", tmp / "out/x.raw", "beyond the newest write"},
           {"one", tmp / "out/missing/x.raw", "does not exist"},
           {"one", dir + "/image.raw", "inside the store directory"}}) {
    ProcResult r = RunCli({"restore", dir, "--to", to, "--output", output, "--force"});
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CheckOneLineError(r, "restore");
    CHECK(r.err.find(says) != std::string::npos);
    CHECK_FALSE(fs::exists(tmp / "out/x.raw"));
  }
  CHECK(TempFilesIn(tmp / "out").empty());

  // The live disk kept serving and is unchanged.
  CHECK(nbd->Pread(kSize, 0) == std::vector<uint8_t>(model.bytes().begin(), model.bytes().end()));
  REQUIRE(server->Running());
}

// A sparse disk large enough that its restore runs for a while.
TEST_CASE("an online restore is cancelled by SIGINT or by the CLI's death", "[cli][restore][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=64G"});
  REQUIRE(RunCli({"checkpoint", dir, "--name", "c"}).ok());
  fs::create_directory(tmp / "out");
  const std::string err_file = tmp / "err.txt";
  auto spawn = [&] {
    return SpawnProcess(
        {REWIND_CLI_PATH, "restore", dir, "--to", "c", "--output", tmp / "out/big.raw"}, "",
        err_file);
  };

  SECTION("SIGINT") {
    pid_t pid = spawn();
    bool started = WaitForTempFile(tmp / "out", std::chrono::seconds(20));
    ::kill(pid, SIGINT);
    ExitStatus status;
    REQUIRE(WaitForExit(pid, std::chrono::seconds(20), &status));
    INFO("stderr: " << ReadFile(err_file));
    REQUIRE(started);
    CHECK(status.code == 1);
    CHECK(ReadFile(err_file) == "rewind: restore: restore interrupted\n");
  }
  SECTION("SIGKILL") {
    pid_t pid = spawn();
    bool started = WaitForTempFile(tmp / "out", std::chrono::seconds(20));
    ::kill(pid, SIGKILL);
    ExitStatus status;
    REQUIRE(WaitForExit(pid, std::chrono::seconds(20), &status));
    REQUIRE(started);
    CHECK(status.signal == SIGKILL);
  }
  // The plugin notices that its client has gone and removes its temporary
  // file; it still serves.
  CHECK(WaitNoTempFile(tmp / "out", std::chrono::seconds(5)));
  CHECK(DirListing(tmp / "out").empty());
  CHECK(RunCliJson({"info", dir, "--json"})["online"] == true);
  CHECK(NbdClient::Connect(server->socket())->Size() == 64ll << 30);
}

}  // namespace
}  // namespace rwd::test
