// Unix-socket plumbing shared by the control client and server (private to
// rewind_control).
#pragma once

#include <rewind/journal/status.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <utility>

namespace rwd::control {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) Reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership.
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// The address of the socket at path.  A path too long for sun_path is
// reached as /proc/self/fd/N/NAME through an O_PATH descriptor of its
// directory, which *dir_fd holds and must outlive every use of the address.
// A missing directory is NotFound.
[[nodiscard]] Status MakeSocketAddress(const std::string& path, sockaddr_un* addr,
                                       socklen_t* addr_len, UniqueFd* dir_fd);

// Milliseconds left until deadline for poll(): 0 when it has passed, -1 for
// no deadline (deadline == time_point::max()).
int RemainingMs(std::chrono::steady_clock::time_point deadline);

}  // namespace rwd::control
