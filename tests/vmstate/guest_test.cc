// The project's test guest (tests/guest) under qemu-system-x86_64 (TCG) on
// two rewind disks: it boots and runs, its RAM and disks agree, and its
// checker does fail when they do not -- a disk changed behind its back, RAM
// brought back from an older instant than the disks.  Also QEMU's own
// migration to a file and back (a stopped guest, disks left alone) as the
// baseline of a consistent whole-VM restore.  And the faults it makes for
// the supervisor: a panic on a corrupted record (PANIC, GUEST_PANICKED
// through pvpanic), a hang, and the heartbeat it answers until then.
// Skipped (exit 77) without nbdkit or QEMU.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>

#include "guest_util.h"

namespace rwd::test::guest {
namespace {

// A guest booted on two fresh rewind disks and running: its first TICK seen.
struct Running {
  GuestVm vm;
  Qemu* q = nullptr;
  double boot_seconds = 0;

  Running() {
    double t0 = NowSeconds();
    q = &vm.Boot();
    boot_seconds = NowSeconds() - t0;
    std::string why;
    bool ticked = q->WaitForTick(2 * kTickEvery, 20s, &why).has_value();
    INFO(why);
    REQUIRE(ticked);
  }
};

// The serial log holds nothing but BOOT and TICK lines.
void RequireClean(const SerialLog& log) {
  INFO(log.Tail());
  CHECK(log.mismatches.empty());
  CHECK(log.ram_bad.empty());
  CHECK(log.disk_errors.empty());
  CHECK(log.panics.empty());
  CHECK(log.hangs.empty());
  CHECK(log.unknown.empty());
}

// QEMU with what the fault tests need: pvpanic, QEMU pausing the guest on
// a panic, and the heartbeat on COM2.
QemuOptions FaultOptions() {
  QemuOptions o;
  o.pvpanic = true;
  o.panic_action = "pause";
  o.agent = true;
  return o;
}

bool Has(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// Saves the (stopped) VM's state to file with QEMU's migration.
void SaveState(Qemu& q, const std::string& file) {
  q.Qmp("migrate", {{"uri", "exec:cat > " + file}});
  q.WaitMigration(30s);
}

// Starts a fresh QEMU waiting for migration, loads file into it and starts
// the CPU.
Qemu& RestoreState(GuestVm& vm, const std::string& file) {
  QemuOptions o;
  o.incoming_defer = true;
  Qemu& q = vm.StartQemu(o);
  REQUIRE(q.RunState() == "inmigrate");
  q.Qmp("migrate-incoming", {{"uri", "exec:cat " + file}});
  q.WaitMigration(30s);
  // The source was stopped, so the destination stays paused.
  if (q.RunState() != "running") q.Qmp("cont");
  REQUIRE(q.RunState() == "running");
  return q;
}

TEST_CASE("guest: boots on two rewind disks and counts on with RAM and disks agreeing", "[guest]") {
  RequireQemuOrSkip();
  Running g;
  Qemu& q = *g.q;
  INFO(g.vm.Describe());

  std::string why;
  double t0 = NowSeconds();
  auto first = q.WaitForTick(3 * kTickEvery, 10s, &why);
  INFO(why);
  REQUIRE(first);
  auto later = q.WaitForTick(first->counter + 10 * kTickEvery, 20s, &why);
  INFO(why);
  REQUIRE(later);
  double rate = (later->counter - first->counter) / (NowSeconds() - t0);
  std::fprintf(stderr, "note: guest booted in %.2f s (QEMU start to BOOT line), %.0f iterations/s\n",
               g.boot_seconds, rate);

  SerialLog log = q.Serial();
  REQUIRE(log.boots == std::vector<uint32_t>{1});
  RequireClean(log);
  CHECK(later->mismatches == 0);
  CHECK(later->ram_errors == 0);

  // Stopped, anywhere in its loop: the status sector is clean, both records
  // are valid and at most one write apart (disk 0 is written first).
  q.Qmp("stop");
  REQUIRE(q.RunState() == "paused");
  GuestStatus st = g.vm.ReadStatus();
  INFO(st.ToString());
  REQUIRE(st.valid);
  CHECK(st.mismatches == 0);
  CHECK(st.boots == 1);
  CHECK(st.ram_errors == 0);
  GuestRecord r0 = g.vm.ReadRecord(0), r1 = g.vm.ReadRecord(1);
  INFO(r0.ToString() << "; " << r1.ToString());
  REQUIRE(r0.valid);
  REQUIRE(r1.valid);
  CHECK(r0.disk_index == 0);
  CHECK(r1.disk_index == 1);
  CHECK((r0.counter == r1.counter || r0.counter == r1.counter + 1));
  CHECK(r1.counter >= later->counter);
  uint32_t c = q.ReadRamCounter();
  CHECK((c == r0.counter || c == r0.counter + 1));

  // And it carries on after cont.
  q.Qmp("cont");
  auto after = q.WaitForTick(r0.counter + 2 * kTickEvery, 10s, &why);
  INFO(why);
  REQUIRE(after);
  q.Qmp("stop");
  RequireClean(q.Serial());
  CHECK(g.vm.ReadStatus().mismatches == 0);
}

TEST_CASE("guest: a disk changed behind its back is reported as a MISMATCH", "[guest]") {
  RequireQemuOrSkip();
  Running g;
  Qemu& q = *g.q;
  INFO(g.vm.Describe());

  // Stopped where its next disk access is a read, disk 1's record gets
  // another (valid) counter.
  const uint32_t c = q.StopAtSafePoint();
  const uint32_t poked = c + 1000003;
  g.vm.disk(1).WriteRecord(poked, 1);
  RequireClean(q.Serial());
  q.Qmp("cont");

  std::string why;
  auto line = q.WaitForLine("MISMATCH ", 1, 10s, &why);
  INFO(why);
  REQUIRE(line);
  SerialLog log = q.Serial();
  INFO(log.Tail());
  REQUIRE(log.mismatches.size() == 1);
  const Mismatch& m = log.mismatches[0];
  CHECK(m.ram == c);
  CHECK(m.d0 == c);
  CHECK(m.d1 == poked);
  CHECK(m.mismatches == 1);

  // It goes on from its RAM counter; the disks agree again, nothing more
  // is reported, and the count stays in the status sector.
  auto tick = q.WaitForTick(c + 2 * kTickEvery, 10s, &why);
  INFO(why);
  REQUIRE(tick);
  CHECK(tick->mismatches == 1);
  q.Qmp("stop");
  log = q.Serial();
  CHECK(log.mismatches.size() == 1);
  CHECK(log.ram_bad.empty());
  GuestStatus st = g.vm.ReadStatus();
  INFO(st.ToString());
  REQUIRE(st.valid);
  CHECK(st.mismatches == 1);
  CHECK(st.last_ram == c);
  CHECK(st.last_d0 == c);
  CHECK(st.last_d1 == poked);
  CHECK(st.boots == 1);

  // A record that is not valid at all (here: a torn one, bad inverse) is
  // a corrupted disk, not a disagreement: the guest panics (no pvpanic
  // device here, so QEMU goes on running a halted guest), at once, before
  // it counts, writes or reads anything more.
  const uint32_t c2 = q.StopAtSafePoint();
  std::vector<uint8_t> bad = MakeRecord(c2, 0);
  bad[12] ^= 1;
  REQUIRE_FALSE(ParseRecord(bad.data()).valid);
  NbdClient::Connect(g.vm.disk(0).socket())->Pwrite(bad, kRecordLba * kSectorSize);
  q.Qmp("cont");
  line = q.WaitForLine("PANIC ", 1, 10s, &why);
  INFO(why);
  REQUIRE(line);
  CHECK(*line == fmt::format("PANIC drive={} lba={}", kFirstDrive, kRecordLba));
  CHECK(q.RunState() == "running");
  q.Qmp("stop");
  CHECK(q.IsHalted());
  CHECK(q.ReadRamCounter() == c2);
  log = q.Serial();
  INFO(log.Tail());
  CHECK(log.mismatches.size() == 1);
  CHECK(log.panics.size() == 1);
  CHECK(log.lines.back() == *line);
  st = g.vm.ReadStatus();
  CHECK(st.mismatches == 1);
  CHECK_FALSE(g.vm.ReadRecord(0).valid);
  CHECK(g.vm.ReadRecord(1).counter == c2);
}

TEST_CASE("guest: a corrupted record makes it panic: PANIC, then GUEST_PANICKED via pvpanic",
          "[guest]") {
  RequireQemuOrSkip();
  GuestVm vm;
  Qemu& q = vm.Boot(FaultOptions());
  INFO(vm.Describe());
  std::string why;
  const bool ticked = q.WaitForTick(2 * kTickEvery, 20s, &why).has_value();
  INFO(why);
  REQUIRE(ticked);
  auto agent = AgentClient::Connect(q.agent_path());
  REQUIRE(agent->Ping(10s));

  // Disk 1's record becomes garbage where the guest reads it next.
  const uint32_t c = q.StopAtSafePoint();
  vm.WriteBadRecord(1, BadRecord::kGarbage);
  REQUIRE_FALSE(vm.ReadRecord(1).valid);
  q.Qmp("cont");

  auto event = q.WaitEvent("GUEST_PANICKED", 20s, &why);
  INFO(why);
  REQUIRE(event);
  INFO(event->dump());
  CHECK(event->at("data").value("action", std::string()) == "pause");
  CHECK(q.RunState() == "guest-panicked");
  SerialLog log = q.Serial();
  INFO(log.Tail());
  REQUIRE(log.panics.size() == 1);
  CHECK(log.panics[0] == fmt::format("PANIC drive={} lba={}", kFirstDrive + 1, kRecordLba));
  CHECK(log.lines.back() == log.panics[0]);
  CHECK(log.mismatches.empty());
  CHECK(log.hangs.empty());
  // It stopped right there: no step further, nothing written or counted.
  CHECK(q.ReadRamCounter() == c);
  CHECK(vm.ReadRecord(0).counter == c);
  CHECK_FALSE(vm.ReadRecord(1).valid);
  GuestStatus st = vm.ReadStatus();
  INFO(st.ToString());
  CHECK(st.mismatches == 0);
  // And a panicked guest answers no ping.
  std::string reply;
  CHECK_FALSE(agent->Ping(2s, &reply));
  CHECK(reply.empty());
}

TEST_CASE("guest: the hang marker hangs it: HANG, no more heartbeat answers, no panic",
          "[guest]") {
  RequireQemuOrSkip();
  GuestVm vm;
  Qemu& q = vm.Boot(FaultOptions());
  INFO(vm.Describe());
  std::string why;
  const bool ticked = q.WaitForTick(2 * kTickEvery, 20s, &why).has_value();
  INFO(why);
  REQUIRE(ticked);
  auto agent = AgentClient::Connect(q.agent_path());
  std::string reply;
  for (int i = 0; i < 3; ++i) {
    const bool answered = agent->Ping(10s, &reply);
    INFO("ping " << i << ": '" << reply << "'");
    REQUIRE(answered);
  }

  const uint32_t c = q.StopAtSafePoint();
  vm.WriteBadRecord(0, BadRecord::kHangMarker);
  REQUIRE(vm.ReadRecord(0).hang_marker);
  q.Qmp("cont");
  auto line = q.WaitForLine("HANG ", 1, 10s, &why);
  INFO(why);
  REQUIRE(line);
  CHECK(*line == fmt::format("HANG drive={} lba={}", kFirstDrive, kRecordLba));

  // Hung: no answer, no panic, QEMU sees a running guest that does nothing.
  CHECK_FALSE(agent->Ping(3s, &reply));
  CHECK(reply.empty());
  CHECK(q.RunState() == "running");
  CHECK_FALSE(Has(q.TakeEventNames(), "GUEST_PANICKED"));
  CHECK(q.ReadRamCounter() == c);
  SerialLog log = q.Serial();
  INFO(log.Tail());
  CHECK(log.hangs.size() == 1);
  CHECK(log.panics.empty());
  CHECK(log.lines.back() == *line);
  CHECK(vm.ReadRecord(1).counter == c);
}

TEST_CASE("guest: without corruption it answers every heartbeat ping and does not panic",
          "[guest]") {
  RequireQemuOrSkip();
  GuestVm vm;
  Qemu& q = vm.Boot(FaultOptions());
  INFO(vm.Describe());
  std::string why;
  auto first = q.WaitForTick(2 * kTickEvery, 20s, &why);
  INFO(why);
  REQUIRE(first);
  auto agent = AgentClient::Connect(q.agent_path());

  // Pings for 3 s, each answered; the guest counts on meanwhile.
  int pings = 0;
  double slowest = 0;
  const double t0 = NowSeconds();
  while (NowSeconds() - t0 < 3) {
    std::string reply;
    const double t = NowSeconds();
    const bool answered = agent->Ping(10s, &reply);
    INFO("ping " << pings << ": '" << reply << "'");
    REQUIRE(answered);
    slowest = std::max(slowest, NowSeconds() - t);
    ++pings;
    std::this_thread::sleep_for(50ms);
  }
  std::fprintf(stderr, "note: %d heartbeat pings answered, the slowest in %.3f s\n", pings,
               slowest);
  CHECK(pings >= 10);
  auto later = q.WaitForTick(first->counter + 4 * kTickEvery, 20s, &why);
  INFO(why);
  REQUIRE(later);
  CHECK(q.RunState() == "running");
  CHECK_FALSE(Has(q.TakeEventNames(), "GUEST_PANICKED"));
  q.Qmp("stop");
  RequireClean(q.Serial());
  CHECK(vm.ReadStatus().mismatches == 0);
}

TEST_CASE("guest: saved by QEMU migration and restored in a new QEMU it counts on cleanly",
          "[guest]") {
  RequireQemuOrSkip();
  Running g;
  INFO(g.vm.Describe());

  // Stopped anywhere (also between its two writes): RAM, CPU and disks are
  // of one instant as long as nothing runs until the restore.
  g.q->Qmp("stop");
  const uint32_t c = g.q->ReadRamCounter();
  const uint32_t last_tick = g.q->Serial().LastTick()->counter;
  const std::string state = g.vm.path("state.mig");
  SaveState(*g.q, state);
  g.vm.KillQemu();

  Qemu& q2 = RestoreState(g.vm, state);
  std::string why;
  auto tick = q2.WaitForTick(c + 4 * kTickEvery, 20s, &why);
  INFO(why);
  REQUIRE(tick);
  q2.Qmp("stop");
  SerialLog log = q2.Serial();
  INFO(log.Tail());
  CHECK(log.boots.empty());  // resumed, not booted again
  // Stopped in the middle of printing a line, it ends that line first.
  if (!log.unknown.empty() && log.unknown.front() == log.lines.front()) {
    log.unknown.erase(log.unknown.begin());
  }
  RequireClean(log);
  // The counting goes on where it was: the TICKs continue in steps of 16.
  REQUIRE_FALSE(log.ticks.empty());
  CHECK(log.ticks.front().counter > last_tick);
  CHECK(log.ticks.front().counter <= last_tick + 2 * kTickEvery);
  for (size_t i = 1; i < log.ticks.size(); ++i) {
    CHECK(log.ticks[i].counter == log.ticks[i - 1].counter + kTickEvery);
  }
  CHECK(tick->mismatches == 0);
  GuestStatus st = g.vm.ReadStatus();
  INFO(st.ToString());
  CHECK(st.mismatches == 0);
  CHECK(st.boots == 1);
}

TEST_CASE("guest: RAM restored from an older instant than its disks is reported", "[guest]") {
  RequireQemuOrSkip();
  Running g;
  INFO(g.vm.Describe());

  // State A saved at a safe point; then the guest runs on, so the disks
  // move past A.
  const uint32_t c = g.q->StopAtSafePoint();
  const std::string state = g.vm.path("state.mig");
  SaveState(*g.q, state);
  g.q->Qmp("cont");
  std::string why;
  REQUIRE(g.q->WaitForTick(c + 4 * kTickEvery, 10s, &why));
  const uint32_t later = g.q->StopAtSafePoint();  // C == both records
  REQUIRE(later > c);
  g.vm.KillQemu();

  // RAM of A with the disks of later: the first thing the guest does is read
  // its records.
  Qemu& q2 = RestoreState(g.vm, state);
  auto line = q2.WaitForLine("MISMATCH ", 1, 10s, &why);
  INFO(why);
  REQUIRE(line);
  SerialLog log = q2.Serial();
  INFO(log.Tail());
  REQUIRE(log.mismatches.size() == 1);
  CHECK(log.mismatches[0].ram == c);
  CHECK(log.mismatches[0].d0 == later);
  CHECK(log.mismatches[0].d1 == later);
  q2.Qmp("stop");
  GuestStatus st = g.vm.ReadStatus();
  INFO(st.ToString());
  CHECK(st.mismatches == 1);
  CHECK(st.last_ram == c);
  CHECK(st.last_d0 == later);
}

}  // namespace
}  // namespace rwd::test::guest
