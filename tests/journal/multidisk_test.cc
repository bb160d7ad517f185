// Tests of stores with several disks (disk=NAME): one journal, one LSN
// sequence and one list of checkpoints for all of them.
//
// A Rig drives a store of two or three disks of different sizes (one not a
// multiple of the block size) with random writes, zeros, trims, flushes
// and checkpoints on random disks, next to one DiskModel of all the disks
// laid end to end: disk i is the model's range [base(i), base(i) +
// size(i)).  So one model operation is one store operation, and "one
// timeline" is checkable: after a crash a single prefix of the operations
// must explain every disk at once.
//
//  * History: every checkpoint and a sample of LSNs, on every disk, reads
//    back through that disk's snapshot and restores exactly as the model
//    was then; a checkpoint names the same instant on every disk; Store's
//    own calls are the first disk's; all of it again after a reopen.
//  * Power cut: the doubles lose what was not synced; the reopened store
//    replays each disk's records into that disk's image, and the disks
//    together hold one prefix of the history.
//  * Rollback puts every disk back, with one before-rollback checkpoint
//    that undoes it on every disk.
//  * Diff is per disk; verify covers every disk and names the disk whose
//    image is damaged; prune keeps the kept points of every disk readable.
//  * Bad input: disk names, duplicates, missing sizes, a store's disks
//    given wrongly on reopen, adopted images.
#include <catch2/catch.hpp>

#include "support/disk_model.h"
#include "support/fault_fs.h"
#include "support/mem_image.h"
#include "support/proc_util.h"

#include <rewind/journal/store.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

using rwd::CheckpointInfo;
using rwd::DiskSpec;
using rwd::PointInfo;
using rwd::Snapshot;
using rwd::Status;
using rwd::Store;
using rwd::StoreInfo;
using rwd::StoreOptions;
using rwd::test::DiskModel;
using rwd::test::TempDir;

namespace fs = std::filesystem;

namespace {

struct DiskDef {
  std::string name;
  uint64_t size;
};

const std::vector<DiskDef> kThreeDisks = {
    {"sda", 512 << 10}, {"sdb", (384 << 10) + 1536}, {"data.1", 1 << 20}};

uint64_t TotalSize(const std::vector<DiskDef>& defs) {
  uint64_t n = 0;
  for (const DiskDef& d : defs) n += d.size;
  return n;
}

std::vector<char> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A store of several disks and one model of them all.
class Rig {
 public:
  // doubles: the journal on FaultInjectionFS and the images in memory (for
  // power cuts); otherwise real files.
  Rig(std::vector<DiskDef> defs, uint32_t block_size, uint64_t seed, bool doubles = false)
      : defs_(std::move(defs)),
        block_size_(block_size),
        rng_(seed),
        model_(TotalSize(defs_)),
        tmp_("rwmd") {
    dir_ = tmp_ / "store";
    uint64_t b = 0;
    for (const DiskDef& d : defs_) {
      base_.push_back(b);
      b += d.size;
    }
    if (doubles) {
      fs_ = std::make_shared<rwd::test::FaultInjectionFS>();
      images_ = std::make_shared<rwd::test::MemImageFactory>();
    }
    states_[0] = model_.current();
  }
  ~Rig() {
    if (store_ && fs_) {
      fs_->SetActive(true);
      images_->SetActive(true);
    }
    store_.reset();
  }

  const std::string& dir() const { return dir_; }
  const TempDir& tmp() const { return tmp_; }
  Store& store() { return *store_; }
  size_t disks() const { return defs_.size(); }
  const DiskDef& def(size_t i) const { return defs_[i]; }
  rwd::Disk& disk(size_t i) {
    rwd::Disk* d = store_->disk(i);
    REQUIRE(d != nullptr);
    return *d;
  }
  DiskModel& model() { return model_; }
  uint64_t lsn() const { return lsn_; }
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  std::mt19937_64& rng() { return rng_; }
  rwd::test::FaultInjectionFS& fs() { return *fs_; }
  rwd::test::MemImageFactory& images() { return *images_; }

  StoreOptions Options(bool with_disks = true) const {
    StoreOptions o;
    o.dir = dir_;
    if (with_disks) {
      for (const DiskDef& d : defs_) o.disks.push_back(DiskSpec{d.name, d.size, ""});
    }
    o.block_size = block_size_;
    o.fs = fs_;
    o.image_factory = images_;
    if (fs_) o.image_sync_interval_ms = 60000;  // recovery has the images to replay
    return o;
  }

  void Open(bool with_disks = true) {
    Status s = Store::Open(Options(with_disks), &store_);
    INFO("open: " << s.ToString());
    REQUIRE(s.ok());
    REQUIRE(store_->disk_count() == defs_.size());
  }
  // Destroys the store without a clean close (after a power cut).
  void Drop() { store_.reset(); }
  // After a crash the store holds the operations up to LSN `recovered`:
  // the LSNs after it are given out again, and the states kept for them
  // are gone.
  void Recovered(uint64_t recovered) {
    lsn_ = recovered;
    states_.erase(states_.upper_bound(recovered), states_.end());
  }
  void Close() {
    Status s = store_->Close();
    INFO("close: " << s.ToString());
    REQUIRE(s.ok());
    store_.reset();
  }

  // ---- operations, on the store and the model ----

  void Write(size_t i, uint64_t off, uint64_t len, bool fua) {
    const uint64_t tag = next_tag_++;
    std::vector<char> data(len);
    rwd::test::FillPattern(tag, base_[i] + off, len, data.data());
    model_.Write(base_[i] + off, data.data(), len,
                 fmt::format("write tag {} on {} [{}, +{})", tag, defs_[i].name, off, len));
    Status s = disk(i).Write(off, static_cast<uint32_t>(len), data.data(), fua);
    INFO("write: " << s.ToString());
    REQUIRE(s.ok());
    Sequenced(fua);
  }
  void Zero(size_t i, uint64_t off, uint64_t len, bool trim) {
    model_.Zero(base_[i] + off, len,
                fmt::format("{} on {} [{}, +{})", trim ? "trim" : "zero", defs_[i].name, off, len));
    Status s = disk(i).Zero(off, len, false, trim);
    INFO("zero: " << s.ToString());
    REQUIRE(s.ok());
    Sequenced(/*durable=*/true);  // a zero is durable when it returns
  }
  void Flush(size_t i) {
    Status s = disk(i).Flush();  // every disk's writes: one journal
    INFO("flush: " << s.ToString());
    REQUIRE(s.ok());
    model_.MarkDurable();
  }
  CheckpointInfo Checkpoint(const std::string& name) {
    CheckpointInfo cp;
    Status s = store_->Checkpoint(name, &cp);
    INFO("checkpoint: " << s.ToString());
    REQUIRE(s.ok());
    CHECK(cp.lsn == lsn_);  // consumes no LSN, covers every disk's writes so far
    model_.MarkDurable();
    checkpoints_[name] = lsn_;
    states_[lsn_] = model_.current();
    return cp;
  }

  // A random range of disk i: sector-aligned or not, now and then at its end.
  std::pair<uint64_t, uint64_t> Range(size_t i, uint64_t max_len) {
    const uint64_t size = defs_[i].size;
    max_len = std::min(max_len, size);
    uint64_t len = 1 + Rand(max_len);
    if (Rand(2) == 0) len = std::max<uint64_t>(512, len / 512 * 512);
    if (Rand(8) == 0) return {size - len, len};
    uint64_t off = Rand(size - len + 1);
    if (Rand(2) == 0) off = off / 512 * 512;
    return {off, len};
  }

  // n random operations on random disks; a sample of the states is kept.
  void Run(int n) {
    for (int k = 0; k < n; k++) {
      const size_t i = Rand(defs_.size());
      const uint64_t r = Rand(100);
      if (r < 65) {
        auto [off, len] = Range(i, 96 << 10);
        Write(i, off, len, Rand(8) == 0);
      } else if (r < 73) {
        auto [off, len] = Range(i, 192 << 10);
        Zero(i, off, len, Rand(2) == 0);
      } else if (r < 80) {
        Flush(i);
      } else if (r < 87) {
        Checkpoint(fmt::format("cp{}", next_cp_++));
      }
    }
  }

  // ---- what the store holds ----

  std::vector<char> Expected(uint64_t lsn, size_t i) const {
    const std::vector<char>& all = states_.at(lsn);
    return std::vector<char>(all.begin() + base_[i], all.begin() + base_[i] + defs_[i].size);
  }
  std::vector<char> Live(size_t i) const {
    const std::vector<char>& all = model_.current();
    return std::vector<char>(all.begin() + base_[i], all.begin() + base_[i] + defs_[i].size);
  }
  std::vector<char> ReadLive(size_t i) {
    std::vector<char> out(defs_[i].size);
    Status s = disk(i).Read(0, static_cast<uint32_t>(out.size()), out.data());
    INFO("read " << defs_[i].name << ": " << s.ToString());
    REQUIRE(s.ok());
    return out;
  }
  std::vector<char> ReadAt(size_t i, const PointInfo& p) {
    std::unique_ptr<Snapshot> snap;
    Status s = disk(i).OpenSnapshot(p, &snap);
    INFO("snapshot of " << defs_[i].name << " at " << p.text << ": " << s.ToString());
    REQUIRE(s.ok());
    REQUIRE(snap->size() == defs_[i].size);
    std::vector<char> out(defs_[i].size);
    // In pieces that cross block boundaries, as clients read.
    for (uint64_t off = 0; off < out.size();) {
      const uint64_t n = std::min<uint64_t>(1 + Rand(200 << 10), out.size() - off);
      s = snap->Read(off, static_cast<uint32_t>(n), out.data() + off);
      INFO("snapshot read at " << off << ": " << s.ToString());
      REQUIRE(s.ok());
      off += n;
    }
    return out;
  }
  PointInfo Resolve(const std::string& text) {
    PointInfo p;
    Status s = store_->ResolvePoint(text, &p);
    INFO("resolve " << text << ": " << s.ToString());
    REQUIRE(s.ok());
    return p;
  }

  // Every kept state of every disk, through snapshots.
  void CheckHistory() {
    for (const auto& [lsn, state] : states_) {
      const PointInfo p = Resolve("lsn:" + std::to_string(lsn));
      for (size_t i = 0; i < defs_.size(); i++) {
        INFO("disk " << defs_[i].name << " at lsn " << lsn);
        CHECK(ReadAt(i, p) == Expected(lsn, i));
      }
    }
    for (const auto& [name, lsn] : checkpoints_) {
      const PointInfo p = Resolve(name);
      REQUIRE(p.lsn == lsn);
      for (size_t i = 0; i < defs_.size(); i++) {
        INFO("disk " << defs_[i].name << " at checkpoint " << name);
        CHECK(ReadAt(i, p) == Expected(lsn, i));
      }
    }
  }
  void CheckLive() {
    for (size_t i = 0; i < defs_.size(); i++) {
      INFO("live disk " << defs_[i].name);
      CHECK(ReadLive(i) == Live(i));
    }
  }
  const std::map<std::string, uint64_t>& checkpoints() const { return checkpoints_; }
  // Keeps the state after the operations so far, as the state at lsn().
  void KeepState() { states_[lsn_] = model_.current(); }

 private:
  void Sequenced(bool durable) {
    lsn_++;
    if (durable) model_.MarkDurable();
    if (Rand(16) == 0) KeepState();
  }

  std::vector<DiskDef> defs_;
  uint32_t block_size_;
  std::mt19937_64 rng_;
  DiskModel model_;
  TempDir tmp_;
  std::string dir_;
  std::vector<uint64_t> base_;
  std::shared_ptr<rwd::test::FaultInjectionFS> fs_;
  std::shared_ptr<rwd::test::MemImageFactory> images_;
  std::unique_ptr<Store> store_;
  uint64_t lsn_ = 0;
  uint64_t next_tag_ = 1;
  int next_cp_ = 1;
  std::map<std::string, uint64_t> checkpoints_;  // name -> lsn
  std::map<uint64_t, std::vector<char>> states_;  // lsn -> every disk's content
};

}  // namespace

TEST_CASE("several disks: every disk at every checkpoint and sampled lsn reads back and restores",
          "[journal][disks]") {
  const uint32_t block_size = GENERATE(4096u, 65536u);
  INFO("block size " << block_size);
  Rig rig(kThreeDisks, block_size, 7 + block_size);
  rig.Open();
  REQUIRE(rig.store().FindDisk("sdb") == &rig.disk(1));
  REQUIRE(rig.store().FindDisk("nope") == nullptr);
  REQUIRE(rig.store().disk(3) == nullptr);
  for (size_t i = 0; i < rig.disks(); i++) {
    CHECK(rig.disk(i).index() == i);
    CHECK(rig.disk(i).name() == rig.def(i).name);
    CHECK(rig.disk(i).size() == rig.def(i).size);
  }
  CHECK(rig.store().size() == rig.def(0).size);

  rig.Run(400);
  rig.Checkpoint("end");
  rig.CheckLive();
  rig.CheckHistory();

  // The store's own calls are the first disk's.
  {
    std::vector<char> a(rig.def(0).size);
    REQUIRE(rig.store().Read(0, static_cast<uint32_t>(a.size()), a.data()).ok());
    CHECK(a == rig.Live(0));
    std::unique_ptr<Snapshot> snap;
    REQUIRE(rig.store().OpenSnapshot(rig.Resolve("end"), &snap).ok());
    CHECK(snap->size() == rig.def(0).size);
  }

  // Restores of every disk at every checkpoint.
  for (const auto& [name, lsn] : rig.checkpoints()) {
    for (size_t i = 0; i < rig.disks(); i++) {
      const std::string out = rig.tmp() / fmt::format("{}-{}.raw", rig.def(i).name, name);
      rwd::RestoreOptions ro;
      ro.output = out;
      rwd::RestoreResult rr;
      Status s = rig.disk(i).Restore(rig.Resolve(name), ro, &rr);
      INFO("restore " << rig.def(i).name << " at " << name << ": " << s.ToString());
      REQUIRE(s.ok());
      CHECK(rr.disk == rig.def(i).name);
      CHECK(rr.bytes == rig.def(i).size);
      CHECK(ReadFile(out) == rig.Expected(lsn, i));
    }
  }

  rwd::VerifyReport report;
  REQUIRE(rig.store().Verify(nullptr, &report).ok());
  INFO(fmt::format("{}", fmt::join(report.damage, "; ")));
  CHECK(report.clean());

  StoreInfo info;
  REQUIRE(rig.store().GetInfo(&info).ok());
  CHECK(info.format_version == 3);
  REQUIRE(info.disks.size() == rig.disks());
  for (size_t i = 0; i < rig.disks(); i++) {
    CHECK(info.disks[i].name == rig.def(i).name);
    CHECK(info.disks[i].size == rig.def(i).size);
    CHECK(info.disks[i].image_path == rig.dir() + "/disks/" + rig.def(i).name + ".raw");
    CHECK(fs::file_size(info.disks[i].image_path) == rig.def(i).size);
  }
  CHECK(info.size == rig.def(0).size);
  CHECK(info.image_path == info.disks[0].image_path);
  CHECK(!fs::exists(rig.dir() + "/image.raw"));

  // Reopened without naming the disks: the store knows them.
  rig.Close();
  rig.Open(/*with_disks=*/false);
  rig.CheckLive();
  rig.CheckHistory();
  // And with them, and the history goes on.
  rig.Close();
  rig.Open();
  rig.Run(100);
  rig.Checkpoint("after-reopen");
  rig.CheckLive();
  rig.CheckHistory();
}

TEST_CASE("several disks: one checkpoint is one instant of every disk", "[journal][disks]") {
  Rig rig({{"a", 256 << 10}, {"b", 256 << 10}}, 4096, 11);
  rig.Open();
  rig.Write(0, 0, 4096, false);
  rig.KeepState();
  rig.Write(1, 0, 4096, false);
  rig.KeepState();
  const CheckpointInfo one = rig.Checkpoint("one");
  rig.Write(1, 4096, 8192, false);
  rig.KeepState();
  rig.Write(0, 0, 4096, false);  // overwrites: a before-image of a in epoch 1
  rig.KeepState();
  rig.Zero(1, 0, 4096, true);
  const CheckpointInfo two = rig.Checkpoint("two");
  rig.Write(0, 8192, 100, true);
  rig.KeepState();
  CHECK(one.lsn == 2);
  CHECK(two.lsn == 5);
  std::vector<CheckpointInfo> cps;
  REQUIRE(rig.store().ListCheckpoints(&cps).ok());
  REQUIRE(cps.size() == 2);  // one list for all disks
  CHECK(cps[1].undo_bytes > 0);
  // Every LSN of both disks, whichever disk the LSN wrote.
  rig.CheckHistory();
}

TEST_CASE("several disks: a power cut, recovery replays each disk into its own image, one prefix",
          "[journal][disks][crash]") {
  const uint64_t seed = GENERATE(1, 2, 3, 4, 5);
  Rig rig(kThreeDisks, 4096, seed, /*doubles=*/true);
  rig.Open();
  for (int round = 0; round < 4; round++) {
    INFO("seed " << seed << " round " << round);
    rig.Run(60);
    // The images were never synced (image_sync_interval_ms is long): what
    // is durable is in the journal only, so recovery must put it in place.
    rig.images().SetActive(false);
    rig.fs().SetActive(false);
    rig.Drop();
    rig.images().SimulatePowerCut(rig.rng());
    std::string err = rig.fs().DropUnsyncedData(&rig.rng());
    err += rig.fs().DeleteFilesCreatedAfterLastDirSync();
    INFO(err);
    REQUIRE(err.empty());
    rig.fs().ResetState();
    rig.fs().SetActive(true);
    rig.images().SetActive(true);
    rig.Open();
    std::vector<char> all;
    for (size_t i = 0; i < rig.disks(); i++) {
      std::vector<char> d = rig.ReadLive(i);
      all.insert(all.end(), d.begin(), d.end());
    }
    uint64_t recovered = 0;
    err = rig.model().CheckRecovered(all.data(), 0, &recovered);
    INFO(err);
    REQUIRE(err.empty());
    const uint64_t lost = rig.model().ops() - recovered;  // one LSN each
    rig.model().Reset(all.data());
    rig.Recovered(rig.lsn() - lost);
    rwd::VerifyReport report;
    REQUIRE(rig.store().Verify(nullptr, &report).ok());
    INFO(fmt::format("{}", fmt::join(report.damage, "; ")));
    CHECK(report.clean());
  }
  rig.Checkpoint("end");
  rig.CheckHistory();
}

TEST_CASE("several disks: rollback puts every disk back, its checkpoint undoes it on every disk",
          "[journal][disks][rollback]") {
  Rig rig(kThreeDisks, 4096, 21);
  rig.Open();
  rig.Run(150);
  rig.Checkpoint("target");
  std::vector<std::vector<char>> target;
  for (size_t i = 0; i < rig.disks(); i++) target.push_back(rig.Live(i));
  rig.Run(150);
  std::vector<std::vector<char>> before;
  for (size_t i = 0; i < rig.disks(); i++) before.push_back(rig.Live(i));

  rwd::RollbackResult rr;
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  rwd::RollbackOptions ro;
  ro.progress = [&](uint64_t done, uint64_t total) {
    progress.emplace_back(done, total);
    return true;
  };
  Status s = rig.store().Rollback(rig.Resolve("target"), ro, &rr);
  INFO("rollback: " << s.ToString());
  REQUIRE(s.ok());
  for (size_t i = 0; i < rig.disks(); i++) {
    INFO("disk " << rig.def(i).name);
    CHECK(rig.ReadLive(i) == target[i]);
  }
  CHECK(rr.examined_bytes >= rr.rewritten_bytes);
  CHECK(rr.rewritten_bytes > 0);
  REQUIRE(!progress.empty());
  CHECK(progress.back().first == progress.back().second);  // one total for every disk
  // One before-rollback checkpoint, for all of them.
  std::vector<CheckpointInfo> cps;
  REQUIRE(rig.store().ListCheckpoints(&cps).ok());
  CHECK(cps.back().name == rr.before.name);
  CHECK(std::count_if(cps.begin(), cps.end(), [](const CheckpointInfo& c) {
          return c.name.rfind("before-rollback-", 0) == 0;
        }) == 1);
  // Every disk at the before-rollback checkpoint is the state left.
  const PointInfo left = rig.Resolve(rr.before.name);
  for (size_t i = 0; i < rig.disks(); i++) CHECK(rig.ReadAt(i, left) == before[i]);

  // Undone: every disk as it was.
  REQUIRE(rig.store().Rollback(left, rwd::RollbackOptions{}, &rr).ok());
  for (size_t i = 0; i < rig.disks(); i++) CHECK(rig.ReadLive(i) == before[i]);
  rig.Close();
  rig.Open();
  for (size_t i = 0; i < rig.disks(); i++) CHECK(rig.ReadLive(i) == before[i]);
  rwd::VerifyReport report;
  REQUIRE(rig.store().Verify(nullptr, &report).ok());
  CHECK(report.clean());
}

TEST_CASE("several disks: diff is per disk", "[journal][disks]") {
  Rig rig({{"a", 256 << 10}, {"b", 256 << 10}}, 4096, 5);
  rig.Open();
  rig.Checkpoint("zero");
  rig.Write(0, 8192, 1000, false);
  rig.Write(1, 65536, 4096, false);
  rig.Write(1, 131072, 512, false);
  rig.Checkpoint("one");
  rwd::DiffResult a, b;
  REQUIRE(rig.disk(0).Diff(rig.Resolve("zero"), rig.Resolve("one"), &a).ok());
  REQUIRE(rig.disk(1).Diff(rig.Resolve("one"), rig.Resolve("zero"), &b).ok());
  CHECK(a.disk == "a");
  CHECK(b.disk == "b");
  REQUIRE(a.ranges.size() == 1);
  CHECK(a.ranges[0].offset == 8192);
  CHECK(a.ranges[0].length == 1000);  // sectors clipped to what was written
  CHECK(a.records == 1);
  REQUIRE(b.ranges.size() == 2);
  CHECK(b.ranges[0].offset == 65536);
  CHECK(b.ranges[1].offset == 131072);
  CHECK(b.records == 2);
  rwd::DiffResult first;
  REQUIRE(rig.store().Diff(rig.Resolve("zero"), rig.Resolve("one"), &first).ok());
  CHECK(first.ranges.size() == 1);  // the store's own diff is the first disk's
}

TEST_CASE("several disks: verify names the disk whose live image is damaged", "[journal][disks]") {
  Rig rig({{"a", 256 << 10}, {"b", 256 << 10}}, 4096, 9);
  rig.Open();
  rig.Write(0, 0, 8192, true);
  rig.Write(1, 16384, 8192, true);
  rig.Close();
  {
    std::fstream f(rig.dir() + "/disks/b.raw", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(16384 + 100);
    f.put('\x7f');
  }
  rig.Open();
  rwd::VerifyReport report;
  REQUIRE(rig.store().Verify(nullptr, &report).ok());
  REQUIRE(report.damage.size() == 1);
  CHECK(report.damage[0].find("of disk b at offset 16384") != std::string::npos);
}

TEST_CASE("several disks: after a prune every kept point of every disk reads back",
          "[journal][disks][prune]") {
  Rig rig(kThreeDisks, 4096, 33);
  rig.Open();
  for (int k = 0; k < 6; k++) {
    rig.Run(60);
    rig.Checkpoint("keep" + std::to_string(k));
  }
  rwd::PrunePolicy policy;
  policy.keep_last = 3;
  rwd::PruneResult pr;
  REQUIRE(rig.store().Prune(policy, &pr).ok());
  REQUIRE(pr.kept.size() == 3);
  CHECK(pr.undo_records_dropped > 0);
  for (const CheckpointInfo& kept : pr.kept) {
    const std::string& name = kept.name;
    const PointInfo p = rig.Resolve(name);
    for (size_t i = 0; i < rig.disks(); i++) {
      INFO("disk " << rig.def(i).name << " at " << name);
      CHECK(rig.ReadAt(i, p) == rig.Expected(rig.checkpoints().at(name), i));
    }
  }
  PointInfo gone;
  CHECK(rig.store().ResolvePoint(pr.dropped.back().name, &gone).code() ==
        Status::Code::kNotFound);
  rwd::VerifyReport report;
  REQUIRE(rig.store().Verify(nullptr, &report).ok());
  INFO(fmt::format("{}", fmt::join(report.damage, "; ")));
  CHECK(report.clean());
}

namespace {

Status Open(StoreOptions o, std::unique_ptr<Store>* out = nullptr) {
  std::unique_ptr<Store> store;
  Status s = Store::Check(o);
  if (s.ok()) s = Store::Open(o, out ? out : &store);
  return s;
}

StoreOptions WithDisks(const std::string& dir, std::vector<DiskSpec> disks) {
  StoreOptions o;
  o.dir = dir;
  o.disks = std::move(disks);
  return o;
}

void ExpectRefused(const StoreOptions& o, const std::vector<std::string>& phrases) {
  Status s = Open(o);
  INFO(s.ToString());
  REQUIRE(s.code() == Status::Code::kInvalidArgument);
  CHECK(s.message().find('\n') == std::string::npos);
  for (const std::string& p : phrases) CHECK(s.message().find(p) != std::string::npos);
}

}  // namespace

TEST_CASE("several disks: bad disk specs are refused with one line, changing nothing",
          "[journal][disks]") {
  TempDir tmp("rwmd");
  const std::string dir = tmp / "store";
  constexpr uint64_t kM = 1 << 20;
  ExpectRefused(WithDisks(dir, {{"a", kM, ""}, {"a", kM, ""}}), {"disk 'a' is given twice"});
  ExpectRefused(WithDisks(dir, {{"a@b", kM, ""}}), {"disk name", "a@b"});
  ExpectRefused(WithDisks(dir, {{"a/b", kM, ""}}), {"path separator"});
  ExpectRefused(WithDisks(dir, {{"", kM, ""}}), {"disk name is empty"});
  ExpectRefused(WithDisks(dir, {{".x", kM, ""}}), {"must not start"});
  ExpectRefused(WithDisks(dir, {{"a:b", kM, ""}}), {"a:b"});
  ExpectRefused(WithDisks(dir, {{"a", kM, ""}, {"b", 0, ""}}), {"disk 'b' needs a size"});
  StoreOptions plain = WithDisks(dir, {{"a", kM, ""}});
  plain.size = kM;
  ExpectRefused(plain, {"size=NAME:SIZE"});
  // Adopted images: sizes from the files; the same file twice is refused.
  const std::string img = tmp / "img.raw";
  { std::ofstream(img, std::ios::binary).write(std::string(65536, 'x').data(), 65536); }
  ExpectRefused(WithDisks(dir, {{"a", 0, img}, {"b", 0, img}}), {"same image"});
  ExpectRefused(WithDisks(dir, {{"a", 4096, img}}), {"does not match image"});
  CHECK(!fs::exists(dir + "/rewind.meta"));
  CHECK(!fs::exists(dir + "/disks"));

  // A store of a (own, 1 MiB) and b (adopted): then reopens that get its
  // disks wrong.
  std::unique_ptr<Store> store;
  REQUIRE(Open(WithDisks(dir, {{"a", kM, ""}, {"b", 0, img}}), &store).ok());
  CHECK(store->disk(1)->size() == 65536);
  REQUIRE(store->disk(1)->Write(0, 5, "hello", true).ok());
  REQUIRE(store->Close().ok());
  store.reset();
  CHECK(std::string(ReadFile(img).data(), 5) == "hello");  // the adopted file is b's live image
  ExpectRefused(WithDisks(dir, {{"a", 0, ""}, {"b", 0, ""}, {"c", kM, ""}}),
                {"no disk 'c'", "cannot be added"});
  ExpectRefused(WithDisks(dir, {{"b", 0, ""}, {"a", 0, ""}}), {"another order"});
  ExpectRefused(WithDisks(dir, {{"a", 0, ""}}), {"also has disk 'b'"});
  ExpectRefused(WithDisks(dir, {{"a", 2 * kM, ""}, {"b", 0, ""}}), {"size=a:2097152", "does not match"});
  ExpectRefused(WithDisks(dir, {{"a", 0, ""}, {"b", 0, tmp / "other.raw"}}), {"not the image of disk 'b'"});
  // Right: by name only, or not at all.
  REQUIRE(Open(WithDisks(dir, {{"a", kM, ""}, {"b", 65536, img}})).ok());
  REQUIRE(Open(WithDisks(dir, {})).ok());
  // A plain size= (or image=) without disk=: it would be checked against
  // the first disk only, so it is refused, naming the disks.
  {
    StoreOptions unnamed = WithDisks(dir, {});
    unnamed.size = kM;  // a's size: it would have passed as "matching"
    ExpectRefused(unnamed, {"has named disks (a, b)", "size=NAME:SIZE"});
  }

  // A store made without names takes none.
  const std::string plain_dir = tmp / "plain";
  StoreOptions p;
  p.dir = plain_dir;
  p.size = kM;
  REQUIRE(Open(p).ok());
  ExpectRefused(WithDisks(plain_dir, {{"a", 0, ""}}), {"without disk names"});
}

TEST_CASE("several disks: one named disk, and restores never onto any disk's live image",
          "[journal][disks]") {
  TempDir tmp("rwmd");
  const std::string dir = tmp / "store";
  const std::string outside = tmp / "b-live.raw";
  { std::ofstream(outside, std::ios::binary).write(std::string(8192, '\0').data(), 8192); }
  std::unique_ptr<Store> store;
  REQUIRE(Open(WithDisks(dir, {{"only", 1 << 20, ""}}), &store).ok());
  CHECK(store->disk_count() == 1);
  CHECK(store->disk(0)->name() == "only");
  StoreInfo info;
  REQUIRE(store->GetInfo(&info).ok());
  CHECK(info.format_version == 3);
  REQUIRE(store->Close().ok());
  store.reset();

  const std::string dir2 = tmp / "two";
  REQUIRE(Open(WithDisks(dir2, {{"a", 1 << 20, ""}, {"b", 0, outside}}), &store).ok());
  CheckpointInfo cp;
  REQUIRE(store->Checkpoint("c", &cp).ok());
  PointInfo p;
  REQUIRE(store->ResolvePoint("c", &p).ok());
  rwd::RestoreOptions ro;
  ro.output = outside;
  ro.overwrite = true;
  Status s = store->disk(0)->Restore(p, ro, nullptr);  // disk a onto b's live image
  INFO(s.ToString());
  CHECK(s.code() == Status::Code::kInvalidArgument);
  CHECK(s.message().find("live image") != std::string::npos);
  REQUIRE(store->Close().ok());
}
