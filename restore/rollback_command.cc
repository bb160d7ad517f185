// `rewind rollback`: put the live disk back to a point of history, in place.
//
// The store does the work (Store::Rollback: a before-rollback-<UTC>
// checkpoint first, then the old content of every block changed since the
// point written back through the journal), in this process or in the
// running plugin's (the "rollback" op, which the plugin runs only while no
// NBD client has the live disk open for writing).  This file adds a
// progress bar on a terminal and the summary that tells how to undo it.
//
// A rollback cannot be cancelled half way: SIGINT is not caught.  Killing
// this process does not stop a rollback the plugin runs; a local one left
// unfinished is finished by the store's next open (its marker is durable).
#include <fmt/format.h>
#include <rewind/control/protocol.h>
#include <rewind/journal/store.h>

#include <iostream>
#include <memory>
#include <string>

#include "backend.h"
#include "command.h"
#include "human.h"

namespace rwd::cli {
namespace {

struct RollbackArgs {
  std::string dir;
  std::string to;  // the POINT, syntax checked while parsing
  bool json = false;
};

// "rolled back to lsn 2 (checkpoint one, ...); the state before is checkpoint
// before-rollback-...: 'rewind rollback DIR --to before-rollback-...' undoes it"
// then "examined 64 KiB of changed blocks, rewrote 8 KiB, 0.1 s".
std::string Summary(const RollbackResult& r, const std::string& dir) {
  return fmt::format(
      "rolled back to {}; the state before is checkpoint {}: 'rewind rollback {} --to {}' undoes "
      "it\nexamined {} of changed blocks, rewrote {}, {:.1f} s\n",
      DescribePoint(r.point), r.before.name, dir, r.before.name, HumanBytes(r.examined_bytes),
      HumanBytes(r.rewritten_bytes), r.seconds);
}

Status RunRollback(const RollbackArgs& a) {
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(a.dir, &backend); !s.ok()) return s;
  TerminalProgress meter;
  RollbackResult result;
  Status s = backend->Rollback(
      a.to,
      [&meter](uint64_t done, uint64_t total) {
        meter.Update(done, total);
        return true;
      },
      &result);
  meter.Finish();
  Status closed = backend->Close();
  if (!s.ok()) return s;
  if (!closed.ok()) return closed;
  if (a.json) {
    PrintJson(control::ToJson(result));
  } else {
    std::cout << Summary(result, a.dir);
  }
  return Status::Ok();
}

constexpr const char* kRollbackHead = R"(
Puts the live disk back to POINT, in place.  First it records a checkpoint
named before-rollback-<UTC time>, the state being left: rolling back to that
checkpoint undoes the rollback.  Then it writes back, through the journal
like any write, the old content of every block changed since POINT.  Nothing
is removed from history: every later point stays reachable.

No one may write to the disk meanwhile.  When the plugin runs, it does the
rollback itself and refuses (exit 1, 'busy') while an NBD client has the live
disk open for writing: shut the VM down or disconnect it first.  Read-only
time-travel exports may stay connected.  Otherwise this command opens the
store, which keeps the plugin from starting until it is done.

A rollback cannot be interrupted half way.  If this process or the machine
dies during one, the store finishes it when it is next opened (a running
plugin finishes it anyway).

)";

constexpr const char* kRollbackTail = R"(

On a terminal a progress bar is shown on stderr.  The summary (or with
--json the result: point, before, examined_bytes, rewritten_bytes, seconds)
goes to stdout.

Examples:
  rewind rollback /var/lib/rewind/vm1 --to before-upgrade
  rewind rollback /var/lib/rewind/vm1 --to -10m
  rewind rollback /var/lib/rewind/vm1 --to time:2026-11-23T10:15:00Z --json
  rewind rollback /var/lib/rewind/vm1 --to before-rollback-20261123T101500Z)";

}  // namespace

Command AddRollbackCommand(CLI::App* parent) {
  auto a = std::make_shared<RollbackArgs>();
  CLI::App* app =
      parent->add_subcommand("rollback", "put the live disk back to a point of history, in place");
  AddDirArgument(app, &a->dir);
  app->add_option("--to", a->to,
                  "the point: a checkpoint NAME, lsn:N, time:ISO-8601 or a relative time (-10m)")
      ->required()
      ->type_name("POINT")
      ->check(PointValidator());
  AddJsonFlag(app, &a->json);
  app->footer(std::string(kRollbackHead) + kPointHelp + kRollbackTail);
  return {app, [a] { return RunRollback(*a); }};
}

}  // namespace rwd::cli
