#include "support/proc_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace rwd::test {

namespace fs = std::filesystem;

namespace {

std::string TempRoot() {
  const char* t = std::getenv("TMPDIR");
  // Keep socket paths (root + ~40 bytes) under the 107-byte limit.
  if (t != nullptr && t[0] == '/' && std::strlen(t) < 48) return t;
  return "/tmp";
}

std::string ShellQuote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-./=:,@+%") == std::string::npos) {
    return s;
  }
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

std::string JoinCommand(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += ShellQuote(a);
  }
  return s;
}

std::string ReadFd(int fd) {
  std::string out;
  if (lseek(fd, 0, SEEK_SET) < 0) return out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// fork+exec with the given fds as stdout/stderr (-1: /dev/null).  Only
// async-signal-safe calls happen in the child.
pid_t ForkExec(const std::vector<std::string>& argv, int out_fd, int err_fd) {
  if (argv.empty()) throw std::runtime_error("SpawnProcess: empty argv");
  std::string program = argv[0];
  if (program.find('/') == std::string::npos) {
    program = FindInPath(argv[0]);
    if (program.empty()) {
      throw std::runtime_error(fmt::format("{}: not found in PATH", argv[0]));
    }
  }
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) throw std::runtime_error("open /dev/null failed");
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(devnull);
    throw std::runtime_error(fmt::format("fork: {}", std::strerror(e)));
  }
  if (pid == 0) {
    // Child.
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    signal(SIGPIPE, SIG_DFL);
    dup2(devnull, 0);
    dup2(out_fd >= 0 ? out_fd : devnull, 1);
    dup2(err_fd >= 0 ? err_fd : devnull, 2);
    execv(program.c_str(), cargv.data());
    static const char msg[] = "exec failed\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(127);
  }
  close(devnull);
  return pid;
}

}  // namespace

// ---------------------------------------------------------------- TempDir

TempDir::TempDir(std::string_view prefix) {
  std::string templ = TempRoot() + "/" + std::string(prefix) + "-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    throw std::runtime_error(fmt::format("mkdtemp {}: {}", templ, std::strerror(errno)));
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  if (std::getenv("REWIND_E2E_KEEP") != nullptr) {
    std::cerr << "REWIND_E2E_KEEP: keeping " << path_ << "\n";
    return;
  }
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string TempDir::operator/(std::string_view name) const {
  return path_ + "/" + std::string(name);
}

// ------------------------------------------------------------- ExitStatus

std::string ExitStatus::ToString() const {
  std::string s;
  if (exited) {
    s = fmt::format("exit {}", code);
  } else if (signal != 0) {
    s = fmt::format("signal {} ({})", signal, strsignal(signal));
  } else {
    s = "still running";
  }
  if (timed_out) s = "timed out, then " + s;
  return s;
}

ExitStatus ExitStatus::FromWait(int wstatus) {
  ExitStatus st;
  if (WIFEXITED(wstatus)) {
    st.exited = true;
    st.code = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    st.signal = WTERMSIG(wstatus);
  }
  return st;
}

std::string ProcResult::Describe() const {
  return fmt::format("$ {}\n[{} after {:.3f} s]\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
                     command, status.ToString(), seconds, out, err);
}

// -------------------------------------------------------------- processes

std::string FindInPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string p = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::stringstream ss(p);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) dir = ".";
    std::string full = dir + "/" + program;
    struct stat st;
    if (stat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(full.c_str(), X_OK) == 0) {
      return full;
    }
  }
  return "";
}

std::string SelfExePath() {
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) throw std::runtime_error("readlink /proc/self/exe failed");
  return std::string(exe, static_cast<size_t>(n));
}

ExitStatus RunSelfAsChild(const std::string& test_name,
                          const std::map<std::string, std::string>& env,
                          std::string_view drop_prefix, const std::string& out_file,
                          std::chrono::seconds timeout) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; e++) {
    if (std::string_view(*e).substr(0, drop_prefix.size()) == drop_prefix) continue;
    envs.emplace_back(*e);
  }
  for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string exe = SelfExePath();
  std::string name = test_name, out_flag = "--out", devnull = "/dev/null";
  char* argv[] = {exe.data(), name.data(), out_flag.data(), devnull.data(), nullptr};
  const int out = open(out_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (out < 0) throw std::runtime_error("cannot open " + out_file);
  const pid_t pid = fork();
  if (pid < 0) {
    close(out);
    throw std::runtime_error("fork failed");
  }
  if (pid == 0) {  // async-signal-safe calls only until exec
    const int in = open("/dev/null", O_RDONLY);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    execve(exe.c_str(), argv, envp.data());
    _exit(127);
  }
  close(out);
  ExitStatus st;
  if (!WaitForExit(pid, timeout, &st)) {
    kill(pid, SIGKILL);
    WaitForExit(pid, std::chrono::seconds(30), &st);
    st.timed_out = true;
  }
  return st;
}

pid_t SpawnProcess(const std::vector<std::string>& argv, const std::string& stdout_file,
                   const std::string& stderr_file) {
  auto open_out = [](const std::string& f) {
    if (f.empty()) return -1;
    int fd = open(f.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(fmt::format("open {}: {}", f, std::strerror(errno)));
    return fd;
  };
  int out_fd = open_out(stdout_file);
  int err_fd = -1;
  try {
    err_fd = stderr_file == stdout_file ? out_fd : open_out(stderr_file);
    pid_t pid = ForkExec(argv, out_fd, err_fd);
    if (out_fd >= 0) close(out_fd);
    if (err_fd >= 0 && err_fd != out_fd) close(err_fd);
    return pid;
  } catch (...) {
    if (out_fd >= 0) close(out_fd);
    if (err_fd >= 0 && err_fd != out_fd) close(err_fd);
    throw;
  }
}

bool WaitForExit(pid_t pid, std::chrono::milliseconds timeout, ExitStatus* status) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto nap = std::chrono::microseconds(200);
  for (;;) {
    int ws = 0;
    pid_t r = waitpid(pid, &ws, WNOHANG);
    if (r == pid) {
      *status = ExitStatus::FromWait(ws);
      return true;
    }
    if (r < 0 && errno != EINTR) {
      throw std::runtime_error(fmt::format("waitpid {}: {}", pid, std::strerror(errno)));
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(nap);
    nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(10));
  }
}

ProcResult RunProcess(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  ProcResult res;
  res.command = JoinCommand(argv);
  int out_fd = memfd_create("rewind-test-out", MFD_CLOEXEC);
  int err_fd = memfd_create("rewind-test-err", MFD_CLOEXEC);
  if (out_fd < 0 || err_fd < 0) {
    throw std::runtime_error(fmt::format("memfd_create: {}", std::strerror(errno)));
  }
  double start = NowSeconds();
  pid_t pid;
  try {
    pid = ForkExec(argv, out_fd, err_fd);
  } catch (...) {
    close(out_fd);
    close(err_fd);
    throw;
  }
  if (!WaitForExit(pid, timeout, &res.status)) {
    kill(pid, SIGKILL);
    ExitStatus st;
    WaitForExit(pid, std::chrono::seconds(30), &st);
    res.status = st;
    res.status.timed_out = true;
  }
  res.seconds = NowSeconds() - start;
  res.out = ReadFd(out_fd);
  res.err = ReadFd(err_fd);
  close(out_fd);
  close(err_fd);
  return res;
}

// ------------------------------------------------------------------ files

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::vector<std::string> NonEmptyLines(std::string_view text) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string line(text.substr(pos, nl - pos));
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(line);
    pos = nl + 1;
  }
  return lines;
}

std::string DirListing(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return "<missing>";
  std::vector<std::string> entries;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const auto& p = it->path();
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) continue;
    const char* type = S_ISDIR(st.st_mode)    ? "dir"
                       : S_ISREG(st.st_mode)  ? "file"
                       : S_ISSOCK(st.st_mode) ? "socket"
                       : S_ISLNK(st.st_mode)  ? "link"
                                              : "other";
    int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    entries.push_back(fmt::format("{} {} size={} mode={:o} mtime_ns={}",
                                  fs::relative(p, dir).string(), type,
                                  S_ISDIR(st.st_mode) ? 0 : static_cast<int64_t>(st.st_size),
                                  st.st_mode & 07777, mtime_ns));
  }
  std::sort(entries.begin(), entries.end());
  std::string out;
  for (const auto& e : entries) out += e + "\n";
  if (ec) out += "<error: " + ec.message() + ">\n";
  return out;
}

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace rwd::test
