// The control server.
//
// Threads: one accept thread, and one thread per connection (at most
// max_connections).  Every thread blocks only in poll() on its socket plus
// the read end of a "wake" pipe; Stop writes one byte to the pipe and never
// reads it, so the pipe stays readable and every thread sees it at its next
// poll.  A connection thread that is inside a Store call finishes the call
// and its answer first, so Stop waits at most for one Store call.  The long
// calls that can stop, Store::Restore and Store::Verify, ask their progress
// callback whether to go on as they work; the callback looks at the pipe and
// at the client's socket (POLLHUP: the client closed it), so they end soon
// after Stop or after their client went away (a restore's temporary file is
// removed).  Rollback cannot stop half way, and diff and prune have no
// callback: Stop waits for them.
//
// Rollback and prune need the live disk to themselves (a rollback's
// rewrites race with other writers): they run inside options.exclusive, the
// plugin's hook that refuses with Busy while an NBD client has the live disk
// open for writing and keeps new writers out meanwhile.
//
// Progress lines of long work go out from the connection's thread as the
// work reports, and from a keep-alive thread per request while it is quiet
// (ProgressLines).
//
// The socket is bound under umask 077 and then chmod'ed to 0600, so it is
// never reachable by other users, even for an instant.  Peers are checked
// again with SO_PEERCRED.
#include <rewind/control/server.h>

#include "socket_util.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>

namespace rwd::control {

using nlohmann::json;

// ---- Progress lines --------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

// The progress lines of one request.  When the request asked for them and
// there is a channel to send them on, the first goes out at once, then at
// most one per kProgressIntervalMs as the work reports; a keep-alive thread
// repeats the last values whenever keepalive_ms passed without a line, so
// that work which reports rarely or never (a diff, a prune, a snapshot being
// built) does not look wedged to the client.  Sends are serialized by mu_;
// the work never waits for a keep-alive being sent (its report is then
// skipped: the next one carries the news).
class ProgressLines {
 public:
  ProgressLines(const Request& req, const RequestChannel* channel, int keepalive_ms, uint64_t total)
      : id_(req.id),
        channel_(req.progress && channel != nullptr && channel->send ? channel : nullptr),
        keepalive_(std::max(keepalive_ms, 1)),
        total_(total) {
    if (channel_ == nullptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    SendLocked();
    if (!failed_) thread_ = std::thread([this] { KeepAlive(); });
  }
  ~ProgressLines() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  ProgressLines(const ProgressLines&) = delete;
  ProgressLines& operator=(const ProgressLines&) = delete;

  // done out of total.  False once a line could not be sent: the client
  // has gone, or the server stops.
  bool Report(uint64_t done, uint64_t total) {
    if (channel_ == nullptr) return true;
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return !failed_;
    done_ = std::max(done_, done);  // never decreases
    total_ = total;
    if (!failed_ && Clock::now() - last_sent_ >= std::chrono::milliseconds(kProgressIntervalMs)) {
      SendLocked();
    }
    return !failed_;
  }

  bool ok() const { return !failed_; }

 private:
  // Must be called with mu_ held.
  void SendLocked() {
    if (!channel_->send(ToLine(MakeProgress(id_, done_, total_)))) failed_ = true;
    last_sent_ = Clock::now();
  }

  void KeepAlive() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_ && !failed_) {
      if (cv_.wait_until(lock, last_sent_ + keepalive_, [this] { return stop_; })) break;
      if (Clock::now() - last_sent_ >= keepalive_) SendLocked();
    }
  }

  const std::optional<json> id_;
  const RequestChannel* const channel_;  // null: no lines
  const std::chrono::milliseconds keepalive_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;            // guarded by mu_
  uint64_t done_ = 0;            // guarded by mu_
  uint64_t total_ = 0;           // guarded by mu_
  Clock::time_point last_sent_;  // guarded by mu_
  std::atomic<bool> failed_{false};
  std::thread thread_;
};

// ---- Dispatch --------------------------------------------------------------

// What the handlers of one request share.
struct Context {
  Store& store;
  const Request& req;
  const RequestChannel* channel;  // may be null
  const ControlServerOptions& options;

  json Fail(const Status& s) const { return MakeError(req.id, ErrorFromStatus(s)); }
  // Whether the work should go on: the client is there, the server runs.
  bool Alive() const { return channel == nullptr || !channel->alive || channel->alive(); }
  // Runs fn with the live disk to itself when the plugin set the hook.  fn
  // never throws: an exception inside the hook could leave the disk held.
  Status Exclusive(const std::function<Status()>& fn, bool quiesced = false) const {
    auto guarded = [&fn]() -> Status {
      try {
        return fn();
      } catch (const std::exception& e) {
        return Status::IOError(std::string("internal error: ") + e.what());
      }
    };
    if (quiesced && options.exclusive_quiesced) return options.exclusive_quiesced(guarded);
    return options.exclusive ? options.exclusive(guarded) : guarded();
  }
};

Status Cancelled(const char* what) {
  return Status::Aborted(std::string(what) +
                         " cancelled: the client went away or the plugin is stopping");
}

// Restores on the calling thread; stops when the client goes away.
// A store of several disks restores the one the request names.
json Restore(const Context& c) {
  Disk* disk = nullptr;
  Status s = PickDisk(c.store, c.req.disk, "restore", &disk);
  PointInfo point;
  if (s.ok()) s = c.store.ResolvePoint(c.req.to, &point);
  StoreInfo info;
  if (s.ok()) s = c.store.GetInfo(&info);
  if (s.ok()) s = CheckRestoreOutput(c.req.output, info);
  if (!s.ok()) return c.Fail(s);

  ProgressLines lines(c.req, c.channel, c.options.keepalive_ms,
                      disk != nullptr ? disk->size() : c.store.size());
  bool cancelled = !lines.ok();
  RestoreOptions options;
  options.output = c.req.output;
  options.overwrite = c.req.force;
  options.progress = [&](uint64_t done, uint64_t total) {
    if (cancelled || !c.Alive() || !lines.Report(done, total)) cancelled = true;
    return !cancelled;
  };
  RestoreResult result;
  if (!cancelled) {
    s = disk ? disk->Restore(point, options, &result) : c.store.Restore(point, options, &result);
  }
  if (cancelled) s = Cancelled("restore");
  if (!s.ok()) return c.Fail(s);
  return MakeResult(c.req.id, ToJson(result, c.req.output));
}

// Not cancellable: a rollback started runs to its end, whoever listens.
json Rollback(const Context& c) {
  PointInfo point;
  if (Status s = c.store.ResolvePoint(c.req.to, &point); !s.ok()) return c.Fail(s);
  RollbackResult result;
  Status s = c.Exclusive([&] {
    ProgressLines lines(c.req, c.channel, c.options.keepalive_ms, 0);
    RollbackOptions options;
    options.progress = [&](uint64_t done, uint64_t total) {
      (void)lines.Report(done, total);
      return true;
    };
    return c.store.Rollback(point, options, &result);
  }, c.req.quiesced);
  if (!s.ok()) return c.Fail(s);
  return MakeResult(c.req.id, ToJson(result));
}

json Diff(const Context& c) {
  Disk* disk = nullptr;
  Status s = PickDisk(c.store, c.req.disk, "diff", &disk);
  PointInfo from, to;
  if (s.ok()) s = c.store.ResolvePoint(c.req.from, &from);
  if (s.ok()) s = c.store.ResolvePoint(c.req.to, &to);
  if (!s.ok()) return c.Fail(s);
  DiffResult result;
  {
    ProgressLines lines(c.req, c.channel, c.options.keepalive_ms, 0);
    s = disk ? disk->Diff(from, to, &result) : c.store.Diff(from, to, &result);
  }
  if (!s.ok()) return c.Fail(s);
  return MakeResult(c.req.id, ToJson(result));
}

// Stops when the client goes away.  Damage is a result, not an error.
json Verify(const Context& c) {
  ProgressLines lines(c.req, c.channel, c.options.keepalive_ms, 0);
  bool cancelled = !lines.ok();
  VerifyReport report;
  Status s;
  if (!cancelled) {
    s = c.store.Verify(
        [&](uint64_t done, uint64_t total) {
          if (cancelled || !c.Alive() || !lines.Report(done, total)) cancelled = true;
          return !cancelled;
        },
        &report);
  }
  if (cancelled) s = Cancelled("verify");
  if (!s.ok()) return c.Fail(s);
  return MakeResult(c.req.id, ToJson(report));
}

// A dry run changes nothing, so it needs no exclusive hold on the disk.
json Prune(const Context& c) {
  PruneResult result;
  auto work = [&] {
    ProgressLines lines(c.req, c.channel, c.options.keepalive_ms, 0);
    return c.store.Prune(c.req.policy, &result);
  };
  Status s = c.req.policy.dry_run ? work() : c.Exclusive(work, c.req.quiesced);
  if (!s.ok()) return c.Fail(s);
  return MakeResult(c.req.id, ToJson(result, c.req.policy.dry_run));
}

json Dispatch(const Context& c) {
  Store& store = c.store;
  switch (c.req.op) {
    case Op::kHello:
      return MakeResult(
          c.req.id, json{{"server", ServerName()}, {"versions", json::array({kProtocolVersion})}});
    case Op::kInfo: {
      StoreInfo info;
      Status s = store.GetInfo(&info);
      if (!s.ok()) return c.Fail(s);
      return MakeResult(c.req.id, ToJson(info, /*online=*/true));
    }
    case Op::kCheckpoint: {
      CheckpointOptions options;
      options.name = c.req.name;
      options.kind = c.req.kind;
      options.pending = c.req.pending;
      options.pinned = c.req.pinned;
      options.supervised = c.req.supervised;
      CheckpointInfo cp;
      Status s = store.Checkpoint(options, &cp);
      if (!s.ok()) return c.Fail(s);
      return MakeResult(c.req.id, ToJson(cp));
    }
    case Op::kCommitCheckpoint: {
      CheckpointInfo cp;
      Status s = store.CommitCheckpoint(c.req.checkpoint_id, &cp);
      if (!s.ok()) return c.Fail(s);
      return MakeResult(c.req.id, ToJson(cp));
    }
    case Op::kPin: {
      CheckpointInfo cp;
      Status s = store.SetPinned(c.req.name, c.req.pinned, &cp);
      if (!s.ok()) return c.Fail(s);
      return MakeResult(c.req.id, ToJson(cp));
    }
    case Op::kList: {
      std::vector<CheckpointInfo> cps;
      Status s = store.ListCheckpoints(&cps, c.req.with_pending);
      if (!s.ok()) return c.Fail(s);
      json list = json::array();
      for (const CheckpointInfo& cp : cps) list.push_back(ToJson(cp));
      return MakeResult(c.req.id, json{{"checkpoints", std::move(list)}});
    }
    case Op::kRestore: return Restore(c);
    case Op::kRollback: return Rollback(c);
    case Op::kDiff: return Diff(c);
    case Op::kVerify: return Verify(c);
    case Op::kPrune: return Prune(c);
  }
  return MakeError(c.req.id, Error{kUnknownOp, "unknown op", nullptr});
}

}  // namespace

json HandleRequestLine(Store& store, std::string_view line, const RequestChannel* channel,
                       const ControlServerOptions* options) {
  static const ControlServerOptions kDefaults;
  Request req;
  if (std::optional<Error> err = ParseRequest(line, &req)) return MakeError(req.id, *err);
  try {
    return Dispatch(Context{store, req, channel, options != nullptr ? *options : kDefaults});
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    return MakeError(req.id,
                     Error{"io-error", std::string("internal error: ") + e.what(), nullptr});
  }
}

// ---- Start and Stop --------------------------------------------------------

struct ControlServer::Connection {
  std::thread thread;
  std::atomic<bool> done{false};
};

namespace {

// Whether a plugin answers on the socket at addr.
bool SomeoneListens(const sockaddr_un& addr, socklen_t len) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0;
}

// Clears the way for a new socket at path: removes a stale one.
Status RemoveStale(const std::string& path, const sockaddr_un& addr, socklen_t len) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(errno, "stat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Status::AlreadyExists(path + " exists and is not a socket");
  }
  if (SomeoneListens(addr, len)) {
    return Status::Busy("another plugin is already listening on " + path);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "remove stale socket " + path);
  }
  return Status::Ok();
}

// The socket's directory must be the owner's alone: otherwise another user
// could see the socket, or (with write permission) replace it with one of
// their own that the CLI would then talk to.  A directory of ours that others
// may enter is made owner-only (the store directory: it also keeps the
// journal, whose RocksDB files are created world-readable, from other
// users); one of another user's that others may write to is refused.
Status SecureSocketDirectory(const std::string& path, std::string* note) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (dir.empty()) dir = "/";
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + dir);
  if ((st.st_mode & 077) == 0) return Status::Ok();
  if (st.st_uid == ::geteuid()) {
    const mode_t mode = st.st_mode & 0700;
    if (::chmod(dir.c_str(), mode) != 0) return Status::FromErrno(errno, "chmod " + dir);
    *note = fmt::format("control: made {} owner-only (mode {:04o}, was {:04o})", dir, mode,
                        st.st_mode & 07777);
    return Status::Ok();
  }
  if ((st.st_mode & 022) != 0) {
    return Status::IOError(fmt::format(
        "{} (mode {:04o}, owner uid {}) is writable by other users; the control socket needs a "
        "directory only its owner can change",
        dir, st.st_mode & 07777, st.st_uid), EACCES);
  }
  return Status::Ok();
}

}  // namespace

Status ControlServer::Start(const ControlServerOptions& options, Store* store,
                            std::unique_ptr<ControlServer>* out) {
  const std::string& path = options.socket_path;
  sockaddr_un addr;
  socklen_t len = 0;
  UniqueFd dir_fd;
  std::string note;
  Status s = SecureSocketDirectory(path, &note);
  if (!s.ok()) return s;
  if (!note.empty() && options.log) options.log(note);
  s = MakeSocketAddress(path, &addr, &len, &dir_fd);
  if (!s.ok()) return s;
  s = RemoveStale(path, addr, len);
  if (!s.ok()) return s;

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Status::FromErrno(errno, "socket");
  // umask is per process: other threads creating files in this window get
  // a stricter mode at worst.
  mode_t old_mask = ::umask(077);
  int rc = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len);
  int bind_errno = errno;
  ::umask(old_mask);
  if (rc != 0) return Status::FromErrno(bind_errno, "bind " + path);
  struct stat st;
  if (::chmod(path.c_str(), 0600) != 0 || ::stat(path.c_str(), &st) != 0) {
    s = Status::FromErrno(errno, "chmod " + path);
    ::unlink(path.c_str());
    return s;
  }
  if (::listen(fd.get(), 16) != 0) {
    s = Status::FromErrno(errno, "listen " + path);
    ::unlink(path.c_str());
    return s;
  }
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    s = Status::FromErrno(errno, "pipe");
    ::unlink(path.c_str());
    return s;
  }
  std::unique_ptr<ControlServer> server(
      new ControlServer(options, store, fd.Release(), wake[0], wake[1], st.st_dev, st.st_ino));
  try {
    server->accept_thread_ = std::thread([srv = server.get()] { srv->AcceptLoop(); });
  } catch (const std::system_error& e) {
    server->Stop();
    return Status::IOError(std::string("cannot start the control thread: ") + e.what());
  }
  *out = std::move(server);
  return Status::Ok();
}

ControlServer::ControlServer(const ControlServerOptions& options, Store* store, int listen_fd,
                             int wake_read, int wake_write, dev_t dev, ino_t ino)
    : options_(options),
      store_(store),
      listen_fd_(listen_fd),
      wake_read_(wake_read),
      wake_write_(wake_write),
      dev_(dev),
      ino_(ino) {}

ControlServer::~ControlServer() {
  Stop();
  ::close(wake_read_);
  ::close(wake_write_);
}

void ControlServer::Stop() {
  std::lock_guard<std::mutex> lock(stop_mu_);
  if (stopped_) return;
  stopped_ = true;
  char byte = 0;
  while (::write(wake_write_, &byte, 1) < 0 && errno == EINTR) {
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  // New connection attempts fail from here (and the CLI falls back to
  // opening the store itself, which waits for our Close).
  ::close(listen_fd_);
  listen_fd_ = -1;
  struct stat st;
  if (::lstat(options_.socket_path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    ::unlink(options_.socket_path.c_str());
  }
  Reap(/*wait=*/true);
}

void ControlServer::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

// ---- Accepting -------------------------------------------------------------

void ControlServer::AcceptLoop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    int rc = ::poll(p, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      Log(std::string("control: poll: ") + std::strerror(errno));
      return;
    }
    if (p[1].revents != 0) return;
    Reap(/*wait=*/false);
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      Admit(fd);
      continue;
    }
    int err = errno;
    if (err == EINTR || err == EAGAIN || err == ECONNABORTED) continue;
    Log(std::string("control: accept: ") + std::strerror(err));
    // Out of descriptors or memory: back off instead of spinning.
    pollfd w{wake_read_, POLLIN, 0};
    ::poll(&w, 1, 100);
  }
}

void ControlServer::Admit(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
      (cred.uid != ::geteuid() && cred.uid != 0)) {
    Log("control: refused a connection from uid " + std::to_string(cred.uid));
    ::close(fd);
    return;
  }
  if (connections_.size() >= static_cast<size_t>(options_.max_connections)) {
    Error busy{"busy", "too many control connections; try again", nullptr};
    std::string line = ToLine(MakeError(std::nullopt, busy));
    (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(fd);
    return;
  }
  auto conn = std::make_unique<Connection>();
  Connection* c = conn.get();
  try {
    c->thread = std::thread([this, c, fd] {
      try {
        Serve(fd);
      } catch (...) {
        // Out of memory while serving: drop the connection, keep the plugin.
      }
      ::close(fd);
      c->done.store(true, std::memory_order_release);
    });
  } catch (const std::system_error& e) {
    Log(std::string("control: cannot start a connection thread: ") + e.what());
    ::close(fd);
    return;
  }
  connections_.push_back(std::move(conn));
}

void ControlServer::Reap(bool wait) {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (wait || (*it)->done.load(std::memory_order_acquire)) {
      (*it)->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

// ---- Serving one connection ------------------------------------------------

bool ControlServer::SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n >= 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return false;
    pollfd p[2] = {{fd, POLLOUT, 0}, {wake_read_, POLLIN, 0}};
    int rc = ::poll(p, 2, options_.idle_timeout_ms);
    if (rc == 0 || (rc > 0 && p[1].revents != 0)) return false;
    if (rc < 0 && errno != EINTR) return false;
  }
  return true;
}

bool ControlServer::Alive(int fd) const {
  // POLLHUP on a Unix stream socket: the peer closed it (a peer that only
  // shut down its sending side still reads the answer: POLLRDHUP alone).
  pollfd p[2] = {{fd, 0, 0}, {wake_read_, POLLIN, 0}};
  int rc = ::poll(p, 2, 0);
  if (rc <= 0) return rc == 0 || errno == EINTR;
  return p[1].revents == 0 && (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) == 0;
}

void ControlServer::Serve(int fd) {
  std::string buf;
  char chunk[16384];
  RequestChannel channel;
  channel.send = [this, fd](const std::string& line) { return SendAll(fd, line); };
  channel.alive = [this, fd] { return Alive(fd); };
  for (;;) {
    // Answer every complete line, in order.
    size_t start = 0;
    for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(buf.data() + start, nl - start);
      json response = HandleRequestLine(*store_, line, &channel, &options_);
      if (!SendAll(fd, ToLine(response))) return;
      // A too-long line breaks the framing: the rest cannot be trusted.
      if (line.size() > kMaxRequestLine) return;
    }
    buf.erase(0, start);
    if (buf.size() > kMaxRequestLine) {
      Error err{kTooLong,
                "request line is longer than " + std::to_string(kMaxRequestLine) + " bytes",
                nullptr};
      SendAll(fd, ToLine(MakeError(std::nullopt, err)));
      return;
    }

    pollfd p[2] = {{fd, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    int rc = ::poll(p, 2, options_.idle_timeout_ms);
    if (rc < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (rc == 0 || p[1].revents != 0) return;  // idle, or the server stops
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n == 0) return;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return;
    }
    buf.append(chunk, static_cast<size_t>(n));
  }
}

}  // namespace rwd::control
