// `rewind prune`: drop history by a retention policy and reclaim its space
// (Store::Prune, journal/prune.cc), in this process or in the running
// plugin's (the "prune" op, which the plugin runs only while no NBD client
// has the live disk open for writing, unless it is a dry run).
#include <fmt/format.h>
#include <rewind/control/protocol.h>
#include <rewind/journal/store.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "command.h"
#include "human.h"

namespace rwd::cli {
namespace {

struct PruneArgs {
  std::string dir;
  uint64_t keep_last = 0;
  int64_t keep_within_ns = 0;  // DURATION, converted while parsing
  uint64_t keep_daily = 0;
  bool dry_run = false;
  bool json = false;
};

// Every checkpoint of the result, oldest first, with what became of it.
void PrintTable(const PruneResult& r, bool dry_run) {
  struct Row {
    const CheckpointInfo* cp;
    bool kept;
  };
  std::vector<Row> rows;
  for (const CheckpointInfo& cp : r.kept) rows.push_back({&cp, true});
  for (const CheckpointInfo& cp : r.dropped) rows.push_back({&cp, false});
  std::sort(rows.begin(), rows.end(),
            [](const Row& a, const Row& b) { return a.cp->id < b.cp->id; });
  using Align = Table::Align;
  Table table({{"ID", Align::kRight},
               {"NAME", Align::kLeft},
               {"LSN", Align::kRight},
               {"TIME UTC", Align::kLeft},
               {"PINNED", Align::kLeft},
               {"PRUNE", Align::kLeft}});
  for (const Row& row : rows) {
    const char* fate =
        row.kept ? (dry_run ? "would keep" : "kept") : (dry_run ? "would drop" : "dropped");
    table.AddRow({std::to_string(row.cp->id), row.cp->name, std::to_string(row.cp->lsn),
                  HumanTime(row.cp->time_ns, /*with_zone=*/false), row.cp->pinned ? "yes" : "no",
                  fate});
  }
  table.Print(std::cout);
}

void PrintPrune(const PruneResult& r, bool dry_run) {
  if (dry_run) std::cout << "dry run: nothing was changed\n";
  if (r.kept.empty() && r.dropped.empty()) {
    std::cout << "no checkpoints: history is kept by checkpoints, so there is nothing to prune\n";
    return;
  }
  PrintTable(r, dry_run);
  const std::string redo = Plural(r.redo_records_dropped, "redo record", "redo records");
  const std::string undo = Plural(r.undo_records_dropped, "before-image", "before-images");
  KeyValueBlock block;
  if (dry_run) {
    block.Add("checkpoints",
              fmt::format("would keep {}, would drop {}", r.kept.size(), r.dropped.size()));
    block.Add("history", fmt::format("would start at lsn {}", r.history_start_lsn));
    block.Add("records", fmt::format("would drop {} and {}", redo, undo));
    block.Add("space", fmt::format("{} now (what a prune frees is measured when it runs)",
                                   HumanBytes(r.bytes_before)));
  } else {
    block.Add("checkpoints", fmt::format("kept {}, dropped {}", r.kept.size(), r.dropped.size()));
    block.Add("history", fmt::format("starts at lsn {}", r.history_start_lsn));
    block.Add("records", fmt::format("dropped {} and {}", redo, undo));
    block.Add("segments",
              fmt::format("deleted {}", Plural(r.segments_deleted, "payload log segment",
                                               "payload log segments")));
    block.Add("space",
              fmt::format("{} -> {}", HumanBytes(r.bytes_before), HumanBytes(r.bytes_after)));
  }
  block.Print(std::cout);
}

Status RunPrune(const PruneArgs& a) {
  PrunePolicy policy;
  policy.keep_last = a.keep_last;
  policy.keep_within_ns = a.keep_within_ns;
  policy.keep_daily = a.keep_daily;
  policy.dry_run = a.dry_run;
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(a.dir, &backend); !s.ok()) return s;
  PruneResult result;
  Status s = backend->Prune(policy, &result);
  Status closed = backend->Close();
  if (!s.ok()) return s;
  if (!closed.ok()) return closed;
  if (a.json) {
    PrintJson(control::ToJson(result, a.dry_run));
  } else {
    PrintPrune(result, a.dry_run);
  }
  return Status::Ok();
}

constexpr const char* kPruneFooter = R"(
Drops history by a retention policy and reclaims its space.  History is
measured by checkpoints: prune keeps the checkpoints the policy names, and
the oldest of them becomes the oldest point that can be restored, rolled
back to or diffed (older lsn:, time: and relative points are refused from
then on).  Checkpoints between kept ones are dropped too; every point after
the oldest kept one stays reachable.  The newest checkpoint and pinned ones
are always kept.  Give one or more of:

  --keep-last N            the newest N checkpoints
  --keep-within DURATION   checkpoints taken less than DURATION ago: an
                           amount and a unit s, m, h, d or w, as in 24h,
                           7d, 90m, 2w or 1h30m
  --keep-daily N           the newest checkpoint of each of the last N UTC
                           days that have one

A checkpoint is kept when any of them keeps it.  --dry-run shows what would
go and changes nothing.  The output lists every checkpoint with what became
of it, where history now starts, the journal records dropped, the payload
log segments deleted and the space used by redo and undo before and after.

When the plugin runs, it prunes itself, and refuses (exit 1, 'busy') while
an NBD client has the live disk open for writing or a time-travel export is
open; a dry run is always answered.

Examples:
  rewind prune /var/lib/rewind/vm1 --keep-last 10
  rewind prune /var/lib/rewind/vm1 --keep-within 7d --keep-daily 30
  rewind prune /var/lib/rewind/vm1 --keep-last 1 --dry-run
  rewind prune /var/lib/rewind/vm1 --keep-within 24h --json)";

// For a count N: digits only (CLI11 would take "-1" as 2^64 - 1, which
// keeps everything the other way round from what was meant), and not 0.
CLI::Validator AtLeastOne() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const bool digits =
            !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
        if (digits && text.find_first_not_of('0') != std::string::npos) return "";
        return "N must be a whole number, at least 1 (the newest checkpoint is always kept)";
      },
      "", "N");
}

}  // namespace

Command AddPruneCommand(CLI::App* parent) {
  auto a = std::make_shared<PruneArgs>();
  CLI::App* app = parent->add_subcommand("prune", "drop history by a retention policy");
  AddDirArgument(app, &a->dir);
  CLI::Option* last = app->add_option("--keep-last", a->keep_last, "keep the newest N checkpoints")
                          ->type_name("N")
                          ->check(AtLeastOne());
  CLI::Option* within =
      app->add_option("--keep-within", a->keep_within_ns,
                      "keep the checkpoints taken less than DURATION ago (24h, 7d, 90m, 2w)")
          ->type_name("DURATION")
          ->transform(DurationValidator());
  CLI::Option* daily =
      app->add_option("--keep-daily", a->keep_daily,
                      "keep the newest checkpoint of each of the last N days that have one")
          ->type_name("N")
          ->check(AtLeastOne());
  app->add_flag("--dry-run", a->dry_run, "show what would be dropped; change nothing");
  AddJsonFlag(app, &a->json);
  app->footer(kPruneFooter);
  // After parsing (and after --help): a prune without a policy is a usage
  // error, before any store is touched.
  app->callback([last, within, daily] {
    if (last->count() == 0 && within->count() == 0 && daily->count() == 0) {
      throw CLI::ValidationError(
          "prune needs a policy: --keep-last N, --keep-within DURATION or --keep-daily N");
    }
  });
  return {app, [a] { return RunPrune(*a); }};
}

}  // namespace rwd::cli
