// Pinned and supervised checkpoints: CheckpointOptions::pinned/supervised,
// Store::SetPinned, and what prune does with a pinned checkpoint.
//
//  * records: the flags byte of a checkpoint record round-trips every
//    combination of pinned, pending and supervised, bit for bit as
//    docs/journal-format.md says.
//  * taking: a checkpoint taken pinned or supervised says so, in its
//    CheckpointInfo, in ListCheckpoints and after a reopen.
//  * SetPinned: NotFound naming the checkpoint for an unknown name or a
//    pending one; OK and unchanged when already so; the flag survives a
//    reopen and a power cut right after it returns.
//  * prune keeps a pinned checkpoint whatever keep_last says, and it stays
//    restorable; once unpinned the next prune drops it.
#include <catch2/catch.hpp>

#include "records.h"
#include "support/fault_fs.h"
#include "support/mem_image.h"
#include "support/proc_util.h"

#include <rewind/journal/store.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using rwd::CheckpointInfo;
using rwd::CheckpointOptions;
using rwd::PointInfo;
using rwd::PrunePolicy;
using rwd::PruneResult;
using rwd::Status;
using rwd::Store;
using rwd::StoreOptions;
using rwd::test::FaultInjectionFS;
using rwd::test::MemImageFactory;
using rwd::test::TempDir;

namespace {

constexpr uint64_t kSize = 1 << 20;
constexpr uint32_t kBlock = 4096;

struct Env {
  std::string dir;
  std::shared_ptr<FaultInjectionFS> fs;
  std::shared_ptr<MemImageFactory> images;
};

std::unique_ptr<Store> Open(const Env& e) {
  StoreOptions o;
  o.dir = e.dir;
  o.size = kSize;
  o.block_size = kBlock;
  o.fs = e.fs;
  o.image_factory = e.images;
  std::unique_ptr<Store> s;
  Status st = Store::Open(o, &s);
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

void Put(Store& s, std::vector<char>* model, uint64_t off, const std::vector<char>& data) {
  Status st = s.Write(off, static_cast<uint32_t>(data.size()), data.data(), false);
  INFO("write at " << off << ": " << st.ToString());
  REQUIRE(st.ok());
  std::memcpy(model->data() + off, data.data(), data.size());
}

std::vector<char> ReadAt(Store& s, const std::string& text) {
  PointInfo p;
  Status st = s.ResolvePoint(text, &p);
  INFO("resolve " << text << ": " << st.ToString());
  REQUIRE(st.ok());
  std::unique_ptr<rwd::Snapshot> snap;
  st = s.OpenSnapshot(p, &snap);
  INFO("snapshot at " << text << ": " << st.ToString());
  REQUIRE(st.ok());
  std::vector<char> v(kSize);
  REQUIRE(snap->Read(0, kSize, v.data()).ok());
  return v;
}

CheckpointInfo Take(Store& s, const std::string& name, bool pinned = false,
                    bool supervised = false, bool pending = false) {
  CheckpointOptions o;
  o.name = name;
  o.pinned = pinned;
  o.supervised = supervised;
  o.pending = pending;
  CheckpointInfo c;
  Status st = s.Checkpoint(o, &c);
  INFO("checkpoint '" << name << "': " << st.ToString());
  REQUIRE(st.ok());
  return c;
}

std::vector<CheckpointInfo> List(Store& s, bool with_pending = false) {
  std::vector<CheckpointInfo> v;
  Status st = s.ListCheckpoints(&v, with_pending);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return v;
}

const CheckpointInfo* Find(const std::vector<CheckpointInfo>& v, const std::string& name) {
  for (const auto& c : v) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::vector<std::string> Names(const std::vector<CheckpointInfo>& v) {
  std::vector<std::string> n;
  for (const auto& c : v) n.push_back(c.name);
  return n;
}

}  // namespace

TEST_CASE("checkpoint record flags round-trip: bit 0 pinned, bit 1 pending, bit 2 supervised",
          "[journal][pin]") {
  using namespace rwd::records;
  for (int bits = 0; bits < 8; bits++) {
    CheckpointRecord r;
    r.id = 3;
    r.kind = rwd::format::CheckpointKind::kVm;
    r.pinned = (bits & 1) != 0;
    r.pending = (bits & 2) != 0;
    r.supervised = (bits & 4) != 0;
    r.lsn = 6;
    r.time_ns = 1795428900023456789;
    r.name = "before-upgrade";
    const std::string v = EncodeCheckpoint(r);
    INFO("flags " << bits);
    CHECK(static_cast<uint8_t>(v[1]) == bits);
    CheckpointRecord out;
    REQUIRE(DecodeCheckpoint(CheckpointKey(3), v, &out).ok());
    CHECK(out.pinned == r.pinned);
    CHECK(out.pending == r.pending);
    CHECK(out.supervised == r.supervised);
    CHECK(out.kind == r.kind);
    CHECK(out.lsn == 6);
    CHECK(out.name == "before-upgrade");
  }
}

TEST_CASE("a checkpoint taken pinned or supervised says so, in its info, the list and after a "
          "reopen",
          "[journal][pin]") {
  TempDir t("rwpin");
  Env e{t / "store", nullptr, nullptr};
  {
    auto s = Open(e);
    CheckpointInfo plain = Take(*s, "plain");
    CHECK_FALSE(plain.pinned);
    CHECK_FALSE(plain.supervised);
    CheckpointInfo p = Take(*s, "pinned", true, false);
    CHECK(p.pinned);
    CHECK_FALSE(p.supervised);
    CheckpointInfo sv = Take(*s, "supervised", false, true);
    CHECK_FALSE(sv.pinned);
    CHECK(sv.supervised);
    CheckpointInfo both = Take(*s, "both", true, true);
    CHECK(both.pinned);
    CHECK(both.supervised);
    REQUIRE(s->Close().ok());
  }
  auto s = Open(e);
  auto v = List(*s);
  REQUIRE(Names(v) == std::vector<std::string>{"plain", "pinned", "supervised", "both"});
  CHECK_FALSE(v[0].pinned);
  CHECK_FALSE(v[0].supervised);
  CHECK(v[1].pinned);
  CHECK_FALSE(v[1].supervised);
  CHECK_FALSE(v[2].pinned);
  CHECK(v[2].supervised);
  CHECK(v[3].pinned);
  CHECK(v[3].supervised);
}

TEST_CASE("SetPinned pins and unpins a visible checkpoint by name, and refuses unknown names",
          "[journal][pin]") {
  TempDir t("rwpin");
  Env e{t / "store", nullptr, nullptr};
  auto s = Open(e);
  std::vector<char> model(kSize, 0);
  Put(*s, &model, 0, Pattern(kBlock, 1));
  CheckpointInfo a = Take(*s, "a", false, true);
  Take(*s, "vm-pending", false, false, true);

  CheckpointInfo out;
  Status st = s->SetPinned("nope", true, &out);
  CHECK(st.code() == Status::Code::kNotFound);
  CHECK(st.ToString().find("'nope'") != std::string::npos);
  CHECK(st.ToString().find("rewind list") != std::string::npos);
  // A pending checkpoint has no name yet.
  CHECK(s->SetPinned("vm-pending", true, &out).code() == Status::Code::kNotFound);
  for (const auto& c : List(*s, true)) CHECK_FALSE(c.pinned);

  REQUIRE(s->SetPinned("a", true, &out).ok());
  CHECK(out.id == a.id);
  CHECK(out.name == "a");
  CHECK(out.lsn == a.lsn);
  CHECK(out.time_ns == a.time_ns);
  CHECK(out.pinned);
  CHECK(out.supervised);  // the other flags are kept
  CHECK(Find(List(*s), "a")->pinned);
  // Already so: OK, unchanged.
  REQUIRE(s->SetPinned("a", true, &out).ok());
  CHECK(out.pinned);
  CHECK(Find(List(*s), "a")->pinned);
  REQUIRE(s->SetPinned("a", false, &out).ok());
  CHECK_FALSE(out.pinned);
  CHECK(out.supervised);
  CHECK_FALSE(Find(List(*s), "a")->pinned);
  REQUIRE(s->SetPinned("a", false, nullptr).ok());
  CHECK_FALSE(Find(List(*s), "a")->pinned);
  // The point itself is unchanged.
  CHECK(ReadAt(*s, "a") == model);
  // A checkpoint just taken can be pinned at once.
  Take(*s, "fresh");
  REQUIRE(s->SetPinned("fresh", true, nullptr).ok());
  CHECK(Find(List(*s), "fresh")->pinned);
}

TEST_CASE("SetPinned is durable when it returns: a power cut right after keeps the flag",
          "[journal][pin][powercut]") {
  TempDir t("rwpin");
  Env e{t / "store", std::make_shared<FaultInjectionFS>(), std::make_shared<MemImageFactory>()};
  std::mt19937_64 rng(99);
  std::unique_ptr<Store> s;
  auto cut = [&] {
    e.images->SetActive(false);
    e.fs->SetActive(false);
    s.reset();
    e.images->SimulatePowerCut(rng);
    // Every unsynced byte is lost: the strictest power cut.
    std::string err = e.fs->DropUnsyncedData();
    err += e.fs->DeleteFilesCreatedAfterLastDirSync();
    INFO(err);
    REQUIRE(err.empty());
    e.fs->ResetState();
    e.fs->SetActive(true);
    e.images->SetActive(true);
  };
  std::vector<char> model(kSize, 0);
  s = Open(e);
  Put(*s, &model, 0, Pattern(kBlock, 2));
  Take(*s, "keep-me");
  Put(*s, &model, kBlock, Pattern(kBlock, 3));
  // Nothing is left for the committer's background sync to carry: the pin
  // must be durable by itself.
  REQUIRE(s->Flush().ok());
  REQUIRE(s->SetPinned("keep-me", true, nullptr).ok());
  cut();
  s = Open(e);
  REQUIRE(Find(List(*s), "keep-me") != nullptr);
  CHECK(Find(List(*s), "keep-me")->pinned);
  REQUIRE(s->SetPinned("keep-me", false, nullptr).ok());
  cut();
  s = Open(e);
  REQUIRE(Find(List(*s), "keep-me") != nullptr);
  CHECK_FALSE(Find(List(*s), "keep-me")->pinned);
  s.reset();
}

TEST_CASE("prune keeps a pinned checkpoint, restorable, until it is unpinned", "[prune][pin]") {
  TempDir t("rwpin");
  Env e{t / "store", nullptr, nullptr};
  auto s = Open(e);
  std::vector<char> model(kSize, 0);
  Put(*s, &model, 0, Pattern(kBlock, 10));
  Take(*s, "old");
  const std::vector<char> at_old = model;
  Put(*s, &model, 0, Pattern(kBlock, 11));
  Put(*s, &model, kBlock, Pattern(kBlock, 12));
  Take(*s, "middle");
  Put(*s, &model, 0, Pattern(kBlock, 13));
  Take(*s, "new");
  const std::vector<char> at_new = model;
  Put(*s, &model, 2 * kBlock, Pattern(kBlock, 14));

  REQUIRE(s->SetPinned("old", true, nullptr).ok());
  PrunePolicy pol;
  pol.keep_last = 1;
  PruneResult r;
  Status st = s->Prune(pol, &r);
  INFO(st.ToString());
  REQUIRE(st.ok());
  CHECK(Names(r.kept) == std::vector<std::string>{"old", "new"});
  CHECK(Names(r.dropped) == std::vector<std::string>{"middle"});
  CHECK(Names(List(*s)) == std::vector<std::string>{"old", "new"});
  CHECK(ReadAt(*s, "old") == at_old);
  CHECK(ReadAt(*s, "new") == at_new);
  TempDir out("rwpinout");
  rwd::RestoreOptions ro;
  ro.output = out / "old.raw";
  rwd::RestoreResult rr;
  PointInfo old_point;
  REQUIRE(s->ResolvePoint("old", &old_point).ok());
  st = s->Restore(old_point, ro, &rr);
  INFO(st.ToString());
  REQUIRE(st.ok());
  {
    std::vector<char> got(kSize);
    FILE* f = std::fopen(ro.output.c_str(), "rb");
    REQUIRE(f != nullptr);
    CHECK(std::fread(got.data(), 1, kSize, f) == kSize);
    std::fclose(f);
    CHECK(got == at_old);
  }

  REQUIRE(s->SetPinned("old", false, nullptr).ok());
  st = s->Prune(pol, &r);
  INFO(st.ToString());
  REQUIRE(st.ok());
  CHECK(Names(r.dropped) == std::vector<std::string>{"old"});
  CHECK(Names(List(*s)) == std::vector<std::string>{"new"});
  PointInfo p;
  CHECK(s->ResolvePoint("old", &p).code() == Status::Code::kNotFound);
  CHECK(s->SetPinned("old", true, nullptr).code() == Status::Code::kNotFound);
  CHECK(ReadAt(*s, "new") == at_new);
}
