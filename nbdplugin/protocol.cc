// The control protocol's messages: JSON of the store's objects, request
// parsing and response building.  See docs/control-protocol.md.
#include <rewind/control/protocol.h>

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <limits>
#include <system_error>
#include <vector>

namespace rwd::control {

using nlohmann::json;

const char* ServerName() { return "rewind " REWIND_VERSION; }

std::string SocketPath(const std::string& dir) {
  if (!dir.empty() && dir.back() == '/') return dir + kSocketName;
  return dir + "/" + kSocketName;
}

std::string FormatTime(int64_t ns) {
  constexpr int64_t kNsPerSec = 1'000'000'000;
  int64_t secs = ns / kNsPerSec;
  int64_t frac = ns % kNsPerSec;
  if (frac < 0) {  // floor, so that instants before 1970 format correctly
    frac += kNsPerSec;
    secs -= 1;
  }
  time_t t = static_cast<time_t>(secs);
  struct tm tm {};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

// ---- Objects ---------------------------------------------------------------

json ToJson(const CheckpointInfo& cp) {
  return json{{"id", cp.id},           {"name", cp.name},
              {"lsn", cp.lsn},         {"time", FormatTime(cp.time_ns)},
              {"time_ns", cp.time_ns}, {"kind", cp.kind},
              {"pinned", cp.pinned},   {"undo_bytes", cp.undo_bytes},
              {"pending", cp.pending}, {"supervised", cp.supervised}};
}

json ToJson(const StoreInfo& info, bool online) {
  json j{{"dir", info.dir},
         {"image", info.image_path},
         {"format_version", info.format_version},
         {"size", info.size},
         {"block_size", info.block_size},
         {"created", FormatTime(info.created_ns)},
         {"created_ns", info.created_ns},
         {"oldest_lsn", info.oldest_lsn},
         {"newest_lsn", info.newest_lsn},
         {"redo_records", info.redo_records},
         {"redo_bytes", info.redo_bytes},
         {"undo_records", info.undo_records},
         {"undo_bytes", info.undo_bytes},
         {"vmstate_bytes", info.vmstate_bytes},
         {"checkpoints", info.checkpoints},
         {"durable_lsn", info.durable_lsn},
         {"writes_refused", info.writes_refused},
         {"refused_reason", info.refused_reason},
         {"online", online}};
  json disks = json::array();
  for (const DiskInfo& d : info.disks) {
    disks.push_back(json{{"name", d.name}, {"size", d.size}, {"image", d.image_path}});
  }
  j["disks"] = std::move(disks);
  // An empty journal has no timestamps (oldest_lsn is 0 then).
  if (info.oldest_lsn != 0) {
    j["oldest_time"] = FormatTime(info.oldest_time_ns);
    j["newest_time"] = FormatTime(info.newest_time_ns);
    j["oldest_time_ns"] = info.oldest_time_ns;
    j["newest_time_ns"] = info.newest_time_ns;
  }
  return j;
}

namespace {

// Reads typed members of one JSON object, keeping the first error.
class MemberReader {
 public:
  MemberReader(const json& j, const char* what) : j_(j), what_(what) {
    if (!j_.is_object())
      status_ = Status::InvalidArgument(std::string(what_) + " is not an object");
  }

  template <typename T>
  void Unsigned(const char* key, T* out, bool required = true) {
    const json* v = Find(key, required);
    if (v == nullptr) return;
    bool in_range = v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0);
    if (!in_range || v->get<uint64_t>() > std::numeric_limits<T>::max()) {
      Fail(key, "is not an unsigned integer in range");
      return;
    }
    *out = static_cast<T>(v->get<uint64_t>());
  }

  void Signed(const char* key, int64_t* out, bool required = true) {
    const json* v = Find(key, required);
    if (v == nullptr) return;
    if (!v->is_number_integer() ||
        (v->is_number_unsigned() &&
         v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
      Fail(key, "is not a 64-bit integer");
      return;
    }
    *out = v->get<int64_t>();
  }

  void String(const char* key, std::string* out, bool required = true) {
    const json* v = Find(key, required);
    if (v == nullptr) return;
    if (!v->is_string()) return Fail(key, "is not a string");
    *out = v->get<std::string>();
  }

  void Bool(const char* key, bool* out, bool required = true) {
    const json* v = Find(key, required);
    if (v == nullptr) return;
    if (!v->is_boolean()) return Fail(key, "is not a boolean");
    *out = v->get<bool>();
  }

  Status status() const { return status_; }

 private:
  // The member, or null when it is absent (an error when required) or an
  // earlier member failed.
  const json* Find(const char* key, bool required) {
    if (!status_.ok()) return nullptr;
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (required) Fail(key, "is missing");
      return nullptr;
    }
    return &*it;
  }

  void Fail(const char* key, const char* problem) {
    if (status_.ok()) {
      status_ = Status::InvalidArgument(fmt::format("{} member '{}' {}", what_, key, problem));
    }
  }

  const json& j_;
  const char* what_;
  Status status_;
};

}  // namespace

Status FromJson(const json& j, CheckpointInfo* out) {
  CheckpointInfo cp;
  MemberReader r(j, "checkpoint");
  r.Unsigned("id", &cp.id);
  r.String("name", &cp.name);
  r.Unsigned("lsn", &cp.lsn);
  r.Signed("time_ns", &cp.time_ns);
  r.String("kind", &cp.kind);
  r.Bool("pinned", &cp.pinned);
  r.Unsigned("undo_bytes", &cp.undo_bytes);
  r.Bool("pending", &cp.pending, /*required=*/false);  // added with whole-VM checkpoints
  r.Bool("supervised", &cp.supervised, /*required=*/false);  // added with rewind supervise
  if (!r.status().ok()) return r.status();
  *out = std::move(cp);
  return Status::Ok();
}

Status FromJson(const json& j, StoreInfo* out) {
  StoreInfo info;
  MemberReader r(j, "store info");
  r.String("dir", &info.dir);
  r.String("image", &info.image_path);
  r.Unsigned("format_version", &info.format_version);
  r.Unsigned("size", &info.size);
  r.Unsigned("block_size", &info.block_size);
  r.Signed("created_ns", &info.created_ns);
  r.Unsigned("oldest_lsn", &info.oldest_lsn);
  r.Unsigned("newest_lsn", &info.newest_lsn);
  bool has_history = info.oldest_lsn != 0;
  r.Signed("oldest_time_ns", &info.oldest_time_ns, has_history);
  r.Signed("newest_time_ns", &info.newest_time_ns, has_history);
  r.Unsigned("redo_records", &info.redo_records);
  r.Unsigned("redo_bytes", &info.redo_bytes);
  r.Unsigned("undo_records", &info.undo_records);
  r.Unsigned("undo_bytes", &info.undo_bytes);
  r.Unsigned("vmstate_bytes", &info.vmstate_bytes);
  r.Unsigned("checkpoints", &info.checkpoints);
  r.Unsigned("durable_lsn", &info.durable_lsn);
  r.Bool("writes_refused", &info.writes_refused);
  r.String("refused_reason", &info.refused_reason);
  if (!r.status().ok()) return r.status();
  if (auto disks = j.find("disks"); disks != j.end()) {
    if (!disks->is_array()) return Status::InvalidArgument("store info member 'disks' is not an array");
    for (const json& e : *disks) {
      DiskInfo d;
      MemberReader dr(e, "disk");
      dr.String("name", &d.name);
      dr.Unsigned("size", &d.size);
      dr.String("image", &d.image_path);
      if (!dr.status().ok()) return dr.status();
      info.disks.push_back(std::move(d));
    }
  } else {  // a server that knows one disk
    info.disks.push_back(DiskInfo{"", info.size, info.image_path});
  }
  *out = std::move(info);
  return Status::Ok();
}

json ToJson(const PointInfo& point) {
  json j{{"text", point.text},
         {"lsn", point.lsn},
         {"time_ns", point.time_ns},
         {"time", FormatTime(point.time_ns)}};
  if (!point.checkpoint.empty()) j["checkpoint"] = point.checkpoint;
  return j;
}

json ToJson(const RestoreResult& result, const std::string& output) {
  json j{{"point", ToJson(result.point)}};
  if (!result.disk.empty()) j["disk"] = result.disk;
  if (!output.empty()) j["output"] = output;
  j["bytes"] = result.bytes;
  j["data_bytes"] = result.data_bytes;
  j["changed_bytes"] = result.changed_bytes;
  j["seconds"] = result.seconds;
  return j;
}

Status FromJson(const json& j, PointInfo* out) {
  PointInfo p;
  MemberReader r(j, "point");
  r.String("text", &p.text);
  r.Unsigned("lsn", &p.lsn);
  r.Signed("time_ns", &p.time_ns);
  r.String("checkpoint", &p.checkpoint, /*required=*/false);
  if (!r.status().ok()) return r.status();
  *out = std::move(p);
  return Status::Ok();
}

Status FromJson(const json& j, RestoreResult* out) {
  RestoreResult res;
  if (!j.is_object()) return Status::InvalidArgument("restore result is not an object");
  auto point = j.find("point");
  if (point == j.end()) return Status::InvalidArgument("restore result member 'point' is missing");
  if (Status s = FromJson(*point, &res.point); !s.ok()) return s;
  MemberReader r(j, "restore result");
  r.String("disk", &res.disk, /*required=*/false);
  r.Unsigned("bytes", &res.bytes);
  r.Unsigned("data_bytes", &res.data_bytes);
  r.Unsigned("changed_bytes", &res.changed_bytes);
  if (!r.status().ok()) return r.status();
  auto seconds = j.find("seconds");
  if (seconds == j.end() || !seconds->is_number()) {
    return Status::InvalidArgument("restore result member 'seconds' is not a number");
  }
  res.seconds = seconds->get<double>();
  *out = std::move(res);
  return Status::Ok();
}

namespace {

// The object member key of j, or null after setting *s to an error naming it.
const json* Member(const json& j, const char* what, const char* key, Status* s) {
  if (!j.is_object()) {
    *s = Status::InvalidArgument(fmt::format("{} is not an object", what));
    return nullptr;
  }
  auto it = j.find(key);
  if (it == j.end()) {
    *s = Status::InvalidArgument(fmt::format("{} member '{}' is missing", what, key));
    return nullptr;
  }
  return &*it;
}

// The array member key of j, each element read by read.
template <typename T, typename Read>
Status ArrayMember(const json& j, const char* what, const char* key, std::vector<T>* out,
                   Read read) {
  Status s;
  const json* a = Member(j, what, key, &s);
  if (a == nullptr) return s;
  if (!a->is_array()) {
    return Status::InvalidArgument(fmt::format("{} member '{}' is not an array", what, key));
  }
  out->clear();
  for (const json& e : *a) {
    T v;
    if (s = read(e, &v); !s.ok()) return s;
    out->push_back(std::move(v));
  }
  return Status::Ok();
}

Status SecondsMember(const json& j, const char* what, double* out) {
  Status s;
  const json* v = Member(j, what, "seconds", &s);
  if (v == nullptr) return s;
  if (!v->is_number()) {
    return Status::InvalidArgument(fmt::format("{} member 'seconds' is not a number", what));
  }
  *out = v->get<double>();
  return Status::Ok();
}

}  // namespace

json ToJson(const RollbackResult& result) {
  return json{{"point", ToJson(result.point)},
              {"before", ToJson(result.before)},
              {"examined_bytes", result.examined_bytes},
              {"rewritten_bytes", result.rewritten_bytes},
              {"seconds", result.seconds}};
}

json ToJson(const DiffResult& result) {
  json ranges = json::array();
  for (const DiffRange& r : result.ranges) {
    ranges.push_back(json{{"offset", r.offset}, {"length", r.length}});
  }
  json j{{"from", ToJson(result.from)},
         {"to", ToJson(result.to)},
         {"ranges", std::move(ranges)},
         {"bytes", result.bytes},
         {"records", result.records}};
  if (!result.disk.empty()) j["disk"] = result.disk;
  return j;
}

json ToJson(const VerifyReport& report) {
  return json{{"clean", report.clean()},
              {"redo_records", report.redo_records},
              {"undo_records", report.undo_records},
              {"checkpoints", report.checkpoints},
              {"payload_bytes", report.payload_bytes},
              {"image_pages_checked", report.image_pages_checked},
              {"damage", report.damage}};
}

json ToJson(const PruneResult& result, bool dry_run) {
  json kept = json::array(), dropped = json::array();
  for (const CheckpointInfo& cp : result.kept) kept.push_back(ToJson(cp));
  for (const CheckpointInfo& cp : result.dropped) dropped.push_back(ToJson(cp));
  return json{{"dry_run", dry_run},
              {"kept", std::move(kept)},
              {"dropped", std::move(dropped)},
              {"history_start_lsn", result.history_start_lsn},
              {"redo_records_dropped", result.redo_records_dropped},
              {"undo_records_dropped", result.undo_records_dropped},
              {"segments_deleted", result.segments_deleted},
              {"bytes_before", result.bytes_before},
              {"bytes_after", result.bytes_after}};
}

Status FromJson(const json& j, RollbackResult* out) {
  constexpr const char* kWhat = "rollback result";
  RollbackResult res;
  Status s;
  const json* point = Member(j, kWhat, "point", &s);
  if (point != nullptr) s = FromJson(*point, &res.point);
  const json* before = s.ok() ? Member(j, kWhat, "before", &s) : nullptr;
  if (before != nullptr) s = FromJson(*before, &res.before);
  if (s.ok()) s = SecondsMember(j, kWhat, &res.seconds);
  if (!s.ok()) return s;
  MemberReader r(j, kWhat);
  r.Unsigned("examined_bytes", &res.examined_bytes);
  r.Unsigned("rewritten_bytes", &res.rewritten_bytes);
  if (!r.status().ok()) return r.status();
  *out = std::move(res);
  return Status::Ok();
}

Status FromJson(const json& j, DiffResult* out) {
  constexpr const char* kWhat = "diff result";
  DiffResult res;
  Status s;
  const json* from = Member(j, kWhat, "from", &s);
  if (from != nullptr) s = FromJson(*from, &res.from);
  const json* to = s.ok() ? Member(j, kWhat, "to", &s) : nullptr;
  if (to != nullptr) s = FromJson(*to, &res.to);
  if (s.ok()) {
    s = ArrayMember(j, kWhat, "ranges", &res.ranges, [](const json& e, DiffRange* range) {
      MemberReader r(e, "diff range");
      r.Unsigned("offset", &range->offset);
      r.Unsigned("length", &range->length);
      return r.status();
    });
  }
  if (!s.ok()) return s;
  MemberReader r(j, kWhat);
  r.String("disk", &res.disk, /*required=*/false);
  r.Unsigned("bytes", &res.bytes);
  r.Unsigned("records", &res.records);
  if (!r.status().ok()) return r.status();
  *out = std::move(res);
  return Status::Ok();
}

Status FromJson(const json& j, VerifyReport* out) {
  constexpr const char* kWhat = "verify report";
  VerifyReport rep;
  Status s = ArrayMember(j, kWhat, "damage", &rep.damage, [](const json& e, std::string* line) {
    if (!e.is_string()) return Status::InvalidArgument("verify report damage is not a string");
    *line = e.get<std::string>();
    return Status::Ok();
  });
  if (!s.ok()) return s;
  MemberReader r(j, kWhat);
  r.Unsigned("redo_records", &rep.redo_records);
  r.Unsigned("undo_records", &rep.undo_records);
  r.Unsigned("checkpoints", &rep.checkpoints);
  r.Unsigned("payload_bytes", &rep.payload_bytes);
  r.Unsigned("image_pages_checked", &rep.image_pages_checked);
  if (!r.status().ok()) return r.status();
  *out = std::move(rep);
  return Status::Ok();
}

Status FromJson(const json& j, PruneResult* out) {
  constexpr const char* kWhat = "prune result";
  PruneResult res;
  auto checkpoint = [](const json& e, CheckpointInfo* cp) { return FromJson(e, cp); };
  Status s = ArrayMember(j, kWhat, "kept", &res.kept, checkpoint);
  if (s.ok()) s = ArrayMember(j, kWhat, "dropped", &res.dropped, checkpoint);
  if (!s.ok()) return s;
  MemberReader r(j, kWhat);
  r.Unsigned("history_start_lsn", &res.history_start_lsn);
  r.Unsigned("redo_records_dropped", &res.redo_records_dropped);
  r.Unsigned("undo_records_dropped", &res.undo_records_dropped);
  r.Unsigned("segments_deleted", &res.segments_deleted);
  r.Unsigned("bytes_before", &res.bytes_before);
  r.Unsigned("bytes_after", &res.bytes_after);
  if (!r.status().ok()) return r.status();
  *out = std::move(res);
  return Status::Ok();
}

// ---- Requests --------------------------------------------------------------

const char* OpName(Op op) {
  switch (op) {
    case Op::kHello: return "hello";
    case Op::kInfo: return "info";
    case Op::kCheckpoint: return "checkpoint";
    case Op::kList: return "list";
    case Op::kRestore: return "restore";
    case Op::kRollback: return "rollback";
    case Op::kDiff: return "diff";
    case Op::kVerify: return "verify";
    case Op::kPrune: return "prune";
    case Op::kCommitCheckpoint: return "commit-checkpoint";
    case Op::kPin: return "pin";
  }
  return "?";
}

bool IsLongOp(Op op) {
  return op == Op::kRestore || op == Op::kRollback || op == Op::kDiff || op == Op::kVerify ||
         op == Op::kPrune;
}

Error ErrorFromStatus(const Status& s) { return Error{s.CodeName(), s.message(), nullptr}; }

namespace {

constexpr Op kOps[] = {Op::kHello,  Op::kInfo,   Op::kCheckpoint, Op::kList,
                       Op::kRestore, Op::kRollback, Op::kDiff,     Op::kVerify,
                       Op::kPrune,  Op::kCommitCheckpoint, Op::kPin};

std::optional<Op> OpFromName(std::string_view name) {
  for (Op op : kOps) {
    if (name == OpName(op)) return op;
  }
  return std::nullopt;
}

Error BadRequest(std::string message) { return Error{kBadRequest, std::move(message), nullptr}; }

// A required string member: a POINT ("to", "from") or a path ("output").
std::optional<Error> RequiredString(const json& j, Op op, const char* key, const char* meaning,
                                    std::string* out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return BadRequest(fmt::format("{} request has no member '{}'{}", OpName(op), key, meaning));
  }
  if (!it->is_string()) {
    return BadRequest(fmt::format("{} member '{}' is not a string", OpName(op), key));
  }
  *out = it->get<std::string>();
  return std::nullopt;
}

// An optional boolean member: absent or null leaves *out false.
std::optional<Error> OptionalBool(const json& j, Op op, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) {
    return BadRequest(fmt::format("{} member '{}' is not a boolean", OpName(op), key));
  }
  *out = it->get<bool>();
  return std::nullopt;
}

// An optional count member: absent or null leaves *out 0.
template <typename T>
std::optional<Error> OptionalCount(const json& j, Op op, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  const bool in_range =
      it->is_number_unsigned() || (it->is_number_integer() && it->get<int64_t>() >= 0);
  if (!in_range || it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
    return BadRequest(
        fmt::format("{} member '{}' is not a non-negative integer in range", OpName(op), key));
  }
  *out = static_cast<T>(it->get<uint64_t>());
  return std::nullopt;
}

// An optional string member: absent or null leaves *out empty.
std::optional<Error> OptionalString(const json& j, Op op, const char* key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    return BadRequest(fmt::format("{} member '{}' is not a string", OpName(op), key));
  }
  *out = it->get<std::string>();
  return std::nullopt;
}

// The members of a restore request.  A relative output is refused: the
// server's working directory means nothing to the client.
std::optional<Error> ParseRestore(const json& j, Request* out) {
  if (auto e = OptionalString(j, Op::kRestore, "disk", &out->disk)) return e;
  if (auto e = RequiredString(j, Op::kRestore, "to", " (the POINT)", &out->to)) return e;
  if (auto e = RequiredString(j, Op::kRestore, "output", "", &out->output)) return e;
  if (out->output.empty() || out->output.front() != '/') {
    return ErrorFromStatus(Status::InvalidArgument(
        fmt::format("restore output {:?} is not an absolute path", out->output)));
  }
  return OptionalBool(j, Op::kRestore, "force", &out->force);
}

// The members of a prune request: a policy that keeps something.
std::optional<Error> ParsePrune(const json& j, Request* out) {
  PrunePolicy& p = out->policy;
  if (auto e = OptionalCount(j, Op::kPrune, "keep_last", &p.keep_last)) return e;
  if (auto e = OptionalCount(j, Op::kPrune, "keep_within_ns", &p.keep_within_ns)) return e;
  if (auto e = OptionalCount(j, Op::kPrune, "keep_daily", &p.keep_daily)) return e;
  if (auto e = OptionalBool(j, Op::kPrune, "dry_run", &p.dry_run)) return e;
  if (p.keep_last == 0 && p.keep_within_ns == 0 && p.keep_daily == 0) {
    return ErrorFromStatus(Status::InvalidArgument(
        "prune needs a policy: keep_last, keep_within_ns or keep_daily above 0"));
  }
  return std::nullopt;
}

// The members of the op's request beyond v, id and op.
std::optional<Error> ParseArguments(const json& j, Request* out) {
  switch (out->op) {
    case Op::kCheckpoint: {
      auto name = j.find("name");
      if (name != j.end() && !name->is_null()) {
        if (!name->is_string()) return BadRequest("checkpoint member 'name' is not a string");
        out->name = name->get<std::string>();
      }
      auto kind = j.find("kind");
      if (kind != j.end() && !kind->is_null()) {
        if (!kind->is_string() || (*kind != "disk" && *kind != "vm")) {
          return BadRequest("checkpoint member 'kind' is not \"disk\" or \"vm\"");
        }
        out->kind = kind->get<std::string>();
      }
      if (auto e = OptionalBool(j, out->op, "pending", &out->pending)) return e;
      if (auto e = OptionalBool(j, out->op, "pinned", &out->pinned)) return e;
      return OptionalBool(j, out->op, "supervised", &out->supervised);
    }
    case Op::kPin: {
      if (auto e = RequiredString(j, out->op, "name", " (the checkpoint)", &out->name)) return e;
      if (out->name.empty()) return BadRequest("pin member 'name' is empty");
      auto pinned = j.find("pinned");
      if (pinned == j.end() || pinned->is_null()) {
        return BadRequest("pin request has no member 'pinned' (true to pin, false to unpin)");
      }
      return OptionalBool(j, out->op, "pinned", &out->pinned);
    }
    case Op::kCommitCheckpoint:
      if (auto e = OptionalCount(j, out->op, "checkpoint", &out->checkpoint_id)) return e;
      if (out->checkpoint_id == 0) {
        return BadRequest("commit-checkpoint request has no member 'checkpoint' (the id of a "
                          "pending checkpoint)");
      }
      return std::nullopt;
    case Op::kRestore: return ParseRestore(j, out);
    case Op::kRollback:
      if (auto e = OptionalBool(j, out->op, "quiesced", &out->quiesced)) return e;
      return RequiredString(j, out->op, "to", " (the POINT)", &out->to);
    case Op::kDiff:
      if (auto e = OptionalString(j, out->op, "disk", &out->disk)) return e;
      if (auto e = RequiredString(j, out->op, "from", " (a POINT)", &out->from)) return e;
      return RequiredString(j, out->op, "to", " (a POINT)", &out->to);
    case Op::kPrune:
      if (auto e = OptionalBool(j, out->op, "quiesced", &out->quiesced)) return e;
      return ParsePrune(j, out);
    case Op::kList: return OptionalBool(j, out->op, "pending", &out->with_pending);
    case Op::kHello:
    case Op::kInfo:
    case Op::kVerify: return std::nullopt;
  }
  return std::nullopt;
}

// Whether text nests arrays and objects deeper than limit, counted outside
// strings; the text need not be valid JSON.
bool NestedDeeper(std::string_view text, size_t limit) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      depth--;
    }
  }
  return false;
}

}  // namespace

std::optional<Error> ParseRequest(std::string_view line, Request* out) {
  *out = Request{};
  if (line.size() > kMaxRequestLine) {
    return Error{kTooLong, fmt::format("request line is longer than {} bytes", kMaxRequestLine),
                 nullptr};
  }
  if (NestedDeeper(line, kMaxRequestDepth)) {
    return BadRequest(fmt::format("request is nested deeper than {} levels", kMaxRequestDepth));
  }
  json j = json::parse(line.begin(), line.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return BadRequest("request is not JSON");
  if (!j.is_object()) return BadRequest("request is not a JSON object");
  if (auto id = j.find("id"); id != j.end()) out->id = *id;

  auto v = j.find("v");
  if (v == j.end()) return BadRequest("request has no member 'v' (the protocol version)");
  if (!v->is_number_integer()) return BadRequest("request member 'v' is not an integer");
  if (*v != kProtocolVersion) {
    return Error{kUnsupportedVersion,
                 fmt::format("protocol version {} is not supported (supported: {})", v->dump(),
                             kProtocolVersion),
                 json{{"supported", json::array({kProtocolVersion})}}};
  }

  auto op = j.find("op");
  if (op == j.end()) return BadRequest("request has no member 'op'");
  if (!op->is_string()) return BadRequest("request member 'op' is not a string");
  std::optional<Op> parsed = OpFromName(op->get_ref<const std::string&>());
  if (!parsed) {
    return Error{
        kUnknownOp,
        fmt::format("unknown op {:?}", op->get_ref<const std::string&>()),
        nullptr};
  }
  out->op = *parsed;
  if (auto e = ParseArguments(j, out)) return e;
  if (IsLongOp(out->op)) return OptionalBool(j, out->op, "progress", &out->progress);
  return std::nullopt;
}

json MakeRequest(Op op) { return json{{"v", kProtocolVersion}, {"op", OpName(op)}}; }

// ---- Responses -------------------------------------------------------------

namespace {

json Envelope(const std::optional<json>& id, bool ok) {
  json j{{"v", kProtocolVersion}};
  if (id) j["id"] = *id;
  j["ok"] = ok;
  return j;
}

}  // namespace

json MakeResult(const std::optional<json>& id, json result) {
  json j = Envelope(id, true);
  j["result"] = std::move(result);
  return j;
}

json MakeError(const std::optional<json>& id, const Error& error) {
  json e = error.extra.is_object() ? error.extra : json::object();
  e["code"] = error.code;
  e["message"] = error.message;
  json j = Envelope(id, false);
  j["error"] = std::move(e);
  return j;
}

json MakeProgress(const std::optional<json>& id, uint64_t done, uint64_t total) {
  json j{{"v", kProtocolVersion}};
  if (id) j["id"] = *id;
  j["progress"] = json{{"done", done}, {"total", total}};
  return j;
}

bool IsProgress(const json& message, uint64_t* done, uint64_t* total) {
  if (!message.is_object() || message.contains("ok")) return false;
  auto p = message.find("progress");
  if (p == message.end()) return false;
  auto get = [&](const char* key, uint64_t* out) {
    if (out == nullptr) return;
    *out = 0;
    if (!p->is_object()) return;
    auto v = p->find(key);
    if (v != p->end() && v->is_number_unsigned()) *out = v->get<uint64_t>();
  };
  get("done", done);
  get("total", total);
  return true;
}

std::string ToLine(const json& message) {
  std::string line = message.dump(-1, ' ', false, json::error_handler_t::replace);
  line += '\n';
  return line;
}

namespace {

Status StatusFromCode(const std::string& code, const std::string& message) {
  using C = Status::Code;
  static const std::pair<C, Status (*)(std::string)> kStoreCodes[] = {
      {C::kInvalidArgument, &Status::InvalidArgument},
      {C::kNotFound, &Status::NotFound},
      {C::kAlreadyExists, &Status::AlreadyExists},
      {C::kNoSpace, &Status::NoSpace},
      {C::kCorruption, &Status::Corruption},
      {C::kNotSupported, &Status::NotSupported},
      {C::kBusy, &Status::Busy},
      {C::kReadOnly, &Status::ReadOnly},
      {C::kAborted, &Status::Aborted},
  };
  for (const auto& [c, make] : kStoreCodes) {
    Status s = make(message);
    if (code == s.CodeName()) return s;
  }
  if (code == kUnsupportedVersion) return Status::NotSupported(message);
  if (code == kBadRequest || code == kTooLong || code == kUnknownOp) {
    return Status::InvalidArgument(message);
  }
  // "io-error" and codes of a newer server.
  return Status::IOError(message);
}

}  // namespace

Status ResultOf(const json& response, json* result) {
  auto malformed = [](const char* why) {
    return Status::IOError(std::string("malformed response from the plugin: ") + why);
  };
  if (!response.is_object()) return malformed("not a JSON object");
  auto ok = response.find("ok");
  if (ok == response.end() || !ok->is_boolean()) return malformed("no boolean member 'ok'");
  if (ok->get<bool>()) {
    if (result != nullptr) {
      auto r = response.find("result");
      *result = r == response.end() ? json(nullptr) : *r;
    }
    return Status::Ok();
  }
  auto error = response.find("error");
  if (error == response.end() || !error->is_object()) return malformed("no member 'error'");
  auto code = error->find("code");
  auto message = error->find("message");
  if (code == error->end() || !code->is_string()) return malformed("error without 'code'");
  std::string text = message != error->end() && message->is_string() ? message->get<std::string>()
                                                                     : code->get<std::string>();
  return StatusFromCode(code->get<std::string>(), text);
}

// ---- Disks -----------------------------------------------------------------

Status PickDisk(Store& store, const std::string& name, const char* what, Disk** out) {
  *out = nullptr;
  std::string names;
  for (size_t i = 0; i < store.disk_count(); i++) {
    if (Disk* d = store.disk(i)) names += (names.empty() ? "" : ", ") + d->name();
  }
  if (name.empty()) {
    if (store.disk_count() <= 1) return Status::Ok();
    return Status::InvalidArgument(fmt::format(
        "the store {} has {} disks ({}): name the one to {} (rewind {} --disk NAME)", store.dir(),
        store.disk_count(), names, what, what));
  }
  *out = store.FindDisk(name);
  if (*out == nullptr) {
    return Status::NotFound(
        fmt::format("the store {} has no disk '{}' (its disks: {})", store.dir(), name,
                    names.empty() ? "one unnamed disk" : names));
  }
  return Status::Ok();
}

// ---- Restore ---------------------------------------------------------------

namespace {

// Whether path is dir or lies under it; both canonical.
bool IsWithin(const std::filesystem::path& path, const std::filesystem::path& dir) {
  auto [dir_end, path_end] = std::mismatch(dir.begin(), dir.end(), path.begin(), path.end());
  return dir_end == dir.end();
}

}  // namespace

Status CheckRestoreOutput(const std::string& output, const std::string& store_dir,
                          const std::string& image_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path out(output);
  fs::path parent = out.parent_path();
  if (parent.empty()) parent = ".";
  const fs::path real_parent = fs::canonical(parent, ec);
  if (ec) return Status::Ok();
  // The restore renames over the output's directory entry: a symbolic link
  // there is replaced, not followed, so only the directory is resolved.
  const fs::path real_out = real_parent / out.filename();
  const fs::path real_dir = fs::canonical(store_dir, ec);
  if (!ec && IsWithin(real_parent, real_dir)) {
    return Status::InvalidArgument(
        fmt::format("restore output '{}' is inside the store directory {}: write it elsewhere",
                    output, store_dir));
  }
  fs::path real_image = fs::canonical(image_path, ec);
  if (!ec && real_out == real_image) {
    return Status::InvalidArgument(
        fmt::format("restore output '{}' is the live image of the store", output));
  }
  return Status::Ok();
}

Status CheckRestoreOutput(const std::string& output, const StoreInfo& info) {
  Status s = CheckRestoreOutput(output, info.dir, info.image_path);
  for (size_t i = 0; s.ok() && i < info.disks.size(); i++) {
    s = CheckRestoreOutput(output, info.dir, info.disks[i].image_path);
  }
  return s;
}

}  // namespace rwd::control
