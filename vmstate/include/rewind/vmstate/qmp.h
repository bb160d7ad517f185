// QmpClient: a client of QEMU's machine protocol (QMP).
//
// QMP is line-delimited JSON over a stream socket.  On connect QEMU sends a
// greeting ({"QMP": {"version": ..., "capabilities": [...]}}); the client
// answers with qmp_capabilities, after which it sends commands
// ({"arguments": {...}, "execute": NAME, "id": ID}) and QEMU answers each
// with {"return": ...} or {"error": {"class": ..., "desc": ...}} carrying
// the same id.  Asynchronous events ({"event": NAME, "data": ..., "timestamp":
// ...}) may arrive at any time, also between a command and its reply; the
// client queues them for WaitEvent/TakeEvents.  Members the client does not
// know are ignored.
//
// Every command carries a fresh numeric id, and a reply is taken as the
// answer to the command whose id it carries: a reply with another id (the
// late answer to a command that timed out) is dropped.  The one exception
// is an error without id, which is how QEMU answers a request it could not
// parse: since every request the client sends has an id, it answers the
// command in flight.
//
// QEMU ends each message with "\r\n" and never breaks one across lines
// (the default pretty=off of -qmp; pretty=on is not supported).
//
// File descriptors travel with a command as SCM_RIGHTS ancillary data
// (getfd, add-fd): ExecuteWithFd.
//
// Errors are Status values with one-phrase messages:
//   "qemu: <desc>"                          an error reply: NotSupported for
//                                           CommandNotFound, NotFound for
//                                           DeviceNotFound, IOError else
//   "QMP connection closed"                 Aborted: QEMU went away (EOF,
//                                           ECONNRESET, EPIPE)
//   "QMP command X timed out after N ms"    IOError with ETIMEDOUT
//   "QMP: no NAME event within N ms"        IOError with ETIMEDOUT
//   "QMP: malformed message '...'"          IOError with EPROTO: bytes that
//                                           are not QMP
// After the connection closed, a message too long to buffer, or a command
// that could not be sent in time (QEMU not reading), every later call fails.
// A reply or event that did not come in time, or a malformed message,
// leaves the client usable.  A client is used from one thread at a time.
#pragma once

#include <rewind/journal/status.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

namespace rwd::vm {

// The byte stream under a QmpClient: a connected Unix socket in production,
// a scripted peer in tests.
class QmpTransport {
 public:
  virtual ~QmpTransport() = default;
  // Sends all of data, waiting at most timeout for room; with fd >= 0,
  // passes fd along with the first byte (SCM_RIGHTS).  Aborted("QMP
  // connection closed") when the peer is gone; IOError with ETIMEDOUT when
  // the timeout passed first.
  [[nodiscard]] virtual Status Send(const std::string& data, int fd,
                                    std::chrono::milliseconds timeout) = 0;
  // Waits up to timeout for bytes and appends what arrived to *buf.
  // Aborted("QMP connection closed") at end of stream; IOError on failure;
  // OK with nothing appended when, and only when, the timeout passed.
  [[nodiscard]] virtual Status Receive(std::chrono::milliseconds timeout, std::string* buf) = 0;
};

// A transport over a connected Unix stream socket; takes ownership of fd.
std::unique_ptr<QmpTransport> MakeSocketTransport(int fd);

class QmpClient {
 public:
  using Json = nlohmann::json;
  static constexpr std::chrono::milliseconds kDefaultTimeout{30000};
  // The longest message the client buffers (query-qmp-schema is ~200 KiB).
  static constexpr size_t kMaxMessageBytes = 16u << 20;

  // Connects to QEMU's QMP Unix socket at path, reads the greeting and
  // negotiates capabilities, all within timeout.  NotFound when the socket
  // does not exist or nothing listens there.  Errors after the connect
  // name the path.
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
  // QEMU's version as major*10000 + minor*100 + micro (70202 for 7.2.2);
  // 0 when the greeting does not say.
  int version() const;

  // Runs a command and stores its "return" member in *ret (may be null).
  // args is null (no "arguments") or an object.  Events that arrive
  // meanwhile are queued.
  [[nodiscard]] Status Execute(const std::string& command, const Json& args, Json* ret,
                               std::chrono::milliseconds timeout = kDefaultTimeout);
  // The same, passing fd with the command (for getfd and add-fd).  The fd
  // stays owned by the caller.
  [[nodiscard]] Status ExecuteWithFd(const std::string& command, const Json& args, int fd,
                                     Json* ret,
                                     std::chrono::milliseconds timeout = kDefaultTimeout);

  // Waits for the next event named name (queued ones first; events of
  // other names that arrive meanwhile stay queued) and stores the whole
  // event object in *event (may be null).
  [[nodiscard]] Status WaitEvent(const std::string& name, std::chrono::milliseconds timeout,
                                 Json* event);
  // Waits up to timeout for any event (queued ones first) and stores it in
  // *event; OK with *event null when none came in time.
  [[nodiscard]] Status NextEvent(std::chrono::milliseconds timeout, Json* event);
  // Reads whatever is available now without waiting, queues its events,
  // and hands over every queued event, oldest first.  The queued events are
  // handed over also when reading fails (e.g. the SHUTDOWN event before the
  // connection closed); the failure is returned.
  [[nodiscard]] Status TakeEvents(std::deque<Json>* events);

 private:
  using Clock = std::chrono::steady_clock;

  explicit QmpClient(std::unique_ptr<QmpTransport> transport);
  // Reads one message, waiting until deadline; an event is also queued.
  // OK with *msg null when the deadline passed.
  Status ReadMessage(Clock::time_point deadline, Json* msg);
  // Takes the next complete line out of buf_, without its line ending.
  bool TakeLine(std::string* line);
  Status ReadGreeting(std::chrono::milliseconds timeout);
  Status Run(const std::string& command, const Json& args, int fd, Json* ret,
             std::chrono::milliseconds timeout);
  // Reads until the reply to command id; IOError(ETIMEDOUT) at deadline.
  Status AwaitReply(uint64_t id, Clock::time_point deadline, Json* ret);

  std::unique_ptr<QmpTransport> transport_;
  std::string buf_;     // bytes received, not yet parsed
  size_t scanned_ = 0;  // bytes at the start of buf_ known to hold no '\n'
  Status broken_;       // once not OK, what every later call returns
  std::deque<Json> events_;
  Json greeting_;
  uint64_t next_id_ = 1;
};

}  // namespace rwd::vm
