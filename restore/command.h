// The subcommands of the rewind CLI.
//
// Each Add*Command registers one subcommand on the top-level CLI::App, with
// its options bound to state that the returned Command owns, and returns
// what to run once parsing succeeded.  Parsing validates every argument (a
// bad one is a usage error, exit 2, before any store is touched); run()
// reports everything else as a Status (exit 1).
#pragma once

#include <rewind/journal/status.h>
#include <rewind/journal/store.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace rwd::cli {

struct Command {
  CLI::App* app = nullptr;  // the subcommand; owned by the parent App
  std::function<Status()> run;
};

// store_commands.cc
Command AddCreateCommand(CLI::App* parent);
Command AddInfoCommand(CLI::App* parent);
// checkpoint_commands.cc
Command AddCheckpointCommand(CLI::App* parent);
Command AddListCommand(CLI::App* parent);
Command AddPinCommand(CLI::App* parent);    // `rewind pin DIR NAME`
Command AddUnpinCommand(CLI::App* parent);  // `rewind unpin DIR NAME`
// restore_command.cc
Command AddRestoreCommand(CLI::App* parent);
// rollback_command.cc
Command AddRollbackCommand(CLI::App* parent);
// inspect_commands.cc
Command AddDiffCommand(CLI::App* parent);
Command AddVerifyCommand(CLI::App* parent);
// prune_command.cc
Command AddPruneCommand(CLI::App* parent);
// vm_commands.cc: `vm checkpoint` and `vm restore`, under a `vm` subcommand
std::vector<Command> AddVmCommands(CLI::App* parent);
// supervise_command.cc: qemu_command is what followed '--' on the command
// line (main splits it off before parsing); *exit_code is set to 3 when
// supervision gave up.
Command AddSuperviseCommand(CLI::App* parent, const std::vector<std::string>* qemu_command,
                            int* exit_code);

// ---- Shared by the subcommands (command.cc) --------------------------------

// Adds the positional DIR, required.
CLI::Option* AddDirArgument(CLI::App* app, std::string* dir);
// Adds --json.
CLI::Option* AddJsonFlag(CLI::App* app, bool* json);

// Validators for option->transform(): a SIZE such as "20G" becomes its
// decimal byte count, so the option can bind to an integer.  Messages are
// those of rwd::ParseSize and ValidateBlockSize.
CLI::Validator SizeValidator();       // > 0
CLI::Validator BlockSizeValidator();  // a power of two, 512 .. 1 MiB
// Validators for option->check().
CLI::Validator CheckpointNameValidator();  // rwd::ValidateCheckpointName
CLI::Validator ImageValidator();           // exists and is not a directory
CLI::Validator PointValidator();           // rwd::ParsePoint: the POINT syntax
// For option->transform(): a DURATION such as "24h" becomes its decimal
// nanosecond count (ParseDuration).
CLI::Validator DurationValidator();

// "24h", "7d", "90m", "2w", "1h30m" (units s, m, h, d, w; not zero, at most a
// century) -> nanoseconds.  InvalidArgument with a one-line message
// otherwise.
[[nodiscard]] Status ParseDuration(const std::string& text, int64_t* ns);

// The text of the POINT syntax for footers, one form a line.
extern const char* const kPointHelp;

// "lsn 18234 (checkpoint before-upgrade, 2026-11-23 10:15:00.123 UTC)", or
// "lsn 18234 (2026-11-23 10:15:00.123 UTC)" for a point that names no
// checkpoint.
std::string DescribePoint(const PointInfo& point);

// Writes j to stdout, indented, with a final newline.
void PrintJson(const nlohmann::json& j);

}  // namespace rwd::cli
