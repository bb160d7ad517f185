// The control client: one request, one response, on a fresh connection.
#include <rewind/control/protocol.h>

#include "socket_util.h"

#include <poll.h>

#include <cerrno>
#include <chrono>
#include <thread>

namespace rwd::control {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

Status TimedOut(const std::string& path, const char* phase) {
  return Status::IOError("timed out " + std::string(phase) + " " + path, ETIMEDOUT);
}

// Waits until fd is ready for events or deadline passes.
Status WaitFor(int fd, short events, Clock::time_point deadline, const std::string& path,
               const char* phase) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, RemainingMs(deadline));
    if (rc > 0) return Status::Ok();
    if (rc == 0) return TimedOut(path, phase);
    if (errno != EINTR) return Status::FromErrno(errno, "poll " + path);
  }
}

Status Connect(int fd, const std::string& path, Clock::time_point deadline) {
  sockaddr_un addr;
  socklen_t len = 0;
  UniqueFd dir_fd;
  Status s = MakeSocketAddress(path, &addr, &len, &dir_fd);
  if (!s.ok()) return s;
  for (;;) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0) return Status::Ok();
    int err = errno;
    if (err == EINTR) continue;
    if (err == ENOENT || err == ECONNREFUSED) {
      return Status::NotFound("no plugin is listening on " + path);
    }
    if (err != EAGAIN) return Status::FromErrno(err, "connect " + path);
    // The server's backlog is full: retry until the deadline.
    if (RemainingMs(deadline) == 0) return TimedOut(path, "connecting to");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status SendAll(int fd, const std::string& data, const std::string& path,
               Clock::time_point deadline) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n >= 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return Status::FromErrno(errno, "send to " + path);
    Status s = WaitFor(fd, POLLOUT, deadline, path, "sending to");
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

Status ReceiveLine(int fd, std::string* line, const std::string& path, Clock::time_point deadline) {
  std::string buf;
  char chunk[16384];
  for (;;) {
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n > 0) {
      size_t scanned = buf.size();
      buf.append(chunk, static_cast<size_t>(n));
      size_t nl = buf.find('\n', scanned);
      if (nl != std::string::npos) {
        buf.resize(nl);
        *line = std::move(buf);
        return Status::Ok();
      }
      if (buf.size() > kMaxResponseLine) {
        return Status::IOError("response from " + path + " is longer than " +
                               std::to_string(kMaxResponseLine) + " bytes");
      }
      continue;
    }
    if (n == 0) return Status::IOError("the plugin closed " + path + " without answering");
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return Status::FromErrno(errno, "receive from " + path);
    Status s = WaitFor(fd, POLLIN, deadline, path, "waiting for an answer on");
    if (!s.ok()) return s;
  }
}

}  // namespace

Status ControlCall(const std::string& socket_path, const json& request, json* response,
                   int timeout_ms) {
  try {
    Clock::time_point deadline = timeout_ms < 0
                                     ? Clock::time_point::max()
                                     : Clock::now() + std::chrono::milliseconds(timeout_ms);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return Status::FromErrno(errno, "socket");
    Status s = Connect(fd.get(), socket_path, deadline);
    if (s.ok()) s = SendAll(fd.get(), ToLine(request), socket_path, deadline);
    std::string line;
    if (s.ok()) s = ReceiveLine(fd.get(), &line, socket_path, deadline);
    if (!s.ok()) return s;
    json j = json::parse(line, /*cb=*/nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return Status::IOError("malformed response from the plugin on " + socket_path);
    }
    *response = std::move(j);
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::IOError(std::string("control call failed: ") + e.what());
  }
}

}  // namespace rwd::control
