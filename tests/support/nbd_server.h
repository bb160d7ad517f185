// End-to-end test helpers: an nbdkit process (RAII), a libnbd client and a
// client of the plugin's line-delimited JSON control socket.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/proc_util.h"

struct nbd_handle;

namespace rwd::test {

// ----------------------------------------------------------------- nbdkit

struct NbdServerOptions {
  // The plugin: a path to a .so or a plugin name nbdkit knows ("file").
  std::string plugin;
  // Plugin parameters, "key=value", in order.
  std::vector<std::string> params;
  // Further nbdkit flags, placed before the plugin.
  std::vector<std::string> nbdkit_flags;
  // A command that runs nbdkit (e.g. {"fiu-run", "-x"}), placed before it.
  // It must exec nbdkit, so that the pid is nbdkit's and --exit-with-parent
  // still ties it to the test.
  std::vector<std::string> wrapper;
  // Where the socket, pid file and nbdkit's log go.  Required.
  std::string workdir;
  // The Unix socket; empty: workdir + "/nbd.sock".
  std::string socket;
  // How long Start waits for nbdkit to listen.
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(30)};
};

// nbdkit's memory plugin (a disk that kill -9 empties: the broken target of
// the durability self-checks), size bytes, in workdir.
inline NbdServerOptions MemoryPluginOptions(const std::string& workdir,
                                            const std::string& size = "64M") {
  NbdServerOptions o;
  o.plugin = "memory";
  o.params = {"size=" + size};
  o.workdir = workdir;
  return o;
}

// One nbdkit process: `nbdkit -f --exit-with-parent -U SOCK -P PIDFILE
// [flags] PLUGIN params...`, its stdout and stderr appended to
// workdir/nbdkit.log.  The destructor stops it (SIGTERM, then SIGKILL after
// 10 s).  Not thread-safe; use from one thread.
//
// --exit-with-parent ties nbdkit to the *thread* that forked it, so start
// servers from a thread that outlives them (the test's main thread).
class NbdServer {
 public:
  // Starts nbdkit and waits until it listens.  Throws std::runtime_error,
  // quoting nbdkit's log, when it exits early or does not listen in time.
  static std::unique_ptr<NbdServer> Start(NbdServerOptions options);
  // Starts nbdkit without waiting (for tests that expect it to refuse).
  static std::unique_ptr<NbdServer> Spawn(NbdServerOptions options);

  ~NbdServer();
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  // Waits until nbdkit serves: its pid file exists and an NBD handshake on
  // the socket completes (so the plugin's after_fork has run).  false when
  // it exited first or timed out; *why says which and quotes the log.
  bool WaitReady(std::chrono::milliseconds timeout, std::string* why);
  // Waits for nbdkit to exit by itself; false on timeout.
  bool WaitExit(std::chrono::milliseconds timeout);
  // Whether the process is still running (reaps it when it has ended).
  bool Running();

  // SIGKILL and reap.
  void Kill9();
  // SIGTERM and wait; SIGKILL after timeout (then status().timed_out).
  ExitStatus Stop(std::chrono::milliseconds timeout = std::chrono::seconds(20));

  const std::string& socket() const { return socket_; }
  pid_t pid() const { return pid_; }
  // How it ended; only meaningful once !Running().
  const ExitStatus& status() const { return status_; }
  // Everything nbdkit wrote to stdout and stderr so far.
  std::string log() const;
  const std::string& log_path() const { return log_path_; }
  const std::string& command() const { return command_; }

 private:
  NbdServer() = default;
  bool Probe();
  NbdServerOptions options_;
  std::string socket_;
  std::string pidfile_;
  std::string log_path_;
  std::string command_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  ExitStatus status_;
};

// ----------------------------------------------------------------- libnbd

// A failed libnbd call: the message of nbd_get_error() and nbd_get_errno().
class NbdError : public std::runtime_error {
 public:
  NbdError(const std::string& what, int err) : std::runtime_error(what), errno_(err) {}
  int error() const { return errno_; }

 private:
  int errno_;
};

struct Extent {
  uint64_t offset;
  uint64_t length;
  uint32_t flags;  // LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO
};

struct NbdClientOptions {
  std::string export_name;  // "" is the default export
  bool request_allocation = true;  // ask for base:allocation
};

// One NBD connection.  Synchronous calls throw NbdError on failure.  A
// handle may be used from one thread at a time.
class NbdClient {
 public:
  static std::unique_ptr<NbdClient> Connect(const std::string& socket,
                                            const NbdClientOptions& options = {});
  ~NbdClient();
  NbdClient(const NbdClient&) = delete;
  NbdClient& operator=(const NbdClient&) = delete;

  nbd_handle* handle() { return h_; }

  int64_t Size();
  bool CanFlush();
  bool CanFua();
  bool CanTrim();
  bool CanZero();
  bool CanMultiConn();
  bool IsReadOnly();
  bool CanMetaContext(const std::string& name);

  void Pread(void* buf, size_t len, uint64_t offset, uint32_t flags = 0);
  std::vector<uint8_t> Pread(size_t len, uint64_t offset);
  void Pwrite(const void* buf, size_t len, uint64_t offset, uint32_t flags = 0);
  void Pwrite(const std::vector<uint8_t>& data, uint64_t offset, uint32_t flags = 0) {
    Pwrite(data.data(), data.size(), offset, flags);
  }
  void Flush();
  void Trim(uint64_t len, uint64_t offset, uint32_t flags = 0);
  void Zero(uint64_t len, uint64_t offset, uint32_t flags = 0);
  // base:allocation extents covering [offset, offset+len), in order,
  // clipped to the range (loops until the server has described it all).
  std::vector<Extent> BlockStatus(uint64_t offset, uint64_t len);

  // Asynchronous commands.  done(err) runs inside Poll() with err == 0 on
  // success, or an errno; it must not call into this handle.  Commands are
  // retired automatically.  Returns the cookie, or -1 when libnbd refused
  // to queue the command (then done is never called; see LastError()).
  using Done = std::function<void(int err)>;
  int64_t AioPwrite(std::vector<uint8_t> data, uint64_t offset, uint32_t flags, Done done);
  int64_t AioFlush(Done done);
  // Block status whose extents are ignored: for "does it answer at all".
  int64_t AioBlockStatus(uint64_t len, uint64_t offset, Done done);
  int64_t AioTrim(uint64_t len, uint64_t offset, uint32_t flags, Done done);
  int64_t AioZero(uint64_t len, uint64_t offset, uint32_t flags, Done done);
  // nbd_poll: 1 progress, 0 timeout, -1 error (e.g. the server died).
  int Poll(int timeout_ms);
  int InFlight();
  // Polls until nothing is in flight; false on error or timeout.
  bool Drain(std::chrono::milliseconds timeout);

  // Closes the connection politely (NBD_CMD_DISC).
  void Shutdown();

  // nbd_get_error() of the calling thread.
  static std::string LastError();

 private:
  NbdClient() = default;
  [[noreturn]] void Fail(const std::string& what);
  nbd_handle* h_ = nullptr;
};

// Tries to connect; returns "" on success, else libnbd's error message.
std::string TryConnect(const std::string& socket, const NbdClientOptions& options = {});

// --------------------------------------------------------- control socket

// A raw client of a line-delimited Unix stream socket.
class LineClient {
 public:
  // Throws std::runtime_error when the socket does not accept.
  static std::unique_ptr<LineClient> Connect(const std::string& path);
  ~LineClient();
  LineClient(const LineClient&) = delete;
  LineClient& operator=(const LineClient&) = delete;

  // Sends bytes as they are (add the '\n' yourself).  false on error.
  bool Send(const std::string& bytes);
  // The next line without its '\n'; nullopt on EOF, error or timeout.
  std::optional<std::string> ReadLine(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Waits for the peer to close; true when it did.
  bool WaitClosed(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Sends request + "\n" and reads one line; throws on failure.
  std::string Request(const std::string& request);

 private:
  LineClient() = default;
  int fd_ = -1;
  std::string buf_;
};

}  // namespace rwd::test
