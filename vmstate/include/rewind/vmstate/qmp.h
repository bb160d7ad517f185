// QmpClient: a client of QEMU's machine protocol (QMP).
//
// QMP is line-delimited JSON over a stream socket.  On connect QEMU sends a
// greeting ({"QMP": {"version": ..., "capabilities": [...]}}); the client
// answers with qmp_capabilities, after which it sends commands
// ({"execute": NAME, "arguments": {...}, "id": ID}) and QEMU answers each
// with {"return": ...} or {"error": {"class": ..., "desc": ...}} carrying
// the same id.  Asynchronous events ({"event": NAME, "data": ..., "timestamp":
// ...}) may arrive at any time, also between a command and its reply; the
// client queues them for WaitEvent/TakeEvents.  Members the client does not
// know are ignored.
//
// File descriptors travel with a command as SCM_RIGHTS ancillary data
// (getfd, add-fd): ExecuteWithFd.
//
// Errors are Status values with one-phrase messages: "qemu: <desc>" for an
// error reply, "QMP connection closed" when QEMU goes away, "QMP command X
// timed out after N ms", "QMP: malformed reply ..." for bytes that are not
// QMP.  A client is used from one thread at a time.
#pragma once

#include <rewind/journal/status.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <string>

namespace rwd::vm {

// The byte stream under a QmpClient: a connected Unix socket in production,
// a scripted peer in tests.
class QmpTransport {
 public:
  virtual ~QmpTransport() = default;
  // Sends all of data; with fd >= 0, passes fd along with the first byte
  // (SCM_RIGHTS).
  [[nodiscard]] virtual Status Send(const std::string& data, int fd) = 0;
  // Waits up to timeout for bytes and appends what arrived to *buf.
  // Aborted("QMP connection closed") at end of stream; IOError on failure;
  // OK with nothing appended when the timeout passed.
  [[nodiscard]] virtual Status Receive(std::chrono::milliseconds timeout, std::string* buf) = 0;
};

// A transport over a connected Unix stream socket; takes ownership of fd.
std::unique_ptr<QmpTransport> MakeSocketTransport(int fd);

class QmpClient {
 public:
  using Json = nlohmann::json;
  static constexpr std::chrono::milliseconds kDefaultTimeout{30000};

  // Connects to QEMU's QMP Unix socket at path, reads the greeting and
  // negotiates capabilities.  NotFound when nothing listens there.
  [[nodiscard]] static Status Connect(const std::string& path, std::chrono::milliseconds timeout,
                                      std::unique_ptr<QmpClient>* out);
  // The same over an already connected transport.
  [[nodiscard]] static Status Attach(std::unique_ptr<QmpTransport> transport,
                                     std::chrono::milliseconds timeout,
                                     std::unique_ptr<QmpClient>* out);

  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // The greeting's "QMP" member (version, capabilities).
  const Json& greeting() const { return greeting_; }
  // QEMU's version as major*10000 + minor*100 + micro (70202 for 7.2.2).
  int version() const;

  // Runs a command and stores its "return" member in *ret (may be null).
  // args may be null (no "arguments").  Events that arrive meanwhile are
  // queued.
  [[nodiscard]] Status Execute(const std::string& command, const Json& args, Json* ret,
                               std::chrono::milliseconds timeout = kDefaultTimeout);
  // The same, passing fd with the command (for getfd and add-fd).  The fd
  // stays owned by the caller.
  [[nodiscard]] Status ExecuteWithFd(const std::string& command, const Json& args, int fd,
                                     Json* ret,
                                     std::chrono::milliseconds timeout = kDefaultTimeout);

  // Waits for the next event named name (queued ones first; events of
  // other names that arrive meanwhile stay queued) and stores the whole
  // event object in *event (may be null).  TimedOut is reported as
  // Aborted("QMP: no NAME event within N ms").
  [[nodiscard]] Status WaitEvent(const std::string& name, std::chrono::milliseconds timeout,
                                 Json* event);
  // Reads whatever is available now without waiting, queues its events,
  // and hands over every queued event, oldest first.
  [[nodiscard]] Status TakeEvents(std::deque<Json>* events);

 private:
  explicit QmpClient(std::unique_ptr<QmpTransport> transport);
  // Reads one message (waiting up to timeout); events go to the queue and
  // are reported too.  OK with *msg null when the timeout passed.
  Status ReadMessage(std::chrono::milliseconds timeout, Json* msg);
  Status Run(const std::string& command, const Json& args, int fd, Json* ret,
             std::chrono::milliseconds timeout);

  std::unique_ptr<QmpTransport> transport_;
  std::string buf_;  // bytes received, not yet parsed
  std::deque<Json> events_;
  Json greeting_;
  uint64_t next_id_ = 1;
};

}  // namespace rwd::vm
