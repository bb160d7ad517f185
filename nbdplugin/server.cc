// The control server.
//
// Threads: one accept thread, and one thread per connection (at most
// max_connections).  Every thread blocks only in poll() on its socket plus
// the read end of a "wake" pipe; Stop writes one byte to the pipe and never
// reads it, so the pipe stays readable and every thread sees it at its next
// poll.  A connection thread that is inside a Store call finishes the call
// and its answer first, so Stop waits at most for one Store call.  The one
// long call, Store::Restore, asks its progress callback whether to go on
// after every chunk; the callback looks at the pipe and at the client's
// socket (POLLHUP: the client closed it), so a restore ends soon after Stop
// or after its client went away, and the store removes its temporary file.
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

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

namespace rwd::control {

using nlohmann::json;

// ---- Dispatch --------------------------------------------------------------

namespace {

// Restores on the calling thread.  Progress goes to the client when it asked
// for it (a first line at once, then at most one per kProgressIntervalMs);
// whether to go on is asked at every call of the store's progress callback.
json Restore(Store& store, const Request& req, const RequestChannel* channel) {
  PointInfo point;
  Status s = store.ResolvePoint(req.to, &point);
  StoreInfo info;
  if (s.ok()) s = store.GetInfo(&info);
  if (s.ok()) s = CheckRestoreOutput(req.output, info.dir, info.image_path);
  if (!s.ok()) return MakeError(req.id, ErrorFromStatus(s));

  using Clock = std::chrono::steady_clock;
  const bool send = req.progress && channel != nullptr && channel->send;
  const bool check = channel != nullptr && bool(channel->alive);
  bool cancelled = false;
  Clock::time_point last_sent = Clock::now();
  if (send && !channel->send(ToLine(MakeProgress(req.id, 0, store.size())))) cancelled = true;

  RestoreOptions options;
  options.output = req.output;
  options.overwrite = req.force;
  options.progress = [&](uint64_t done, uint64_t total) {
    if (cancelled || (check && !channel->alive())) {
      cancelled = true;
      return false;
    }
    if (send && Clock::now() - last_sent >= std::chrono::milliseconds(kProgressIntervalMs)) {
      if (!channel->send(ToLine(MakeProgress(req.id, done, total)))) {
        cancelled = true;
        return false;
      }
      last_sent = Clock::now();
    }
    return true;
  };
  RestoreResult result;
  if (!cancelled) s = store.Restore(point, options, &result);
  if (cancelled) {
    s = Status::Aborted("restore cancelled: the client went away or the plugin is stopping");
  }
  if (!s.ok()) return MakeError(req.id, ErrorFromStatus(s));
  return MakeResult(req.id, ToJson(result, req.output));
}

json Dispatch(Store& store, const Request& req, const RequestChannel* channel) {
  switch (req.op) {
    case Op::kHello:
      return MakeResult(
          req.id, json{{"server", ServerName()}, {"versions", json::array({kProtocolVersion})}});
    case Op::kInfo: {
      StoreInfo info;
      Status s = store.GetInfo(&info);
      if (!s.ok()) return MakeError(req.id, ErrorFromStatus(s));
      return MakeResult(req.id, ToJson(info, /*online=*/true));
    }
    case Op::kCheckpoint: {
      CheckpointInfo cp;
      Status s = store.Checkpoint(req.name, &cp);
      if (!s.ok()) return MakeError(req.id, ErrorFromStatus(s));
      return MakeResult(req.id, ToJson(cp));
    }
    case Op::kList: {
      std::vector<CheckpointInfo> cps;
      Status s = store.ListCheckpoints(&cps);
      if (!s.ok()) return MakeError(req.id, ErrorFromStatus(s));
      json list = json::array();
      for (const CheckpointInfo& cp : cps) list.push_back(ToJson(cp));
      return MakeResult(req.id, json{{"checkpoints", std::move(list)}});
    }
    case Op::kRestore: return Restore(store, req, channel);
  }
  return MakeError(req.id, Error{kUnknownOp, "unknown op", nullptr});
}

}  // namespace

json HandleRequestLine(Store& store, std::string_view line, const RequestChannel* channel) {
  Request req;
  if (std::optional<Error> err = ParseRequest(line, &req)) return MakeError(req.id, *err);
  try {
    return Dispatch(store, req, channel);
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

}  // namespace

Status ControlServer::Start(const ControlServerOptions& options, Store* store,
                            std::unique_ptr<ControlServer>* out) {
  const std::string& path = options.socket_path;
  sockaddr_un addr;
  socklen_t len = 0;
  UniqueFd dir_fd;
  Status s = MakeSocketAddress(path, &addr, &len, &dir_fd);
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
      json response = HandleRequestLine(*store_, line, &channel);
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
