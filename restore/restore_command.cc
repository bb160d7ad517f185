// `rewind restore`: a raw image of the disk as it was at a point of history.
//
// The store does the work (Store::Restore: a sparse image written to a
// temporary file beside the output, synced, then moved into place), in this
// process or in the running plugin's (the "restore" op of the control
// protocol).  This file adds what belongs to a command line: the output path
// made absolute against our working directory (the plugin's is not ours), a
// progress bar on a terminal, and SIGINT/SIGTERM turned into a clean
// cancellation: the progress callback returns false, the store removes its
// temporary file, and the command exits 1 with "restore interrupted".
#include <fmt/format.h>
#include <rewind/control/protocol.h>
#include <rewind/journal/store.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <system_error>

#include "backend.h"
#include "command.h"
#include "human.h"
#include "interrupt.h"

namespace rwd::cli {
namespace {

struct RestoreArgs {
  std::string dir;
  std::string to;      // the POINT, syntax checked while parsing
  std::string disk;    // --disk: one disk of a store of several
  std::string output;  // as given
  bool force = false;
  bool json = false;
};

// ---- Output ----------------------------------------------------------------

// Made absolute against our working directory, without resolving "..":
// the kernel resolves it as the user's shell would.
std::string AbsoluteOutput(const std::string& output) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(output, ec);
  return ec ? output : p.string();
}

// "restored lsn 1234 (checkpoint before-upgrade, 2026-11-23 10:15:00.123 UTC)
// to FILE: 1 GiB, 12.3 MiB from the journal, 0.8 s"
std::string Summary(const RestoreResult& r, const std::string& output) {
  std::string where =
      r.point.checkpoint.empty()
          ? HumanTime(r.point.time_ns)
          : fmt::format("checkpoint {}, {}", r.point.checkpoint, HumanTime(r.point.time_ns));
  return fmt::format("restored {}lsn {} ({}) to {}: {}, {} from the journal, {:.1f} s\n",
                     r.disk.empty() ? "" : "disk " + r.disk + " at ", r.point.lsn, where, output, HumanBytes(r.bytes), HumanBytes(r.changed_bytes), r.seconds);
}

Status RunRestore(const RestoreArgs& a) {
  InterruptGuard guard;
  const std::string output = AbsoluteOutput(a.output);
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(a.dir, &backend); !s.ok()) return s;

  TerminalProgress meter;
  ProgressFn progress = [&meter](uint64_t done, uint64_t total) {
    if (Interrupted()) return false;
    meter.Update(done, total);
    return true;
  };
  RestoreResult result;
  Status s = Interrupted() ? Status::Aborted("interrupted")
                           : backend->Restore(a.to, a.disk, output, a.force, progress, &result);
  meter.Finish();
  Status closed = backend->Close();
  if (!s.ok()) {
    if (s.code() == Status::Code::kAborted && Interrupted()) {
      return Status::Aborted("restore interrupted");
    }
    return s;
  }
  if (!closed.ok()) return closed;
  if (a.json) {
    PrintJson(control::ToJson(result, output));
  } else {
    std::cout << Summary(result, a.output);
  }
  return Status::Ok();
}

constexpr const char* kRestoreFooter = R"(
Writes a raw image of the disk as it was at POINT to FILE.  The live disk is
not changed and keeps serving its clients meanwhile.  When the plugin runs,
it writes the image itself (asked over DIR/control.sock), so FILE's directory
must be writable by the plugin's user; otherwise this command opens the
store.

The image is sparse: blocks of zeros are left as holes, so FILE takes only
the space of the disk's data.  It is written to a temporary file beside FILE,
synced, and moved into place when complete: a restore that fails or is
interrupted (Ctrl-C) leaves neither FILE nor a temporary file.  An existing
FILE is replaced only with --force.

A store of several disks (the plugin's disk=NAME) restores one disk at a
time: --disk NAME picks it ('rewind info' lists them).  Every disk of such a
store shares one timeline, so the same POINT restored for each disk gives
images from one instant.

POINT is one of:
  NAME                       a checkpoint ('rewind list' shows them)
  lsn:N                      right after write N (lsn:0: the disk as created)
  time:2026-11-23T10:15:00Z  the last write at or before that instant (UTC;
                             fractions and offsets such as +01:00 allowed)
  -10m                       that long ago; units s, m, h, d, w, as in -1h30m

On a terminal a progress bar is shown on stderr.  The summary (or with
--json the result: point, disk (named disks only), output, bytes, data_bytes, changed_bytes,
seconds) goes to stdout.

Examples:
  rewind restore /var/lib/rewind/vm1 --to before-upgrade --output /srv/vm1-before.raw
  rewind restore /var/lib/rewind/vm1 --to time:2026-11-23T10:15:00Z --output vm1.raw
  rewind restore /var/lib/rewind/vm1 --to -10m --output vm1.raw --force
  rewind restore /var/lib/rewind/vm1 --to lsn:18234 --output vm1.raw --json
  rewind restore /var/lib/rewind/vm2 --disk data --to before-upgrade --output data.raw)";

}  // namespace

Command AddRestoreCommand(CLI::App* parent) {
  auto a = std::make_shared<RestoreArgs>();
  CLI::App* app = parent->add_subcommand(
      "restore", "write a raw image of the disk as it was at a point of history");
  AddDirArgument(app, &a->dir);
  app->add_option("--to", a->to,
                  "the point: a checkpoint NAME, lsn:N, time:ISO-8601 or a relative time (-10m)")
      ->required()
      ->type_name("POINT")
      ->check(PointValidator());
  app->add_option("--output", a->output, "the raw image to write")
      ->required()
      ->type_name("FILE")
      ->check([](const std::string& path) -> std::string {
        return path.empty() ? "--output is empty" : "";
      });
  app->add_option("--disk", a->disk,
                  "the disk to restore, for a store of several disks (disk=NAME)")
      ->type_name("NAME");
  app->add_flag("--force", a->force, "replace FILE if it exists");
  AddJsonFlag(app, &a->json);
  app->footer(kRestoreFooter);
  return {app, [a] { return RunRestore(*a); }};
}

}  // namespace rwd::cli
