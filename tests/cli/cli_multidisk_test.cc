// The CLI on a store of several disks (the plugin's disk=NAME): info lists
// the disks, restore and diff name one with --disk and refuse to guess, and
// one POINT restored for each disk gives images from one instant.  The same
// commands offline (the CLI opens the store) and online (the plugin answers
// over DIR/control.sock).  Needs nbdkit, which creates the store (skipped,
// exit 77, without it).
#include <catch2/catch.hpp>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

using nlohmann::json;

constexpr uint64_t kSizeA = 4 << 20;
constexpr uint64_t kSizeB = 2 << 20;

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteDisk(const std::string& socket, const std::string& disk, uint64_t offset,
               const std::vector<uint8_t>& data) {
  NbdClientOptions o;
  o.export_name = disk;
  auto nbd = NbdClient::Connect(socket, o);
  nbd->Pwrite(data, offset);
  nbd->Flush();
  nbd->Shutdown();
}

// What disk `disk` must hold: zeros with data at offset.
std::string Expected(uint64_t size, uint64_t offset, const std::vector<uint8_t>& data) {
  std::string s(size, '\0');
  std::copy(data.begin(), data.end(), s.begin() + static_cast<ptrdiff_t>(offset));
  return s;
}

void CheckCommands(const std::string& dir, const TempDir& tmp, bool online,
                   const std::vector<uint8_t>& a1, const std::vector<uint8_t>& b1) {
  INFO((online ? "online" : "offline"));
  json info = RunCliJson({"info", dir, "--json"});
  CHECK(info["online"] == online);
  REQUIRE(info["disks"].size() == 2);
  CHECK(info["disks"][0]["name"] == "os");
  CHECK(info["disks"][0]["size"] == kSizeA);
  CHECK(info["disks"][1]["name"] == "data");
  CHECK(info["disks"][1]["size"] == kSizeB);
  ProcResult text = RunCli({"info", dir});
  CHECK(text.out.find("disk os") != std::string::npos);
  CHECK(text.out.find("disk data") != std::string::npos);

  // No --disk: refused, naming the disks and the option.
  const std::string out = tmp / (online ? "on.raw" : "off.raw");
  ProcResult r = RunCli({"restore", dir, "--to", "c1", "--output", out});
  INFO(r.Describe());
  CheckOneLineError(r, "restore");
  CHECK(r.err.find("os, data") != std::string::npos);
  CHECK(r.err.find("--disk") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(out));
  ProcResult unknown = RunCli({"restore", dir, "--disk", "swap", "--to", "c1", "--output", out});
  CheckOneLineError(unknown, "restore");
  CHECK(unknown.err.find("no disk 'swap'") != std::string::npos);
  CheckOneLineError(RunCli({"diff", dir, "--from", "lsn:0", "--to", "c1"}), "diff");

  // Each disk at c1 (one instant for both), though both changed since.
  json ra = RunCliJson({"restore", dir, "--disk", "os", "--to", "c1", "--output", out, "--json"});
  CHECK(ra["disk"] == "os");
  CHECK(ReadFileBytes(out) == Expected(kSizeA, 1 << 20, a1));
  json rb = RunCliJson(
      {"restore", dir, "--disk", "data", "--to", "c1", "--output", out, "--force", "--json"});
  CHECK(rb["disk"] == "data");
  CHECK(rb["point"]["lsn"] == ra["point"]["lsn"]);
  CHECK(ReadFileBytes(out) == Expected(kSizeB, 4096, b1));

  // diff: each disk shows its own change only.
  json da = RunCliJson({"diff", dir, "--disk", "os", "--from", "lsn:0", "--to", "c1", "--json"});
  REQUIRE(da["ranges"].size() == 1);
  CHECK(da["ranges"][0]["offset"] == 1 << 20);
  CHECK(da["ranges"][0]["length"] == a1.size());
  json db = RunCliJson({"diff", dir, "--disk", "data", "--from", "lsn:0", "--to", "c1", "--json"});
  REQUIRE(db["ranges"].size() == 1);
  CHECK(db["ranges"][0]["offset"] == 4096);
}

TEST_CASE("cli on a store of several disks: info, restore --disk, diff --disk, offline and online",
          "[cli][multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp("rwclimd");
  const std::string dir = tmp / "store";
  const std::vector<uint8_t> a1 = Pattern(64 << 10, 1), b1 = Pattern(8 << 10, 2);
  {
    auto server = StartRewind(tmp, {"dir=" + dir, "disk=os", "disk=data",
                                    "size=os:" + std::to_string(kSizeA),
                                    "size=data:" + std::to_string(kSizeB)});
    WriteDisk(server->socket(), "os", 1 << 20, a1);
    WriteDisk(server->socket(), "data", 4096, b1);
    REQUIRE(RunCli({"checkpoint", dir, "--name", "c1"}).ok());
    // Both disks change after c1.
    WriteDisk(server->socket(), "os", 1 << 20, Pattern(64 << 10, 3));
    WriteDisk(server->socket(), "data", 4096, Pattern(8 << 10, 4));
    CheckCommands(dir, tmp, /*online=*/true, a1, b1);
    REQUIRE(server->Stop().code == 0);
  }
  CheckCommands(dir, tmp, /*online=*/false, a1, b1);
}

}  // namespace
}  // namespace rwd::test
