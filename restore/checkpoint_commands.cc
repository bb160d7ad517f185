// `rewind checkpoint`, `rewind list`, `rewind pin` and `rewind unpin`:
// taking checkpoints, showing the timeline and keeping checkpoints from
// prune.
#include <fmt/format.h>
#include <rewind/control/protocol.h>
#include <rewind/journal/store.h>
#include <rewind/vmstate/state_store.h>

#include <iostream>
#include <memory>

#include "backend.h"
#include "command.h"
#include "human.h"

namespace rwd::cli {
namespace {

// ---- checkpoint ------------------------------------------------------------

struct CheckpointArgs {
  std::string dir;
  std::string name;  // validated while parsing; empty: the store picks one
  bool pin = false;
  bool json = false;
};

Status RunCheckpoint(const CheckpointArgs& a) {
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(a.dir, &backend); !s.ok()) return s;
  rwd::CheckpointOptions options;
  options.name = a.name;
  options.pinned = a.pin;
  CheckpointInfo cp;
  Status s = backend->Checkpoint(options, &cp);
  Status closed = backend->Close();
  if (!s.ok()) return s;
  if (!closed.ok()) return closed;
  if (a.json) {
    PrintJson(control::ToJson(cp));
  } else {
    std::cout << fmt::format("checkpoint {} at lsn {} ({}){}\n", cp.name, cp.lsn,
                             HumanTime(cp.time_ns), cp.pinned ? ", pinned" : "");
  }
  return Status::Ok();
}

constexpr const char* kCheckpointFooter = R"(
Records a crash-consistent checkpoint of the disk: it covers every write
acknowledged before it, takes well under a millisecond whatever the disk's
size, and is durable when the command returns.  Without --name the store
names it cp-<id>.  A name is 1 to 128 of A-Z a-z 0-9 . _ + -, not starting
with '.' or '-'; names are unique within a store.  --pin takes it pinned:
no prune drops it until 'rewind unpin'.

Examples:
  rewind checkpoint /var/lib/rewind/vm1 --name before-upgrade
  rewind checkpoint /var/lib/rewind/vm1 --name golden --pin
  rewind checkpoint /var/lib/rewind/vm1)";

// ---- list ------------------------------------------------------------------

struct ListOptions {
  std::string dir;
  bool json = false;
};

// The saved state of a whole-VM checkpoint, if this store holds it (the
// first store of `rewind vm checkpoint` does; the others hold only their
// disk marker).
struct SavedState {
  bool here = false;
  vm::StateInfo info;
};

std::vector<SavedState> SavedStates(const std::string& dir,
                                    const std::vector<CheckpointInfo>& checkpoints) {
  std::vector<SavedState> out(checkpoints.size());
  for (size_t i = 0; i < checkpoints.size(); i++) {
    if (checkpoints[i].kind != "vm") continue;
    out[i].here = vm::PeekState(dir + "/vmstate", checkpoints[i].name, &out[i].info).ok();
  }
  return out;
}

std::string StateColumn(const CheckpointInfo& cp, const SavedState& st) {
  if (cp.kind != "vm") return "-";
  if (!st.here) return "other store";
  return fmt::format("{} (+{})", HumanBytes(st.info.stream_bytes), HumanBytes(st.info.new_bytes));
}

void PrintTimeline(const std::vector<CheckpointInfo>& checkpoints,
                   const std::vector<SavedState>& states) {
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
               {"VM STATE (+NEW)", Align::kRight},
               {"PINNED", Align::kLeft},
               {"BY", Align::kLeft}});
  for (size_t i = 0; i < checkpoints.size(); i++) {
    const CheckpointInfo& cp = checkpoints[i];
    table.AddRow({std::to_string(cp.id), cp.name, cp.kind, std::to_string(cp.lsn),
                  HumanTime(cp.time_ns, /*with_zone=*/false), HumanBytes(cp.undo_bytes),
                  StateColumn(cp, states[i]), cp.pinned ? "yes" : "no",
                  cp.supervised ? "supervise" : ""});
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
  const std::vector<SavedState> states = SavedStates(AbsoluteDir(o.dir), checkpoints);
  if (o.json) {
    nlohmann::json list = nlohmann::json::array();
    for (size_t i = 0; i < checkpoints.size(); i++) {
      nlohmann::json j = control::ToJson(checkpoints[i]);
      if (states[i].here) {
        j["state_bytes"] = states[i].info.stream_bytes;
        j["state_new_bytes"] = states[i].info.new_bytes;
      }
      list.push_back(std::move(j));
    }
    PrintJson({{"checkpoints", std::move(list)}});
  } else {
    PrintTimeline(checkpoints, states);
  }
  return Status::Ok();
}

constexpr const char* kListFooter = R"(
Shows the timeline oldest first: every checkpoint with its id, name, kind
(disk, or vm for a whole-VM checkpoint), the LSN of the last write it covers,
when it was taken, the before-images (undo) it holds, for a whole-VM
checkpoint the size of its saved memory and device state and what it added
to the store (chunks shared with other checkpoints are stored once; "other
store" when the VM's first store holds it), whether it is pinned against
pruning ('rewind pin', 'rewind unpin') and who made it ("supervise" for a
checkpoint taken by 'rewind supervise', blank for one taken by hand).
With --json each checkpoint is a Checkpoint object of
docs/control-protocol.md, plus "state_bytes" and "state_new_bytes" for a
whole-VM checkpoint whose state this store holds.

Examples:
  rewind list /var/lib/rewind/vm1
  rewind list /var/lib/rewind/vm1 --json | jq -r '.checkpoints[].name')";

// ---- pin, unpin -------------------------------------------------------------

struct PinArgs {
  std::string dir;
  std::string name;  // validated while parsing
  bool json = false;
};

Status RunPin(const PinArgs& a, bool pinned) {
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(a.dir, &backend); !s.ok()) return s;
  CheckpointInfo cp;
  Status s = backend->Pin(a.name, pinned, &cp);
  Status closed = backend->Close();
  if (!s.ok()) return s;
  if (!closed.ok()) return closed;
  if (a.json) {
    PrintJson(control::ToJson(cp));
  } else if (cp.pinned) {
    std::cout << fmt::format("checkpoint {} (lsn {}, {}) is pinned: prune keeps it\n", cp.name,
                             cp.lsn, HumanTime(cp.time_ns));
  } else {
    std::cout << fmt::format("checkpoint {} (lsn {}, {}) is not pinned: prune may drop it\n",
                             cp.name, cp.lsn, HumanTime(cp.time_ns));
  }
  return Status::Ok();
}

constexpr const char* kPinFooter = R"(
Pins a checkpoint: no 'rewind prune' drops it, whatever its policy, so the
disk as it was then stays restorable.  The journal from it on stays too,
so an old pinned checkpoint limits what prune can reclaim.  The change is
durable when the command returns.  Pinning a checkpoint already pinned
changes nothing.  'rewind unpin' undoes it; 'rewind list' shows which
checkpoints are pinned.

Examples:
  rewind pin /var/lib/rewind/vm1 before-upgrade
  rewind pin /var/lib/rewind/vm1 before-upgrade --json)";

constexpr const char* kUnpinFooter = R"(
Unpins a checkpoint: the next 'rewind prune' keeps or drops it by its
policy like any other.  The change is durable when the command returns.
Unpinning a checkpoint that is not pinned changes nothing.

Examples:
  rewind unpin /var/lib/rewind/vm1 before-upgrade
  rewind unpin /var/lib/rewind/vm1 before-upgrade --json)";

Command AddPinLikeCommand(CLI::App* parent, bool pinned) {
  auto a = std::make_shared<PinArgs>();
  CLI::App* app =
      pinned ? parent->add_subcommand("pin", "keep a checkpoint from every prune")
             : parent->add_subcommand("unpin", "let prune drop a pinned checkpoint again");
  AddDirArgument(app, &a->dir);
  app->add_option("name", a->name, "the checkpoint")
      ->required()
      ->type_name("NAME")
      ->check(CheckpointNameValidator());
  AddJsonFlag(app, &a->json);
  app->footer(pinned ? kPinFooter : kUnpinFooter);
  return {app, [a, pinned] { return RunPin(*a, pinned); }};
}

}  // namespace

Command AddCheckpointCommand(CLI::App* parent) {
  auto o = std::make_shared<CheckpointArgs>();
  CLI::App* app = parent->add_subcommand("checkpoint", "take a crash-consistent disk checkpoint");
  AddDirArgument(app, &o->dir);
  app->add_option("--name", o->name, "name of the checkpoint (default: cp-<id>)")
      ->type_name("NAME")
      ->check(CheckpointNameValidator());
  app->add_flag("--pin", o->pin, "pin it: no prune drops it (see 'rewind pin')");
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

Command AddPinCommand(CLI::App* parent) { return AddPinLikeCommand(parent, true); }

Command AddUnpinCommand(CLI::App* parent) { return AddPinLikeCommand(parent, false); }

}  // namespace rwd::cli
