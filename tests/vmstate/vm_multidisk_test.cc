// Whole-VM checkpoints of the test guest (tests/guest) with both its disks
// in ONE rewind store (disk=d0 disk=d1: one nbdkit, exports d0 and d1, one
// timeline): `rewind vm checkpoint` in stop and live mode with the one
// store, one checkpoint (kind "vm") per VM checkpoint, and `rewind vm
// restore` into a fresh QEMU that the guest itself checks (its RAM counter
// against both disks' records), with the disks at the checkpoint (exports
// d0@NAME, d1@NAME) agreeing with what the restored guest sees.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "guest_util.h"
#include "support/proc_util.h"

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using rwd::test::ProcResult;
using rwd::test::RunProcess;
using rwd::test::guest::GuestRecord;
using rwd::test::guest::GuestStatus;
using rwd::test::guest::GuestVm;
using rwd::test::guest::GuestVmOptions;
using rwd::test::guest::kTickEvery;
using rwd::test::guest::Qemu;
using rwd::test::guest::RequireQemuOrSkip;

ProcResult Cli(std::vector<std::string> args, std::chrono::milliseconds timeout = 120s) {
  args.insert(args.begin(), REWIND_CLI_PATH);
  return RunProcess(args, timeout);
}

GuestVmOptions OneStore() {
  GuestVmOptions o;
  o.one_store = true;
  o.disk_sizes = {8u << 20, 2u << 20};  // different sizes: d0 8 MiB, d1 2 MiB
  return o;
}

const std::string& StoreDir(GuestVm& vm) { return vm.disk(0).store_dir(); }

ProcResult VmCheckpoint(GuestVm& vm, const std::string& name, bool live) {
  std::vector<std::string> args = {"vm",     "checkpoint", "--qmp", vm.qemu().tool_qmp_path(),
                                   "--name", name,         "--json", StoreDir(vm)};
  if (live) args.push_back("--live");
  return Cli(args);
}

ProcResult VmRestore(GuestVm& vm, const std::string& name) {
  return Cli({"vm", "restore", "--qmp", vm.qemu().tool_qmp_path(), "--to", name, "--json",
              StoreDir(vm)});
}

json List(const std::string& dir) {
  ProcResult r = Cli({"list", dir, "--json"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  return json::parse(r.out).at("checkpoints");
}

int Count(const json& list, const std::string& name) {
  int n = 0;
  for (const json& cp : list) n += cp["name"] == name;
  return n;
}

const json* Find(const json& list, const std::string& name) {
  for (const json& cp : list) {
    if (cp["name"] == name) return &cp;
  }
  return nullptr;
}

// Both records at the checkpoint (exports d0@NAME, d1@NAME): valid, of the
// right disk, and equal (the guest writes d0 then d1, but a checkpoint of a
// stopped guest may fall between the two writes: d0 may be one ahead).
// Returns d1's counter.
uint32_t RecordsAt(GuestVm& vm, const std::string& name) {
  GuestRecord r0 = vm.ReadRecord(0, name), r1 = vm.ReadRecord(1, name);
  INFO("at " << name << ": d0 " << r0.ToString() << ", d1 " << r1.ToString());
  REQUIRE(r0.valid);
  REQUIRE(r1.valid);
  CHECK(r0.disk_index == 0);
  CHECK(r1.disk_index == 1);
  CHECK((r0.counter == r1.counter || r0.counter == r1.counter + 1));
  return r1.counter;
}

// Guest disk i, live (at "") or at a point, all of it except the record
// sector: what the guest writes every iteration.
std::vector<uint8_t> DiskWithoutRecord(GuestVm& vm, size_t i, const std::string& at) {
  rwd::test::NbdClientOptions o;
  o.export_name = vm.export_of(i) + (at.empty() ? "" : "@" + at);
  auto c = rwd::test::NbdClient::Connect(vm.socket_of(i), o);
  const uint64_t size = static_cast<uint64_t>(c->Size());
  std::vector<uint8_t> out(size);
  constexpr uint64_t kChunk = 1u << 20;
  for (uint64_t off = 0; off < size; off += kChunk) {
    c->Pread(out.data() + off, std::min(kChunk, size - off), off);
  }
  const uint64_t rec = rwd::test::guest::kRecordLba * rwd::test::guest::kSectorSize;
  std::fill(out.begin() + rec, out.begin() + rec + rwd::test::guest::kSectorSize, 0);
  return out;
}

// Starts a fresh QEMU waiting for its state (same exports d0, d1 on the one
// socket), restores checkpoint name into it, and checks what the guest says
// afterwards, as CheckRunsOnConsistently in vm_checkpoint_test.cc: it
// resumes from the checkpoint's counter, RAM and both disks agree, it was
// not rebooted, and it runs on.  And both live disks, but for the record
// the guest has moved on since, equal the disks at the checkpoint (exports
// d0@NAME, d1@NAME).
void RestoreAndCheck(GuestVm& vm, const std::string& name, uint32_t at_least, uint32_t at_most) {
  const uint32_t c_at = RecordsAt(vm, name);
  CHECK(c_at >= at_least);
  CHECK(c_at <= at_most);
  vm.KillQemu();
  rwd::test::guest::QemuOptions o;
  o.incoming_defer = true;
  Qemu& q = vm.StartQemu(o);
  // QEMU opens the named exports of the one store.
  REQUIRE(q.command().find(",export=d0") != std::string::npos);
  REQUIRE(q.command().find(",export=d1") != std::string::npos);
  CHECK(q.RunState() == "inmigrate");

  ProcResult r = VmRestore(vm, name);
  INFO(r.Describe());
  INFO(vm.Describe());
  REQUIRE(r.ok());
  json rj = json::parse(r.out);
  CHECK(rj["name"] == name);
  CHECK(rj["disks"].size() == 1);      // one store
  CHECK(rj["rollbacks"].size() == 1);  // one rollback, both disks
  // The restore resumed the guest; stop it (stop drains its I/O) for a
  // look at RAM and disks.
  q.Qmp("stop");
  {
    const uint32_t ram = q.ReadRamCounter();
    GuestRecord l0 = vm.ReadRecord(0), l1 = vm.ReadRecord(1);
    GuestRecord p0 = vm.ReadRecord(0, name), p1 = vm.ReadRecord(1, name);
    INFO("RAM C=" << ram << "; live d0 " << l0.ToString() << ", d1 " << l1.ToString() << "; at "
                  << name << " d0 " << p0.ToString() << ", d1 " << p1.ToString());
    // The live records went on from the checkpoint's with RAM: the guest
    // adds 1 to C, then writes d0, then d1.
    CHECK(l0.valid);
    CHECK(l1.valid);
    CHECK(l0.counter >= p0.counter);
    CHECK(l1.counter >= p1.counter);
    CHECK(l1.counter <= l0.counter);
    CHECK(l0.counter <= ram);
    CHECK(ram - l1.counter <= 1);
    CHECK(ram >= c_at);
    CHECK(ram <= at_most + kTickEvery);
    // Everything else on both disks (the guest image, the status sector,
    // the rest of d1) is as at the checkpoint.
    for (size_t i = 0; i < 2; i++) {
      const std::vector<uint8_t> now = DiskWithoutRecord(vm, i, "");
      const std::vector<uint8_t> then = DiskWithoutRecord(vm, i, name);
      REQUIRE(now.size() == then.size());
      auto diff = std::mismatch(now.begin(), now.end(), then.begin());
      const int64_t first_difference = diff.first == now.end() ? -1 : diff.first - now.begin();
      INFO("disk d" << i << " (-1: no difference)");
      CHECK(first_difference == -1);
    }
  }
  q.Qmp("cont");

  std::string why;
  auto first = q.WaitForTick(0, 30s, &why);
  INFO(why);
  REQUIRE(first);
  CHECK(first->counter >= at_least);
  CHECK(first->counter <= at_most + kTickEvery);
  CHECK(first->counter >= c_at);
  CHECK(first->counter <= c_at + kTickEvery);
  auto later = q.WaitForTick(first->counter + 4 * kTickEvery, 30s, &why);
  INFO(why);
  REQUIRE(later);
  rwd::test::guest::SerialLog log = q.Serial();
  INFO(log.Tail());
  CHECK(log.mismatches.empty());
  CHECK(log.boots.empty());  // resumed, not rebooted
  CHECK(log.disk_errors.empty());
  CHECK(log.ram_bad.empty());
  CHECK(later->mismatches == 0);
  const uint32_t c_stop = q.StopAtSafePoint();
  GuestStatus st = vm.ReadStatus();
  INFO(st.ToString());
  CHECK(st.valid);
  CHECK(st.mismatches == 0);
  CHECK(st.boots == 1);
  CHECK(st.ram_errors == 0);
  // Both disks of the one store moved on together.
  CHECK(vm.ReadRecord(0).counter == c_stop);
  CHECK(vm.ReadRecord(1).counter == c_stop);
  q.Qmp("cont");
  // The disks at the checkpoint are still what they were.
  CHECK(RecordsAt(vm, name) == c_at);
}

}  // namespace

TEST_CASE("whole-VM checkpoints of a two-disk guest on one store restore it consistently",
          "[vm][guest][multidisk]") {
  RequireQemuOrSkip();
  GuestVm vm(OneStore());
  REQUIRE(vm.disk_count() == 1);
  REQUIRE(vm.guest_disk_count() == 2);
  Qemu& q1 = vm.Boot();
  {
    std::string why;
    INFO(vm.Describe());
    REQUIRE(q1.WaitForTick(2 * kTickEvery, 30s, &why));
  }
  // QEMU runs on the exports d0 and d1 of one socket, and sees their sizes.
  CHECK(q1.command().find(",export=d0") != std::string::npos);
  CHECK(q1.command().find(",export=d1") != std::string::npos);
  {
    json blocks = q1.Qmp("query-block");
    std::vector<uint64_t> sizes;
    for (const json& b : blocks) {
      if (b.contains("inserted")) sizes.push_back(b["inserted"]["image"]["virtual-size"]);
    }
    CHECK(sizes == std::vector<uint64_t>{8u << 20, 2u << 20});
  }

  // Stop mode, with the one store.
  ProcResult stop = VmCheckpoint(vm, "stop1", false);
  INFO(stop.Describe());
  REQUIRE(stop.ok());
  json sj = json::parse(stop.out);
  CHECK(sj["mode"] == "stop");
  CHECK(sj["disks"].size() == 1);
  REQUIRE(q1.Serial().LastTick());
  const uint32_t c_stop = q1.Serial().LastTick()->counter;
  REQUIRE(q1.WaitForTick(c_stop + 4 * kTickEvery, 30s));

  // Live mode.
  ProcResult live = VmCheckpoint(vm, "live1", true);
  INFO(live.Describe());
  REQUIRE(live.ok());
  json lj = json::parse(live.out);
  CHECK(lj["mode"] == "live");
  CHECK(lj["disks"].size() == 1);
  CHECK(lj["downtime_ms"].get<double>() < 300);
  REQUIRE(q1.Serial().LastTick());
  const uint32_t c_live = q1.Serial().LastTick()->counter;
  // The guest runs on well past both.
  auto far = q1.WaitForTick(c_live + 8 * kTickEvery, 60s);
  REQUIRE(far);
  const uint32_t c_end = far->counter;

  // One checkpoint per whole-VM checkpoint, of kind "vm" (not one per disk).
  json list = List(StoreDir(vm));
  INFO(list.dump(1));
  CHECK(Count(list, "stop1") == 1);
  CHECK(Count(list, "live1") == 1);
  REQUIRE(Find(list, "stop1"));
  REQUIRE(Find(list, "live1"));
  CHECK((*Find(list, "stop1"))["kind"] == "vm");
  CHECK((*Find(list, "live1"))["kind"] == "vm");
  CHECK(list.size() == 2);
  // Exports of both disks at each checkpoint: the records of one instant.
  const uint32_t r_stop = RecordsAt(vm, "stop1");
  const uint32_t r_live = RecordsAt(vm, "live1");
  CHECK(r_stop < r_live);
  CHECK(r_live < c_end);

  // Kill QEMU; a fresh one on the same exports, back to each checkpoint.
  RestoreAndCheck(vm, "stop1", c_stop - kTickEvery, c_live);
  RestoreAndCheck(vm, "live1", c_live - kTickEvery, c_end);

  // Each restore left one undoable before-rollback checkpoint (one store).
  vm.KillQemu();
  json after = List(StoreDir(vm));
  INFO(after.dump(1));
  int befores = 0;
  for (const json& cp : after) {
    befores += cp["name"].get<std::string>().rfind("before-rollback-", 0) == 0;
  }
  CHECK(befores == 2);
  CHECK(Count(after, "stop1") == 1);
  CHECK(Count(after, "live1") == 1);

  // The store is sound: through its plugin, and on its own.
  ProcResult v = Cli({"verify", StoreDir(vm)});
  INFO(v.Describe());
  CHECK(v.ok());
  vm.disk(0).Stop();
  ProcResult off = Cli({"verify", StoreDir(vm)});
  INFO(off.Describe());
  CHECK(off.ok());
}
