#include "support/nbd_server.h"

#include <libnbd.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

namespace rwd::test {

namespace {

std::string Tail(const std::string& text, size_t max = 4000) {
  if (text.size() <= max) return text;
  return "...\n" + text.substr(text.size() - max);
}

}  // namespace

// ================================================================= nbdkit

std::unique_ptr<NbdServer> NbdServer::Spawn(NbdServerOptions options) {
  if (options.workdir.empty()) throw std::runtime_error("NbdServer: workdir is required");
  std::unique_ptr<NbdServer> s(new NbdServer());
  s->socket_ = options.socket.empty() ? options.workdir + "/nbd.sock" : options.socket;
  s->pidfile_ = options.workdir + "/nbdkit.pid";
  s->log_path_ = options.workdir + "/nbdkit.log";
  // A socket or pid file left by a killed nbdkit would fool WaitReady.
  unlink(s->socket_.c_str());
  unlink(s->pidfile_.c_str());
  // Each run starts a fresh log, so assertions see only this run.
  unlink(s->log_path_.c_str());

  std::vector<std::string> argv = {"nbdkit", "-f", "--exit-with-parent", "-U", s->socket_,
                                   "-P", s->pidfile_};
  argv.insert(argv.end(), options.nbdkit_flags.begin(), options.nbdkit_flags.end());
  argv.push_back(options.plugin);
  argv.insert(argv.end(), options.params.begin(), options.params.end());
  argv.insert(argv.begin(), options.wrapper.begin(), options.wrapper.end());
  for (const auto& a : argv) {
    if (!s->command_.empty()) s->command_ += ' ';
    s->command_ += a;
  }
  s->options_ = std::move(options);
  s->pid_ = SpawnProcess(argv, s->log_path_, s->log_path_);
  return s;
}

std::unique_ptr<NbdServer> NbdServer::Start(NbdServerOptions options) {
  auto timeout = options.ready_timeout;
  auto s = Spawn(std::move(options));
  std::string why;
  if (!s->WaitReady(timeout, &why)) {
    throw std::runtime_error(why);
  }
  return s;
}

NbdServer::~NbdServer() {
  if (pid_ > 0 && !reaped_) Stop(std::chrono::seconds(10));
}

bool NbdServer::Running() {
  if (reaped_) return false;
  ExitStatus st;
  if (WaitForExit(pid_, std::chrono::milliseconds(0), &st)) {
    status_ = st;
    reaped_ = true;
    return false;
  }
  return true;
}

bool NbdServer::WaitReady(std::chrono::milliseconds timeout, std::string* why) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (!Running()) {
      *why = fmt::format("nbdkit exited before listening ({})\n$ {}\n--- nbdkit log ---\n{}",
                         status_.ToString(), command_, Tail(log()));
      return false;
    }
    // nbdkit writes its pid file once the socket is bound, but runs the
    // plugin's after_fork (where a plugin may open its store and start
    // side services) after that; it accepts connections only then.  So
    // ready means: an NBD handshake completes.  The probe stops at option
    // negotiation, so it opens no plugin connection.
    std::string pid = ReadFile(pidfile_);
    if (!pid.empty() && pid.back() == '\n' && std::filesystem::exists(socket_) && Probe()) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      *why = fmt::format("nbdkit did not listen on {} within {} ms\n$ {}\n--- nbdkit log ---\n{}",
                         socket_, timeout.count(), command_, Tail(log()));
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool NbdServer::Probe() {
  nbd_handle* h = nbd_create();
  if (h == nullptr) return false;
  bool ok = nbd_set_opt_mode(h, true) == 0 && nbd_connect_unix(h, socket_.c_str()) == 0;
  if (ok) nbd_opt_abort(h);
  nbd_close(h);
  return ok;
}

bool NbdServer::WaitExit(std::chrono::milliseconds timeout) {
  if (reaped_) return true;
  ExitStatus st;
  if (!WaitForExit(pid_, timeout, &st)) return false;
  status_ = st;
  reaped_ = true;
  return true;
}

void NbdServer::Kill9() {
  if (reaped_) return;
  kill(pid_, SIGKILL);
  WaitExit(std::chrono::seconds(60));
}

ExitStatus NbdServer::Stop(std::chrono::milliseconds timeout) {
  if (reaped_) return status_;
  kill(pid_, SIGTERM);
  if (!WaitExit(timeout)) {
    kill(pid_, SIGKILL);
    WaitExit(std::chrono::seconds(60));
    status_.timed_out = true;
  }
  return status_;
}

std::string NbdServer::log() const { return ReadFile(log_path_); }

// ================================================================= libnbd

std::string NbdClient::LastError() {
  const char* e = nbd_get_error();
  return e != nullptr ? e : "(no libnbd error)";
}

void NbdClient::Fail(const std::string& what) {
  int err = nbd_get_errno();
  throw NbdError(fmt::format("{}: {} (errno {})", what, LastError(), err), err);
}

std::unique_ptr<NbdClient> NbdClient::Connect(const std::string& socket,
                                              const NbdClientOptions& options) {
  std::unique_ptr<NbdClient> c(new NbdClient());
  c->h_ = nbd_create();
  if (c->h_ == nullptr) c->Fail("nbd_create");
  if (nbd_set_export_name(c->h_, options.export_name.c_str()) == -1) {
    c->Fail("nbd_set_export_name");
  }
  if (options.request_allocation &&
      nbd_add_meta_context(c->h_, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1) {
    c->Fail("nbd_add_meta_context");
  }
  if (nbd_connect_unix(c->h_, socket.c_str()) == -1) {
    c->Fail(fmt::format("nbd_connect_unix {} export '{}'", socket, options.export_name));
  }
  return c;
}

std::string TryConnect(const std::string& socket, const NbdClientOptions& options) {
  try {
    NbdClient::Connect(socket, options);
    return "";
  } catch (const NbdError& e) {
    return e.what();
  }
}

NbdClient::~NbdClient() {
  if (h_ != nullptr) nbd_close(h_);
}

int64_t NbdClient::Size() {
  int64_t s = nbd_get_size(h_);
  if (s < 0) Fail("nbd_get_size");
  return s;
}

#define REWIND_NBD_FLAG(Method, fn)      \
  bool NbdClient::Method() {             \
    int r = fn(h_);                      \
    if (r == -1) Fail(#fn);              \
    return r == 1;                       \
  }
REWIND_NBD_FLAG(CanFlush, nbd_can_flush)
REWIND_NBD_FLAG(CanFua, nbd_can_fua)
REWIND_NBD_FLAG(CanTrim, nbd_can_trim)
REWIND_NBD_FLAG(CanZero, nbd_can_zero)
REWIND_NBD_FLAG(CanMultiConn, nbd_can_multi_conn)
REWIND_NBD_FLAG(IsReadOnly, nbd_is_read_only)
#undef REWIND_NBD_FLAG

bool NbdClient::CanMetaContext(const std::string& name) {
  int r = nbd_can_meta_context(h_, name.c_str());
  if (r == -1) Fail("nbd_can_meta_context");
  return r == 1;
}

void NbdClient::Pread(void* buf, size_t len, uint64_t offset, uint32_t flags) {
  if (nbd_pread(h_, buf, len, offset, flags) == -1) {
    Fail(fmt::format("nbd_pread len={} offset={}", len, offset));
  }
}

std::vector<uint8_t> NbdClient::Pread(size_t len, uint64_t offset) {
  std::vector<uint8_t> buf(len);
  Pread(buf.data(), len, offset);
  return buf;
}

void NbdClient::Pwrite(const void* buf, size_t len, uint64_t offset, uint32_t flags) {
  if (nbd_pwrite(h_, buf, len, offset, flags) == -1) {
    Fail(fmt::format("nbd_pwrite len={} offset={} flags={:#x}", len, offset, flags));
  }
}

void NbdClient::Flush() {
  if (nbd_flush(h_, 0) == -1) Fail("nbd_flush");
}

void NbdClient::Trim(uint64_t len, uint64_t offset, uint32_t flags) {
  if (nbd_trim(h_, len, offset, flags) == -1) {
    Fail(fmt::format("nbd_trim len={} offset={} flags={:#x}", len, offset, flags));
  }
}

void NbdClient::Zero(uint64_t len, uint64_t offset, uint32_t flags) {
  if (nbd_zero(h_, len, offset, flags) == -1) {
    Fail(fmt::format("nbd_zero len={} offset={} flags={:#x}", len, offset, flags));
  }
}

std::vector<Extent> NbdClient::BlockStatus(uint64_t offset, uint64_t len) {
  std::vector<Extent> out;
  uint64_t pos = offset;
  const uint64_t end = offset + len;
  while (pos < end) {
    struct Ctx {
      std::vector<Extent>* out;
      uint64_t end;
      uint64_t next;
    } ctx{&out, end, pos};
    auto cb = [](void* user, const char* metacontext, uint64_t off, uint32_t* entries,
                 size_t nr, int* /*error*/) -> int {
      auto* c = static_cast<Ctx*>(user);
      if (std::strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0) return 0;
      uint64_t p = off;
      for (size_t i = 0; i + 1 < nr && p < c->end; i += 2) {
        uint64_t l = std::min<uint64_t>(entries[i], c->end - p);
        c->out->push_back(Extent{p, l, entries[i + 1]});
        p += l;
      }
      c->next = p;
      return 0;
    };
    uint64_t count = std::min<uint64_t>(end - pos, uint64_t{1} << 30);
    if (nbd_block_status(h_, count, pos, nbd_extent_callback{cb, &ctx, nullptr}, 0) == -1) {
      Fail(fmt::format("nbd_block_status len={} offset={}", count, pos));
    }
    if (ctx.next <= pos) {
      throw NbdError(fmt::format("nbd_block_status at {} made no progress", pos), 0);
    }
    pos = ctx.next;
  }
  return out;
}

namespace {

struct AioCtx {
  std::vector<uint8_t> data;
  NbdClient::Done done;
};

int AioComplete(void* user, int* error) {
  auto* c = static_cast<AioCtx*>(user);
  if (c->done) c->done(*error);
  return 1;
}

void AioFree(void* user) { delete static_cast<AioCtx*>(user); }

}  // namespace

int64_t NbdClient::AioPwrite(std::vector<uint8_t> data, uint64_t offset, uint32_t flags, Done done) {
  auto* ctx = new AioCtx{std::move(data), std::move(done)};
  // libnbd calls AioFree even when it refuses the command.
  return nbd_aio_pwrite(h_, ctx->data.data(), ctx->data.size(), offset,
                        nbd_completion_callback{AioComplete, ctx, AioFree}, flags);
}

int64_t NbdClient::AioBlockStatus(uint64_t len, uint64_t offset, Done done) {
  auto* ctx = new AioCtx{{}, std::move(done)};
  auto ignore = [](void*, const char*, uint64_t, uint32_t*, size_t, int*) -> int { return 0; };
  return nbd_aio_block_status(h_, len, offset, nbd_extent_callback{ignore, nullptr, nullptr},
                              nbd_completion_callback{AioComplete, ctx, AioFree}, 0);
}

int64_t NbdClient::AioFlush(Done done) {
  auto* ctx = new AioCtx{{}, std::move(done)};
  return nbd_aio_flush(h_, nbd_completion_callback{AioComplete, ctx, AioFree}, 0);
}

int64_t NbdClient::AioTrim(uint64_t len, uint64_t offset, uint32_t flags, Done done) {
  auto* ctx = new AioCtx{{}, std::move(done)};
  return nbd_aio_trim(h_, len, offset, nbd_completion_callback{AioComplete, ctx, AioFree}, flags);
}

int64_t NbdClient::AioZero(uint64_t len, uint64_t offset, uint32_t flags, Done done) {
  auto* ctx = new AioCtx{{}, std::move(done)};
  return nbd_aio_zero(h_, len, offset, nbd_completion_callback{AioComplete, ctx, AioFree}, flags);
}

int NbdClient::Poll(int timeout_ms) { return nbd_poll(h_, timeout_ms); }

int NbdClient::InFlight() { return nbd_aio_in_flight(h_); }

bool NbdClient::Drain(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (InFlight() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (Poll(100) == -1) return false;
  }
  return true;
}

void NbdClient::Shutdown() {
  if (nbd_shutdown(h_, 0) == -1) Fail("nbd_shutdown");
}

// ========================================================= control socket

std::unique_ptr<LineClient> LineClient::Connect(const std::string& path) {
  std::unique_ptr<LineClient> c(new LineClient());
  c->fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd_ < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    throw std::runtime_error("socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(c->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error(fmt::format("connect {}: {}", path, std::strerror(errno)));
  }
  return c;
}

LineClient::~LineClient() {
  if (fd_ >= 0) close(fd_);
}

bool LineClient::Send(const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::optional<std::string> LineClient::ReadLine(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

bool LineClient::WaitClosed(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

std::string LineClient::Request(const std::string& request) {
  if (!Send(request + "\n")) {
    throw std::runtime_error(fmt::format("control socket: send failed: {}", std::strerror(errno)));
  }
  auto line = ReadLine();
  if (!line) throw std::runtime_error("control socket: no response line to " + request);
  return *line;
}

}  // namespace rwd::test
