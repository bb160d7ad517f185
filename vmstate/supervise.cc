// rewind supervise: schedule, fault detection and rollback (supervise.h).
//
// One thread runs everything: it waits on the event monitor for at most
// kTick, then looks at the QEMU child, the heartbeat, the run state and
// the schedule in turn.  The whole-VM commands (VmCheckpoint, VmRestore)
// run on that thread too, so nothing here needs a lock; a fault that
// happens while one of them runs is seen by its event (queued on the event
// monitor) or, failing that, by the run state it leaves.
#include <rewind/control/protocol.h>
#include <rewind/vmstate/qmp.h>
#include <rewind/vmstate/supervise.h>
#include <rewind/vmstate/vm.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "stores.h"

namespace rwd::vm {

// ---- Pure parts -------------------------------------------------------------

double DalyInterval(double cost_s, double mtbf_s) {
  if (!(cost_s > 0) || !(mtbf_s > 0)) return mtbf_s > 0 ? mtbf_s : 0;
  if (cost_s >= 2 * mtbf_s) return mtbf_s;
  const double r = cost_s / (2 * mtbf_s);
  return std::sqrt(2 * cost_s * mtbf_s) * (1 + std::sqrt(r) / 3 + r / 9) - cost_s;
}

void RollbackPlanner::AddCandidate(uint64_t id, const std::string& name) {
  for (const CheckpointInfo& c : good_) {
    if (c.id == id) return;
  }
  CheckpointInfo c;
  c.id = id;
  c.name = name;
  good_.push_back(c);
  std::sort(good_.begin(), good_.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.id < b.id; });
}

void RollbackPlanner::Forget(uint64_t id) {
  good_.erase(std::remove_if(good_.begin(), good_.end(),
                             [&](const CheckpointInfo& c) { return c.id == id; }),
              good_.end());
}

bool RollbackPlanner::Pick(uint64_t below, CheckpointInfo* target, std::string* why) {
  for (auto it = good_.rbegin(); it != good_.rend(); ++it) {
    if (it->id < below) {
      *target = *it;
      last_target_ = it->id;
      streak_++;
      return true;
    }
  }
  *why = last_target_ == 0 ? "there is no whole-VM checkpoint to go back to"
                           : "there is no older good whole-VM checkpoint to go back to";
  return false;
}

bool RollbackPlanner::OnFault(double t, CheckpointInfo* target, std::string* why) {
  const bool repeat = last_target_ != 0 && resumed_at_ >= 0 && t - resumed_at_ <= window_s_;
  if (!repeat) {
    streak_ = 0;
    return Pick(UINT64_MAX, target, why);
  }
  // The checkpoint the VM went back to led to this fault, and so may every
  // one taken since: none of them is good.
  const uint64_t bad = last_target_;
  good_.erase(std::remove_if(good_.begin(), good_.end(),
                             [&](const CheckpointInfo& c) { return c.id >= bad; }),
              good_.end());
  if (streak_ >= max_rollbacks_) {
    *why = fmt::format("the VM faulted again within {:g} s of each of {} rollback(s) in a row",
                       window_s_, streak_);
    return false;
  }
  return Pick(bad, target, why);
}

bool RollbackPlanner::OnRollbackFailed(CheckpointInfo* target, std::string* why) {
  const uint64_t failed = target->id;
  Forget(failed);
  if (streak_ >= max_rollbacks_) {
    *why = fmt::format("{} rollback(s) in a row did not bring the VM back", streak_);
    return false;
  }
  return Pick(failed, target, why);
}

void RollbackPlanner::OnResumed(double t) { resumed_at_ = t; }

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kTick{200};
constexpr double kStatusPollS = 1.0;     // query-status this often
constexpr double kRetryAfterFailS = 30;  // a failed checkpoint is retried this soon
constexpr double kResetGraceS = 10;      // guest resets ignored after our system_reset
constexpr const char* kNamePrefix = "sv-";
constexpr const char* kForensicPrefix = "sv-fault-";

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double Now() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}


bool StartsWith(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// ---- The event log -------------------------------------------------------------

class EventLog {
 public:
  Status Open(const std::string& path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd_ < 0) return Status::FromErrno(errno, "open the event log " + path);
    return Status::Ok();
  }
  ~EventLog() {
    if (fd_ >= 0) ::close(fd_);
  }
  void set_sink(std::function<void(const Json&)> sink) { sink_ = std::move(sink); }

  // Writes {"time": ..., "event": name, ...fields} as one line.
  void Emit(const std::string& name, Json fields = Json::object()) {
    Json ev{{"time", control::FormatTime(NowNs())}, {"event", name}};
    for (auto& [k, v] : fields.items()) ev[k] = std::move(v);
    std::string line = ev.dump() + "\n";
    const char* p = line.data();
    size_t n = line.size();
    while (n > 0 && fd_ >= 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) break;  // a full disk must not stop the supervisor
      p += w;
      n -= static_cast<size_t>(w);
    }
    if (sink_) sink_(ev);
  }

 private:
  int fd_ = -1;
  std::function<void(const Json&)> sink_;
};

// ---- QEMU as a child ---------------------------------------------------------

class QemuChild {
 public:
  ~QemuChild() { Kill(); }

  // Starts argv; the child gets its own process group (a Ctrl-C at the
  // terminal reaches the supervisor, which stops the guest in order) and
  // SIGTERM if the supervisor dies, so a VM never outlives it unowned.
  Status Start(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      int e = errno;
      ::close(p[0]);
      ::close(p[1]);
      return Status::FromErrno(e, "fork");
    }
    if (pid == 0) {
      ::close(p[0]);
      (void)::setpgid(0, 0);
      (void)::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      int null = ::open("/dev/null", O_RDONLY);
      if (null >= 0) {
        ::dup2(null, 0);
        if (null != 0) ::close(null);
      }
      // The supervisor's stdout carries its events: QEMU's goes to stderr.
      ::dup2(2, 1);
      ::execvp(args[0], args.data());
      int e = errno;
      ssize_t ignored = ::write(p[1], &e, sizeof e);
      (void)ignored;
      ::_exit(127);
    }
    ::close(p[1]);
    int e = 0;
    ssize_t n;
    do {
      n = ::read(p[0], &e, sizeof e);
    } while (n < 0 && errno == EINTR);
    ::close(p[0]);
    if (n == sizeof e) {
      int st;
      (void)::waitpid(pid, &st, 0);
      return Status::FromErrno(e, "start " + argv[0]);
    }
    pid_ = pid;
    return Status::Ok();
  }

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

  // Whether the child has exited (reaped); *how describes it.
  bool Exited(std::string* how) {
    if (pid_ <= 0) return true;
    int st;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == 0) return false;
    pid_ = -1;
    if (r < 0) {
      *how = "gone";
    } else if (WIFEXITED(st)) {
      *how = fmt::format("exited with status {}", WEXITSTATUS(st));
    } else if (WIFSIGNALED(st)) {
      *how = fmt::format("killed by signal {} ({})", WTERMSIG(st), ::strsignal(WTERMSIG(st)));
    } else {
      *how = "ended";
    }
    return true;
  }

  // Waits up to timeout for the child to exit; *how (may be null) as for
  // Exited.
  bool WaitExit(double timeout_s, std::string* how = nullptr) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    std::string ignored;
    while (!Exited(how != nullptr ? how : &ignored)) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return true;
  }

  void Kill() {
    if (pid_ <= 0) return;
    (void)::kill(pid_, SIGKILL);
    int st;
    (void)::waitpid(pid_, &st, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

// ---- The heartbeat: guest-ping over the guest agent's socket -----------------

class Heartbeat {
 public:
  Heartbeat(std::string path, double interval_s, double timeout_s)
      : path_(std::move(path)), interval_s_(interval_s), timeout_s_(timeout_s) {}
  ~Heartbeat() { Close(); }

  bool enabled() const { return !path_.empty(); }
  bool armed() const { return armed_; }

  // Pings when due and reads answers; never blocks.
  void Tick(double now) {
    if (!enabled()) return;
    if (fd_ < 0 && !Connect()) return;
    if (now - last_ping_ >= interval_s_) {
      static constexpr char kPing[] = "{\"execute\": \"guest-ping\"}\n";
      ssize_t w = ::send(fd_, kPing, sizeof kPing - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        Close();
        return;
      }
      last_ping_ = now;
    }
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        in_.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) Close();
      break;
    }
    size_t nl;
    while ((nl = in_.find('\n')) != std::string::npos) {
      Json j = Json::parse(in_.substr(0, nl), nullptr, false);
      in_.erase(0, nl + 1);
      if (j.is_object() && j.contains("return")) {
        last_answer_ = now;
        if (!armed_) {
          armed_ = true;
          first_answer_ = true;
        }
      }
    }
  }
  // True once, at the first answer ever.
  bool TakeFirstAnswer() {
    bool f = first_answer_;
    first_answer_ = false;
    return f;
  }
  // Silent for longer than the timeout since the last answer (only once
  // the agent has answered at all: it starts late in a booting guest).
  bool Overdue(double now) const { return armed_ && now - last_answer_ > timeout_s_; }
  double silent_s(double now) const { return now - last_answer_; }
  // An answer is overdue (more than two pings unanswered), though not yet
  // for the timeout.
  bool Suspect(double now) const {
    return armed_ && now - last_answer_ > std::max(2 * interval_s_, 1.0);
  }
  // The guest was replaced (a fresh QEMU): the silence starts now, on a
  // new connection.
  void Restart(double now) {
    last_answer_ = now;
    last_ping_ = 0;
    Close();
  }
  // The guest was stopped for paused_s (a checkpoint): that time does not
  // count as silence.
  void Paused(double paused_s, double now) {
    last_answer_ = std::min(last_answer_ + paused_s, now);
  }

 private:
  bool Connect() {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path_.size() >= sizeof a.sun_path) {
      ::close(fd);
      return false;
    }
    std::memcpy(a.sun_path, path_.c_str(), path_.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      return false;
    }
    fd_ = fd;
    in_.clear();
    return true;
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::string path_;
  double interval_s_, timeout_s_;
  int fd_ = -1;
  std::string in_;
  double last_ping_ = 0;
  double last_answer_ = 0;
  bool armed_ = false;
  bool first_answer_ = false;
};

// ---- The supervisor ----------------------------------------------------------

// Run states (query-status) in which the guest will not run on by itself.
bool FaultState(const std::string& st) {
  return st == "guest-panicked" || st == "io-error" || st == "watchdog" ||
         st == "internal-error";
}

struct Fault {
  std::string kind;    // panic, io-error, watchdog, shutdown, reset, qemu-exit, heartbeat
  std::string detail;  // for people
};

class Supervisor {
 public:
  explicit Supervisor(const SuperviseOptions& o)
      : o_(o),
        planner_(o.fault_window_s, o.max_rollbacks),
        heartbeat_(o.heartbeat_socket, o.heartbeat_interval_s, o.heartbeat_timeout_s) {}

  ~Supervisor() {
    watch_.reset();
    if (!rundir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(rundir_, ec);
    }
  }

  Status Run(SuperviseResult* out);

 private:
  bool owned() const { return !o_.qemu_command.empty(); }

  Status Setup();
  Status StartQemu(bool incoming);
  Status ConnectWatch(double timeout_s);
  // Stops an owned QEMU: QMP quit, then SIGKILL.
  void QuitQemu();
  double NextInterval() const;
  double Mtbf() const;

  // One pass of the loop; sets *fault when it found one.
  Status Watch(std::optional<Fault>* fault, bool* shutdown);
  Status ClassifyEvent(const Json& ev, std::optional<Fault>* fault, bool* shutdown);
  // *fault is set when the guest faulted during the checkpoint.
  Status TakeCheckpoint(std::optional<Fault>* fault);
  Status PruneStores();
  Status HandleFault(const Fault& f);
  void Forensic(const Fault& f);
  Status RollBack(const CheckpointInfo& target, Json* detail);
  Status GiveUp(const std::string& why);
  Status Stop(bool guest_shutdown);
  std::string UniqueName(const char* prefix);
  Status QueryStatus(std::string* st);

  const SuperviseOptions& o_;
  std::vector<std::string> dirs_;
  std::string cmd_socket_, watch_socket_, rundir_;
  EventLog log_;
  QemuChild qemu_;
  std::unique_ptr<QmpClient> watch_;
  RollbackPlanner planner_;
  Heartbeat heartbeat_;
  SuperviseResult result_;

  double started_ = 0;
  double next_checkpoint_ = 0;
  double last_status_poll_ = 0;
  double cost_s_ = -1;          // the last checkpoint's downtime, seconds
  bool expect_exit_ = false;    // an owned QEMU is being quit on purpose
  double ignore_resets_until_ = 0;  // after our own system_reset
  std::vector<std::string> names_used_;
};

Status Supervisor::QueryStatus(std::string* st) {
  if (!watch_) return Status::Aborted("QMP connection closed");
  Json ret;
  Status s = watch_->Execute("query-status", nullptr, &ret, o_.timeout);
  if (!s.ok()) return s;
  *st = ret.value("status", "");
  return Status::Ok();
}

std::string Supervisor::UniqueName(const char* prefix) {
  std::string base = prefix + detail::UtcStamp(NowNs());
  std::string name = base;
  for (int k = 2; std::find(names_used_.begin(), names_used_.end(), name) != names_used_.end();
       k++) {
    name = fmt::format("{}-{}", base, k);
  }
  names_used_.push_back(name);
  return name;
}

Status Supervisor::Setup() {
  Status s = detail::CheckDirs(o_.dirs, &dirs_);
  if (!s.ok()) return s;
  if (o_.max_rollbacks < 1) return Status::InvalidArgument("--max-rollbacks must be at least 1");
  if (!owned() && o_.qmp_socket.empty()) {
    return Status::InvalidArgument(
        "give either a QEMU command after '--' (supervise starts and owns QEMU) or --qmp SOCKET "
        "(supervise attaches to a running QEMU)");
  }
  for (const std::string& a : o_.qemu_command) {
    if (a == "-daemonize" || a == "--daemonize") {
      return Status::InvalidArgument("the QEMU command must not use -daemonize: supervise owns the process");
    }
    if (a == "-incoming" || a == "--incoming") {
      return Status::InvalidArgument("the QEMU command must not use -incoming: supervise adds it when it restores");
    }
  }
  // Every store must be served: a clear error now rather than at the first
  // checkpoint.
  std::vector<CheckpointInfo> cps;
  for (const std::string& dir : dirs_) {
    if (s = detail::ListCheckpoints(dir, false, &cps, o_.timeout); !s.ok()) return s;
  }
  // The good candidates: the whole-VM checkpoints already there (the first
  // store's list is the VM's; restore checks the others).
  if (s = detail::ListCheckpoints(dirs_[0], false, &cps, o_.timeout); !s.ok()) return s;
  for (const CheckpointInfo& cp : cps) {
    if (cp.kind == "vm" && !StartsWith(cp.name, kForensicPrefix)) {
      planner_.AddCandidate(cp.id, cp.name);
    }
  }

  const std::string log = o_.event_log.empty() ? dirs_[0] + "/supervise.jsonl" : o_.event_log;
  if (s = log_.Open(log); !s.ok()) return s;
  log_.set_sink(o_.on_event);

  if (owned()) {
    const char* base = std::getenv("XDG_RUNTIME_DIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                       "/rewind-supervise-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) {
      return Status::FromErrno(errno, "make a runtime directory like " + tmpl);
    }
    rundir_ = buf.data();
    cmd_socket_ = o_.qmp_socket.empty() ? rundir_ + "/qmp.sock" : o_.qmp_socket;
    watch_socket_ = rundir_ + "/events.sock";
  } else {
    cmd_socket_ = o_.qmp_socket;
    watch_socket_ = o_.qmp_socket;
  }
  Json dirs = dirs_;
  log_.Emit("start", {{"dirs", dirs},
                      {"mode", owned() ? "owned" : "attached"},
                      {"interval", o_.auto_interval ? Json("auto") : Json(o_.interval_s)},
                      {"checkpoint_mode", o_.live ? "live" : "stop"},
                      {"fault_window_s", o_.fault_window_s},
                      {"max_rollbacks", o_.max_rollbacks},
                      {"candidates", cps.size()},
                      {"event_log", log}});
  return Status::Ok();
}

Status Supervisor::StartQemu(bool incoming) {
  for (const std::string& p : {cmd_socket_, watch_socket_}) ::unlink(p.c_str());
  std::vector<std::string> argv;
  argv.push_back(o_.qemu_command[0]);
  // Ours first, so that the user's own -action wins.
  for (const std::string& a :
       {std::string("-qmp"), "unix:" + watch_socket_ + ",server=on,wait=off", std::string("-qmp"),
        "unix:" + cmd_socket_ + ",server=on,wait=off", std::string("-no-shutdown"),
        std::string("-action"), std::string("panic=pause")}) {
    argv.push_back(a);
  }
  argv.insert(argv.end(), o_.qemu_command.begin() + 1, o_.qemu_command.end());
  if (incoming) {
    argv.push_back("-incoming");
    argv.push_back("defer");
  }
  Status s = qemu_.Start(argv);
  if (!s.ok()) return s;
  expect_exit_ = false;
  log_.Emit("qemu-started", {{"pid", qemu_.pid()}, {"incoming", incoming}});
  return ConnectWatch(static_cast<double>(o_.timeout.count()) / 1000);
}

Status Supervisor::ConnectWatch(double timeout_s) {
  watch_.reset();
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  Status s;
  for (;;) {
    std::string how;
    if (owned() && qemu_.Exited(&how)) {
      return Status::IOError("QEMU " + how + " before its QMP socket answered (its messages are above)");
    }
    s = QmpClient::Connect(watch_socket_, o_.timeout, &watch_);
    if (s.ok()) return s;
    if (s.code() != Status::Code::kNotFound || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return s.WithPrefix("QEMU's QMP socket " + watch_socket_);
}

void Supervisor::QuitQemu() {
  if (!owned() || !qemu_.running()) return;
  expect_exit_ = true;
  if (watch_) (void)watch_->Execute("quit", nullptr, nullptr, milliseconds(5000));
  watch_.reset();
  if (!qemu_.WaitExit(10)) qemu_.Kill();
}

// The mean time between faults: the uptime per fault seen; before the
// first, the larger of --mtbf and the uptime.
double Supervisor::Mtbf() const {
  const double up = Now() - started_;
  return result_.faults == 0 ? std::max(o_.mtbf_s, up) : up / static_cast<double>(result_.faults);
}

double Supervisor::NextInterval() const {
  if (!o_.auto_interval) return o_.interval_s;
  const double cost = cost_s_ > 0 ? cost_s_ : 1.0;
  return std::clamp(DalyInterval(cost, Mtbf()), o_.min_interval_s, o_.max_interval_s);
}

Status Supervisor::ClassifyEvent(const Json& ev, std::optional<Fault>* fault, bool* shutdown) {
  const std::string name = ev.value("event", "");
  const Json data = ev.contains("data") && ev["data"].is_object() ? ev["data"] : Json::object();
  if (name == "GUEST_PANICKED" || name == "GUEST_CRASHLOADED") {
    std::string info;
    if (data.contains("info")) info = " " + data["info"].dump();
    *fault = Fault{"panic", "the guest panicked (" + name + ")" + info};
  } else if (name == "BLOCK_IO_ERROR") {
    std::string where = data.value("device", "");
    if (where.empty()) where = data.value("node-name", "?");
    *fault = Fault{"io-error", fmt::format("I/O error on {} ({} {}, action {}{})", where,
                                           data.value("operation", "?"),
                                           data.value("reason", "?"), data.value("action", "?"),
                                           data.value("nospace", false) ? ", no space" : "")};
  } else if (name == "WATCHDOG") {
    *fault = Fault{"watchdog", "the guest's watchdog fired (action " +
                                   data.value("action", "?") + ")"};
  } else if (name == "SHUTDOWN") {
    const bool guest = data.value("guest", false);
    const std::string reason = data.value("reason", "");
    if (reason == "guest-panic") {
      *fault = Fault{"panic", "the guest panicked (SHUTDOWN, reason guest-panic)"};
    } else if (guest) {
      if (o_.shutdown_is_fault) {
        *fault = Fault{"shutdown", "the guest powered itself off (" + reason + ")"};
      } else {
        *shutdown = true;
      }
    }
    // A host-initiated shutdown ends QEMU: seen as its exit.
  } else if (name == "RESET") {
    // SeaBIOS resets the machine once more itself after a host reset: not
    // the guest's doing.
    if (data.value("guest", false) && o_.reset_is_fault && Now() >= ignore_resets_until_) {
      *fault = Fault{"reset", "the guest reset itself (" + data.value("reason", "") + ")"};
    }
  }
  return Status::Ok();
}

Status Supervisor::Watch(std::optional<Fault>* fault, bool* shutdown) {
  // Events, for up to one tick.
  if (watch_) {
    Json ev;
    Status s = watch_->NextEvent(kTick, &ev);
    if (!ev.is_null()) {
      return ClassifyEvent(ev, fault, shutdown);
    }
    if (!s.ok()) {
      watch_.reset();
      if (!owned()) {
        return Status::Aborted("the QMP connection to " + watch_socket_ +
                               " closed: QEMU is gone (an attached supervisor cannot start it again)");
      }
    }
  } else {
    std::this_thread::sleep_for(kTick);
  }
  const double now = Now();
  if (owned()) {
    std::string how;
    if (qemu_.Exited(&how)) {
      if (expect_exit_) return Status::Ok();
      *fault = Fault{"qemu-exit", "QEMU " + how};
      return Status::Ok();
    }
    if (!watch_) {
      // The monitor closed but QEMU still runs: it is on its way out.
      if (!qemu_.WaitExit(5, &how)) {
        *fault = Fault{"qemu-exit", "QEMU closed its QMP monitor and did not exit"};
        return Status::Ok();
      }
      if (expect_exit_) return Status::Ok();
      *fault = Fault{"qemu-exit", "QEMU " + how};
      return Status::Ok();
    }
  }
  heartbeat_.Tick(now);
  if (heartbeat_.TakeFirstAnswer()) log_.Emit("heartbeat", {{"state", "answering"}});
  if (heartbeat_.Overdue(now)) {
    *fault = Fault{"heartbeat", fmt::format("the guest agent has not answered for {:.0f} s",
                                            heartbeat_.silent_s(now))};
    return Status::Ok();
  }
  if (now - last_status_poll_ >= kStatusPollS) {
    last_status_poll_ = now;
    std::string st;
    if (QueryStatus(&st).ok()) {
      if (FaultState(st)) {
        *fault = Fault{st == "guest-panicked" ? "panic" : st, "the VM is " + st};
      } else if (st == "shutdown") {
        if (o_.shutdown_is_fault) {
          *fault = Fault{"shutdown", "the guest powered itself off"};
        } else {
          *shutdown = true;
        }
      }
    }
  }
  return Status::Ok();
}

Status Supervisor::TakeCheckpoint(std::optional<Fault>* fault) {
  const std::string name = UniqueName(kNamePrefix);
  VmCheckpointOptions co;
  co.qmp_socket = cmd_socket_;
  co.dirs = dirs_;
  co.name = name;
  co.live = o_.live;
  co.timeout = o_.timeout;
  co.supervised = true;
  std::string fault_seen;
  co.fault_seen = &fault_seen;
  VmCheckpointResult r;
  if (!owned()) watch_.reset();  // the one monitor is the command's meanwhile
  const double t0 = Now();
  Status s = VmCheckpoint(co, &r);
  if (!owned()) {
    if (Status c = ConnectWatch(static_cast<double>(o_.timeout.count()) / 1000); !c.ok()) return c;
  }
  heartbeat_.Paused(Now() - t0, Now());
  if (!s.ok()) {
    result_.checkpoint_failures++;
    log_.Emit("checkpoint-failed", {{"name", name}, {"error", s.ToString()}});
    if (!fault_seen.empty() && (fault_seen != "SHUTDOWN" || o_.shutdown_is_fault)) {
      // The guest faulted while it was saved: a fault like any other (the
      // event itself may have gone to the command's connection only).
      *fault = Fault{fault_seen == "WATCHDOG" ? "watchdog"
                     : fault_seen == "SHUTDOWN" ? "shutdown"
                                                : "panic",
                     "the guest faulted during a checkpoint (" + fault_seen + ")"};
      return Status::Ok();
    }
    // A checkpoint cut short (QEMU or a plugin killed) must not leave the
    // guest paused.
    std::string st;
    if (QueryStatus(&st).ok() && st == "paused") {
      Status c = watch_->Execute("cont", nullptr, nullptr, o_.timeout);
      log_.Emit("resumed", {{"after", "checkpoint-failed"}, {"ok", c.ok()}});
    }
    return Status::Ok();
  }
  result_.checkpoints++;
  cost_s_ = r.downtime_ms / 1000;
  Json lsns = Json::object();
  for (const VmDisk& d : r.disks) lsns[d.dir] = d.checkpoint.lsn;
  log_.Emit("checkpoint", {{"name", r.name},
                           {"mode", r.live ? "live" : "stop"},
                           {"lsn", lsns},
                           {"downtime_ms", r.downtime_ms},
                           {"seconds", r.seconds},
                           {"state_new_bytes", r.state.new_bytes},
                           {"next_s", NextInterval()},
                           {"mtbf_s", Mtbf()}});
  planner_.AddCandidate(r.disks.empty() ? 0 : r.disks[0].checkpoint.id, r.name);
  return PruneStores();
}

// Retention.  A dry run first, with the guest running; only when it would
// drop something does the real prune run, and since the plugin runs one
// only while no client may write, with the guest paused and QEMU's disks
// drained (`stop`), vouched for as quiesced.
Status Supervisor::PruneStores() {
  const PrunePolicy& p = o_.retention;
  if (p.keep_last == 0 && p.keep_within_ns == 0 && p.keep_daily == 0) return Status::Ok();
  if (!watch_) return Status::Ok();
  auto request = [&](bool dry_run) {
    Json req = control::MakeRequest(control::Op::kPrune);
    req["keep_last"] = p.keep_last;
    req["keep_within_ns"] = p.keep_within_ns;
    req["keep_daily"] = p.keep_daily;
    if (dry_run) {
      req["dry_run"] = true;
    } else {
      req["quiesced"] = true;
    }
    return req;
  };
  // A dry run first, with the guest running: most of the time there is
  // nothing to drop, and then no pause.
  bool any = false;
  for (const std::string& dir : dirs_) {
    Json result;
    PruneResult pr;
    Status s = detail::Call(dir, request(true), &result, o_.timeout);
    if (s.ok()) s = control::FromJson(result, &pr);
    if (!s.ok()) {
      log_.Emit("prune", {{"dropped", Json::array()}, {"error", s.ToString()}});
      return Status::Ok();
    }
    any |= !pr.dropped.empty();
  }
  if (!any) return Status::Ok();
  std::string st;
  if (!QueryStatus(&st).ok() || st != "running") return Status::Ok();
  const auto t0 = Clock::now();
  if (Status s = watch_->Execute("stop", nullptr, nullptr, o_.timeout); !s.ok()) return Status::Ok();
  Json dropped = Json::array();
  std::string error;
  for (size_t i = 0; i < dirs_.size(); i++) {
    Json result;
    Status s = detail::Call(dirs_[i], request(false), &result, o_.timeout);
    PruneResult pr;
    if (s.ok()) s = control::FromJson(result, &pr);
    if (!s.ok()) {
      error = s.ToString();
      break;
    }
    if (i == 0) {
      for (const CheckpointInfo& c : pr.dropped) {
        planner_.Forget(c.id);
        dropped.push_back(c.name);
      }
    }
  }
  Status c = watch_->Execute("cont", nullptr, nullptr, o_.timeout);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  Json ev{{"dropped", dropped}, {"downtime_ms", ms}};
  if (!error.empty()) ev["error"] = error;
  if (!c.ok()) ev["resume_error"] = c.ToString();
  log_.Emit("prune", std::move(ev));
  return Status::Ok();
}

// A checkpoint of the faulty state, pinned: whole-VM when QEMU can still
// save its state (running or paused), else of the disks alone.  Best
// effort: a failure is logged and the rollback goes on (it is undoable:
// its before-rollback checkpoint keeps the faulty disks too).
void Supervisor::Forensic(const Fault& f) {
  const std::string name = UniqueName(kForensicPrefix);
  std::string st;
  if (watch_ && QueryStatus(&st).ok() && (st == "running" || st == "paused")) {
    if (st == "running") (void)watch_->Execute("stop", nullptr, nullptr, o_.timeout);
    VmCheckpointOptions co;
    co.qmp_socket = cmd_socket_;
    co.dirs = dirs_;
    co.name = name;
    co.timeout = o_.timeout;
    co.pinned = true;
    co.supervised = true;
    VmCheckpointResult r;
    if (!owned()) watch_.reset();
    Status s = VmCheckpoint(co, &r);
    if (!owned()) (void)ConnectWatch(static_cast<double>(o_.timeout.count()) / 1000);
    if (s.ok()) {
      Json lsns = Json::object();
      for (const VmDisk& d : r.disks) lsns[d.dir] = d.checkpoint.lsn;
      log_.Emit("forensic", {{"name", name}, {"kind", "vm"}, {"lsn", lsns}, {"fault", f.kind}});
      return;
    }
    log_.Emit("forensic-failed", {{"name", name}, {"kind", "vm"}, {"error", s.ToString()}});
  }
  Json lsns = Json::object();
  for (const std::string& dir : dirs_) {
    Json req = control::MakeRequest(control::Op::kCheckpoint);
    req["name"] = name;
    req["pinned"] = true;
    req["supervised"] = true;
    Json result;
    CheckpointInfo cp;
    Status s = detail::Call(dir, req, &result, o_.timeout);
    if (s.ok()) s = control::FromJson(result, &cp);
    if (!s.ok()) {
      log_.Emit("forensic-failed", {{"name", name}, {"kind", "disk"}, {"error", s.ToString()}});
      return;
    }
    lsns[dir] = cp.lsn;
  }
  log_.Emit("forensic", {{"name", name}, {"kind", "disk"}, {"lsn", lsns}, {"fault", f.kind}});
}

Status Supervisor::RollBack(const CheckpointInfo& target, Json* detail) {
  const auto t0 = Clock::now();
  if (owned()) {
    QuitQemu();
    if (Status s = StartQemu(/*incoming=*/true); !s.ok()) return s;
    VmRestoreOptions ro;
    ro.qmp_socket = cmd_socket_;
    ro.dirs = dirs_;
    ro.name = target.name;
    ro.timeout = o_.timeout;
    VmRestoreResult r;
    if (Status s = VmRestore(ro, &r); !s.ok()) return s;
    Json lsns = Json::object(), undo = Json::object();
    for (size_t i = 0; i < r.disks.size(); i++) {
      lsns[r.disks[i].dir] = r.disks[i].checkpoint.lsn;
      if (i < r.rollbacks.size()) undo[r.disks[i].dir] = r.rollbacks[i].before.name;
    }
    *detail = Json{{"to", target.name}, {"lsn", lsns}, {"undo", undo}, {"how", "restore"}};
  } else {
    // Attached: the disks go back, the guest reboots from them.
    std::string st;
    if (Status s = QueryStatus(&st); !s.ok()) return s;
    if (st == "running") {
      if (Status s = watch_->Execute("stop", nullptr, nullptr, o_.timeout); !s.ok()) return s;
    }
    Json lsns = Json::object(), undo = Json::object();
    for (const std::string& dir : dirs_) {
      Json req = control::MakeRequest(control::Op::kRollback);
      req["to"] = target.name;
      req["quiesced"] = true;
      Json result;
      RollbackResult rb;
      Status s = detail::Call(dir, req, &result, o_.timeout);
      if (s.ok()) s = control::FromJson(result, &rb);
      if (!s.ok()) return s;
      lsns[dir] = rb.point.lsn;
      undo[dir] = rb.before.name;
    }
    if (Status s = watch_->Execute("system_reset", nullptr, nullptr, o_.timeout); !s.ok()) {
      return s;
    }
    (void)watch_->WaitEvent("RESET", o_.timeout, nullptr);
    // cont is refused until the reset has been processed.
    Status s;
    for (int i = 0; i < 50; i++) {
      s = watch_->Execute("cont", nullptr, nullptr, o_.timeout);
      if (s.ok()) break;
      std::this_thread::sleep_for(milliseconds(100));
    }
    if (!s.ok()) return s;
    // What the faulty run left queued is history now.
    std::deque<Json> stale;
    (void)watch_->TakeEvents(&stale);
    ignore_resets_until_ = Now() + kResetGraceS;
    *detail = Json{{"to", target.name}, {"lsn", lsns}, {"undo", undo}, {"how", "disk-rollback-and-reset"}};
  }
  (*detail)["seconds"] = std::chrono::duration<double>(Clock::now() - t0).count();
  return Status::Ok();
}

Status Supervisor::HandleFault(const Fault& f) {
  const double t_fault = Now();
  result_.faults++;
  log_.Emit("fault", {{"kind", f.kind}, {"detail", f.detail}});
  Forensic(f);
  CheckpointInfo target;
  std::string why;
  if (!planner_.OnFault(t_fault, &target, &why)) return GiveUp(why + "; last fault: " + f.detail);
  for (;;) {
    Json detail;
    Status s = RollBack(target, &detail);
    if (s.ok()) {
      result_.rollbacks++;
      detail["attempt"] = planner_.streak();
      log_.Emit("rollback", detail);
      break;
    }
    log_.Emit("rollback-failed", {{"to", target.name}, {"error", s.ToString()}});
    if (!planner_.OnRollbackFailed(&target, &why)) {
      return GiveUp(why + "; last error: " + s.ToString());
    }
  }
  const double now = Now();
  planner_.OnResumed(now);
  heartbeat_.Restart(now);
  last_status_poll_ = now;
  log_.Emit("running", {{"since_fault_s", now - t_fault}});
  next_checkpoint_ = now + NextInterval();
  return Status::Ok();
}

Status Supervisor::GiveUp(const std::string& why) {
  // Leave the VM stopped: an owned QEMU quits (the stores keep the faulty
  // state and its forensic checkpoint); an attached one is paused.
  if (owned()) {
    QuitQemu();
  } else if (watch_) {
    (void)watch_->Execute("stop", nullptr, nullptr, o_.timeout);
  }
  result_.end = SuperviseResult::End::kGaveUp;
  result_.reason = why;
  log_.Emit("give-up", {{"reason", why}});
  return Status::Ok();
}

Status Supervisor::Stop(bool guest_shutdown) {
  if (owned() && qemu_.running()) {
    expect_exit_ = true;
    std::string st;
    if (!guest_shutdown && watch_ && QueryStatus(&st).ok() && st == "running") {
      // Give the guest the chance to power off cleanly.
      (void)watch_->Execute("system_powerdown", nullptr, nullptr, o_.timeout);
      const auto deadline = Clock::now() + std::chrono::duration<double>(o_.stop_timeout_s);
      while (Clock::now() < deadline) {
        Json ev;
        if (!watch_->NextEvent(kTick, &ev).ok()) break;
        if (ev.is_object() && ev.value("event", "") == "SHUTDOWN") break;
      }
    }
    QuitQemu();
  }
  result_.end = guest_shutdown ? SuperviseResult::End::kGuestShutdown : SuperviseResult::End::kStopped;
  log_.Emit("stop", {{"reason", guest_shutdown ? "the guest powered off" : "asked to stop"},
                     {"checkpoints", result_.checkpoints},
                     {"faults", result_.faults},
                     {"rollbacks", result_.rollbacks}});
  return Status::Ok();
}

Status Supervisor::Run(SuperviseResult* out) {
  Status s = Setup();
  if (!s.ok()) return s;
  started_ = Now();
  if (owned()) {
    s = StartQemu(/*incoming=*/false);
  } else {
    s = ConnectWatch(static_cast<double>(o_.timeout.count()) / 1000);
  }
  if (!s.ok()) {
    log_.Emit("error", {{"error", s.ToString()}});
    return s;
  }
  heartbeat_.Restart(Now());
  next_checkpoint_ = Now() + NextInterval();
  for (;;) {
    if (o_.stop_requested && o_.stop_requested()) {
      s = Stop(false);
      break;
    }
    std::optional<Fault> fault;
    bool shutdown = false;
    s = Watch(&fault, &shutdown);
    if (!s.ok()) {
      log_.Emit("error", {{"error", s.ToString()}});
      break;
    }
    if (shutdown) {
      s = Stop(true);
      break;
    }
    if (fault) {
      s = HandleFault(*fault);
      if (!s.ok()) {
        log_.Emit("error", {{"error", s.ToString()}});
        break;
      }
      if (result_.end == SuperviseResult::End::kGaveUp) break;
      continue;
    }
    if (Now() >= next_checkpoint_) {
      std::string st;
      // Only a running guest is checkpointed on schedule (a paused one is
      // someone else's business, e.g. a user's own 'rewind vm' command),
      // and, with a heartbeat, only one that answered lately: a guest that
      // has gone silent may be hung, and a checkpoint of it would be a bad
      // one to go back to.
      const bool healthy = !heartbeat_.Suspect(Now());
      if (healthy && QueryStatus(&st).ok() && st == "running") {
        const uint64_t failures = result_.checkpoint_failures;
        std::optional<Fault> during;
        if (s = TakeCheckpoint(&during); !s.ok()) {
          log_.Emit("error", {{"error", s.ToString()}});
          break;
        }
        if (during) {
          if (s = HandleFault(*during); !s.ok()) {
            log_.Emit("error", {{"error", s.ToString()}});
            break;
          }
          if (result_.end == SuperviseResult::End::kGaveUp) break;
          continue;
        }
        const double next = result_.checkpoint_failures > failures
                                ? std::min(NextInterval(), kRetryAfterFailS)
                                : NextInterval();
        next_checkpoint_ = Now() + next;
      } else {
        next_checkpoint_ = Now() + 1;
      }
    }
  }
  if (!s.ok() && owned()) QuitQemu();
  *out = result_;
  return s;
}

}  // namespace

Status Supervise(const SuperviseOptions& options, SuperviseResult* out) {
  Supervisor sv(options);
  return sv.Run(out);
}

}  // namespace rwd::vm
