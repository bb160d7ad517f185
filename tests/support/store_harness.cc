// StoreHarness: see store_harness.h.
#include "support/store_harness.h"

#include <catch2/catch.hpp>

#include <rewind/journal/fault_point.h>

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <tuple>

namespace rwd::test {

namespace {
constexpr const char* kBeforeRollback = "before-rollback-";
// The key of a rollback's before-rollback checkpoint until its name is known.
constexpr const char* kBeforeRollbackUnnamed = "before-rollback-?";

uint64_t Hash(const std::vector<char>& v) { return XXH3_64bits(v.data(), v.size()); }
}  // namespace

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

StoreHarness::StoreHarness(const HarnessConfig& cfg, uint64_t seed)
    : cfg_(cfg), rng_(seed), model_(cfg.size), tmp_("rwpc") {
  dir_ = tmp_ / "store";
  fs_ = std::make_shared<FaultInjectionFS>();
  images_ = std::make_shared<MemImageFactory>();
}

StoreHarness::~StoreHarness() {
  Disarm();
  if (store_) {  // a failed REQUIRE left it open: let it go quietly
    if (counter_) counter_->CutAt(0);
    fs_->SetActive(true);
    images_->SetActive(true);
    fs_->ClearFaults();
    store_.reset();
  }
}

MemImage& StoreHarness::image() {
  auto img = images_->Only();
  REQUIRE(img != nullptr);
  return *img;
}

Status StoreHarness::TryOpen() {
  StoreOptions o;
  o.dir = dir_;
  o.size = cfg_.size;
  o.block_size = cfg_.block_size;
  o.fs = fs_;
  o.image_factory = images_;
  o.sync_interval_us = cfg_.sync_interval_us;
  o.image_sync_interval_ms = cfg_.image_sync_interval_ms;
  o.journal_write_buffer_bytes = cfg_.write_buffer_bytes;
  o.vlog_segment_bytes = cfg_.vlog_segment_bytes;
  o.drop_damaged_journal = cfg_.drop_damaged_journal;
  return Store::Open(o, &store_);
}

void StoreHarness::Open() {
  Status s = TryOpen();
  INFO("open: " << s.ToString());
  REQUIRE(s.ok());
}

void StoreHarness::Close() {
  Status s = store_->Close();
  INFO("close: " << s.ToString());
  REQUIRE(s.ok());
  if (!killed_) model_.MarkDurable();
  store_.reset();
}

bool StoreHarness::CloseOrCut() {
  Status s = store_->Close();
  const bool ok = Succeeded(s, "close");
  if (ok && !killed_) model_.MarkDurable();
  store_.reset();
  return ok;
}

void StoreHarness::PowerCut() {
  images_->SetActive(false);
  fs_->SetActive(false);
  store_.reset();
  CutDisks();
  stats_.power_cuts++;
}

void StoreHarness::Kill() {
  images_->SetActive(false);
  fs_->SetActive(false);
  store_.reset();
  if (auto img = images_->Only()) REQUIRE(img->open_handles() == 0);
  // Nothing is dropped and nothing becomes durable: the page cache lives.
  killed_ = true;
  fs_->SetActive(true);
  images_->SetActive(true);
  stats_.kills++;
}

void StoreHarness::CutDisks() {
  if (auto img = images_->Only()) REQUIRE(img->open_handles() == 0);
  images_->SimulatePowerCut(rng_);
  std::string err = fs_->DropUnsyncedData(&rng_);
  err += fs_->DeleteFilesCreatedAfterLastDirSync();
  INFO(err);
  REQUIRE(err.empty());
  fs_->ResetState();
  if (counter_) counter_->CutAt(0);
  fs_->SetActive(true);
  images_->SetActive(true);
}

std::vector<char> StoreHarness::ReadAll() {
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

void StoreHarness::CheckCheckpoint(const std::string& name, const Cp& cp) {
  INFO("checkpoint '" << name << "' read back through a snapshot");
  PointInfo point;
  Status s = store_->ResolvePoint(name, &point);
  INFO("resolve: " << s.ToString());
  REQUIRE(s.ok());
  std::unique_ptr<Snapshot> snap;
  s = store_->OpenSnapshot(point, &snap);
  INFO("open snapshot: " << s.ToString());
  REQUIRE(s.ok());
  std::vector<char> disk(cfg_.size);
  for (uint64_t off = 0; off < cfg_.size;) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(1 << 20, cfg_.size - off));
    s = snap->Read(off, n, disk.data() + off);
    INFO("snapshot read at " << off << ": " << s.ToString());
    REQUIRE(s.ok());
    off += n;
  }
  INFO("the checkpoint's content differs from the disk's when it was taken");
  REQUIRE(Hash(disk) == cp.hash);
  stats_.checkpoints_checked++;
}

void StoreHarness::Verify(const std::string& when) {
  INFO(when);
  std::vector<CheckpointInfo> cps;
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
    if (it == checkpoints_.end() && c.name.starts_with(kBeforeRollback)) {
      // An interrupted rollback's checkpoint: now its name is known.
      auto un = checkpoints_.find(kBeforeRollbackUnnamed);
      REQUIRE(un != checkpoints_.end());
      it = checkpoints_.emplace(c.name, un->second).first;
      checkpoints_.erase(un);
    }
    REQUIRE(it != checkpoints_.end());  // listed but never asked for
    listed[c.name] = true;
    min_ops = std::max(min_ops, it->second.ops_before);
  }
  for (auto it = checkpoints_.begin(); it != checkpoints_.end();) {
    INFO("checkpoint '" << it->first << "'");
    if (it->second.acked) CHECK(listed.count(it->first) == 1);
    if (!listed.count(it->first)) {
      it = checkpoints_.erase(it);  // lost before it was acknowledged: gone for good
      continue;
    }
    it->second.acked = true;  // recovered: durable from now on
    // Each checkpoint once after it became durable, then now and then.
    if (!it->second.checked || cfg_.check_every_checkpoint || Rand(16) == 0) {
      CheckCheckpoint(it->first, it->second);
      it->second.checked = true;
    }
    ++it;
  }
  std::vector<char> disk = ReadAll();
  uint64_t recovered = 0;
  std::string err = model_.CheckRecovered(disk.data(), min_ops, &recovered);
  INFO(err);
  REQUIRE(err.empty());
  stats_.sectors_checked += cfg_.size / kSectorSize;
  CheckExtents(0, cfg_.size, disk.data());
  if (cfg_.verify_every != 0 && verifies_++ % cfg_.verify_every == 0) {
    VerifyReport report;
    s = store_->Verify(nullptr, &report);
    INFO("verify: " << s.ToString());
    REQUIRE(s.ok());
    std::string damage;
    for (const auto& d : report.damage) damage += d + "\n";
    INFO("Store::Verify found damage:\n" << damage);
    REQUIRE(report.clean());
    stats_.store_verifies++;
  }
  if (std::getenv("REWIND_POWERCUT_VERBOSE")) {
    fmt::print("{}: durable ops {}, issued {}, recovered {}, checkpoints listed {}\n", when,
               model_.durable_ops(), model_.ops(), recovered, cps.size());
  }
  model_.Reset(disk.data());
  killed_ = false;
  if (auto img = images_->Only()) {
    INFO(img->violations());
    REQUIRE(img->violations().empty());
  }
  stats_.reopens_checked++;
}

std::pair<uint64_t, uint64_t> StoreHarness::Range(uint64_t min_len, uint64_t max_len) {
  const uint64_t size = cfg_.size;
  if (Rand(2) == 0) {  // sector-aligned
    uint64_t len = kSectorSize * (min_len / 512 + Rand((max_len - min_len) / 512 + 1));
    len = std::max<uint64_t>(len, kSectorSize);
    uint64_t off = kSectorSize * Rand((size - len) / kSectorSize + 1);
    return {off, len};
  }
  uint64_t len = min_len + Rand(max_len - min_len + 1);
  if (Rand(8) == 0) {  // now and then end exactly at the end of the disk
    return {size - len, len};
  }
  return {Rand(size - len + 1), len};
}

bool StoreHarness::Succeeded(const Status& s, const char* what) {
  if (s.ok()) return true;
  last_error_ = s;
  if (expect_errors_) return false;
  INFO(what << ": " << s.ToString());
  REQUIRE(Cut());
  return false;
}

bool StoreHarness::Cut() const {
  return (cut_ && cut_->load()) || (counter_ && counter_->cut());
}

bool StoreHarness::WriteAt(uint64_t off, uint64_t len, bool fua) {
  const uint64_t tag = next_tag_++;
  std::vector<char> data(len);
  FillPattern(tag, off, len, data.data());
  model_.Write(off, data.data(), len,
               fmt::format("write tag {} [{}, +{}){}", tag, off, len, fua ? " fua" : ""));
  Status s = store_->Write(off, static_cast<uint32_t>(len), data.data(), fua);
  if (!Succeeded(s, "write")) return false;
  stats_.acked_writes++;
  if (fua) {
    model_.MarkDurable();
    stats_.acked_durable++;
  }
  return true;
}

bool StoreHarness::DoWrite(bool fua) {
  auto [off, len] = Range(512, 64 << 10);
  return WriteAt(off, len, fua);
}

bool StoreHarness::ZeroAt(uint64_t off, uint64_t len, bool trim, bool fua) {
  model_.Zero(off, len,
              fmt::format("{} [{}, +{}){}", trim ? "trim" : "zero", off, len, fua ? " fua" : ""));
  Status s = store_->Zero(off, len, fua, trim);
  if (!Succeeded(s, "zero")) return false;
  stats_.acked_writes++;
  if (fua) {
    model_.MarkDurable();
    stats_.acked_durable++;
  }
  return true;
}

bool StoreHarness::DoZero(bool trim, bool fua) {
  auto [off, len] = Range(1, 256 << 10);
  return ZeroAt(off, len, trim, fua);
}

bool StoreHarness::DoFlush() {
  const uint64_t pending = model_.ops() - model_.durable_ops();
  if (!Succeeded(store_->Flush(), "flush")) return false;
  model_.MarkDurable();
  stats_.acked_flushes++;
  stats_.acked_durable += pending;
  return true;
}

bool StoreHarness::DoCheckpoint(const std::string& given) {
  std::string name = given.empty() ? fmt::format("cp-{}", next_cp_++) : given;
  checkpoints_[name] = Cp{model_.ops(), false, Hash(model_.current()), false};
  CheckpointInfo info;
  if (!Succeeded(store_->Checkpoint(name, &info), "checkpoint")) return false;
  CHECK(info.name == name);
  checkpoints_[name].acked = true;
  stats_.acked_checkpoints++;
  return true;
}

bool StoreHarness::DoVmCheckpoint() {
  std::string name = fmt::format("vm-{}", next_cp_++);
  checkpoints_[name] = Cp{model_.ops(), false, Hash(model_.current()), false};
  CheckpointOptions o;
  o.name = name;
  o.kind = "vm";
  o.pending = true;
  CheckpointInfo info;
  if (!Succeeded(store_->Checkpoint(o, &info), "pending checkpoint")) return false;
  CHECK(info.pending);
  // Not visible until committed.
  std::vector<CheckpointInfo> visible;
  Status s = store_->ListCheckpoints(&visible);
  if (s.ok()) {
    for (const auto& c : visible) CHECK(c.name != name);
  }
  CheckpointInfo committed;
  if (!Succeeded(store_->CommitCheckpoint(info.id, &committed), "commit checkpoint")) return false;
  CHECK(committed.name == name);
  CHECK(committed.kind == "vm");
  CHECK_FALSE(committed.pending);
  checkpoints_[name].acked = true;
  stats_.acked_checkpoints++;
  return true;
}

bool StoreHarness::DoRollback(const std::string& checkpoint) {
  auto target = checkpoints_.find(checkpoint);
  REQUIRE(target != checkpoints_.end());
  PointInfo point;
  Status s = store_->ResolvePoint(checkpoint, &point);
  INFO("resolve " << checkpoint << ": " << s.ToString());
  REQUIRE(s.ok());
  // The content it goes back to, through a snapshot (reads: no I/O counted).
  std::vector<char> content(cfg_.size);
  {
    std::unique_ptr<Snapshot> snap;
    s = store_->OpenSnapshot(point, &snap);
    INFO("snapshot: " << s.ToString());
    REQUIRE(s.ok());
    for (uint64_t off = 0; off < cfg_.size;) {
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(1 << 20, cfg_.size - off));
      s = snap->Read(off, n, content.data() + off);
      REQUIRE(s.ok());
      off += n;
    }
  }
  REQUIRE(Hash(content) == target->second.hash);
  // The before-rollback checkpoint holds the disk as it is now; the
  // rollback itself is one operation: all of it or nothing survives (an
  // interrupted rollback is finished by the next Open once its marker is
  // durable, and nothing is rewritten before that).
  checkpoints_[kBeforeRollbackUnnamed] = Cp{model_.ops(), false, Hash(model_.current()), false};
  model_.Write(0, content.data(), cfg_.size, "rollback to " + checkpoint);
  RollbackResult result;
  s = store_->Rollback(point, RollbackOptions{}, &result);
  if (!Succeeded(s, "rollback")) return false;
  auto un = checkpoints_.find(kBeforeRollbackUnnamed);
  Cp before = un->second;
  checkpoints_.erase(un);
  before.acked = true;
  checkpoints_[result.before.name] = before;
  model_.MarkDurable();
  stats_.acked_durable++;
  stats_.acked_checkpoints++;
  return true;
}

void StoreHarness::DoReadCheck() {
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

void StoreHarness::CheckExtents(uint64_t off, uint64_t len, const char* content) {
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

void StoreHarness::DoExtentsCheck() {
  auto [off, len] = Range(1, 1 << 20);
  CheckExtents(off, len, model_.current().data() + off);
}

void StoreHarness::Run(int n) {
  last_error_ = Status();
  for (int i = 0; i < n && !Cut() && last_error_.ok(); i++) {
    const uint64_t r = Rand(100);
    if (r < 55) {
      DoWrite(Rand(8) == 0);
    } else if (r < 62) {
      DoFlush();
    } else if (r < 68) {
      DoZero(false, Rand(4) == 0);
    } else if (r < 74) {
      DoZero(true, Rand(4) == 0);
    } else if (r < 77) {
      DoCheckpoint();
    } else if (r < 78) {
      DoVmCheckpoint();
    } else if (r < 91) {
      DoReadCheck();
    } else if (r < 93) {
      DoExtentsCheck();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(Rand(3000)));
    }
  }
}

std::vector<std::string> StoreHarness::AckedCheckpoints() const {
  std::vector<std::string> out;
  for (const auto& [name, cp] : checkpoints_) {
    if (cp.acked) out.push_back(name);
  }
  return out;
}

std::shared_ptr<std::atomic<bool>> StoreHarness::ArmCutAt(const std::string& point, int hit) {
  auto fired = std::make_shared<std::atomic<bool>>(false);
  auto hits = std::make_shared<std::atomic<int>>(0);
  auto fs = fs_;
  auto images = images_;
  SetFaultHook([=](std::string_view name) {
    if (name == point && ++*hits == hit && !fired->exchange(true)) {
      images->SetActive(false);
      fs->SetActive(false);
    }
  });
  cut_ = fired;
  return fired;
}

void StoreHarness::Disarm() {
  SetFaultHook(nullptr);
  cut_.reset();
}

void StoreHarness::AttachCounter(std::shared_ptr<IoCounter> counter) {
  counter_ = counter;
  fs_->SetIoCounter(counter);
  images_->SetIoCounter(counter);
}

void StoreHarness::SaveBase() {
  REQUIRE(store_ == nullptr);
  namespace fs = std::filesystem;
  const std::string base_dir = tmp_ / "base";
  fs::remove_all(base_dir);
  fs::copy(dir_, base_dir, fs::copy_options::recursive);
  base_ = std::make_unique<Base>();
  base_->model = model_;
  base_->checkpoints = checkpoints_;
  base_->next_tag = next_tag_;
  base_->next_cp = next_cp_;
  auto img = images_->Only();
  REQUIRE(img != nullptr);
  REQUIRE(img->unsynced_ops() == 0);
  base_->images = std::make_shared<MemImageFactory>();
  base_->images->PutCopy(img->path(), *img);
  base_->image_path = img->path();
}

void StoreHarness::LoadBase() {
  REQUIRE(base_ != nullptr);
  REQUIRE(store_ == nullptr);
  namespace fs = std::filesystem;
  fs::remove_all(dir_);
  fs::copy(tmp_ / "base", dir_, fs::copy_options::recursive);
  fs_ = std::make_shared<FaultInjectionFS>();
  images_ = std::make_shared<MemImageFactory>();
  images_->PutCopy(base_->image_path, *base_->images->Get(base_->image_path));
  if (counter_) AttachCounter(counter_);
  model_ = base_->model;
  killed_ = false;
  checkpoints_ = base_->checkpoints;
  next_tag_ = base_->next_tag;
  next_cp_ = base_->next_cp;
}

}  // namespace rwd::test
