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
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace rwd::control {

inline constexpr int kProtocolVersion = 1;
// Longest request line a server accepts, without its '\n'.
inline constexpr size_t kMaxRequestLine = 65536;
// Deepest nesting of arrays and objects a server accepts in a request (the
// request object itself is level 1).  Deeper input is refused before it is
// parsed: copying or printing a JSON value recurses once per level, and the
// id is copied and printed into the answer.
inline constexpr size_t kMaxRequestDepth = 64;
// Longest response line a client accepts (a long timeline is one line).
inline constexpr size_t kMaxResponseLine = 64u << 20;
// A server closes a connection idle for this long.
inline constexpr int kIdleTimeoutMs = 60000;
// A server sends at most one progress line per this interval (about 5 a
// second).
inline constexpr int kProgressIntervalMs = 200;
// While it works on a request that asked for progress, a server sends a
// line at least this often, repeating the last values when the work has
// nothing new to say (a keep-alive): a client's idle timeout then measures
// a wedged plugin, never a long diff or prune.
inline constexpr int kKeepAliveMs = 5000;
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
// "disks": [{"name", "size", "image"}] lists every disk.
nlohmann::json ToJson(const StoreInfo& info, bool online);
// The reverse of ToJson.  The *_ns members are authoritative; the RFC 3339
// strings are not read.  Unknown members are ignored; a missing or mistyped
// member is InvalidArgument naming it.  The timestamps of an empty journal
// may be absent, and so may "disks" (a server before several disks; then
// the one unnamed disk of size and image).  "online" is not part of
// StoreInfo; read it from the JSON.
[[nodiscard]] Status FromJson(const nlohmann::json& j, CheckpointInfo* out);
[[nodiscard]] Status FromJson(const nlohmann::json& j, StoreInfo* out);

// A point of history: {"text", "lsn", "time_ns", "time", "checkpoint"?};
// "checkpoint" (the name) only when the point names one.
nlohmann::json ToJson(const PointInfo& point);
// The result of restore: {"point", "disk" (only when the disk has a name),
// "output", "bytes", "data_bytes", "changed_bytes", "seconds"}.  output: the file written (absolute), or
// empty to leave the member out.
nlohmann::json ToJson(const RestoreResult& result, const std::string& output);
// The reverse, as for CheckpointInfo.  checkpoint_id is not carried by the
// JSON and is left 0.
[[nodiscard]] Status FromJson(const nlohmann::json& j, PointInfo* out);
[[nodiscard]] Status FromJson(const nlohmann::json& j, RestoreResult* out);

// The result of rollback: {"point", "before" (a Checkpoint), "examined_bytes",
// "rewritten_bytes", "seconds"}.
nlohmann::json ToJson(const RollbackResult& result);
// The result of diff: {"from", "to" (points), "disk" (only when the disk has a
// name), "ranges": [{"offset", "length"}], "bytes", "records"}.
nlohmann::json ToJson(const DiffResult& result);
// The result of verify: {"clean", "redo_records", "undo_records",
// "checkpoints", "payload_bytes", "image_pages_checked", "damage": [...]}.
nlohmann::json ToJson(const VerifyReport& report);
// The result of prune: {"dry_run", "kept", "dropped" (Checkpoints),
// "history_start_lsn", "redo_records_dropped", "undo_records_dropped",
// "segments_deleted", "bytes_before", "bytes_after"}.
nlohmann::json ToJson(const PruneResult& result, bool dry_run);
// The reverses, as for CheckpointInfo ("clean" and "dry_run" are not read).
[[nodiscard]] Status FromJson(const nlohmann::json& j, RollbackResult* out);
[[nodiscard]] Status FromJson(const nlohmann::json& j, DiffResult* out);
[[nodiscard]] Status FromJson(const nlohmann::json& j, VerifyReport* out);
[[nodiscard]] Status FromJson(const nlohmann::json& j, PruneResult* out);

// ---- Requests --------------------------------------------------------------

enum class Op {
  kHello,
  kInfo,
  kCheckpoint,
  kList,
  kRestore,
  kRollback,
  kDiff,
  kVerify,
  kPrune,
  kCommitCheckpoint,
  kPin,
};

// "hello", "info", "checkpoint", "list", "restore", "rollback", "diff",
// "verify", "prune", "commit-checkpoint", "pin".
const char* OpName(Op op);
// Whether an op's work may be long, so that it takes "progress": restore,
// rollback, diff, verify, prune.
bool IsLongOp(Op op);

struct Request {
  // The request's id, echoed in the response; absent when the request had
  // none (a present null is kept as null).
  std::optional<nlohmann::json> id;
  Op op = Op::kHello;
  // checkpoint: the requested name; empty lets the server pick "cp-<id>".
  // pin: the checkpoint to pin or unpin (required, not empty).
  std::string name;
  // checkpoint: "kind" ("disk" or "vm") and "pending" (hidden until
  // commit-checkpoint; CheckpointOptions).
  std::string kind = "disk";
  bool pending = false;
  // checkpoint: "pinned" (every prune keeps it) and "supervised" (taken by
  // rewind supervise), both optional.  pin: "pinned" (required): true to
  // pin, false to unpin.
  bool pinned = false;
  bool supervised = false;
  // commit-checkpoint: the pending checkpoint's id ("checkpoint").
  uint64_t checkpoint_id = 0;
  // list: also the pending checkpoints ("pending": true).
  bool with_pending = false;
  // rollback, prune: the caller vouches that the clients connected for
  // writing are idle and stay so ("quiesced": a QEMU waiting for an
  // incoming migration, or one whose guest is stopped); the work then runs
  // with them connected.
  bool quiesced = false;
  // restore, rollback, diff: the POINT ("to"); diff: the other one ("from").
  std::string to;
  std::string from;
  // restore: the absolute path of the image to write ("output") and whether
  // to replace an existing file ("force").
  std::string output;
  bool force = false;
  // restore, diff: the disk ("disk"); empty: the store's only disk (an
  // error for a store of several).
  std::string disk;
  // prune: "keep_last", "keep_within_ns", "keep_daily" (at least one of
  // them above 0) and "dry_run".
  PrunePolicy policy;
  // A long op (IsLongOp): whether the client wants progress lines before
  // the response ("progress").
  bool progress = false;
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
// A progress line of a long request: {"v":1,"id":...,"progress":{"done","total"}}.
// It precedes the response of a request that asked for progress.
nlohmann::json MakeProgress(const std::optional<nlohmann::json>& id, uint64_t done, uint64_t total);
// Whether a message is a progress line rather than the response: it has a
// member "progress" and no member "ok".  On true, *done and *total are set
// (0 when missing or mistyped); they may be null.
bool IsProgress(const nlohmann::json& message, uint64_t* done, uint64_t* total);

// The JSON of one message as a line ending in '\n'.  Invalid UTF-8 in
// strings (e.g. a path) is replaced, never thrown on.
std::string ToLine(const nlohmann::json& message);

// Interprets a response: OK with *result set when it has "ok": true; the
// remote error as a Status otherwise (store codes map back onto their
// Status code; protocol codes onto InvalidArgument or NotSupported); a
// malformed response is IOError.  result may be null.
[[nodiscard]] Status ResultOf(const nlohmann::json& response, nlohmann::json* result);

// ---- Restore ---------------------------------------------------------------

// Refuses a restore output that would damage the store: a path inside the
// store directory (its image, journal or metadata) or the store's live
// image, also through symbolic links.  InvalidArgument with a one-line
// message; OK when the output's directory cannot be resolved (the restore
// itself reports that).  Shared by the server and the CLI's local backend.
[[nodiscard]] Status CheckRestoreOutput(const std::string& output, const std::string& store_dir,
                                        const std::string& image_path);
// The same against the store of info: its directory and every disk's live
// image.
[[nodiscard]] Status CheckRestoreOutput(const std::string& output, const StoreInfo& info);

// ---- Disks -----------------------------------------------------------------

// The disk a restore or diff (what) acts on: *out the disk named name, or
// null when name is empty and the store has one disk (the store's own calls
// then act on it).  NotFound for an unknown name; InvalidArgument when name
// is empty and the store has several disks.  Shared by the server and the
// CLI's local backend.
[[nodiscard]] Status PickDisk(Store& store, const std::string& name, const char* what, Disk** out);

// ---- Client ----------------------------------------------------------------

// Receives the progress lines of a call: done out of total.  Returning false
// abandons the call: the connection is closed (which makes the server cancel
// the request) and ControlCall returns Aborted.  It is also called again
// with the last values (0, 0 before any line) when a signal interrupts the
// wait, so that a signal handler's flag can cancel the call promptly.
using CallProgressFn = std::function<bool(uint64_t done, uint64_t total)>;

// Sends request on a new connection to socket_path and reads one response
// line into *response within timeout_ms (< 0: no limit).  Progress lines
// before the response are skipped, and each one starts timeout_ms again: it
// bounds a silence, not the whole call.
//
// Returns NotFound when nothing listens on socket_path (no socket file, or a
// stale one: ENOENT, ECONNREFUSED), so that the caller can open the store
// itself; IOError for any other failure to connect, send or receive (a
// timeout is IOError with ETIMEDOUT).  OK means a well-formed response was
// received, which may still be an error response: see ResultOf.
[[nodiscard]] Status ControlCall(const std::string& socket_path, const nlohmann::json& request,
                                 nlohmann::json* response, int timeout_ms);
// The same, and progress (may be empty) receives each progress line: for a
// request that asks for them ("progress": true).
[[nodiscard]] Status ControlCall(const std::string& socket_path, const nlohmann::json& request,
                                 nlohmann::json* response, int timeout_ms,
                                 const CallProgressFn& progress);

}  // namespace rwd::control
