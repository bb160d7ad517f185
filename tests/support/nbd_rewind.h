// Glue for the end-to-end tests of rewind: the built plugin and CLI, the
// skip rule, JSON output of the CLI, test patterns.  Header-only because it
// uses REWIND_PLUGIN_PATH and REWIND_CLI_PATH, which only the e2e target
// defines.
#pragma once

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <libnbd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "support/nbd_server.h"
#include "support/patterns.h"
#include "support/proc_util.h"

#if !defined(REWIND_PLUGIN_PATH) || !defined(REWIND_CLI_PATH)
#error "nbd_rewind.h needs REWIND_PLUGIN_PATH and REWIND_CLI_PATH (tests/e2e/CMakeLists.txt)"
#endif

namespace rwd::test {

inline constexpr const char* kPluginPath = REWIND_PLUGIN_PATH;
inline constexpr const char* kCliPath = REWIND_CLI_PATH;

// The exit code ctest treats as "skipped" (SKIP_RETURN_CODE in
// tests/e2e/CMakeLists.txt).
inline constexpr int kSkipExitCode = 77;

// Ends the test run as skipped, saying why, when nbdkit is not installed.
// Catch2 v2 has no SKIP, and a test that returns early would pass silently,
// so the process exits with kSkipExitCode, which ctest reports as skipped
// and a direct run reports as a non-zero exit.  Anything else missing (the
// built plugin or CLI) is a failure, not a skip.
inline void RequireNbdkitOrSkip() {
  if (FindInPath("nbdkit").empty()) {
    std::fprintf(stderr,
                 "SKIPPED: nbdkit is not installed (not found in PATH); the end-to-end tests "
                 "need it (Debian package nbdkit)\n");
    std::fflush(nullptr);
    std::exit(kSkipExitCode);
  }
  INFO("plugin: " << kPluginPath << "  cli: " << kCliPath);
  REQUIRE(access(kPluginPath, R_OK) == 0);
  REQUIRE(access(kCliPath, X_OK) == 0);
}

// nbdkit with the built rewind plugin; its socket, pid file and log in work.
inline NbdServerOptions RewindOptions(const TempDir& work, std::vector<std::string> params) {
  NbdServerOptions o;
  o.plugin = kPluginPath;
  o.params = std::move(params);
  o.workdir = work.path();
  return o;
}

inline std::unique_ptr<NbdServer> StartRewind(const TempDir& work, std::vector<std::string> params) {
  return NbdServer::Start(RewindOptions(work, std::move(params)));
}

// ------------------------------------------------------------- exports

// The export names and descriptions that NBD_OPT_LIST returns, in order.
inline std::vector<std::pair<std::string, std::string>> ListExportsWithDescriptions(
    const std::string& socket) {
  std::vector<std::pair<std::string, std::string>> out;
  nbd_handle* h = nbd_create();
  REQUIRE(h != nullptr);
  REQUIRE(nbd_set_opt_mode(h, true) == 0);
  INFO(NbdClient::LastError());
  REQUIRE(nbd_connect_unix(h, socket.c_str()) == 0);
  auto cb = [](void* user, const char* name, const char* description) -> int {
    static_cast<std::vector<std::pair<std::string, std::string>>*>(user)->emplace_back(name,
                                                                                        description);
    return 0;
  };
  int n = nbd_opt_list(h, nbd_list_callback{cb, &out, nullptr});
  INFO(NbdClient::LastError());
  CHECK(n >= 0);
  nbd_opt_abort(h);
  nbd_close(h);
  return out;
}

// The export names alone.
inline std::vector<std::string> ListExportNames(const std::string& socket) {
  std::vector<std::string> names;
  for (auto& [name, description] : ListExportsWithDescriptions(socket)) names.push_back(name);
  return names;
}

// Starts nbdkit with params, which must make it refuse to start: it exits
// non-zero within 30 s, and its log holds exactly one non-empty line, which
// contains every one of phrases.  Returns that line.
inline std::string ExpectNbdkitRefuses(const TempDir& work, const std::vector<std::string>& params,
                                       const std::vector<std::string>& phrases) {
  auto server = NbdServer::Spawn(RewindOptions(work, params));
  bool exited = server->WaitExit(std::chrono::seconds(30));
  std::string log = server->log();
  INFO("$ " << server->command() << "\n--- nbdkit log ---\n" << log << "--- end ---");
  if (!exited) server->Kill9();
  REQUIRE(exited);
  CHECK(server->status().exited);
  CHECK(server->status().code != 0);
  auto lines = NonEmptyLines(log);
  CHECK(lines.size() == 1);
  for (const auto& p : phrases) {
    INFO("expected phrase: " << p);
    CHECK(log.find(p) != std::string::npos);
  }
  return lines.empty() ? "" : lines[0];
}

// Runs the rewind CLI with args.
inline ProcResult RunCli(std::vector<std::string> args,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  args.insert(args.begin(), kCliPath);
  return RunProcess(args, timeout);
}

// Runs the CLI, requires exit 0 and stdout that is one JSON document.
inline nlohmann::json RunCliJson(std::vector<std::string> args) {
  ProcResult r = RunCli(std::move(args));
  INFO(r.Describe());
  if (r.seconds > 1.0) {
    std::fprintf(stderr, "note: slow CLI call (%.3f s): %s\n", r.seconds, r.command.c_str());
  }
  REQUIRE(r.ok());
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

// Parses one JSON line (e.g. a control-socket response); REQUIREs success.
inline nlohmann::json ParseJsonLine(const std::string& line) {
  INFO("line: " << line);
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

}  // namespace rwd::test
