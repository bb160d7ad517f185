// The QMP client (see qmp.h for the protocol and the error contract).
//
// Design: the client is a synchronous, single-threaded reader.  Bytes from
// the transport accumulate in buf_; complete lines are cut off one at a
// time, parsed with nlohmann::json (never throwing) and classified:
//   - {"event": ...}             appended to events_ (and shown to the caller),
//   - {"return"/"error": ...}    a reply, matched by "id" in Run,
//   - {"QMP": ...}               the greeting, only expected first.
// Every wait has a deadline: the transport polls with the time left, and a
// Receive that returns nothing means the deadline passed.  Nothing blocks
// without a bound, and a signal (EINTR) only shortens one poll.
#include <rewind/vmstate/qmp.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <thread>
#include <utility>

#include <fmt/format.h>

namespace rwd::vm {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr const char* kClosed = "QMP connection closed";

Status Closed() { return Status::Aborted(kClosed); }

Status TimedOut(std::string what) { return Status::IOError(std::move(what), ETIMEDOUT); }

bool IsTimeout(const Status& s) {
  return s.code() == Status::Code::kIOError && s.ToErrno() == ETIMEDOUT;
}

// Milliseconds left until deadline for poll(), rounded up so that a
// sub-millisecond remainder still waits; 0 once it has passed.
int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left);
}

Clock::time_point DeadlineAfter(milliseconds timeout) {
  if (timeout.count() < 0) timeout = milliseconds(0);
  // Far enough for any caller, far from overflowing time_point.
  if (timeout > std::chrono::hours(24 * 365)) timeout = std::chrono::hours(24 * 365);
  return Clock::now() + timeout;
}

// The start of a message for an error text: at most 80 bytes.
std::string Snippet(const std::string& s) { return s.size() <= 80 ? s : s.substr(0, 77) + "..."; }

Status Malformed(const std::string& text) {
  return Status::IOError("QMP: malformed message '" + Snippet(text) + "'", EPROTO);
}

class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// ------------------------------------------------------------ transport

class SocketTransport final : public QmpTransport {
 public:
  explicit SocketTransport(int fd) : fd_(fd) {}

  Status Send(const std::string& data, int fd, milliseconds timeout) override {
    Clock::time_point deadline = DeadlineAfter(timeout);
    size_t done = 0;
    bool fd_pending = fd >= 0;
    while (done < data.size()) {
      ssize_t n = SendChunk(data.data() + done, data.size() - done, fd_pending ? fd : -1);
      if (n >= 0) {
        // The kernel attaches the fd to the first byte it accepts.
        if (n > 0) fd_pending = false;
        done += static_cast<size_t>(n);
        continue;
      }
      int err = errno;
      if (err == EINTR) continue;
      if (err == EPIPE || err == ECONNRESET) return Closed();
      if (err != EAGAIN && err != EWOULDBLOCK) return Status::FromErrno(err, "QMP: send");
      if (RemainingMs(deadline) == 0) {
        return TimedOut(fmt::format("QMP: send timed out after {} ms", timeout.count()));
      }
      Status s = Poll(POLLOUT, deadline);
      if (!s.ok()) return s;
    }
    return Status::Ok();
  }

  Status Receive(milliseconds timeout, std::string* buf) override {
    constexpr size_t kChunk = 64 * 1024;
    Clock::time_point deadline = DeadlineAfter(timeout);
    for (;;) {
      size_t old = buf->size();
      buf->resize(old + kChunk);
      ssize_t n = ::recv(fd_.get(), buf->data() + old, kChunk, MSG_DONTWAIT);
      int err = errno;
      buf->resize(old + (n > 0 ? static_cast<size_t>(n) : 0));
      if (n > 0) return Status::Ok();
      if (n == 0) return Closed();
      if (err == EINTR) continue;
      if (err == ECONNRESET) return Closed();
      if (err != EAGAIN && err != EWOULDBLOCK) return Status::FromErrno(err, "QMP: receive");
      if (RemainingMs(deadline) == 0) return Status::Ok();
      Status s = Poll(POLLIN, deadline);
      if (!s.ok()) return s;
    }
  }

 private:
  // One sendmsg, with fd as SCM_RIGHTS when fd >= 0.  Returns its result;
  // errno is set on -1.
  ssize_t SendChunk(const char* p, size_t len, int fd) {
    iovec iov{const_cast<char*>(p), len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (fd >= 0) {
      std::memset(control, 0, sizeof(control));
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    return ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  }

  // Waits for events or the deadline, whichever first; EINTR ends the
  // wait early, and the caller's loop retries with the time left.
  Status Poll(short events, Clock::time_point deadline) {
    pollfd p{fd_.get(), events, 0};
    if (::poll(&p, 1, RemainingMs(deadline)) < 0 && errno != EINTR) {
      return Status::FromErrno(errno, "QMP: poll");
    }
    return Status::Ok();
  }

  UniqueFd fd_;
};

// Connects fd to the Unix socket at path, retrying while the listener's
// backlog is full.
Status ConnectSocket(int fd, const std::string& path, Clock::time_point deadline,
                     milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // QEMU refuses to create a socket whose path does not fit sun_path.
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument(fmt::format(
        "QMP socket path '{}' is empty or longer than {} bytes", path, sizeof(addr.sun_path) - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  for (;;) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0) return Status::Ok();
    int err = errno;
    if (err == EINTR) continue;
    // A connect interrupted and retried may find the work already done.
    if (err == EISCONN) return Status::Ok();
    if (err == ENOENT || err == ECONNREFUSED) {
      return Status::NotFound("no QEMU is listening on QMP socket " + path);
    }
    if (err != EAGAIN) return Status::FromErrno(err, "connect to QMP socket " + path);
    if (RemainingMs(deadline) == 0) {
      return TimedOut(
          fmt::format("connecting to QMP socket {} timed out after {} ms", path, timeout.count()));
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
}

// Whether msg, a reply, answers the command with id: it carries that id,
// or it is an error without id (QEMU could not parse the request).
bool Answers(const nlohmann::json& msg, uint64_t id) {
  auto it = msg.find("id");
  if (it == msg.end()) return msg.contains("error");
  return it->is_number_unsigned() && it->get<uint64_t>() == id;
}

// The Status of an error reply's "error" member.
Status ErrorReply(const nlohmann::json& error) {
  std::string desc, cls;
  if (error.is_object()) {
    auto d = error.find("desc");
    if (d != error.end() && d->is_string()) desc = d->get<std::string>();
    auto c = error.find("class");
    if (c != error.end() && c->is_string()) cls = c->get<std::string>();
  }
  if (desc.empty()) desc = error.dump();
  std::string m = "qemu: " + desc;
  if (cls == "CommandNotFound") return Status::NotSupported(std::move(m));
  if (cls == "DeviceNotFound") return Status::NotFound(std::move(m));
  return Status::IOError(std::move(m));
}

// Catches what nlohmann::json or the allocator might throw, so that no
// exception leaves the client.
template <typename F>
Status Guarded(F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    return Status::IOError(std::string("QMP: ") + e.what());
  }
}

}  // namespace

std::unique_ptr<QmpTransport> MakeSocketTransport(int fd) {
  return std::make_unique<SocketTransport>(fd);
}

// --------------------------------------------------------------- client

QmpClient::QmpClient(std::unique_ptr<QmpTransport> transport) : transport_(std::move(transport)) {}

QmpClient::~QmpClient() = default;

Status QmpClient::Connect(const std::string& path, milliseconds timeout,
                          std::unique_ptr<QmpClient>* out) {
  Clock::time_point deadline = DeadlineAfter(timeout);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return Status::FromErrno(errno, "QMP: socket");
  Status s = ConnectSocket(fd.get(), path, deadline, timeout);
  if (!s.ok()) return s;
  s = Attach(MakeSocketTransport(fd.Release()), milliseconds(RemainingMs(deadline)), out);
  if (!s.ok()) return s.WithPrefix("QMP socket " + path);
  return Status::Ok();
}

Status QmpClient::Attach(std::unique_ptr<QmpTransport> transport, milliseconds timeout,
                         std::unique_ptr<QmpClient>* out) {
  Clock::time_point deadline = DeadlineAfter(timeout);
  std::unique_ptr<QmpClient> client(new QmpClient(std::move(transport)));
  Status s = client->ReadGreeting(timeout);
  if (!s.ok()) return s;
  s = client->Execute("qmp_capabilities", Json(), nullptr, milliseconds(RemainingMs(deadline)));
  if (!s.ok()) return s;
  *out = std::move(client);
  return Status::Ok();
}

Status QmpClient::ReadGreeting(milliseconds timeout) {
  return Guarded([&] {
    Json msg;
    Status s = ReadMessage(DeadlineAfter(timeout), &msg);
    if (!s.ok()) return s;
    if (msg.is_null()) {
      return TimedOut(fmt::format("QMP: no greeting within {} ms", timeout.count()));
    }
    auto it = msg.find("QMP");
    if (it == msg.end() || !it->is_object()) return Malformed(msg.dump());
    greeting_ = *it;
    return Status::Ok();
  });
}

int QmpClient::version() const {
  auto v = greeting_.find("version");
  if (v == greeting_.end() || !v->is_object()) return 0;
  auto q = v->find("qemu");
  if (q == v->end() || !q->is_object()) return 0;
  auto part = [&](const char* key) -> int {
    auto it = q->find(key);
    return it != q->end() && it->is_number_integer() ? it->get<int>() : 0;
  };
  return part("major") * 10000 + part("minor") * 100 + part("micro");
}

Status QmpClient::Execute(const std::string& command, const Json& args, Json* ret,
                          milliseconds timeout) {
  return Run(command, args, -1, ret, timeout);
}

Status QmpClient::ExecuteWithFd(const std::string& command, const Json& args, int fd, Json* ret,
                                milliseconds timeout) {
  if (fd < 0) return Status::InvalidArgument("QMP command " + command + " needs a valid fd");
  return Run(command, args, fd, ret, timeout);
}

Status QmpClient::Run(const std::string& command, const Json& args, int fd, Json* ret,
                      milliseconds timeout) {
  if (!broken_.ok()) return broken_;
  if (!args.is_null() && !args.is_object()) {
    return Status::InvalidArgument("the arguments of QMP command " + command +
                                   " are not a JSON object");
  }
  return Guarded([&] {
    Clock::time_point deadline = DeadlineAfter(timeout);
    const uint64_t id = next_id_++;
    Json request = {{"execute", command}, {"id", id}};
    if (!args.is_null()) request["arguments"] = args;
    std::string line;
    try {
      line = request.dump() + "\n";
    } catch (const Json::type_error&) {
      return Status::InvalidArgument("QMP command " + command + " has a string that is not UTF-8");
    }
    Status s = transport_->Send(line, fd, milliseconds(RemainingMs(deadline)));
    if (IsTimeout(s)) {
      // Part of the line may be out: what follows it would not parse.
      broken_ = Status::IOError("QMP: connection unusable after a send timed out", ETIMEDOUT);
    } else if (s.code() == Status::Code::kAborted) {
      broken_ = s;
    }
    if (s.ok()) s = AwaitReply(id, deadline, ret);
    if (IsTimeout(s)) {
      return TimedOut(
          fmt::format("QMP command {} timed out after {} ms", command, timeout.count()));
    }
    return s;
  });
}

Status QmpClient::AwaitReply(uint64_t id, Clock::time_point deadline, Json* ret) {
  for (;;) {
    Json msg;
    Status s = ReadMessage(deadline, &msg);
    if (!s.ok()) return s;
    if (msg.is_null()) return TimedOut("");
    auto r = msg.find("return");
    auto e = msg.find("error");
    if (r == msg.end() && e == msg.end()) continue;  // an event, already queued
    if (!Answers(msg, id)) continue;                 // a stale reply
    if (e != msg.end()) return ErrorReply(*e);
    if (ret != nullptr) *ret = std::move(*r);
    return Status::Ok();
  }
}

Status QmpClient::WaitEvent(const std::string& name, milliseconds timeout, Json* event) {
  return Guarded([&] {
    auto is_named = [&](const Json& ev) {
      auto it = ev.find("event");
      return it != ev.end() && it->is_string() && it->get_ref<const std::string&>() == name;
    };
    for (auto it = events_.begin(); it != events_.end(); ++it) {
      if (!is_named(*it)) continue;
      if (event != nullptr) *event = std::move(*it);
      events_.erase(it);
      return Status::Ok();
    }
    if (!broken_.ok()) return broken_;
    Clock::time_point deadline = DeadlineAfter(timeout);
    for (;;) {
      Json msg;
      Status s = ReadMessage(deadline, &msg);
      if (!s.ok()) return s;
      if (msg.is_null()) {
        return TimedOut(fmt::format("QMP: no {} event within {} ms", name, timeout.count()));
      }
      // Replies here answer commands that already timed out: dropped.
      if (!is_named(msg)) continue;
      // ReadMessage queued it last.
      if (event != nullptr) *event = std::move(events_.back());
      events_.pop_back();
      return Status::Ok();
    }
  });
}

Status QmpClient::NextEvent(milliseconds timeout, Json* event) {
  *event = Json();
  return Guarded([&] {
    if (!events_.empty()) {
      *event = std::move(events_.front());
      events_.pop_front();
      return Status::Ok();
    }
    if (!broken_.ok()) return broken_;
    Clock::time_point deadline = DeadlineAfter(timeout);
    for (;;) {
      Json msg;
      Status s = ReadMessage(deadline, &msg);
      if (!s.ok() || msg.is_null()) return s;
      if (events_.empty()) continue;  // a late reply: dropped
      *event = std::move(events_.front());
      events_.pop_front();
      return Status::Ok();
    }
  });
}

Status QmpClient::TakeEvents(std::deque<Json>* events) {
  Status s = broken_;
  if (s.ok()) {
    s = Guarded([&] {
      for (;;) {
        Json msg;
        Status r = ReadMessage(Clock::now(), &msg);
        if (!r.ok() || msg.is_null()) return r;
      }
    });
  }
  *events = std::move(events_);
  events_.clear();
  return s;
}

bool QmpClient::TakeLine(std::string* line) {
  size_t nl = buf_.find('\n', scanned_);
  if (nl == std::string::npos) {
    scanned_ = buf_.size();
    return false;
  }
  size_t end = nl;
  if (end > 0 && buf_[end - 1] == '\r') --end;
  line->assign(buf_, 0, end);
  buf_.erase(0, nl + 1);
  scanned_ = 0;
  return true;
}

Status QmpClient::ReadMessage(Clock::time_point deadline, Json* msg) {
  *msg = Json();
  std::string line;
  for (;;) {
    while (TakeLine(&line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) return Malformed(line);
      auto ev = j.find("event");
      if (ev != j.end()) {
        if (!ev->is_string()) return Malformed(line);
        events_.push_back(j);
      } else if (!j.contains("return") && !j.contains("error") && !j.contains("QMP")) {
        return Malformed(line);
      }
      *msg = std::move(j);
      return Status::Ok();
    }
    if (buf_.size() > kMaxMessageBytes) {
      broken_ = Status::IOError(fmt::format("QMP: message longer than {} bytes", kMaxMessageBytes),
                                EPROTO);
      buf_.clear();
      scanned_ = 0;
      return broken_;
    }
    size_t before = buf_.size();
    Status s = transport_->Receive(milliseconds(RemainingMs(deadline)), &buf_);
    if (s.code() == Status::Code::kAborted) broken_ = s;
    if (!s.ok()) return s;
    if (buf_.size() == before) return Status::Ok();  // the deadline passed
  }
}

}  // namespace rwd::vm
