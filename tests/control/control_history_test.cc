// The rollback, diff, verify and prune ops of the control protocol: their
// requests and results, the exclusive hook that rollback and prune run in,
// progress lines and keep-alives, and cancellation of a verify.  The store
// is a double that records what it was asked and takes a known time.
#include <rewind/control/protocol.h>
#include <rewind/control/server.h>

#include <catch2/catch.hpp>

#include "support/proc_util.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fake_store.h"

using nlohmann::json;
using rwd::CheckpointInfo;
using rwd::DiffResult;
using rwd::PointInfo;
using rwd::PrunePolicy;
using rwd::PruneResult;
using rwd::RollbackResult;
using rwd::Status;
using rwd::VerifyReport;
using namespace rwd::control;
using Clock = std::chrono::steady_clock;

namespace {

// Points: "one" is checkpoint 1 at lsn 5, "lsn:N" is N, "nope" is unknown.
// Each long op reports progress `steps` times, step_ms apart.
class HistoryStore : public test::UnusedStore {
 public:
  HistoryStore(std::string dir, int steps = 2, int step_ms = 1)
      : UnusedStore(std::move(dir)), steps_(steps), step_ms_(step_ms) {}

  Status ResolvePoint(const std::string& text, PointInfo* out) override {
    PointInfo p;
    p.text = text;
    p.time_ns = 1795428900123456789;
    if (text == "one") {
      p.lsn = 5;
      p.checkpoint = "one";
      p.checkpoint_id = 1;
    } else if (text.rfind("lsn:", 0) == 0) {
      p.lsn = std::stoull(text.substr(4));
    } else {
      return Status::NotFound("no checkpoint named '" + text + "'");
    }
    *out = p;
    return Status::Ok();
  }

  Status Rollback(const PointInfo& point, const rwd::RollbackOptions& options,
                  RollbackResult* out) override {
    rollbacks++;
    if (throw_in_rollback) throw std::runtime_error("boom");
    for (int i = 1; i <= steps_; ++i) {
      Sleep();
      // A rollback cannot be cancelled: the answer is ignored.
      if (options.progress) (void)options.progress(i * 4096, steps_ * 4096);
    }
    out->point = point;
    out->before.id = 2;
    out->before.name = "before-rollback-20261123T101500Z";
    out->before.lsn = 9;
    out->before.time_ns = 1795428900123456790;
    out->examined_bytes = steps_ * 4096;
    out->rewritten_bytes = 4096;
    out->seconds = 0.25;
    return Status::Ok();
  }

  Status Diff(const PointInfo& from, const PointInfo& to, DiffResult* out) override {
    diffs++;
    for (int i = 0; i < steps_; ++i) Sleep();
    out->from = from;
    out->to = to;
    out->ranges = {{4096, 8192}, {1 << 20, 512}};
    out->bytes = 8192 + 512;
    out->records = to.lsn > from.lsn ? to.lsn - from.lsn : from.lsn - to.lsn;
    return Status::Ok();
  }

  Status Verify(const rwd::ProgressFn& progress, VerifyReport* out) override {
    verifies++;
    for (int i = 1; i <= steps_; ++i) {
      Sleep();
      if (progress && !progress(i * 4096, steps_ * 4096)) {
        verify_cancelled = true;
        return Status::Aborted("verify interrupted");
      }
    }
    out->redo_records = 10;
    out->undo_records = 3;
    out->checkpoints = 1;
    out->payload_bytes = 40960;
    out->image_pages_checked = 7;
    out->damage = damage;
    return Status::Ok();
  }

  Status Prune(const PrunePolicy& policy, PruneResult* out) override {
    prunes++;
    last_policy = policy;
    for (int i = 0; i < steps_; ++i) Sleep();
    CheckpointInfo kept;
    kept.id = 2;
    kept.name = "two";
    kept.lsn = 9;
    CheckpointInfo dropped;
    dropped.id = 1;
    dropped.name = "one";
    dropped.lsn = 5;
    out->kept = {kept};
    out->dropped = {dropped};
    out->history_start_lsn = 9;
    out->redo_records_dropped = 9;
    out->undo_records_dropped = 2;
    out->segments_deleted = 1;
    out->bytes_before = 1 << 20;
    out->bytes_after = policy.dry_run ? 1 << 20 : 4096;
    return Status::Ok();
  }

  std::atomic<int> rollbacks{0}, diffs{0}, verifies{0}, prunes{0};
  std::atomic<bool> verify_cancelled{false};
  bool throw_in_rollback = false;
  std::vector<std::string> damage;
  PrunePolicy last_policy;

 private:
  void Sleep() const { std::this_thread::sleep_for(std::chrono::milliseconds(step_ms_)); }
  const int steps_;
  const int step_ms_;
};

// A temporary directory, removed with everything in it.
struct TempDir : rwd::test::TempDir {
  TempDir() : rwd::test::TempDir("rewind-ctlhist") {}
};

// An exclusive hook like the plugin's: refuses while `writers` > 0, counts
// its calls.
struct Hook {
  std::atomic<int> writers{0};
  std::atomic<int> calls{0};
  std::atomic<int> ran{0};
  std::function<Status(const std::function<Status()>&)> fn() {
    return [this](const std::function<Status()>& work) {
      calls++;
      if (writers > 0) return Status::Busy("1 client has the live disk open for writing");
      ran++;
      return work();
    };
  }
};

std::unique_ptr<ControlServer> StartServer(rwd::Store* store, ControlServerOptions options) {
  options.socket_path = SocketPath(store->dir());
  std::unique_ptr<ControlServer> server;
  Status s = ControlServer::Start(options, store, &server);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return server;
}

json Handle(rwd::Store& store, const json& request, const ControlServerOptions* options) {
  std::string line = ToLine(request);
  line.pop_back();
  return HandleRequestLine(store, line, nullptr, options);
}

json Req(Op op, json members = json::object()) {
  json r = MakeRequest(op);
  r["id"] = 1;
  for (auto& [k, v] : members.items()) r[k] = v;
  return r;
}

// Reads the lines of one call on a raw connection until the response.
struct Lines {
  std::vector<json> progress;
  json response;
};

Lines CallRaw(const std::string& socket_path, const json& request) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  std::string line = ToLine(request);
  REQUIRE(::send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size()));
  Lines out;
  std::string buf;
  char chunk[4096];
  for (;;) {
    size_t nl = buf.find('\n');
    if (nl == std::string::npos) {
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      REQUIRE(n > 0);
      buf.append(chunk, static_cast<size_t>(n));
      continue;
    }
    json j = json::parse(buf.substr(0, nl));
    buf.erase(0, nl + 1);
    if (IsProgress(j, nullptr, nullptr)) {
      out.progress.push_back(j);
      continue;
    }
    out.response = j;
    break;
  }
  ::close(fd);
  return out;
}

}  // namespace

TEST_CASE("ParseRequest reads the members of rollback, diff, verify and prune", "[control]") {
  Request req;
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"rollback","to":"one","progress":true})", &req));
  CHECK(req.op == Op::kRollback);
  CHECK(req.to == "one");
  CHECK(req.progress);

  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"diff","from":"lsn:1","to":"one"})", &req));
  CHECK(req.op == Op::kDiff);
  CHECK(req.from == "lsn:1");
  CHECK(req.to == "one");
  CHECK_FALSE(req.progress);

  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"verify","progress":null})", &req));
  CHECK(req.op == Op::kVerify);
  CHECK_FALSE(req.progress);

  REQUIRE_FALSE(ParseRequest(
      R"({"v":1,"op":"prune","keep_last":3,"keep_within_ns":86400000000000,"keep_daily":7,"dry_run":true})",
      &req));
  CHECK(req.op == Op::kPrune);
  CHECK(req.policy.keep_last == 3);
  CHECK(req.policy.keep_within_ns == 86400000000000);
  CHECK(req.policy.keep_daily == 7);
  CHECK(req.policy.dry_run);
  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"prune","keep_daily":1,"keep_last":null})", &req));
  CHECK(req.policy.keep_last == 0);
  CHECK_FALSE(req.policy.dry_run);

  for (Op op : {Op::kRollback, Op::kDiff, Op::kVerify, Op::kPrune, Op::kRestore}) {
    CHECK(IsLongOp(op));
  }
  for (Op op : {Op::kHello, Op::kInfo, Op::kCheckpoint, Op::kList}) CHECK_FALSE(IsLongOp(op));
  CHECK(std::string(OpName(Op::kRollback)) == "rollback");
  CHECK(std::string(OpName(Op::kDiff)) == "diff");
  CHECK(std::string(OpName(Op::kVerify)) == "verify");
  CHECK(std::string(OpName(Op::kPrune)) == "prune");

  struct Case {
    const char* line;
    const char* code;
    const char* says;
  };
  for (Case c : {
           Case{R"({"v":1,"id":1,"op":"rollback"})", "bad-request", "'to'"},
           Case{R"({"v":1,"id":1,"op":"rollback","to":3})", "bad-request", "'to'"},
           Case{R"({"v":1,"id":1,"op":"rollback","to":"one","progress":"yes"})", "bad-request",
                "'progress'"},
           Case{R"({"v":1,"id":1,"op":"diff","to":"one"})", "bad-request", "'from'"},
           Case{R"({"v":1,"id":1,"op":"diff","from":"one"})", "bad-request", "'to'"},
           Case{R"({"v":1,"id":1,"op":"diff","from":[],"to":"one"})", "bad-request", "'from'"},
           Case{R"({"v":1,"id":1,"op":"verify","progress":1})", "bad-request", "'progress'"},
           Case{R"({"v":1,"id":1,"op":"prune"})", "invalid-argument", "policy"},
           Case{R"({"v":1,"id":1,"op":"prune","keep_last":0,"dry_run":true})", "invalid-argument",
                "policy"},
           Case{R"({"v":1,"id":1,"op":"prune","keep_last":-1})", "bad-request", "'keep_last'"},
           Case{R"({"v":1,"id":1,"op":"prune","keep_last":"3"})", "bad-request", "'keep_last'"},
           Case{R"({"v":1,"id":1,"op":"prune","keep_within_ns":1.5})", "bad-request",
                "'keep_within_ns'"},
           Case{R"({"v":1,"id":1,"op":"prune","keep_within_ns":9223372036854775808})",
                "bad-request", "'keep_within_ns'"},
           Case{R"({"v":1,"id":1,"op":"prune","keep_daily":2,"dry_run":"no"})", "bad-request",
                "'dry_run'"},
       }) {
    INFO(c.line);
    std::optional<Error> err = ParseRequest(c.line, &req);
    REQUIRE(err);
    CHECK(err->code == c.code);
    CHECK(err->message.find(c.says) != std::string::npos);
    CHECK(req.id == json(1));
  }
}

TEST_CASE("RollbackResult, DiffResult, VerifyReport and PruneResult JSON round trip", "[control]") {
  PointInfo p;
  p.text = "one";
  p.lsn = 5;
  p.time_ns = 1795428900123456789;
  p.checkpoint = "one";

  RollbackResult rb;
  rb.point = p;
  rb.before.id = 2;
  rb.before.name = "before-rollback-20261123T101500Z";
  rb.before.lsn = 9;
  rb.examined_bytes = 1 << 20;
  rb.rewritten_bytes = 4096;
  rb.seconds = 0.5;
  json j = ToJson(rb);
  CHECK(j["point"]["checkpoint"] == "one");
  CHECK(j["before"]["name"] == "before-rollback-20261123T101500Z");
  CHECK(j["examined_bytes"] == 1 << 20);
  CHECK(j["rewritten_bytes"] == 4096);
  CHECK(j["seconds"] == 0.5);
  RollbackResult rb2;
  REQUIRE(FromJson(j, &rb2).ok());
  CHECK(rb2.point.lsn == 5);
  CHECK(rb2.before.name == rb.before.name);
  CHECK(rb2.rewritten_bytes == 4096);
  json bad = j;
  bad.erase("before");
  CHECK(FromJson(bad, &rb2).message().find("'before'") != std::string::npos);

  DiffResult d;
  d.from = p;
  d.to = p;
  d.to.lsn = 9;
  d.to.checkpoint.clear();
  d.to.text = "lsn:9";
  d.ranges = {{0, 512}, {4096, 8192}};
  d.bytes = 8704;
  d.records = 4;
  j = ToJson(d);
  CHECK(j["ranges"] == json::parse(R"([{"offset":0,"length":512},{"offset":4096,"length":8192}])"));
  CHECK(j["bytes"] == 8704);
  CHECK(j["records"] == 4);
  CHECK(j["from"]["lsn"] == 5);
  CHECK(j["to"]["text"] == "lsn:9");
  CHECK_FALSE(j["to"].contains("checkpoint"));
  DiffResult d2;
  REQUIRE(FromJson(j, &d2).ok());
  REQUIRE(d2.ranges.size() == 2);
  CHECK(d2.ranges[1].offset == 4096);
  CHECK(d2.ranges[1].length == 8192);
  CHECK(d2.to.lsn == 9);
  bad = j;
  bad["ranges"][0].erase("length");
  CHECK(FromJson(bad, &d2).message().find("'length'") != std::string::npos);
  bad = j;
  bad["ranges"] = 3;
  CHECK(FromJson(bad, &d2).code() == Status::Code::kInvalidArgument);

  VerifyReport v;
  v.redo_records = 10;
  v.damage = {"redo record 3: payload hash mismatch"};
  j = ToJson(v);
  CHECK(j["clean"] == false);
  CHECK(j["redo_records"] == 10);
  CHECK(j["damage"] == json::array({"redo record 3: payload hash mismatch"}));
  for (const char* key : {"undo_records", "checkpoints", "payload_bytes", "image_pages_checked"}) {
    CHECK(j.contains(key));
  }
  VerifyReport v2;
  REQUIRE(FromJson(j, &v2).ok());
  CHECK(v2.damage == v.damage);
  CHECK_FALSE(v2.clean());
  v.damage.clear();
  CHECK(ToJson(v)["clean"] == true);

  PruneResult pr;
  pr.kept.resize(1);
  pr.kept[0].name = "two";
  pr.dropped.resize(2);
  pr.history_start_lsn = 9;
  pr.segments_deleted = 1;
  pr.bytes_before = 100;
  pr.bytes_after = 10;
  j = ToJson(pr, /*dry_run=*/true);
  CHECK(j["dry_run"] == true);
  CHECK(j["kept"].size() == 1);
  CHECK(j["kept"][0]["name"] == "two");
  CHECK(j["dropped"].size() == 2);
  CHECK(j["history_start_lsn"] == 9);
  for (const char* key : {"redo_records_dropped", "undo_records_dropped", "segments_deleted",
                          "bytes_before", "bytes_after"}) {
    CHECK(j.contains(key));
  }
  PruneResult pr2;
  REQUIRE(FromJson(j, &pr2).ok());
  CHECK(pr2.kept.size() == 1);
  CHECK(pr2.dropped.size() == 2);
  CHECK(pr2.bytes_after == 10);
  bad = j;
  bad["dropped"][0].erase("lsn");
  CHECK(FromJson(bad, &pr2).message().find("'lsn'") != std::string::npos);
}

TEST_CASE("rollback and prune run inside the exclusive hook, busy refuses them untouched",
          "[control]") {
  TempDir dir;
  HistoryStore store(dir.path());
  Hook hook;
  ControlServerOptions options;
  options.exclusive = hook.fn();

  json j = Handle(store, Req(Op::kRollback, {{"to", "one"}}), &options);
  INFO(j.dump());
  REQUIRE(j["ok"] == true);
  CHECK(j["result"]["point"]["lsn"] == 5);
  CHECK(j["result"]["before"]["name"] == "before-rollback-20261123T101500Z");
  CHECK(hook.ran == 1);
  CHECK(store.rollbacks == 1);

  j = Handle(store, Req(Op::kPrune, {{"keep_last", 1}}), &options);
  REQUIRE(j["ok"] == true);
  CHECK(j["result"]["dry_run"] == false);
  CHECK(hook.ran == 2);
  CHECK(store.prunes == 1);
  CHECK(store.last_policy.keep_last == 1);

  // Diff, verify and a dry run change nothing: no hold on the disk.
  REQUIRE(Handle(store, Req(Op::kDiff, {{"from", "lsn:1"}, {"to", "one"}}), &options)["ok"] ==
          true);
  REQUIRE(Handle(store, Req(Op::kVerify), &options)["ok"] == true);
  j = Handle(store, Req(Op::kPrune, {{"keep_daily", 2}, {"dry_run", true}}), &options);
  REQUIRE(j["ok"] == true);
  CHECK(j["result"]["dry_run"] == true);
  CHECK(hook.calls == 2);

  hook.writers = 1;
  j = Handle(store, Req(Op::kRollback, {{"to", "one"}}), &options);
  CHECK(j["ok"] == false);
  CHECK(j["id"] == 1);
  CHECK(j["error"]["code"] == "busy");
  CHECK(j["error"]["message"] == "1 client has the live disk open for writing");
  j = Handle(store, Req(Op::kPrune, {{"keep_last", 1}}), &options);
  CHECK(j["error"]["code"] == "busy");
  CHECK(store.rollbacks == 1);
  CHECK(store.prunes == 2);  // only the dry run since
  // A dry run is still answered.
  CHECK(Handle(store, Req(Op::kPrune, {{"keep_last", 1}, {"dry_run", true}}), &options)["ok"] ==
        true);

  // A bad point is reported before the hook is asked.
  const int calls = hook.calls;
  j = Handle(store, Req(Op::kRollback, {{"to", "nope"}}), &options);
  CHECK(j["error"]["code"] == "not-found");
  CHECK(hook.calls == calls);

  // Without a hook (or options) the work runs directly.
  hook.writers = 0;
  CHECK(Handle(store, Req(Op::kRollback, {{"to", "lsn:3"}}), nullptr)["ok"] == true);
  CHECK(store.rollbacks == 2);
}

TEST_CASE("an exception inside exclusive work never escapes the hook", "[control]") {
  TempDir dir;
  HistoryStore store(dir.path());
  store.throw_in_rollback = true;
  bool escaped = false;
  ControlServerOptions options;
  options.exclusive = [&](const std::function<Status()>& work) {
    try {
      return work();
    } catch (...) {
      escaped = true;
      throw;
    }
  };
  json j = Handle(store, Req(Op::kRollback, {{"to", "one"}}), &options);
  CHECK_FALSE(escaped);
  CHECK(j["ok"] == false);
  CHECK(j["error"]["code"] == "io-error");
  CHECK(j["error"]["message"].get<std::string>().find("boom") != std::string::npos);
}

TEST_CASE("the server passes its exclusive hook to rollback over the socket", "[control]") {
  TempDir dir;
  HistoryStore store(dir.path(), /*steps=*/6, /*step_ms=*/50);
  Hook hook;
  ControlServerOptions options;
  options.exclusive = hook.fn();
  auto server = StartServer(&store, options);

  json req = Req(Op::kRollback, {{"to", "one"}, {"progress", true}});
  Lines lines = CallRaw(server->socket_path(), req);
  INFO(lines.response.dump());
  REQUIRE(lines.response["ok"] == true);
  CHECK(hook.ran == 1);
  // A first line at once, then the store's reports, at most 5 a second.
  REQUIRE(lines.progress.size() >= 2);
  CHECK(lines.progress.size() <= 4);
  CHECK(lines.progress[0]["progress"]["done"] == 0);
  uint64_t last = 0;
  for (const json& p : lines.progress) {
    CHECK(p["id"] == 1);
    uint64_t done = p["progress"]["done"];
    CHECK(done >= last);
    last = done;
  }

  hook.writers = 2;
  json response;
  REQUIRE(ControlCall(server->socket_path(), req, &response, 5000).ok());
  Status s = ResultOf(response, nullptr);
  CHECK(s.code() == Status::Code::kBusy);
  CHECK(s.message() == "1 client has the live disk open for writing");
  CHECK(store.rollbacks == 1);
}

TEST_CASE("keep-alive lines restart a client's timeout during a long prune or diff", "[control]") {
  TempDir dir;
  HistoryStore store(dir.path(), /*steps=*/5, /*step_ms=*/100);  // 500 ms, silent
  ControlServerOptions options;
  options.keepalive_ms = 100;
  auto server = StartServer(&store, options);

  for (json req : {Req(Op::kPrune, {{"keep_last", 2}, {"progress", true}}),
                   Req(Op::kDiff, {{"from", "lsn:1"}, {"to", "one"}, {"progress", true}})}) {
    INFO(req.dump());
    int lines = 0;
    json response;
    Status s = ControlCall(server->socket_path(), req, &response, /*timeout_ms=*/400,
                           [&](uint64_t, uint64_t) {
                             ++lines;
                             return true;
                           });
    INFO(s.ToString());
    REQUIRE(s.ok());
    CHECK(response["ok"] == true);
    CHECK(lines >= 4);  // the first at once, then one per 100 ms of silence
  }
  // Without progress, no line comes and the client's timeout ends the call.
  json response;
  Status s = ControlCall(server->socket_path(), Req(Op::kPrune, {{"keep_last", 2}}), &response,
                         /*timeout_ms=*/300);
  CHECK(s.ToErrno() == ETIMEDOUT);
}

TEST_CASE("a verify stops when its client goes away, damage is a result", "[control]") {
  TempDir dir;
  HistoryStore store(dir.path(), /*steps=*/100, /*step_ms=*/20);  // 2 s
  auto server = StartServer(&store, {});
  json response;
  int calls = 0;
  Status s = ControlCall(server->socket_path(), Req(Op::kVerify, {{"progress", true}}), &response,
                         5000, [&](uint64_t, uint64_t) { return ++calls < 2; });
  CHECK(s.code() == Status::Code::kAborted);
  auto deadline = Clock::now() + std::chrono::seconds(2);
  while (!store.verify_cancelled && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(store.verify_cancelled);

  HistoryStore damaged(dir.path() + "/x", /*steps=*/1, /*step_ms=*/1);
  damaged.damage = {"redo record 3: payload hash mismatch", "checkpoint 2 (b): bad checksum"};
  json j = Handle(damaged, Req(Op::kVerify), nullptr);
  REQUIRE(j["ok"] == true);
  CHECK(j["result"]["clean"] == false);
  CHECK(j["result"]["damage"].size() == 2);
}
