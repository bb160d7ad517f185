#include "restore_util.h"

#include <fcntl.h>
#include <pty.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <functional>
#include <thread>

namespace rwd::test {

std::vector<std::pair<uint64_t, uint64_t>> SectorDiff(const std::string& a, const std::string& b) {
  REQUIRE(a.size() == b.size());
  constexpr size_t kSector = 512;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (size_t off = 0; off < a.size(); off += kSector) {
    const size_t n = std::min(kSector, a.size() - off);
    if (a.compare(off, n, b, off, n) == 0) continue;
    if (!ranges.empty() && ranges.back().first + ranges.back().second == off) {
      ranges.back().second += n;
    } else {
      ranges.emplace_back(off, n);
    }
  }
  return ranges;
}

std::unique_ptr<Store> OpenStore(const std::string& dir) {
  StoreOptions options;
  options.dir = dir;
  options.create_if_missing = false;
  std::unique_ptr<Store> store;
  Status s = Store::Open(options, &store);
  INFO(s.ToString());
  REQUIRE(s.ok());
  return store;
}

std::string CompareFile(const std::string& path, const std::string& want) {
  std::string got = ReadFile(path);
  if (got.size() != want.size()) {
    return fmt::format("{} holds {} bytes, want {}", path, got.size(), want.size());
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return fmt::format("{} differs at offset {}: got {:#04x}, want {:#04x}", path, i,
                         static_cast<uint8_t>(got[i]), static_cast<uint8_t>(want[i]));
    }
  }
  return "";
}

std::vector<std::string> TempFilesIn(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.find(".rewind-") != std::string::npos) names.push_back(name);
  }
  return names;
}

namespace {

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace

bool WaitForTempFile(const std::string& dir, std::chrono::milliseconds timeout) {
  return WaitUntil([&] { return !TempFilesIn(dir).empty(); }, timeout);
}

bool WaitNoTempFile(const std::string& dir, std::chrono::milliseconds timeout) {
  return WaitUntil([&] { return TempFilesIn(dir).empty(); }, timeout);
}

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

ProcResult RewindIn(const std::string& cwd, const std::vector<std::string>& args) {
  // "$@" keeps every argument as it is.
  std::vector<std::string> argv = {"/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", cwd,
                                   REWIND_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv);
}

ProcResult RewindOnTerminal(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {REWIND_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  ProcResult r;
  r.command = "(on a terminal) " + argv[0];
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(master, buf, sizeof buf);
    if (n > 0) {
      r.out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // EIO once the child has closed the terminal
  }
  ::close(master);
  int wstatus = 0;
  REQUIRE(::waitpid(pid, &wstatus, 0) == pid);
  r.status = ExitStatus::FromWait(wstatus);
  return r;
}

}  // namespace rwd::test
