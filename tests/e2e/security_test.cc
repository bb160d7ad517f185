// Security of the control socket (issue 6, item 7): it lives in an
// owner-only directory, peers of another uid are refused, and a table of
// bad control messages (malformed JSON, wrong types, unknown ops, missing
// members, oversized lines, bad names, bad points, bad numbers, unknown
// disks, ...) is each answered with the protocol's defined error code and
// leaves the store exactly as it was: the same checkpoints, the same files
// with the same contents.
#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

namespace fs = std::filesystem;

// Every file under dir but RocksDB's info log: its relative path, size and
// the XXH3 of its content.  (DirListing adds mtimes, which say the same.)
std::string StoreFingerprint(const std::string& dir) {
  std::string out = DirListing(dir);
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), dir).string();
    if (rel.rfind("journal/LOG", 0) == 0) continue;
    files.push_back(rel);
  }
  std::sort(files.begin(), files.end());
  for (const std::string& rel : files) {
    const std::string data = ReadFile(dir + "/" + rel);
    out += fmt::format("{} {} {:016x}\n", rel, data.size(), XXH3_64bits(data.data(), data.size()));
  }
  // DirListing's LOG lines carry sizes and mtimes that may move: drop them.
  std::string filtered;
  for (const std::string& line : NonEmptyLines(out)) {
    if (line.find("journal/LOG") == std::string::npos) filtered += line + "\n";
  }
  return filtered;
}

struct BadMessage {
  std::string line;  // sent as is, then '\n'
  std::string code;  // the error code expected
  std::string what;
};

std::string Rep(size_t n, char c) { return std::string(n, c); }

// The table.  DIR is replaced by the store's directory.
std::vector<BadMessage> BadMessages() {
  std::vector<BadMessage> t;
  auto add = [&](std::string line, std::string code, std::string what) {
    t.push_back({std::move(line), std::move(code), std::move(what)});
  };
  // Not JSON, or not an object.
  add("", "bad-request", "empty line");
  add(" ", "bad-request", "blank line");
  add("hello", "bad-request", "a word");
  add("{", "bad-request", "unterminated object");
  add("}", "bad-request", "lone brace");
  add(R"({"v": 1, "op": "info")", "bad-request", "missing closing brace");
  add(R"({"v": 1, "op": "info"}})", "bad-request", "extra closing brace");
  add(R"({"v": 1 "op": "info"})", "bad-request", "missing comma");
  add(R"({"v": 1,, "op": "info"})", "bad-request", "double comma");
  add(R"({'v': 1, 'op': 'info'})", "bad-request", "single quotes");
  add(R"({v: 1, op: "info"})", "bad-request", "unquoted keys");
  add(R"({"v": 1, "op": "info",})", "bad-request", "trailing comma");
  add(R"({"v": 1, "op": "info"} {"v": 1})", "bad-request", "two objects on one line");
  add(R"({"v": 01, "op": "info"})", "bad-request", "leading zero");
  add(R"({"v": 1, "op": "in\qo"})", "bad-request", "bad escape");
  add(R"({"v": 1, "op": "info", "id": NaN})", "bad-request", "NaN");
  add(R"({"v": 1, "op": "info", "id": Infinity})", "bad-request", "Infinity");
  add(R"({"v": 1, "op": "info" /* c */})", "bad-request", "a comment");
  add("{\"v\": 1, \"op\": \"in\xff\xfeo\"}", "bad-request", "invalid UTF-8");
  add(std::string("{\"v\": 1, \"op\": \"info\"\0}", 23), "bad-request", "a NUL byte in the line");
  add("\x01\x02\x03", "bad-request", "control bytes");
  add("null", "bad-request", "null");
  add("true", "bad-request", "true");
  add("42", "bad-request", "a number");
  add(R"("info")", "bad-request", "a string");
  add("[]", "bad-request", "an empty array");
  add(R"([{"v": 1, "op": "info"}])", "bad-request", "an object in an array");
  add(Rep(30000, '[') + Rep(30000, ']'), "bad-request", "30000 nested arrays");
  add(Rep(20000, '{') , "bad-request", "20000 open braces");
  // v.
  add(R"({"op": "info"})", "bad-request", "no v");
  add(R"({"v": "1", "op": "info"})", "bad-request", "v a string");
  add(R"({"v": 1.0, "op": "info"})", "bad-request", "v a float");
  add(R"({"v": 1.5, "op": "info"})", "bad-request", "v fractional");
  add(R"({"v": null, "op": "info"})", "bad-request", "v null");
  add(R"({"v": true, "op": "info"})", "bad-request", "v a boolean");
  add(R"({"v": [1], "op": "info"})", "bad-request", "v an array");
  add(R"({"v": 0, "op": "info"})", "unsupported-version", "v 0");
  add(R"({"v": 2, "op": "info"})", "unsupported-version", "v 2");
  add(R"({"v": -1, "op": "info"})", "unsupported-version", "v negative");
  add(R"({"v": 18446744073709551615, "op": "info"})", "unsupported-version", "v 2^64-1");
  add(R"({"v": 99999999999999999999999, "op": "info"})", "bad-request", "v beyond 64 bits");
  // op.
  add(R"({"v": 1})", "bad-request", "no op");
  add(R"({"v": 1, "op": null})", "bad-request", "op null");
  add(R"({"v": 1, "op": 7})", "bad-request", "op a number");
  add(R"({"v": 1, "op": ["info"]})", "bad-request", "op an array");
  add(R"({"v": 1, "op": {"name": "info"}})", "bad-request", "op an object");
  add(R"({"v": 1, "op": ""})", "unknown-op", "op empty");
  add(R"({"v": 1, "op": "INFO"})", "unknown-op", "op in capitals");
  add(R"({"v": 1, "op": "info "})", "unknown-op", "op with a space");
  add(R"({"v": 1, "op": "delete"})", "unknown-op", "op delete");
  add(R"({"v": 1, "op": "shutdown"})", "unknown-op", "op shutdown");
  add(R"({"v": 1, "op": "../info"})", "unknown-op", "op with ..");
  add(R"({"v": 1, "op": "info\u0000"})", "unknown-op", "op with NUL");
  add(R"({"v": 1, "op": ")" + Rep(5000, 'x') + R"("})", "unknown-op", "op 5000 bytes");
  // checkpoint.
  add(R"({"v": 1, "op": "checkpoint", "name": 7})", "bad-request", "name a number");
  add(R"({"v": 1, "op": "checkpoint", "name": true})", "bad-request", "name a boolean");
  add(R"({"v": 1, "op": "checkpoint", "name": ["a"]})", "bad-request", "name an array");
  add(R"({"v": 1, "op": "checkpoint", "name": {"a": 1}})", "bad-request", "name an object");
  add(R"({"v": 1, "op": "checkpoint", "name": "a/b"})", "invalid-argument", "name with /");
  add(R"({"v": 1, "op": "checkpoint", "name": "/etc"})", "invalid-argument", "name absolute");
  add(R"({"v": 1, "op": "checkpoint", "name": ".."})", "invalid-argument", "name ..");
  add(R"({"v": 1, "op": "checkpoint", "name": "../x"})", "invalid-argument", "name ../x");
  add(R"({"v": 1, "op": "checkpoint", "name": ".hidden"})", "invalid-argument", "name starting with .");
  add(R"({"v": 1, "op": "checkpoint", "name": "-x"})", "invalid-argument", "name starting with -");
  add(R"({"v": 1, "op": "checkpoint", "name": "a\u0000b"})", "invalid-argument", "name with NUL");
  add(R"({"v": 1, "op": "checkpoint", "name": "a\nb"})", "invalid-argument", "name with newline");
  add(R"({"v": 1, "op": "checkpoint", "name": "a\tb"})", "invalid-argument", "name with tab");
  add(R"({"v": 1, "op": "checkpoint", "name": "a\u001bb"})", "invalid-argument", "name with ESC");
  add(R"({"v": 1, "op": "checkpoint", "name": "a\u007fb"})", "invalid-argument", "name with DEL");
  add(R"({"v": 1, "op": "checkpoint", "name": "a b"})", "invalid-argument", "name with space");
  add(R"({"v": 1, "op": "checkpoint", "name": "a@b"})", "invalid-argument", "name with @");
  add(R"({"v": 1, "op": "checkpoint", "name": "a:b"})", "invalid-argument", "name with :");
  add(R"({"v": 1, "op": "checkpoint", "name": "a\\b"})", "invalid-argument", "name with backslash");
  add(R"({"v": 1, "op": "checkpoint", "name": "caf\u00e9"})", "invalid-argument", "name not ASCII");
  add(R"({"v": 1, "op": "checkpoint", "name": ")" + Rep(129, 'a') + R"("})", "invalid-argument",
      "name 129 bytes");
  add(R"({"v": 1, "op": "checkpoint", "name": ")" + Rep(60000, 'a') + R"("})", "invalid-argument",
      "name 60000 bytes");
  add(R"({"v": 1, "op": "checkpoint", "name": "lsn:5"})", "invalid-argument", "name like a POINT");
  add(R"({"v": 1, "op": "checkpoint", "name": "base"})", "already-exists", "name taken");
  add(R"({"v": 1, "op": "checkpoint", "name": "ok1", "kind": "snapshot"})", "bad-request", "kind unknown");
  add(R"({"v": 1, "op": "checkpoint", "name": "ok2", "kind": 1})", "bad-request", "kind a number");
  add(R"({"v": 1, "op": "checkpoint", "name": "ok3", "pending": "yes"})", "bad-request", "pending a string");
  add(R"({"v": 1, "op": "checkpoint", "name": "ok4", "pending": 1})", "bad-request", "pending a number");
  add(R"({"v": 1, "op": "checkpoint", "name": "ok5", "pinned": "yes"})", "bad-request", "pinned a string");
  add(R"({"v": 1, "op": "checkpoint", "name": "ok6", "pinned": 1})", "bad-request", "pinned a number");
  add(R"({"v": 1, "op": "checkpoint", "name": "ok7", "supervised": "yes"})", "bad-request",
      "supervised a string");
  add(R"({"v": 1, "op": "checkpoint", "name": "ok8", "supervised": [true]})", "bad-request",
      "supervised an array");
  // pin.
  add(R"({"v": 1, "op": "pin", "pinned": true})", "bad-request", "pin without name");
  add(R"({"v": 1, "op": "pin", "name": null, "pinned": true})", "bad-request", "pin name null");
  add(R"({"v": 1, "op": "pin", "name": 1, "pinned": true})", "bad-request", "pin name a number");
  add(R"({"v": 1, "op": "pin", "name": ["base"], "pinned": true})", "bad-request", "pin name an array");
  add(R"({"v": 1, "op": "pin", "name": "", "pinned": true})", "bad-request", "pin name empty");
  add(R"({"v": 1, "op": "pin", "name": "base"})", "bad-request", "pin without pinned");
  add(R"({"v": 1, "op": "pin", "name": "base", "pinned": null})", "bad-request", "pin pinned null");
  add(R"({"v": 1, "op": "pin", "name": "base", "pinned": "true"})", "bad-request", "pin pinned a string");
  add(R"({"v": 1, "op": "pin", "name": "base", "pinned": 1})", "bad-request", "pin pinned a number");
  add(R"({"v": 1, "op": "pin", "name": "nope", "pinned": true})", "not-found", "pin unknown name");
  add(R"({"v": 1, "op": "pin", "name": "a\nb", "pinned": true})", "invalid-argument", "pin name with newline");
  add(R"({"v": 1, "op": "pin", "name": "../base", "pinned": true})", "invalid-argument", "pin name with ..");
  add(R"({"v": 1, "op": "pin", "name": "lsn:1", "pinned": true})", "invalid-argument", "pin name a POINT");
  // commit-checkpoint.
  add(R"({"v": 1, "op": "commit-checkpoint"})", "bad-request", "no checkpoint");
  add(R"({"v": 1, "op": "commit-checkpoint", "checkpoint": 0})", "bad-request", "checkpoint 0");
  add(R"({"v": 1, "op": "commit-checkpoint", "checkpoint": -1})", "bad-request", "checkpoint negative");
  add(R"({"v": 1, "op": "commit-checkpoint", "checkpoint": 1.5})", "bad-request", "checkpoint fractional");
  add(R"({"v": 1, "op": "commit-checkpoint", "checkpoint": "1"})", "bad-request", "checkpoint a string");
  add(R"({"v": 1, "op": "commit-checkpoint", "checkpoint": 1e300})", "bad-request", "checkpoint 1e300");
  add(R"({"v": 1, "op": "commit-checkpoint", "checkpoint": 999})", "not-found", "checkpoint unknown");
  add(R"({"v": 1, "op": "commit-checkpoint", "checkpoint": 18446744073709551615})", "not-found",
      "checkpoint 2^64-1");
  // list.
  add(R"({"v": 1, "op": "list", "pending": "true"})", "bad-request", "pending a string");
  add(R"({"v": 1, "op": "list", "pending": 0})", "bad-request", "pending a number");
  // restore: members.
  add(R"({"v": 1, "op": "restore", "output": "/tmp/x.raw"})", "bad-request", "restore without to");
  add(R"({"v": 1, "op": "restore", "to": "base"})", "bad-request", "restore without output");
  add(R"({"v": 1, "op": "restore", "to": 5, "output": "/tmp/x.raw"})", "bad-request", "to a number");
  add(R"({"v": 1, "op": "restore", "to": null, "output": "/tmp/x.raw"})", "bad-request", "to null");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": 5})", "bad-request", "output a number");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "x.raw"})", "invalid-argument", "output relative");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": ""})", "invalid-argument", "output empty");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "../x.raw"})", "invalid-argument", "output ../");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "DIR/x.raw"})", "invalid-argument",
      "output inside the store");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "DIR/image.raw", "force": true})",
      "invalid-argument", "output the live image, forced");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "DIR/journal/CURRENT", "force": true})",
      "invalid-argument", "output a journal file, forced");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "/"})", "invalid-argument", "output /");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "/tmp"})", "invalid-argument", "output a directory");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "/nonexistent-dir-rwd/x.raw"})", "not-found",
      "output in a missing directory");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "/dev/null"})", "already-exists",
      "output exists, no force");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "/tmp/x.raw", "force": "yes"})", "bad-request",
      "force a string");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "/tmp/x.raw", "progress": 1})", "bad-request",
      "progress a number");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "/tmp/x.raw", "disk": 3})", "bad-request",
      "disk a number");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "/tmp/x.raw", "disk": "nosuch"})", "not-found",
      "unknown disk");
  add(R"({"v": 1, "op": "restore", "to": "base", "output": "/tmp/x.raw", "disk": "../image"})", "not-found",
      "disk with ..");
  // restore: points.
  auto point = [&](const std::string& to, const std::string& code, const std::string& what) {
    add(R"({"v": 1, "op": "restore", "output": "/tmp/rwd-never.raw", "to": )" + to + "}", code,
        "point " + what);
  };
  point(R"("")", "invalid-argument", "empty");
  point(R"("nosuch")", "not-found", "unknown checkpoint");
  point(R"("lsn:")", "invalid-argument", "lsn: without a number");
  point(R"("lsn:abc")", "invalid-argument", "lsn:abc");
  point(R"("lsn:-1")", "invalid-argument", "lsn:-1");
  point(R"("lsn:1.5")", "invalid-argument", "lsn:1.5");
  point(R"("lsn:0x10")", "invalid-argument", "lsn:0x10");
  point(R"("lsn: 1")", "invalid-argument", "lsn with a space");
  point(R"("lsn:99999999")", "not-found", "lsn beyond the newest");
  point(R"("lsn:18446744073709551615")", "invalid-argument", "lsn 2^64-1");
  point(R"("lsn:18446744073709551616")", "invalid-argument", "lsn 2^64");
  point(R"("lsn:99999999999999999999999999")", "invalid-argument", "lsn huge");
  point(R"("time:")", "invalid-argument", "time: empty");
  point(R"("time:yesterday")", "invalid-argument", "time:yesterday");
  point(R"("time:2026-13-01T00:00:00Z")", "invalid-argument", "month 13");
  point(R"("time:2026-02-30T00:00:00Z")", "invalid-argument", "February 30");
  point(R"("time:2026-01-01T25:00:00Z")", "invalid-argument", "hour 25");
  point(R"("time:1970-01-01T00:00:00Z")", "not-found", "time before the store");
  point(R"("-")", "invalid-argument", "- alone");
  point(R"("-10x")", "invalid-argument", "-10x");
  point(R"("-0s")", "invalid-argument", "-0s");
  point(R"("--10m")", "invalid-argument", "--10m");
  point(R"("-99999999999999999999d")", "invalid-argument", "-huge days");
  point(R"("-100000w")", "invalid-argument", "-100000w, more than a century");
  point(R"("-1000w")", "not-found", "-1000w, before the store");
  point(R"("base\u0000")", "invalid-argument", "checkpoint name with NUL");
  point(R"("../base")", "invalid-argument", "checkpoint name with ..");
  // rollback and diff.
  add(R"({"v": 1, "op": "rollback"})", "bad-request", "rollback without to");
  add(R"({"v": 1, "op": "rollback", "to": 1})", "bad-request", "rollback to a number");
  add(R"({"v": 1, "op": "rollback", "to": "nosuch"})", "not-found", "rollback to unknown");
  add(R"({"v": 1, "op": "rollback", "to": "lsn:x"})", "invalid-argument", "rollback to lsn:x");
  add(R"({"v": 1, "op": "rollback", "to": "base", "quiesced": "yes"})", "bad-request", "quiesced a string");
  add(R"({"v": 1, "op": "diff", "to": "base"})", "bad-request", "diff without from");
  add(R"({"v": 1, "op": "diff", "from": "base"})", "bad-request", "diff without to");
  add(R"({"v": 1, "op": "diff", "from": "base", "to": "nosuch"})", "not-found", "diff to unknown");
  add(R"({"v": 1, "op": "diff", "from": "lsn:-5", "to": "base"})", "invalid-argument", "diff from lsn:-5");
  add(R"({"v": 1, "op": "diff", "from": "base", "to": "base", "disk": "nosuch"})", "not-found",
      "diff unknown disk");
  add(R"({"v": 1, "op": "verify", "progress": "yes"})", "bad-request", "verify progress a string");
  // prune.
  add(R"({"v": 1, "op": "prune"})", "invalid-argument", "prune without a policy");
  add(R"({"v": 1, "op": "prune", "keep_last": 0})", "invalid-argument", "keep_last 0");
  add(R"({"v": 1, "op": "prune", "keep_last": -1})", "bad-request", "keep_last negative");
  add(R"({"v": 1, "op": "prune", "keep_last": 1.5})", "bad-request", "keep_last fractional");
  add(R"({"v": 1, "op": "prune", "keep_last": "5"})", "bad-request", "keep_last a string");
  add(R"({"v": 1, "op": "prune", "keep_last": 18446744073709551616})", "bad-request", "keep_last 2^64");
  add(R"({"v": 1, "op": "prune", "keep_last": 1e30})", "bad-request", "keep_last 1e30");
  add(R"({"v": 1, "op": "prune", "keep_within_ns": -5})", "bad-request", "keep_within_ns negative");
  add(R"({"v": 1, "op": "prune", "keep_daily": true})", "bad-request", "keep_daily a boolean");
  add(R"({"v": 1, "op": "prune", "keep_last": 1, "dry_run": "no"})", "bad-request", "dry_run a string");
  // Too long: the line is refused whatever it holds (the connection closes).
  add(R"({"v": 1, "op": "checkpoint", "name": ")" + Rep(70000, 'a') + R"("})", "too-long",
      "a checkpoint line of 70 kB");
  add(Rep(65537, ' '), "too-long", "65537 spaces");
  add(R"({"v": 1, "op": "info", "pad": ")" + Rep(100000, 'p') + R"("})", "too-long", "a 100 kB line");
  return t;
}

std::string Expand(std::string line, const std::string& dir) {
  for (size_t pos; (pos = line.find("DIR")) != std::string::npos;) line.replace(pos, 3, dir);
  return line;
}

TEST_CASE("security: a table of bad control messages, each refused with a defined error, the "
          "store unchanged",
          "[e2e][security]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=1M"});
  const std::string sock = dir + "/control.sock";
  {
    auto c = NbdClient::Connect(server->socket());
    c->Pwrite(Pattern(64 << 10, 1), 0);
    c->Flush();
    RunCliJson({"checkpoint", dir, "--name", "base", "--json"});
    c->Pwrite(Pattern(64 << 10, 2), 128 << 10);
    c->Flush();
    c->Shutdown();
  }
  auto list = [&] {
    auto c = LineClient::Connect(sock);
    return ParseJsonLine(c->Request(R"({"v": 1, "op": "list", "pending": true})"));
  };
  const nlohmann::json cps_before = list();
  // The plugin records how far the live image is synced (applied_lsn, in
  // the journal) up to 5 s after the last write, on a thread of its own:
  // wait until the store has been still for longer than that, so that only
  // a change made by a message shows below.
  std::string before = StoreFingerprint(dir);
  {
    auto still_since = std::chrono::steady_clock::now();
    const auto give_up = still_since + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() - still_since < std::chrono::milliseconds(6500) &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      std::string now = StoreFingerprint(dir);
      if (now != before) {
        before = std::move(now);
        still_since = std::chrono::steady_clock::now();
      }
    }
  }
  INFO("store before:\n" << before);

  const auto table = BadMessages();
  std::map<std::string, int> by_code;
  int refused = 0;
  for (const BadMessage& m : table) {
    const std::string line = Expand(m.line, dir);
    INFO("message: " << m.what << ": " << line.substr(0, 200) << (line.size() > 200 ? "..." : ""));
    auto c = LineClient::Connect(sock);
    // A too-long line is refused as soon as the limit is passed and the
    // socket closed, possibly while the rest is still being sent: the send
    // may then fail (EPIPE), but the answer is already queued to be read.
    const bool sent = c->Send(line + "\n");
    if (m.code != "too-long") REQUIRE(sent);
    auto answer = c->ReadLine();
    REQUIRE(answer);
    nlohmann::json r = ParseJsonLine(*answer);
    INFO("answer: " << answer->substr(0, 400));
    CHECK(r.value("v", 0) == 1);
    CHECK(r.value("ok", true) == false);
    REQUIRE(r.contains("error"));
    CHECK(r["error"].value("code", "") == m.code);
    CHECK(!r["error"].value("message", "").empty());
    if (r.value("ok", true) == false && r["error"].value("code", "") == m.code) ++refused;
    by_code[r["error"].value("code", "?")]++;
    if (m.code == "too-long") CHECK(c->WaitClosed());
    // Nothing changed: checkpoints, files, contents.
    CHECK(list() == cps_before);
    CHECK(StoreFingerprint(dir) == before);
    CHECK(!fs::exists("/tmp/rwd-never.raw"));
  }
  CHECK(table.size() >= 100);
  CHECK(refused == static_cast<int>(table.size()));
  std::string codes;
  for (const auto& [code, n] : by_code) codes += fmt::format(" {} {}", code, n);
  std::cerr << "security: " << table.size() << " bad control messages, " << refused
            << " refused with the expected code (" << codes << " ), store unchanged\n";

  // The checks above can fail: one valid checkpoint changes both the list
  // and the files.
  {
    auto c = LineClient::Connect(sock);
    CHECK(ParseJsonLine(c->Request(R"({"v": 1, "op": "checkpoint", "name": "valid"})")).value("ok", false));
    CHECK(list() != cps_before);
    CHECK(StoreFingerprint(dir) != before);
  }
  // Still serving, and the table left no checkpoint behind.
  CHECK(NbdClient::Connect(server->socket())->Pread(64 << 10, 0) == Pattern(64 << 10, 1));
  CHECK(cps_before["result"]["checkpoints"].size() == 1);
  ExitStatus es = server->Stop();
  INFO(server->log());
  CHECK(es.success());
}

// A peer of another uid.  The test runs as root: a forked child drops to
// uid/gid 65534 (nobody) and connects.
struct PeerResult {
  int connect_errno = 0;   // 0: connected
  bool got_answer = false;
  bool closed = false;     // the server closed the connection
};

PeerResult ConnectAs(uid_t uid, const std::string& path) {
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(pipefd[0]);
    PeerResult r;
    if (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0) _exit(3);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      r.connect_errno = errno;
    } else {
      const char req[] = "{\"v\": 1, \"op\": \"list\"}\n";
      (void)!send(fd, req, sizeof req - 1, MSG_NOSIGNAL);  // the server may have closed it
      timeval tv{10, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char buf[256];
      ssize_t n = read(fd, buf, sizeof buf);
      r.got_answer = n > 0;
      r.closed = n == 0 || (n < 0 && errno == ECONNRESET);
    }
    (void)!write(pipefd[1], &r, sizeof r);
    _exit(0);
  }
  close(pipefd[1]);
  PeerResult r;
  ssize_t n = read(pipefd[0], &r, sizeof r);
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(n == static_cast<ssize_t>(sizeof r));
  return r;
}

TEST_CASE("security: the control socket is 0600 in an owner-only directory, and another uid is "
          "refused by the permissions and by SO_PEERCRED",
          "[e2e][security]") {
  RequireNbdkitOrSkip();
  if (geteuid() != 0) {
    WARN("not root: cannot run a client as another uid; only the modes are checked");
  }
  TempDir tmp;
  chmod(tmp.path().c_str(), 0755);
  const std::string dir = tmp / "store";
  const std::string sock = dir + "/control.sock";
  {
    auto server = StartRewind(tmp, {"dir=" + dir, "size=1M"});
    struct stat st;
    REQUIRE(stat(dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);  // a new store
    REQUIRE(lstat(sock.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(server->Stop().success());
  }
  // An existing store whose directory others may enter is made owner-only
  // when the plugin starts.
  REQUIRE(chmod(dir.c_str(), 0755) == 0);
  auto server = StartRewind(tmp, {"dir=" + dir});
  struct stat st;
  REQUIRE(stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  if (geteuid() != 0) return;

  // nobody cannot even reach the socket.
  PeerResult blocked = ConnectAs(65534, sock);
  CHECK(blocked.connect_errno == EACCES);
  CHECK_FALSE(blocked.got_answer);

  // With the directory and the socket opened up (as a careless admin
  // might), SO_PEERCRED still refuses: no answer, connection closed.
  REQUIRE(chmod(dir.c_str(), 0755) == 0);
  REQUIRE(chmod(sock.c_str(), 0666) == 0);
  PeerResult peer = ConnectAs(65534, sock);
  CHECK(peer.connect_errno == 0);
  CHECK_FALSE(peer.got_answer);
  CHECK(peer.closed);
  // The owner (root) is still served.
  auto c = LineClient::Connect(sock);
  CHECK(ParseJsonLine(c->Request(R"({"v": 1, "op": "hello"})")).value("ok", false));
  CHECK(server->Stop().success());
}

TEST_CASE("security: a store directory of another user that others may write is refused",
          "[e2e][security]") {
  RequireNbdkitOrSkip();
  if (geteuid() != 0) return;  // needs chown
  TempDir tmp;
  const std::string dir = tmp / "store";
  RunCliJson({"create", dir, "--size", "1M", "--json"});
  REQUIRE(chown(dir.c_str(), 65534, 65534) == 0);
  REQUIRE(chmod(dir.c_str(), 0777) == 0);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir}, {"writable by other users"});
  // Not "fixed" behind the owner's back.
  struct stat st;
  REQUIRE(stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0777);
}

}  // namespace
}  // namespace rwd::test
