#include "cli_util.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace rwd::test {

ProcResult Rewind(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {REWIND_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv);
}

std::string ValueOf(const std::string& text, const std::string& key) {
  for (const std::string& line : NonEmptyLines(text)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    size_t start = line.find_first_not_of(' ', key.size() + 1);
    return start == std::string::npos ? "" : line.substr(start);
  }
  return "<absent>";
}

std::vector<std::string> NamesOf(const std::string& list_json) {
  std::vector<std::string> names;
  nlohmann::json list = nlohmann::json::parse(list_json);
  for (const auto& cp : list.at("checkpoints")) {
    names.push_back(cp.at("name").get<std::string>());
  }
  return names;
}

void CheckOneLineError(const ProcResult& r, const std::string& sub) {
  INFO(r.Describe());
  CHECK(!r.ok());
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(!r.err.empty());
  if (!r.err.empty()) CHECK(r.err.back() == '\n');
  std::string prefix = sub.empty() ? "rewind: " : "rewind: " + sub + ": ";
  CHECK(r.err.rfind(prefix, 0) == 0);
  CHECK(r.err.size() > prefix.size() + 1);
}

void MakeStaleSocket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    throw std::runtime_error("socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int rc = bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  int err = errno;
  close(fd);  // never listened: connecting is refused
  if (rc != 0) throw std::runtime_error("bind " + path + ": " + std::strerror(err));
}

}  // namespace rwd::test
