#include "backend.h"

#include <fmt/format.h>

#include <filesystem>
#include <system_error>

namespace rwd::cli {

std::string AbsoluteDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(dir, ec);
  if (ec) return dir;
  p = p.lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p.string();
}

Status CheckDirectory(const std::string& dir) {
  std::error_code ec;
  auto st = std::filesystem::status(dir, ec);
  if (!std::filesystem::exists(st)) {
    return Status::NotFound(fmt::format("'{}' does not exist", dir));
  }
  if (!std::filesystem::is_directory(st)) {
    return Status::InvalidArgument(fmt::format("'{}' is not a directory", dir));
  }
  return Status::Ok();
}

// The directory is checked first so that a typo gets a plain message rather
// than one about its control socket.
Status OpenBackend(const std::string& dir, std::unique_ptr<Backend>* out,
                   bool drop_damaged_journal, bool* online) {
  if (Status s = CheckDirectory(dir); !s.ok()) return s;
  bool not_listening = false;
  Status s = ConnectOnline(ControlSocketPath(dir), out, &not_listening);
  if (online != nullptr) *online = s.ok();
  if (s.ok() || !not_listening) return s;
  return OpenLocal(dir, out, drop_damaged_journal);
}

}  // namespace rwd::cli
