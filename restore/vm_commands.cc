// `rewind vm checkpoint` and `rewind vm restore`: whole-VM checkpoints of a
// running QEMU (vmstate/include/rewind/vmstate/vm.h does the work).
#include <fmt/format.h>
#include <rewind/control/protocol.h>
#include <rewind/vmstate/vm.h>

#include <algorithm>
#include <iostream>
#include <memory>

#include "backend.h"
#include "command.h"
#include "human.h"
#include "interrupt.h"

namespace rwd::cli {
namespace {

using Json = nlohmann::json;

struct VmArgs {
  std::string qmp;
  std::vector<std::string> dirs;
  std::string name;  // checkpoint: --name; restore: --to
  bool live = false;
  bool pin = false;  // checkpoint: --pin
  bool json = false;
  double timeout_s = 60;
};

Json DisksJson(const std::vector<vm::VmDisk>& disks) {
  Json j = Json::array();
  for (const vm::VmDisk& d : disks) {
    j.push_back(Json{{"dir", d.dir}, {"checkpoint", control::ToJson(d.checkpoint)}});
  }
  return j;
}

Json StateJson(const vm::StateInfo& st) {
  return Json{{"stream_bytes", st.stream_bytes},
              {"chunks", st.chunks},
              {"new_chunks", st.new_chunks},
              {"new_bytes", st.new_bytes}};
}

Status RunVmCheckpoint(const VmArgs& a) {
  vm::VmCheckpointOptions o;
  o.qmp_socket = a.qmp;
  o.dirs = a.dirs;
  o.name = a.name;
  o.live = a.live;
  o.pinned = a.pin;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  InterruptGuard interrupt;
  TerminalProgress meter;
  o.progress = [&](uint64_t done, uint64_t total) {
    meter.Update(done, std::max(done, total));
    return !Interrupted();
  };
  vm::VmCheckpointResult r;
  Status s = vm::VmCheckpoint(o, &r);
  meter.Finish();
  if (!s.ok()) return s;
  if (a.json) {
    PrintJson(Json{{"name", r.name},
                   {"mode", r.live ? "live" : "stop"},
                   {"disks", DisksJson(r.disks)},
                   {"state", StateJson(r.state)},
                   {"ram_bytes", r.ram_bytes},
                   {"downtime_ms", r.downtime_ms},
                   {"qemu_downtime_ms", r.qemu_downtime_ms},
                   {"seconds", r.seconds}});
    return Status::Ok();
  }
  const bool pinned = !r.disks.empty() && std::all_of(r.disks.begin(), r.disks.end(),
                                                      [](const vm::VmDisk& d) {
                                                        return d.checkpoint.pinned;
                                                      });
  std::cout << fmt::format(
      "whole-VM checkpoint {} ({} mode{}): {} store(s), guest stopped {:.1f} ms\n", r.name,
      r.live ? "live" : "stop", pinned ? ", pinned" : "", r.disks.size(), r.downtime_ms);
  for (const vm::VmDisk& d : r.disks) {
    std::cout << fmt::format("  {}: lsn {}\n", d.dir, d.checkpoint.lsn);
  }
  std::cout << fmt::format("state: {} stream, {} stored new ({} of {} chunks), {:.1f} s\n",
                           HumanBytes(r.state.stream_bytes), HumanBytes(r.state.new_bytes),
                           r.state.new_chunks, r.state.chunks, r.seconds);
  return Status::Ok();
}

Status RunVmRestore(const VmArgs& a) {
  vm::VmRestoreOptions o;
  o.qmp_socket = a.qmp;
  o.dirs = a.dirs;
  o.name = a.name;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  TerminalProgress meter;
  o.progress = [&](uint64_t done, uint64_t total) {
    meter.Update(done, std::max(done, total));
    return true;
  };
  vm::VmRestoreResult r;
  Status s = vm::VmRestore(o, &r);
  meter.Finish();
  if (!s.ok()) return s;
  if (a.json) {
    Json rollbacks = Json::array();
    for (const RollbackResult& rb : r.rollbacks) rollbacks.push_back(control::ToJson(rb));
    PrintJson(Json{{"name", r.name},
                   {"disks", DisksJson(r.disks)},
                   {"rollbacks", std::move(rollbacks)},
                   {"state", StateJson(r.state)},
                   {"seconds", r.seconds}});
    return Status::Ok();
  }
  std::cout << fmt::format("VM restored to whole-VM checkpoint {} and running, {:.1f} s\n", r.name,
                           r.seconds);
  for (size_t i = 0; i < r.disks.size() && i < r.rollbacks.size(); i++) {
    std::cout << fmt::format("  {}: rolled back to lsn {}, rewrote {}; undo with checkpoint {}\n",
                             r.disks[i].dir, r.disks[i].checkpoint.lsn,
                             HumanBytes(r.rollbacks[i].rewritten_bytes),
                             r.rollbacks[i].before.name);
  }
  return Status::Ok();
}

constexpr const char* kVmCheckpointFooter = R"(
Takes a whole-VM checkpoint of a running QEMU: its memory and device state
and every one of its disks, at one instant.  The disks must be served by
nbdkit with the rewind plugin (the stores DIR..., one per plugin; a store
may hold several disks), and QEMU must have a QMP socket (-qmp
unix:SOCKET,server=on,wait=off).

Stop mode (the default) pauses the guest, which makes QEMU drain and flush
its disks, marks the checkpoint in every store, saves the state, and
resumes the guest: it is stopped for the whole save.  --live saves the
memory while the guest runs (QEMU's pre-copy migration) and stops it only
for the last pass: the downtime is typically well under QEMU's 300 ms
limit.  The state is saved in the first DIR, in content-addressed chunks
shared between checkpoints, so a checkpoint of a mostly idle guest adds
little.

--pin pins the checkpoint in every store, as 'rewind pin' would: no prune
drops it.

The checkpoint appears in 'rewind list' (kind vm) only once it is complete;
an interrupted one (Ctrl-C, QEMU or the plugin killed, a full disk) leaves
nothing visible, and the guest runs on.

Examples:
  rewind vm checkpoint --qmp /run/vm1/qmp.sock /var/lib/rewind/vm1 --name before-upgrade
  rewind vm checkpoint --qmp /run/vm1/qmp.sock /srv/rw/vm1-os /srv/rw/vm1-data --live)";

constexpr const char* kVmRestoreFooter = R"(
Puts a whole VM back at a whole-VM checkpoint and runs it on from there.
Start a fresh QEMU with the same devices, its disks on the same rewind
exports, a QMP socket and '-incoming defer'; then this command rolls every
store back to the checkpoint (undoable: each gets a before-rollback-...
checkpoint first), streams the saved memory and device state into QEMU and
resumes the guest.  Give the stores in the same order as for 'rewind vm
checkpoint'.  A disk-only checkpoint holds no memory: it is refused (use
'rewind rollback' for the disks alone).

Example:
  qemu-system-x86_64 ... -qmp unix:/run/vm1/qmp.sock,server=on,wait=off -incoming defer &
  rewind vm restore --qmp /run/vm1/qmp.sock /var/lib/rewind/vm1 --to before-upgrade)";

void AddCommon(CLI::App* app, VmArgs* a) {
  app->add_option("--qmp", a->qmp, "QEMU's QMP socket (-qmp unix:SOCKET,server=on,wait=off)")
      ->required()
      ->type_name("SOCKET");
  app->add_option("dirs", a->dirs, "the stores of the VM's disks; the first keeps the VM state")
      ->required()
      ->type_name("DIR...");
  app->add_option("--timeout", a->timeout_s,
                  "seconds to wait for QEMU or a plugin to answer (default 60)")
      ->check(CLI::Range(1.0, 86400.0));
  AddJsonFlag(app, &a->json);
}

}  // namespace

std::vector<Command> AddVmCommands(CLI::App* parent) {
  CLI::App* vm = parent->add_subcommand("vm", "whole-VM checkpoints and restores (QEMU over QMP)");
  vm->require_subcommand(1);
  vm->footer("\n'rewind vm checkpoint --help' and 'rewind vm restore --help' describe each.");

  auto c = std::make_shared<VmArgs>();
  CLI::App* cp = vm->add_subcommand("checkpoint", "checkpoint a running VM: memory, devices, disks");
  AddCommon(cp, c.get());
  cp->add_option("--name", c->name, "the checkpoint's name (default vm-<UTC time>)")
      ->check(CheckpointNameValidator());
  cp->add_flag("--live", c->live, "save memory while the guest runs; stop it only at the end");
  cp->add_flag("--pin", c->pin, "pin it in every store: no prune drops it (see 'rewind pin')");
  cp->footer(kVmCheckpointFooter);

  auto r = std::make_shared<VmArgs>();
  CLI::App* rs = vm->add_subcommand("restore", "put a VM back at a whole-VM checkpoint");
  AddCommon(rs, r.get());
  rs->add_option("--to", r->name, "the whole-VM checkpoint's name")
      ->required()
      ->type_name("NAME")
      ->check(CheckpointNameValidator());
  rs->footer(kVmRestoreFooter);
  return {{cp, [c] { return RunVmCheckpoint(*c); }}, {rs, [r] { return RunVmRestore(*r); }}};
}

}  // namespace rwd::cli
