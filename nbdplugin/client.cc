// The control client: one request, one response, on a fresh connection.
// A request that asked for progress may be answered with progress lines
// before its response; they are handed to the caller, or skipped.
#include <rewind/control/protocol.h>

#include "socket_util.h"

#include <poll.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <thread>

namespace rwd::control {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

Status TimedOut(const std::string& path, const char* phase) {
  return Status::IOError("timed out " + std::string(phase) + " " + path, ETIMEDOUT);
}

Status Cancelled(const std::string& path) {
  return Status::Aborted("the call to " + path + " was cancelled");
}

// Asked whether to go on when a signal interrupts a wait; may be empty.
using OnSignal = std::function<bool()>;

// Waits until fd is ready for events or deadline passes.
Status WaitFor(int fd, short events, Clock::time_point deadline, const std::string& path,
               const char* phase, const OnSignal& on_signal = {}) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, RemainingMs(deadline));
    if (rc > 0) return Status::Ok();
    if (rc == 0) return TimedOut(path, phase);
    if (errno != EINTR) return Status::FromErrno(errno, "poll " + path);
    if (on_signal && !on_signal()) return Cancelled(path);
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

// Reads the lines of one connection; bytes after a line stay buffered for
// the next one (a progress line and the response may arrive together).
class LineReader {
 public:
  LineReader(int fd, const std::string& path) : fd_(fd), path_(path) {}

  Status Next(std::string* line, Clock::time_point deadline, const OnSignal& on_signal) {
    for (;;) {
      size_t nl = buf_.find('\n', scanned_);
      if (nl != std::string::npos) {
        *line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        scanned_ = 0;
        return Status::Ok();
      }
      scanned_ = buf_.size();
      if (buf_.size() > kMaxResponseLine) {
        return Status::IOError("response from " + path_ + " is longer than " +
                               std::to_string(kMaxResponseLine) + " bytes");
      }
      char chunk[16384];
      ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n > 0) {
        buf_.append(chunk, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) return Status::IOError("the plugin closed " + path_ + " without answering");
      if (errno == EINTR) {
        if (on_signal && !on_signal()) return Cancelled(path_);
        continue;
      }
      if (errno != EAGAIN) return Status::FromErrno(errno, "receive from " + path_);
      Status s = WaitFor(fd_, POLLIN, deadline, path_, "waiting for an answer on", on_signal);
      if (!s.ok()) return s;
    }
  }

 private:
  const int fd_;
  const std::string& path_;
  std::string buf_;
  size_t scanned_ = 0;  // bytes of buf_ known to hold no '\n'
};

}  // namespace

Status ControlCall(const std::string& socket_path, const json& request, json* response,
                   int timeout_ms) {
  return ControlCall(socket_path, request, response, timeout_ms, CallProgressFn());
}

Status ControlCall(const std::string& socket_path, const json& request, json* response,
                   int timeout_ms, const CallProgressFn& progress) {
  try {
    auto deadline_from_now = [timeout_ms] {
      return timeout_ms < 0 ? Clock::time_point::max()
                            : Clock::now() + std::chrono::milliseconds(timeout_ms);
    };
    Clock::time_point deadline = deadline_from_now();
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return Status::FromErrno(errno, "socket");
    Status s = Connect(fd.get(), socket_path, deadline);
    if (s.ok()) s = SendAll(fd.get(), ToLine(request), socket_path, deadline);
    if (!s.ok()) return s;

    uint64_t done = 0, total = 0;
    OnSignal on_signal;
    if (progress) on_signal = [&] { return progress(done, total); };
    LineReader reader(fd.get(), socket_path);
    for (;;) {
      std::string line;
      if (s = reader.Next(&line, deadline, on_signal); !s.ok()) return s;
      json j = json::parse(line, /*cb=*/nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) {
        return Status::IOError("malformed response from the plugin on " + socket_path);
      }
      if (IsProgress(j, &done, &total)) {
        // Returning abandons the call: closing the connection tells the
        // server to cancel the request.
        if (progress && !progress(done, total)) return Cancelled(socket_path);
        deadline = deadline_from_now();
        continue;
      }
      *response = std::move(j);
      return Status::Ok();
    }
  } catch (const std::exception& e) {
    return Status::IOError(std::string("control call failed: ") + e.what());
  }
}

}  // namespace rwd::control
