// `rewind checkpoint` and `rewind list`: taking checkpoints and showing the
// timeline.
#include <fmt/format.h>
#include <rewind/control/protocol.h>
#include <rewind/journal/store.h>

#include <iostream>
#include <memory>

#include "backend.h"
#include "command.h"
#include "human.h"

namespace rwd::cli {
namespace {

// ---- checkpoint ------------------------------------------------------------

struct CheckpointOptions {
  std::string dir;
  std::string name;  // validated while parsing; empty: the store picks one
  bool json = false;
};

Status RunCheckpoint(const CheckpointOptions& o) {
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(o.dir, &backend); !s.ok()) return s;
  CheckpointInfo cp;
  Status s = backend->Checkpoint(o.name, &cp);
  Status closed = backend->Close();
  if (!s.ok()) return s;
  if (!closed.ok()) return closed;
  if (o.json) {
    PrintJson(control::ToJson(cp));
  } else {
    std::cout << fmt::format("checkpoint {} at lsn {} ({})\n", cp.name, cp.lsn,
                             HumanTime(cp.time_ns));
  }
  return Status::Ok();
}

constexpr const char* kCheckpointFooter = R"(
Records a crash-consistent checkpoint of the disk: it covers every write
acknowledged before it, takes well under a millisecond whatever the disk's
size, and is durable when the command returns.  Without --name the store
names it cp-<id>.  A name is 1 to 128 of A-Z a-z 0-9 . _ + -, not starting
with '.' or '-'; names are unique within a store.

Examples:
  rewind checkpoint /var/lib/rewind/vm1 --name before-upgrade
  rewind checkpoint /var/lib/rewind/vm1)";

// ---- list ------------------------------------------------------------------

struct ListOptions {
  std::string dir;
  bool json = false;
};

void PrintTimeline(const std::vector<CheckpointInfo>& checkpoints) {
  if (checkpoints.empty()) {
    std::cout << "no checkpoints\n";
    return;
  }
  using Align = Table::Align;
  Table table({{"ID", Align::kRight},
               {"NAME", Align::kLeft},
               {"KIND", Align::kLeft},
               {"LSN", Align::kRight},
               {"TIME UTC", Align::kLeft},
               {"UNDO", Align::kRight},
               {"PINNED", Align::kLeft}});
  for (const CheckpointInfo& cp : checkpoints) {
    table.AddRow({std::to_string(cp.id), cp.name, cp.kind, std::to_string(cp.lsn),
                  HumanTime(cp.time_ns, /*with_zone=*/false), HumanBytes(cp.undo_bytes),
                  cp.pinned ? "yes" : "no"});
  }
  table.Print(std::cout);
}

Status RunList(const ListOptions& o) {
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(o.dir, &backend); !s.ok()) return s;
  std::vector<CheckpointInfo> checkpoints;
  Status s = backend->ListCheckpoints(&checkpoints);
  Status closed = backend->Close();
  if (!s.ok()) return s;
  if (!closed.ok()) return closed;
  if (o.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const CheckpointInfo& cp : checkpoints) list.push_back(control::ToJson(cp));
    PrintJson({{"checkpoints", std::move(list)}});
  } else {
    PrintTimeline(checkpoints);
  }
  return Status::Ok();
}

constexpr const char* kListFooter = R"(
Shows the timeline oldest first: every checkpoint with its id, name, kind
(disk, or vm for a whole-VM checkpoint), the LSN of the last write it covers,
when it was taken, the before-images (undo) it holds and whether it is pinned
against pruning.

Examples:
  rewind list /var/lib/rewind/vm1
  rewind list /var/lib/rewind/vm1 --json | jq -r '.checkpoints[].name')";

}  // namespace

Command AddCheckpointCommand(CLI::App* parent) {
  auto o = std::make_shared<CheckpointOptions>();
  CLI::App* app = parent->add_subcommand("checkpoint", "take a crash-consistent disk checkpoint");
  AddDirArgument(app, &o->dir);
  app->add_option("--name", o->name, "name of the checkpoint (default: cp-<id>)")
      ->type_name("NAME")
      ->check(CheckpointNameValidator());
  AddJsonFlag(app, &o->json);
  app->footer(kCheckpointFooter);
  return {app, [o] { return RunCheckpoint(*o); }};
}

Command AddListCommand(CLI::App* parent) {
  auto o = std::make_shared<ListOptions>();
  CLI::App* app = parent->add_subcommand("list", "show the timeline of checkpoints");
  AddDirArgument(app, &o->dir);
  AddJsonFlag(app, &o->json);
  app->footer(kListFooter);
  return {app, [o] { return RunList(*o); }};
}

}  // namespace rwd::cli
