// Power-cut tests of the store: a seeded random workload runs against the
// fault-injecting doubles (FaultInjectionFS for the journal, MemImage for
// the live image) while a DiskModel tracks what must survive.  At a random
// moment the power goes: both doubles stop accepting I/O, the store is
// destroyed, unsynced journal bytes are dropped (a random prefix may stay),
// directory changes that were not fsynced are undone, and a random subset
// of unsynced image writes persists, torn at sector granularity.  The
// reopened store must hold, in every sector, its last durable value or a
// later one, as one prefix of the history, and list every acknowledged
// checkpoint.  The workload then continues on the reopened store.
//
// Also: power cuts during and right after recovery (idempotence), and
// injected sync, append and image errors, after which the store must refuse
// writes and still recover everything it acknowledged.
//
// REWIND_POWERCUT_ITERATIONS scales the main loop (default 60 cuts in all);
// REWIND_POWERCUT_SEED picks its seed (default fixed).
#include <catch2/catch.hpp>

#include "support/disk_model.h"
#include "support/fault_fs.h"
#include "support/mem_image.h"
#include "support/proc_util.h"

#include <rewind/journal/fault_point.h>
#include <rewind/journal/store.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <tuple>

using rwd::Status;
using rwd::Store;
using rwd::StoreOptions;
using rwd::test::DiskModel;
using rwd::test::FaultInjectionFS;
using rwd::test::FsFault;
using rwd::test::MemImage;
using rwd::test::MemImageFactory;

namespace {

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

struct Config {
  uint64_t size;
  uint32_t block_size;
  uint32_t sync_interval_us;
  uint64_t write_buffer_bytes = 0;  // 0: the store's default
  uint64_t vlog_segment_bytes = 0;
};

// One store on the two doubles, its model and its checkpoints.
class Harness {
 public:
  Harness(const Config& cfg, uint64_t seed)
      : cfg_(cfg), rng_(seed), model_(cfg.size), tmp_("rwpc") {
    dir_ = tmp_ / "store";
    fs_ = std::make_shared<FaultInjectionFS>();
    images_ = std::make_shared<MemImageFactory>();
  }
  ~Harness() {
    Disarm();
    if (store_) {  // a failed REQUIRE left it open: let it go quietly
      fs_->SetActive(true);
      images_->SetActive(true);
      fs_->ClearFaults();
      store_.reset();
    }
  }

  std::mt19937_64& rng() { return rng_; }
  DiskModel& model() { return model_; }
  Store& store() { return *store_; }
  FaultInjectionFS& fs() { return *fs_; }
  MemImageFactory& images() { return *images_; }
  MemImage& image() {
    auto img = images_->Only();
    REQUIRE(img != nullptr);
    return *img;
  }
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  Status TryOpen() {
    StoreOptions o;
    o.dir = dir_;
    o.size = cfg_.size;
    o.block_size = cfg_.block_size;
    o.fs = fs_;
    o.image_factory = images_;
    o.sync_interval_us = cfg_.sync_interval_us;
    o.image_sync_interval_ms = 1000;  // the tests wait for apply.after_image_sync
    o.journal_write_buffer_bytes = cfg_.write_buffer_bytes;
    o.vlog_segment_bytes = cfg_.vlog_segment_bytes;
    return Store::Open(o, &store_);
  }

  void Open() {
    Status s = TryOpen();
    INFO("open: " << s.ToString());
    REQUIRE(s.ok());
  }

  // The instant of the cut, then everything a power cut does to the disks.
  void PowerCut() {
    images_->SetActive(false);
    fs_->SetActive(false);
    store_.reset();
    CutDisks();
  }

  // kill -9 without a power cut: whatever was written stays, synced or not.
  void Crash() {
    images_->SetActive(false);
    fs_->SetActive(false);
    store_.reset();
    if (auto img = images_->Only()) {
      REQUIRE(img->open_handles() == 0);
      img->KeepUnsynced();
    }
    fs_->ResetState();
    fs_->SetActive(true);
    images_->SetActive(true);
  }

  // What the disks keep after a cut; the store must be gone already.
  void CutDisks() {
    if (auto img = images_->Only()) REQUIRE(img->open_handles() == 0);
    images_->SimulatePowerCut(rng_);
    std::string err = fs_->DropUnsyncedData(&rng_);
    err += fs_->DeleteFilesCreatedAfterLastDirSync();
    INFO(err);
    REQUIRE(err.empty());
    fs_->ResetState();
    fs_->SetActive(true);
    images_->SetActive(true);
  }

  std::vector<char> ReadAll() {
    std::vector<char> disk(cfg_.size);
    for (uint64_t off = 0; off < cfg_.size;) {
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(1 << 20, cfg_.size - off));
      Status s = store_->Read(off, n, disk.data() + off);
      INFO("read at " << off << ": " << s.ToString());
      REQUIRE(s.ok());
      off += n;
    }
    return disk;
  }

  // Checks the reopened store against the model and adopts what it holds.
  void Verify(const std::string& when) {
    INFO(when);
    std::vector<rwd::CheckpointInfo> cps;
    Status s = store_->ListCheckpoints(&cps);
    INFO("list checkpoints: " << s.ToString());
    REQUIRE(s.ok());
    uint64_t min_ops = 0;
    std::map<std::string, bool> listed;
    uint64_t last_id = 0;
    for (const auto& c : cps) {
      INFO("checkpoint " << c.id << " '" << c.name << "'");
      CHECK(c.id > last_id);
      last_id = c.id;
      auto it = checkpoints_.find(c.name);
      REQUIRE(it != checkpoints_.end());  // listed but never asked for
      listed[c.name] = true;
      min_ops = std::max(min_ops, it->second.ops_before);
    }
    for (auto it = checkpoints_.begin(); it != checkpoints_.end();) {
      INFO("checkpoint '" << it->first << "'");
      if (it->second.acked) CHECK(listed.count(it->first) == 1);
      if (!listed.count(it->first)) {
        it = checkpoints_.erase(it);  // lost before it was acknowledged: gone for good
      } else {
        it->second.acked = true;  // recovered: durable from now on
        ++it;
      }
    }
    std::vector<char> disk = ReadAll();
    uint64_t recovered = 0;
    std::string err = model_.CheckRecovered(disk.data(), min_ops, &recovered);
    INFO(err);
    REQUIRE(err.empty());
    CheckExtents(0, cfg_.size, disk.data());
    if (std::getenv("REWIND_POWERCUT_VERBOSE")) {
      fmt::print("{}: durable ops {}, issued {}, recovered {}, checkpoints listed {}\n", when,
                 model_.durable_ops(), model_.ops(), recovered, cps.size());
    }
    model_.Reset(disk.data());
    if (auto img = images_->Only()) {
      INFO(img->violations());
      REQUIRE(img->violations().empty());
    }
  }

  // A random range: [offset, offset+len) within the disk.
  std::pair<uint64_t, uint64_t> Range(uint64_t min_len, uint64_t max_len) {
    const uint64_t size = cfg_.size;
    if (Rand(2) == 0) {  // sector-aligned
      uint64_t len = rwd::test::kSectorSize * (min_len / 512 + Rand((max_len - min_len) / 512 + 1));
      len = std::max<uint64_t>(len, rwd::test::kSectorSize);
      uint64_t off = rwd::test::kSectorSize * Rand((size - len) / rwd::test::kSectorSize + 1);
      return {off, len};
    }
    uint64_t len = min_len + Rand(max_len - min_len + 1);
    if (Rand(8) == 0) {  // now and then end exactly at the end of the disk
      return {size - len, len};
    }
    return {Rand(size - len + 1), len};
  }

  // The store's answer to an operation: it must succeed unless the power
  // went (then the answer is not checked, and the workload stops).  An
  // answer of OK stays trustworthy after a cut: the doubles fail every I/O
  // from the cut on, so whatever made it OK happened before.
  bool Succeeded(const Status& s, const char* what) {
    if (s.ok()) return true;
    INFO(what << ": " << s.ToString());
    REQUIRE(Cut());
    return false;
  }
  bool Cut() const { return cut_ && cut_->load(); }

  void DoWrite(bool fua) {
    auto [off, len] = Range(512, 64 << 10);
    const uint64_t tag = next_tag_++;
    std::vector<char> data(len);
    rwd::test::FillPattern(tag, off, len, data.data());
    model_.Write(off, data.data(), len,
                 fmt::format("write tag {} [{}, +{}){}", tag, off, len, fua ? " fua" : ""));
    Status s = store_->Write(off, static_cast<uint32_t>(len), data.data(), fua);
    if (Succeeded(s, "write") && fua) model_.MarkDurable();
  }

  void DoZero(bool trim, bool fua) {
    auto [off, len] = Range(1, 256 << 10);
    model_.Zero(off, len,
                fmt::format("{} [{}, +{}){}", trim ? "trim" : "zero", off, len, fua ? " fua" : ""));
    Status s = store_->Zero(off, len, fua, trim);
    if (Succeeded(s, "zero") && fua) model_.MarkDurable();
  }

  void DoFlush() {
    if (Succeeded(store_->Flush(), "flush")) model_.MarkDurable();
  }

  void DoCheckpoint() {
    std::string name = fmt::format("cp-{}", next_cp_++);
    checkpoints_[name] = Cp{model_.ops(), false};
    rwd::CheckpointInfo info;
    if (Succeeded(store_->Checkpoint(name, &info), "checkpoint")) {
      CHECK(info.name == name);
      checkpoints_[name].acked = true;
    }
  }

  void DoReadCheck() {
    auto [off, len] = Range(1, 128 << 10);
    std::vector<char> got(len), want(len);
    Status s = store_->Read(off, static_cast<uint32_t>(len), got.data());
    if (Cut()) return;  // a dead machine's reads prove nothing
    INFO("read: " << s.ToString());
    REQUIRE(s.ok());
    model_.ReadCurrent(off, len, want.data());
    INFO("read [" << off << ", +" << len << ") differs from what was written");
    REQUIRE(got == want);
  }

  // Store::Extents must cover [off, off+len) with consecutive regions, and
  // a region it calls a hole must read as zeros in `content` (the disk's
  // content from off on).
  void CheckExtents(uint64_t off, uint64_t len, const char* content) {
    std::vector<std::tuple<uint64_t, uint64_t, bool>> regions;
    Status s = store_->Extents(
        off, len, [&](uint64_t o, uint64_t n, bool data) { regions.emplace_back(o, n, data); });
    if (Cut()) return;
    INFO("extents: " << s.ToString());
    REQUIRE(s.ok());
    uint64_t pos = off;
    for (const auto& [o, n, data] : regions) {
      INFO("extent [" << o << ", +" << n << ") " << (data ? "data" : "hole"));
      REQUIRE(o == pos);
      REQUIRE(n > 0);
      if (!data) {
        const char* p = content + (o - off);
        CHECK(std::all_of(p, p + n, [](char c) { return c == 0; }));
      }
      pos = o + n;
    }
    REQUIRE(pos == off + len);
  }

  void DoExtentsCheck() {
    auto [off, len] = Range(1, 1 << 20);
    CheckExtents(off, len, model_.current().data() + off);
  }

  // n random operations, fewer if the power goes.
  void Run(int n) {
    for (int i = 0; i < n && !Cut(); i++) {
      const uint64_t r = Rand(100);
      if (r < 55) {
        DoWrite(Rand(8) == 0);
      } else if (r < 62) {
        DoFlush();
      } else if (r < 68) {
        DoZero(false, Rand(4) == 0);
      } else if (r < 74) {
        DoZero(true, Rand(4) == 0);
      } else if (r < 78) {
        DoCheckpoint();
      } else if (r < 91) {
        DoReadCheck();
      } else if (r < 93) {
        DoExtentsCheck();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(Rand(3000)));
      }
    }
  }

  // Arms a power cut at the hit-th pass of the named fault point, on
  // whichever thread passes it.  The hook's state is shared so that a late
  // call from a background thread is harmless.  Returns whether it fired.
  std::shared_ptr<std::atomic<bool>> ArmCutAt(const std::string& point, int hit) {
    auto fired = std::make_shared<std::atomic<bool>>(false);
    auto hits = std::make_shared<std::atomic<int>>(0);
    auto fs = fs_;
    auto images = images_;
    rwd::SetFaultHook([=](std::string_view name) {
      if (name == point && ++*hits == hit && !fired->exchange(true)) {
        images->SetActive(false);
        fs->SetActive(false);
      }
    });
    cut_ = fired;
    return fired;
  }
  void Disarm() {
    rwd::SetFaultHook(nullptr);
    cut_.reset();
  }

 private:
  struct Cp {
    uint64_t ops_before;  // operations issued before it
    bool acked;
  };
  Config cfg_;
  std::mt19937_64 rng_;
  DiskModel model_;
  rwd::test::TempDir tmp_;
  std::string dir_;
  std::shared_ptr<FaultInjectionFS> fs_;
  std::shared_ptr<MemImageFactory> images_;
  std::unique_ptr<Store> store_;
  std::map<std::string, Cp> checkpoints_;
  uint64_t next_tag_ = 1;
  uint64_t next_cp_ = 1;
  std::shared_ptr<std::atomic<bool>> cut_;  // set while a cut is armed
};

void PowerCutLoop(const Config& cfg, uint64_t seed, int iterations) {
  INFO(fmt::format("seed {} (REWIND_POWERCUT_SEED), size {}, block size {}", seed, cfg.size,
                   cfg.block_size));
  Harness h(cfg, seed);
  h.Open();
  h.Verify("after creation");
  for (int iter = 0; iter < iterations; iter++) {
    INFO("iteration " << iter);
    h.Run(static_cast<int>(h.Rand(120)) + 1);
    if (h.Rand(10) == 0) {
      // A clean close keeps everything.
      REQUIRE(h.store().Close().ok());
      h.model().MarkDurable();
      h.PowerCut();
      h.Open();
      h.Verify("after a clean close and reopen");
      h.Run(static_cast<int>(h.Rand(60)) + 1);
    }
    if (h.Rand(4) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(h.Rand(30)));
    if (h.Rand(6) == 0) {
      h.Crash();
    } else {
      h.PowerCut();
    }

    switch (h.Rand(5)) {
      case 0: {  // the power fails again inside recovery
        static const char* const kPoints[] = {"recovery.replay", "recovery.before_sync",
                                              "recovery.after_sync"};
        std::string point = kPoints[h.Rand(3)];
        int hit = point == "recovery.replay" ? static_cast<int>(h.Rand(3)) + 1 : 1;
        INFO("power cut at " << point << " hit " << hit);
        auto fired = h.ArmCutAt(point, hit);
        Status s = h.TryOpen();
        h.Disarm();
        if (*fired) {
          INFO("open after a cut inside recovery: " << s.ToString());
          CHECK_FALSE(s.ok());  // recovery could not finish its I/O
          h.PowerCut();         // destroys whatever opened, then cuts
        } else {
          REQUIRE(s.ok());  // nothing to recover: the point was not reached
          h.PowerCut();
        }
        h.Open();
        h.Verify("after a power cut inside recovery");
        break;
      }
      case 1: {  // the power fails again right after recovery
        h.Open();
        h.Verify("after the first reopen");
        h.PowerCut();
        h.Open();
        h.Verify("after a power cut right after recovery (must equal the first reopen)");
        break;
      }
      default:
        h.Open();
        h.Verify("after a power cut");
        break;
    }
  }
  REQUIRE(h.store().Close().ok());
}

int Iterations(int share_of_60) {
  uint64_t total = EnvU64("REWIND_POWERCUT_ITERATIONS", 60);
  return static_cast<int>(std::max<uint64_t>(1, total * static_cast<uint64_t>(share_of_60) / 60));
}

}  // namespace

TEST_CASE("power cuts at random moments keep every acknowledged write", "[journal][powercut]") {
  const uint64_t seed = EnvU64("REWIND_POWERCUT_SEED", 20240611);
  SECTION("4 KiB blocks, a disk ending in a partial block") {
    PowerCutLoop(Config{(5ull << 20) + 1536, 4096, 2000}, seed, Iterations(30));
  }
  SECTION("512-byte blocks") {
    PowerCutLoop(Config{2ull << 20, 512, 5000}, seed + 1, Iterations(15));
  }
  SECTION("64 KiB blocks, slow background sync") {
    PowerCutLoop(Config{3ull << 20, 64 << 10, 20000}, seed + 2, Iterations(15));
  }
}

TEST_CASE("power cuts at each named fault point keep every acknowledged write",
          "[journal][powercut]") {
  // The write, flush, apply, zero and checkpoint points; creation and
  // recovery have their own tests.  The cut happens on whichever thread
  // passes the point (the applier's and syncer's included).
  const uint64_t seed = EnvU64("REWIND_POWERCUT_SEED", 20240611);
  std::vector<std::string> never_reached;
  uint64_t n = 0;
  for (std::string_view p : rwd::AllFaultPoints()) {
    const std::string point(p);
    if (point.starts_with("create.") || point.starts_with("recovery.")) continue;
    if (point.starts_with("rollback.") || point.starts_with("prune.")) continue;  // rollback_test, prune_test
    if (point.ends_with("_pending")) continue;  // pending_checkpoint_test
    for (int hit : {1, 2, 3}) {
      INFO("power cut at " << point << " hit " << hit << ", seed " << seed + n);
      Harness h(Config{2ull << 20, 4096, 5000}, seed + n++);
      h.Open();
      h.Run(10);
      h.DoFlush();
      auto fired = h.ArmCutAt(point, hit);
      // The applier syncs the image once a second: wait for that point.
      const auto min_time =
          std::chrono::milliseconds(point == "apply.after_image_sync" ? 1100 * hit : 0);
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; !*fired; i++) {
        auto elapsed = std::chrono::steady_clock::now() - start;
        if ((i >= 150 && elapsed >= min_time) || elapsed > std::chrono::seconds(10)) break;
        h.Run(1);
      }
      const bool reached = *fired;
      h.PowerCut();
      h.Disarm();
      if (!reached && hit == 1) never_reached.push_back(point);
      h.Open();
      h.Verify(reached ? "after a power cut at the point"
                       : "after a power cut (point not reached)");
      h.Run(30);
      h.DoFlush();
      h.PowerCut();
      h.Open();
      h.Verify("after a second power cut");
    }
  }
  INFO("fault points a workload never passed: " << fmt::format("{}",
                                                               fmt::join(never_reached, ", ")));
  CHECK(never_reached.empty());
}

TEST_CASE("power cuts while the journal memtables flush keep every acknowledged write",
          "[journal][powercut]") {
  // Small memtables and vlog segments, so that RocksDB flushes memtables
  // into table files and the payload log starts new segments while the
  // store runs: the cut lands in or after that.
  const uint64_t seed = EnvU64("REWIND_POWERCUT_SEED", 20240611) + 200;
  INFO("seed " << seed);
  Harness h(Config{8ull << 20, 4096, 2000, 64u << 10, 8u << 20}, seed);
  h.Open();
  uint64_t tag = 1u << 22;
  for (int iter = 0; iter < 2; iter++) {
    INFO("iteration " << iter);
    const int writes = 1100 + static_cast<int>(h.Rand(700));
    std::vector<char> data(64 << 10);
    for (int i = 0; i < writes; i++) {
      uint64_t off = (64 << 10) * h.Rand((8ull << 20) / (64 << 10));
      rwd::test::FillPattern(tag, off, data.size(), data.data());
      h.model().Write(off, data.data(), data.size(),
                      fmt::format("write tag {} [{}, +65536)", tag, off));
      tag++;
      Status s = h.store().Write(off, static_cast<uint32_t>(data.size()), data.data(), false);
      INFO("write: " << s.ToString());
      REQUIRE(s.ok());
      if (i % 40 == 39) h.DoFlush();  // keeps the model's history short
      if (i % 200 == 199) h.DoCheckpoint();
    }
    uint64_t table_files = 0, segments = 0;
    for (const auto& [path, info] : h.fs().Files()) {
      table_files += path.ends_with(".sst");
      segments += path.ends_with(".vlog");
    }
    CHECK(table_files > 0);  // a memtable flush happened
    CHECK(segments > 1);     // the payload log rolled over
    h.PowerCut();
    h.Open();
    h.Verify("after a power cut amid memtable flushes");
  }
  REQUIRE(h.store().Close().ok());
}

// ---- concurrent writers ----

namespace {

void AtomicMax(std::atomic<uint64_t>& a, uint64_t v) {
  uint64_t cur = a.load();
  while (cur < v && !a.compare_exchange_weak(cur, v)) {
  }
}

// One writer thread's share of the disk: its own region, model and floors.
struct Writer {
  uint64_t base = 0, len = 0;
  std::unique_ptr<DiskModel> model;
  std::atomic<uint64_t> returned{0};  // model ops whose call has returned
  std::atomic<uint64_t> floor{0};     // model ops known durable
  std::string error;                  // an unexpected failure, reported by the main thread
};

void WriterLoop(Store* store, Writer* w, std::vector<std::unique_ptr<Writer>>* all,
                std::atomic<uint64_t>* next_tag, const std::atomic<bool>* stop,
                const std::shared_ptr<std::atomic<bool>>& cut, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto rand = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  std::vector<char> data;
  while (!stop->load() && !cut->load()) {
    uint64_t r = rand(100);
    Status s;
    std::vector<uint64_t> snapshot;
    bool durable = false;
    if (r < 80) {
      uint64_t len = 512 + rand(std::min<uint64_t>(w->len, 32 << 10) - 512 + 1);
      if (rand(2)) len = (len + 511) / 512 * 512;
      uint64_t off = rand(w->len - len + 1);
      bool fua = rand(8) == 0;
      uint64_t tag = next_tag->fetch_add(1);
      data.resize(len);
      rwd::test::FillPattern(tag, w->base + off, len, data.data());
      w->model->Write(
          off, data.data(), len,
          fmt::format("write tag {} [{}, +{}){}", tag, w->base + off, len, fua ? " fua" : ""));
      s = store->Write(w->base + off, static_cast<uint32_t>(len), data.data(), fua);
      durable = fua;
    } else if (r < 90) {
      uint64_t len = 1 + rand(64 << 10);
      uint64_t off = rand(w->len - len + 1);
      bool trim = rand(2), fua = rand(4) == 0;
      w->model->Zero(off, len,
                     fmt::format("{} [{}, +{})", trim ? "trim" : "zero", w->base + off, len));
      s = store->Zero(w->base + off, len, fua, trim);
      durable = fua;
    } else {
      // A flush covers every write that returned before it, in any thread.
      for (auto& o : *all) snapshot.push_back(o->returned.load());
      s = store->Flush();
    }
    if (!s.ok()) {
      if (!cut->load()) w->error = "unexpected failure before the power cut: " + s.ToString();
      return;
    }
    w->returned.store(w->model->ops());
    if (durable) AtomicMax(w->floor, w->model->ops());
    for (size_t i = 0; i < snapshot.size(); i++) AtomicMax((*all)[i]->floor, snapshot[i]);
  }
}

}  // namespace

TEST_CASE("power cuts under concurrent writers keep every acknowledged write",
          "[journal][powercut]") {
  // Writers on disjoint regions share the commit queue (group commit); each
  // region's recovered content must be a prefix of its own history, above
  // every floor set by a FUA write, a flush from any thread, or a listed
  // checkpoint (which covers every write that returned before it).
  const uint64_t seed = EnvU64("REWIND_POWERCUT_SEED", 20240611) + 100;
  const int cuts = Iterations(12);
  constexpr int kWriters = 4;
  constexpr uint64_t kRegion = 512 << 10;
  INFO("seed " << seed);
  Harness h(Config{kWriters * kRegion, 4096, 3000}, seed);
  std::vector<std::unique_ptr<Writer>> writers;
  for (int i = 0; i < kWriters; i++) {
    auto w = std::make_unique<Writer>();
    w->base = static_cast<uint64_t>(i) * kRegion;
    w->len = kRegion;
    w->model = std::make_unique<DiskModel>(kRegion, w->base);
    writers.push_back(std::move(w));
  }
  // Checkpoints: name -> (floors per writer, acknowledged).
  std::map<std::string, std::pair<std::vector<uint64_t>, bool>> cps;
  std::atomic<uint64_t> next_tag{1};
  int cp_seq = 0;
  h.Open();
  for (int iter = 0; iter < cuts; iter++) {
    INFO("iteration " << iter);
    std::atomic<bool> stop{false};
    auto cut = h.ArmCutAt("(none)", 1);  // only for the flag
    std::vector<std::thread> threads;
    for (int i = 0; i < kWriters; i++) {
      threads.emplace_back(WriterLoop, &h.store(), writers[i].get(), &writers, &next_tag, &stop,
                           cut, seed * 131 + static_cast<uint64_t>(iter * kWriters + i));
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(5 + h.Rand(60));
    std::string cp_error;
    while (std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::microseconds(h.Rand(4000)));
      std::string name = fmt::format("cc-{}", ++cp_seq);
      std::vector<uint64_t> floors;
      for (auto& w : writers) floors.push_back(w->returned.load());
      cps[name] = {floors, false};
      Status s = h.store().Checkpoint(name, nullptr);
      if (!s.ok()) {
        cp_error = s.ToString();
        break;
      }
      cps[name].second = true;
    }
    // The instant of the cut, while the writers run (the flag first, so that
    // no writer takes the cut's failures for the store's).
    cut->store(true);
    h.images().SetActive(false);
    h.fs().SetActive(false);
    stop.store(true);
    for (auto& t : threads) t.join();
    h.Disarm();
    INFO("checkpoint failed before the cut: " << cp_error);
    REQUIRE(cp_error.empty());
    for (auto& w : writers) {
      INFO(w->error);
      REQUIRE(w->error.empty());
    }
    h.PowerCut();
    h.Open();

    std::vector<rwd::CheckpointInfo> listed;
    REQUIRE(h.store().ListCheckpoints(&listed).ok());
    std::vector<uint64_t> min_ops(kWriters, 0);
    std::set<std::string> names;
    for (const auto& c : listed) {
      INFO("listed checkpoint " << c.name);
      auto it = cps.find(c.name);
      REQUIRE(it != cps.end());
      names.insert(c.name);
      for (int i = 0; i < kWriters; i++) min_ops[i] = std::max(min_ops[i], it->second.first[i]);
    }
    for (auto it = cps.begin(); it != cps.end();) {
      INFO("acknowledged checkpoint " << it->first << " is not listed");
      if (it->second.second) CHECK(names.count(it->first) == 1);
      if (names.count(it->first)) {
        it->second.second = true;
        ++it;
      } else {
        it = cps.erase(it);
      }
    }
    std::vector<char> disk = h.ReadAll();
    for (int i = 0; i < kWriters; i++) {
      Writer& w = *writers[i];
      INFO("writer " << i << " region [" << w.base << ", +" << w.len << ")");
      uint64_t lo = std::max(min_ops[i], w.floor.load());
      uint64_t recovered = 0;
      std::string err = w.model->CheckRecovered(disk.data() + w.base, lo, &recovered);
      INFO(err);
      REQUIRE(err.empty());
      if (std::getenv("REWIND_POWERCUT_VERBOSE")) {
        fmt::print("writer {}: durable {}, floor {}, issued {}, recovered {}\n", i,
                   w.model->durable_ops(), lo, w.model->ops(), recovered);
      }
      // Numbers continue: the lost operations vanish, the rest is durable.
      w.model->Reset(disk.data() + w.base);
      w.returned.store(w.model->ops());
      w.floor.store(w.model->ops());
    }
  }
  REQUIRE(h.store().Close().ok());
}

// ---- injected errors ----

namespace {

// Writes n blocks and flushes; returns with them durable in the model.
void WriteDurable(Harness& h, int n) {
  for (int i = 0; i < n; i++) h.DoWrite(false);
  h.DoFlush();
}

bool IsRefusal(const Status& s) {
  return s.code() == Status::Code::kReadOnly || s.code() == Status::Code::kIOError;
}

// After the store reported a failure: every further write, zero, flush and
// checkpoint fails, and is recorded nowhere.
void RequireRefusing(Harness& h) {
  std::vector<char> data(4096, 'x');
  for (int i = 0; i < 5; i++) {
    Status s = h.store().Write(4096 * static_cast<uint64_t>(i), 4096, data.data(), i % 2 == 0);
    INFO("write after the failure: " << s.ToString() << " (" << s.CodeName() << ")");
    REQUIRE_FALSE(s.ok());
    CHECK(IsRefusal(s));
  }
  Status s = h.store().Zero(0, 8192, true, false);
  INFO("zero after the failure: " << s.ToString());
  REQUIRE_FALSE(s.ok());
  s = h.store().Flush();
  INFO("flush after the failure: " << s.ToString());
  REQUIRE_FALSE(s.ok());
  s = h.store().Checkpoint("after-failure", nullptr);
  INFO("checkpoint after the failure: " << s.ToString());
  REQUIRE_FALSE(s.ok());
  rwd::StoreInfo info;
  REQUIRE(h.store().GetInfo(&info).ok());
  CHECK(info.writes_refused);
  CHECK_FALSE(info.refused_reason.empty());
}

// The faults are cleared, the process dies (with a power cut or without), and the reopened store
// must hold what was acknowledged.
void ReopenAndVerify(Harness& h, bool power_cut) {
  h.fs().ClearFaults();
  if (auto img = h.images().Only()) img->ClearErrors();
  if (power_cut) {
    h.PowerCut();
  } else {
    h.Crash();
  }
  h.Open();
  h.Verify("after reopening a store that refused writes");
  // And it works again.
  h.Run(20);
  h.DoFlush();
}

}  // namespace

TEST_CASE("a failed journal sync makes the store refuse writes", "[journal][powercut]") {
  const bool nospace = GENERATE(false, true);
  const bool persistent = GENERATE(false, true);
  const bool via_fua = GENERATE(false, true);
  const bool power_cut = GENERATE(false, true);
  INFO(fmt::format("nospace {} persistent {} via_fua {} power_cut {}", nospace, persistent, via_fua,
                   power_cut));
  // Background syncs every second only: the flush below meets the fault.
  Harness h(Config{1ull << 20, 4096, 1000000}, 7);
  h.Open();
  WriteDurable(h, 8);
  h.DoWrite(false);  // unsynced when the sync fails
  FsFault f;
  f.kind = nospace ? FsFault::Kind::kNoSpace : FsFault::Kind::kIOError;
  f.times = persistent ? -1 : 1;
  f.path_contains = ".log";
  h.fs().FailSyncs(f);
  if (via_fua) {
    std::vector<char> data(8192);
    rwd::test::FillPattern(1u << 20, 65536, data.size(), data.data());
    h.model().Write(65536, data.data(), data.size(), "fua write meeting the failed sync");
    Status s = h.store().Write(65536, 8192, data.data(), true);
    INFO("fua write with a failing sync: " << s.ToString());
    REQUIRE_FALSE(s.ok());
  } else {
    Status s = h.store().Flush();
    INFO("flush with a failing sync: " << s.ToString());
    REQUIRE_FALSE(s.ok());
  }
  CHECK(h.fs().injected_failures() >= 1);
  RequireRefusing(h);
  ReopenAndVerify(h, power_cut);
}

TEST_CASE("a failed journal append makes the store refuse writes", "[journal][powercut]") {
  const bool nospace = GENERATE(false, true);
  const bool power_cut = GENERATE(false, true);
  // RocksDB's WAL or the payload log.
  const std::string file = GENERATE(std::string(".log"), std::string(".vlog"));
  INFO(fmt::format("nospace {} power_cut {} file {}", nospace, power_cut, file));
  Harness h(Config{1ull << 20, 4096, 1000000}, 8);
  h.Open();
  WriteDurable(h, 8);
  FsFault f;
  f.kind = nospace ? FsFault::Kind::kNoSpace : FsFault::Kind::kIOError;
  f.times = 1;
  f.path_contains = file;
  h.fs().FailWrites(f);
  std::vector<char> data(4096);
  rwd::test::FillPattern(1u << 20, 8192, data.size(), data.data());
  h.model().Write(8192, data.data(), data.size(), "write meeting the failed append");
  // A plain write is acknowledged once ordered (write-back); the flush that
  // would make it durable must fail.
  Status s = h.store().Write(8192, 4096, data.data(), false);
  INFO("write with a failing append: " << s.ToString());
  Status fl = h.store().Flush();
  INFO("flush after it: " << fl.ToString());
  REQUIRE_FALSE(fl.ok());
  CHECK(h.fs().injected_failures() == 1);
  RequireRefusing(h);
  ReopenAndVerify(h, power_cut);
}

TEST_CASE("a failed image write or sync makes the store refuse writes", "[journal][powercut]") {
  const auto op = GENERATE(MemImage::Op::kWrite, MemImage::Op::kSync);
  const int err = GENERATE(EIO, ENOSPC);
  const bool power_cut = GENERATE(false, true);
  INFO(fmt::format("op {} errno {} power_cut {}", op == MemImage::Op::kWrite ? "write" : "sync",
                   err, power_cut));
  Harness h(Config{1ull << 20, 4096, 2000}, 9);
  h.Open();
  WriteDurable(h, 8);
  h.image().InjectError(op, err, 0, -1);
  // The journal is fine, so FUA writes are acknowledged; the applier meets
  // the fault (an image sync is due once a second) and the store must then
  // refuse everything.
  Status s;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int acked = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    auto [off, len] = h.Range(512, 16 << 10);
    std::vector<char> data(len);
    rwd::test::FillPattern((1u << 20) + static_cast<uint64_t>(acked), off, len, data.data());
    h.model().Write(off, data.data(), len,
                    fmt::format("fua write {} while the image fails", acked));
    s = h.store().Write(off, static_cast<uint32_t>(len), data.data(), true);
    if (!s.ok()) break;
    h.model().MarkDurable();
    acked++;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO("first failure after " << acked << " acknowledged writes: " << s.ToString());
  REQUIRE_FALSE(s.ok());
  CHECK(h.image().injected_failures() >= 1);
  RequireRefusing(h);
  ReopenAndVerify(h, power_cut);
}

TEST_CASE("the fault-injection file system drops unsynced data and undoes unsynced renames",
          "[journal][powercut]") {
  // The double is only as good as its model: check it on its own.
  rwd::test::TempDir tmp("rwfs");
  const std::string dir = tmp.path();
  FaultInjectionFS fs;
  rocksdb::IOOptions io;
  auto write_file = [&](const std::string& name, const std::string& a, bool sync,
                        const std::string& b) {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    REQUIRE(fs.NewWritableFile(dir + "/" + name, rocksdb::FileOptions(), &f, nullptr).ok());
    REQUIRE(f->Append(a, io, nullptr).ok());
    if (sync) REQUIRE(f->Sync(io, nullptr).ok());
    REQUIRE(f->Append(b, io, nullptr).ok());
    REQUIRE(f->Close(io, nullptr).ok());
  };
  std::unique_ptr<rocksdb::FSDirectory> d;
  REQUIRE(fs.NewDirectory(dir, io, &d, nullptr).ok());

  write_file("a", "durable", true, "-lost");
  write_file("old", "old content", true, "");
  REQUIRE(d->Fsync(io, nullptr).ok());
  write_file("new", "never dir-synced", true, "");
  write_file("tmp", "replacement", true, "");
  REQUIRE(fs.RenameFile(dir + "/tmp", dir + "/old", io, nullptr).ok());
  REQUIRE(fs.DeleteFile(dir + "/a", io, nullptr).ok());
  CHECK(rwd::test::ReadFile(dir + "/old") == "replacement");

  fs.SetActive(false);
  std::unique_ptr<rocksdb::FSWritableFile> f;
  CHECK_FALSE(fs.NewWritableFile(dir + "/x", rocksdb::FileOptions(), &f, nullptr).ok());
  CHECK_FALSE(fs.DeleteFile(dir + "/old", io, nullptr).ok());
  CHECK_FALSE(d->Fsync(io, nullptr).ok());

  REQUIRE(fs.DropUnsyncedData().empty());
  REQUIRE(fs.DeleteFilesCreatedAfterLastDirSync().empty());
  CHECK(rwd::test::ReadFile(dir + "/a") == "durable");
  CHECK(rwd::test::ReadFile(dir + "/old") == "old content");
  CHECK_FALSE(std::filesystem::exists(dir + "/new"));
  CHECK_FALSE(std::filesystem::exists(dir + "/tmp"));

  // A failed sync leaves the data unsynced.
  fs.SetActive(true);
  fs.ResetState();
  fs.FailSyncs(FsFault{FsFault::Kind::kIOError, 0, 1, ""});
  REQUIRE(fs.NewWritableFile(dir + "/b", rocksdb::FileOptions(), &f, nullptr).ok());
  REQUIRE(f->Append("data", io, nullptr).ok());
  CHECK(f->Sync(io, nullptr).IsIOError());
  REQUIRE(f->Close(io, nullptr).ok());
  CHECK(fs.Files()[dir + "/b"].synced == 0);
}

TEST_CASE("the in-memory image forgets unsynced writes on a power cut", "[journal][powercut]") {
  MemImageFactory factory;
  std::unique_ptr<rwd::ImageFile> f;
  REQUIRE_FALSE(factory.Open("/img", false, 0, &f).ok());
  REQUIRE(factory.Open("/img", true, 1 << 20, &f).ok());
  CHECK(factory.Exists("/img"));
  std::vector<char> a(8192, 'a'), b(8192, 'b'), got(8192);
  REQUIRE(f->WriteV({rwd::IoVec{0, a.data(), 8192}}).ok());
  REQUIRE(f->Sync().ok());
  REQUIRE(f->WriteV({rwd::IoVec{0, b.data(), 8192}}).ok());
  REQUIRE(f->Read(0, 8192, got.data()).ok());
  CHECK(got == b);
  f.reset();
  auto img = factory.Get("/img");
  REQUIRE(img);
  img->DropUnsynced();
  REQUIRE(factory.Open("/img", false, 0, &f).ok());  // the same image again
  REQUIRE(f->Read(0, 8192, got.data()).ok());
  CHECK(got == a);
  // Torn: every sector is an a or a b, never anything else.
  REQUIRE(f->WriteV({rwd::IoVec{0, b.data(), 8192}}).ok());
  std::mt19937_64 rng(3);
  for (int i = 0; i < 20 && img->unsynced_ops() > 0; i++) img->SimulatePowerCut(rng);
  REQUIRE(f->Read(0, 8192, got.data()).ok());
  for (size_t s = 0; s < 16; s++) {
    char c = got[s * 512];
    CHECK((c == 'a' || c == 'b'));
    CHECK(std::all_of(got.begin() + static_cast<long>(s * 512),
                      got.begin() + static_cast<long>(s * 512 + 512),
                      [c](char x) { return x == c; }));
  }
  img->InjectError(MemImage::Op::kSync, ENOSPC, 1, 1);
  CHECK(f->Sync().ok());
  Status s = f->Sync();
  CHECK(s.code() == Status::Code::kNoSpace);
  CHECK(f->Sync().ok());
  img->SetActive(false);
  CHECK_FALSE(f->WriteV({rwd::IoVec{0, a.data(), 512}}).ok());
  CHECK(f->Read(0, 512, got.data()).ok());
  CHECK(img->violations().empty());
}
