// The control protocol's members for whole-VM checkpoints: "kind" and
// "pending" of checkpoint, the commit-checkpoint op, "pending" of list and
// "quiesced" of rollback.  Requests are parsed, then answered by
// HandleRequestLine (and the server, over its socket) against a real store
// in a temporary directory, with exclusive hooks like the plugin's.
#include <rewind/control/protocol.h>
#include <rewind/control/server.h>
#include <rewind/journal/store.h>

#include <catch2/catch.hpp>

#include "support/proc_util.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

using nlohmann::json;
using rwd::Status;
using rwd::Store;
using namespace rwd::control;

namespace {

// A temporary directory, removed with everything in it.
struct TempDir : rwd::test::TempDir {
  TempDir() : rwd::test::TempDir("rewind-ctlvm") {}
};

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

json Handle(Store& store, const json& request, const ControlServerOptions* options = nullptr) {
  std::string line = ToLine(request);
  line.pop_back();
  return HandleRequestLine(store, line, nullptr, options);
}

// The result of a request that must succeed.
json Ok(Store& store, const json& request, const ControlServerOptions* options = nullptr) {
  json j = Handle(store, request, options);
  INFO(request.dump() << " -> " << j.dump());
  REQUIRE(j["ok"] == true);
  CHECK(j["id"] == 7);
  return j["result"];
}

std::vector<std::string> Names(const json& list_result) {
  std::vector<std::string> out;
  for (const json& c : list_result["checkpoints"]) out.push_back(c["name"]);
  return out;
}

// A hook like the plugin's RunExclusive: refuses while `writers` > 0 unless
// it lets idle writers stay; counts its calls.
struct Hook {
  std::atomic<int>* writers;
  bool allow_idle_writers;
  std::atomic<int> calls{0};
  std::atomic<int> ran{0};
  std::function<Status(const std::function<Status()>&)> fn() {
    return [this](const std::function<Status()>& work) {
      calls++;
      if (*writers > 0 && !allow_idle_writers) {
        return Status::Busy("1 client has the live disk open for writing");
      }
      ran++;
      return work();
    };
  }
};

std::vector<char> Pattern(size_t n, char seed) {
  std::vector<char> v(n);
  for (size_t i = 0; i < n; i++) v[i] = static_cast<char>(seed + i % 7 + 1);
  return v;
}

std::vector<char> Read(Store& s, uint64_t off, uint32_t len) {
  std::vector<char> v(len);
  REQUIRE(s.Read(off, len, v.data()).ok());
  return v;
}

}  // namespace

TEST_CASE("ParseRequest reads checkpoint kind and pending, commit-checkpoint, list pending and "
          "rollback quiesced",
          "[control]") {
  Request req;
  // Defaults.
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint"})", &req));
  CHECK(req.op == Op::kCheckpoint);
  CHECK(req.kind == "disk");
  CHECK_FALSE(req.pending);
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint","name":"a","kind":"vm","pending":true})",
                             &req));
  CHECK(req.name == "a");
  CHECK(req.kind == "vm");
  CHECK(req.pending);
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint","kind":"disk","pending":false})", &req));
  CHECK(req.kind == "disk");
  CHECK_FALSE(req.pending);
  // Null is absent.
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint","kind":null,"pending":null})", &req));
  CHECK(req.kind == "disk");
  CHECK_FALSE(req.pending);
  // A parse starts afresh: nothing of the previous request stays.
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint","kind":"vm","pending":true})", &req));
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"checkpoint"})", &req));
  CHECK(req.kind == "disk");
  CHECK_FALSE(req.pending);

  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"commit-checkpoint","checkpoint":12})", &req));
  CHECK(req.op == Op::kCommitCheckpoint);
  CHECK(req.checkpoint_id == 12);
  REQUIRE_FALSE(ParseRequest(
      R"({"v":1,"op":"commit-checkpoint","checkpoint":18446744073709551615})", &req));
  CHECK(req.checkpoint_id == UINT64_MAX);
  CHECK(std::string(OpName(Op::kCommitCheckpoint)) == "commit-checkpoint");
  CHECK_FALSE(IsLongOp(Op::kCommitCheckpoint));

  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"list"})", &req));
  CHECK(req.op == Op::kList);
  CHECK_FALSE(req.with_pending);
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"list","pending":true})", &req));
  CHECK(req.with_pending);
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"list","pending":false})", &req));
  CHECK_FALSE(req.with_pending);

  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"rollback","to":"one"})", &req));
  CHECK_FALSE(req.quiesced);
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"rollback","to":"one","quiesced":true})", &req));
  CHECK(req.op == Op::kRollback);
  CHECK(req.to == "one");
  CHECK(req.quiesced);
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"rollback","to":"one","quiesced":false})", &req));
  CHECK_FALSE(req.quiesced);

  struct Case {
    const char* line;
    const char* code;
    const char* says;
  };
  for (Case c : {
           Case{R"({"v":1,"id":1,"op":"checkpoint","kind":"bogus"})", "bad-request", "'kind'"},
           Case{R"({"v":1,"id":1,"op":"checkpoint","kind":""})", "bad-request", "'kind'"},
           Case{R"({"v":1,"id":1,"op":"checkpoint","kind":"VM"})", "bad-request", "'kind'"},
           Case{R"({"v":1,"id":1,"op":"checkpoint","kind":2})", "bad-request", "'kind'"},
           Case{R"({"v":1,"id":1,"op":"checkpoint","kind":["vm"]})", "bad-request", "'kind'"},
           Case{R"({"v":1,"id":1,"op":"checkpoint","pending":"true"})", "bad-request",
                "'pending'"},
           Case{R"({"v":1,"id":1,"op":"checkpoint","pending":1})", "bad-request", "'pending'"},
           Case{R"({"v":1,"id":1,"op":"commit-checkpoint"})", "bad-request", "'checkpoint'"},
           Case{R"({"v":1,"id":1,"op":"commit-checkpoint","checkpoint":null})", "bad-request",
                "'checkpoint'"},
           Case{R"({"v":1,"id":1,"op":"commit-checkpoint","checkpoint":0})", "bad-request",
                "'checkpoint'"},
           Case{R"({"v":1,"id":1,"op":"commit-checkpoint","checkpoint":-1})", "bad-request",
                "'checkpoint'"},
           Case{R"({"v":1,"id":1,"op":"commit-checkpoint","checkpoint":"3"})", "bad-request",
                "'checkpoint'"},
           Case{R"({"v":1,"id":1,"op":"commit-checkpoint","checkpoint":1.5})", "bad-request",
                "'checkpoint'"},
           Case{R"({"v":1,"id":1,"op":"commit-checkpoint","checkpoint":true})", "bad-request",
                "'checkpoint'"},
           Case{R"({"v":1,"id":1,"op":"commit-checkpoint","name":"vm-1"})", "bad-request",
                "'checkpoint'"},
           Case{R"({"v":1,"id":1,"op":"list","pending":"yes"})", "bad-request", "'pending'"},
           Case{R"({"v":1,"id":1,"op":"list","pending":0})", "bad-request", "'pending'"},
           Case{R"({"v":1,"id":1,"op":"rollback","to":"one","quiesced":"yes"})", "bad-request",
                "'quiesced'"},
           Case{R"({"v":1,"id":1,"op":"rollback","to":"one","quiesced":1})", "bad-request",
                "'quiesced'"},
           Case{R"({"v":1,"id":1,"op":"rollback","quiesced":true})", "bad-request", "'to'"},
           Case{R"({"v":1,"id":1,"op":"prune","keep_last":1,"quiesced":"yes"})", "bad-request",
                "'quiesced'"},
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

TEST_CASE("checkpoint pending, list, list pending and commit-checkpoint against a store",
          "[control]") {
  TempDir dir;
  auto store = OpenStore(dir.path() + "/store");
  const auto a = Pattern(4096, 'a');
  REQUIRE(store->Write(0, 4096, a.data(), false).ok());

  json cp = Ok(*store, Req(Op::kCheckpoint, {{"name", "vm-1"}, {"kind", "vm"}, {"pending", true}}));
  CHECK(cp["name"] == "vm-1");
  CHECK(cp["kind"] == "vm");
  CHECK(cp["pending"] == true);
  CHECK(cp["lsn"] == 1);
  const uint64_t id = cp["id"];
  CHECK(id == 1);

  // Hidden from list, info and points; shown by list pending.
  json list = Ok(*store, Req(Op::kList));
  CHECK(list["checkpoints"].empty());
  list = Ok(*store, Req(Op::kList, {{"pending", false}}));
  CHECK(list["checkpoints"].empty());
  list = Ok(*store, Req(Op::kList, {{"pending", true}}));
  REQUIRE(list["checkpoints"].size() == 1);
  CHECK(list["checkpoints"][0]["name"] == "vm-1");
  CHECK(list["checkpoints"][0]["pending"] == true);
  CHECK(list["checkpoints"][0]["kind"] == "vm");
  CHECK(list["checkpoints"][0]["id"] == id);
  CHECK(Ok(*store, Req(Op::kInfo))["checkpoints"] == 0);
  json j = Handle(*store, Req(Op::kRollback, {{"to", "vm-1"}}));
  CHECK(j["ok"] == false);
  CHECK(j["error"]["code"] == "not-found");
  j = Handle(*store, Req(Op::kDiff, {{"from", "vm-1"}, {"to", "lsn:1"}}));
  CHECK(j["error"]["code"] == "not-found");

  // A visible checkpoint of another name meanwhile; a write after it.
  json other = Ok(*store, Req(Op::kCheckpoint, {{"name", "disk-1"}}));
  CHECK(other["kind"] == "disk");
  CHECK(other["pending"] == false);
  const auto b = Pattern(4096, 'b');
  REQUIRE(store->Write(0, 4096, b.data(), false).ok());

  // Commit: visible, at the instant it was taken.
  json c = Ok(*store, Req(Op::kCommitCheckpoint, {{"checkpoint", id}}));
  CHECK(c["id"] == id);
  CHECK(c["name"] == "vm-1");
  CHECK(c["pending"] == false);
  CHECK(c["kind"] == "vm");
  CHECK(c["lsn"] == cp["lsn"]);
  CHECK(c["time_ns"] == cp["time_ns"]);
  list = Ok(*store, Req(Op::kList));
  CHECK(Names(list) == std::vector<std::string>{"vm-1", "disk-1"});
  CHECK(list["checkpoints"][0]["pending"] == false);
  CHECK(Ok(*store, Req(Op::kInfo))["checkpoints"] == 2);
  json diff = Ok(*store, Req(Op::kDiff, {{"from", "vm-1"}, {"to", "disk-1"}}));
  CHECK(diff["bytes"] == 0);
  // Idempotent.
  c = Ok(*store, Req(Op::kCommitCheckpoint, {{"checkpoint", id}}));
  CHECK(c["pending"] == false);
  CHECK(Ok(*store, Req(Op::kList, {{"pending", true}}))["checkpoints"].size() == 2);

  // An unknown id.
  j = Handle(*store, Req(Op::kCommitCheckpoint, {{"checkpoint", 99}}));
  CHECK(j["ok"] == false);
  CHECK(j["id"] == 7);
  CHECK(j["error"]["code"] == "not-found");
  // A bad kind never reaches the store.
  j = Handle(*store, Req(Op::kCheckpoint, {{"kind", "bogus"}}));
  CHECK(j["error"]["code"] == "bad-request");
  CHECK(Ok(*store, Req(Op::kList, {{"pending", true}}))["checkpoints"].size() == 2);

  // A name taken while pending: the commit is refused, it stays pending.
  json p2 = Ok(*store, Req(Op::kCheckpoint, {{"name", "vm-2"}, {"kind", "vm"}, {"pending", true}}));
  CHECK(p2["pending"] == true);
  Ok(*store, Req(Op::kCheckpoint, {{"name", "vm-2"}}));
  j = Handle(*store, Req(Op::kCommitCheckpoint, {{"checkpoint", p2["id"]}}));
  CHECK(j["ok"] == false);
  CHECK(j["error"]["code"] == "already-exists");
  list = Ok(*store, Req(Op::kList, {{"pending", true}}));
  REQUIRE(list["checkpoints"].size() == 4);
  CHECK(list["checkpoints"][2]["id"] == p2["id"]);
  CHECK(list["checkpoints"][2]["pending"] == true);
  CHECK(Names(Ok(*store, Req(Op::kList))) ==
        std::vector<std::string>{"vm-1", "disk-1", "vm-2"});

  // A visible whole-VM checkpoint (not pending).
  json v = Ok(*store, Req(Op::kCheckpoint, {{"name", "vm-3"}, {"kind", "vm"}}));
  CHECK(v["pending"] == false);
  CHECK(v["kind"] == "vm");
  CHECK(Names(Ok(*store, Req(Op::kList))).back() == "vm-3");
  REQUIRE(store->Close().ok());
}

TEST_CASE("commit-checkpoint and list pending over the server's socket", "[control]") {
  TempDir dir;
  auto store = OpenStore(dir.path() + "/store");
  ControlServerOptions options;
  options.socket_path = SocketPath(store->dir());
  std::unique_ptr<ControlServer> server;
  Status s = ControlServer::Start(options, store.get(), &server);
  INFO(s.ToString());
  REQUIRE(s.ok());

  json response, result;
  REQUIRE(ControlCall(server->socket_path(),
                      Req(Op::kCheckpoint, {{"name", "m"}, {"kind", "vm"}, {"pending", true}}),
                      &response, 5000)
              .ok());
  REQUIRE(ResultOf(response, &result).ok());
  rwd::CheckpointInfo info;
  REQUIRE(FromJson(result, &info).ok());
  CHECK(info.pending);
  CHECK(info.kind == "vm");

  REQUIRE(ControlCall(server->socket_path(), Req(Op::kList), &response, 5000).ok());
  REQUIRE(ResultOf(response, &result).ok());
  CHECK(result["checkpoints"].empty());
  REQUIRE(ControlCall(server->socket_path(), Req(Op::kList, {{"pending", true}}), &response, 5000)
              .ok());
  REQUIRE(ResultOf(response, &result).ok());
  CHECK(result["checkpoints"].size() == 1);

  REQUIRE(ControlCall(server->socket_path(), Req(Op::kCommitCheckpoint, {{"checkpoint", info.id}}),
                      &response, 5000)
              .ok());
  REQUIRE(ResultOf(response, &result).ok());
  CHECK(result["pending"] == false);
  REQUIRE(ControlCall(server->socket_path(), Req(Op::kList), &response, 5000).ok());
  REQUIRE(ResultOf(response, &result).ok());
  CHECK(Names(result) == std::vector<std::string>{"m"});

  REQUIRE(ControlCall(server->socket_path(), Req(Op::kCommitCheckpoint, {{"checkpoint", 5}}),
                      &response, 5000)
              .ok());
  s = ResultOf(response, nullptr);
  CHECK(s.code() == Status::Code::kNotFound);
  server->Stop();
  REQUIRE(store->Close().ok());
}

TEST_CASE("rollback and prune quiesced run through exclusive_quiesced, and without it connected "
          "writers make them busy",
          "[control]") {
  TempDir dir;
  auto store = OpenStore(dir.path() + "/store");
  const auto a = Pattern(8192, 'a');
  const auto b = Pattern(8192, 'b');
  REQUIRE(store->Write(4096, 8192, a.data(), false).ok());
  rwd::CheckpointInfo one;
  REQUIRE(store->Checkpoint("one", &one).ok());
  REQUIRE(store->Write(4096, 8192, b.data(), false).ok());

  std::atomic<int> writers{1};  // a QEMU connected, idle
  Hook exclusive{&writers, false};
  Hook quiesced{&writers, true};
  ControlServerOptions options;
  options.exclusive = exclusive.fn();
  options.exclusive_quiesced = quiesced.fn();

  // Without quiesced: the plain hook, busy, nothing done.
  json j = Handle(*store, Req(Op::kRollback, {{"to", "one"}}), &options);
  INFO(j.dump());
  CHECK(j["ok"] == false);
  CHECK(j["error"]["code"] == "busy");
  j = Handle(*store, Req(Op::kRollback, {{"to", "one"}, {"quiesced", false}}), &options);
  CHECK(j["error"]["code"] == "busy");
  CHECK(exclusive.calls == 2);
  CHECK(quiesced.calls == 0);
  CHECK(Read(*store, 4096, 8192) == b);

  // With it: the quiesced hook, not the plain one; the disk goes back.
  json r = Ok(*store, Req(Op::kRollback, {{"to", "one"}, {"quiesced", true}}), &options);
  CHECK(r["point"]["lsn"] == one.lsn);
  CHECK(quiesced.calls == 1);
  CHECK(quiesced.ran == 1);
  CHECK(exclusive.calls == 2);
  CHECK(Read(*store, 4096, 8192) == a);
  const std::string before = r["before"]["name"];
  CHECK(before.rfind("before-rollback-", 0) == 0);

  // A bad point is refused before any hook is asked.
  j = Handle(*store, Req(Op::kRollback, {{"to", "nope"}, {"quiesced", true}}), &options);
  CHECK(j["error"]["code"] == "not-found");
  CHECK(quiesced.calls == 1);
  CHECK(exclusive.calls == 2);

  // A prune: busy without quiesced, through the quiesced hook with it
  // (rewind supervise prunes so while QEMU has the guest stopped).
  j = Handle(*store, Req(Op::kPrune, {{"keep_last", 1}}), &options);
  CHECK(j["error"]["code"] == "busy");
  CHECK(exclusive.calls == 3);
  CHECK(quiesced.calls == 1);
  r = Ok(*store, Req(Op::kPrune, {{"keep_last", 1}, {"quiesced", true}, {"dry_run", true}}),
         &options);
  CHECK(r["dry_run"] == true);  // a dry run needs no hook at all
  CHECK(quiesced.calls == 1);
  r = Ok(*store, Req(Op::kPrune, {{"keep_last", 1}, {"quiesced", true}}), &options);
  CHECK(r["dry_run"] == false);
  CHECK(quiesced.calls == 2);
  CHECK(quiesced.ran == 2);
  CHECK(exclusive.calls == 3);
  CHECK(Read(*store, 4096, 8192) == a);  // the live disk is untouched

  // Without an exclusive_quiesced hook, quiesced falls back to exclusive.
  ControlServerOptions plain;
  plain.exclusive = exclusive.fn();
  j = Handle(*store, Req(Op::kRollback, {{"to", before}, {"quiesced", true}}), &plain);
  CHECK(j["error"]["code"] == "busy");
  CHECK(exclusive.calls == 4);
  CHECK(Read(*store, 4096, 8192) == a);

  // With no writers the plain path works as before.  (The prune above
  // kept only 'before', the newest checkpoint.)
  writers = 0;
  r = Ok(*store, Req(Op::kRollback, {{"to", before}}), &options);
  CHECK(exclusive.ran == 1);
  CHECK(quiesced.calls == 2);
  CHECK(Read(*store, 4096, 8192) == b);
  REQUIRE(store->Close().ok());
}
