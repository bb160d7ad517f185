// `rewind supervise`: a VM that puts itself back after a fault
// (vmstate/include/rewind/vmstate/supervise.h does the work).
#include <fmt/format.h>
#include <rewind/vmstate/supervise.h>

#include <cstdlib>
#include <iostream>
#include <memory>

#include "command.h"
#include "human.h"
#include "interrupt.h"

namespace rwd::cli {
namespace {

using Json = nlohmann::json;

constexpr int kExitGaveUp = 3;

struct SuperviseArgs {
  vm::SuperviseOptions o;
  std::string interval = "300";
  uint64_t keep_last = 10;
  int64_t keep_within_ns = 0;
  uint64_t keep_daily = 0;
  bool no_prune = false;
  std::string on_shutdown = "exit";
  std::string on_reset = "ignore";
  double timeout_s = 60;
  bool json = false;
};

std::string Lsns(const Json& lsn) {
  std::string out;
  if (!lsn.is_object()) return out;
  for (auto& [dir, v] : lsn.items()) {
    if (!out.empty()) out += ", ";
    out += fmt::format("lsn {}", v.dump());
  }
  return out;
}

// One line for people per event.
std::string Describe(const Json& ev) {
  const std::string e = ev.value("event", "");
  auto str = [&](const char* k) { return ev.contains(k) && ev[k].is_string() ? ev[k].get<std::string>() : std::string(); };
  auto num = [&](const char* k) { return ev.contains(k) && ev[k].is_number() ? ev[k].get<double>() : 0.0; };
  if (e == "start") {
    return fmt::format("supervising {} store(s), QEMU {}; event log {}",
                       ev["dirs"].size(), str("mode"), str("event_log"));
  }
  if (e == "qemu-started") {
    return fmt::format("QEMU started, pid {}{}", ev.value("pid", 0),
                       ev.value("incoming", false) ? ", waiting for a saved state" : "");
  }
  if (e == "checkpoint") {
    return fmt::format("checkpoint {} ({} mode, guest stopped {:.1f} ms, {}, {:.1f} s)", str("name"),
                       str("mode"), num("downtime_ms"), Lsns(ev["lsn"]), num("seconds"));
  }
  if (e == "checkpoint-failed") return fmt::format("checkpoint {} failed: {}", str("name"), str("error"));
  if (e == "prune") {
    std::string dropped;
    for (const Json& n : ev["dropped"]) dropped += (dropped.empty() ? "" : ", ") + n.get<std::string>();
    return fmt::format("pruned {} checkpoint(s){}{}, guest paused {:.1f} ms", ev["dropped"].size(),
                       dropped.empty() ? "" : ": ", dropped, num("downtime_ms")) +
           (ev.contains("error") ? " (failed: " + str("error") + ")" : "");
  }
  if (e == "fault") return fmt::format("FAULT ({}): {}", str("kind"), str("detail"));
  if (e == "forensic") {
    return fmt::format("pinned {} checkpoint {} of the faulty state", str("kind") == "vm" ? "whole-VM" : "disk-only",
                       str("name"));
  }
  if (e == "forensic-failed") return fmt::format("could not pin the faulty state ({}): {}", str("name"), str("error"));
  if (e == "rollback") {
    return fmt::format("rolled back to {} ({}, attempt {}, {:.1f} s)", str("to"), str("how"),
                       ev.value("attempt", 0), num("seconds"));
  }
  if (e == "rollback-failed") return fmt::format("rollback to {} failed: {}", str("to"), str("error"));
  if (e == "running") return fmt::format("the VM runs again, {:.1f} s after the fault", num("since_fault_s"));
  if (e == "heartbeat") return "the guest agent answers: heartbeat armed";
  if (e == "resumed") return "resumed the guest after the failed checkpoint";
  if (e == "give-up") return "GAVE UP: " + str("reason");
  if (e == "stop") return fmt::format("stopped: {}", str("reason"));
  if (e == "error") return "error: " + str("error");
  return ev.dump();
}

constexpr const char* kFooter = R"(
Watches a VM and puts it back when it faults: takes whole-VM checkpoints
(memory, devices, every disk) on a schedule, and on a fault pins a
checkpoint of the faulty state for forensics (sv-fault-<time>), rolls the
VM back to its newest good whole-VM checkpoint (undoable, as 'rewind
rollback') and runs it on.  A fault within --fault-window of a rollback
sends the next one a checkpoint further back; after --max-rollbacks such
repeats it gives up, leaves the VM stopped and exits 3.

Faults: a guest panic (QMP GUEST_PANICKED: add '-device pvpanic'), an I/O
error (BLOCK_IO_ERROR), the watchdog (WATCHDOG), QEMU exiting without being
asked, the guest agent not answering (--heartbeat), and, if chosen, the
guest powering off or resetting itself.

Two ways to run:
  rewind supervise [OPTIONS] DIR... -- QEMU-COMMAND...
      supervise starts and owns QEMU, adding its own QMP sockets,
      -no-shutdown and -action panic=pause.  A rollback starts a fresh QEMU
      from the same command and restores the checkpoint into it.
  rewind supervise [OPTIONS] --qmp SOCKET DIR...
      attaches to a QEMU it does not own (libvirt's, with an extra QMP
      monitor).  A rollback puts the disks back and resets the guest: it
      reboots from its disks as they were at the checkpoint.

The disks must be served by nbdkit with the rewind plugin for DIR...
(first one first, as for 'rewind vm checkpoint').  Checkpoints it makes are
named sv-<UTC time>; 'rewind list' shows them as made by supervise, and
the forensic ones as pinned ('rewind unpin DIR NAME' once examined).
Every event goes to the event log (JSON lines, default DIR/supervise.jsonl
in the first store) and, one line each, to stdout.  SIGINT or SIGTERM
asks an owned guest to power off (then quits QEMU after --stop-timeout).
docs/integration.md shows systemd units and a libvirt set-up.

Examples:
  rewind supervise /var/lib/rewind/vm1 --interval 600 -- \
      qemu-system-x86_64 -m 2G -device pvpanic \
      -blockdev driver=nbd,node-name=d0,server.type=unix,server.path=/run/rewind/vm1.sock \
      -device virtio-blk,drive=d0
  rewind supervise --qmp /run/vm1-supervise.qmp /var/lib/rewind/vm1 --interval auto)";

// On a give-up, says why on stderr and sets *exit_code to kExitGaveUp.
Status RunSupervise(SuperviseArgs& a, const std::vector<std::string>& qemu, int* exit_code) {
  vm::SuperviseOptions& o = a.o;
  o.qemu_command = qemu;
  if (a.interval == "auto") {
    o.auto_interval = true;
  } else {
    char* end = nullptr;
    double v = std::strtod(a.interval.c_str(), &end);
    if (a.interval.empty() || *end != '\0' || !(v >= 1) || v > 86400 * 365) {
      return Status::InvalidArgument("--interval: '" + a.interval +
                                     "' is neither a number of seconds (1 or more) nor 'auto'");
    }
    o.interval_s = v;
  }
  if (o.min_interval_s > o.max_interval_s) {
    return Status::InvalidArgument("--min-interval is above --max-interval");
  }
  if (!a.no_prune) {
    o.retention.keep_last = a.keep_last;
    o.retention.keep_within_ns = a.keep_within_ns;
    o.retention.keep_daily = a.keep_daily;
  }
  o.shutdown_is_fault = a.on_shutdown == "rollback";
  o.reset_is_fault = a.on_reset == "rollback";
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  const bool json = a.json;
  o.on_event = [json](const Json& ev) {
    if (json) {
      std::cout << ev.dump() << std::endl;
    } else {
      std::string t = ev.value("time", "");
      // "2026-12-01T10:15:00.123456789Z" -> "10:15:00"
      std::string hms = t.size() >= 19 ? t.substr(11, 8) : t;
      std::cout << hms << " " << Describe(ev) << std::endl;
    }
  };
  InterruptGuard interrupt;
  o.stop_requested = [] { return Interrupted(); };
  vm::SuperviseResult r;
  Status s = vm::Supervise(o, &r);
  if (!s.ok()) return s;
  if (r.end == vm::SuperviseResult::End::kGaveUp) {
    std::cerr << "rewind: supervise: gave up: " << r.reason
              << " (the VM is stopped; its disks are as the last fault left them, and the event "
                 "log has the details)"
              << std::endl;
    *exit_code = kExitGaveUp;
  }
  return Status::Ok();
}

}  // namespace

Command AddSuperviseCommand(CLI::App* parent, const std::vector<std::string>* qemu_command,
                            int* exit_code) {
  auto a = std::make_shared<SuperviseArgs>();
  CLI::App* app = parent->add_subcommand(
      "supervise", "watch a VM; on a fault, roll it back to its last good checkpoint and run it on");
  app->add_option("dirs", a->o.dirs, "the stores of the VM's disks; the first keeps the VM state")
      ->required()
      ->type_name("DIR...");
  app->add_option("--qmp", a->o.qmp_socket,
                  "with a QEMU command: where its QMP socket goes; without: the QMP socket of the "
                  "running QEMU to attach to")
      ->type_name("SOCKET");
  app->add_option("--interval", a->interval,
                  "seconds between whole-VM checkpoints, or 'auto' (Daly's optimal interval from "
                  "the measured checkpoint cost and the time between faults); default 300")
      ->type_name("SECONDS|auto");
  app->add_option("--mtbf", a->o.mtbf_s,
                  "for --interval auto: the mean time between faults assumed until faults are "
                  "seen (default 86400)")
      ->check(CLI::Range(1.0, 1e9))
      ->type_name("SECONDS");
  app->add_option("--min-interval", a->o.min_interval_s, "lower bound of --interval auto (default 10)")
      ->check(CLI::Range(1.0, 1e9))
      ->type_name("SECONDS");
  app->add_option("--max-interval", a->o.max_interval_s, "upper bound of --interval auto (default 3600)")
      ->check(CLI::Range(1.0, 1e9))
      ->type_name("SECONDS");
  app->add_flag("--live", a->o.live, "live checkpoints: the guest stops only for the last pass");
  app->add_option("--keep-last", a->keep_last,
                  "retention after each checkpoint: keep the newest N (default 10)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  app->add_option("--keep-within", a->keep_within_ns,
                  "retention: also keep the checkpoints taken less than DURATION ago")
      ->type_name("DURATION")
      ->transform(DurationValidator());
  app->add_option("--keep-daily", a->keep_daily,
                  "retention: also keep the newest checkpoint of each of the last N days");
  app->add_flag("--no-prune", a->no_prune, "never prune (the stores grow without bound)");
  app->add_option("--fault-window", a->o.fault_window_s,
                  "a fault this soon after a rollback is a repeat: go a checkpoint further back "
                  "(default 300)")
      ->check(CLI::Range(0.0, 1e9))
      ->type_name("SECONDS");
  app->add_option("--max-rollbacks", a->o.max_rollbacks,
                  "give up after N rollbacks in a row, each followed by a repeat (default 3)")
      ->check(CLI::Range(1, 1000));
  app->add_option("--on-shutdown", a->on_shutdown,
                  "a guest that powers itself off: 'exit' ends supervision (default), 'rollback' "
                  "treats it as a fault")
      ->check(CLI::IsMember({"exit", "rollback"}));
  app->add_option("--on-reset", a->on_reset,
                  "a guest that resets itself: 'ignore' (default) or 'rollback'")
      ->check(CLI::IsMember({"ignore", "rollback"}));
  app->add_option("--heartbeat", a->o.heartbeat_socket,
                  "the QEMU guest agent's socket: guest-ping every --heartbeat-interval, a fault "
                  "after --heartbeat-timeout without an answer")
      ->type_name("SOCKET");
  app->add_option("--heartbeat-interval", a->o.heartbeat_interval_s, "default 10")
      ->check(CLI::Range(0.1, 86400.0))
      ->type_name("SECONDS");
  app->add_option("--heartbeat-timeout", a->o.heartbeat_timeout_s, "default 30")
      ->check(CLI::Range(0.5, 86400.0))
      ->type_name("SECONDS");
  app->add_option("--event-log", a->o.event_log,
                  "the event log, JSON lines, appended (default DIR/supervise.jsonl, first DIR)")
      ->type_name("FILE");
  app->add_option("--timeout", a->timeout_s,
                  "seconds to wait for QEMU or a plugin to answer (default 60)")
      ->check(CLI::Range(1.0, 86400.0));
  app->add_option("--stop-timeout", a->o.stop_timeout_s,
                  "on SIGINT/SIGTERM, seconds an owned guest gets to power off (default 30)")
      ->check(CLI::Range(0.0, 86400.0))
      ->type_name("SECONDS");
  app->add_flag("--json", a->json, "print the events as JSON lines");
  app->footer(kFooter);
  return {app, [a, qemu_command, exit_code] { return RunSupervise(*a, *qemu_command, exit_code); }};
}

}  // namespace rwd::cli
