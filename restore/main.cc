// rewind: the command line of the rewind time machine.
//
// Design: main builds a CLI11 parser with one subcommand per action (see
// command.h), parses, and runs the chosen subcommand.  A subcommand reaches
// the store through a Backend (backend.h): the running plugin's control
// socket when one answers, the store opened in-process otherwise.
//
// Contract with scripts: stdout carries only the result (text, or JSON with
// --json); every error is one line on stderr, "rewind: SUBCOMMAND: message",
// and the exit status is 0 on success, 1 when the work failed and 2 when the
// command line was wrong (nothing was touched then).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "command.h"

#ifndef REWIND_VERSION
#error "REWIND_VERSION must be defined by the build"
#endif

namespace rwd::cli {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr const char* kDescription =
    "rewind: a time machine under VM disks.  Manages the stores that the\n"
    "nbdkit rewind plugin serves: their checkpoints and history.";

constexpr const char* kFooter = R"(
Every subcommand but 'vm' works whether or not the plugin is running
(through DIR/control.sock when it is; 'vm' needs it and QEMU's QMP socket),
prints text by default and JSON with --json,
and exits 1 on failure, 2 on a bad command line.  'rewind SUBCOMMAND --help'
describes each.

Examples:
  rewind create /var/lib/rewind/vm1 --size 20G
  nbdkit -U /run/vm1.sock rewind dir=/var/lib/rewind/vm1
  rewind checkpoint /var/lib/rewind/vm1 --name before-upgrade
  rewind list /var/lib/rewind/vm1
  rewind restore /var/lib/rewind/vm1 --to before-upgrade --output /srv/vm1.raw
  rewind rollback /var/lib/rewind/vm1 --to before-upgrade
  rewind diff /var/lib/rewind/vm1 --from before-upgrade --to -10m
  rewind verify /var/lib/rewind/vm1
  rewind prune /var/lib/rewind/vm1 --keep-within 7d
  rewind pin /var/lib/rewind/vm1 before-upgrade
  rewind vm checkpoint --qmp /run/vm1/qmp.sock /var/lib/rewind/vm1 --live
  rewind supervise /var/lib/rewind/vm1 --interval 600 -- qemu-system-x86_64 ...)";

// Errors must stay on one line, whatever the message holds.
std::string OneLine(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

void PrintError(const std::string& where, const std::string& message) {
  std::string prefix = where.empty() ? "rewind: " : "rewind: " + where + ": ";
  std::cerr << prefix << OneLine(message) << std::endl;
}

// The subcommand on the command line, or null when none was reached.
// "vm checkpoint" for a subcommand of a subcommand, "restore" otherwise.
std::string FullName(const CLI::App* app) {
  std::string name = app->get_name();
  for (const CLI::App* p = app->get_parent(); p != nullptr && p->get_parent() != nullptr;
       p = p->get_parent()) {
    name = p->get_name() + " " + name;
  }
  return name;
}

const Command* Selected(const std::vector<Command>& commands) {
  for (const Command& c : commands) {
    if (c.app->parsed()) return &c;
  }
  return nullptr;
}

int ReportParseError(const CLI::App& app, const std::vector<Command>& commands,
                     const CLI::ParseError& e) {
  if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
    return app.exit(e);  // --help, --version
  }
  const Command* c = Selected(commands);
  std::string name = c != nullptr ? FullName(c->app) : "";
  std::string help = c != nullptr ? "rewind " + name + " --help" : "rewind --help";
  PrintError(name, fmt::format("{} (see '{}')", e.what(), help));
  return kExitUsage;
}

int Run(const Command& command) {
  Status s;
  try {
    s = command.run();
  } catch (const std::exception& e) {
    s = Status::IOError(e.what());
  }
  if (s.ok()) {
    std::cout.flush();
    if (!std::cout) s = Status::IOError("cannot write the output");
  }
  if (!s.ok()) {
    PrintError(FullName(command.app), s.message());
    return kExitFailure;
  }
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app(kDescription, "rewind");
  app.set_version_flag("--version", "rewind " REWIND_VERSION);
  app.require_subcommand(1);
  app.footer(kFooter);
  std::vector<Command> commands = {
      AddCreateCommand(&app),
      AddInfoCommand(&app),
      AddCheckpointCommand(&app),
      AddListCommand(&app),
      AddRestoreCommand(&app),
      AddRollbackCommand(&app),
      AddDiffCommand(&app),
      AddVerifyCommand(&app),
      AddPruneCommand(&app),
      AddPinCommand(&app),
      AddUnpinCommand(&app),
  };
  for (Command& c : AddVmCommands(&app)) commands.push_back(std::move(c));
  // 'rewind supervise ... -- QEMU-COMMAND...': what follows the first '--'
  // after 'supervise' is QEMU's command line, not rewind's.
  std::vector<std::string> qemu_command;
  int exit_code = 0;
  commands.push_back(AddSuperviseCommand(&app, &qemu_command, &exit_code));
  for (int i = 1; i < argc; i++) {
    if (std::string(argv[i]) != "supervise") continue;
    for (int j = i + 1; j < argc; j++) {
      if (std::string(argv[j]) != "--") continue;
      qemu_command.assign(argv + j + 1, argv + argc);
      if (qemu_command.empty()) {
        PrintError("supervise", "nothing follows '--': give the QEMU command there, or use --qmp "
                                "SOCKET without '--' (see 'rewind supervise --help')");
        return kExitUsage;
      }
      argc = j;
      break;
    }
    break;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return ReportParseError(app, commands, e);
  }
  const Command* c = Selected(commands);
  if (c == nullptr) {  // require_subcommand makes this unreachable
    PrintError("", "no subcommand given (see 'rewind --help')");
    return kExitUsage;
  }
  int rc = Run(*c);
  return rc == 0 && exit_code != 0 ? exit_code : rc;
}

}  // namespace
}  // namespace rwd::cli

int main(int argc, char** argv) { return rwd::cli::Main(argc, argv); }
