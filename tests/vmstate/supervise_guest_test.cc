// rewind supervise with a real guest under TCG (tests/guest): the guest
// panics (pvpanic) when it reads a corrupted record, hangs on the hang
// marker, answers guest-ping on COM2.  The tests corrupt its disk through
// NBD, as a bad upgrade or a stray writer would, and watch the supervisor
// put it back: through its event log and the guest's own serial output.
//
// Each test prints "fault to running: X s" lines on stderr: the time from
// the fault (as the supervisor saw it) to the guest running again, which
// docs/performance.md reports.
#include <signal.h>
#include <time.h>

#include <cstdlib>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include <rewind/vmstate/supervise.h>

#include "guest_util.h"
#include "support/proc_util.h"

namespace rwd::test::guest {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

// The supervisor's event log, read as it grows.
class Events {
 public:
  explicit Events(std::string path) : path_(std::move(path)) {}

  std::vector<Json> All() const {
    std::vector<Json> out;
    for (const std::string& line : NonEmptyLines(ReadFile(path_))) {
      Json j = Json::parse(line, nullptr, false);
      if (j.is_object()) out.push_back(std::move(j));
    }
    return out;
  }
  std::vector<Json> Named(const std::string& name) const {
    std::vector<Json> out;
    for (Json& j : All()) {
      if (j.value("event", "") == name) out.push_back(std::move(j));
    }
    return out;
  }
  // The count-th event called name (1-based); nullopt after timeout, or
  // when the supervisor ended (give-up, stop, error) first and
  // stop_at_end.
  std::optional<Json> Wait(const std::string& name, size_t count,
                           std::chrono::milliseconds timeout, bool stop_at_end = true) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      std::vector<Json> all = All();
      size_t n = 0;
      bool ended = false;
      for (const Json& j : all) {
        const std::string e = j.value("event", "");
        if (e == name && ++n == count) return j;
        ended |= e == "give-up" || e == "stop" || e == "error";
      }
      if ((ended && stop_at_end) || std::chrono::steady_clock::now() >= deadline) {
        return std::nullopt;
      }
      std::this_thread::sleep_for(100ms);
    }
  }
  std::string Text() const { return ReadFile(path_); }

 private:
  std::string path_;
};

// `rewind supervise` as a child process, stopped (SIGTERM, then SIGKILL)
// when destroyed.
class Supervisor {
 public:
  Supervisor(GuestVm& vm, std::vector<std::string> args) {
    log_ = vm.path("supervise.jsonl");
    out_ = vm.path("supervise.out");
    err_ = vm.path("supervise.err");
    std::vector<std::string> argv{REWIND_CLI_PATH, "supervise"};
    for (size_t i = 0; i < vm.disk_count(); i++) argv.push_back(vm.disk(i).store_dir());
    argv.insert(argv.end(), {"--event-log", log_, "--timeout", "60"});
    argv.insert(argv.end(), args.begin(), args.end());
    command_ = argv;
    pid_ = SpawnProcess(argv, out_, err_);
  }
  ~Supervisor() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ExitStatus st;
      if (!WaitForExit(pid_, 30s, &st)) {
        ::kill(pid_, SIGKILL);
        (void)WaitForExit(pid_, 10s, &st);
      }
    }
  }
  Events events() const { return Events(log_); }
  // Sends SIGTERM and waits for the exit.
  ExitStatus Stop(std::chrono::milliseconds timeout = 60s) {
    ::kill(pid_, SIGTERM);
    return Wait(timeout);
  }
  ExitStatus Wait(std::chrono::milliseconds timeout) {
    ExitStatus st;
    if (!WaitForExit(pid_, timeout, &st)) {
      ::kill(pid_, SIGKILL);
      (void)WaitForExit(pid_, 10s, &st);
      st.timed_out = true;
    }
    pid_ = -1;
    return st;
  }
  // The pid of the QEMU it started last.
  pid_t QemuPid() const {
    auto started = events().Named("qemu-started");
    return started.empty() ? -1 : started.back().value("pid", -1);
  }
  std::string Describe() const {
    std::string cmd;
    for (const std::string& a : command_) cmd += a + " ";
    return "command: " + cmd + "\nevent log:\n" + ReadFile(log_) + "stdout:\n" + ReadFile(out_) +
           "stderr:\n" + ReadFile(err_);
  }
  std::string Stderr() const { return ReadFile(err_); }

 private:
  std::string log_, out_, err_;
  std::vector<std::string> command_;
  pid_t pid_ = -1;
};

// Checks that show the supervisor's event log, output and stderr as they
// are when the check fails (INFO would show them as they were earlier).
#define SV_REQUIRE(...)        \
  do {                         \
    INFO(sv.Describe());       \
    REQUIRE(__VA_ARGS__);      \
  } while (0)
#define SV_CHECK(...)          \
  do {                         \
    INFO(sv.Describe());       \
    CHECK(__VA_ARGS__);        \
  } while (0)
#define SV_CHECK_FALSE(...)    \
  do {                         \
    INFO(sv.Describe());       \
    CHECK_FALSE(__VA_ARGS__);  \
  } while (0)

// "2026-12-01T10:42:24.172383362Z" -> seconds since the epoch.
double Seconds(const std::string& iso) {
  struct tm tm {};
  const char* rest = strptime(iso.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  REQUIRE(rest != nullptr);
  double frac = *rest == '.' ? std::strtod(rest, nullptr) : 0;
  return static_cast<double>(timegm(&tm)) + frac;
}

bool Alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

// Writes a bad record to guest disk 0 again and again (the guest may
// overwrite one before it reads it) until the supervisor reports a fault.
std::optional<Json> CorruptUntilFault(GuestVm& vm, const Events& ev, size_t nth_fault,
                                      BadRecord kind = BadRecord::kGarbage) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    vm.WriteBadRecord(0, kind);
    if (auto f = ev.Wait("fault", nth_fault, kind == BadRecord::kGarbage ? 1s : 3s)) return f;
  }
  return std::nullopt;
}

// What the supervisor did about its nth fault: the fault (of kind), the
// forensic checkpoint, the rollback and the guest running again, each
// REQUIREd.
struct Recovery {
  Json fault, forensic, rollback, running;
};
Recovery WaitRecovery(const Supervisor& sv, const Events& ev, const std::optional<Json>& fault,
                      size_t n, const std::string& kind) {
  Recovery r;
  SV_REQUIRE(fault);
  r.fault = *fault;
  SV_CHECK(r.fault.value("kind", "") == kind);
  for (auto [name, out] : {std::pair<const char*, Json*>{"forensic", &r.forensic},
                           {"rollback", &r.rollback},
                           {"running", &r.running}}) {
    auto e = ev.Wait(name, n, 120s);
    INFO("waiting for " << name << " " << n);
    SV_REQUIRE(e);
    *out = *e;
  }
  return r;
}

// The guest's serial log (the command's -serial file: a fresh QEMU
// truncates it): it must count on, past more TICK lines, with no PANIC,
// HANG or MISMATCH.
void RequireCountsOn(const std::string& serial_path, size_t more_ticks) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  SerialLog log;
  size_t start = ParseSerial(ReadFile(serial_path)).ticks.size();
  while (std::chrono::steady_clock::now() < deadline) {
    log = ParseSerial(ReadFile(serial_path));
    if (log.ticks.size() >= start + more_ticks) break;
    std::this_thread::sleep_for(200ms);
  }
  INFO(log.Tail());
  REQUIRE(log.ticks.size() >= start + more_ticks);
  CHECK(log.panics.empty());
  CHECK(log.hangs.empty());
  CHECK(log.mismatches.empty());
  CHECK(log.ram_bad.empty());
}

void ReportRecovery(const char* what, const Json& running) {
  std::fprintf(stderr, "fault to running: %.2f s (%s)\n", running.value("since_fault_s", -1.0),
               what);
}

// The checkpoints `rewind list --json` shows for a store.
Json List(const std::string& dir) {
  ProcResult r = RunProcess({REWIND_CLI_PATH, "list", dir, "--json"}, 60s);
  INFO(r.Describe());
  REQUIRE(r.ok());
  Json j = Json::parse(r.out);
  return j.is_object() && j.contains("checkpoints") ? j["checkpoints"] : j;
}

TEST_CASE("supervise: a guest that panics on a corrupted sector is rolled back and runs on",
          "[supervise-guest]") {
  RequireQemuOrSkip();
  GuestVm vm;
  QemuOptions qo = vm.NextQemuOptions();
  qo.pvpanic = true;
  Supervisor sv(vm, [&] {
    std::vector<std::string> a{"--interval", "2", "--fault-window", "30", "--max-rollbacks", "2",
                               "--stop-timeout", "1", "--"};
    for (const std::string& s : QemuCommand(qo)) a.push_back(s);
    return a;
  }());
  Events ev = sv.events();
  SV_REQUIRE(ev.Wait("checkpoint", 2, 120s));
  const Recovery rec = WaitRecovery(sv, ev, CorruptUntilFault(vm, ev, 1), 1, "panic");
  const Json* fault = &rec.fault;
  const Json* forensic = &rec.forensic;
  const Json* rollback = &rec.rollback;
  const Json* running = &rec.running;
  // A panicked guest cannot be saved: the disks are pinned as they are.
  SV_CHECK(forensic->value("kind", "") == "disk");
  ReportRecovery("panic, owned QEMU", *running);
  // It went back to the newest checkpoint taken before the fault.
  std::string newest;
  for (const Json& c : ev.Named("checkpoint")) {
    if (c["time"].get<std::string>() < (*fault)["time"].get<std::string>()) newest = c["name"];
  }
  SV_CHECK(rollback->value("to", "") == newest);
  SV_CHECK(rollback->value("how", "") == "restore");
  RequireCountsOn(qo.workdir + "/" + qo.name + ".serial", 4);
  SV_CHECK(vm.ReadRecord(0).valid);
  SV_CHECK(vm.ReadRecord(1).valid);
  // rewind list: the supervisor's checkpoints and its pinned forensic one.
  bool saw_forensic = false, saw_supervised = false;
  for (const Json& c : List(vm.disk(0).store_dir())) {
    const std::string name = c.value("name", "");
    if (name == forensic->value("name", "")) {
      saw_forensic = true;
      SV_CHECK(c.value("pinned", false));
      SV_CHECK(c.value("supervised", false));
      SV_CHECK(c.value("kind", "") == "disk");
    } else if (name.rfind("sv-", 0) == 0) {
      saw_supervised = true;
      SV_CHECK(c.value("supervised", false));
      SV_CHECK_FALSE(c.value("pinned", true));
      SV_CHECK(c.value("kind", "") == "vm");
    }
  }
  SV_CHECK(saw_forensic);
  SV_CHECK(saw_supervised);
  const pid_t qemu = sv.QemuPid();
  ExitStatus st = sv.Stop();
  SV_CHECK(st.success());
  SV_CHECK(ev.Wait("stop", 1, 1s));
  SV_CHECK_FALSE(Alive(qemu));
}

TEST_CASE("supervise: a guest that keeps faulting is rolled back further, then given up on",
          "[supervise-guest]") {
  RequireQemuOrSkip();
  GuestVm vm;
  QemuOptions qo = vm.NextQemuOptions();
  qo.pvpanic = true;
  Supervisor sv(vm, [&] {
    // The schedule by Daly's formula: with a checkpoint of ~0.1 s and a
    // mean time between faults of 30 s, about every 2.5 s.
    std::vector<std::string> a{"--interval", "auto", "--mtbf", "30", "--min-interval", "1",
                               "--fault-window", "120", "--max-rollbacks", "2", "--"};
    for (const std::string& s : QemuCommand(qo)) a.push_back(s);
    return a;
  }());
  Events ev = sv.events();
  SV_REQUIRE(ev.Wait("checkpoint", 3, 120s));
  for (const Json& c : ev.Named("checkpoint")) {
    INFO(c.dump());
    // No fault yet, well under 30 s up: M is --mtbf.
    SV_CHECK(c.value("mtbf_s", 0.0) == 30.0);
    const double expect =
        std::max(1.0, rwd::vm::DalyInterval(c.value("downtime_ms", 0.0) / 1000, 30));
    SV_CHECK(std::abs(c.value("next_s", 0.0) - expect) < 1e-6);
  }
  // The corruption comes back after every rollback (a stray writer that
  // keeps at it): fault, rollback, fault within the window, rollback one
  // checkpoint further back, fault: give up.
  std::vector<std::string> targets;
  for (size_t n = 1; n <= 2; n++) {
    SV_REQUIRE(CorruptUntilFault(vm, ev, n));
    auto rb = ev.Wait("rollback", n, 120s);
    SV_REQUIRE(rb);
    targets.push_back(rb->value("to", ""));
    SV_REQUIRE(ev.Wait("running", n, 60s));
  }
  SV_REQUIRE(targets.size() == 2);
  SV_CHECK(targets[1] < targets[0]);  // sv-<UTC time>: further back in time
  SV_CHECK(ev.Named("rollback")[1].value("attempt", 0) == 2);
  SV_REQUIRE(CorruptUntilFault(vm, ev, 3));
  auto give_up = ev.Wait("give-up", 1, 60s);
  SV_REQUIRE(give_up);
  SV_CHECK(give_up->value("reason", "").find("faulted again within 120 s of each of 2 rollback(s)") !=
        std::string::npos);
  ExitStatus st = sv.Wait(60s);
  SV_CHECK(st.exited);
  SV_CHECK(st.code == 3);
  SV_CHECK(sv.Stderr().find("rewind: supervise: gave up:") != std::string::npos);
  // The VM is left stopped: QEMU is gone, nothing rolled back after the
  // last fault, and every fault's state is pinned.
  SV_CHECK_FALSE(Alive(sv.QemuPid()));
  SV_CHECK(ev.Named("rollback").size() == 2);
  SV_CHECK(ev.Named("forensic").size() == 3);
  size_t pinned = 0;
  for (const Json& c : List(vm.disk(0).store_dir())) pinned += c.value("pinned", false) ? 1 : 0;
  SV_CHECK(pinned == 3);
}

TEST_CASE("supervise: QEMU killed from outside is started again from the last checkpoint",
          "[supervise-guest]") {
  RequireQemuOrSkip();
  GuestVm vm;
  QemuOptions qo = vm.NextQemuOptions();
  Supervisor sv(vm, [&] {
    std::vector<std::string> a{"--interval", "2", "--keep-last", "3", "--stop-timeout", "1", "--"};
    for (const std::string& s : QemuCommand(qo)) a.push_back(s);
    return a;
  }());
  Events ev = sv.events();
  SV_REQUIRE(ev.Wait("checkpoint", 5, 120s));
  // Retention: the store keeps the newest 3; the guest was paused only for
  // the prunes that dropped something.
  SV_REQUIRE(ev.Wait("prune", 2, 30s));
  for (const Json& p : ev.Named("prune")) {
    SV_CHECK(p["dropped"].size() >= 1);
    SV_CHECK_FALSE(p.contains("error"));
  }
  const size_t kept = List(vm.disk(1).store_dir()).size();
  SV_CHECK(kept <= 4);  // 3, or 4 with one taken since the last prune
  const pid_t first = sv.QemuPid();
  SV_REQUIRE(Alive(first));
  const double killed_at =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  SV_REQUIRE(::kill(first, SIGKILL) == 0);
  const Recovery rec = WaitRecovery(sv, ev, ev.Wait("fault", 1, 30s), 1, "qemu-exit");
  const Json* running = &rec.running;
  SV_CHECK(rec.fault.value("detail", "").find("signal 9") != std::string::npos);
  SV_CHECK(rec.forensic.value("kind", "") == "disk");
  ReportRecovery("QEMU SIGKILLed, owned QEMU", *running);
  // From the kill itself, detection included.
  std::fprintf(stderr, "fault to running: %.2f s (QEMU SIGKILLed, from the kill)\n",
               Seconds(running->value("time", "")) - killed_at);
  SV_CHECK(sv.QemuPid() != first);
  RequireCountsOn(qo.workdir + "/" + qo.name + ".serial", 4);
  SV_CHECK(sv.Stop().success());
}

TEST_CASE("supervise: a hung guest is found by the heartbeat and rolled back",
          "[supervise-guest]") {
  RequireQemuOrSkip();
  GuestVm vm;
  QemuOptions qo = vm.NextQemuOptions();
  qo.agent = true;
  Supervisor sv(vm, [&] {
    std::vector<std::string> a{"--interval",           "2",   "--heartbeat", AgentSocketPath(qo),
                               "--heartbeat-interval", "0.5", "--heartbeat-timeout", "4",
                               "--stop-timeout",       "1",   "--"};
    for (const std::string& s : QemuCommand(qo)) a.push_back(s);
    return a;
  }());
  Events ev = sv.events();
  SV_REQUIRE(ev.Wait("heartbeat", 1, 60s));
  SV_REQUIRE(ev.Wait("checkpoint", 2, 120s));
  // No false alarm meanwhile: it answered through the checkpoints.
  SV_CHECK(ev.Named("fault").empty());
  const Recovery rec =
      WaitRecovery(sv, ev, CorruptUntilFault(vm, ev, 1, BadRecord::kHangMarker), 1, "heartbeat");
  const Json* fault = &rec.fault;
  const Json* running = &rec.running;
  // A hung guest still runs as far as QEMU knows: its whole state is saved.
  SV_CHECK(rec.forensic.value("kind", "") == "vm");
  ReportRecovery("hang found by the heartbeat, owned QEMU", *running);
  RequireCountsOn(qo.workdir + "/" + qo.name + ".serial", 4);
  // And it answers again: no further fault for longer than the timeout.
  // A checkpoint taken in the second or so between the hang and the first
  // ping it left unanswered holds the hung guest; going back to it faults
  // again, and the supervisor then goes one further back.  So: one fault,
  // or two with the second rollback to an older checkpoint.
  std::this_thread::sleep_for(8s);
  const auto faults = ev.Named("fault");
  const auto rollbacks = ev.Named("rollback");
  SV_CHECK(faults.size() == rollbacks.size());
  SV_CHECK(faults.size() <= 2);
  if (rollbacks.size() == 2) {
    SV_CHECK(rollbacks[1].value("to", "") < rollbacks[0].value("to", ""));
  }
  // No checkpoint while the guest was silent: the fault came 4 s into the
  // silence, and none was taken from 1.5 s into it (two pings unanswered,
  // with room for the checkpoint's own time) up to the fault.
  const double fault_s = Seconds((*fault)["time"].get<std::string>());
  for (const Json& c : ev.Named("checkpoint")) {
    const double t = Seconds(c["time"].get<std::string>());
    INFO(c.dump());
    SV_CHECK_FALSE((t > fault_s - 4 + 1.5 && t < fault_s));
  }
  SV_CHECK(sv.Stop().success());
}

TEST_CASE("supervise: a run of I/O errors on a disk is a fault: rolled back, the guest runs on",
          "[supervise-guest]") {
  RequireQemuOrSkip();
  // nbdkit's error filter under each store: EIO on every request while the
  // trigger file exists.
  TempDir trig;
  const std::string trigger = trig / "errors-on";
  GuestVmOptions go;
  go.disk_nbdkit_flags = {"--filter=error"};
  go.disk_params = {"error=EIO", "error-rate=100%", "error-file=" + trigger};
  GuestVm vm(go);
  QemuOptions qo = vm.NextQemuOptions();
  Supervisor sv(vm, [&] {
    std::vector<std::string> a{"--interval", "2", "--stop-timeout", "1", "--"};
    for (const std::string& s : QemuCommand(qo)) a.push_back(s);
    return a;
  }());
  Events ev = sv.events();
  SV_REQUIRE(ev.Wait("checkpoint", 2, 120s));
  WriteFile(trigger, "");
  auto fault = ev.Wait("fault", 1, 30s);
  std::filesystem::remove(trigger);  // the run of errors is over
  const Recovery rec = WaitRecovery(sv, ev, fault, 1, "io-error");
  SV_CHECK(rec.fault.value("detail", "").find("I/O error on") != std::string::npos);
  ReportRecovery("I/O errors (BLOCK_IO_ERROR), owned QEMU", rec.running);
  RequireCountsOn(qo.workdir + "/" + qo.name + ".serial", 4);
  SV_CHECK(ev.Named("fault").size() == 1);
  SV_CHECK(sv.Stop().success());
}

TEST_CASE("supervise: attached to a QEMU it does not own, it rolls the disks back and reboots",
          "[supervise-guest]") {
  RequireQemuOrSkip();
  GuestVm vm;
  QemuOptions qo = vm.NextQemuOptions();
  qo.pvpanic = true;
  qo.panic_action = "pause";
  qo.no_reboot = false;  // system_reset reboots
  Qemu& q = vm.StartQemu(qo);
  REQUIRE(q.WaitForLine("BOOT", 1, 30s));
  Supervisor sv(vm, {"--qmp", q.tool_qmp_path(), "--interval", "2"});
  Events ev = sv.events();
  SV_REQUIRE(ev.Wait("checkpoint", 2, 120s));
  const Recovery rec = WaitRecovery(sv, ev, CorruptUntilFault(vm, ev, 1), 1, "panic");
  const Json* running = &rec.running;
  SV_CHECK(rec.rollback.value("how", "") == "disk-rollback-and-reset");
  ReportRecovery("panic, attached QEMU (disk rollback and reboot)", *running);
  // The same QEMU: the guest booted again from its rolled-back disks and
  // counts on from there.
  // (Qemu::WaitForLine gives up at the PANIC line before the reboot.)
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  size_t ticks_after_boot = 0;
  SerialLog log;
  while (std::chrono::steady_clock::now() < deadline && ticks_after_boot < 4) {
    log = q.Serial();
    ticks_after_boot = 0;
    size_t boots = 0;
    for (const std::string& line : log.lines) {
      if (line.rfind("BOOT", 0) == 0) boots++;
      if (boots >= 2 && line.rfind("TICK", 0) == 0) ticks_after_boot++;
    }
    std::this_thread::sleep_for(200ms);
  }
  INFO(log.Tail());
  INFO(q.Describe());
  SV_CHECK(log.boots.size() == 2);
  SV_CHECK(ticks_after_boot >= 4);
  SV_CHECK(log.panics.size() == 1);
  SV_CHECK(vm.ReadRecord(0).valid);
  SV_CHECK(sv.Stop().success());
  // Detached: the guest it did not own runs on.
  SV_CHECK(q.RunState() == "running");
}

}  // namespace
}  // namespace rwd::test::guest
