// OnlineBackend: a store held open by a running plugin, reached over its
// control socket.  Each call is one request on a fresh connection: the CLI
// makes few calls, and a connection cannot then go stale between them.
#include <fmt/format.h>
#include <rewind/control/protocol.h>

#include <algorithm>

#include "backend.h"

namespace rwd::cli {
namespace {

// How long the plugin may stay silent during a request, connection
// included.  The quick ops (a checkpoint is O(1)) answer well within it;
// the long ones (restore, rollback, diff, verify, prune) always ask for
// progress lines, which restart it and which the plugin sends at least
// every kKeepAliveMs while it works.  It bounds a wedged plugin.
constexpr int kCallTimeoutMs = 30000;

class OnlineBackend final : public Backend {
 public:
  explicit OnlineBackend(std::string socket_path) : socket_path_(std::move(socket_path)) {}

  bool online() const override { return true; }

  Status GetInfo(StoreInfo* out) override {
    nlohmann::json result;
    if (Status s = Call(control::MakeRequest(control::Op::kInfo), &result); !s.ok()) return s;
    return Decode(result, out, "info");
  }

  // Members are sent only when they differ from their defaults, so that a
  // plugin that does not know one still takes a plain checkpoint; one that
  // ignored a flag asked for is reported, not trusted.
  using Backend::Checkpoint;
  Status Checkpoint(const CheckpointOptions& options, CheckpointInfo* out) override {
    nlohmann::json request = control::MakeRequest(control::Op::kCheckpoint);
    if (!options.name.empty()) request["name"] = options.name;
    if (options.kind != "disk") request["kind"] = options.kind;
    if (options.pending) request["pending"] = true;
    if (options.pinned) request["pinned"] = true;
    if (options.supervised) request["supervised"] = true;
    nlohmann::json result;
    if (Status s = Call(request, &result); !s.ok()) return s;
    if (Status s = Decode(result, out, "checkpoint"); !s.ok()) return s;
    if ((options.pinned && !out->pinned) || (options.supervised && !out->supervised)) {
      return Status::NotSupported(fmt::format(
          "the running plugin took checkpoint '{}' without its {} flag: it is older than this "
          "rewind; restart nbdkit with this rewind's plugin",
          out->name, options.pinned && !out->pinned ? "pinned" : "supervised"));
    }
    return Status::Ok();
  }

  Status Pin(const std::string& name, bool pinned, CheckpointInfo* out) override {
    nlohmann::json request = control::MakeRequest(control::Op::kPin);
    request["name"] = name;
    request["pinned"] = pinned;
    nlohmann::json result;
    if (Status s = Call(request, &result); !s.ok()) return s;
    return Decode(result, out, "pin");
  }

  Status ListCheckpoints(std::vector<CheckpointInfo>* out) override {
    nlohmann::json result;
    if (Status s = Call(control::MakeRequest(control::Op::kList), &result); !s.ok()) return s;
    auto it = result.find("checkpoints");
    if (it == result.end() || !it->is_array()) {
      return Malformed("list", Status::InvalidArgument("missing member 'checkpoints'"));
    }
    out->clear();
    for (const nlohmann::json& j : *it) {
      CheckpointInfo cp;
      if (Status s = Decode(j, &cp, "list"); !s.ok()) return s;
      out->push_back(std::move(cp));
    }
    return Status::Ok();
  }

  // The request always asks for progress: its lines restart the call's
  // timeout, so a long restore never hits it.
  Status Restore(const std::string& point, const std::string& disk, const std::string& output,
                 bool force, const ProgressFn& progress, RestoreResult* out) override {
    nlohmann::json request = control::MakeRequest(control::Op::kRestore);
    request["to"] = point;
    if (!disk.empty()) request["disk"] = disk;
    request["output"] = output;
    request["force"] = force;
    request["progress"] = true;
    control::CallProgressFn on_progress = [&progress](uint64_t done, uint64_t total) {
      return !progress || progress(done, total);
    };
    nlohmann::json result;
    if (Status s = Call(request, &result, on_progress); !s.ok()) return s;
    return Decode(result, out, "restore");
  }

  Status Rollback(const std::string& point, const ProgressFn& progress,
                  RollbackResult* out) override {
    nlohmann::json request = control::MakeRequest(control::Op::kRollback);
    request["to"] = point;
    request["progress"] = true;
    control::CallProgressFn on_progress = [&progress](uint64_t done, uint64_t total) {
      if (progress) (void)progress(done, total);
      return true;  // the plugin goes on anyway
    };
    nlohmann::json result;
    if (Status s = Call(request, &result, on_progress); !s.ok()) return s;
    return Decode(result, out, "rollback");
  }

  Status Diff(const std::string& from, const std::string& to, const std::string& disk,
              DiffResult* out) override {
    nlohmann::json request = control::MakeRequest(control::Op::kDiff);
    if (!disk.empty()) request["disk"] = disk;
    request["from"] = from;
    request["to"] = to;
    request["progress"] = true;  // keep-alives: a long diff never hits the timeout
    nlohmann::json result;
    if (Status s = Call(request, &result, KeepAlive()); !s.ok()) return s;
    return Decode(result, out, "diff");
  }

  Status Verify(const ProgressFn& progress, VerifyReport* out) override {
    nlohmann::json request = control::MakeRequest(control::Op::kVerify);
    request["progress"] = true;
    control::CallProgressFn on_progress = [&progress](uint64_t done, uint64_t total) {
      return !progress || progress(done, total);
    };
    nlohmann::json result;
    if (Status s = Call(request, &result, on_progress); !s.ok()) return s;
    return Decode(result, out, "verify");
  }

  Status Prune(const PrunePolicy& policy, PruneResult* out) override {
    nlohmann::json request = control::MakeRequest(control::Op::kPrune);
    if (policy.keep_last > 0) request["keep_last"] = policy.keep_last;
    if (policy.keep_within_ns > 0) request["keep_within_ns"] = policy.keep_within_ns;
    if (policy.keep_daily > 0) request["keep_daily"] = policy.keep_daily;
    request["dry_run"] = policy.dry_run;
    request["progress"] = true;  // keep-alives
    nlohmann::json result;
    if (Status s = Call(request, &result, KeepAlive()); !s.ok()) return s;
    return Decode(result, out, "prune");
  }

  Status Close() override { return Status::Ok(); }

  // Sends one request and reads its response, which may be an error
  // response.  NotFound: nothing listens on the socket.  The id lets a reader
  // of a trace match request and answer; the server echoes it.
  Status Send(nlohmann::json request, nlohmann::json* response,
              const control::CallProgressFn& progress = {}) {
    request["id"] = next_id_++;
    return control::ControlCall(socket_path_, request, response, kCallTimeoutMs, progress);
  }

  // One request and its result; a remote error becomes its Status.
  Status Call(const nlohmann::json& request, nlohmann::json* result,
              const control::CallProgressFn& progress = {}) {
    nlohmann::json response;
    if (Status s = Send(request, &response, progress); !s.ok()) return s;
    return control::ResultOf(response, result);
  }

 private:
  // Receives the progress lines of work that reports none of its own.
  static control::CallProgressFn KeepAlive() {
    return [](uint64_t, uint64_t) { return true; };
  }

  template <typename T>
  Status Decode(const nlohmann::json& j, T* out, const char* op) {
    Status s = control::FromJson(j, out);
    return s.ok() ? s : Malformed(op, s);
  }

  Status Malformed(const char* op, const Status& why) {
    return Status::IOError(fmt::format("the plugin on {} sent a malformed '{}' result: {}",
                                       socket_path_, op, why.message()));
  }

  std::string socket_path_;
  int next_id_ = 1;
};

// The server answers hello with the protocol versions it speaks.
Status CheckHello(const std::string& socket_path, const nlohmann::json& hello) {
  auto it = hello.find("versions");
  if (it == hello.end() || !it->is_array()) return Status::Ok();  // members are optional
  bool speaks = std::any_of(it->begin(), it->end(), [](const nlohmann::json& v) {
    return v.is_number_integer() && v.get<int>() == control::kProtocolVersion;
  });
  if (speaks) return Status::Ok();
  return Status::NotSupported(
      fmt::format("the plugin on {} does not speak control protocol v{} (it speaks {})",
                  socket_path, control::kProtocolVersion, it->dump()));
}

}  // namespace

std::string ControlSocketPath(const std::string& dir) { return control::SocketPath(dir); }

Status ConnectOnline(const std::string& socket_path, std::unique_ptr<Backend>* out,
                     bool* not_listening) {
  *not_listening = false;
  auto backend = std::make_unique<OnlineBackend>(socket_path);
  nlohmann::json response;
  Status s = backend->Send(control::MakeRequest(control::Op::kHello), &response);
  if (s.code() == Status::Code::kNotFound) *not_listening = true;
  if (!s.ok()) return s;
  nlohmann::json hello;
  if (s = control::ResultOf(response, &hello); !s.ok()) return s;
  if (s = CheckHello(socket_path, hello); !s.ok()) return s;
  *out = std::move(backend);
  return Status::Ok();
}

}  // namespace rwd::cli
