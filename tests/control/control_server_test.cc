// ControlServer and ControlCall over a real Unix socket, with an in-test
// Store that only implements what the control protocol reaches.
#include <rewind/control/protocol.h>
#include <rewind/control/server.h>

#include <catch2/catch.hpp>

#include "support/proc_util.h"

#include "fake_store.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

using nlohmann::json;
using rwd::CheckpointInfo;
using rwd::Status;
using rwd::StoreInfo;
using namespace rwd::control;
using Clock = std::chrono::steady_clock;

namespace {

// A Store that keeps checkpoints in memory; everything else the control
// protocol does not reach fails loudly (UnusedStore).
class FakeStore : public rwd::control::test::UnusedStore {
 public:
  explicit FakeStore(std::string dir) : UnusedStore(std::move(dir)) {}

  using UnusedStore::Checkpoint;
  using UnusedStore::ListCheckpoints;
  Status Checkpoint(const rwd::CheckpointOptions& options, CheckpointInfo* out) override {
    const std::string& name = options.name;
    std::lock_guard<std::mutex> lock(mu_);
    if (name.find('/') != std::string::npos) {
      return Status::InvalidArgument("checkpoint name '" + name + "' contains '/'");
    }
    CheckpointInfo cp;
    cp.id = cps_.size() + 1;
    cp.name = name.empty() ? "cp-" + std::to_string(cp.id) : name;
    for (const CheckpointInfo& old : cps_) {
      if (old.name == cp.name) return Status::AlreadyExists("checkpoint '" + cp.name + "' exists");
    }
    cp.lsn = 100 * cp.id;
    cp.time_ns = 1795428900123456789 + static_cast<int64_t>(cp.id);
    cps_.push_back(cp);
    *out = cp;
    return Status::Ok();
  }

  Status ListCheckpoints(std::vector<CheckpointInfo>* out, bool) override {
    std::lock_guard<std::mutex> lock(mu_);
    *out = cps_;
    return Status::Ok();
  }

  Status GetInfo(StoreInfo* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    StoreInfo info;
    info.dir = dir();
    info.image_path = dir() + "/image.raw";
    info.format_version = 1;
    info.size = size();
    info.block_size = block_size();
    info.checkpoints = cps_.size();
    *out = info;
    return Status::Ok();
  }

 private:
  std::mutex mu_;
  std::vector<CheckpointInfo> cps_;
};

// A temporary directory, removed with everything in it.
struct TempDir : rwd::test::TempDir {
  TempDir() : rwd::test::TempDir("rewind-control") {}
};

std::unique_ptr<ControlServer> StartServer(FakeStore* store, ControlServerOptions options = {}) {
  if (options.socket_path.empty()) options.socket_path = SocketPath(store->dir());
  std::unique_ptr<ControlServer> server;
  Status s = ControlServer::Start(options, store, &server);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return server;
}

json Call(const std::string& socket, json request) {
  json response;
  Status s = ControlCall(socket, request, &response, 5000);
  INFO(s.ToString());
  REQUIRE(s.ok());
  CHECK(response["v"] == 1);
  return response;
}

// A raw connection, to send arbitrary bytes.
class RawConn {
 public:
  explicit RawConn(const std::string& path)
      : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof(addr.sun_path));
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  }
  ~RawConn() { ::close(fd_); }

  void Send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n < 0) break;  // the server may close early (too-long)
      done += static_cast<size_t>(n);
    }
  }

  // The next line, or nullopt on EOF; fails the test on a 5 s timeout.
  std::optional<std::string> ReadLine(int timeout_ms = 5000) {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      pollfd p{fd_, POLLIN, 0};
      int rc = ::poll(&p, 1, timeout_ms);
      REQUIRE(rc == 1);
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return std::nullopt;
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }

  json ReadResponse() {
    std::optional<std::string> line = ReadLine();
    REQUIRE(line.has_value());
    return json::parse(*line);
  }

 private:
  int fd_;
  std::string buf_;
};

}  // namespace

TEST_CASE("ControlServer listens on an owner-only socket", "[control]") {
  TempDir dir;
  FakeStore store(dir.path());
  auto server = StartServer(&store);
  CHECK(server->socket_path() == dir.path() + "/control.sock");
  struct stat st;
  REQUIRE(::lstat(server->socket_path().c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == ::geteuid());
}

TEST_CASE("ControlServer answers hello, info, checkpoint and list", "[control]") {
  TempDir dir;
  FakeStore store(dir.path());
  auto server = StartServer(&store);
  const std::string& sock = server->socket_path();

  json hello = Call(sock, json{{"v", 1}, {"id", 10}, {"op", "hello"}});
  CHECK(hello["id"] == 10);
  CHECK(hello["ok"] == true);
  CHECK(hello["result"]["server"] == ServerName());
  CHECK(hello["result"]["versions"] == json::array({1}));

  json cp = Call(sock, json{{"v", 1}, {"id", 8}, {"op", "checkpoint"}, {"name", "before-upgrade"}});
  CHECK(cp["id"] == 8);
  REQUIRE(cp["ok"] == true);
  CheckpointInfo info;
  REQUIRE(FromJson(cp["result"], &info).ok());
  CHECK(info.name == "before-upgrade");
  CHECK(info.id == 1);

  json unnamed = Call(sock, MakeRequest(Op::kCheckpoint));
  CHECK_FALSE(unnamed.contains("id"));
  CHECK(unnamed["result"]["name"] == "cp-2");

  json bad = Call(sock, json{{"v", 1}, {"id", 3}, {"op", "checkpoint"}, {"name", "a/b"}});
  CHECK(bad["ok"] == false);
  CHECK(bad["id"] == 3);
  CHECK(bad["error"]["code"] == "invalid-argument");
  CHECK(ResultOf(bad, nullptr).code() == Status::Code::kInvalidArgument);

  json dup = Call(sock, json{{"v", 1}, {"op", "checkpoint"}, {"name", "before-upgrade"}});
  CHECK(dup["error"]["code"] == "already-exists");

  json list = Call(sock, json{{"v", 1}, {"id", 9}, {"op", "list"}});
  json result;
  REQUIRE(ResultOf(list, &result).ok());
  REQUIRE(result["checkpoints"].size() == 2);
  CHECK(result["checkpoints"][0]["name"] == "before-upgrade");
  CHECK(result["checkpoints"][1]["name"] == "cp-2");

  json info_resp = Call(sock, json{{"v", 1}, {"id", 7}, {"op", "info"}});
  REQUIRE(ResultOf(info_resp, &result).ok());
  CHECK(result["online"] == true);
  CHECK(result["checkpoints"] == 2);
  StoreInfo si;
  REQUIRE(FromJson(result, &si).ok());
  CHECK(si.dir == dir.path());
}

TEST_CASE("ControlServer answers bad lines with defined errors, in order", "[control]") {
  TempDir dir;
  FakeStore store(dir.path());
  auto server = StartServer(&store);
  RawConn conn(server->socket_path());
  // Pipelined in one write; each gets its own answer and the connection
  // stays usable.
  conn.Send(
      "not json\n"
      "[1,2]\n"
      "\n"
      "{\"v\":2,\"id\":1,\"op\":\"info\"}\n"
      "{\"v\":1,\"id\":\"z\",\"op\":\"nope\"}\n"
      "{\"v\":1,\"id\":4}\n"
      "{\"v\":1,\"id\":5,\"op\":\"hello\"}\n");
  json r = conn.ReadResponse();
  CHECK(r["error"]["code"] == "bad-request");
  CHECK_FALSE(r.contains("id"));
  CHECK(conn.ReadResponse()["error"]["code"] == "bad-request");
  CHECK(conn.ReadResponse()["error"]["code"] == "bad-request");
  r = conn.ReadResponse();
  CHECK(r["error"]["code"] == "unsupported-version");
  CHECK(r["error"]["supported"] == json::array({1}));
  CHECK(r["id"] == 1);
  r = conn.ReadResponse();
  CHECK(r["error"]["code"] == "unknown-op");
  CHECK(r["id"] == "z");
  r = conn.ReadResponse();
  CHECK(r["error"]["code"] == "bad-request");
  CHECK(r["id"] == 4);
  r = conn.ReadResponse();
  CHECK(r["ok"] == true);
  CHECK(r["id"] == 5);

  // A request split across writes is answered once complete.
  conn.Send("{\"v\":1,\"id\":6,");
  ::usleep(50000);
  conn.Send("\"op\":\"list\"}\n");
  CHECK(conn.ReadResponse()["id"] == 6);
}

TEST_CASE("ControlServer refuses a too-long line and closes", "[control]") {
  TempDir dir;
  FakeStore store(dir.path());
  auto server = StartServer(&store);

  SECTION("without a newline") {
    RawConn conn(server->socket_path());
    conn.Send(std::string(kMaxRequestLine + 100, ' '));
    json r = conn.ReadResponse();
    CHECK(r["ok"] == false);
    CHECK(r["error"]["code"] == "too-long");
    CHECK_FALSE(conn.ReadLine().has_value());  // closed
  }
  SECTION("with a newline") {
    RawConn conn(server->socket_path());
    conn.Send(std::string(kMaxRequestLine + 1, ' ') + "\n{\"v\":1,\"op\":\"hello\"}\n");
    CHECK(conn.ReadResponse()["error"]["code"] == "too-long");
    CHECK_FALSE(conn.ReadLine().has_value());
  }
  SECTION("exactly the limit is fine") {
    RawConn conn(server->socket_path());
    std::string line = R"({"v":1,"id":1,"op":"hello"})";
    line.append(kMaxRequestLine - line.size(), ' ');
    conn.Send(line + "\n");
    CHECK(conn.ReadResponse()["ok"] == true);
  }
}

TEST_CASE("ControlCall reports NotFound when no plugin listens", "[control]") {
  TempDir dir;
  json response;
  std::string sock = SocketPath(dir.path());
  Status s = ControlCall(sock, MakeRequest(Op::kHello), &response, 1000);
  CHECK(s.code() == Status::Code::kNotFound);

  s = ControlCall(dir.path() + "/no/such/dir/control.sock", MakeRequest(Op::kHello), &response,
                  1000);
  CHECK(s.code() == Status::Code::kNotFound);

  // A stale socket: bound by a process that has gone.
  {
    FakeStore store(dir.path());
    auto server = StartServer(&store);
    // Simulate a crash: keep the file, close the listener behind its back.
    REQUIRE(::link(sock.c_str(), (dir.path() + "/stale.sock").c_str()) == 0);
  }
  s = ControlCall(dir.path() + "/stale.sock", MakeRequest(Op::kHello), &response, 1000);
  CHECK(s.code() == Status::Code::kNotFound);
}

TEST_CASE("ControlCall times out on a plugin that does not answer", "[control]") {
  TempDir dir;
  std::string sock = dir.path() + "/mute.sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, sock.c_str(), sock.size() + 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(::listen(fd, 4) == 0);
  json response;
  auto start = Clock::now();
  Status s = ControlCall(sock, MakeRequest(Op::kHello), &response, 300);
  auto took = Clock::now() - start;
  ::close(fd);
  CHECK(s.code() == Status::Code::kIOError);
  CHECK(s.ToErrno() == ETIMEDOUT);
  CHECK(took >= std::chrono::milliseconds(250));
  CHECK(took < std::chrono::seconds(3));
}

TEST_CASE("ControlServer replaces a stale socket and refuses a live one", "[control]") {
  TempDir dir;
  FakeStore store(dir.path());
  std::string sock = SocketPath(dir.path());

  SECTION("stale socket") {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, sock.c_str(), sock.size() + 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    ::close(fd);  // the file stays: nothing listens
    auto server = StartServer(&store);
    CHECK(Call(sock, MakeRequest(Op::kHello))["ok"] == true);
  }
  SECTION("a plugin already listens") {
    auto first = StartServer(&store);
    std::unique_ptr<ControlServer> second;
    ControlServerOptions options;
    options.socket_path = sock;
    Status s = ControlServer::Start(options, &store, &second);
    CHECK(s.code() == Status::Code::kBusy);
    CHECK(Call(sock, MakeRequest(Op::kHello))["ok"] == true);  // the first still serves
  }
  SECTION("a file that is not a socket") {
    std::ofstream(sock) << "precious";
    std::unique_ptr<ControlServer> server;
    ControlServerOptions options;
    options.socket_path = sock;
    Status s = ControlServer::Start(options, &store, &server);
    CHECK_FALSE(s.ok());
    CHECK(s.message().find("not a socket") != std::string::npos);
    std::ifstream in(sock);
    std::string content;
    in >> content;
    CHECK(content == "precious");
  }
}

TEST_CASE("ControlServer::Stop is prompt and removes the socket", "[control]") {
  TempDir dir;
  FakeStore store(dir.path());
  auto server = StartServer(&store);
  std::string sock = server->socket_path();
  RawConn idle(sock);  // a connection that never sends
  RawConn partial(sock);
  partial.Send("{\"v\":1,");
  ::usleep(50000);

  auto start = Clock::now();
  server->Stop();
  CHECK(Clock::now() - start < std::chrono::seconds(1));
  CHECK_FALSE(idle.ReadLine().has_value());
  CHECK_FALSE(partial.ReadLine().has_value());
  struct stat st;
  CHECK(::lstat(sock.c_str(), &st) != 0);
  json response;
  CHECK(ControlCall(sock, MakeRequest(Op::kHello), &response, 1000).code() ==
        Status::Code::kNotFound);
  server->Stop();  // idempotent
}

TEST_CASE("ControlServer::Stop leaves a socket that is no longer its own", "[control]") {
  TempDir dir;
  FakeStore store(dir.path());
  auto server = StartServer(&store);
  std::string sock = server->socket_path();
  REQUIRE(::unlink(sock.c_str()) == 0);
  std::ofstream(sock) << "someone else's";
  server->Stop();
  CHECK(std::filesystem::exists(sock));
}

TEST_CASE("ControlServer closes idle connections", "[control]") {
  TempDir dir;
  FakeStore store(dir.path());
  ControlServerOptions options;
  options.idle_timeout_ms = 200;
  auto server = StartServer(&store, options);
  RawConn conn(server->socket_path());
  conn.Send("{\"v\":1,\"op\":\"hello\"}\n");
  CHECK(conn.ReadResponse()["ok"] == true);
  auto start = Clock::now();
  CHECK_FALSE(conn.ReadLine(3000).has_value());
  CHECK(Clock::now() - start >= std::chrono::milliseconds(150));
}

TEST_CASE("ControlServer bounds the number of connections", "[control]") {
  TempDir dir;
  FakeStore store(dir.path());
  ControlServerOptions options;
  options.max_connections = 2;
  auto server = StartServer(&store, options);
  RawConn a(server->socket_path());
  RawConn b(server->socket_path());
  a.Send("{\"v\":1,\"op\":\"hello\"}\n");
  b.Send("{\"v\":1,\"op\":\"hello\"}\n");
  CHECK(a.ReadResponse()["ok"] == true);  // both are being served
  CHECK(b.ReadResponse()["ok"] == true);
  RawConn c(server->socket_path());
  json r = c.ReadResponse();
  CHECK(r["ok"] == false);
  CHECK(r["error"]["code"] == "busy");
  CHECK_FALSE(c.ReadLine().has_value());
}

TEST_CASE("ControlServer works on a directory path longer than sun_path", "[control]") {
  TempDir dir;
  std::string deep = dir.path();
  while (deep.size() < 200) deep += "/a-rather-long-directory-name";
  std::filesystem::create_directories(deep);
  FakeStore store(deep);
  auto server = StartServer(&store);
  struct stat st;
  REQUIRE(::lstat(SocketPath(deep).c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  json r = Call(SocketPath(deep), MakeRequest(Op::kHello));
  CHECK(r["ok"] == true);
  server->Stop();
  CHECK(::lstat(SocketPath(deep).c_str(), &st) != 0);
}

TEST_CASE("ControlServer refuses peers of another uid", "[control]") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root to connect as another uid");
    return;
  }
  TempDir dir;
  FakeStore store(dir.path());
  auto server = StartServer(&store);
  std::string sock = server->socket_path();
  // Open the file mode so that only SO_PEERCRED stands in the way.
  REQUIRE(::chmod(sock.c_str(), 0666) == 0);
  REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);

  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Child: only async-signal-safe calls.  Exit 0 when refused (EOF
    // without an answer), 1 when answered, 2 on a set-up failure.
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) _exit(2);
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, sock.c_str(), sock.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) _exit(2);
    const char req[] = "{\"v\":1,\"op\":\"hello\"}\n";
    (void)!::send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL);
    char buf[64];
    ssize_t n = ::read(fd, buf, sizeof(buf));
    _exit(n == 0 || n < 0 ? 0 : 1);
  }
  int wstatus = 0;
  REQUIRE(::waitpid(pid, &wstatus, 0) == pid);
  REQUIRE(WIFEXITED(wstatus));
  CHECK(WEXITSTATUS(wstatus) == 0);
  // The owner is still served.
  CHECK(Call(sock, MakeRequest(Op::kHello))["ok"] == true);
}
