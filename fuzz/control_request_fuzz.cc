// libFuzzer target: the control protocol's request parser
// (rwd::control::ParseRequest, nbdplugin/protocol.cc), fed one request line
// as the server reads it from a client, and the answer the server builds.
//
// Invariants beyond "no crash, no exception, no undefined behaviour":
//   - a refused line gets a protocol error code of docs/control-protocol.md
//     and a one-line message; the error response the server sends (echoing
//     the request's id) is one line of JSON that a client reads back as
//     that error;
//   - an accepted request satisfies the checks the parser promises (a
//     restore's output is absolute, a prune keeps something, a commit names
//     a checkpoint, a kind is "disk" or "vm", a pin names a checkpoint) and
//     re-serializes: its
//     canonical JSON parses to the same request.
#include "fuzz_check.h"

#include <rewind/control/protocol.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace {

using nlohmann::json;
using namespace rwd::control;
using rwd::Status;

bool KnownCode(const std::string& code) {
  return code == kBadRequest || code == kTooLong || code == kUnsupportedVersion ||
         code == kUnknownOp || code == "invalid-argument";
}

// The request as a client would spell it, every member the op takes.
json Canonical(const Request& r) {
  json j = MakeRequest(r.op);
  if (r.id) j["id"] = *r.id;
  switch (r.op) {
    case Op::kCheckpoint:
      j["name"] = r.name;
      j["kind"] = r.kind;
      j["pending"] = r.pending;
      j["pinned"] = r.pinned;
      j["supervised"] = r.supervised;
      break;
    case Op::kPin:
      j["name"] = r.name;
      j["pinned"] = r.pinned;
      break;
    case Op::kCommitCheckpoint: j["checkpoint"] = r.checkpoint_id; break;
    case Op::kList: j["pending"] = r.with_pending; break;
    case Op::kRestore:
      j["disk"] = r.disk;
      j["to"] = r.to;
      j["output"] = r.output;
      j["force"] = r.force;
      break;
    case Op::kRollback:
      j["to"] = r.to;
      j["quiesced"] = r.quiesced;
      break;
    case Op::kDiff:
      j["disk"] = r.disk;
      j["from"] = r.from;
      j["to"] = r.to;
      break;
    case Op::kPrune:
      j["keep_last"] = r.policy.keep_last;
      j["keep_within_ns"] = r.policy.keep_within_ns;
      j["keep_daily"] = r.policy.keep_daily;
      j["dry_run"] = r.policy.dry_run;
      break;
    case Op::kHello:
    case Op::kInfo:
    case Op::kVerify: break;
  }
  if (IsLongOp(r.op)) j["progress"] = r.progress;
  return j;
}

bool Same(const Request& a, const Request& b) {
  return a.id == b.id && a.op == b.op && a.name == b.name && a.kind == b.kind &&
         a.pending == b.pending && a.pinned == b.pinned && a.supervised == b.supervised &&
         a.checkpoint_id == b.checkpoint_id &&
         a.with_pending == b.with_pending && a.quiesced == b.quiesced && a.to == b.to &&
         a.from == b.from && a.output == b.output && a.force == b.force && a.disk == b.disk &&
         a.policy.keep_last == b.policy.keep_last &&
         a.policy.keep_within_ns == b.policy.keep_within_ns &&
         a.policy.keep_daily == b.policy.keep_daily && a.policy.dry_run == b.policy.dry_run &&
         a.progress == b.progress;
}

// line is one message of the protocol: a JSON object and a single '\n' at
// its end.
json ReadBack(const std::string& line) {
  FUZZ_CHECK(!line.empty() && line.back() == '\n');
  FUZZ_CHECK(line.find('\n') == line.size() - 1);
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(j.is_object());
  return j;
}

void CheckRefusal(const Request& req, const Error& err) {
  FUZZ_CHECK(KnownCode(err.code));
  FUZZ_CHECK(rwd::fuzz::OneLine(err.message));
  FUZZ_CHECK(err.extra.is_null() || err.extra.is_object());
  json back = ReadBack(ToLine(MakeError(req.id, err)));
  FUZZ_CHECK(back.contains("id") == req.id.has_value());
  json result;
  Status s = ResultOf(back, &result);
  FUZZ_CHECK(!s.ok());
  FUZZ_CHECK(s.code() != Status::Code::kIOError);  // a well-formed error, not "malformed"
}

void CheckAccepted(const Request& req) {
  if (req.op == Op::kRestore) FUZZ_CHECK(!req.output.empty() && req.output[0] == '/');
  if (req.op == Op::kPrune) {
    FUZZ_CHECK(req.policy.keep_last > 0 || req.policy.keep_within_ns > 0 ||
               req.policy.keep_daily > 0);
    FUZZ_CHECK(req.policy.keep_within_ns >= 0);
  }
  if (req.op == Op::kCommitCheckpoint) FUZZ_CHECK(req.checkpoint_id > 0);
  if (req.op == Op::kCheckpoint) FUZZ_CHECK(req.kind == "disk" || req.kind == "vm");
  if (req.op == Op::kPin) FUZZ_CHECK(!req.name.empty());
  if (!IsLongOp(req.op)) FUZZ_CHECK(!req.progress);

  const std::string line = ToLine(Canonical(req));
  Request again;
  std::optional<Error> err = ParseRequest(std::string_view(line).substr(0, line.size() - 1), &again);
  if (line.size() - 1 > kMaxRequestLine) {
    // Canonical JSON may be longer than the input (escapes of the id).
    FUZZ_CHECK(err && err->code == kTooLong);
    return;
  }
  FUZZ_CHECK(!err);
  FUZZ_CHECK(Same(req, again));
  // The success envelope echoes the id and reads back as OK.
  json back = ReadBack(ToLine(MakeResult(req.id, json::object())));
  FUZZ_CHECK(ResultOf(back, nullptr).ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  Request req;
  std::optional<Error> err = ParseRequest(line, &req);
  if (err) {
    CheckRefusal(req, *err);
  } else {
    CheckAccepted(req);
  }
  return 0;
}
