#include "guest_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "support/nbd_rewind.h"

namespace rwd::test::guest {

namespace {

constexpr const char* kQemu = "qemu-system-x86_64";
constexpr char kRecordMagic[8] = {'R', 'W', 'G', 'U', 'E', 'S', 'T', '1'};
constexpr char kStatusMagic[8] = {'R', 'W', 'G', 'S', 'T', 'A', 'T', '1'};
constexpr char kHangMagic[8] = {'R', 'W', 'G', 'H', 'A', 'N', 'G', '!'};

uint32_t Le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

void PutLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

std::string Tail(const std::string& text, size_t max = 3000) {
  if (text.size() <= max) return text;
  return "...\n" + text.substr(text.size() - max);
}

// "KEY=<decimal>" in line; false when absent or not a number.
bool Field(std::string_view line, std::string_view key, uint32_t* out) {
  // " KEY=" anywhere, or "KEY=" at the start.
  std::string pat = " " + std::string(key) + "=";
  size_t pos = line.find(pat);
  if (pos == std::string_view::npos) {
    pat.erase(0, 1);
    if (line.substr(0, pat.size()) != pat) return false;
    pos = 0;
  }
  pos += pat.size();
  uint64_t v = 0;
  size_t digits = 0;
  while (pos < line.size() && line[pos] >= '0' && line[pos] <= '9') {
    v = v * 10 + static_cast<uint64_t>(line[pos] - '0');
    if (v > 0xffffffffull) return false;
    ++pos;
    ++digits;
  }
  if (digits == 0) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::string Join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

// fork+exec of argv (argv[0] looked up in PATH), stdin /dev/null, stdout
// and stderr appended to log.  The child gets SIGKILL when the thread that
// forked it ends (PR_SET_PDEATHSIG), so QEMU cannot outlive a crashed test.
pid_t SpawnTied(const std::vector<std::string>& argv, const std::string& log) {
  std::string program = argv.at(0);
  if (program.find('/') == std::string::npos) {
    program = FindInPath(program);
    if (program.empty()) throw std::runtime_error(argv[0] + ": not found in PATH");
  }
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) throw std::runtime_error(fmt::format("open {}: {}", log, std::strerror(errno)));
  int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    close(out);
    throw std::runtime_error("open /dev/null failed");
  }
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(out);
    close(in);
    throw std::runtime_error(fmt::format("fork: {}", std::strerror(e)));
  }
  if (pid == 0) {  // async-signal-safe calls only until exec
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    signal(SIGPIPE, SIG_DFL);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    execv(program.c_str(), cargv.data());
    static const char msg[] = "exec failed\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(127);
  }
  close(out);
  close(in);
  return pid;
}

}  // namespace

void RequireQemuOrSkip() {
  RequireNbdkitOrSkip();
  if (FindInPath(kQemu).empty()) {
    std::fprintf(stderr,
                 "SKIPPED: %s is not installed (not found in PATH); the guest tests need it "
                 "(Debian package qemu-system-x86)\n",
                 kQemu);
    std::fflush(nullptr);
    std::exit(kSkipExitCode);
  }
  INFO("guest image: " << kImagePath);
  REQUIRE(access(kImagePath, R_OK) == 0);
}

// ------------------------------------------------------------ disk content

std::string GuestRecord::ToString() const {
  if (hang_marker) return "hang marker";
  if (!valid) return "invalid record";
  return fmt::format("record counter={} disk={}", counter, disk_index);
}

std::string GuestStatus::ToString() const {
  if (!valid) return "invalid status sector";
  return fmt::format(
      "status mismatches={} (last: ram={} d0={} d1={}) boots={} ram_errors={} (last at C={})",
      mismatches, last_ram, last_d0, last_d1, boots, ram_errors, ram_error_at);
}

GuestRecord ParseRecord(const uint8_t* s) {
  GuestRecord r;
  r.counter = Le32(s + 8);
  r.disk_index = Le32(s + 16);
  r.valid = std::memcmp(s, kRecordMagic, 8) == 0 && Le32(s + 12) == ~r.counter &&
            r.disk_index <= 1;
  r.hang_marker = std::memcmp(s, kHangMagic, 8) == 0;
  return r;
}

std::vector<uint8_t> MakeBadRecord(BadRecord kind) {
  std::vector<uint8_t> s(kSectorSize, 0);
  switch (kind) {
    case BadRecord::kGarbage:
      // No magic of the guest's: neither a record nor the hang marker.
      for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<uint8_t>("garbage!"[i % 8]);
      break;
    case BadRecord::kHangMarker:
      std::memcpy(s.data(), kHangMagic, 8);
      break;
  }
  return s;
}

std::vector<uint8_t> MakeRecord(uint32_t counter, uint32_t disk_index) {
  std::vector<uint8_t> s(kSectorSize, 0);
  std::memcpy(s.data(), kRecordMagic, 8);
  PutLe32(s.data() + 8, counter);
  PutLe32(s.data() + 12, ~counter);
  PutLe32(s.data() + 16, disk_index);
  return s;
}

GuestStatus ParseStatus(const uint8_t* s) {
  GuestStatus st;
  st.valid = std::memcmp(s, kStatusMagic, 8) == 0;
  st.mismatches = Le32(s + 8);
  st.last_ram = Le32(s + 12);
  st.last_d0 = Le32(s + 16);
  st.last_d1 = Le32(s + 20);
  st.boots = Le32(s + 24);
  st.ram_errors = Le32(s + 28);
  st.ram_error_at = Le32(s + 32);
  return st;
}

namespace {

std::unique_ptr<NbdClient> ConnectExport(const std::string& nbd_socket,
                                         const std::string& export_name) {
  NbdClientOptions o;
  o.export_name = export_name;
  return NbdClient::Connect(nbd_socket, o);
}

}  // namespace

GuestRecord ReadRecord(const std::string& nbd_socket, const std::string& export_name) {
  auto c = ConnectExport(nbd_socket, export_name);
  auto s = c->Pread(kSectorSize, kRecordLba * kSectorSize);
  return ParseRecord(s.data());
}

void WriteRecord(const std::string& nbd_socket, uint32_t counter, uint32_t disk_index,
                 const std::string& export_name) {
  auto c = ConnectExport(nbd_socket, export_name);
  c->Pwrite(MakeRecord(counter, disk_index), kRecordLba * kSectorSize);
  c->Flush();
}

void WriteBadRecord(const std::string& nbd_socket, BadRecord kind,
                    const std::string& export_name) {
  auto c = ConnectExport(nbd_socket, export_name);
  c->Pwrite(MakeBadRecord(kind), kRecordLba * kSectorSize);
  c->Flush();
}

GuestStatus ReadStatus(const std::string& nbd_socket, const std::string& export_name) {
  auto c = ConnectExport(nbd_socket, export_name);
  auto s = c->Pread(kSectorSize, kStatusLba * kSectorSize);
  return ParseStatus(s.data());
}

void InstallImage(const std::string& nbd_socket, const std::string& export_name) {
  std::string image = ReadFile(kImagePath);
  if (image.empty() || image.size() % kSectorSize != 0 ||
      image.size() > kRecordLba * kSectorSize) {
    throw std::runtime_error(
        fmt::format("{}: not a guest image ({} bytes)", kImagePath, image.size()));
  }
  auto c = ConnectExport(nbd_socket, export_name);
  c->Pwrite(image.data(), image.size(), 0);
  c->Flush();
}

// ------------------------------------------------------------- serial log

std::optional<Tick> SerialLog::LastTick() const {
  if (ticks.empty()) return std::nullopt;
  return ticks.back();
}

std::string SerialLog::Tail(size_t n) const {
  std::string out;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) {
    out += lines[i] + "\n";
  }
  return out;
}

SerialLog ParseSerial(std::string_view text) {
  SerialLog log;
  // Only complete lines: the guest may be in the middle of one.
  size_t end = text.rfind('\n');
  if (end == std::string_view::npos) return log;
  log.lines = NonEmptyLines(text.substr(0, end + 1));
  for (const auto& line : log.lines) {
    std::string_view l = line;
    if (StartsWith(l, "TICK ")) {
      Tick t;
      if (Field(l, "C", &t.counter) && Field(l, "mm", &t.mismatches) &&
          Field(l, "ram", &t.ram_errors)) {
        log.ticks.push_back(t);
        continue;
      }
    } else if (StartsWith(l, "MISMATCH ")) {
      Mismatch m;
      if (Field(l, "ram", &m.ram) && Field(l, "d0", &m.d0) && Field(l, "d1", &m.d1) &&
          Field(l, "mm", &m.mismatches)) {
        log.mismatches.push_back(m);
        continue;
      }
    } else if (StartsWith(l, "BOOT ")) {
      uint32_t b = 0;
      if (Field(l, "boots", &b)) {
        log.boots.push_back(b);
        continue;
      }
    } else if (StartsWith(l, "RAMBAD ")) {
      log.ram_bad.push_back(line);
      continue;
    } else if (StartsWith(l, "DISKERR ")) {
      log.disk_errors.push_back(line);
      continue;
    } else if (StartsWith(l, "PANIC ")) {
      log.panics.push_back(line);
      continue;
    } else if (StartsWith(l, "HANG ")) {
      log.hangs.push_back(line);
      continue;
    }
    log.unknown.push_back(line);
  }
  return log;
}

// ------------------------------------------------------------------ disks

std::unique_ptr<GuestDisk> GuestDisk::Start(const std::string& workdir, uint64_t size,
                                            std::vector<std::string> extra_params,
                                            std::vector<std::string> nbdkit_flags) {
  std::unique_ptr<GuestDisk> d(new GuestDisk());
  std::filesystem::create_directories(workdir);
  d->workdir_ = workdir;
  d->store_dir_ = workdir + "/store";
  d->size_ = size;
  d->extra_params_ = std::move(extra_params);
  d->nbdkit_flags_ = std::move(nbdkit_flags);
  d->Restart();
  return d;
}

std::unique_ptr<GuestDisk> GuestDisk::StartNamed(const std::string& workdir,
                                                 std::vector<Named> disks,
                                                 std::vector<std::string> extra_params) {
  if (disks.empty()) throw std::runtime_error("GuestDisk::StartNamed: no disks");
  std::unique_ptr<GuestDisk> d(new GuestDisk());
  std::filesystem::create_directories(workdir);
  d->workdir_ = workdir;
  d->store_dir_ = workdir + "/store";
  d->size_ = disks.front().size;
  d->named_ = std::move(disks);
  d->extra_params_ = std::move(extra_params);
  d->Restart();
  return d;
}

GuestDisk::~GuestDisk() {
  if (server_) server_->Stop();
}

void GuestDisk::Restart() {
  if (server_) server_->Stop();
  server_.reset();
  NbdServerOptions o;
  o.plugin = kPluginPath;
  o.workdir = workdir_;
  o.params = {"dir=" + store_dir_};
  if (named_.empty()) {
    o.params.push_back(fmt::format("size={}", size_));
  } else {
    for (const Named& n : named_) o.params.push_back("disk=" + n.name);
    for (const Named& n : named_) o.params.push_back(fmt::format("size={}:{}", n.name, n.size));
  }
  o.params.insert(o.params.end(), extra_params_.begin(), extra_params_.end());
  o.nbdkit_flags = nbdkit_flags_;
  server_ = NbdServer::Start(std::move(o));
}

ExitStatus GuestDisk::Stop() { return server_->Stop(); }

// ------------------------------------------------------------------- QEMU

std::vector<std::string> QemuCommand(const QemuOptions& o) {
  const std::string base = o.workdir + "/" + o.name;
  std::vector<std::string> argv = {
      kQemu,
      "-machine", "pc,accel=tcg",
      "-m", std::to_string(o.memory_mb),
      "-display", "none",
      "-nodefaults",
      "-no-user-config",
      "-serial", "file:" + base + ".serial",
      "-qmp", "unix:" + base + ".qmp,server=on,wait=off",
      "-qmp", "unix:" + base + "-tool.qmp,server=on,wait=off",
  };
  for (size_t i = 0; i < o.disk_sockets.size(); ++i) {
    // Straight onto the NBD node: no format layer, no cache in QEMU; a
    // write reaches nbdkit before the guest sees it complete, and stop or
    // migration drain and flush.
    argv.push_back("-blockdev");
    std::string blockdev = fmt::format(
        "driver=nbd,node-name=disk{},server.type=unix,server.path={},"
        "cache.direct=off,cache.no-flush=off",
        i, o.disk_sockets[i]);
    if (i < o.disk_exports.size() && !o.disk_exports[i].empty()) {
      blockdev += ",export=" + o.disk_exports[i];
    }
    argv.push_back(blockdev);
    argv.push_back("-device");
    std::string dev = fmt::format("ide-hd,drive=disk{},bus=ide.{},unit={},id=ide-disk{}", i,
                                  i / 2, i % 2, i);
    if (i == 0) dev += ",bootindex=0";
    argv.push_back(dev);
  }
  if (o.pvpanic) {
    argv.push_back("-device");
    argv.push_back("pvpanic");
  }
  if (!o.panic_action.empty()) {
    argv.push_back("-action");
    argv.push_back("panic=" + o.panic_action);
  }
  if (o.agent) {
    argv.push_back("-chardev");
    argv.push_back("socket,id=qga0,path=" + AgentSocketPath(o) + ",server=on,wait=off");
    argv.push_back("-device");
    argv.push_back("isa-serial,chardev=qga0,index=1");
  }
  if (o.no_reboot) argv.push_back("-no-reboot");
  if (o.paused) argv.push_back("-S");
  if (o.incoming_defer) {
    argv.push_back("-incoming");
    argv.push_back("defer");
  }
  argv.insert(argv.end(), o.extra_args.begin(), o.extra_args.end());
  return argv;
}

std::string AgentSocketPath(const QemuOptions& o) { return o.workdir + "/" + o.name + ".qga"; }

// --------------------------------------------------------- the heartbeat

std::unique_ptr<AgentClient> AgentClient::Connect(const std::string& socket_path,
                                                  std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    throw std::runtime_error("agent socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      std::unique_ptr<AgentClient> c(new AgentClient());
      c->fd_ = fd;
      return c;
    }
    int e = errno;
    close(fd);
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error(
          fmt::format("connect {}: {} (for {} ms)", socket_path, std::strerror(e), timeout.count()));
    }
    std::this_thread::sleep_for(20ms);
  }
}

AgentClient::~AgentClient() {
  if (fd_ >= 0) close(fd_);
}

bool AgentClient::ReadSome(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    int n = ::poll(&p, 1, left.count() > 0 ? static_cast<int>(left.count()) : 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(fmt::format("agent: poll: {}", std::strerror(errno)));
    if (n == 0) return true;  // nothing (more) before deadline
    char b[512];
    ssize_t r = ::recv(fd_, b, sizeof b, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw std::runtime_error(fmt::format("agent: recv: {}", std::strerror(errno)));
    if (r == 0) return false;
    buf_.append(b, static_cast<size_t>(r));
    return true;
  }
}

bool AgentClient::Ping(std::chrono::milliseconds timeout, std::string* reply) {
  if (reply != nullptr) reply->clear();
  // Late answers to earlier pings: whatever is there now.
  for (size_t before = SIZE_MAX; buf_.size() != before;) {
    before = buf_.size();
    if (!ReadSome(std::chrono::steady_clock::now())) {
      throw std::runtime_error("agent: connection closed by QEMU");
    }
  }
  buf_.clear();
  static constexpr std::string_view kPing = "{\"execute\":\"guest-ping\"}\n";
  if (::send(fd_, kPing.data(), kPing.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(kPing.size())) {
    throw std::runtime_error(fmt::format("agent: send: {}", std::strerror(errno)));
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      if (reply != nullptr) *reply = line;
      return line == kAgentPong;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (!ReadSome(deadline)) throw std::runtime_error("agent: connection closed by QEMU");
  }
}

// ------------------------------------------------------------------- QEMU

std::unique_ptr<Qemu> Qemu::Start(QemuOptions options) {
  if (options.workdir.empty()) throw std::runtime_error("Qemu: workdir is required");
  std::unique_ptr<Qemu> q(new Qemu());
  const std::string base = options.workdir + "/" + options.name;
  q->serial_path_ = base + ".serial";
  q->qmp_path_ = base + ".qmp";
  q->tool_qmp_path_ = base + "-tool.qmp";
  q->log_path_ = base + ".log";
  if (options.agent) q->agent_path_ = AgentSocketPath(options);
  for (const auto& f :
       {q->serial_path_, q->qmp_path_, q->tool_qmp_path_, q->log_path_, q->agent_path_}) {
    if (!f.empty()) unlink(f.c_str());
  }
  q->argv_ = QemuCommand(options);
  q->options_ = std::move(options);
  q->pid_ = SpawnTied(q->argv_, q->log_path_);

  auto deadline = std::chrono::steady_clock::now() + q->options_.ready_timeout;
  for (;;) {
    if (!q->Running()) {
      throw std::runtime_error(fmt::format("QEMU exited before its QMP socket was ready ({})\n{}",
                                           q->status_.ToString(), q->Describe()));
    }
    struct stat st;
    if (stat(q->qmp_path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      rwd::Status s = rwd::vm::QmpClient::Connect(q->qmp_path_, 10s, &q->qmp_);
      if (s.ok()) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        throw std::runtime_error(
            fmt::format("QMP connect {}: {}\n{}", q->qmp_path_, s.ToString(), q->Describe()));
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error(fmt::format("QEMU did not create {} within {} ms\n{}",
                                           q->qmp_path_, q->options_.ready_timeout.count(),
                                           q->Describe()));
    }
    std::this_thread::sleep_for(10ms);
  }
  return q;
}

Qemu::~Qemu() {
  qmp_.reset();
  Kill();
}

std::string Qemu::command() const { return Join(argv_); }

std::string Qemu::SerialText() const { return ReadFile(serial_path_); }

SerialLog Qemu::Serial() const { return ParseSerial(SerialText()); }

std::string Qemu::Log() const { return ReadFile(log_path_); }

bool Qemu::Running() {
  if (reaped_ || pid_ <= 0) return false;
  ExitStatus st;
  if (WaitForExit(pid_, 0ms, &st)) {
    status_ = st;
    reaped_ = true;
    return false;
  }
  return true;
}

void Qemu::Kill() {
  if (reaped_ || pid_ <= 0) return;
  kill(pid_, SIGKILL);
  ExitStatus st;
  if (WaitForExit(pid_, 60s, &st)) {
    status_ = st;
    reaped_ = true;
  }
}

ExitStatus Qemu::Quit(std::chrono::milliseconds timeout) {
  if (Running() && qmp_) {
    rwd::Status s = qmp_->Execute("quit", nullptr, nullptr, 5s);
    (void)s;  // QEMU may close the socket before or after answering
  }
  if (!reaped_) {
    ExitStatus st;
    if (WaitForExit(pid_, timeout, &st)) {
      status_ = st;
      reaped_ = true;
    } else {
      Kill();
      status_.timed_out = true;
    }
  }
  qmp_.reset();
  return status_;
}

nlohmann::json Qemu::Qmp(const std::string& command, const nlohmann::json& args,
                         std::chrono::milliseconds timeout) {
  if (!qmp_) throw std::runtime_error("QMP " + command + ": not connected");
  nlohmann::json ret;
  rwd::Status s = qmp_->Execute(command, args, &ret, timeout);
  if (!s.ok()) {
    throw std::runtime_error(fmt::format("QMP {} {}: {}", command, args.dump(), s.ToString()));
  }
  return ret;
}

std::optional<nlohmann::json> Qemu::WaitEvent(const std::string& name,
                                              std::chrono::milliseconds timeout,
                                              std::string* why) {
  if (!qmp_) {
    if (why != nullptr) *why = "QMP not connected";
    return std::nullopt;
  }
  nlohmann::json event;
  rwd::Status s = qmp_->WaitEvent(name, timeout, &event);
  if (!s.ok()) {
    if (why != nullptr) *why = s.ToString() + "\n" + Describe();
    return std::nullopt;
  }
  return event;
}

std::vector<std::string> Qemu::TakeEventNames() {
  std::vector<std::string> names;
  if (!qmp_) return names;
  std::deque<nlohmann::json> events;
  rwd::Status s = qmp_->TakeEvents(&events);
  (void)s;  // the events queued are handed over anyway
  for (const auto& e : events) names.push_back(e.value("event", std::string("?")));
  return names;
}

std::string Qemu::RunState() {
  nlohmann::json r = Qmp("query-status");
  return r.value("status", std::string("?"));
}

uint32_t Qemu::ReadRamCounter() {
  const std::string file = options_.workdir + "/" + options_.name + ".ramcounter";
  unlink(file.c_str());
  Qmp("pmemsave", {{"val", kRamCounterAddress}, {"size", 4}, {"filename", file}});
  std::string bytes = ReadFile(file);
  if (bytes.size() != 4) {
    throw std::runtime_error(fmt::format("pmemsave {}: {} bytes", file, bytes.size()));
  }
  return Le32(reinterpret_cast<const uint8_t*>(bytes.data()));
}

bool Qemu::IsHalted() {
  nlohmann::json r = Qmp("human-monitor-command", {{"command-line", "info registers"}});
  return r.is_string() && r.get<std::string>().find("HLT=1") != std::string::npos;
}

uint32_t Qemu::StopAtSafePoint(std::chrono::milliseconds timeout) {
  if (options_.disk_sockets.size() < 2) throw std::runtime_error("StopAtSafePoint: needs 2 disks");
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last;
  for (int attempt = 1;; ++attempt) {
    Qmp("stop");
    if (IsHalted()) {
      uint32_t c = ReadRamCounter();
      auto export_of = [&](size_t i) {
        return i < options_.disk_exports.size() ? options_.disk_exports[i] : std::string();
      };
      GuestRecord r0 = ReadRecord(options_.disk_sockets[0], export_of(0));
      GuestRecord r1 = ReadRecord(options_.disk_sockets[1], export_of(1));
      if (r0.valid && r1.valid && r0.counter == c && r1.counter == c) return c;
      last = fmt::format("halted with C={}, disk 0 {}, disk 1 {}", c, r0.ToString(),
                         r1.ToString());
    } else {
      last = "not halted";
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error(fmt::format("no safe point in {} attempts within {} ms (last: {})\n{}",
                                           attempt, timeout.count(), last, Describe()));
    }
    Qmp("cont");
    std::this_thread::sleep_for(std::chrono::milliseconds(1 + attempt % 7));
  }
}

nlohmann::json Qemu::WaitMigration(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  nlohmann::json r;
  for (;;) {
    r = Qmp("query-migrate");
    std::string st = r.value("status", std::string());
    if (st == "completed") return r;
    if (st == "failed" || st == "cancelled") {
      throw std::runtime_error(fmt::format("migration {}: {}", st, r.dump()));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error(
          fmt::format("migration not completed within {} ms: {}", timeout.count(), r.dump()));
    }
    std::this_thread::sleep_for(20ms);
  }
}

std::optional<std::string> Qemu::WaitForLine(std::string_view prefix, size_t count,
                                             std::chrono::milliseconds timeout,
                                             std::string* why) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    // Read the log before checking whether QEMU ended, so nothing it wrote
    // last is missed.
    bool running = Running();
    SerialLog log = Serial();
    size_t seen = 0;
    for (const auto& l : log.lines) {
      if (StartsWith(l, prefix) && ++seen == count) return l;
    }
    std::string problem;
    if (!log.disk_errors.empty()) {
      problem = "the guest reported a disk error: " + log.disk_errors.front();
    } else if (!log.panics.empty()) {
      problem = "the guest panicked: " + log.panics.front();
    } else if (!log.hangs.empty()) {
      problem = "the guest hung: " + log.hangs.front();
    } else if (!running) {
      problem = "QEMU exited (" + status_.ToString() + ")";
    } else if (std::chrono::steady_clock::now() >= deadline) {
      problem = fmt::format("no {} line{} '{}...' within {} ms (saw {})", count,
                            count == 1 ? "" : "s", prefix, timeout.count(), seen);
    }
    if (!problem.empty()) {
      if (why != nullptr) *why = problem + "\n" + Describe();
      return std::nullopt;
    }
    std::this_thread::sleep_for(10ms);
  }
}

std::optional<Tick> Qemu::WaitForTick(uint32_t min_counter, std::chrono::milliseconds timeout,
                                      std::string* why) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool running = Running();
    SerialLog log = Serial();
    for (const auto& t : log.ticks) {
      if (t.counter >= min_counter) return t;
    }
    std::string problem;
    if (!log.disk_errors.empty()) {
      problem = "the guest reported a disk error: " + log.disk_errors.front();
    } else if (!log.panics.empty()) {
      problem = "the guest panicked: " + log.panics.front();
    } else if (!log.hangs.empty()) {
      problem = "the guest hung: " + log.hangs.front();
    } else if (!running) {
      problem = "QEMU exited (" + status_.ToString() + ")";
    } else if (std::chrono::steady_clock::now() >= deadline) {
      auto last = log.LastTick();
      problem = fmt::format("no TICK with C >= {} within {} ms (last TICK: {})", min_counter,
                            timeout.count(),
                            last ? fmt::format("C={}", last->counter) : std::string("none"));
    }
    if (!problem.empty()) {
      if (why != nullptr) *why = problem + "\n" + Describe();
      return std::nullopt;
    }
    std::this_thread::sleep_for(10ms);
  }
}

std::string Qemu::Describe() const {
  SerialLog log = ParseSerial(SerialText());
  return fmt::format(
      "$ {}\n[qemu pid {}: {}]\n--- qemu log ({}) ---\n{}--- serial ({}, {} lines; last ones) ---\n{}"
      "--- end ---",
      command(), pid_, reaped_ ? status_.ToString() : std::string("running"), log_path_,
      Tail(Log()), serial_path_, log.lines.size(), log.Tail());
}

// --------------------------------------------------------- the whole guest

GuestVm::GuestVm(GuestVmOptions options) : options_(std::move(options)), dir_("rwguest") {
  if (options_.one_store) {
    std::vector<GuestDisk::Named> named;
    for (int i = 0; i < options_.disks; ++i) {
      const size_t k = static_cast<size_t>(i);
      named.push_back({fmt::format("d{}", i), k < options_.disk_sizes.size()
                                                  ? options_.disk_sizes[k]
                                                  : options_.disk_size});
    }
    disks_.push_back(
        GuestDisk::StartNamed(dir_ / "vmstore", std::move(named), options_.disk_params));
  } else {
    for (int i = 0; i < options_.disks; ++i) {
      disks_.push_back(GuestDisk::Start(dir_ / fmt::format("d{}", i), options_.disk_size,
                                        options_.disk_params, options_.disk_nbdkit_flags));
    }
  }
  InstallImage(socket_of(0), export_of(0));
}

GuestVm::~GuestVm() {
  // QEMU first (it holds NBD connections), then nbdkit, then the directory.
  qemu_.reset();
  disks_.clear();
}

const std::string& GuestVm::socket_of(size_t guest_disk) const {
  if (guest_disk >= guest_disk_count()) throw std::out_of_range("GuestVm: no such disk");
  return disks_.at(options_.one_store ? 0 : guest_disk)->socket();
}

std::string GuestVm::export_of(size_t guest_disk) const {
  if (guest_disk >= guest_disk_count()) throw std::out_of_range("GuestVm: no such disk");
  return options_.one_store ? fmt::format("d{}", guest_disk) : std::string();
}

GuestStatus GuestVm::ReadStatus(const std::string& at) const {
  return guest::ReadStatus(socket_of(0), at.empty() ? export_of(0) : export_of(0) + "@" + at);
}

GuestRecord GuestVm::ReadRecord(size_t disk, const std::string& at) const {
  return guest::ReadRecord(socket_of(disk),
                           at.empty() ? export_of(disk) : export_of(disk) + "@" + at);
}

void GuestVm::WriteBadRecord(size_t disk, BadRecord kind) const {
  guest::WriteBadRecord(socket_of(disk), kind, export_of(disk));
}

QemuOptions GuestVm::NextQemuOptions() const {
  QemuOptions o;
  for (size_t i = 0; i < guest_disk_count(); ++i) {
    o.disk_sockets.push_back(socket_of(i));
    o.disk_exports.push_back(export_of(i));
  }
  o.workdir = dir_.path();
  o.name = fmt::format("q{}", qemu_count_ + 1);
  return o;
}

Qemu& GuestVm::StartQemu(QemuOptions options) {
  KillQemu();
  QemuOptions defaults = NextQemuOptions();
  if (options.disk_sockets.empty()) {
    options.disk_sockets = defaults.disk_sockets;
    if (options.disk_exports.empty()) options.disk_exports = defaults.disk_exports;
  }
  if (options.workdir.empty()) options.workdir = defaults.workdir;
  if (options.name.empty() || options.name == QemuOptions{}.name) options.name = defaults.name;
  qemu_count_++;
  qemu_ = Qemu::Start(std::move(options));
  return *qemu_;
}

Qemu& GuestVm::Boot(std::chrono::milliseconds timeout) { return Boot(QemuOptions{}, timeout); }

Qemu& GuestVm::Boot(QemuOptions options, std::chrono::milliseconds timeout) {
  Qemu& q = StartQemu(std::move(options));
  std::string why;
  bool booted = q.WaitForLine("BOOT ", 1, timeout, &why).has_value();
  INFO(why);
  REQUIRE(booted);
  return q;
}

Qemu& GuestVm::qemu() {
  if (!qemu_) throw std::runtime_error("GuestVm: no QEMU running");
  return *qemu_;
}

void GuestVm::KillQemu() { qemu_.reset(); }

std::string GuestVm::Describe() const {
  std::string out = qemu_ ? qemu_->Describe() + "\n" : std::string("(no QEMU)\n");
  for (size_t i = 0; i < disks_.size(); ++i) {
    out += fmt::format("--- nbdkit of {} {} ({}) ---\n{}", options_.one_store ? "store" : "disk", i,
                       disks_[i]->server().log_path(),
                       Tail(disks_[i]->server().log(), 1500));
  }
  return out;
}

}  // namespace rwd::test::guest
