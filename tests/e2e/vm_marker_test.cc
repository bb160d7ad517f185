// Whole-VM checkpoint markers through a real nbdkit: a pending checkpoint
// (taken over the control socket with "pending": true) is neither listed by
// NBD_OPT_LIST nor served as "@NAME" until commit-checkpoint makes it
// visible; and a rollback with "quiesced": true runs while a client holds
// the live disk open for writing (the QEMU waiting for an incoming
// migration), where a plain rollback is refused as busy.
#include <libnbd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kSize = 16 * kMiB;

bool Listed(const std::vector<std::string>& list, const std::string& name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

std::unique_ptr<NbdClient> ConnectExport(const std::string& socket, const std::string& name) {
  NbdClientOptions o;
  o.export_name = name;
  return NbdClient::Connect(socket, o);
}

// One request on the control socket; the parsed response.
nlohmann::json Control(const std::string& dir, const nlohmann::json& request) {
  auto ctl = LineClient::Connect(dir + "/control.sock");
  std::string line = ctl->Request(request.dump());
  return ParseJsonLine(line);
}

nlohmann::json ControlOk(const std::string& dir, const nlohmann::json& request) {
  nlohmann::json j = Control(dir, request);
  INFO(request.dump() << " -> " << j.dump());
  REQUIRE(j.value("ok", false) == true);
  return j["result"];
}

TEST_CASE("vm marker: a pending checkpoint is not exported until committed", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  auto live = NbdClient::Connect(server->socket());

  const auto a = Pattern(kMiB, 31);
  const auto b = Pattern(kMiB, 32);
  live->Pwrite(a, 3 * kMiB);
  live->Flush();
  nlohmann::json cp = ControlOk(
      dir, {{"v", 1}, {"op", "checkpoint"}, {"name", "vm1"}, {"kind", "vm"}, {"pending", true}});
  CHECK(cp["pending"] == true);
  CHECK(cp["kind"] == "vm");
  const uint64_t id = cp["id"];
  live->Pwrite(b, 3 * kMiB);
  live->Flush();

  // Not listed, not served, not in the CLI's list.
  {
    auto list = ListExportNames(server->socket());
    CHECK(Listed(list, ""));
    CHECK_FALSE(Listed(list, "@vm1"));
    CHECK(list.size() == 1);
    NbdClientOptions o;
    o.export_name = "@vm1";
    const std::string err = TryConnect(server->socket(), o);
    INFO("connect @vm1 while pending: " << err);
    CHECK_FALSE(err.empty());
    nlohmann::json l = RunCliJson({"list", dir, "--json"});
    INFO(l.dump());
    CHECK(l["checkpoints"].empty());
    nlohmann::json lp = ControlOk(dir, {{"v", 1}, {"op", "list"}, {"pending", true}});
    REQUIRE(lp["checkpoints"].size() == 1);
    CHECK(lp["checkpoints"][0]["name"] == "vm1");
    CHECK(lp["checkpoints"][0]["pending"] == true);
  }
  // Its LSN is served, as any point is: the marker's instant is real.
  CHECK(ConnectExport(server->socket(), fmt::format("@lsn:{}", cp["lsn"].get<uint64_t>()))
            ->Pread(kMiB, 3 * kMiB) == a);

  nlohmann::json c =
      ControlOk(dir, {{"v", 1}, {"op", "commit-checkpoint"}, {"checkpoint", id}});
  CHECK(c["pending"] == false);
  CHECK(c["lsn"] == cp["lsn"]);
  {
    auto list = ListExportNames(server->socket());
    CHECK(Listed(list, "@vm1"));
    CHECK(list.size() == 2);
    auto past = ConnectExport(server->socket(), "@vm1");
    CHECK(past->IsReadOnly());
    // The disk as it was when the marker was taken, not when committed.
    CHECK(past->Pread(kMiB, 3 * kMiB) == a);
    nlohmann::json l = RunCliJson({"list", dir, "--json"});
    REQUIRE(l["checkpoints"].size() == 1);
    CHECK(l["checkpoints"][0]["name"] == "vm1");
    CHECK(l["checkpoints"][0]["kind"] == "vm");
  }
  CHECK(live->Pread(kMiB, 3 * kMiB) == b);
}

TEST_CASE("vm marker: a quiesced rollback runs with a writer connected, and a plain one is busy",
          "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=" + std::to_string(kSize)});
  auto live = NbdClient::Connect(server->socket());
  REQUIRE_FALSE(live->IsReadOnly());

  const auto a = Pattern(2 * kMiB, 41);
  const auto b = Pattern(2 * kMiB, 42);
  live->Pwrite(a, kMiB);
  live->Flush();
  ControlOk(dir, {{"v", 1}, {"op", "checkpoint"}, {"name", "base"}});
  live->Pwrite(b, kMiB);
  live->Pwrite(b, 10 * kMiB);
  live->Flush();

  // The writer is connected: a plain rollback is refused, untouched.
  for (nlohmann::json req :
       {nlohmann::json{{"v", 1}, {"op", "rollback"}, {"to", "base"}},
        nlohmann::json{{"v", 1}, {"op", "rollback"}, {"to", "base"}, {"quiesced", false}}}) {
    nlohmann::json j = Control(dir, req);
    INFO(req.dump() << " -> " << j.dump());
    CHECK(j["ok"] == false);
    CHECK(j["error"]["code"] == "busy");
  }
  CHECK(live->Pread(2 * kMiB, kMiB) == b);

  // Quiesced: it runs with the writer still connected (and idle).
  nlohmann::json r = ControlOk(
      dir, {{"v", 1}, {"op", "rollback"}, {"to", "base"}, {"quiesced", true}});
  INFO(r.dump());
  const std::string before = r["before"]["name"];
  CHECK(before.rfind("before-rollback-", 0) == 0);
  // The connected client sees the disk put back...
  CHECK(live->Pread(2 * kMiB, kMiB) == a);
  CHECK(live->Pread(2 * kMiB, 10 * kMiB) == std::vector<uint8_t>(2 * kMiB, 0));
  // ...and may write again afterwards.
  const auto c = Pattern(4096, 43);
  live->Pwrite(c, 0);
  live->Flush();
  CHECK(live->Pread(4096, 0) == c);

  // Another writer may connect once it is done; the undo point is exported.
  auto second = NbdClient::Connect(server->socket());
  CHECK_FALSE(second->IsReadOnly());
  CHECK(second->Pread(4096, 0) == c);
  CHECK(ConnectExport(server->socket(), "@" + before)->Pread(2 * kMiB, kMiB) == b);
  second->Shutdown();

  // Without writers, the plain rollback works again.
  live->Shutdown();
  live.reset();
  second.reset();
  // (nbdkit closes the connections asynchronously: busy until it has.)
  nlohmann::json r2;
  for (int i = 0; i < 100; i++) {
    r2 = Control(dir, {{"v", 1}, {"op", "rollback"}, {"to", before}});
    if (r2.value("ok", false) || r2["error"]["code"] != "busy") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  INFO(r2.dump());
  REQUIRE(r2["ok"] == true);
  auto again = NbdClient::Connect(server->socket());
  CHECK(again->Pread(2 * kMiB, kMiB) == b);
}

}  // namespace
}  // namespace rwd::test
