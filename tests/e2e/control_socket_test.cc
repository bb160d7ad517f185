// The control socket of a running plugin, spoken to directly: its
// permissions, and the protocol's answers to malformed and valid requests
// (docs/control-protocol.md).
#include <sys/stat.h>
#include <unistd.h>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

nlohmann::json Ask(const std::string& socket, const std::string& line) {
  auto c = LineClient::Connect(socket);
  return ParseJsonLine(c->Request(line));
}

void CheckError(const nlohmann::json& resp, const std::string& code) {
  INFO("response " << resp.dump());
  REQUIRE(resp.is_object());
  CHECK(resp.value("v", 0) == 1);
  CHECK(resp.value("ok", true) == false);
  REQUIRE(resp.contains("error"));
  REQUIRE(resp["error"].is_object());
  CHECK(resp["error"].value("code", "") == code);
  CHECK(resp["error"].value("message", "") != "");
}

TEST_CASE("control socket: mode 0600, malformed requests get protocol errors", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=16M"});
  const std::string sock = dir + "/control.sock";

  struct stat st;
  REQUIRE(lstat(sock.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == geteuid());

  // Not JSON, not an object, members missing or mistyped.
  CheckError(Ask(sock, "this is not json"), "bad-request");
  CheckError(Ask(sock, "{\"v\": 1, \"op\": \"info\""), "bad-request");
  CheckError(Ask(sock, "[1, 2, 3]"), "bad-request");
  CheckError(Ask(sock, "\"info\""), "bad-request");
  CheckError(Ask(sock, R"({"v": 1})"), "bad-request");
  CheckError(Ask(sock, R"({"v": 1, "op": 5})"), "bad-request");
  CheckError(Ask(sock, R"({"op": "info"})"), "bad-request");
  CheckError(Ask(sock, R"({"v": 1, "op": "checkpoint", "name": 7})"), "bad-request");

  // Unknown op and version, with the id echoed.
  {
    nlohmann::json r = Ask(sock, R"({"v": 1, "id": 3, "op": "frobnicate"})");
    CheckError(r, "unknown-op");
    CHECK(r.value("id", 0) == 3);
  }
  {
    nlohmann::json r = Ask(sock, R"({"v": 99, "id": "x", "op": "info"})");
    CheckError(r, "unsupported-version");
    CHECK(r.value("id", "") == "x");
    INFO(r.dump());
    REQUIRE(r["error"].contains("supported"));
    CHECK(r["error"]["supported"] == nlohmann::json::array({1}));
  }

  // Several requests on one connection, sent at once, answered in order.
  {
    auto c = LineClient::Connect(sock);
    REQUIRE(c->Send("{\"v\":1,\"id\":1,\"op\":\"hello\"}\n{\"v\":1,\"id\":2,\"op\":\"info\"}\n"
                    "{\"v\":1,\"id\":{\"k\":[1]},\"op\":\"list\"}\n"));
    auto l1 = c->ReadLine();
    auto l2 = c->ReadLine();
    auto l3 = c->ReadLine();
    REQUIRE(l1);
    REQUIRE(l2);
    REQUIRE(l3);
    nlohmann::json hello = ParseJsonLine(*l1), info = ParseJsonLine(*l2), list = ParseJsonLine(*l3);
    INFO(*l1 << "\n" << *l2 << "\n" << *l3);
    CHECK(hello.value("id", 0) == 1);
    CHECK(hello.value("ok", false) == true);
    CHECK(hello["result"]["versions"] == nlohmann::json::array({1}));
    CHECK(info.value("id", 0) == 2);
    CHECK(info.value("ok", false) == true);
    CHECK(info["result"].value("online", false) == true);
    CHECK(info["result"].value("size", uint64_t{0}) == 16u << 20);
    CHECK(list["id"] == nlohmann::json({{"k", {1}}}));
    CHECK(list.value("ok", false) == true);
    CHECK(list["result"]["checkpoints"] == nlohmann::json::array());
  }

  // A valid checkpoint through the socket.
  {
    nlohmann::json r = Ask(sock, R"({"v": 1, "id": 9, "op": "checkpoint", "name": "direct"})");
    INFO(r.dump());
    CHECK(r.value("ok", false) == true);
    CHECK(r["result"].value("name", "") == "direct");
    CHECK(r["result"].value("kind", "") == "disk");
  }

  // An over-long line: too-long, then the server closes the connection.
  {
    auto c = LineClient::Connect(sock);
    REQUIRE(c->Send(std::string(70000, 'x') + "\n"));
    auto line = c->ReadLine();
    REQUIRE(line);
    CheckError(ParseJsonLine(*line), "too-long");
    CHECK(c->WaitClosed());
  }

  // The plugin still serves its disk and its socket.
  CHECK(NbdClient::Connect(server->socket())->Size() == 16 << 20);
  CHECK(Ask(sock, R"({"v": 1, "op": "list"})")["result"]["checkpoints"].size() == 1);
  REQUIRE(server->Running());
  ExitStatus es = server->Stop();
  INFO(server->log());
  CHECK(es.success());
}

}  // namespace
}  // namespace rwd::test
