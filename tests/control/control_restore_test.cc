// The restore op of the control protocol: its request and result, progress
// lines, the client's idle timeout, and cancellation when the client goes
// away or the server stops.  The store is a double whose restore takes a
// known time and reports progress in known steps.
#include <rewind/control/protocol.h>
#include <rewind/control/server.h>

#include <catch2/catch.hpp>

#include "support/proc_util.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fake_store.h"

using nlohmann::json;
using rwd::PointInfo;
using rwd::RestoreResult;
using rwd::Status;
using namespace rwd::control;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kMiB = 1 << 20;

// Restores in `steps` chunks of 1 MiB, each taking step_ms, and calls the
// progress callback after each, as Store::Restore does.
class SlowRestoreStore : public test::UnusedStore {
 public:
  SlowRestoreStore(std::string dir, int steps, int step_ms)
      : UnusedStore(std::move(dir)), steps_(steps), step_ms_(step_ms) {}

  uint64_t size() const override { return steps_ * kMiB; }

  Status GetInfo(rwd::StoreInfo* out) override {
    out->dir = dir();
    out->image_path = dir() + "/image.raw";
    out->size = size();
    return Status::Ok();
  }

  Status ResolvePoint(const std::string& text, PointInfo* out) override {
    if (text == "nope") return Status::NotFound("no checkpoint named 'nope'");
    PointInfo p;
    p.text = text;
    p.lsn = 42;
    p.time_ns = 1795428900123456789;
    if (text == "one") {
      p.checkpoint = "one";
      p.checkpoint_id = 1;
    }
    *out = p;
    return Status::Ok();
  }

  Status Restore(const PointInfo& point, const rwd::RestoreOptions& options,
                 RestoreResult* out) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      output_ = options.output;
      overwrite_ = options.overwrite;
    }
    started_ = true;
    for (int i = 1; i <= steps_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(step_ms_));
      if (options.progress && !options.progress(i * kMiB, size())) {
        cancelled_ = true;
        return Status::Aborted("restore interrupted");
      }
    }
    finished_ = true;
    out->point = point;
    out->bytes = size();
    out->data_bytes = kMiB;
    out->changed_bytes = 4096;
    out->seconds = 0.5;
    return Status::Ok();
  }

  bool started() const { return started_; }
  bool cancelled() const { return cancelled_; }
  bool finished() const { return finished_; }
  std::string output() {
    std::lock_guard<std::mutex> lock(mu_);
    return output_;
  }
  bool overwrite() {
    std::lock_guard<std::mutex> lock(mu_);
    return overwrite_;
  }

  // Waits up to timeout for the restore to be cancelled.
  bool WaitCancelled(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (!cancelled_ && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return cancelled_;
  }

 private:
  const int steps_;
  const int step_ms_;
  std::atomic<bool> started_{false};
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> finished_{false};
  std::mutex mu_;
  std::string output_;
  bool overwrite_ = false;
};

// A temporary directory, removed with everything in it.
struct TempDir : rwd::test::TempDir {
  TempDir() : rwd::test::TempDir("rewind-ctlrst") {}
};

std::unique_ptr<ControlServer> StartServer(rwd::Store* store) {
  ControlServerOptions options;
  options.socket_path = SocketPath(store->dir());
  std::unique_ptr<ControlServer> server;
  Status s = ControlServer::Start(options, store, &server);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return server;
}

json RestoreRequest(int id, const std::string& to, bool progress, bool force = false) {
  json r = MakeRequest(Op::kRestore);
  r["id"] = id;
  r["to"] = to;
  r["output"] = "/srv/out.raw";
  r["force"] = force;
  r["progress"] = progress;
  return r;
}

// A raw connection that reads lines with their arrival times.
class Conn {
 public:
  explicit Conn(const std::string& path) : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof(addr.sun_path));
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  }
  ~Conn() { Close(); }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  void Send(const std::string& data) {
    REQUIRE(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(data.size()));
  }

  // The next line; nullopt on EOF or after timeout_ms.
  std::optional<std::string> ReadLine(int timeout_ms = 5000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (left <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, left) != 1) return std::nullopt;
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return std::nullopt;
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  std::string buf_;
};

}  // namespace

TEST_CASE("ParseRequest reads the members of restore", "[control]") {
  Request req;
  REQUIRE_FALSE(ParseRequest(
      R"({"v":1,"id":3,"op":"restore","to":"lsn:5","output":"/srv/a.raw","force":true,"progress":true})",
      &req));
  CHECK(req.op == Op::kRestore);
  CHECK(req.to == "lsn:5");
  CHECK(req.output == "/srv/a.raw");
  CHECK(req.force);
  CHECK(req.progress);
  CHECK(std::string(OpName(Op::kRestore)) == "restore");

  REQUIRE_FALSE(ParseRequest(R"({"v":1,"op":"restore","to":"one","output":"/a"})", &req));
  CHECK_FALSE(req.force);
  CHECK_FALSE(req.progress);

  struct Case {
    const char* line;
    const char* code;
  };
  for (Case c :
       {Case{R"({"v":1,"id":1,"op":"restore","output":"/a"})", "bad-request"},
        Case{R"({"v":1,"id":1,"op":"restore","to":5,"output":"/a"})", "bad-request"},
        Case{R"({"v":1,"id":1,"op":"restore","to":"one"})", "bad-request"},
        Case{R"({"v":1,"id":1,"op":"restore","to":"one","output":7})", "bad-request"},
        Case{R"({"v":1,"id":1,"op":"restore","to":"one","output":"a.raw"})", "invalid-argument"},
        Case{R"({"v":1,"id":1,"op":"restore","to":"one","output":""})", "invalid-argument"},
        Case{R"({"v":1,"id":1,"op":"restore","to":"one","output":"/a","force":"yes"})",
             "bad-request"},
        Case{R"({"v":1,"id":1,"op":"restore","to":"one","output":"/a","progress":1})",
             "bad-request"}}) {
    INFO(c.line);
    std::optional<Error> err = ParseRequest(c.line, &req);
    REQUIRE(err);
    CHECK(err->code == c.code);
    CHECK(req.id == json(1));
  }
}

TEST_CASE("RestoreResult and PointInfo JSON round trip", "[control]") {
  RestoreResult r;
  r.point.text = "before-upgrade";
  r.point.lsn = 1234;
  r.point.time_ns = 1795428900123456789;
  r.point.checkpoint = "before-upgrade";
  r.bytes = 1ull << 30;
  r.data_bytes = 300 << 20;
  r.changed_bytes = 12 << 20;
  r.seconds = 0.75;
  json j = ToJson(r, "/srv/vm1.raw");
  CHECK(j["point"] == json{{"text", "before-upgrade"},
                           {"lsn", 1234},
                           {"time_ns", 1795428900123456789},
                           {"time", "2026-11-23T10:15:00.123456789Z"},
                           {"checkpoint", "before-upgrade"}});
  CHECK(j["output"] == "/srv/vm1.raw");
  CHECK(j["bytes"] == 1ull << 30);
  CHECK(j["data_bytes"] == 300 << 20);
  CHECK(j["changed_bytes"] == 12 << 20);
  CHECK(j["seconds"] == 0.75);

  RestoreResult back;
  REQUIRE(FromJson(j, &back).ok());
  CHECK(back.point.text == r.point.text);
  CHECK(back.point.lsn == r.point.lsn);
  CHECK(back.point.time_ns == r.point.time_ns);
  CHECK(back.point.checkpoint == r.point.checkpoint);
  CHECK(back.bytes == r.bytes);
  CHECK(back.data_bytes == r.data_bytes);
  CHECK(back.changed_bytes == r.changed_bytes);
  CHECK(back.seconds == r.seconds);

  r.point.checkpoint.clear();
  j = ToJson(r, "");
  CHECK_FALSE(j["point"].contains("checkpoint"));
  CHECK_FALSE(j.contains("output"));
  REQUIRE(FromJson(j, &back).ok());
  CHECK(back.point.checkpoint.empty());

  json bad = j;
  bad.erase("seconds");
  CHECK(FromJson(bad, &back).code() == Status::Code::kInvalidArgument);
  bad = j;
  bad["point"].erase("lsn");
  Status s = FromJson(bad, &back);
  CHECK(s.message().find("'lsn'") != std::string::npos);
}

TEST_CASE("Progress lines are told from responses", "[control]") {
  json p = MakeProgress(json(7), 5, 10);
  CHECK(p == json{{"v", 1}, {"id", 7}, {"progress", {{"done", 5}, {"total", 10}}}});
  CHECK_FALSE(MakeProgress(std::nullopt, 0, 1).contains("id"));
  uint64_t done = 99, total = 99;
  CHECK(IsProgress(p, &done, &total));
  CHECK(done == 5);
  CHECK(total == 10);
  CHECK_FALSE(IsProgress(MakeResult(json(7), json::object()), nullptr, nullptr));
  CHECK_FALSE(IsProgress(json{{"v", 1}, {"ok", true}, {"progress", 1}}, nullptr, nullptr));
  CHECK(IsProgress(json{{"v", 1}, {"progress", "odd"}}, &done, &total));
  CHECK(done == 0);
}

TEST_CASE("restore sends progress lines only when asked, at most about 5 a second", "[control]") {
  TempDir dir;
  SlowRestoreStore store(dir.path(), /*steps=*/12, /*step_ms=*/50);  // 600 ms
  auto server = StartServer(&store);

  SECTION("asked") {
    Conn conn(server->socket_path());
    auto start = Clock::now();
    conn.Send(ToLine(RestoreRequest(5, "one", /*progress=*/true, /*force=*/true)));
    std::vector<json> progress;
    std::vector<Clock::duration> at;
    json response;
    for (;;) {
      std::optional<std::string> line = conn.ReadLine();
      REQUIRE(line);
      json j = json::parse(*line);
      if (IsProgress(j, nullptr, nullptr)) {
        progress.push_back(j);
        at.push_back(Clock::now() - start);
        continue;
      }
      response = j;
      break;
    }
    INFO(response.dump());
    REQUIRE(response["ok"] == true);
    CHECK(response["id"] == 5);
    CHECK(response["result"]["point"]["checkpoint"] == "one");
    CHECK(response["result"]["output"] == "/srv/out.raw");
    CHECK(response["result"]["bytes"] == 12 * kMiB);
    CHECK(store.output() == "/srv/out.raw");
    CHECK(store.overwrite());
    // A first line at once, then one per 200 ms at most: 4 in 600 ms.
    REQUIRE(progress.size() >= 2);
    CHECK(progress.size() <= 5);
    CHECK(progress[0]["progress"]["done"] == 0);
    uint64_t last = 0;
    for (size_t i = 0; i < progress.size(); ++i) {
      INFO(progress[i].dump());
      CHECK(progress[i]["v"] == 1);
      CHECK(progress[i]["id"] == 5);
      CHECK(progress[i]["progress"]["total"] == 12 * kMiB);
      uint64_t done = progress[i]["progress"]["done"];
      CHECK(done >= last);
      last = done;
      if (i > 0) CHECK(at[i] - at[i - 1] >= std::chrono::milliseconds(150));
    }
  }
  SECTION("not asked") {
    Conn conn(server->socket_path());
    conn.Send(ToLine(RestoreRequest(6, "lsn:42", /*progress=*/false)));
    std::optional<std::string> line = conn.ReadLine();
    REQUIRE(line);
    json j = json::parse(*line);
    CHECK(j["ok"] == true);
    CHECK(j["id"] == 6);
    CHECK_FALSE(j["result"]["point"].contains("checkpoint"));
    CHECK_FALSE(store.overwrite());
    CHECK_FALSE(conn.ReadLine(100).has_value());  // nothing more
  }
  SECTION("an unknown point is not-found and nothing is restored") {
    Conn conn(server->socket_path());
    conn.Send(ToLine(RestoreRequest(7, "nope", /*progress=*/true)));
    json j = json::parse(conn.ReadLine().value());
    CHECK(j["ok"] == false);
    CHECK(j["error"]["code"] == "not-found");
    CHECK_FALSE(store.started());
  }
}

TEST_CASE("ControlCall: progress lines restart the timeout of a long call", "[control]") {
  TempDir dir;
  SlowRestoreStore store(dir.path(), /*steps=*/16, /*step_ms=*/50);  // 800 ms
  auto server = StartServer(&store);
  int lines = 0;
  json response;
  Status s = ControlCall(server->socket_path(), RestoreRequest(1, "one", true), &response,
                         /*timeout_ms=*/400, [&](uint64_t done, uint64_t total) {
                           CHECK(done <= total);
                           CHECK(total == 16 * kMiB);
                           ++lines;
                           return true;
                         });
  INFO(s.ToString());
  REQUIRE(s.ok());
  CHECK(response["ok"] == true);
  CHECK(lines >= 3);

  // The old signature skips the progress lines, and is reset by them too.
  s = ControlCall(server->socket_path(), RestoreRequest(2, "one", true), &response, 400);
  INFO(s.ToString());
  REQUIRE(s.ok());
  CHECK(response["id"] == 2);
  CHECK(response["ok"] == true);
}

TEST_CASE("ControlCall without progress lines times out on a long restore, which is cancelled",
          "[control]") {
  TempDir dir;
  SlowRestoreStore store(dir.path(), /*steps=*/40, /*step_ms=*/50);  // 2 s
  auto server = StartServer(&store);
  json response;
  Status s = ControlCall(server->socket_path(), RestoreRequest(1, "one", false), &response, 300);
  CHECK(s.code() == Status::Code::kIOError);
  CHECK(s.ToErrno() == ETIMEDOUT);
  // The client has gone: the server's progress callback says stop.
  CHECK(store.WaitCancelled(std::chrono::seconds(2)));
  CHECK_FALSE(store.finished());
}

TEST_CASE("a restore is cancelled when its client disconnects", "[control]") {
  TempDir dir;
  SlowRestoreStore store(dir.path(), /*steps=*/100, /*step_ms=*/20);  // 2 s
  auto server = StartServer(&store);

  SECTION("a raw client that closes") {
    Conn conn(server->socket_path());
    conn.Send(ToLine(RestoreRequest(1, "one", /*progress=*/false)));
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    REQUIRE(store.started());
    conn.Close();
  }
  SECTION("a ControlCall whose progress callback says stop") {
    json response;
    int calls = 0;
    Status s = ControlCall(server->socket_path(), RestoreRequest(1, "one", true), &response, 5000,
                           [&](uint64_t, uint64_t) { return ++calls < 2; });
    CHECK(s.code() == Status::Code::kAborted);
    CHECK(calls == 2);
  }
  auto start = Clock::now();
  CHECK(store.WaitCancelled(std::chrono::seconds(2)));
  CHECK(Clock::now() - start < std::chrono::milliseconds(500));
  CHECK_FALSE(store.finished());
  // The server still serves.
  json response;
  REQUIRE(ControlCall(server->socket_path(), MakeRequest(Op::kHello), &response, 2000).ok());
  CHECK(response["ok"] == true);
}

TEST_CASE("a client that only shuts down its sending side still gets its restore", "[control]") {
  TempDir dir;
  SlowRestoreStore store(dir.path(), /*steps=*/10, /*step_ms=*/20);
  auto server = StartServer(&store);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, server->socket_path().c_str(), server->socket_path().size() + 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  std::string req = ToLine(RestoreRequest(1, "one", false));
  REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  REQUIRE(::shutdown(fd, SHUT_WR) == 0);
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) got.append(buf, n);
  ::close(fd);
  INFO(got);
  REQUIRE(!got.empty());
  CHECK(json::parse(got.substr(0, got.find('\n')))["ok"] == true);
  CHECK(store.finished());
}

TEST_CASE("ControlServer::Stop cancels a running restore promptly", "[control]") {
  TempDir dir;
  SlowRestoreStore store(dir.path(), /*steps=*/500, /*step_ms=*/10);  // 5 s
  auto server = StartServer(&store);
  Conn conn(server->socket_path());
  conn.Send(ToLine(RestoreRequest(1, "one", true)));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(store.started());
  auto start = Clock::now();
  server->Stop();
  CHECK(Clock::now() - start < std::chrono::seconds(1));
  CHECK(store.cancelled());
  // What the client saw: progress lines, then perhaps the aborted answer,
  // then the end of the connection.
  for (;;) {
    std::optional<std::string> line = conn.ReadLine(2000);
    if (!line) break;
    json j = json::parse(*line);
    if (IsProgress(j, nullptr, nullptr)) continue;
    CHECK(j["ok"] == false);
    CHECK(j["error"]["code"] == "aborted");
  }
}

TEST_CASE("CheckRestoreOutput refuses the store's own files", "[control]") {
  TempDir tmp;
  namespace fs = std::filesystem;
  const std::string dir = tmp.path() + "/store";
  fs::create_directories(dir + "/journal");
  const std::string image = tmp.path() + "/disk.raw";
  { std::ofstream(image) << "x"; }
  fs::create_directory_symlink(dir, tmp.path() + "/link");

  for (const std::string& bad :
       {dir + "/image.raw", dir + "/journal/CURRENT", dir + "/new.raw", tmp.path() + "/link/x.raw",
        dir + "/../store/x.raw", image, tmp.path() + "/./disk.raw"}) {
    INFO(bad);
    Status s = CheckRestoreOutput(bad, dir, image);
    CHECK(s.code() == Status::Code::kInvalidArgument);
    CHECK(s.message().find(bad) != std::string::npos);
  }
  for (const std::string& good : {tmp.path() + "/out.raw", tmp.path() + "/store2",
                                  tmp.path() + "/missing/x.raw", tmp.path() + "/link"}) {
    INFO(good);
    CHECK(CheckRestoreOutput(good, dir, image).ok());
  }
}

TEST_CASE("restore refuses an output inside the store", "[control]") {
  TempDir dir;
  SlowRestoreStore store(dir.path(), /*steps=*/2, /*step_ms=*/1);
  json r = RestoreRequest(3, "one", false, true);
  r["output"] = dir.path() + "/image.raw";
  std::string line = ToLine(r);
  line.pop_back();
  json j = HandleRequestLine(store, line);
  CHECK(j["ok"] == false);
  CHECK(j["error"]["code"] == "invalid-argument");
  CHECK_FALSE(store.started());
}

TEST_CASE("HandleRequestLine restores without a channel", "[control]") {
  TempDir dir;
  SlowRestoreStore store(dir.path(), /*steps=*/2, /*step_ms=*/1);
  std::string line = ToLine(RestoreRequest(9, "one", true));
  line.pop_back();  // without its '\n'
  json j = HandleRequestLine(store, line);
  CHECK(j["ok"] == true);
  CHECK(j["id"] == 9);
  CHECK(store.finished());
}
