// The control protocol's pinned and supervised checkpoints: "pinned" and
// "supervised" of checkpoint, the pin op, and "supervised" of the
// Checkpoint object.  Requests are parsed, then answered by
// HandleRequestLine (and the server, over its socket) against a real store
// in a temporary directory.
#include <rewind/control/protocol.h>
#include <rewind/control/server.h>
#include <rewind/journal/store.h>

#include <catch2/catch.hpp>

#include "support/proc_util.h"

#include <optional>
#include <string>
#include <vector>

using nlohmann::json;
using rwd::Status;
using rwd::Store;
using namespace rwd::control;

namespace {

constexpr uint64_t kSize = 1 << 20;

std::unique_ptr<Store> OpenStore(const std::string& dir) {
  rwd::StoreOptions o;
  o.dir = dir;
  o.size = kSize;
  std::unique_ptr<Store> s;
  Status st = Store::Open(o, &s);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return s;
}

json Req(Op op, json members = json::object()) {
  json r = MakeRequest(op);
  r["id"] = 7;
  for (auto& [k, v] : members.items()) r[k] = v;
  return r;
}

json Handle(Store& store, const json& request) {
  std::string line = ToLine(request);
  line.pop_back();
  return HandleRequestLine(store, line, nullptr, nullptr);
}

json Ok(Store& store, const json& request) {
  json j = Handle(store, request);
  INFO(request.dump() << " -> " << j.dump());
  REQUIRE(j["ok"] == true);
  CHECK(j["id"] == 7);
  return j["result"];
}

json Find(const json& list_result, const std::string& name) {
  for (const json& c : list_result["checkpoints"]) {
    if (c["name"] == name) return c;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("ParseRequest reads checkpoint pinned and supervised, and the pin op", "[control][pin]") {
  Request req;
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint"})", &req));
  CHECK_FALSE(req.pinned);
  CHECK_FALSE(req.supervised);
  REQUIRE_FALSE(
      ParseRequest(R"({"v":1,"op":"checkpoint","name":"a","pinned":true,"supervised":true})", &req));
  CHECK(req.pinned);
  CHECK(req.supervised);
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint","pinned":false,"supervised":null})", &req));
  CHECK_FALSE(req.pinned);
  CHECK_FALSE(req.supervised);
  // A parse starts afresh.
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint","pinned":true,"supervised":true})", &req));
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint"})", &req));
  CHECK_FALSE(req.pinned);
  CHECK_FALSE(req.supervised);

  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"pin","name":"golden","pinned":true})", &req));
  CHECK(req.op == Op::kPin);
  CHECK(req.name == "golden");
  CHECK(req.pinned);
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"pin","name":"golden","pinned":false})", &req));
  CHECK(req.op == Op::kPin);
  CHECK_FALSE(req.pinned);
  CHECK(std::string(OpName(Op::kPin)) == "pin");
  CHECK_FALSE(IsLongOp(Op::kPin));

  struct Case {
    const char* line;
    const char* code;
    const char* says;
  };
  for (Case c : {
           Case{R"({"v":1,"id":1,"op":"checkpoint","pinned":"true"})", "bad-request", "'pinned'"},
           Case{R"({"v":1,"id":1,"op":"checkpoint","pinned":1})", "bad-request", "'pinned'"},
           Case{R"({"v":1,"id":1,"op":"checkpoint","supervised":"yes"})", "bad-request",
                "'supervised'"},
           Case{R"({"v":1,"id":1,"op":"checkpoint","supervised":0})", "bad-request",
                "'supervised'"},
           Case{R"({"v":1,"id":1,"op":"pin","pinned":true})", "bad-request", "'name'"},
           Case{R"({"v":1,"id":1,"op":"pin","name":null,"pinned":true})", "bad-request", "'name'"},
           Case{R"({"v":1,"id":1,"op":"pin","name":3,"pinned":true})", "bad-request", "'name'"},
           Case{R"({"v":1,"id":1,"op":"pin","name":"","pinned":true})", "bad-request", "'name'"},
           Case{R"({"v":1,"id":1,"op":"pin","name":"a"})", "bad-request", "'pinned'"},
           Case{R"({"v":1,"id":1,"op":"pin","name":"a","pinned":null})", "bad-request",
                "'pinned'"},
           Case{R"({"v":1,"id":1,"op":"pin","name":"a","pinned":"false"})", "bad-request",
                "'pinned'"},
           Case{R"({"v":1,"id":1,"op":"pin","name":"a","pinned":0})", "bad-request", "'pinned'"},
       }) {
    INFO(c.line);
    std::optional<Error> err = ParseRequest(c.line, &req);
    REQUIRE(err);
    CHECK(err->code == c.code);
    INFO(err->message);
    CHECK(err->message.find(c.says) != std::string::npos);
    CHECK(err->message.find('\n') == std::string::npos);
    CHECK(req.id == json(1));
  }
}

TEST_CASE("checkpoint pinned and supervised, pin and unpin against a store", "[control][pin]") {
  rwd::test::TempDir dir("rewind-ctlpin");
  auto store = OpenStore(dir / "store");

  json cp = Ok(*store, Req(Op::kCheckpoint, {{"name", "golden"}, {"pinned", true}}));
  CHECK(cp["pinned"] == true);
  CHECK(cp["supervised"] == false);
  json sv = Ok(*store, Req(Op::kCheckpoint, {{"name", "auto-1"}, {"supervised", true}}));
  CHECK(sv["pinned"] == false);
  CHECK(sv["supervised"] == true);
  json plain = Ok(*store, Req(Op::kCheckpoint, {{"name", "plain"}}));
  CHECK(plain["pinned"] == false);
  CHECK(plain["supervised"] == false);
  json list = Ok(*store, Req(Op::kList));
  CHECK(Find(list, "golden")["pinned"] == true);
  CHECK(Find(list, "auto-1")["supervised"] == true);
  CHECK(Find(list, "plain")["supervised"] == false);

  // pin, idempotent, unpin; the answer is the checkpoint afterwards.
  json p = Ok(*store, Req(Op::kPin, {{"name", "auto-1"}, {"pinned", true}}));
  CHECK(p["name"] == "auto-1");
  CHECK(p["id"] == sv["id"]);
  CHECK(p["lsn"] == sv["lsn"]);
  CHECK(p["pinned"] == true);
  CHECK(p["supervised"] == true);
  CHECK(Find(Ok(*store, Req(Op::kList)), "auto-1")["pinned"] == true);
  p = Ok(*store, Req(Op::kPin, {{"name", "auto-1"}, {"pinned", true}}));
  CHECK(p["pinned"] == true);
  p = Ok(*store, Req(Op::kPin, {{"name", "golden"}, {"pinned", false}}));
  CHECK(p["pinned"] == false);
  list = Ok(*store, Req(Op::kList));
  CHECK(Find(list, "golden")["pinned"] == false);
  CHECK(Find(list, "auto-1")["pinned"] == true);

  // A pruned store keeps the pinned one.
  json pr = Ok(*store, Req(Op::kPrune, {{"keep_last", 1}}));
  std::vector<std::string> kept;
  for (const json& c : pr["kept"]) kept.push_back(c["name"]);
  CHECK(kept == std::vector<std::string>{"auto-1", "plain"});

  // Unknown, pending and malformed names.
  json j = Handle(*store, Req(Op::kPin, {{"name", "golden"}, {"pinned", true}}));  // pruned
  CHECK(j["ok"] == false);
  CHECK(j["id"] == 7);
  CHECK(j["error"]["code"] == "not-found");
  CHECK(j["error"]["message"].get<std::string>().find("'golden'") != std::string::npos);
  Ok(*store, Req(Op::kCheckpoint, {{"name", "vm-1"}, {"kind", "vm"}, {"pending", true}}));
  j = Handle(*store, Req(Op::kPin, {{"name", "vm-1"}, {"pinned", true}}));
  CHECK(j["error"]["code"] == "not-found");
  j = Handle(*store, Req(Op::kPin, {{"name", "a/b"}, {"pinned", true}}));
  CHECK(j["error"]["code"] == "invalid-argument");
  j = Handle(*store, Req(Op::kPin, {{"name", "plain"}}));
  CHECK(j["error"]["code"] == "bad-request");
  CHECK(Find(Ok(*store, Req(Op::kList)), "plain")["pinned"] == false);
  REQUIRE(store->Close().ok());
}

TEST_CASE("pin over the server's socket", "[control][pin]") {
  rwd::test::TempDir dir("rewind-ctlpin");
  auto store = OpenStore(dir / "store");
  ControlServerOptions options;
  options.socket_path = SocketPath(store->dir());
  std::unique_ptr<ControlServer> server;
  Status s = ControlServer::Start(options, store.get(), &server);
  INFO(s.ToString());
  REQUIRE(s.ok());
  REQUIRE(store->Checkpoint("base", nullptr).ok());

  json response, result;
  REQUIRE(ControlCall(server->socket_path(), Req(Op::kPin, {{"name", "base"}, {"pinned", true}}),
                      &response, 5000)
              .ok());
  REQUIRE(ResultOf(response, &result).ok());
  rwd::CheckpointInfo info;
  REQUIRE(FromJson(result, &info).ok());
  CHECK(info.name == "base");
  CHECK(info.pinned);
  std::vector<rwd::CheckpointInfo> cps;
  REQUIRE(store->ListCheckpoints(&cps).ok());
  REQUIRE(cps.size() == 1);
  CHECK(cps[0].pinned);

  REQUIRE(ControlCall(server->socket_path(), Req(Op::kPin, {{"name", "nope"}, {"pinned", true}}),
                      &response, 5000)
              .ok());
  CHECK(ResultOf(response, nullptr).code() == Status::Code::kNotFound);
  server->Stop();
  REQUIRE(store->Close().ok());
}
