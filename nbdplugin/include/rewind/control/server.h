// ControlServer: the plugin's end of the control protocol.
//
// It listens on DIR/control.sock (mode 0600) and answers hello, info,
// checkpoint, list, restore, rollback, diff, verify and prune from a Store
// held open by the plugin.  One thread accepts; each connection is served by
// its own thread, at most max_connections at once (further ones get a "busy"
// error and are closed).  Peers of another uid are refused, except root.
// Long work runs on its connection's thread; a restore or verify is
// cancelled when the client goes away or the server stops, a rollback,
// diff or prune runs to its end.  Rollback and prune run through
// ControlServerOptions::exclusive.
#pragma once

#include <rewind/control/protocol.h>
#include <rewind/journal/status.h>
#include <rewind/journal/store.h>

#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <sys/types.h>

namespace rwd::control {

struct ControlServerOptions {
  // Where to listen; normally SocketPath(store directory).
  std::string socket_path;
  // A connection idle this long is closed.
  int idle_timeout_ms = kIdleTimeoutMs;
  // Connections served at once.
  int max_connections = 16;
  // Receives one-line notes (refused peers, failed accepts); may be empty.
  // Called from the server's threads.
  std::function<void(const std::string&)> log;
  // Runs work that needs the live disk to itself (rollback, prune): calls
  // fn when no NBD client has the live disk open for writing, keeping new
  // writers out meanwhile, and returns its status; else a Busy status
  // without calling fn.  Empty: fn runs directly.  Set by the plugin.
  std::function<Status(const std::function<Status()>&)> exclusive;
  // The same for a rollback whose client vouches that the connected
  // writers are idle (a QEMU waiting for an incoming migration): runs fn
  // with them connected, keeping new writers out.  Empty: as exclusive.
  std::function<Status(const std::function<Status()>&)> exclusive_quiesced;
  // While a request that asked for progress runs, a line at least this
  // often (kKeepAliveMs; tests shorten it).
  int keepalive_ms = kKeepAliveMs;
};

// What a request being answered may do with its connection.  Long work
// (restore) reports progress and learns whether to go on through it.
struct RequestChannel {
  // Sends one line (a progress message, ending in '\n') ahead of the
  // response; false when it could not be sent.  Empty: no progress lines.
  std::function<bool(const std::string& line)> send;
  // False once the work should stop: the client has gone or the server
  // stops.  Empty: never.
  std::function<bool()> alive;
};

// Answers one request line (without '\n') from store: the response object,
// a result or an error.  A request that asked for progress may first get
// progress lines through channel->send, at most one per
// kProgressIntervalMs and at least one per options->keepalive_ms; channel
// may be null.  Rollback and prune (not a dry run) run inside
// options->exclusive when it is set; options may be null (defaults, no
// hook).  Never throws but for std::bad_alloc.
nlohmann::json HandleRequestLine(Store& store, std::string_view line,
                                 const RequestChannel* channel = nullptr,
                                 const ControlServerOptions* options = nullptr);

class ControlServer {
 public:
  // Binds options.socket_path (replacing a stale socket left by a dead
  // plugin; refusing when a plugin answers there or a non-socket file is in
  // the way) and starts serving.  *store must stay valid until Stop returns.
  [[nodiscard]] static Status Start(const ControlServerOptions& options, Store* store,
                                    std::unique_ptr<ControlServer>* out);

  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  // Calls Stop.
  ~ControlServer();

  // Stops accepting and removes the socket, then ends every connection (a
  // request being answered is answered first; a restore is cancelled) and
  // joins every thread.  Returns promptly; idempotent.
  void Stop();

  const std::string& socket_path() const { return options_.socket_path; }

 private:
  struct Connection;

  ControlServer(const ControlServerOptions& options, Store* store, int listen_fd, int wake_read,
                int wake_write, dev_t dev, ino_t ino);
  void AcceptLoop();
  void Admit(int fd);
  void Serve(int fd);
  // Whether the client on fd is still connected and the server not
  // stopping; does not wait.
  bool Alive(int fd) const;
  // Sends all of data unless the peer stalls past the idle timeout, the
  // server stops or the connection fails.
  bool SendAll(int fd, const std::string& data);
  // Joins finished connection threads; all of them when wait is true.
  // Called by the accept thread, or by Stop once that thread has ended.
  void Reap(bool wait);
  void Log(const std::string& line) const;

  const ControlServerOptions options_;
  Store* const store_;
  int listen_fd_;
  // Written once by Stop; every poll of the server watches the read end.
  int wake_read_;
  int wake_write_;
  // Identity of the socket file we bound, so Stop removes only ours.
  dev_t dev_;
  ino_t ino_;
  std::thread accept_thread_;
  // Owned by the accept thread while it runs, then by Stop.
  std::list<std::unique_ptr<Connection>> connections_;
  std::mutex stop_mu_;
  bool stopped_ = false;  // guarded by stop_mu_
};

}  // namespace rwd::control
