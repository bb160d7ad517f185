// Pending checkpoints (Store::Checkpoint with CheckpointOptions::pending,
// Store::CommitCheckpoint): a marker in the timeline, taken like any
// checkpoint, that stays invisible -- to ListCheckpoints, ResolvePoint and
// GetInfo's count -- until committed, and whose name is not reserved until
// then.  The point it names is the instant it was taken, not committed.
//
//  * visibility: hidden, listed only with_pending (pending, its kind),
//    NotFound by name, not counted; committed: listed, resolvable, counted;
//    commit is idempotent; an unknown id is NotFound.
//  * names: a visible checkpoint may take a pending one's name, and the
//    commit is then refused (AlreadyExists) and it stays pending; a race of
//    the two leaves exactly one winner.
//  * the point: snapshot, restore and rollback at a committed checkpoint
//    give the disk as it was when it was taken.
//  * durability: pending and committed survive Close and reopen; a commit
//    survives a power cut, a pending checkpoint never turns visible by one
//    (cut before its record is durable, cut just before the commit's write).
//  * prune: pending checkpoints are dropped (but the newest record of all),
//    never counted for keep_last, and history reads stay exact; names stay
//    right afterwards.
//  * a pending checkpoint is an epoch boundary: rollbacks and snapshots of
//    points older than it stay exact.
//  * a bad kind is InvalidArgument and records nothing; Verify finds no
//    damage in a store with pending checkpoints.
#include <catch2/catch.hpp>

#include "support/fault_fs.h"
#include "support/mem_image.h"
#include "support/proc_util.h"

#include <rewind/journal/fault_point.h>
#include <rewind/journal/store.h>

#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

using rwd::CheckpointInfo;
using rwd::CheckpointOptions;
using rwd::PointInfo;
using rwd::Status;
using rwd::Store;
using rwd::StoreInfo;
using rwd::StoreOptions;
using rwd::test::FaultInjectionFS;
using rwd::test::MemImageFactory;
using rwd::test::TempDir;

namespace {

constexpr uint64_t kSize = 1 << 20;
constexpr uint32_t kBlock = 4096;
constexpr int64_t kSec = 1000000000;

// A fake wall clock (2026-11-23T00:00:00Z), moved on by hand.
struct Clock {
  std::atomic<int64_t> now{20780LL * 86400 * kSec};
};

struct Env {
  std::string dir;
  Clock* clock = nullptr;
  std::shared_ptr<FaultInjectionFS> fs;
  std::shared_ptr<MemImageFactory> images;
};

Status TryOpen(const Env& e, std::unique_ptr<Store>* out) {
  StoreOptions o;
  o.dir = e.dir;
  o.size = kSize;
  o.block_size = kBlock;
  if (e.clock) {
    Clock* c = e.clock;
    o.clock = [c] { return c->now.load(); };
  }
  o.fs = e.fs;
  o.image_factory = e.images;
  return Store::Open(o, out);
}

std::unique_ptr<Store> Open(const Env& e) {
  std::unique_ptr<Store> s;
  Status st = TryOpen(e, &s);
  INFO("open " << e.dir << ": " << st.ToString());
  REQUIRE(st.ok());
  return s;
}

std::vector<char> Pattern(size_t n, uint32_t seed) {
  std::vector<char> v(n);
  std::mt19937 rng(seed);
  for (auto& c : v) c = static_cast<char>(rng() | 1);  // never zero
  return v;
}

// Writes data at off into the store and into the model of the live disk.
void Put(Store& s, std::vector<char>* model, uint64_t off, const std::vector<char>& data) {
  Status st = s.Write(off, static_cast<uint32_t>(data.size()), data.data(), false);
  INFO("write at " << off << ": " << st.ToString());
  REQUIRE(st.ok());
  std::memcpy(model->data() + off, data.data(), data.size());
}

std::vector<char> ReadLive(Store& s) {
  std::vector<char> v(kSize);
  Status st = s.Read(0, kSize, v.data());
  INFO(st.ToString());
  REQUIRE(st.ok());
  return v;
}

// The whole disk at a point, through OpenSnapshot.
std::vector<char> ReadAt(Store& s, const PointInfo& p) {
  std::unique_ptr<rwd::Snapshot> snap;
  Status st = s.OpenSnapshot(p, &snap);
  INFO("snapshot at " << p.text << ": " << st.ToString());
  REQUIRE(st.ok());
  std::vector<char> v(kSize);
  st = snap->Read(0, kSize, v.data());
  INFO("snapshot read at " << p.text << ": " << st.ToString());
  REQUIRE(st.ok());
  return v;
}

PointInfo Resolve(Store& s, const std::string& text) {
  PointInfo p;
  Status st = s.ResolvePoint(text, &p);
  INFO("resolve " << text << ": " << st.ToString());
  REQUIRE(st.ok());
  return p;
}

std::vector<char> ReadAt(Store& s, const std::string& text) { return ReadAt(s, Resolve(s, text)); }

// "" when equal, else where they first differ.
std::string Differ(const std::vector<char>& want, const std::vector<char>& got) {
  if (want.size() != got.size()) return "sizes differ";
  for (size_t i = 0; i < want.size(); i++) {
    if (want[i] != got[i]) return "first difference at byte " + std::to_string(i);
  }
  return "";
}

CheckpointInfo Take(Store& s, const std::string& name, bool pending, const std::string& kind = "vm") {
  CheckpointOptions o;
  o.name = name;
  o.kind = kind;
  o.pending = pending;
  CheckpointInfo c;
  Status st = s.Checkpoint(o, &c);
  INFO("checkpoint '" << name << "' pending=" << pending << ": " << st.ToString());
  REQUIRE(st.ok());
  CHECK(c.pending == pending);
  CHECK(c.kind == kind);
  return c;
}

std::vector<CheckpointInfo> List(Store& s, bool with_pending = false) {
  std::vector<CheckpointInfo> v;
  Status st = s.ListCheckpoints(&v, with_pending);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return v;
}

const CheckpointInfo* FindId(const std::vector<CheckpointInfo>& v, uint64_t id) {
  for (const auto& c : v) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

uint64_t VisibleCount(Store& s) {
  StoreInfo info;
  Status st = s.GetInfo(&info);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return info.checkpoints;
}

void CheckVerifyClean(Store& s) {
  rwd::VerifyReport r;
  Status st = s.Verify(nullptr, &r);
  INFO(st.ToString());
  REQUIRE(st.ok());
  std::string damage;
  for (const auto& d : r.damage) damage += d + "\n";
  INFO("damage:\n" << damage);
  CHECK(r.clean());
}

// Arms an in-process fault hook for the scope.
struct HookGuard {
  explicit HookGuard(std::function<void(std::string_view)> fn) { rwd::SetFaultHook(std::move(fn)); }
  ~HookGuard() { rwd::SetFaultHook(nullptr); }
};

}  // namespace

TEST_CASE("a pending checkpoint is hidden until committed, then visible at the instant it was "
          "taken",
          "[pending]") {
  TempDir t("rwpend");
  Clock clock;
  Env e{t / "store", &clock, nullptr, nullptr};
  auto s = Open(e);
  std::vector<char> model(kSize, 0);

  const auto a = Pattern(3 * kBlock, 1);
  Put(*s, &model, 5 * kBlock, a);
  const std::vector<char> at_a = model;

  clock.now += 10 * kSec;
  const int64_t taken_ns = clock.now;
  CheckpointInfo p = Take(*s, "vm-1", /*pending=*/true);
  CHECK(p.id == 1);
  CHECK(p.name == "vm-1");
  CHECK(p.lsn == 1);
  CHECK(p.time_ns == taken_ns);

  // Hidden.
  CHECK(List(*s, false).empty());
  {
    std::vector<CheckpointInfo> v{CheckpointInfo{}};
    REQUIRE(s->ListCheckpoints(&v).ok());  // the one-argument overload hides it too
    CHECK(v.empty());
  }
  PointInfo pi;
  Status st = s->ResolvePoint("vm-1", &pi);
  INFO(st.ToString());
  CHECK(st.code() == Status::Code::kNotFound);
  CHECK(VisibleCount(*s) == 0);
  // Shown with_pending, as pending and of its kind.
  {
    auto all = List(*s, true);
    REQUIRE(all.size() == 1);
    CHECK(all[0].id == p.id);
    CHECK(all[0].name == "vm-1");
    CHECK(all[0].pending);
    CHECK(all[0].kind == "vm");
    CHECK(all[0].lsn == p.lsn);
    CHECK(all[0].time_ns == taken_ns);
  }

  // Writes after it, then the commit, later.
  const auto b = Pattern(2 * kBlock, 2);
  Put(*s, &model, 6 * kBlock, b);
  Put(*s, &model, 100 * kBlock, b);
  const std::vector<char> at_b = model;
  clock.now += 60 * kSec;

  CheckpointInfo c;
  st = s->CommitCheckpoint(p.id, &c);
  INFO(st.ToString());
  REQUIRE(st.ok());
  CHECK(c.id == p.id);
  CHECK(c.name == "vm-1");
  CHECK_FALSE(c.pending);
  CHECK(c.kind == "vm");
  CHECK(c.lsn == p.lsn);          // the instant it was taken...
  CHECK(c.time_ns == taken_ns);   // ...not the commit's

  {
    auto vis = List(*s, false);
    REQUIRE(vis.size() == 1);
    CHECK(vis[0].id == p.id);
    CHECK_FALSE(vis[0].pending);
    CHECK(vis[0].kind == "vm");
    CHECK(vis[0].lsn == p.lsn);
    CHECK(vis[0].time_ns == taken_ns);
    auto all = List(*s, true);
    REQUIRE(all.size() == 1);
    CHECK_FALSE(all[0].pending);
  }
  CHECK(VisibleCount(*s) == 1);
  PointInfo cp = Resolve(*s, "vm-1");
  CHECK(cp.lsn == p.lsn);
  CHECK(cp.checkpoint_id == p.id);
  CHECK(cp.checkpoint == "vm-1");
  CHECK(cp.time_ns == taken_ns);

  // The disk at the checkpoint is the one before B.
  INFO(Differ(at_a, ReadAt(*s, cp)));
  CHECK(ReadAt(*s, cp) == at_a);
  {
    rwd::RestoreOptions ro;
    ro.output = t / "restored.raw";
    rwd::RestoreResult rr;
    st = s->Restore(cp, ro, &rr);
    INFO(st.ToString());
    REQUIRE(st.ok());
    CHECK(rr.point.lsn == p.lsn);
    std::string img = rwd::test::ReadFile(ro.output);
    REQUIRE(img.size() == kSize);
    CHECK(std::memcmp(img.data(), at_a.data(), kSize) == 0);
  }
  CHECK(ReadLive(*s) == at_b);

  // Idempotent.
  CheckpointInfo again;
  st = s->CommitCheckpoint(p.id, &again);
  INFO(st.ToString());
  CHECK(st.ok());
  CHECK(again.id == p.id);
  CHECK_FALSE(again.pending);
  CHECK(again.lsn == p.lsn);
  CHECK(again.time_ns == taken_ns);
  CHECK(List(*s, true).size() == 1);
  CHECK(VisibleCount(*s) == 1);
  // Commit without an out parameter.
  CHECK(s->CommitCheckpoint(p.id, nullptr).ok());

  // Unknown ids.
  for (uint64_t id : {uint64_t{0}, uint64_t{2}, uint64_t{999}, UINT64_MAX}) {
    INFO("commit id " << id);
    st = s->CommitCheckpoint(id, &again);
    INFO(st.ToString());
    CHECK(st.code() == Status::Code::kNotFound);
  }
  CHECK(List(*s, true).size() == 1);

  CheckVerifyClean(*s);
  REQUIRE(s->Close().ok());
}

TEST_CASE("a pending checkpoint may have no name, and either kind", "[pending]") {
  TempDir t("rwpend");
  Env e{t / "store", nullptr, nullptr, nullptr};
  auto s = Open(e);
  std::vector<char> model(kSize, 0);
  Put(*s, &model, 0, Pattern(kBlock, 3));

  CheckpointInfo p = Take(*s, "", true, "disk");
  CHECK(p.name == "cp-1");
  CHECK(List(*s).empty());
  PointInfo pi;
  CHECK(s->ResolvePoint("cp-1", &pi).code() == Status::Code::kNotFound);

  // A visible vm checkpoint is visible at once.
  CheckpointInfo v = Take(*s, "whole", false, "vm");
  auto vis = List(*s);
  REQUIRE(vis.size() == 1);
  CHECK(vis[0].id == v.id);
  CHECK(vis[0].kind == "vm");
  CHECK_FALSE(vis[0].pending);

  CheckpointInfo c;
  REQUIRE(s->CommitCheckpoint(p.id, &c).ok());
  CHECK(c.kind == "disk");
  CHECK(c.name == "cp-1");
  CHECK(Resolve(*s, "cp-1").checkpoint_id == p.id);
  CHECK(VisibleCount(*s) == 2);
}

TEST_CASE("a bad checkpoint kind is InvalidArgument and records nothing", "[pending]") {
  TempDir t("rwpend");
  Env e{t / "store", nullptr, nullptr, nullptr};
  auto s = Open(e);
  for (const char* kind : {"bogus", "", "VM", "Disk", "vm "}) {
    for (bool pending : {false, true}) {
      INFO("kind '" << kind << "' pending " << pending);
      CheckpointOptions o;
      o.name = "k";
      o.kind = kind;
      o.pending = pending;
      CheckpointInfo c;
      Status st = s->Checkpoint(o, &c);
      INFO(st.ToString());
      CHECK(st.code() == Status::Code::kInvalidArgument);
      CHECK(st.message().find('\n') == std::string::npos);
    }
  }
  CHECK(List(*s, true).empty());
  // No id was used up, and the name is free.
  CheckpointInfo c = Take(*s, "k", false, "disk");
  CHECK(c.id == 1);
}

TEST_CASE("a pending checkpoint's name is not reserved, and its commit then fails and it stays "
          "pending",
          "[pending]") {
  TempDir t("rwpend");
  Env e{t / "store", nullptr, nullptr, nullptr};
  auto s = Open(e);
  std::vector<char> model(kSize, 0);
  Put(*s, &model, 0, Pattern(kBlock, 4));

  CheckpointInfo p = Take(*s, "x", true);
  Put(*s, &model, kBlock, Pattern(kBlock, 5));
  // A visible checkpoint of the same name can be taken.
  CheckpointInfo v = Take(*s, "x", false, "disk");
  CHECK(v.id == p.id + 1);
  CHECK(v.name == "x");
  // And a second pending one of that name is refused like any other.
  {
    CheckpointOptions o;
    o.name = "x";
    o.kind = "vm";
    o.pending = true;
    CheckpointInfo c;
    Status st = s->Checkpoint(o, &c);
    INFO("pending 'x' once a visible 'x' exists: " << st.ToString());
    CHECK(st.code() == Status::Code::kAlreadyExists);
  }

  auto check_state = [&](Store& st_) {
    CheckpointInfo c;
    Status st = st_.CommitCheckpoint(p.id, &c);
    INFO(st.ToString());
    CHECK(st.code() == Status::Code::kAlreadyExists);
    CHECK(st.message().find("'x'") != std::string::npos);
    auto all = List(st_, true);
    REQUIRE(FindId(all, p.id) != nullptr);
    CHECK(FindId(all, p.id)->pending);
    REQUIRE(FindId(all, v.id) != nullptr);
    CHECK_FALSE(FindId(all, v.id)->pending);
    auto vis = List(st_, false);
    REQUIRE(vis.size() == 1);
    CHECK(vis[0].id == v.id);
    // "x" is the visible one.
    CHECK(Resolve(st_, "x").checkpoint_id == v.id);
    CHECK(Resolve(st_, "x").lsn == v.lsn);
    CHECK(VisibleCount(st_) == 1);
  };
  check_state(*s);
  // A refused commit changed nothing: also after a reopen.
  CheckVerifyClean(*s);
  REQUIRE(s->Close().ok());
  s = Open(e);
  check_state(*s);
  // The visible "x" still reserves its name after the reopen.
  {
    CheckpointInfo c;
    CHECK(s->Checkpoint("x", &c).code() == Status::Code::kAlreadyExists);
  }
  CheckVerifyClean(*s);
}

TEST_CASE("two pending checkpoints of one name: the first commit wins", "[pending]") {
  TempDir t("rwpend");
  Env e{t / "store", nullptr, nullptr, nullptr};
  auto s = Open(e);
  std::vector<char> model(kSize, 0);
  CheckpointInfo p1 = Take(*s, "same", true);
  Put(*s, &model, 0, Pattern(kBlock, 6));
  CheckpointInfo p2 = Take(*s, "same", true);
  CHECK(List(*s, true).size() == 2);
  CheckVerifyClean(*s);

  CheckpointInfo c;
  REQUIRE(s->CommitCheckpoint(p2.id, &c).ok());
  CHECK(s->CommitCheckpoint(p1.id, &c).code() == Status::Code::kAlreadyExists);
  CHECK(Resolve(*s, "same").checkpoint_id == p2.id);
  CHECK(Resolve(*s, "same").lsn == 1);
  CHECK(List(*s).size() == 1);
  CHECK(FindId(List(*s, true), p1.id)->pending);
  CheckVerifyClean(*s);
}

TEST_CASE("a commit racing a visible checkpoint of the same name: exactly one wins",
          "[pending]") {
  TempDir t("rwpend");
  Env e{t / "store", nullptr, nullptr, nullptr};
  auto s = Open(e);
  for (int i = 0; i < 40; i++) {
    const std::string name = "race-" + std::to_string(i);
    CheckpointInfo p = Take(*s, name, true);
    std::atomic<int> go{0};
    Status commit, take;
    std::thread a([&] {
      go++;
      while (go < 2) {
      }
      CheckpointInfo c;
      commit = s->CommitCheckpoint(p.id, &c);
    });
    std::thread b([&] {
      go++;
      while (go < 2) {
      }
      CheckpointInfo c;
      take = s->Checkpoint(name, &c);
    });
    a.join();
    b.join();
    INFO(name << ": commit " << commit.ToString() << ", checkpoint " << take.ToString());
    CHECK(commit.ok() != take.ok());
    if (!commit.ok()) CHECK(commit.code() == Status::Code::kAlreadyExists);
    if (!take.ok()) CHECK(take.code() == Status::Code::kAlreadyExists);
    int visible = 0;
    for (const auto& c : List(*s)) visible += c.name == name;
    CHECK(visible == 1);
  }
  CheckVerifyClean(*s);
}

TEST_CASE("pending and committed checkpoints survive a close and reopen", "[pending]") {
  TempDir t("rwpend");
  Clock clock;
  Env e{t / "store", &clock, nullptr, nullptr};
  std::vector<char> model(kSize, 0);
  CheckpointInfo p1, p2, p3;
  std::vector<char> at_p1, at_p2;
  {
    auto s = Open(e);
    Put(*s, &model, 0, Pattern(kBlock, 7));
    p1 = Take(*s, "stay-pending", true);
    at_p1 = model;
    clock.now += kSec;
    Put(*s, &model, 0, Pattern(kBlock, 8));
    p2 = Take(*s, "committed", true);
    at_p2 = model;
    clock.now += kSec;
    Put(*s, &model, 0, Pattern(kBlock, 9));
    p3 = Take(*s, "later", true);
    clock.now += kSec;
    REQUIRE(s->CommitCheckpoint(p2.id, nullptr).ok());
    REQUIRE(s->Close().ok());
  }
  auto s = Open(e);
  auto vis = List(*s);
  REQUIRE(vis.size() == 1);
  CHECK(vis[0].id == p2.id);
  CHECK(vis[0].lsn == p2.lsn);
  CHECK(vis[0].time_ns == p2.time_ns);
  auto all = List(*s, true);
  REQUIRE(all.size() == 3);
  CHECK(all[0].id == p1.id);
  CHECK(all[0].pending);
  CHECK(all[0].kind == "vm");
  CHECK_FALSE(all[1].pending);
  CHECK(all[2].id == p3.id);
  CHECK(all[2].pending);
  CHECK(VisibleCount(*s) == 1);
  PointInfo pi;
  CHECK(s->ResolvePoint("stay-pending", &pi).code() == Status::Code::kNotFound);
  CHECK(s->ResolvePoint("later", &pi).code() == Status::Code::kNotFound);
  CHECK(ReadAt(*s, "committed") == at_p2);

  // New checkpoint ids go on after the pending ones.
  CheckpointInfo n = Take(*s, "", false, "disk");
  CHECK(n.id == p3.id + 1);
  // The pending names are free after the reopen too...
  Take(*s, "later", false, "disk");
  CHECK(s->CommitCheckpoint(p3.id, nullptr).code() == Status::Code::kAlreadyExists);
  // ...and a pending one can still be committed after it.
  CheckpointInfo c;
  REQUIRE(s->CommitCheckpoint(p1.id, &c).ok());
  CHECK(c.time_ns == p1.time_ns);
  CHECK(ReadAt(*s, "stay-pending") == at_p1);
  CHECK(VisibleCount(*s) == 4);
  REQUIRE(s->Close().ok());
  s = Open(e);
  CHECK(List(*s).size() == 4);
  CHECK(FindId(List(*s, true), p3.id)->pending);
  CHECK(ReadAt(*s, "stay-pending") == at_p1);
  CheckVerifyClean(*s);
}

TEST_CASE("power cuts: a commit is durable, a pending checkpoint never turns visible",
          "[pending][powercut]") {
  TempDir t("rwpend");
  Env e{t / "store", nullptr, std::make_shared<FaultInjectionFS>(),
        std::make_shared<MemImageFactory>()};
  std::mt19937_64 rng(1234);
  std::unique_ptr<Store> s;

  auto cut = [&] {
    e.images->SetActive(false);
    e.fs->SetActive(false);
    s.reset();
    if (auto img = e.images->Only()) REQUIRE(img->open_handles() == 0);
    e.images->SimulatePowerCut(rng);
    std::string err = e.fs->DropUnsyncedData(&rng);
    err += e.fs->DeleteFilesCreatedAfterLastDirSync();
    INFO(err);
    REQUIRE(err.empty());
    e.fs->ResetState();
    e.fs->SetActive(true);
    e.images->SetActive(true);
  };
  // Whatever is there after a cut: id is never visible, by any means.
  auto never_visible = [&](Store& st_, uint64_t id, const std::string& name) {
    for (const auto& c : List(st_)) CHECK(c.id != id);
    for (const auto& c : List(st_, true)) {
      if (c.id == id) CHECK(c.pending);
    }
    PointInfo pi;
    CHECK(st_.ResolvePoint(name, &pi).code() == Status::Code::kNotFound);
  };

  std::vector<char> model(kSize, 0);
  s = Open(e);
  Put(*s, &model, 0, Pattern(kBlock, 10));
  REQUIRE(s->Flush().ok());

  SECTION("commit, then cut: visible") {
    CheckpointInfo p = Take(*s, "vm-a", true);
    Put(*s, &model, kBlock, Pattern(kBlock, 11));
    REQUIRE(s->CommitCheckpoint(p.id, nullptr).ok());
    cut();
    s = Open(e);
    auto vis = List(*s);
    REQUIRE(vis.size() == 1);
    CHECK(vis[0].id == p.id);
    CHECK_FALSE(vis[0].pending);
    CHECK(vis[0].kind == "vm");
    CHECK(Resolve(*s, "vm-a").lsn == p.lsn);
    CHECK(VisibleCount(*s) == 1);
  }
  SECTION("pending, never committed, then cut: hidden") {
    CheckpointInfo p = Take(*s, "vm-b", true);
    Put(*s, &model, kBlock, Pattern(kBlock, 12));
    cut();
    s = Open(e);
    never_visible(*s, p.id, "vm-b");
    // It was durable when Checkpoint returned: still there, still pending.
    auto all = List(*s, true);
    REQUIRE(FindId(all, p.id) != nullptr);
    CHECK(FindId(all, p.id)->pending);
    CHECK(VisibleCount(*s) == 0);
    // And it can still be committed.
    REQUIRE(s->CommitCheckpoint(p.id, nullptr).ok());
    CHECK(Resolve(*s, "vm-b").checkpoint_id == p.id);
  }
  SECTION("cut while the pending checkpoint is being taken: absent or hidden") {
    HookGuard hook([&](std::string_view point) {
      if (point == "checkpoint.before_commit") {
        e.images->SetActive(false);
        e.fs->SetActive(false);
      }
    });
    CheckpointOptions o;
    o.name = "vm-c";
    o.kind = "vm";
    o.pending = true;
    CheckpointInfo c;
    // It may fail (the power went before its record was synced) or, when
    // the committer synced it first, succeed: pending either way.
    Status st = s->Checkpoint(o, &c);
    INFO(st.ToString());
    rwd::SetFaultHook(nullptr);
    cut();
    s = Open(e);
    never_visible(*s, 1, "vm-c");
    CHECK(VisibleCount(*s) == 0);
  }
  SECTION("cut just before the commit's write: still pending") {
    CheckpointInfo p = Take(*s, "vm-d", true);
    Put(*s, &model, kBlock, Pattern(kBlock, 13));
    REQUIRE(s->Flush().ok());
    std::atomic<int> fired{0};
    Status st;
    {
      HookGuard hook([&](std::string_view point) {
        if (point == "checkpoint.before_commit_pending") {
          fired++;
          e.images->SetActive(false);
          e.fs->SetActive(false);
        }
      });
      st = s->CommitCheckpoint(p.id, nullptr);
    }
    INFO("commit with the power gone: " << st.ToString());
    CHECK(fired == 1);
    CHECK_FALSE(st.ok());  // it was not durable, so it must not say OK
    cut();
    s = Open(e);
    never_visible(*s, p.id, "vm-d");
    auto all = List(*s, true);
    REQUIRE(FindId(all, p.id) != nullptr);
    CHECK(FindId(all, p.id)->pending);
    REQUIRE(s->CommitCheckpoint(p.id, nullptr).ok());
    cut();
    s = Open(e);
    CHECK(Resolve(*s, "vm-d").checkpoint_id == p.id);
  }
  // The disk itself came through: what was flushed first is there.
  std::vector<char> first(kBlock);
  REQUIRE(s->Read(0, kBlock, first.data()).ok());
  CHECK(first == Pattern(kBlock, 10));
  CheckVerifyClean(*s);
  s.reset();
}

TEST_CASE("prune drops stale pending checkpoints, never counts them, and keeps history exact",
          "[pending][prune]") {
  TempDir t("rwpend");
  Clock clock;
  Env e{t / "store", &clock, nullptr, nullptr};
  auto s = Open(e);
  std::mt19937_64 rng(99);
  std::vector<std::vector<char>> at{std::vector<char>(kSize, 0)};  // disk after each LSN
  auto write = [&](int n) {
    for (int i = 0; i < n; i++) {
      clock.now += kSec;
      std::vector<char> next = at.back();
      // Few blocks, so that epochs share blocks (merging matters).
      const uint64_t off = (rng() % 8) * kBlock + (rng() % 2) * 1000;
      const auto d = Pattern(kBlock + (rng() % 3) * 512, static_cast<uint32_t>(rng()));
      const uint64_t len = std::min<uint64_t>(d.size(), kSize - off);
      REQUIRE(s->Write(off, static_cast<uint32_t>(len), d.data(), false).ok());
      std::memcpy(next.data() + off, d.data(), len);
      at.push_back(std::move(next));
    }
  };
  auto check_history = [&](uint64_t from) {
    const uint64_t newest = at.size() - 1;
    for (uint64_t l = from; l <= newest; l++) {
      INFO("lsn:" << l);
      auto got = ReadAt(*s, "lsn:" + std::to_string(l));
      INFO(Differ(at[l], got));
      CHECK(got == at[l]);
    }
    PointInfo pi;
    if (from > 0) {
      CHECK(s->ResolvePoint("lsn:" + std::to_string(from - 1), &pi).code() ==
            Status::Code::kNotFound);
    }
  };

  SECTION("keep_last counts visible checkpoints only; the newest record stays") {
    write(5);
    CheckpointInfo a = Take(*s, "a", false, "disk");
    write(5);
    CheckpointInfo p1 = Take(*s, "p1", true);
    write(5);
    CheckpointInfo b = Take(*s, "b", false, "disk");
    write(5);
    CheckpointInfo p2 = Take(*s, "p2", true);
    write(5);
    CheckpointInfo c = Take(*s, "c", false, "disk");
    write(5);
    CheckpointInfo p3 = Take(*s, "p3", true);  // the newest record of all
    write(5);

    rwd::PrunePolicy pol;
    pol.keep_last = 2;
    rwd::PruneResult r;
    Status st = s->Prune(pol, &r);
    INFO(st.ToString());
    REQUIRE(st.ok());
    std::vector<uint64_t> kept, dropped;
    for (const auto& k : r.kept) kept.push_back(k.id);
    for (const auto& d : r.dropped) dropped.push_back(d.id);
    CHECK(kept == std::vector<uint64_t>{b.id, c.id, p3.id});
    CHECK(dropped == std::vector<uint64_t>{a.id, p1.id, p2.id});
    CHECK(r.history_start_lsn == b.lsn);

    auto all = List(*s, true);
    REQUIRE(all.size() == 3);
    CHECK(all[0].id == b.id);
    CHECK(all[1].id == c.id);
    CHECK(all[2].id == p3.id);
    CHECK(all[2].pending);
    CHECK(List(*s).size() == 2);
    CHECK(VisibleCount(*s) == 2);
    check_history(b.lsn);
    CHECK(s->CommitCheckpoint(p1.id, nullptr).code() == Status::Code::kNotFound);
    CHECK(s->CommitCheckpoint(p2.id, nullptr).code() == Status::Code::kNotFound);

    // The survivor commits and reads right.
    REQUIRE(s->CommitCheckpoint(p3.id, nullptr).ok());
    CHECK(ReadAt(*s, "p3") == at[p3.lsn]);
    CHECK(ReadAt(*s, "b") == at[b.lsn]);
    CheckVerifyClean(*s);
    REQUIRE(s->Close().ok());
    s = Open(e);
    CHECK(List(*s, true).size() == 3);
    check_history(b.lsn);
    CheckVerifyClean(*s);
  }
  SECTION("pending checkpoints after the visible ones do not push them out") {
    write(4);
    CheckpointInfo a = Take(*s, "a", false, "disk");
    write(4);
    CheckpointInfo b = Take(*s, "b", false, "disk");
    write(4);
    CheckpointInfo p1 = Take(*s, "p1", true);
    write(4);
    CheckpointInfo p2 = Take(*s, "p2", true);
    write(4);
    rwd::PrunePolicy pol;
    pol.keep_last = 2;
    rwd::PruneResult r;
    REQUIRE(s->Prune(pol, &r).ok());
    auto vis = List(*s);
    REQUIRE(vis.size() == 2);  // a and b: the pending ones count for nothing
    CHECK(vis[0].id == a.id);
    CHECK(vis[1].id == b.id);
    auto all = List(*s, true);
    REQUIRE(all.size() == 3);  // p1 went, p2 (the newest record) stayed
    CHECK(all[2].id == p2.id);
    CHECK(FindId(all, p1.id) == nullptr);
    CHECK(r.history_start_lsn == a.lsn);
    check_history(a.lsn);
    CheckVerifyClean(*s);
  }
  SECTION("keep_within and keep_daily do not keep pending checkpoints either") {
    write(3);
    CheckpointInfo p1 = Take(*s, "p1", true);  // recent, but pending
    write(3);
    CheckpointInfo a = Take(*s, "a", false, "disk");
    write(3);
    CheckpointInfo p2 = Take(*s, "p2", true);
    write(3);
    CheckpointInfo b = Take(*s, "b", false, "disk");  // newest record, visible
    write(3);
    rwd::PrunePolicy pol;
    pol.keep_within_ns = 3600 * kSec;  // all of them are younger
    pol.keep_daily = 3;
    rwd::PruneResult r;
    REQUIRE(s->Prune(pol, &r).ok());
    auto all = List(*s, true);
    REQUIRE(all.size() == 2);
    CHECK(all[0].id == a.id);
    CHECK(all[1].id == b.id);
    CHECK(FindId(all, p1.id) == nullptr);
    CHECK(FindId(all, p2.id) == nullptr);
    check_history(a.lsn);
    CheckVerifyClean(*s);
  }
  SECTION("only pending checkpoints besides the newest: no visible one to keep") {
    write(3);
    CheckpointInfo p1 = Take(*s, "p1", true);
    write(3);
    CheckpointInfo p2 = Take(*s, "p2", true);
    write(3);
    rwd::PrunePolicy pol;
    pol.keep_last = 5;
    rwd::PruneResult r;
    REQUIRE(s->Prune(pol, &r).ok());
    auto all = List(*s, true);
    REQUIRE(all.size() == 1);
    CHECK(all[0].id == p2.id);
    CHECK(all[0].pending);
    CHECK(List(*s).empty());
    check_history(r.history_start_lsn);
    CHECK(r.history_start_lsn <= p2.lsn);
    REQUIRE(s->CommitCheckpoint(p2.id, nullptr).ok());
    CHECK(ReadAt(*s, "p2") == at[p2.lsn]);
    CHECK(s->CommitCheckpoint(p1.id, nullptr).code() == Status::Code::kNotFound);
    CheckVerifyClean(*s);
  }
  SECTION("a dropped pending checkpoint leaves the visible one's name reserved") {
    write(3);
    CheckpointInfo px = Take(*s, "x", true);
    write(3);
    CheckpointInfo x = Take(*s, "x", false, "disk");
    write(3);
    Take(*s, "y", false, "disk");
    write(3);
    Take(*s, "z", true);  // newest record
    rwd::PrunePolicy pol;
    pol.keep_last = 2;
    rwd::PruneResult r;
    REQUIRE(s->Prune(pol, &r).ok());
    REQUIRE(r.dropped.size() == 1);
    CHECK(r.dropped[0].id == px.id);
    CHECK(Resolve(*s, "x").checkpoint_id == x.id);
    CheckpointInfo c;
    CHECK(s->Checkpoint("x", &c).code() == Status::Code::kAlreadyExists);
    CHECK(VisibleCount(*s) == 2);
  }
  SECTION("a dropped visible checkpoint frees its name; a pending newest record stays") {
    // (A pending checkpoint cannot take a visible one's name, so the pair
    // "visible x dropped, pending x kept" cannot arise: only the freeing.)
    write(3);
    Take(*s, "x", false, "disk");
    write(3);
    Take(*s, "y", false, "disk");
    write(3);
    CheckpointInfo w = Take(*s, "w", false, "disk");
    write(3);
    CheckpointInfo p = Take(*s, "p", true);  // the newest record
    rwd::PrunePolicy pol;
    pol.keep_last = 1;
    rwd::PruneResult r;
    REQUIRE(s->Prune(pol, &r).ok());
    auto all = List(*s, true);
    REQUIRE(all.size() == 2);
    CHECK(all[0].id == w.id);
    CHECK(all[1].id == p.id);
    CHECK(all[1].pending);
    CHECK(VisibleCount(*s) == 1);
    PointInfo pi;
    CHECK(s->ResolvePoint("x", &pi).code() == Status::Code::kNotFound);
    // "x" is free again, for a pending checkpoint that then commits.
    write(2);
    CheckpointInfo px = Take(*s, "x", true);
    REQUIRE(s->CommitCheckpoint(px.id, nullptr).ok());
    REQUIRE(s->CommitCheckpoint(p.id, nullptr).ok());
    CHECK(Resolve(*s, "x").checkpoint_id == px.id);
    CHECK(ReadAt(*s, "x") == at[px.lsn]);
    CHECK(ReadAt(*s, "p") == at[p.lsn]);
    CHECK(VisibleCount(*s) == 3);
    CheckVerifyClean(*s);
  }
}

TEST_CASE("a pending checkpoint is an epoch boundary: rollbacks across it are exact",
          "[pending][rollback]") {
  TempDir t("rwpend");
  Clock clock;
  Env e{t / "store", &clock, nullptr, nullptr};
  auto s = Open(e);
  std::vector<char> model(kSize, 0);
  auto tick = [&] { clock.now += kSec; };

  // Blocks 0-3 written before v; blocks 2-5 between v and p; blocks 4-9
  // after p only (their only before-images are in p's epoch).
  Put(*s, &model, 0, Pattern(4 * kBlock, 20));
  tick();
  CheckpointInfo v = Take(*s, "v", false, "disk");
  const std::vector<char> at_v = model;
  tick();
  Put(*s, &model, 2 * kBlock, Pattern(4 * kBlock, 21));
  Put(*s, &model, 2 * kBlock + 100, Pattern(300, 22));
  tick();
  CheckpointInfo p = Take(*s, "p", true);
  const std::vector<char> at_p = model;
  tick();
  Put(*s, &model, 4 * kBlock, Pattern(6 * kBlock, 23));
  Put(*s, &model, 0, Pattern(kBlock, 24));
  REQUIRE(s->Zero(8 * kBlock, 2 * kBlock, false, true).ok());
  std::memset(model.data() + 8 * kBlock, 0, 2 * kBlock);
  const std::vector<char> at_end = model;
  tick();

  // Snapshots on both sides of it.
  CHECK(ReadAt(*s, "v") == at_v);
  CHECK(ReadAt(*s, "lsn:" + std::to_string(p.lsn)) == at_p);

  SECTION("rollback to an older visible checkpoint") {
    rwd::RollbackResult rr;
    Status st = s->Rollback(Resolve(*s, "v"), {}, &rr);
    INFO(st.ToString());
    REQUIRE(st.ok());
    auto live = ReadLive(*s);
    INFO(Differ(at_v, live));
    CHECK(live == at_v);
    // Still pending, and the disk at it still reads right.
    CHECK(FindId(List(*s, true), p.id)->pending);
    REQUIRE(s->CommitCheckpoint(p.id, nullptr).ok());
    CHECK(ReadAt(*s, "p") == at_p);
    // And back again to the committed one.
    st = s->Rollback(Resolve(*s, "p"), {}, &rr);
    INFO(st.ToString());
    REQUIRE(st.ok());
    live = ReadLive(*s);
    INFO(Differ(at_p, live));
    CHECK(live == at_p);
    CHECK(ReadAt(*s, rr.before.name) == at_v);
  }
  SECTION("rollback to the committed checkpoint") {
    REQUIRE(s->CommitCheckpoint(p.id, nullptr).ok());
    rwd::RollbackResult rr;
    Status st = s->Rollback(Resolve(*s, "p"), {}, &rr);
    INFO(st.ToString());
    REQUIRE(st.ok());
    CHECK(rr.point.lsn == p.lsn);
    auto live = ReadLive(*s);
    INFO(Differ(at_p, live));
    CHECK(live == at_p);
    CHECK(ReadAt(*s, rr.before.name) == at_end);
    CHECK(ReadAt(*s, "v") == at_v);
  }
  REQUIRE(s->Close().ok());
  s = Open(e);
  CHECK(ReadAt(*s, "v") == at_v);
  CHECK(ReadAt(*s, "p") == at_p);
  CheckVerifyClean(*s);
}
