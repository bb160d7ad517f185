// Whole-VM checkpoints and restores: QMP, the stores' control sockets and
// the saved-state store, in the order vm.h describes.
#include <rewind/control/protocol.h>
#include <rewind/vmstate/qmp.h>
#include <rewind/vmstate/vm.h>

#include "stores.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fmt/format.h>

namespace rwd::vm {

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kFdName = "rewind-vmstate";
constexpr const char* kStateDirName = "vmstate";
constexpr uint64_t kFastBandwidth = 64ull << 30;  // bytes/s: no throttling
constexpr milliseconds kPollInterval{10};

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

Status MakePipe(Fd* read_end, Fd* write_end) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  read_end->Reset(p[0]);
  write_end->Reset(p[1]);
  // A deep pipe lets QEMU run ahead of the chunker (best effort).
  (void)::fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
  return Status::Ok();
}

// ---- The stores, through their plugins' control sockets ---------------------

}  // namespace

namespace detail {

Status Call(const std::string& dir, const Json& request, Json* result, milliseconds timeout) {
  Json response;
  Status s = control::ControlCall(control::SocketPath(dir), request, &response,
                                  static_cast<int>(timeout.count()));
  if (s.code() == Status::Code::kNotFound) {
    return Status::NotFound(fmt::format(
        "no rewind plugin is serving {}: a whole-VM checkpoint needs the VM's disks served by "
        "nbdkit with the rewind plugin",
        dir));
  }
  if (!s.ok()) return s.WithPrefix(dir);
  s = control::ResultOf(response, result);
  return s.ok() ? s : s.WithPrefix(dir);
}

Status ListCheckpoints(const std::string& dir, bool with_pending, std::vector<CheckpointInfo>* out,
                       milliseconds timeout) {
  Json req = control::MakeRequest(control::Op::kList);
  req["pending"] = with_pending;
  Json result;
  Status s = Call(dir, req, &result, timeout);
  if (!s.ok()) return s;
  out->clear();
  if (!result.contains("checkpoints") || !result["checkpoints"].is_array()) {
    return Status::IOError(dir + ": list result has no checkpoints");
  }
  for (const Json& j : result["checkpoints"]) {
    CheckpointInfo cp;
    if (s = control::FromJson(j, &cp); !s.ok()) return s.WithPrefix(dir);
    out->push_back(std::move(cp));
  }
  return Status::Ok();
}

}  // namespace detail

namespace {

using detail::Call;
using detail::ListCheckpoints;

// The flags are sent only when set, so that a plugin that does not know
// them still takes a plain marker; one that ignores a flag asked for is
// reported rather than trusted.
Status TakeMarker(const std::string& dir, const std::string& name, bool pinned, bool supervised,
                  CheckpointInfo* out, milliseconds timeout) {
  Json req = control::MakeRequest(control::Op::kCheckpoint);
  req["name"] = name;
  req["kind"] = "vm";
  req["pending"] = true;
  if (pinned) req["pinned"] = true;
  if (supervised) req["supervised"] = true;
  Json result;
  Status s = Call(dir, req, &result, timeout);
  if (s.ok()) s = control::FromJson(result, out);
  if (s.ok() && ((pinned && !out->pinned) || (supervised && !out->supervised))) {
    s = Status::NotSupported(fmt::format(
        "{}: the running plugin took checkpoint '{}' without its {} flag: it is older than this "
        "rewind; restart nbdkit with this rewind's plugin",
        dir, out->name, pinned && !out->pinned ? "pinned" : "supervised"));
  }
  return s;
}

Status CommitMarker(const std::string& dir, uint64_t id, CheckpointInfo* out,
                    milliseconds timeout) {
  Json req = control::MakeRequest(control::Op::kCommitCheckpoint);
  req["checkpoint"] = id;
  Json result;
  Status s = Call(dir, req, &result, timeout);
  if (s.ok() && out != nullptr) s = control::FromJson(result, out);
  return s;
}

// The stores named in a saved state's metadata: dir -> checkpoint id.
std::vector<std::pair<std::string, uint64_t>> MarkersOf(const StateInfo& st) {
  std::vector<std::pair<std::string, uint64_t>> out;
  if (!st.meta.contains("disks") || !st.meta["disks"].is_array()) return out;
  for (const Json& d : st.meta["disks"]) {
    if (d.contains("dir") && d["dir"].is_string() && d.contains("checkpoint_id") &&
        d["checkpoint_id"].is_number_unsigned()) {
      out.emplace_back(d["dir"].get<std::string>(), d["checkpoint_id"].get<uint64_t>());
    }
  }
  return out;
}

// Finishes what an interrupted whole-VM command left: a saved state whose
// markers are pending gets them committed (the manifest was the commit
// point); one whose markers are gone from the first store (pruned, or
// never taken there) is deleted.
Status Reconcile(StateStore* states, const std::vector<std::string>& dirs, milliseconds timeout) {
  std::vector<StateInfo> saved;
  Status s = states->List(&saved);
  if (!s.ok()) return s;
  if (saved.empty()) return Status::Ok();
  std::vector<CheckpointInfo> first;
  if (s = ListCheckpoints(dirs[0], true, &first, timeout); !s.ok()) return s;
  for (const StateInfo& st : saved) {
    auto markers = MarkersOf(st);
    bool alive = false;
    for (const auto& [dir, id] : markers) {
      if (dir != dirs[0]) continue;
      for (const CheckpointInfo& cp : first) alive |= cp.id == id && cp.kind == "vm";
    }
    if (!alive) {
      if (s = states->Remove(st.id); !s.ok()) return s;
      continue;
    }
    for (const auto& [dir, id] : markers) {
      if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) continue;
      std::vector<CheckpointInfo> cps;
      if (s = ListCheckpoints(dir, true, &cps, timeout); !s.ok()) return s;
      for (const CheckpointInfo& cp : cps) {
        if (cp.id == id && cp.pending) {
          if (s = CommitMarker(dir, id, nullptr, timeout); !s.ok()) return s;
        }
      }
    }
  }
  return Status::Ok();
}

Status OpenStates(const std::string& first_dir, std::unique_ptr<StateStore>* out) {
  const std::string path = first_dir + "/" + kStateDirName;
  Status s = StateStore::Open(path, out);
  return s.ok() ? s : s.WithPrefix("saved VM state");
}

}  // namespace

Status detail::CheckDirs(const std::vector<std::string>& dirs, std::vector<std::string>* abs) {
  if (dirs.empty()) return Status::InvalidArgument("no store DIR given");
  abs->clear();
  for (const std::string& d : dirs) {
    std::error_code ec;
    std::filesystem::path p = std::filesystem::weakly_canonical(std::filesystem::absolute(d), ec);
    if (ec) return Status::InvalidArgument(fmt::format("{}: {}", d, ec.message()));
    std::string a = p.lexically_normal().string();
    while (a.size() > 1 && a.back() == '/') a.pop_back();
    if (!Store::Exists(a)) return Status::NotFound(fmt::format("{} holds no rewind store", d));
    if (std::find(abs->begin(), abs->end(), a) != abs->end()) {
      return Status::InvalidArgument(fmt::format("store {} is given twice", d));
    }
    abs->push_back(a);
  }
  return Status::Ok();
}

namespace {

using detail::CheckDirs;

// ---- QEMU --------------------------------------------------------------------

Status QueryStatus(QmpClient& qmp, std::string* status, milliseconds timeout) {
  Json ret;
  Status s = qmp.Execute("query-status", nullptr, &ret, timeout);
  if (!s.ok()) return s;
  if (!ret.contains("status") || !ret["status"].is_string()) {
    return Status::IOError("QMP: query-status without a status");
  }
  *status = ret["status"].get<std::string>();
  return Status::Ok();
}

struct MigrationState {
  std::string status;  // setup, active, device, completed, failed, cancelled...
  std::string error;   // error-desc when failed
  uint64_t ram_total = 0;
  uint64_t ram_transferred = 0;
  double downtime_ms = 0;
};

Status QueryMigrate(QmpClient& qmp, MigrationState* m, milliseconds timeout) {
  Json ret;
  Status s = qmp.Execute("query-migrate", nullptr, &ret, timeout);
  if (!s.ok()) return s;
  *m = MigrationState{};
  if (ret.contains("status") && ret["status"].is_string()) m->status = ret["status"];
  if (ret.contains("error-desc") && ret["error-desc"].is_string()) m->error = ret["error-desc"];
  if (ret.contains("downtime") && ret["downtime"].is_number()) {
    m->downtime_ms = ret["downtime"].get<double>();
  }
  if (ret.contains("ram") && ret["ram"].is_object()) {
    const Json& ram = ret["ram"];
    if (ram.contains("total") && ram["total"].is_number_unsigned()) m->ram_total = ram["total"];
    if (ram.contains("transferred") && ram["transferred"].is_number_unsigned()) {
      m->ram_transferred = ram["transferred"];
    }
  }
  return Status::Ok();
}

bool Finished(const std::string& status) {
  return status == "completed" || status == "failed" || status == "cancelled";
}

// Sets the migration parameters for a save at full speed and puts the
// user's back when destroyed.
class MigrationParams {
 public:
  MigrationParams(QmpClient& qmp, milliseconds timeout) : qmp_(qmp), timeout_(timeout) {}
  ~MigrationParams() {
    if (!saved_.is_null()) (void)qmp_.Execute("migrate-set-parameters", saved_, nullptr, timeout_);
  }
  Status Apply() {
    Json cur;
    Status s = qmp_.Execute("query-migrate-parameters", nullptr, &cur, timeout_);
    if (!s.ok()) return s;
    if (cur.contains("max-bandwidth")) saved_["max-bandwidth"] = cur["max-bandwidth"];
    return qmp_.Execute("migrate-set-parameters", Json{{"max-bandwidth", kFastBandwidth}}, nullptr,
                        timeout_);
  }

 private:
  QmpClient& qmp_;
  milliseconds timeout_;
  Json saved_;
};

// Reads the migration stream from a pipe into a StateWriter on its own
// thread.  After a failure it keeps draining the pipe (so that QEMU never
// blocks on it) and reports the failure at Join.
class StreamReader {
 public:
  StreamReader(int fd, StateWriter* writer) : fd_(fd), writer_(writer) {
    thread_ = std::thread([this] { Run(); });
  }
  ~StreamReader() {
    if (thread_.joinable()) thread_.join();
  }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  // Waits for the end of the stream (QEMU closed its end).
  Status Join() {
    if (thread_.joinable()) thread_.join();
    return status_;
  }

 private:
  void Run() {
    std::vector<char> buf(1 << 20);
    for (;;) {
      ssize_t n = ::read(fd_, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        Fail(Status::FromErrno(errno, "read the migration stream"));
        return;
      }
      if (n == 0) return;
      bytes_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      if (failed()) continue;  // drain
      Status s = writer_->Append(buf.data(), static_cast<size_t>(n));
      if (!s.ok()) Fail(s);
    }
  }
  void Fail(const Status& s) {
    if (!failed()) {
      status_ = s;
      failed_.store(true, std::memory_order_release);
    }
  }

  int fd_;
  StateWriter* writer_;
  std::thread thread_;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<bool> failed_{false};
  Status status_;
};

// Cancels a running migration and waits (bounded) until QEMU says so.
void CancelMigration(QmpClient& qmp, milliseconds timeout) {
  (void)qmp.Execute("migrate_cancel", nullptr, nullptr, timeout);
  const auto deadline = Clock::now() + timeout;
  MigrationState m;
  while (Clock::now() < deadline && QueryMigrate(qmp, &m, timeout).ok() && !Finished(m.status)) {
    std::this_thread::sleep_for(kPollInterval);
  }
}

}  // namespace

std::string detail::UtcStamp(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string DefaultVmCheckpointName(int64_t ns) { return "vm-" + detail::UtcStamp(ns); }

Status VmCheckpoint(const VmCheckpointOptions& o, VmCheckpointResult* out) {
  const auto t0 = Clock::now();
  VmCheckpointResult r;
  r.live = o.live;
  std::vector<std::string> dirs;
  Status s = CheckDirs(o.dirs, &dirs);
  if (!s.ok()) return s;
  r.name = o.name.empty() ? DefaultVmCheckpointName(NowNs()) : o.name;
  if (s = ValidateCheckpointName(r.name); !s.ok()) return s;

  std::unique_ptr<QmpClient> qmp;
  if (s = QmpClient::Connect(o.qmp_socket, o.timeout, &qmp); !s.ok()) return s;
  std::string status;
  if (s = QueryStatus(*qmp, &status, o.timeout); !s.ok()) return s;
  if (status != "running" && status != "paused") {
    return Status::InvalidArgument(fmt::format(
        "the VM at {} is {}: a whole-VM checkpoint needs it running or paused", o.qmp_socket,
        status));
  }
  const bool was_running = status == "running";
  if (o.live && !was_running) {
    return Status::InvalidArgument("--live needs a running VM; this one is " + status);
  }
  MigrationState m;
  if (s = QueryMigrate(*qmp, &m, o.timeout); !s.ok()) return s;
  if (!m.status.empty() && !Finished(m.status)) {
    return Status::Busy("QEMU is already migrating (status " + m.status + ")");
  }

  std::unique_ptr<StateStore> states;
  if (s = OpenStates(dirs[0], &states); !s.ok()) return s;
  if (s = Reconcile(states.get(), dirs, o.timeout); !s.ok()) return s;
  // Refuse a taken name before the guest is touched.
  for (const std::string& dir : dirs) {
    std::vector<CheckpointInfo> cps;
    if (s = ListCheckpoints(dir, false, &cps, o.timeout); !s.ok()) return s;
    for (const CheckpointInfo& cp : cps) {
      if (cp.name == r.name) {
        return Status::AlreadyExists(
            fmt::format("{}: a checkpoint named '{}' already exists", dir, r.name));
      }
    }
  }

  std::unique_ptr<StateWriter> writer;
  if (s = states->NewWriter(&writer); !s.ok()) return s;
  Fd rd, wr;
  if (s = MakePipe(&rd, &wr); !s.ok()) return s;
  if (s = qmp->ExecuteWithFd("getfd", Json{{"fdname", kFdName}}, wr.get(), nullptr, o.timeout);
      !s.ok()) {
    return s;
  }
  wr.Reset();  // QEMU holds the write end now; EOF comes when it closes it
  MigrationParams params(*qmp, o.timeout);
  if (s = params.Apply(); !s.ok()) {
    (void)qmp->Execute("closefd", Json{{"fdname", kFdName}}, nullptr, o.timeout);
    return s;
  }

  // From here on every failure resumes the guest (if it ran) before
  // returning, and leaves no visible checkpoint.
  bool stopped = false;
  Clock::time_point stop_time;
  int64_t stop_wall_ns = 0;
  auto resume = [&]() -> Status {
    if (!was_running) return Status::Ok();
    return qmp->Execute("cont", nullptr, nullptr, o.timeout);
  };
  // Events on this connection: a fault during the checkpoint, and live
  // mode's STOP.
  std::string fault;
  auto scan_events = [&] {
    std::deque<Json> events;
    (void)qmp->TakeEvents(&events);
    for (const Json& e : events) {
      const std::string name = e.value("event", "");
      const Json data = e.contains("data") && e["data"].is_object() ? e["data"] : Json::object();
      if (name == "GUEST_PANICKED" || name == "GUEST_CRASHLOADED" || name == "WATCHDOG" ||
          (name == "SHUTDOWN" && data.value("guest", false))) {
        if (fault.empty()) fault = name;
      }
      if (name == "STOP" && e.contains("timestamp") && o.live && stop_wall_ns == 0) {
        const Json& ts = e["timestamp"];
        stop_wall_ns = ts.value("seconds", int64_t{0}) * 1000000000 +
                       ts.value("microseconds", int64_t{0}) * 1000;
      }
    }
  };
  auto fail = [&](Status why) -> Status {
    writer->Abort();
    scan_events();
    if (!fault.empty()) {
      // A faulty guest stays as it is: not resumed.
      if (o.fault_seen != nullptr) *o.fault_seen = fault;
      return why;
    }
    if (stopped || o.live) {
      std::string st;
      if (QueryStatus(*qmp, &st, o.timeout).ok() && st != "running" && was_running) {
        Status c = resume();
        if (!c.ok()) why = why.WithPrefix("(and the VM could not be resumed: " + c.message() + ")");
      }
    }
    return why;
  };

  if (!o.live && was_running) {
    stop_time = Clock::now();
    if (s = qmp->Execute("stop", nullptr, nullptr, o.timeout); !s.ok()) return fail(s);
    stopped = true;
  }
  // Stop mode: the markers now, while the guest is stopped and its disks
  // drained and flushed; live mode: once QEMU has stopped it at the end.
  std::vector<CheckpointInfo> markers(dirs.size());
  auto take_markers = [&]() -> Status {
    for (size_t i = 0; i < dirs.size(); i++) {
      Status t = TakeMarker(dirs[i], r.name, o.pinned, o.supervised, &markers[i], o.timeout);
      if (!t.ok()) return t;
    }
    return Status::Ok();
  };
  if (!o.live) {
    if (s = take_markers(); !s.ok()) {
      (void)qmp->Execute("closefd", Json{{"fdname", kFdName}}, nullptr, o.timeout);
      return fail(s);
    }
  }

  StreamReader reader(rd.get(), writer.get());
  if (s = qmp->Execute("migrate", Json{{"uri", std::string("fd:") + kFdName}}, nullptr, o.timeout);
      !s.ok()) {
    (void)qmp->Execute("closefd", Json{{"fdname", kFdName}}, nullptr, o.timeout);
    (void)reader.Join();
    return fail(s);
  }
  // Wait for the end, watching for a stalled stream, a failed writer and
  // cancellation.
  uint64_t last_bytes = 0;
  auto last_change = Clock::now();
  for (;;) {
    if (s = QueryMigrate(*qmp, &m, o.timeout); !s.ok()) {
      (void)reader.Join();
      return fail(s);
    }
    if (Finished(m.status)) break;
    if (o.live && stop_wall_ns == 0 && m.status == "device") stop_wall_ns = NowNs();
    const uint64_t b = reader.bytes();
    if (b != last_bytes) {
      last_bytes = b;
      last_change = Clock::now();
    }
    bool cancel = reader.failed() || Clock::now() - last_change > o.timeout;
    if (!cancel && o.progress && !o.progress(b, m.ram_total)) cancel = true;
    if (cancel) {
      CancelMigration(*qmp, o.timeout);
      Status rs = reader.Join();
      if (!rs.ok()) return fail(rs);
      if (Clock::now() - last_change > o.timeout) {
        return fail(Status::IOError(fmt::format("the migration stream stalled for {} ms",
                                                o.timeout.count())));
      }
      return fail(Status::Aborted("whole-VM checkpoint cancelled"));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  if (m.status != "completed") {
    (void)reader.Join();
    return fail(Status::IOError("QEMU failed to save the VM state: " +
                                (m.error.empty() ? m.status : m.error)));
  }
  r.ram_bytes = m.ram_total;
  r.qemu_downtime_ms = m.downtime_ms;
  if (s = reader.Join(); !s.ok()) return fail(s);
  if (o.live) {
    // The guest is stopped (postmigrate) with its disks drained: the
    // instant of the checkpoint.  QEMU's STOP event says when it stopped.
    stopped = true;
    const int64_t polled = stop_wall_ns;
    stop_wall_ns = 0;  // QEMU's STOP event, which scan_events reads, is more exact
    scan_events();
    if (stop_wall_ns == 0) stop_wall_ns = polled;
    if (s = take_markers(); !s.ok()) return fail(s);
  }
  // The guest must not have faulted meanwhile: its saved state may be the
  // faulty one (a panic between the status check and the stop, say).
  scan_events();
  if (!fault.empty()) {
    return fail(Status::Aborted(fmt::format(
        "the guest faulted during the checkpoint (QEMU reported {}): no checkpoint taken, the "
        "guest left stopped",
        fault)));
  }
  Json meta{{"name", r.name},
            {"mode", o.live ? "live" : "stop"},
            {"qemu_version", qmp->version()},
            {"ram_bytes", r.ram_bytes},
            {"was_running", was_running}};
  Json disks = Json::array();
  for (size_t i = 0; i < dirs.size(); i++) {
    disks.push_back(Json{{"dir", dirs[i]},
                         {"checkpoint_id", markers[i].id},
                         {"lsn", markers[i].lsn},
                         {"time_ns", markers[i].time_ns}});
  }
  meta["disks"] = std::move(disks);
  // The commit point: from here on the checkpoint exists.
  if (s = writer->Commit(r.name, meta, &r.state); !s.ok()) return fail(s);
  for (size_t i = 0; i < dirs.size(); i++) {
    VmDisk d;
    d.dir = dirs[i];
    s = CommitMarker(dirs[i], markers[i].id, &d.checkpoint, o.timeout);
    if (!s.ok()) {
      (void)fail(Status::Ok());
      return s.WithPrefix(
          "the VM state is saved but a disk marker could not be committed (the next 'rewind vm' "
          "command on these stores finishes it)");
    }
    r.disks.push_back(std::move(d));
  }
  if (s = resume(); !s.ok()) return s.WithPrefix("checkpoint " + r.name + " taken, but resuming the VM failed");
  if (o.live) {
    r.downtime_ms = stop_wall_ns > 0 ? static_cast<double>(NowNs() - stop_wall_ns) / 1e6 : 0;
  } else if (was_running) {
    r.downtime_ms = MsSince(stop_time);
  }
  r.seconds = MsSince(t0) / 1000;
  *out = std::move(r);
  return Status::Ok();
}

Status VmRestore(const VmRestoreOptions& o, VmRestoreResult* out) {
  const auto t0 = Clock::now();
  VmRestoreResult r;
  r.name = o.name;
  std::vector<std::string> dirs;
  Status s = CheckDirs(o.dirs, &dirs);
  if (!s.ok()) return s;
  if (s = ValidateCheckpointName(o.name); !s.ok()) return s;

  std::unique_ptr<QmpClient> qmp;
  if (s = QmpClient::Connect(o.qmp_socket, o.timeout, &qmp); !s.ok()) return s;
  std::string status;
  if (s = QueryStatus(*qmp, &status, o.timeout); !s.ok()) return s;
  if (status != "inmigrate") {
    return Status::InvalidArgument(fmt::format(
        "the VM at {} is {}, not waiting for its state: start QEMU with '-incoming defer' (and "
        "its disks on the rewind exports) to restore a whole-VM checkpoint into it",
        o.qmp_socket, status));
  }

  std::unique_ptr<StateStore> states;
  if (s = OpenStates(dirs[0], &states); !s.ok()) return s;
  if (s = Reconcile(states.get(), dirs, o.timeout); !s.ok()) return s;
  // The checkpoint must be a whole-VM one in every store, the same one the
  // saved state names.
  for (const std::string& dir : dirs) {
    std::vector<CheckpointInfo> cps;
    if (s = ListCheckpoints(dir, false, &cps, o.timeout); !s.ok()) return s;
    auto it = std::find_if(cps.begin(), cps.end(),
                           [&](const CheckpointInfo& c) { return c.name == o.name; });
    if (it == cps.end()) {
      return Status::NotFound(fmt::format("{}: no checkpoint named '{}' ('rewind list' shows them)",
                                          dir, o.name));
    }
    if (it->kind != "vm") {
      return Status::InvalidArgument(fmt::format(
          "{}: '{}' is a disk-only checkpoint: it holds no memory or device state; 'rewind "
          "rollback' puts the disk back to it",
          dir, o.name));
    }
    r.disks.push_back(VmDisk{dir, *it});
  }
  if (s = states->Get(o.name, &r.state); !s.ok()) {
    if (s.code() == Status::Code::kNotFound) {
      return Status::NotFound(fmt::format("{}: the saved VM state of checkpoint '{}' is missing",
                                          dirs[0], o.name));
    }
    return s;
  }
  auto markers = MarkersOf(r.state);
  for (const VmDisk& d : r.disks) {
    bool match = false;
    for (const auto& [dir, id] : markers) match |= dir == d.dir && id == d.checkpoint.id;
    if (!match) {
      return Status::InvalidArgument(fmt::format(
          "{}: checkpoint '{}' was not taken together with the VM state saved in {} (give the "
          "same stores as for 'rewind vm checkpoint', first one first)",
          d.dir, o.name, dirs[0]));
    }
  }
  if (markers.size() != dirs.size()) {
    return Status::InvalidArgument(fmt::format(
        "checkpoint '{}' covers {} store(s); {} given", o.name, markers.size(), dirs.size()));
  }
  // Damage is found before the disks are touched: a damaged point is
  // never served.
  if (s = states->Read(o.name, [](const void*, size_t) { return Status::Ok(); }); !s.ok()) {
    return s;
  }

  // The disks, each an undoable rollback.  QEMU has them open but idle.
  for (const std::string& dir : dirs) {
    Json req = control::MakeRequest(control::Op::kRollback);
    req["to"] = o.name;
    req["quiesced"] = true;
    Json result;
    if (s = Call(dir, req, &result, o.timeout); !s.ok()) return s;
    RollbackResult rb;
    if (s = control::FromJson(result, &rb); !s.ok()) return s.WithPrefix(dir);
    r.rollbacks.push_back(std::move(rb));
  }

  // The state, through a pipe QEMU reads.
  Fd rd, wr;
  if (s = MakePipe(&rd, &wr); !s.ok()) return s;
  if (s = qmp->ExecuteWithFd("getfd", Json{{"fdname", kFdName}}, rd.get(), nullptr, o.timeout);
      !s.ok()) {
    return s;
  }
  rd.Reset();
  if (s = qmp->Execute("migrate-incoming", Json{{"uri", std::string("fd:") + kFdName}}, nullptr,
                       o.timeout);
      !s.ok()) {
    return s;
  }
  std::atomic<uint64_t> sent{0};
  Status feed;
  std::thread feeder([&] {
    feed = states->Read(o.name, [&](const void* data, size_t len) -> Status {
      const char* p = static_cast<const char*>(data);
      while (len > 0) {
        ssize_t n = ::write(wr.get(), p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Status::FromErrno(errno, "write the VM state to QEMU");
        p += n;
        len -= static_cast<size_t>(n);
        sent.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      }
      return Status::Ok();
    });
    wr.Reset();  // EOF for QEMU
  });
  MigrationState m;
  for (;;) {
    s = QueryMigrate(*qmp, &m, o.timeout);
    if (!s.ok() || Finished(m.status)) break;
    if (o.progress) (void)o.progress(sent.load(), r.state.stream_bytes);
    std::this_thread::sleep_for(kPollInterval);
  }
  feeder.join();
  if (!s.ok()) return s;
  if (!feed.ok()) return feed;
  if (m.status != "completed") {
    return Status::IOError("QEMU failed to load the VM state: " +
                           (m.error.empty() ? m.status : m.error));
  }
  // QEMU resumes on its own a VM that ran when it was saved, unless
  // started with -S; one saved paused stays paused.
  const bool was_running = r.state.meta.value("was_running", true);
  if (s = QueryStatus(*qmp, &status, o.timeout); !s.ok()) return s;
  if (was_running && status != "running") {
    if (s = qmp->Execute("cont", nullptr, nullptr, o.timeout); !s.ok()) return s;
  }
  r.seconds = MsSince(t0) / 1000;
  *out = std::move(r);
  return Status::Ok();
}

}  // namespace rwd::vm
