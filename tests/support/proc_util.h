// Process and file helpers for the end-to-end tests: temporary directories,
// running a program with captured output, directory listings.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace rwd::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it
// when destroyed, unless REWIND_E2E_KEEP is set in the environment (then its
// path is printed so a failure can be inspected).  Paths are kept short: Unix
// socket paths are limited to 107 bytes.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "rwe2e");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string operator/(std::string_view name) const;

 private:
  std::string path_;
};

// How a child process ended.
struct ExitStatus {
  bool exited = false;     // exited normally; code is valid
  int code = -1;
  int signal = 0;          // killed by this signal
  bool timed_out = false;  // did not end in time (it was then killed)

  bool success() const { return exited && code == 0 && !timed_out; }
  // "exit 0", "exit 1", "signal 9", "timed out (signal 9)".
  std::string ToString() const;
  static ExitStatus FromWait(int wstatus);
};

struct ProcResult {
  ExitStatus status;
  std::string out;
  std::string err;
  double seconds = 0;  // wall-clock run time
  std::string command;  // the command line, for messages

  bool ok() const { return status.success(); }
  // A multi-line description for failure messages: command, status, output.
  std::string Describe() const;
};

// Runs argv[0] (looked up in PATH when it has no '/') with stdin from
// /dev/null and stdout/stderr captured.  Kills it with SIGKILL after timeout.
// Safe to call from any thread.
ProcResult RunProcess(const std::vector<std::string>& argv,
                      std::chrono::milliseconds timeout = std::chrono::seconds(60));

// The full path of an executable found in PATH, or "" when none.
std::string FindInPath(const std::string& program);

// A child started with fork+exec; the caller owns its pid.  stdout and
// stderr go to the given files (opened with O_APPEND|O_CREAT), or /dev/null
// when empty; stdin is /dev/null.  Throws std::runtime_error when the program cannot be found or fork fails.
pid_t SpawnProcess(const std::vector<std::string>& argv, const std::string& stdout_file,
                   const std::string& stderr_file);

// Runs this test binary again as a child process that runs only the test
// case test_name (no Catch2 report), with the parent's environment minus
// the variables starting with drop_prefix, plus env.  stdin is /dev/null;
// stdout and stderr go to out_file.  A child still running after timeout
// is killed with SIGKILL (timed_out set).  Throws std::runtime_error when
// it cannot start.
// The path of this process's executable (/proc/self/exe).  Throws
// std::runtime_error when it cannot be read.
std::string SelfExePath();

ExitStatus RunSelfAsChild(const std::string& test_name,
                          const std::map<std::string, std::string>& env,
                          std::string_view drop_prefix, const std::string& out_file,
                          std::chrono::seconds timeout);

// Waits for pid to end, at most timeout; returns false when it is still
// running.  On true, *status is filled and the child is reaped.
bool WaitForExit(pid_t pid, std::chrono::milliseconds timeout, ExitStatus* status);

// Whole-file helpers; ReadFile returns "" for a missing file.
std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, std::string_view data);

// The non-empty lines of text (trailing '\r' removed).
std::vector<std::string> NonEmptyLines(std::string_view text);

// A listing of everything under dir, one entry a line, sorted: relative
// path, type, size and mtime in nanoseconds.  For "the store is unchanged".
// A missing dir gives "<missing>".
std::string DirListing(const std::string& dir);

// Seconds since an arbitrary point, for timing.
double NowSeconds();

}  // namespace rwd::test
