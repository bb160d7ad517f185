// The control protocol's messages: request parsing, responses, the JSON of
// StoreInfo and CheckpointInfo, and time formatting.
#include <rewind/control/protocol.h>

#include <catch2/catch.hpp>

#include <pthread.h>

#include <string>

using nlohmann::json;
using rwd::CheckpointInfo;
using rwd::Status;
using rwd::StoreInfo;
using namespace rwd::control;

namespace {

// Parses line, expecting a protocol error with code; returns it.
Error ExpectError(const std::string& line, const std::string& code, Request* req = nullptr) {
  Request local;
  Request* r = req != nullptr ? req : &local;
  std::optional<Error> err = ParseRequest(line, r);
  REQUIRE(err.has_value());
  CHECK(err->code == code);
  CHECK_FALSE(err->message.empty());
  CHECK(err->message.find('\n') == std::string::npos);
  return *err;
}

Request ExpectRequest(const std::string& line) {
  Request req;
  std::optional<Error> err = ParseRequest(line, &req);
  INFO(line);
  REQUIRE_FALSE(err.has_value());
  return req;
}

StoreInfo SampleInfo() {
  StoreInfo info;
  info.dir = "/var/lib/rewind/vm1";
  info.image_path = "/var/lib/rewind/vm1/image.raw";
  info.format_version = 1;
  info.size = 21474836480ull;
  info.block_size = 4096;
  info.created_ns = 1795428000000000001;
  info.oldest_lsn = 1;
  info.newest_lsn = 18234;
  info.oldest_time_ns = 1795428000500000000;
  info.newest_time_ns = 1795428900123456789;
  info.redo_records = 18234;
  info.redo_bytes = 123456789;
  info.undo_records = 77;
  info.undo_bytes = 1048576;
  info.vmstate_bytes = 0;
  info.checkpoints = 3;
  info.durable_lsn = 18230;
  info.writes_refused = true;
  info.refused_reason = "fsync failed: Input/output error";
  return info;
}

}  // namespace

TEST_CASE("FormatTime gives RFC 3339 UTC with nanoseconds", "[control]") {
  CHECK(FormatTime(0) == "1970-01-01T00:00:00.000000000Z");
  CHECK(FormatTime(1795428900123456789) == "2026-11-23T10:15:00.123456789Z");
  CHECK(FormatTime(1) == "1970-01-01T00:00:00.000000001Z");
  CHECK(FormatTime(-1) == "1969-12-31T23:59:59.999999999Z");
  CHECK(FormatTime(951782400000000000) == "2000-02-29T00:00:00.000000000Z");
  CHECK(FormatTime(INT64_MAX) == "2262-04-11T23:47:16.854775807Z");
}

TEST_CASE("ParseRequest accepts the documented requests", "[control]") {
  Request r = ExpectRequest(R"({"v": 1, "id": 7, "op": "info"})");
  CHECK(r.op == Op::kInfo);
  REQUIRE(r.id.has_value());
  CHECK(*r.id == 7);

  r = ExpectRequest(R"({"v": 1, "id": 8, "op": "checkpoint", "name": "before-upgrade"})");
  CHECK(r.op == Op::kCheckpoint);
  CHECK(r.name == "before-upgrade");

  r = ExpectRequest(R"({"v": 1, "op": "checkpoint"})");
  CHECK(r.name.empty());
  CHECK_FALSE(r.id.has_value());

  r = ExpectRequest(R"({"v": 1, "op": "checkpoint", "name": null})");
  CHECK(r.name.empty());

  CHECK(ExpectRequest(R"({"v": 1, "id": 9, "op": "list"})").op == Op::kList);
  CHECK(ExpectRequest(R"({"v": 1, "id": 10, "op": "hello"})").op == Op::kHello);
  // Unknown members are ignored; whitespace and a trailing \r are fine.
  CHECK(ExpectRequest("{\"op\":\"list\",\"future\":[1,2],\"v\":1}\r").op == Op::kList);
}

TEST_CASE("ParseRequest keeps any id, and tells absent from null", "[control]") {
  for (const char* id : {R"("abc")", "null", "-3", "1.5", R"({"a":[1,{"b":null}]})", "[]",
                         "18446744073709551615", "true"}) {
    std::string line = std::string(R"({"v":1,"op":"hello","id":)") + id + "}";
    Request r = ExpectRequest(line);
    REQUIRE(r.id.has_value());
    CHECK(*r.id == json::parse(id));
    json resp = MakeResult(r.id, json::object());
    CHECK(resp.contains("id"));
    CHECK(resp["id"] == json::parse(id));
  }
  json resp = MakeResult(std::nullopt, json::object());
  CHECK_FALSE(resp.contains("id"));
}

TEST_CASE("ParseRequest refuses what is not a request object", "[control]") {
  ExpectError("", kBadRequest);
  ExpectError("hello", kBadRequest);
  ExpectError("{\"v\":1,\"op\":\"info\"", kBadRequest);  // truncated
  ExpectError("[1, 2]", kBadRequest);
  ExpectError("\"info\"", kBadRequest);
  ExpectError("42", kBadRequest);
  ExpectError("null", kBadRequest);
  ExpectError("{\"v\":1,\"op\":\"info\"} {}", kBadRequest);   // two values
  ExpectError("{\"v\":1,\"op\":\"\xff\xfe\"}", kBadRequest);  // not UTF-8
}

TEST_CASE("ParseRequest checks members and echoes the id in errors", "[control]") {
  Request r;
  ExpectError(R"({"id": 1, "op": "info"})", kBadRequest, &r);
  CHECK(r.id == json(1));
  ExpectError(R"({"id": 2, "v": "1", "op": "info"})", kBadRequest, &r);
  CHECK(r.id == json(2));
  ExpectError(R"({"v": 1.0, "op": "info"})", kBadRequest);
  ExpectError(R"({"v": 1, "id": 3})", kBadRequest, &r);
  CHECK(r.id == json(3));
  ExpectError(R"({"v": 1, "op": 5})", kBadRequest);
  ExpectError(R"({"v": 1, "op": "checkpoint", "name": 5})", kBadRequest);
  ExpectError(R"({"v": 1, "op": "checkpoint", "name": ["a"]})", kBadRequest);

  Error e = ExpectError(R"({"v": 1, "id": "x", "op": "frobnicate"})", kUnknownOp, &r);
  CHECK(r.id == json("x"));
  CHECK(e.message.find("frobnicate") != std::string::npos);
  ExpectError(R"({"v": 1, "op": "INFO"})", kUnknownOp);
}

// Regression (found with fuzz/control_request_fuzz): the message quoted a
// relative restore output or an unknown op as sent, control characters
// included, and a message is one line without them.  ExpectError checks
// for '\n'; these check for every control character.
TEST_CASE("ParseRequest's messages escape the client's strings", "[control]") {
  auto one_line = [](const std::string& m) {
    for (unsigned char c : m) {
      if (c < 0x20 || c == 0x7f) return false;
    }
    return true;
  };
  Error e = ExpectError(R"({"v": 1, "op": "restore", "to": "a", "output": "x\ny\u007fz"})",
                        "invalid-argument");
  CHECK(one_line(e.message));
  CHECK(e.message.find(R"("x\ny\x7fz")") != std::string::npos);
  e = ExpectError(R"({"v": 1, "op": "in\tfo\u007f"})", kUnknownOp);
  CHECK(one_line(e.message));
  CHECK(e.message.find(R"("in\tfo\x7f")") != std::string::npos);
}

TEST_CASE("ParseRequest answers another version with the supported ones", "[control]") {
  for (const char* v : {"2", "0", "-1", "18446744073709551615"}) {
    Request r;
    std::string line = std::string(R"({"id": 4, "op": "info", "v": )") + v + "}";
    Error e = ExpectError(line, kUnsupportedVersion, &r);
    CHECK(r.id == json(4));
    json resp = MakeError(r.id, e);
    CHECK(resp["ok"] == false);
    CHECK(resp["v"] == 1);
    CHECK(resp["id"] == 4);
    CHECK(resp["error"]["code"] == "unsupported-version");
    CHECK(resp["error"]["supported"] == json::array({1}));
  }
}

TEST_CASE("ParseRequest bounds the line length", "[control]") {
  // Exactly kMaxRequestLine bytes is accepted (padding is JSON whitespace).
  std::string ok = R"({"v":1,"op":"hello"})";
  ok.append(kMaxRequestLine - ok.size(), ' ');
  REQUIRE(ok.size() == kMaxRequestLine);
  ExpectRequest(ok);

  std::string too_long = ok + " ";
  Request r;
  ExpectError(too_long, kTooLong, &r);
  CHECK_FALSE(r.id.has_value());  // a too-long line is not parsed at all
}

TEST_CASE("ParseRequest survives deeply nested input", "[control]") {
  std::string deep(kMaxRequestLine / 2, '[');
  deep.append(kMaxRequestLine / 2, ']');
  ExpectError(deep, kBadRequest);
  // Brackets inside strings do not count.
  ExpectRequest(R"({"v":1,"op":"hello","x":")" + std::string(1000, '[') + "\"}");
}

// Regression (found with fuzz/control_request_fuzz): an id nested 32,000
// levels deep fitted in one request line, and the server's error answer
// copies and prints the id, both recursing once per level: about 4 MB of
// stack, more than a thread of the plugin may have.  Such a request is now
// refused before it is parsed.  The answer is built here on a thread with a
// 1 MiB stack, as the server builds it.
TEST_CASE("ParseRequest refuses a request nested deeper than kMaxRequestDepth", "[control]") {
  auto nested = [](size_t levels) {  // the request object is the first level
    return R"({"v":1,"op":"nope","id":)" + std::string(levels - 1, '[') +
           std::string(levels - 1, ']') + "}";
  };
  Request r;
  std::optional<Error> err = ParseRequest(nested(kMaxRequestDepth), &r);
  REQUIRE(err.has_value());
  CHECK(err->code == kUnknownOp);  // deep enough to be parsed, and its id echoed
  CHECK(r.id.has_value());
  Error too_deep = ExpectError(nested(kMaxRequestDepth + 1), kBadRequest);
  CHECK(too_deep.message.find("nested") != std::string::npos);

  const std::string line = nested(32000);
  REQUIRE(line.size() <= kMaxRequestLine);
  std::string answer;
  auto answer_it = [&] {
    Request req;
    std::optional<Error> e = ParseRequest(line, &req);
    answer = e ? ToLine(MakeError(req.id, *e)) : "accepted";
  };
  pthread_attr_t attr;
  REQUIRE(pthread_attr_init(&attr) == 0);
  REQUIRE(pthread_attr_setstacksize(&attr, 1 << 20) == 0);
  pthread_t thread;
  using Fn = decltype(answer_it);
  REQUIRE(pthread_create(&thread, &attr,
                         [](void* fn) -> void* {
                           (*static_cast<Fn*>(fn))();
                           return nullptr;
                         },
                         &answer_it) == 0);
  REQUIRE(pthread_join(thread, nullptr) == 0);
  pthread_attr_destroy(&attr);
  json resp = json::parse(answer);
  CHECK(resp["error"]["code"] == kBadRequest);
  CHECK_FALSE(resp.contains("id"));
}

TEST_CASE("Responses have the documented shape", "[control]") {
  json ok = MakeResult(json(8), json{{"a", 1}});
  CHECK(ok == json::parse(R"({"v": 1, "id": 8, "ok": true, "result": {"a": 1}})"));

  Error err = ErrorFromStatus(Status::InvalidArgument("checkpoint name 'a/b' contains '/'"));
  json bad = MakeError(json(8), err);
  CHECK(bad == json::parse(R"({"v": 1, "id": 8, "ok": false, "error":
      {"code": "invalid-argument", "message": "checkpoint name 'a/b' contains '/'"}})"));

  std::string line = ToLine(bad);
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  CHECK(json::parse(line) == bad);

  // Invalid UTF-8 (say, in a path) is replaced rather than thrown on.
  json weird = MakeError(std::nullopt, Error{"io-error", "open /tmp/\xff\xfe: failed", nullptr});
  std::string weird_line;
  REQUIRE_NOTHROW(weird_line = ToLine(weird));
  CHECK(json::accept(weird_line));

  CHECK(MakeRequest(Op::kCheckpoint) == json::parse(R"({"v": 1, "op": "checkpoint"})"));
}

TEST_CASE("ResultOf maps responses back onto Status", "[control]") {
  json result;
  REQUIRE(ResultOf(MakeResult(json(1), json{{"x", 2}}), &result).ok());
  CHECK(result == json{{"x", 2}});
  REQUIRE(ResultOf(json::parse(R"({"v":1,"ok":true})"), &result).ok());
  CHECK(result.is_null());

  const Status store_errors[] = {
      Status::InvalidArgument("m"), Status::NotFound("m"), Status::AlreadyExists("m"),
      Status::IOError("m"),         Status::NoSpace("m"),  Status::Corruption("m"),
      Status::NotSupported("m"),    Status::Busy("m"),     Status::ReadOnly("m"),
      Status::Aborted("m"),
  };
  for (const Status& s : store_errors) {
    Status back = ResultOf(MakeError(std::nullopt, ErrorFromStatus(s)), nullptr);
    CHECK(back.code() == s.code());
    CHECK(back.message() == "m");
  }
  auto code_of = [](const char* code) {
    return ResultOf(MakeError(json(1), Error{code, "why", nullptr}), nullptr).code();
  };
  CHECK(code_of(kBadRequest) == Status::Code::kInvalidArgument);
  CHECK(code_of(kTooLong) == Status::Code::kInvalidArgument);
  CHECK(code_of(kUnknownOp) == Status::Code::kInvalidArgument);
  CHECK(code_of(kUnsupportedVersion) == Status::Code::kNotSupported);
  CHECK(code_of("some-future-code") == Status::Code::kIOError);

  for (const char* bad : {"[]", "{}", R"({"ok": "yes"})", R"({"ok": false})",
                          R"({"ok": false, "error": {"message": "x"}})"}) {
    Status s = ResultOf(json::parse(bad), &result);
    CHECK(s.code() == Status::Code::kIOError);
  }
}

TEST_CASE("CheckpointInfo JSON round trip", "[control]") {
  CheckpointInfo cp;
  cp.id = 3;
  cp.name = "before-upgrade";
  cp.lsn = 18234;
  cp.time_ns = 1795428900123456789;
  cp.kind = "disk";
  cp.pinned = true;
  cp.undo_bytes = 1048576;
  json j = ToJson(cp);
  CHECK(j == json::parse(R"({"id": 3, "name": "before-upgrade", "lsn": 18234,
      "time": "2026-11-23T10:15:00.123456789Z", "time_ns": 1795428900123456789,
      "kind": "disk", "pinned": true, "undo_bytes": 1048576, "pending": false,
      "supervised": false})"));

  CheckpointInfo back;
  REQUIRE(FromJson(json::parse(j.dump()), &back).ok());
  CHECK(back.id == cp.id);
  CHECK(back.name == cp.name);
  CHECK(back.lsn == cp.lsn);
  CHECK(back.time_ns == cp.time_ns);
  CHECK(back.kind == cp.kind);
  CHECK(back.pinned == cp.pinned);
  CHECK(back.undo_bytes == cp.undo_bytes);
  CHECK_FALSE(back.pending);

  // A pending whole-VM checkpoint; "pending" may be absent (older servers).
  cp.kind = "vm";
  cp.pending = true;
  REQUIRE(FromJson(ToJson(cp), &back).ok());
  CHECK(back.kind == "vm");
  CHECK(back.pending);
  json old = ToJson(cp);
  old.erase("pending");
  REQUIRE(FromJson(old, &back).ok());
  CHECK_FALSE(back.pending);

  // Taken by rewind supervise; "supervised" may be absent (older servers).
  cp.supervised = true;
  j = ToJson(cp);
  CHECK(j["supervised"] == true);
  REQUIRE(FromJson(j, &back).ok());
  CHECK(back.supervised);
  j.erase("supervised");
  REQUIRE(FromJson(j, &back).ok());
  CHECK_FALSE(back.supervised);
}

TEST_CASE("CheckpointInfo FromJson names a missing or mistyped member", "[control]") {
  json good = ToJson(CheckpointInfo{});
  CheckpointInfo out;
  out.name = "untouched";
  for (const char* member : {"id", "name", "lsn", "time_ns", "kind", "pinned", "undo_bytes"}) {
    json j = good;
    j.erase(member);
    Status s = FromJson(j, &out);
    CHECK(s.code() == Status::Code::kInvalidArgument);
    CHECK(s.message().find(member) != std::string::npos);
    CHECK(out.name == "untouched");  // *out is left alone on failure
  }
  json j = good;
  j["lsn"] = -1;
  CHECK_FALSE(FromJson(j, &out).ok());
  j = good;
  j["lsn"] = "5";
  CHECK_FALSE(FromJson(j, &out).ok());
  j = good;
  j["pinned"] = 1;
  CHECK_FALSE(FromJson(j, &out).ok());
  j = good;
  j["supervised"] = "yes";
  CHECK_FALSE(FromJson(j, &out).ok());
  j = good;
  j["time_ns"] = 18446744073709551615ull;
  CHECK_FALSE(FromJson(j, &out).ok());
  j = good;
  j["time_ns"] = -5;  // before 1970 is a valid instant
  CHECK(FromJson(j, &out).ok());
  CHECK_FALSE(FromJson(json::array(), &out).ok());
}

TEST_CASE("StoreInfo JSON round trip", "[control]") {
  StoreInfo info = SampleInfo();
  json j = ToJson(info, /*online=*/true);
  CHECK(j["online"] == true);
  CHECK(j["image"] == "/var/lib/rewind/vm1/image.raw");
  CHECK(j["created"] == FormatTime(info.created_ns));
  CHECK(j["newest_time"] == "2026-11-23T10:15:00.123456789Z");
  CHECK(j["newest_time_ns"] == 1795428900123456789);
  CHECK(j["oldest_time"] == FormatTime(info.oldest_time_ns));
  CHECK(ToJson(info, false)["online"] == false);
  for (const char* member : {"dir",
                             "image",
                             "format_version",
                             "size",
                             "block_size",
                             "created",
                             "created_ns",
                             "oldest_lsn",
                             "newest_lsn",
                             "oldest_time",
                             "newest_time",
                             "oldest_time_ns",
                             "newest_time_ns",
                             "redo_records",
                             "redo_bytes",
                             "undo_records",
                             "undo_bytes",
                             "vmstate_bytes",
                             "checkpoints",
                             "durable_lsn",
                             "writes_refused",
                             "refused_reason",
                             "online"}) {
    CHECK(j.contains(member));
  }

  StoreInfo back;
  REQUIRE(FromJson(json::parse(j.dump()), &back).ok());
  CHECK(ToJson(back, true) == j);
}

TEST_CASE("StoreInfo of an empty journal has no timestamps", "[control]") {
  StoreInfo info = SampleInfo();
  info.oldest_lsn = info.newest_lsn = 0;
  info.oldest_time_ns = info.newest_time_ns = 0;
  json j = ToJson(info, false);
  for (const char* member : {"oldest_time", "newest_time", "oldest_time_ns", "newest_time_ns"}) {
    CHECK_FALSE(j.contains(member));
  }
  CHECK(j["oldest_lsn"] == 0);
  StoreInfo back;
  REQUIRE(FromJson(j, &back).ok());
  CHECK(ToJson(back, false) == j);

  // With history, the timestamps are required.
  json with_history = ToJson(SampleInfo(), false);
  with_history.erase("newest_time_ns");
  Status s = FromJson(with_history, &back);
  CHECK(s.code() == Status::Code::kInvalidArgument);
  CHECK(s.message().find("newest_time_ns") != std::string::npos);

  json too_big = ToJson(SampleInfo(), false);
  too_big["block_size"] = 1ull << 32;  // StoreInfo::block_size is 32-bit
  CHECK_FALSE(FromJson(too_big, &back).ok());
}

TEST_CASE("SocketPath and OpName", "[control]") {
  CHECK(SocketPath("/var/lib/rewind/vm1") == "/var/lib/rewind/vm1/control.sock");
  CHECK(SocketPath("/var/lib/rewind/vm1/") == "/var/lib/rewind/vm1/control.sock");
  CHECK(std::string(OpName(Op::kCheckpoint)) == "checkpoint");
  CHECK(std::string(ServerName()).rfind("rewind ", 0) == 0);
}
