// `rewind diff` and `rewind verify`: looking at history without changing it
// (Store::Diff and Store::Verify, journal/inspect.cc).
#include <fmt/format.h>
#include <rewind/control/protocol.h>
#include <rewind/journal/store.h>
#include <rewind/vmstate/state_store.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "backend.h"
#include "command.h"
#include "human.h"
#include "interrupt.h"

namespace rwd::cli {
namespace {

// ---- diff ------------------------------------------------------------------

struct DiffArgs {
  std::string dir;
  std::string from;  // POINTs, syntax checked while parsing
  std::string to;
  std::string disk;  // --disk: one disk of a store of several
  bool json = false;
};

// One line a range, "OFFSET LENGTH" in bytes first (for scripts), then the
// same for people; then a summary line.
void PrintDiff(const DiffResult& r) {
  for (const DiffRange& range : r.ranges) {
    std::cout << fmt::format("{} {}  ({} at {})\n", range.offset, range.length,
                             HumanBytes(range.length), HumanBytes(range.offset));
  }
  const std::string between =
      fmt::format("{}between {} and {}", r.disk.empty() ? "" : "on disk " + r.disk + " ",
                  DescribePoint(r.from), DescribePoint(r.to));
  const std::string records = Plural(r.records, "record", "records") + " between them";
  if (r.ranges.empty()) {
    std::cout << fmt::format("no differences {}; {}\n", between, records);
    return;
  }
  std::cout << fmt::format("{}, {} differ {}; {}\n", Plural(r.ranges.size(), "range", "ranges"),
                           HumanBytesExact(r.bytes), between, records);
}

Status RunDiff(const DiffArgs& a) {
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(a.dir, &backend); !s.ok()) return s;
  DiffResult result;
  Status s = backend->Diff(a.from, a.to, a.disk, &result);
  Status closed = backend->Close();
  if (!s.ok()) return s;
  if (!closed.ok()) return closed;
  if (a.json) {
    PrintJson(control::ToJson(result));
  } else {
    PrintDiff(result);
  }
  return Status::Ok();
}

constexpr const char* kDiffHead = R"(
Shows the byte ranges of the disk whose content differs between two points
of history, in either order: one line per range, its offset and length in
bytes (then both in human units), and a summary line.  Ranges come in
512-byte sectors clipped to what was written; a range written back with the
same bytes is not shown.  The live disk is not changed.  A store of several
disks (the plugin's disk=NAME) compares one: --disk NAME picks it.

)";

constexpr const char* kDiffTail = R"(

With --json: {"from": point, "to": point, "disk" (named disks), "ranges": [{"offset", "length"}],
"bytes", "records"}: records counts the journal records (writes, zeros,
trims) between the points.

Examples:
  rewind diff /var/lib/rewind/vm1 --from before-upgrade --to after-upgrade
  rewind diff /var/lib/rewind/vm1 --from -1h --to lsn:18234
  rewind diff /var/lib/rewind/vm1 --from before-upgrade --to lsn:20000 --json | jq .bytes)";

// ---- verify ----------------------------------------------------------------

struct VerifyArgs {
  std::string dir;
  bool json = false;
  bool drop_damaged_journal = false;
};

std::string Counts(const VerifyReport& r) {
  return fmt::format("checked {}, {} and {} ({} of payloads), and {} of the live image",
                     Plural(r.redo_records, "redo record", "redo records"),
                     Plural(r.undo_records, "before-image", "before-images"),
                     Plural(r.checkpoints, "checkpoint", "checkpoints"),
                     HumanBytes(r.payload_bytes), Plural(r.image_pages_checked, "page", "pages"));
}

// Verify stops at 1000 damage lines.
constexpr size_t kDamageLimit = 1000;

std::string Problems(const VerifyReport& r) {
  const size_t n = r.damage.size();
  return (n >= kDamageLimit ? "at least " : "") + Plural(n, "problem", "problems");
}

// The saved VM states of whole-VM checkpoints (DIR/vmstate), when there
// are any: every manifest and every chunk, hash-checked.  The plugin does
// not hold them, so this runs in the CLI's process, online or not.  Busy
// while a `rewind vm checkpoint` holds them: verify fails then rather than
// call the store clean without looking.
Status VerifySavedStates(const std::string& dir, VerifyReport* report) {
  const std::string vmstate = dir + "/vmstate";
  std::error_code ec;
  if (!std::filesystem::is_directory(vmstate, ec)) return Status::Ok();
  std::unique_ptr<vm::StateStore> states;
  Status s = vm::StateStore::Open(vmstate, &states);
  if (!s.ok()) {
    if (s.code() == Status::Code::kCorruption) {
      report->damage.push_back("saved VM state: " + s.message());
      return Status::Ok();
    }
    const std::string why = "cannot check the saved VM states in " + vmstate + ": " + s.message();
    return s.code() == Status::Code::kBusy ? Status::Busy(why) : Status::IOError(why);
  }
  return states->Verify(&report->damage);
}

Status RunVerify(const VerifyArgs& a) {
  InterruptGuard guard;
  std::unique_ptr<Backend> backend;
  bool online = false;
  if (Status s = OpenBackend(a.dir, &backend, a.drop_damaged_journal, &online); !s.ok()) return s;
  if (a.drop_damaged_journal) {
    StoreInfo info;
    if (online) {
      std::cerr << "rewind: the plugin serves " << a.dir
                << ", so its journal opened whole: nothing was dropped\n";
    } else if (backend->GetInfo(&info).ok() && !info.recovery_dropped_damage.empty()) {
      std::cerr << "rewind: " << info.recovery_dropped_damage;
      if (info.recovery_cut_records != 0) {
        std::cerr << "; " << Plural(info.recovery_cut_records, "redo record", "redo records")
                  << " dropped from the journal";
      }
      std::cerr << "\n";
    } else {
      std::cerr << "rewind: recovery found no damage to drop in " << a.dir << "\n";
    }
  }
  TerminalProgress meter("records");
  VerifyReport report;
  Status s = Interrupted() ? Status::Aborted("interrupted")
                           : backend->Verify(
                                 [&meter](uint64_t done, uint64_t total) {
                                   if (Interrupted()) return false;
                                   meter.Update(done, total);
                                   return true;
                                 },
                                 &report);
  meter.Finish();
  Status closed = backend->Close();
  if (!s.ok()) {
    if (s.code() == Status::Code::kAborted && Interrupted()) {
      return Status::Aborted("verify interrupted");
    }
    return s;
  }
  if (!closed.ok()) return closed;
  if (s = VerifySavedStates(a.dir, &report); !s.ok()) return s;
  if (a.json) {
    PrintJson(control::ToJson(report));
  } else if (report.clean()) {
    std::cout << Counts(report) << ": clean\n";
  } else {
    std::cout << Counts(report) << ": " << Problems(report) << "\n";
    for (const std::string& line : report.damage) std::cout << "  " << line << "\n";
  }
  if (report.clean()) return Status::Ok();
  return Status::Corruption(fmt::format("store {} is damaged: {}", a.dir, Problems(report)));
}

constexpr const char* kVerifyFooter = R"(
Checks every checksum and invariant of the store: every redo record and its
payload's hash, every before-image and its payload's hash, the checkpoints,
that no write of the journal is missing, that the live image holds the
bytes of the newest writes to it, and every chunk of the saved VM states of
whole-VM checkpoints (DIR/vmstate).  The live image has no checksums: damage
to bytes no recent write covers is not found.  It reads the whole journal, so it takes
a while on a large store; Ctrl-C stops it.  Works whether or not the plugin
runs (it keeps serving meanwhile).

A store that crashed is recovered first.  Recovery cuts the torn tail a
crash leaves (records whose payloads never reached the disk), but it
refuses to cut below the newest sync: a payload missing or damaged there
is damage, and cutting would drop acknowledged writes.  Then verify, like
the plugin, fails with that one line.  --drop-damaged-journal cuts the
journal there anyway, dropping the writes from the damaged one on (it says
how many), and then checks the store: the live image will still hold some
of the dropped writes, which verify reports; restore a checkpoint from
before the damage to get a consistent disk.

Exit status 0 when the store is clean.  Damage is printed one line each,
naming the record, block or offset, and the command exits 1 with
"store DIR is damaged: N problems".  (Exit 1 with another message: the check
itself could not run.)  On a terminal a progress bar is shown on stderr.

With --json: {"clean", "redo_records", "undo_records", "checkpoints",
"payload_bytes", "image_pages_checked", "damage": [lines]}, printed whether
or not the store is clean.

Examples:
  rewind verify /var/lib/rewind/vm1
  rewind verify /var/lib/rewind/vm1 --json | jq -r '.damage[]')";

}  // namespace

Command AddDiffCommand(CLI::App* parent) {
  auto a = std::make_shared<DiffArgs>();
  CLI::App* app =
      parent->add_subcommand("diff", "show the byte ranges that differ between two points");
  AddDirArgument(app, &a->dir);
  app->add_option("--from", a->from, "one point: a checkpoint NAME, lsn:N, time:... or -10m")
      ->required()
      ->type_name("POINT")
      ->check(PointValidator());
  app->add_option("--to", a->to, "the other point")
      ->required()
      ->type_name("POINT")
      ->check(PointValidator());
  app->add_option("--disk", a->disk, "the disk to compare, for a store of several disks")
      ->type_name("NAME");
  AddJsonFlag(app, &a->json);
  app->footer(std::string(kDiffHead) + kPointHelp + kDiffTail);
  return {app, [a] { return RunDiff(*a); }};
}

Command AddVerifyCommand(CLI::App* parent) {
  auto a = std::make_shared<VerifyArgs>();
  CLI::App* app = parent->add_subcommand(
      "verify", "check every checksum and invariant; exit 1 on damage, naming it");
  AddDirArgument(app, &a->dir);
  AddJsonFlag(app, &a->json);
  app->add_flag("--drop-damaged-journal", a->drop_damaged_journal,
                "when recovery finds a synced write's payload damaged, cut the journal there "
                "(losing that write and every later one) instead of refusing to open");
  app->footer(kVerifyFooter);
  return {app, [a] { return RunVerify(*a); }};
}

}  // namespace rwd::cli
