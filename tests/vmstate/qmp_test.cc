// Tests of the QMP client.
//
// Transcript tests play conversations recorded from a real QEMU 7.2
// (qemu-system-x86_64 7.2.22 from Debian 12, q35 under TCG, talked to with
// exactly the lines QmpClient sends) through a scripted transport, cut into
// chunks four ways: as QEMU wrote them, byte by byte, at pseudo-random
// points, and all merged into one read.  Edited transcripts, marked as such,
// add what QEMU 7.2 does not send on its own (unknown members, stale ids,
// garbage, a connection closing mid-line).
//
// The [qemu] tests start a real qemu-system-x86_64 and skip (exit 77) when
// it is not installed.
#include <rewind/vmstate/qmp.h>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/proc_util.h"

namespace rwd::vm {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;

// ------------------------------------------------------------ transcripts
//
// "<<< X"      QEMU starts a new write with line X (sent as X "\r\n")
// "... X"      the same write goes on with line X
// "<<<TIMEOUT" QEMU stays silent for one Receive (the client's timeout)
// "<<<CLOSED"  QEMU closes the connection
// ">>> X"      the client sends line X ("\n"); QEMU's later writes wait for it
// Lines starting with "//" are comments.

// Recorded: greeting, capabilities, query-version, query-status, stop with
// its STOP event before the return, cont with RESUME in a write of its own,
// an unknown command, getfd without an fd (GenericError), stop twice (the
// second emits no STOP).
constexpr const char* kBasic = R"(
<<< {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
>>> {"execute":"query-version","id":2}
<<< {"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "id": 2}
>>> {"execute":"query-status","id":3}
<<< {"return": {"status": "running", "singlestep": false, "running": true}, "id": 3}
>>> {"execute":"stop","id":4}
<<< {"timestamp": {"seconds": 1796082859, "microseconds": 803422}, "event": "STOP"}
... {"return": {}, "id": 4}
>>> {"execute":"query-status","id":5}
<<< {"return": {"status": "paused", "singlestep": false, "running": false}, "id": 5}
>>> {"execute":"cont","id":6}
<<< {"timestamp": {"seconds": 1796082860, "microseconds": 408659}, "event": "RESUME"}
<<< {"return": {}, "id": 6}
>>> {"execute":"no-such-command","id":7}
<<< {"id": 7, "error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}}
>>> {"arguments":{"fdname":"x"},"execute":"getfd","id":8}
<<< {"id": 8, "error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}
>>> {"execute":"stop","id":9}
<<< {"timestamp": {"seconds": 1796082861, "microseconds": 311105}, "event": "STOP"}
... {"return": {}, "id": 9}
>>> {"execute":"stop","id":10}
<<< {"return": {}, "id": 10}
)";

// Recorded, started with -S: migration events on, cont, then a migration
// of the running guest.  MIGRATION "setup" comes before the migrate
// command's return; STOP comes after it, mid-migration, and no RESUME
// follows: the guest stays in "postmigrate".
constexpr const char* kMigrate = R"(
<<< {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
>>> {"arguments":{"capabilities":[{"capability":"events","state":true}]},"execute":"migrate-set-capabilities","id":2}
<<< {"return": {}, "id": 2}
>>> {"execute":"cont","id":3}
<<< {"timestamp": {"seconds": 1796082862, "microseconds": 867401}, "event": "RESUME"}
... {"return": {}, "id": 3}
>>> {"arguments":{"uri":"exec:cat >/dev/null"},"execute":"migrate","id":4}
<<< {"timestamp": {"seconds": 1796082863, "microseconds": 168098}, "event": "MIGRATION", "data": {"status": "setup"}}
<<< {"return": {}, "id": 4}
<<< {"timestamp": {"seconds": 1796082863, "microseconds": 170805}, "event": "MIGRATION_PASS", "data": {"pass": 1}}
<<< {"timestamp": {"seconds": 1796082863, "microseconds": 170863}, "event": "MIGRATION", "data": {"status": "active"}}
<<< {"timestamp": {"seconds": 1796082863, "microseconds": 182544}, "event": "STOP"}
<<< {"timestamp": {"seconds": 1796082863, "microseconds": 182708}, "event": "MIGRATION_PASS", "data": {"pass": 2}}
<<< {"timestamp": {"seconds": 1796082863, "microseconds": 183568}, "event": "MIGRATION", "data": {"status": "completed"}}
>>> {"execute":"query-status","id":5}
<<< {"return": {"status": "postmigrate", "singlestep": false, "running": false}, "id": 5}
)";

// Recorded: quit answers, after its SHUTDOWN event, and QEMU closes the
// socket (a reader sees ECONNRESET or end of stream).
constexpr const char* kQuit = R"(
<<< {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
>>> {"execute":"quit","id":2}
<<< {"timestamp": {"seconds": 1796082865, "microseconds": 638354}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}
<<< {"return": {}, "id": 2}
<<<CLOSED
)";

constexpr const char* kGreeting =
    R"({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}})";

// What QEMU sends, one write (or silence, or the close) at a time.
struct Incoming {
  enum Kind { kData, kTimeout, kClosed };
  Kind kind = kData;
  std::string bytes;
  size_t after_sends = 0;  // lines the client must have sent first
};

struct Transcript {
  std::deque<Incoming> in;
  std::string out;  // every line the client must send, "\n"-terminated
};

Transcript ParseTranscript(const std::string& text) {
  Transcript t;
  size_t sends = 0;
  for (const std::string& line : test::NonEmptyLines(text)) {
    if (line.rfind("//", 0) == 0) continue;
    std::string tag = line.substr(0, 3);
    std::string body = line.size() > 4 ? line.substr(4) : "";
    if (line == "<<<TIMEOUT" || line == "<<<CLOSED") {
      t.in.push_back({line == "<<<CLOSED" ? Incoming::kClosed : Incoming::kTimeout, "", sends});
    } else if (tag == "<<<") {
      t.in.push_back({Incoming::kData, body + "\r\n", sends});
    } else if (tag == "...") {
      REQUIRE((!t.in.empty() && t.in.back().kind == Incoming::kData));
      t.in.back().bytes += body + "\r\n";
    } else {
      REQUIRE(tag == ">>>");
      t.out += body + "\n";
      ++sends;
    }
  }
  return t;
}

enum class Split { kAsRecorded, kByteByByte, kRandom, kMerged };

const char* SplitName(Split s) {
  switch (s) {
    case Split::kAsRecorded: return "as recorded";
    case Split::kByteByByte: return "byte by byte";
    case Split::kRandom: return "random cuts";
    case Split::kMerged: return "merged";
  }
  return "?";
}

// Cuts QEMU's writes differently.  kMerged runs everything up to the first
// silence or close together in one read, before the client sent anything.
std::deque<Incoming> Rechunk(const std::deque<Incoming>& in, Split split) {
  std::deque<Incoming> out;
  uint64_t rnd = 0x9E3779B97F4A7C15ull;
  for (const Incoming& c : in) {
    if (c.kind != Incoming::kData || split == Split::kAsRecorded) {
      out.push_back(c);
    } else if (split == Split::kMerged) {
      if (out.empty() || out.back().kind != Incoming::kData) {
        out.push_back({Incoming::kData, "", 0});
      }
      out.back().bytes += c.bytes;
    } else {
      for (size_t i = 0; i < c.bytes.size();) {
        rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = split == Split::kByteByByte ? 1 : 1 + (rnd >> 33) % 97;
        out.push_back({Incoming::kData, c.bytes.substr(i, n), c.after_sends});
        i += n;
      }
    }
  }
  return out;
}

// The scripted QEMU: hands out its writes in order, each only once the
// client has sent the lines before it; silent (a timeout) otherwise.
struct Peer {
  std::deque<Incoming> in;
  std::string sent;
  size_t lines_sent = 0;
  std::vector<std::pair<size_t, int>> fds;  // (line index, fd) passed
  int receives = 0;
};

class ScriptedTransport final : public QmpTransport {
 public:
  explicit ScriptedTransport(std::shared_ptr<Peer> peer) : peer_(std::move(peer)) {}

  Status Send(const std::string& data, int fd, milliseconds) override {
    if (!peer_->in.empty() && peer_->in.front().kind == Incoming::kClosed &&
        peer_->in.front().after_sends <= peer_->lines_sent) {
      return Status::Aborted("QMP connection closed");
    }
    if (fd >= 0) peer_->fds.emplace_back(peer_->lines_sent, fd);
    peer_->sent += data;
    for (char c : data) peer_->lines_sent += c == '\n';
    return Status::Ok();
  }

  Status Receive(milliseconds, std::string* buf) override {
    ++peer_->receives;
    if (peer_->in.empty()) return Status::Ok();
    Incoming& next = peer_->in.front();
    if (next.after_sends > peer_->lines_sent) return Status::Ok();
    if (next.kind == Incoming::kClosed) return Status::Aborted("QMP connection closed");
    if (next.kind == Incoming::kData) buf->append(next.bytes);
    peer_->in.pop_front();
    return Status::Ok();
  }

 private:
  std::shared_ptr<Peer> peer_;
};

struct Scripted {
  std::shared_ptr<Peer> peer = std::make_shared<Peer>();
  std::string want_sent;
  std::unique_ptr<QmpClient> client;
};

// A client attached to a scripted QEMU that plays transcript cut by split;
// REQUIREs that the handshake succeeds.
Scripted Attach(const std::string& transcript, Split split = Split::kAsRecorded) {
  Scripted s;
  Transcript t = ParseTranscript(transcript);
  s.peer->in = Rechunk(t.in, split);
  s.want_sent = t.out;
  Status st =
      QmpClient::Attach(std::make_unique<ScriptedTransport>(s.peer), milliseconds(1000), &s.client);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return s;
}

std::string EventName(const Json& ev) { return ev.value("event", std::string()); }

std::vector<std::string> EventNames(const std::deque<Json>& evs) {
  std::vector<std::string> names;
  for (const Json& e : evs) names.push_back(EventName(e));
  return names;
}

TEST_CASE("qmp: basic QEMU 7.2 transcript, however the bytes are cut", "[qmp]") {
  Split split = GENERATE(Split::kAsRecorded, Split::kByteByByte, Split::kRandom, Split::kMerged);
  INFO("split: " << SplitName(split));
  Scripted s = Attach(kBasic, split);
  QmpClient& c = *s.client;
  CHECK(c.version() == 70222);
  CHECK(c.greeting()["capabilities"] == Json::array({"oob"}));

  Json ret;
  REQUIRE(c.Execute("query-version", Json(), &ret).ok());
  CHECK(ret["qemu"]["major"] == 7);
  REQUIRE(c.Execute("query-status", nullptr, &ret).ok());
  CHECK(ret["status"] == "running");
  REQUIRE(c.Execute("stop", Json(), nullptr).ok());
  // The STOP event came before the return and is already queued.
  Json ev;
  REQUIRE(c.WaitEvent("STOP", milliseconds(0), &ev).ok());
  CHECK(ev["timestamp"]["seconds"] == 1796082859);
  REQUIRE(c.Execute("query-status", Json(), &ret).ok());
  CHECK(ret["status"] == "paused");
  REQUIRE(c.Execute("cont", Json(), nullptr).ok());

  Status st = c.Execute("no-such-command", Json(), &ret);
  CHECK(st.code() == Status::Code::kNotSupported);
  CHECK(st.message() == "qemu: The command no-such-command has not been found");
  st = c.Execute("getfd", {{"fdname", "x"}}, &ret);
  CHECK(st.code() == Status::Code::kIOError);
  CHECK(st.message() == "qemu: No file descriptor supplied via SCM_RIGHTS");

  REQUIRE(c.Execute("stop", Json(), nullptr).ok());
  REQUIRE(c.Execute("stop", Json(), nullptr).ok());  // already stopped: no STOP
  std::deque<Json> events;
  REQUIRE(c.TakeEvents(&events).ok());
  CHECK(EventNames(events) == std::vector<std::string>{"RESUME", "STOP"});
  REQUIRE(c.TakeEvents(&events).ok());
  CHECK(events.empty());
  CHECK(s.peer->sent == s.want_sent);
  CHECK(s.peer->in.empty());
}

TEST_CASE("qmp: migration events arrive before and after the migrate reply", "[qmp]") {
  Split split = GENERATE(Split::kAsRecorded, Split::kByteByByte, Split::kRandom, Split::kMerged);
  INFO("split: " << SplitName(split));
  Scripted s = Attach(kMigrate, split);
  QmpClient& c = *s.client;
  Json caps = {{"capabilities", Json::array({{{"capability", "events"}, {"state", true}}})}};
  REQUIRE(c.Execute("migrate-set-capabilities", caps, nullptr).ok());
  REQUIRE(c.Execute("cont", Json(), nullptr).ok());
  REQUIRE(c.Execute("migrate", {{"uri", "exec:cat >/dev/null"}}, nullptr).ok());

  std::vector<std::string> statuses;
  Json ev;
  while (statuses.empty() || statuses.back() != "completed") {
    Status st = c.WaitEvent("MIGRATION", milliseconds(1000), &ev);
    INFO(st.ToString());
    REQUIRE(st.ok());
    statuses.push_back(ev["data"]["status"]);
  }
  CHECK(statuses == std::vector<std::string>{"setup", "active", "completed"});
  Json ret;
  REQUIRE(c.Execute("query-status", Json(), &ret).ok());
  CHECK(ret["status"] == "postmigrate");
  std::deque<Json> events;
  REQUIRE(c.TakeEvents(&events).ok());
  CHECK(EventNames(events) ==
        std::vector<std::string>{"RESUME", "MIGRATION_PASS", "STOP", "MIGRATION_PASS"});
  CHECK(s.peer->sent == s.want_sent);
}

TEST_CASE("qmp: quit answers, then the closed connection fails every call", "[qmp]") {
  Split split = GENERATE(Split::kAsRecorded, Split::kByteByByte, Split::kMerged);
  INFO("split: " << SplitName(split));
  Scripted s = Attach(kQuit, split);
  QmpClient& c = *s.client;
  REQUIRE(c.Execute("quit", Json(), nullptr).ok());
  std::deque<Json> events;
  Status st = c.TakeEvents(&events);
  CHECK(st.code() == Status::Code::kAborted);
  CHECK(st.message() == "QMP connection closed");
  // The SHUTDOWN before the close is handed over all the same.
  CHECK(EventNames(events) == std::vector<std::string>{"SHUTDOWN"});

  st = c.Execute("query-status", Json(), nullptr, milliseconds(100));
  CHECK(st.message() == "QMP connection closed");
  st = c.WaitEvent("STOP", milliseconds(100), nullptr);
  CHECK(st.message() == "QMP connection closed");
  CHECK(s.peer->sent == s.want_sent);  // nothing sent after the close
}

TEST_CASE("qmp: the connection closing mid-line or mid-command", "[qmp]") {
  SECTION("mid-line, while a command waits") {
    Scripted s = Attach(std::string("<<< ") + kGreeting + R"(
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
>>> {"execute":"query-status","id":2}
<<< {"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}
... {"return": {"status": "run
<<<CLOSED
)");
    // The cut line was given "\r\n" by the transcript; take it back off.
    s.peer->in[0].bytes.resize(s.peer->in[0].bytes.size() - 2);
    Status st = s.client->Execute("query-status", Json(), nullptr, milliseconds(1000));
    CHECK(st.code() == Status::Code::kAborted);
    CHECK(st.message() == "QMP connection closed");
    Json ev;
    CHECK(s.client->WaitEvent("STOP", milliseconds(0), &ev).ok());
  }
  SECTION("before the greeting") {
    auto peer = std::make_shared<Peer>();
    peer->in.push_back({Incoming::kData, R"({"QMP": {"vers)", 0});
    peer->in.push_back({Incoming::kClosed, "", 0});
    std::unique_ptr<QmpClient> c;
    Status st = QmpClient::Attach(std::make_unique<ScriptedTransport>(peer), milliseconds(100), &c);
    CHECK(st.message() == "QMP connection closed");
    CHECK(c == nullptr);
  }
}

// Edited from kBasic: members QEMU 7.2 does not send (as a later QEMU
// might), extra whitespace, LF-only and blank lines.
TEST_CASE("qmp: unknown members, LF-only and blank lines are accepted", "[qmp]") {
  Scripted s = Attach(R"(
<<< {"QMP": {"version": {"qemu": {"micro": 1, "minor": 0, "major": 9, "x-build": "abc"}, "package": ""}, "capabilities": ["oob", "x-new"], "x-extra": {"a": [1, 2]}}}
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1, "x-trace": "t1"}
>>> {"execute":"query-status","id":2}
<<<   {"x-event-id": 5, "timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP", "x-flags": null}  
... {"return": {"status": "paused", "running": false, "x-new-field": 1}, "id": 2, "x-warnings": []}
)");
  s.peer->in.push_back(
      {Incoming::kData,
       "{\"event\": \"RESUME\", \"timestamp\": {}}\n\n \r\n{\"return\": 7, \"id\": 3}\n", 3});
  QmpClient& c = *s.client;
  CHECK(c.version() == 90001);
  Json ret;
  REQUIRE(c.Execute("query-status", Json(), &ret).ok());
  CHECK(ret["status"] == "paused");
  REQUIRE(c.Execute("x-something", Json(), &ret).ok());
  CHECK(ret == 7);
  std::deque<Json> events;
  REQUIRE(c.TakeEvents(&events).ok());
  REQUIRE(EventNames(events) == std::vector<std::string>{"STOP", "RESUME"});
  CHECK(events[0]["x-event-id"] == 5);
}

// Edited: the reply to a command that timed out arrives during the next
// one and is dropped; so are replies with ids the client never used.
TEST_CASE("qmp: replies are matched by id and stale ones dropped", "[qmp]") {
  Scripted s = Attach(std::string("<<< ") + kGreeting + R"(
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
>>> {"execute":"query-status","id":2}
<<<TIMEOUT
>>> {"execute":"query-status","id":3}
<<< {"return": {"status": "stale"}, "id": 2}
... {"return": {"status": "no id"}}
... {"return": {"status": "string id"}, "id": "3"}
... {"return": {"status": "negative id"}, "id": -3}
... {"return": {"status": "other id"}, "id": 77}
... {"error": {"class": "GenericError", "desc": "stale error"}, "id": 2}
... {"return": {"status": "running"}, "id": 3}
)");
  QmpClient& c = *s.client;
  Json ret;
  Status st = c.Execute("query-status", Json(), &ret, milliseconds(50));
  CHECK(st.code() == Status::Code::kIOError);
  CHECK(st.ToErrno() == ETIMEDOUT);
  CHECK(st.message() == "QMP command query-status timed out after 50 ms");
  REQUIRE(c.Execute("query-status", Json(), &ret).ok());
  CHECK(ret["status"] == "running");
  CHECK(s.peer->sent == s.want_sent);
}

// Recorded (QEMU's answer to the line "garbage"): an error without id
// answers the command in flight, since every request carries an id.
TEST_CASE("qmp: an error without id answers the command in flight", "[qmp]") {
  Scripted s = Attach(std::string("<<< ") + kGreeting + R"(
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
>>> {"execute":"query-status","id":2}
<<< {"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'garbage'"}}
)");
  Status st = s.client->Execute("query-status", Json(), nullptr);
  CHECK(st.code() == Status::Code::kIOError);
  CHECK(st.message() == "qemu: JSON parse error, invalid keyword 'garbage'");
}

// Edited: lines that are not QMP messages.
TEST_CASE("qmp: garbage lines are errors, and the client goes on", "[qmp]") {
  auto bad = GENERATE(as<std::string>(), "garbage", "[1, 2]", R"({"foo": 1})", R"({"event": 5})",
                      "{\"return\": {}, \"id\": 2");
  INFO("bad line: " << bad);
  Scripted s = Attach(std::string("<<< ") + kGreeting + R"(
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
>>> {"execute":"query-status","id":2}
<<< )" + bad + R"(
... {"return": {"status": "late"}, "id": 2}
>>> {"execute":"query-status","id":3}
<<< {"return": {"status": "running"}, "id": 3}
)");
  QmpClient& c = *s.client;
  Json ret;
  Status st = c.Execute("query-status", Json(), &ret);
  CHECK(st.code() == Status::Code::kIOError);
  CHECK(st.ToErrno() == EPROTO);
  CHECK(st.message() == "QMP: malformed message '" + bad + "'");
  REQUIRE(c.Execute("query-status", Json(), &ret).ok());
  CHECK(ret["status"] == "running");
}

TEST_CASE("qmp: a first message that is not a greeting", "[qmp]") {
  auto peer = std::make_shared<Peer>();
  peer->in.push_back({Incoming::kData, "{\"return\": {}}\r\n", 0});
  std::unique_ptr<QmpClient> c;
  Status st = QmpClient::Attach(std::make_unique<ScriptedTransport>(peer), milliseconds(100), &c);
  CHECK(st.ToErrno() == EPROTO);
  CHECK(st.message() == R"(QMP: malformed message '{"return":{}}')");
}

TEST_CASE("qmp: timeouts are one-phrase errors and leave the client usable", "[qmp]") {
  SECTION("no greeting") {
    auto peer = std::make_shared<Peer>();
    std::unique_ptr<QmpClient> c;
    Status st = QmpClient::Attach(std::make_unique<ScriptedTransport>(peer), milliseconds(10), &c);
    CHECK(st.ToErrno() == ETIMEDOUT);
    CHECK(st.message() == "QMP: no greeting within 10 ms");
  }
  SECTION("no capabilities reply") {
    auto peer = std::make_shared<Peer>();
    peer->in.push_back({Incoming::kData, std::string(kGreeting) + "\r\n", 0});
    std::unique_ptr<QmpClient> c;
    Status st = QmpClient::Attach(std::make_unique<ScriptedTransport>(peer), milliseconds(10), &c);
    CHECK(st.ToErrno() == ETIMEDOUT);
    CHECK(st.message().rfind("QMP command qmp_capabilities timed out after ", 0) == 0);
  }
  SECTION("no event") {
    Scripted s = Attach(std::string("<<< ") + kGreeting + R"(
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
... {"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}
<<<TIMEOUT
<<< {"timestamp": {"seconds": 1, "microseconds": 3}, "event": "STOP"}
)");
    Status st = s.client->WaitEvent("STOP", milliseconds(20), nullptr);
    CHECK(st.ToErrno() == ETIMEDOUT);
    CHECK(st.message() == "QMP: no STOP event within 20 ms");
    Json ev;
    REQUIRE(s.client->WaitEvent("STOP", milliseconds(20), &ev).ok());
    CHECK(ev["timestamp"]["microseconds"] == 3);
    REQUIRE(s.client->WaitEvent("RESUME", milliseconds(0), &ev).ok());
  }
}

TEST_CASE("qmp: a message longer than the limit breaks the client", "[qmp]") {
  Scripted s = Attach(std::string("<<< ") + kGreeting + R"(
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
)");
  std::string huge = "{\"return\": \"" + std::string(QmpClient::kMaxMessageBytes, 'x');
  s.peer->in.push_back({Incoming::kData, huge, 0});
  Status st = s.client->Execute("query-status", Json(), nullptr);
  CHECK(st.ToErrno() == EPROTO);
  CHECK(st.message() == "QMP: message longer than 16777216 bytes");
  CHECK(s.client->Execute("query-status", Json(), nullptr).message() == st.message());
}

TEST_CASE("qmp: arguments, fds and requests the client refuses", "[qmp]") {
  Scripted s = Attach(std::string("<<< ") + kGreeting + R"(
>>> {"execute":"qmp_capabilities","id":1}
<<< {"return": {}, "id": 1}
>>> {"arguments":{"fdname":"fd-\"q\"\n"},"execute":"getfd","id":2}
<<< {"return": {}, "id": 2}
)");
  QmpClient& c = *s.client;
  REQUIRE(c.ExecuteWithFd("getfd", {{"fdname", "fd-\"q\"\n"}}, 42, nullptr).ok());
  CHECK(s.peer->fds == std::vector<std::pair<size_t, int>>{{1, 42}});
  CHECK(s.peer->sent == s.want_sent);

  Status st = c.Execute("getfd", Json::array({1}), nullptr);
  CHECK(st.code() == Status::Code::kInvalidArgument);
  st = c.Execute("getfd", {{"fdname", "\xff\xfe"}}, nullptr);
  CHECK(st.code() == Status::Code::kInvalidArgument);
  st = c.ExecuteWithFd("getfd", {{"fdname", "x"}}, -1, nullptr);
  CHECK(st.code() == Status::Code::kInvalidArgument);
  CHECK(s.peer->sent == s.want_sent);  // none of them was sent
}

// ------------------------------------------------------ socket transport

// Interrupts the calling process every millisecond with SIGALRM (handler
// without SA_RESTART) while it lives: every poll and recv sees EINTR.
class SignalStorm {
 public:
  SignalStorm() {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    REQUIRE(::sigaction(SIGALRM, &sa, &old_) == 0);
    itimerval it{{0, 1000}, {0, 1000}};
    REQUIRE(::setitimer(ITIMER_REAL, &it, nullptr) == 0);
  }
  ~SignalStorm() {
    itimerval off{};
    ::setitimer(ITIMER_REAL, &off, nullptr);
    ::sigaction(SIGALRM, &old_, nullptr);
  }

 private:
  struct sigaction old_ {};
};

// The QEMU end of a socketpair, run on its own thread (which blocks
// SIGALRM, so that a SignalStorm hits the client's thread).
class SocketPeer {
 public:
  explicit SocketPeer(int fd) : fd_(fd) {
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~SocketPeer() {
    if (fd_ >= 0) ::close(fd_);
  }
  static void BlockAlarm() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }
  // One line from the client (without "\n"), collecting the fds passed.
  std::string ReadLine(std::vector<int>* fds) {
    std::string line;
    char c;
    for (;;) {
      iovec iov{&c, 1};
      alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      if (::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC) != 1) return line + "<EOF>";
      for (cmsghdr* h = CMSG_FIRSTHDR(&msg); h != nullptr; h = CMSG_NXTHDR(&msg, h)) {
        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; ++i) {
          int got;
          std::memcpy(&got, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
          fds->push_back(got);
        }
      }
      if (c == '\n') return line;
      line += c;
    }
  }
  // Writes data one byte per send.
  void WriteByBytes(const std::string& data) {
    for (char c : data) {
      if (::send(fd_, &c, 1, MSG_NOSIGNAL) != 1) return;
    }
  }
  void Close() {
    ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

TEST_CASE("qmp: socket transport: byte-wise writes, SCM_RIGHTS, EINTR, then a close", "[qmp]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  std::vector<std::string> got_lines;
  std::vector<int> got_fds;
  std::thread peer_thread([&, fd = sv[1]] {
    SocketPeer::BlockAlarm();
    SocketPeer peer(fd);
    peer.WriteByBytes(std::string(kGreeting) + "\r\n");
    got_lines.push_back(peer.ReadLine(&got_fds));
    peer.WriteByBytes("{\"return\": {}, \"id\": 1}\r\n");
    got_lines.push_back(peer.ReadLine(&got_fds));
    for (int f : got_fds) {
      if (::write(f, "x", 1) != 1) break;
    }
    peer.WriteByBytes(
        "{\"event\": \"STOP\", \"timestamp\": {}}\r\n{\"return\": {}, \"id\": 2}\r\n");
    std::this_thread::sleep_for(milliseconds(100));
    peer.WriteByBytes("{\"event\": \"RESUME\", \"timestamp\": {}}\r\n");
    got_lines.push_back(peer.ReadLine(&got_fds));
    peer.WriteByBytes("{\"return\": {\"sta");
    peer.Close();
  });
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } joiner{peer_thread};

  std::unique_ptr<QmpClient> c;
  Status st = QmpClient::Attach(MakeSocketTransport(sv[0]), milliseconds(2000), &c);
  INFO(st.ToString());
  REQUIRE(st.ok());
  REQUIRE(c->ExecuteWithFd("getfd", {{"fdname", "p"}}, pipe_fds[1], nullptr).ok());
  char x = 0;
  CHECK(::read(pipe_fds[0], &x, 1) == 1);
  CHECK(x == 'x');
  REQUIRE(c->WaitEvent("STOP", milliseconds(0), nullptr).ok());
  {
    SignalStorm storm;
    double start = test::NowSeconds();
    REQUIRE(c->WaitEvent("RESUME", milliseconds(2000), nullptr).ok());
    CHECK(test::NowSeconds() - start < 1.0);
    start = test::NowSeconds();
    st = c->WaitEvent("NEVER", milliseconds(200), nullptr);
    double took = test::NowSeconds() - start;
    CHECK(st.message() == "QMP: no NEVER event within 200 ms");
    CHECK(took >= 0.2);
    CHECK(took < 1.0);
  }
  st = c->Execute("query-status", Json(), nullptr, milliseconds(2000));
  CHECK(st.message() == "QMP connection closed");
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  peer_thread.join();
  CHECK(got_lines ==
        std::vector<std::string>{R"({"execute":"qmp_capabilities","id":1})",
                                 R"({"arguments":{"fdname":"p"},"execute":"getfd","id":2})",
                                 R"({"execute":"query-status","id":3})"});
  REQUIRE(got_fds.size() == 1);
  ::close(got_fds[0]);
}

TEST_CASE("qmp: socket transport: QEMU not reading times a command out", "[qmp]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  std::string hello = std::string(kGreeting) + "\r\n{\"return\": {}, \"id\": 1}\r\n";
  REQUIRE(::write(sv[1], hello.data(), hello.size()) == static_cast<ssize_t>(hello.size()));
  std::unique_ptr<QmpClient> c;
  REQUIRE(QmpClient::Attach(MakeSocketTransport(sv[0]), milliseconds(1000), &c).ok());
  // Far more than the socket buffers hold.
  Json big = {{"blob", std::string(16u << 20, 'b')}};
  double start = test::NowSeconds();
  Status st = c->Execute("x-big", big, nullptr, milliseconds(100));
  CHECK(test::NowSeconds() - start < 1.0);
  CHECK(st.ToErrno() == ETIMEDOUT);
  CHECK(st.message() == "QMP command x-big timed out after 100 ms");
  st = c->Execute("query-status", Json(), nullptr, milliseconds(100));
  CHECK(st.message() == "QMP: connection unusable after a send timed out");
  ::close(sv[1]);
}

// ------------------------------------------------------------ real QEMU

constexpr int kSkipExitCode = 77;

// Ends the run as skipped (exit 77, see tests/support/nbd_rewind.h) when
// QEMU is not installed.
void RequireQemuOrSkip() {
  if (test::FindInPath("qemu-system-x86_64").empty()) {
    std::fprintf(stderr,
                 "SKIPPED: qemu-system-x86_64 is not installed (not found in PATH); the QMP "
                 "tests against QEMU need it (Debian package qemu-system-x86)\n");
    std::fflush(nullptr);
    std::exit(kSkipExitCode);
  }
}

// A QEMU without guest (-S, no devices, TCG) with its QMP socket; killed
// with SIGKILL and reaped when destroyed.
class Qemu {
 public:
  Qemu() {
    RequireQemuOrSkip();
    pid_ = test::SpawnProcess(
        {"qemu-system-x86_64", "-machine", "q35,accel=tcg", "-display", "none", "-nodefaults", "-m",
         "64", "-S", "-qmp", "unix:" + socket() + ",server=on,wait=off"},
        dir_ / "qemu.log", dir_ / "qemu.log");
  }
  ~Qemu() { Kill(); }
  Qemu(const Qemu&) = delete;
  Qemu& operator=(const Qemu&) = delete;

  std::string socket() const { return dir_ / "qmp.sock"; }
  std::string log() const { return test::ReadFile(dir_ / "qemu.log"); }

  // Connects once QEMU listens (NotFound until then).
  std::unique_ptr<QmpClient> Connect() {
    double start = test::NowSeconds();
    std::unique_ptr<QmpClient> c;
    for (;;) {
      Status st = QmpClient::Connect(socket(), milliseconds(5000), &c);
      if (st.ok()) return c;
      INFO(st.ToString() << "\nQEMU log:\n" << log());
      REQUIRE(st.code() == Status::Code::kNotFound);
      REQUIRE(test::NowSeconds() - start < 5.0);
      std::this_thread::sleep_for(milliseconds(10));
    }
  }

  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    test::ExitStatus ignored;
    test::WaitForExit(pid_, std::chrono::seconds(10), &ignored);
    pid_ = -1;
  }

 private:
  test::TempDir dir_{"rwqmp"};
  pid_t pid_ = -1;
};

TEST_CASE("qmp: real QEMU: version, status, stop and cont with their events", "[qmp][qemu]") {
  Qemu qemu;
  std::unique_ptr<QmpClient> c = qemu.Connect();
  Json ret;
  REQUIRE(c->Execute("query-version", Json(), &ret, milliseconds(2000)).ok());
  CHECK(c->version() == ret["qemu"]["major"].get<int>() * 10000 +
                            ret["qemu"]["minor"].get<int>() * 100 +
                            ret["qemu"]["micro"].get<int>());
  CHECK(c->version() >= 70000);
  REQUIRE(c->Execute("query-status", Json(), &ret).ok());
  CHECK(ret["status"] == "prelaunch");

  REQUIRE(c->Execute("cont", Json(), nullptr).ok());
  REQUIRE(c->WaitEvent("RESUME", milliseconds(2000), nullptr).ok());
  REQUIRE(c->Execute("query-status", Json(), &ret).ok());
  CHECK(ret["status"] == "running");

  REQUIRE(c->Execute("stop", Json(), nullptr).ok());
  // QEMU sends STOP before stop's return: it is queued already.
  REQUIRE(c->WaitEvent("STOP", milliseconds(0), nullptr).ok());
  REQUIRE(c->Execute("query-status", Json(), &ret).ok());
  CHECK(ret["status"] == "paused");
  std::deque<Json> events;
  REQUIRE(c->TakeEvents(&events).ok());
  CHECK(events.empty());
}

TEST_CASE("qmp: real QEMU: error replies", "[qmp][qemu]") {
  Qemu qemu;
  std::unique_ptr<QmpClient> c = qemu.Connect();
  Status st = c->Execute("no-such-command", Json(), nullptr);
  CHECK(st.code() == Status::Code::kNotSupported);
  CHECK(st.message() == "qemu: The command no-such-command has not been found");
  st = c->Execute("closefd", {{"fdname", "none"}}, nullptr);
  CHECK(st.code() == Status::Code::kIOError);
  CHECK(st.message() == "qemu: File descriptor named 'none' not found");
  st = c->Execute("query-status", {{"x-unknown", 1}}, nullptr);
  CHECK(st.message() == "qemu: Parameter 'x-unknown' is unexpected");
  REQUIRE(c->Execute("query-status", Json(), nullptr).ok());
}

// Whether fd reads end of file within timeout (every write end closed).
bool ReadsEof(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  char c;
  return ::read(fd, &c, 1) == 0;
}

TEST_CASE("qmp: real QEMU: getfd takes a pipe's fd, closefd closes it", "[qmp][qemu]") {
  Qemu qemu;
  std::unique_ptr<QmpClient> c = qemu.Connect();
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  Status st = c->ExecuteWithFd("getfd", {{"fdname", "pipe-w"}}, p[1], nullptr);
  INFO(st.ToString());
  REQUIRE(st.ok());
  ::close(p[1]);
  // QEMU holds the write end now: no end of file until closefd.
  CHECK_FALSE(ReadsEof(p[0], 50));
  REQUIRE(c->Execute("closefd", {{"fdname", "pipe-w"}}, nullptr).ok());
  CHECK(ReadsEof(p[0], 2000));
  ::close(p[0]);
  st = c->Execute("closefd", {{"fdname", "pipe-w"}}, nullptr);
  CHECK(st.message() == "qemu: File descriptor named 'pipe-w' not found");
}

TEST_CASE("qmp: real QEMU killed mid-session: connection closed, no hang", "[qmp][qemu]") {
  Qemu qemu;
  std::unique_ptr<QmpClient> c = qemu.Connect();
  REQUIRE(c->Execute("cont", Json(), nullptr).ok());
  qemu.Kill();
  double start = test::NowSeconds();
  Status st = c->Execute("query-status", Json(), nullptr, milliseconds(4000));
  CHECK(st.code() == Status::Code::kAborted);
  CHECK(st.message() == "QMP connection closed");
  st = c->WaitEvent("STOP", milliseconds(4000), nullptr);
  CHECK(st.message() == "QMP connection closed");
  CHECK(test::NowSeconds() - start < 1.0);
  std::deque<Json> events;
  st = c->TakeEvents(&events);
  CHECK(st.code() == Status::Code::kAborted);
  CHECK(EventNames(events) == std::vector<std::string>{"RESUME"});
}

TEST_CASE("qmp: real QEMU: a second client gets no greeting", "[qmp][qemu]") {
  Qemu qemu;
  std::unique_ptr<QmpClient> first = qemu.Connect();
  std::unique_ptr<QmpClient> second;
  Status st = QmpClient::Connect(qemu.socket(), milliseconds(300), &second);
  CHECK(st.ToErrno() == ETIMEDOUT);
  CHECK(st.message() == "QMP socket " + qemu.socket() + ": QMP: no greeting within 300 ms");
  REQUIRE(first->Execute("query-status", Json(), nullptr).ok());
}

TEST_CASE("qmp: connecting where nothing listens is NotFound", "[qmp]") {
  test::TempDir dir("rwqmp");
  std::unique_ptr<QmpClient> c;
  SECTION("no such socket") {
    std::string path = dir / "missing.sock";
    Status st = QmpClient::Connect(path, milliseconds(500), &c);
    CHECK(st.code() == Status::Code::kNotFound);
    CHECK(st.message() == "no QEMU is listening on QMP socket " + path);
  }
  SECTION("a socket without listener (ECONNREFUSED)") {
    std::string path = dir / "stale.sock";
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    ::close(fd);  // the file stays, nothing listens
    Status st = QmpClient::Connect(path, milliseconds(500), &c);
    CHECK(st.code() == Status::Code::kNotFound);
    CHECK(st.message() == "no QEMU is listening on QMP socket " + path);
  }
  SECTION("a path too long for a Unix socket") {
    Status st = QmpClient::Connect("/" + std::string(200, 'x'), milliseconds(500), &c);
    CHECK(st.code() == Status::Code::kInvalidArgument);
  }
  CHECK(c == nullptr);
}

}  // namespace
}  // namespace rwd::vm
