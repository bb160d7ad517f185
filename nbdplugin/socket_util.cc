#include "socket_util.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

namespace rwd::control {

Status MakeSocketAddress(const std::string& path, sockaddr_un* addr, socklen_t* addr_len,
                         UniqueFd* dir_fd) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  std::string target = path;
  if (path.size() >= sizeof(addr->sun_path)) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
    if (dir.empty()) dir = "/";
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    int fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == ENOENT) return Status::NotFound("directory " + dir + " does not exist");
      return Status::FromErrno(err, "open " + dir);
    }
    dir_fd->Reset(fd);
    target = "/proc/self/fd/" + std::to_string(fd) + "/" + name;
    if (target.size() >= sizeof(addr->sun_path)) {
      return Status::InvalidArgument("socket name '" + name + "' is too long");
    }
  }
  if (target.empty()) return Status::InvalidArgument("empty socket path");
  std::memcpy(addr->sun_path, target.data(), target.size());
  *addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + target.size() + 1);
  return Status::Ok();
}

int RemainingMs(std::chrono::steady_clock::time_point deadline) {
  using namespace std::chrono;
  if (deadline == steady_clock::time_point::max()) return -1;
  auto left = duration_cast<milliseconds>(deadline - steady_clock::now()).count();
  if (left <= 0) return 0;
  // Round up so that a sub-millisecond remainder still waits.
  return left > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(left) + 1;
}

}  // namespace rwd::control
