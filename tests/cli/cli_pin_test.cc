// `rewind checkpoint --pin`, `rewind pin`, `rewind unpin`, and the pinned
// and "by" columns of `rewind list`, with the store opened by the CLI and
// through a running plugin (which needs nbdkit; that part is skipped, exit
// 77, without it).  The same scenario runs both ways: pin, prune keeps the
// pinned checkpoint and it stays restorable, unpin, the next prune drops it.
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include <rewind/control/protocol.h>
#include <rewind/journal/store.h>

#include "cli_util.h"
#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

using nlohmann::json;
using Run = std::function<ProcResult(const std::vector<std::string>&)>;

constexpr uint64_t kSize = 16 << 20;

json Parse(const ProcResult& r) {
  INFO(r.Describe());
  REQUIRE(r.ok());
  json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

json FindCp(const json& list, const std::string& name) {
  for (const json& c : list.at("checkpoints")) {
    if (c.at("name") == name) return c;
  }
  return nullptr;
}

// The line of `rewind list` naming name.
std::string ListLine(const Run& run, const std::string& dir, const std::string& name) {
  ProcResult r = run({"list", dir});
  INFO(r.Describe());
  REQUIRE(r.ok());
  for (const std::string& line : NonEmptyLines(r.out)) {
    if (std::regex_search(line, std::regex("^\\s*\\d+  " + name + " "))) return line;
  }
  FAIL("no line for " << name);
  return "";
}

// The scenario on the store in dir: run is how the CLI is run (it may retry
// while a plugin is busy); write(n) writes 4 KiB of bytes n at (n - 1) MiB
// and makes them durable.
void PinScenario(const Run& run, const std::string& dir, const std::string& tmp,
                 const std::function<void(int)>& write) {
  write(1);
  ProcResult r = run({"checkpoint", dir, "--name", "golden", "--pin"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(std::regex_match(r.out, std::regex(R"(checkpoint golden at lsn \d+ \(.*\), pinned\n)")));
  write(2);
  json mid = Parse(run({"checkpoint", dir, "--name", "middle", "--json"}));
  CHECK(mid.at("pinned") == false);
  CHECK(mid.at("supervised") == false);
  write(3);
  REQUIRE(run({"checkpoint", dir, "--name", "newest"}).ok());

  json list = Parse(run({"list", dir, "--json"}));
  CHECK(FindCp(list, "golden").at("pinned") == true);
  CHECK(FindCp(list, "golden").at("supervised") == false);
  CHECK(FindCp(list, "middle").at("pinned") == false);
  CHECK(std::regex_search(ListLine(run, dir, "golden"), std::regex("  yes$")));
  CHECK(std::regex_search(ListLine(run, dir, "middle"), std::regex("  no$")));

  // pin and unpin: text, --json, idempotence.
  r = run({"pin", dir, "middle"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(std::regex_match(r.out,
                         std::regex(R"(checkpoint middle \(lsn \d+, .*\) is pinned: prune keeps it\n)")));
  json p = Parse(run({"pin", dir, "middle", "--json"}));
  CHECK(p.at("name") == "middle");
  CHECK(p.at("id") == mid.at("id"));
  CHECK(p.at("pinned") == true);
  CHECK(FindCp(Parse(run({"list", dir, "--json"})), "middle").at("pinned") == true);
  r = run({"unpin", dir, "middle"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(r.out.find("is not pinned: prune may drop it") != std::string::npos);
  p = Parse(run({"unpin", dir, "middle", "--json"}));
  CHECK(p.at("pinned") == false);
  CHECK(FindCp(Parse(run({"list", dir, "--json"})), "middle").at("pinned") == false);

  // Unknown names: exit 1, one line naming it; a bad name: a usage error.
  r = run({"pin", dir, "nope"});
  INFO(r.Describe());
  CHECK(r.status.code == 1);
  CHECK(r.out.empty());
  CheckOneLineError(r, "pin");
  CHECK(r.err.find("'nope'") != std::string::npos);
  CHECK(r.err.find("rewind list") != std::string::npos);
  r = run({"unpin", dir, "a/b"});
  CHECK(r.status.code == 2);
  r = run({"pin", dir});
  CHECK(r.status.code == 2);

  // Prune keeps the pinned checkpoint, which stays restorable.
  json pr = Parse(run({"prune", dir, "--keep-last", "1", "--json"}));
  std::vector<std::string> kept;
  for (const json& c : pr.at("kept")) kept.push_back(c.at("name"));
  CHECK(kept == std::vector<std::string>{"golden", "newest"});
  CHECK(NamesOf(run({"list", dir, "--json"}).out) ==
        std::vector<std::string>{"golden", "newest"});
  const std::string out = tmp + "/golden.raw";
  r = run({"restore", dir, "--to", "golden", "--output", out});
  INFO(r.Describe());
  REQUIRE(r.ok());
  // The disk at golden holds the first write only (see write()).
  const std::string image = ReadFile(out);
  REQUIRE(image.size() == kSize);
  CHECK(image[0] == 1);
  CHECK(image[1 << 20] == 0);

  // Unpinned, the next prune drops it.
  REQUIRE(run({"unpin", dir, "golden"}).ok());
  pr = Parse(run({"prune", dir, "--keep-last", "1", "--json"}));
  std::vector<std::string> dropped;
  for (const json& c : pr.at("dropped")) dropped.push_back(c.at("name"));
  CHECK(dropped == std::vector<std::string>{"golden"});
  CHECK(NamesOf(run({"list", dir, "--json"}).out) == std::vector<std::string>{"newest"});
  r = run({"pin", dir, "golden"});
  CHECK(r.status.code == 1);
}

}  // namespace

TEST_CASE("pin, unpin, checkpoint --pin and prune with the store opened by the CLI",
          "[cli][pin]") {
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());
  // Offline there is no NBD client: the writes go through the store itself.
  auto write = [&](int n) {
    StoreOptions o;
    o.dir = dir;
    o.create_if_missing = false;
    std::unique_ptr<Store> s;
    REQUIRE(Store::Open(o, &s).ok());
    std::vector<char> data(4096, static_cast<char>(n));
    REQUIRE(s->Write(static_cast<uint64_t>(n - 1) << 20, 4096, data.data(), true).ok());
    REQUIRE(s->Close().ok());
  };
  PinScenario(Rewind, dir, tmp.path(), write);
}

TEST_CASE("rewind list shows who took a checkpoint: supervise, or blank", "[cli][pin]") {
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());
  REQUIRE(Rewind({"checkpoint", dir, "--name", "by-hand"}).ok());
  {
    StoreOptions o;
    o.dir = dir;
    o.create_if_missing = false;
    std::unique_ptr<Store> s;
    REQUIRE(Store::Open(o, &s).ok());
    CheckpointOptions c;
    c.name = "auto-1";
    c.supervised = true;
    REQUIRE(s->Checkpoint(c, nullptr).ok());
    REQUIRE(s->Close().ok());
  }
  json list = Parse(Rewind({"list", dir, "--json"}));
  CHECK(FindCp(list, "by-hand").at("supervised") == false);
  CHECK(FindCp(list, "auto-1").at("supervised") == true);
  CHECK(std::regex_search(ListLine(Rewind, dir, "auto-1"), std::regex("  no +supervise$")));
  CHECK(std::regex_search(ListLine(Rewind, dir, "by-hand"), std::regex("  no$")));
}

TEST_CASE("pin, unpin, checkpoint --pin and prune through the plugin", "[cli][pin][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  auto write = [&](int n) {
    auto nbd = NbdClient::Connect(server->socket());
    nbd->Pwrite(std::vector<uint8_t>(4096, static_cast<uint8_t>(n)),
                static_cast<uint64_t>(n - 1) << 20);
    nbd->Flush();
    nbd->Shutdown();
  };
  // Prune is refused while the plugin still counts a client that has just
  // gone; retry for at most 5 s.
  Run run = [](const std::vector<std::string>& args) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      ProcResult r = RunCli(args);
      const bool busy = r.status.code == 1 && r.err.find("open for writing") != std::string::npos;
      if (!busy || std::chrono::steady_clock::now() > deadline) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  PinScenario(run, dir, tmp.path(), write);
  CHECK(Parse(RunCli({"info", dir, "--json"})).at("online") == true);

  // A supervised checkpoint taken over the control socket shows in the list.
  json response, result;
  json req = control::MakeRequest(control::Op::kCheckpoint);
  req["name"] = "auto-1";
  req["supervised"] = true;
  REQUIRE(control::ControlCall(dir + "/control.sock", req, &response, 5000).ok());
  REQUIRE(control::ResultOf(response, &result).ok());
  CHECK(result.at("supervised") == true);
  json list = Parse(RunCli({"list", dir, "--json"}));
  CHECK(FindCp(list, "auto-1").at("supervised") == true);
  CHECK(std::regex_search(ListLine(run, dir, "auto-1"), std::regex("  no +supervise$")));
}

}  // namespace rwd::test
