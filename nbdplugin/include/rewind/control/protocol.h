// The control protocol: line-delimited JSON between the rewind CLI and a
// running plugin, over DIR/control.sock.  docs/control-protocol.md is the
// normative description; this header holds its constants, the JSON form of
// the store's objects, request parsing, response building and the client.
//
// Nothing here throws on bad input: parsing reports a protocol Error or a
// Status.  (std::bad_alloc may still escape; callers at a C boundary catch.)
#pragma once

#include <rewind/journal/status.h>
#include <rewind/journal/store.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace rwd::control {

inline constexpr int kProtocolVersion = 1;
// Longest request line a server accepts, without its '\n'.
inline constexpr size_t kMaxRequestLine = 65536;
// Longest response line a client accepts (a long timeline is one line).
inline constexpr size_t kMaxResponseLine = 64u << 20;
// A server closes a connection idle for this long.
inline constexpr int kIdleTimeoutMs = 60000;
inline constexpr const char* kSocketName = "control.sock";

// Error codes of the protocol itself; the store's codes are
// Status::CodeName() ("invalid-argument", "not-found", ...).
inline constexpr const char* kBadRequest = "bad-request";
inline constexpr const char* kTooLong = "too-long";
inline constexpr const char* kUnsupportedVersion = "unsupported-version";
inline constexpr const char* kUnknownOp = "unknown-op";

// "rewind <version>", the server name of the hello result.
const char* ServerName();

// DIR/control.sock.
std::string SocketPath(const std::string& dir);

// RFC 3339 in UTC with nine fractional digits: "2026-11-23T10:15:00.123456789Z".
std::string FormatTime(int64_t ns);

// ---- Objects ---------------------------------------------------------------

nlohmann::json ToJson(const CheckpointInfo& cp);
// online: whether the answer comes from a running plugin (the "online" member).
nlohmann::json ToJson(const StoreInfo& info, bool online);
// The reverse of ToJson.  The *_ns members are authoritative; the RFC 3339
// strings are not read.  Unknown members are ignored; a missing or mistyped
// member is InvalidArgument naming it.  The timestamps of an empty journal
// may be absent.  "online" is not part of StoreInfo; read it from the JSON.
[[nodiscard]] Status FromJson(const nlohmann::json& j, CheckpointInfo* out);
[[nodiscard]] Status FromJson(const nlohmann::json& j, StoreInfo* out);

// ---- Requests --------------------------------------------------------------

enum class Op { kHello, kInfo, kCheckpoint, kList };

// "hello", "info", "checkpoint", "list".
const char* OpName(Op op);

struct Request {
  // The request's id, echoed in the response; absent when the request had
  // none (a present null is kept as null).
  std::optional<nlohmann::json> id;
  Op op = Op::kHello;
  // checkpoint: the requested name; empty lets the server pick "cp-<id>".
  std::string name;
};

// A protocol error object: {"code": ..., "message": ..., ...extra}.
struct Error {
  std::string code;
  std::string message;  // one line, for people
  // Further members of the error object (e.g. "supported" for
  // unsupported-version); null or an object.
  nlohmann::json extra;
};

Error ErrorFromStatus(const Status& s);

// Parses and validates one request line (without its '\n').  Returns the
// protocol error to answer with, or nullopt when *out holds a valid request.
// out->id is filled as soon as the line is a JSON object, so that an error
// response can echo it.
std::optional<Error> ParseRequest(std::string_view line, Request* out);

// A request object for op with "v" set; add "id" and arguments as needed.
nlohmann::json MakeRequest(Op op);

// ---- Responses -------------------------------------------------------------

nlohmann::json MakeResult(const std::optional<nlohmann::json>& id, nlohmann::json result);
nlohmann::json MakeError(const std::optional<nlohmann::json>& id, const Error& error);

// The JSON of one message as a line ending in '\n'.  Invalid UTF-8 in
// strings (e.g. a path) is replaced, never thrown on.
std::string ToLine(const nlohmann::json& message);

// Interprets a response: OK with *result set when it has "ok": true; the
// remote error as a Status otherwise (store codes map back onto their
// Status code; protocol codes onto InvalidArgument or NotSupported); a
// malformed response is IOError.  result may be null.
[[nodiscard]] Status ResultOf(const nlohmann::json& response, nlohmann::json* result);

// ---- Client ----------------------------------------------------------------

// Sends request on a new connection to socket_path and reads one response
// line into *response, all within timeout_ms (< 0: no limit).
//
// Returns NotFound when nothing listens on socket_path (no socket file, or a
// stale one: ENOENT, ECONNREFUSED), so that the caller can open the store
// itself; IOError for any other failure to connect, send or receive (a
// timeout is IOError with ETIMEDOUT).  OK means a well-formed response was
// received, which may still be an error response: see ResultOf.
[[nodiscard]] Status ControlCall(const std::string& socket_path, const nlohmann::json& request,
                                 nlohmann::json* response, int timeout_ms);

}  // namespace rwd::control
