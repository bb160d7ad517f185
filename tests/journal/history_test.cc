// Tests of history: the POINT syntax (ParsePoint), looking points up in a
// store (ResolvePoint), read-only views of old points (OpenSnapshot) and
// restoring a point to a raw image (Restore).
//
// The main test is model-based: random writes (aligned, unaligned and
// multi-block, some FUA), zeros, trims, flushes and checkpoints are run
// against a store and a plain in-memory model of the disk, with a fake clock
// so every LSN's time is known.  Then every LSN from 0 to the newest is
// opened as a snapshot and compared byte for byte with the model as it was
// right after that LSN; every checkpoint and many time: and relative points
// must resolve to the right LSN; snapshots opened earlier must stay correct
// while the live disk keeps changing; restores must equal the model; and
// all of it again after the store is closed and reopened.
#include <catch2/catch.hpp>

#include "support/disk_model.h"
#include "support/proc_util.h"

#include <rewind/journal/store.h>

#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using rwd::CheckpointInfo;
using rwd::ParsedPoint;
using rwd::PointInfo;
using rwd::RestoreOptions;
using rwd::RestoreResult;
using rwd::Snapshot;
using rwd::Status;
using rwd::Store;
using rwd::StoreInfo;
using rwd::StoreOptions;
using rwd::test::TempDir;

namespace {

constexpr int64_t kSec = 1000000000;
constexpr int64_t kMs = 1000000;

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// Nanoseconds since the epoch of a UTC date and time.
int64_t Utc(int y, int mo, int d, int h, int mi, int s, int64_t ns = 0) {
  return ((DaysFromCivil(y, mo, d) * 24 + h) * 60 + mi) * 60 * kSec + s * kSec + ns;
}

// The stores' clock starts here: 2026-11-23T10:00:00Z.
const int64_t kBase = Utc(2026, 11, 23, 10, 0, 0);

// "time:..." for ns, written in a zone offset_min minutes east of UTC, with
// frac_digits fractional digits (0 only when ns is whole seconds there).
std::string TimePoint(int64_t ns, int offset_min = 0, int frac_digits = 9) {
  int64_t local = ns + static_cast<int64_t>(offset_min) * 60 * kSec;
  int64_t secs = local / kSec, frac = local % kSec;
  if (frac < 0) {
    frac += kSec;
    secs--;
  }
  time_t t = static_cast<time_t>(secs);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = std::string("time:") + buf;
  if (frac_digits > 0) {
    char f[16];
    std::snprintf(f, sizeof f, "%09lld", static_cast<long long>(frac));
    out += "." + std::string(f, static_cast<size_t>(frac_digits));
  }
  if (offset_min == 0) {
    out += "Z";
  } else {
    int a = std::abs(offset_min);
    char z[16];
    std::snprintf(z, sizeof z, "%c%02d:%02d", offset_min > 0 ? '+' : '-', a / 60, a % 60);
    out += z;
  }
  return out;
}

uint64_t Hash(const std::vector<char>& v) { return XXH3_64bits(v.data(), v.size()); }

// A clock the test moves by hand.
struct FakeClock {
  std::shared_ptr<std::atomic<int64_t>> now = std::make_shared<std::atomic<int64_t>>(kBase);
  std::function<int64_t()> fn() const {
    auto n = now;
    return [n] { return n->load(); };
  }
  int64_t get() const { return now->load(); }
  void set(int64_t v) { now->store(v); }
  void advance(int64_t d) { now->fetch_add(d); }
};

std::unique_ptr<Store> OpenStore(const StoreOptions& o) {
  std::unique_ptr<Store> s;
  Status st = Store::Open(o, &s);
  INFO("open " << o.dir << ": " << st.ToString());
  REQUIRE(st.ok());
  return s;
}

StoreInfo Info(Store& s) {
  StoreInfo info;
  Status st = s.GetInfo(&info);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return info;
}

PointInfo Resolve(Store& s, const std::string& text) {
  PointInfo p;
  Status st = s.ResolvePoint(text, &p);
  INFO("ResolvePoint(" << text << "): " << st.ToString());
  REQUIRE(st.ok());
  return p;
}

std::unique_ptr<Snapshot> OpenSnap(Store& s, const PointInfo& p) {
  std::unique_ptr<Snapshot> snap;
  Status st = s.OpenSnapshot(p, &snap);
  INFO("OpenSnapshot(" << p.text << ", lsn " << p.lsn << "): " << st.ToString());
  REQUIRE(st.ok());
  REQUIRE(snap != nullptr);
  return snap;
}

// Reads the whole snapshot: in one call, or in pieces of random (mostly
// unaligned) lengths when rng is given.
std::vector<char> ReadAll(Snapshot& snap, std::mt19937_64* rng = nullptr, uint32_t max_piece = 1 << 20) {
  std::vector<char> out(snap.size());
  uint64_t off = 0;
  while (off < out.size()) {
    uint64_t n = out.size() - off;
    if (rng) n = std::min<uint64_t>(n, 1 + (*rng)() % max_piece);
    n = std::min<uint64_t>(n, 1u << 30);
    Status st = snap.Read(off, static_cast<uint32_t>(n), out.data() + off);
    if (!st.ok()) FAIL("snapshot lsn " << snap.point().lsn << " read [" << off << ", +" << n << "): " << st.ToString());
    off += n;
  }
  return out;
}

std::vector<char> ReadFileBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// "" when equal, else where and how they first differ.
std::string Diff(const std::vector<char>& want, const std::vector<char>& got) {
  if (want.size() != got.size()) {
    return "size " + std::to_string(got.size()) + ", want " + std::to_string(want.size());
  }
  if (std::memcmp(want.data(), got.data(), want.size()) == 0) return "";
  uint64_t i = 0;
  while (want[i] == got[i]) i++;
  uint64_t last = want.size() - 1;
  while (want[last] == got[last]) last--;
  uint64_t differing = 0;
  for (uint64_t k = i; k <= last; k++) differing += want[k] != got[k];
  uint64_t sector = i / rwd::test::kSectorSize * rwd::test::kSectorSize;
  uint64_t n = std::min<uint64_t>(rwd::test::kSectorSize, want.size() - sector);
  return "first difference at byte " + std::to_string(i) + ", last at " + std::to_string(last) + " (" +
         std::to_string(differing) + " bytes differ); sector " + std::to_string(sector) + " holds [" +
         rwd::test::DescribeSector(got.data() + sector, sector, n) + "], want [" +
         rwd::test::DescribeSector(want.data() + sector, sector, n) + "]";
}

// Allocated bytes of a file.
uint64_t Allocated(const std::string& path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return static_cast<uint64_t>(st.st_size);
}

bool OneLine(const std::string& m) { return !m.empty() && m.find('\n') == std::string::npos; }

// ------------------------------------------------------------------ model

// A store driven by random operations next to a model of its disk and of
// its history: what every LSN holds and when it was written.
class Harness {
 public:
  Harness(const std::string& dir, uint64_t size, uint32_t block_size, uint64_t seed)
      : rng_(seed), size_(size), bs_(block_size), seed_(seed), live_(size, 0) {
    opts_.dir = dir;
    opts_.size = size;
    opts_.block_size = block_size;
    opts_.clock = clock_.fn();
    opts_.sync_interval_us = 2000;
    // Odd seeds restore in batches of three blocks, so that a restore lays
    // the redo records over several batches.
    opts_.restore_batch_bytes = seed % 2 == 1 ? 3 * block_size : 0;
    store_ = OpenStore(opts_);
    REQUIRE(Info(*store_).newest_lsn == 0);
    REQUIRE(Info(*store_).created_ns == kBase);
    ops_.emplace_back();  // LSN 0: creation
    times_.push_back(kBase);
    hashes_.push_back(Hash(live_));
  }

  Store& store() { return *store_; }
  std::mt19937_64& rng() { return rng_; }
  FakeClock& clock() { return clock_; }
  uint64_t size() const { return size_; }
  uint64_t newest() const { return times_.size() - 1; }
  const std::vector<char>& live() const { return live_; }
  struct Cp {
    std::string name;
    uint64_t id;
    uint64_t lsn;
    int64_t time_ns;  // when it was taken
  };
  const std::vector<Cp>& checkpoints() const { return cps_; }
  int64_t time_of(uint64_t lsn) const { return times_[lsn]; }
  bool known(uint64_t lsn) const { return lsn == 0 || ops_[lsn].has_value(); }
  uint64_t hash_of(uint64_t lsn) const { return hashes_[lsn]; }

  // The model disk right after lsn.
  std::vector<char> StateAt(uint64_t lsn) const {
    std::vector<char> d(size_, 0);
    for (uint64_t i = 1; i <= lsn; i++) Apply(i, &d);
    return d;
  }
  // Applies LSN i's operation to d (nothing for an intermediate chunk).
  void Apply(uint64_t i, std::vector<char>* d) const {
    if (!ops_[i]) return;
    const Op& op = *ops_[i];
    if (op.data.empty()) {
      std::memset(d->data() + op.offset, 0, op.length);
    } else {
      std::memcpy(d->data() + op.offset, op.data.data(), op.length);
    }
  }

  // Snapshot::changed_bytes of a point at lsn opened now: the bytes of the
  // blocks written after the newest checkpoint at or before lsn.
  uint64_t ChangedSinceCheckpoint(uint64_t lsn) const {
    uint64_t from = 0;
    for (const auto& cp : cps_) {
      if (cp.lsn <= lsn) from = std::max(from, cp.lsn);
    }
    std::vector<bool> changed((size_ + bs_ - 1) / bs_, false);
    for (uint64_t i = from + 1; i <= newest(); i++) {
      if (!ops_[i]) continue;
      for (uint64_t b = ops_[i]->offset / bs_; b <= (ops_[i]->offset + ops_[i]->length - 1) / bs_; b++) {
        changed[b] = true;
      }
    }
    uint64_t bytes = 0;
    for (uint64_t b = 0; b < changed.size(); b++) {
      if (changed[b]) bytes += std::min<uint64_t>(bs_, size_ - b * bs_);
    }
    return bytes;
  }

  // The LSN time:T / a relative point must name: the last write at or
  // before T, 0 when none (T >= creation); nullopt before creation.
  std::optional<uint64_t> LsnAtTime(int64_t t) const {
    if (t < times_[0]) return std::nullopt;
    uint64_t best = 0;
    for (uint64_t i = 1; i < times_.size(); i++) {
      if (times_[i] <= t) best = i;
    }
    return best;
  }

  // A random range: tiny unaligned, aligned whole blocks, unaligned
  // multi-block or sector-aligned.
  std::pair<uint64_t, uint64_t> RandomRange() {
    uint64_t off, len;
    switch (rng_() % 4) {
      case 0:
        len = 1 + rng_() % 700;
        break;
      case 1:
        len = bs_ * (1 + rng_() % 3);
        break;
      case 2:
        len = 1 + rng_() % (3 * bs_ + 1000);
        break;
      default:
        len = 512 * (1 + rng_() % (2 * bs_ / 512));
        break;
    }
    len = std::min(len, size_);
    off = rng_() % (size_ - len + 1);
    uint64_t kind = rng_() % 3;
    if (kind == 0 && len % bs_ == 0) off = off / bs_ * bs_;
    if (kind == 1) off = off / 512 * 512;
    return {off, len};
  }

  // Moves the clock: usually by 1 ms .. 3 s, sometimes not at all (ties).
  void Tick() {
    if (rng_() % 6 != 0) clock_.advance(kMs * static_cast<int64_t>(1 + rng_() % 3000));
  }

  void Write(uint64_t off, uint64_t len, bool fua) {
    std::vector<char> data(len);
    rwd::test::FillPattern(++tag_, off, len, data.data());
    Status st = store_->Write(off, static_cast<uint32_t>(len), data.data(), fua);
    INFO("write [" << off << ", +" << len << ") fua " << fua << ": " << st.ToString());
    REQUIRE(st.ok());
    std::memcpy(live_.data() + off, data.data(), len);
    uint64_t lsn = Info(*store_).newest_lsn;
    INFO("a write takes exactly one LSN: newest was " << newest() << ", now " << lsn);
    REQUIRE(lsn == newest() + 1);
    Record(lsn, Op{off, len, std::move(data)});
  }

  void Zero(uint64_t off, uint64_t len, bool trim) {
    Status st = store_->Zero(off, len, rng_() % 2 == 0, trim);
    INFO((trim ? "trim" : "zero") << " [" << off << ", +" << len << "): " << st.ToString());
    REQUIRE(st.ok());
    std::memset(live_.data() + off, 0, len);
    uint64_t lsn = Info(*store_).newest_lsn;
    INFO("newest was " << newest() << ", now " << lsn);
    REQUIRE(lsn > newest());
    Record(lsn, Op{off, len, {}});
  }

  void Checkpoint() {
    std::string name;
    switch (rng_() % 4) {
      case 0:
        break;  // auto-named
      case 1:
        name = "s" + std::to_string(seed_) + ".v" + std::to_string(cps_.size()) + "_x+y";
        break;
      default:
        name = "cp" + std::to_string(seed_) + "-" + std::to_string(cps_.size());
        break;
    }
    CheckpointInfo ci;
    Status st = store_->Checkpoint(name, &ci);
    INFO("checkpoint '" << name << "': " << st.ToString());
    REQUIRE(st.ok());
    REQUIRE(ci.lsn == newest());
    REQUIRE(ci.time_ns == clock_.get());
    REQUIRE(Info(*store_).newest_lsn == newest());  // a checkpoint consumes no LSN
    cps_.push_back(Cp{ci.name, ci.id, ci.lsn, ci.time_ns});
  }

  void Flush() {
    REQUIRE(store_->Flush().ok());
    REQUIRE(Info(*store_).newest_lsn == newest());
  }

  void RandomOp() {
    Tick();
    uint64_t r = rng_() % 100;
    if (r < 50) {
      auto [off, len] = RandomRange();
      Write(off, len, rng_() % 5 == 0);
    } else if (r < 70) {
      bool trim = r >= 60;
      if (rng_() % 15 == 0) {
        Zero(0, size_, trim);
      } else {
        auto [off, len] = RandomRange();
        Zero(off, len, trim);
      }
    } else if (r < 78) {
      Flush();
    } else if (r < 90) {
      Checkpoint();
    } else {  // the live disk agrees with the model
      auto [off, len] = RandomRange();
      std::vector<char> got(len);
      REQUIRE(store_->Read(off, static_cast<uint32_t>(len), got.data()).ok());
      REQUIRE(std::memcmp(got.data(), live_.data() + off, len) == 0);
    }
  }

  void Close() {
    REQUIRE(store_->Close().ok());
    store_.reset();
  }
  void Reopen() {
    StoreOptions o = opts_;
    o.size = 0;  // an existing store
    o.block_size = 0;
    store_ = OpenStore(o);
  }

 private:
  struct Op {
    uint64_t offset;
    uint64_t length;
    std::vector<char> data;  // empty: zeroes
  };
  // The operation became LSN lsn; LSNs before it and after the previous
  // newest are chunks of it whose state the model does not know.
  void Record(uint64_t lsn, Op op) {
    while (newest() + 1 < lsn) {
      ops_.emplace_back();
      times_.push_back(clock_.get());
      hashes_.push_back(0);
    }
    ops_.emplace_back(std::move(op));
    times_.push_back(clock_.get());
    hashes_.push_back(Hash(live_));
  }

  std::mt19937_64 rng_;
  const uint64_t size_;
  const uint32_t bs_;
  const uint64_t seed_;
  FakeClock clock_;
  StoreOptions opts_;
  std::unique_ptr<Store> store_;
  std::vector<char> live_;
  uint64_t tag_ = 0;
  std::vector<std::optional<Op>> ops_;  // by LSN; nullopt: LSN 0 or an intermediate chunk
  std::vector<int64_t> times_;          // by LSN; [0]: creation
  std::vector<uint64_t> hashes_;        // by LSN; model content hash
  std::vector<Cp> cps_;
};

// Every LSN 0..newest: resolves, opens, and reads exactly as the model.
void CheckEveryLsn(Harness& h, const std::string& when) {
  std::vector<char> model(h.size(), 0);
  std::mt19937_64 rng(h.newest() * 7 + 1);
  for (uint64_t lsn = 0; lsn <= h.newest(); lsn++) {
    if (lsn > 0) h.Apply(lsn, &model);
    std::string text = "lsn:" + std::to_string(lsn);
    PointInfo p = Resolve(h.store(), text);
    INFO(when << ": " << text);
    REQUIRE(p.lsn == lsn);
    CHECK(p.time_ns == h.time_of(lsn));
    CHECK(p.text == text);
    if (!h.known(lsn)) continue;  // an intermediate chunk of a zero
    auto snap = OpenSnap(h.store(), p);
    REQUIRE(snap->size() == h.size());
    REQUIRE(snap->point().lsn == lsn);
    std::vector<char> got = ReadAll(*snap, lsn % 3 == 0 ? &rng : nullptr, 3 * 65536);
    std::string d = Diff(model, got);
    if (!d.empty()) FAIL(when << ": snapshot of " << text << " (newest " << h.newest() << "): " << d);
  }
}

// Snapshot of p matches the model's hash at lsn.
void CheckSnapshotHash(Harness& h, Snapshot& snap, uint64_t lsn, const std::string& what) {
  std::vector<char> got = ReadAll(snap);
  if (Hash(got) != h.hash_of(lsn)) {
    FAIL(what << " (lsn " << lsn << "): " << Diff(h.StateAt(lsn), got));
  }
}

void CheckCheckpoints(Harness& h, const std::string& when) {
  uint64_t time_mismatches = 0;
  std::string time_example;
  for (const auto& cp : h.checkpoints()) {
    INFO(when << ": checkpoint " << cp.name);
    PointInfo p = Resolve(h.store(), cp.name);
    CHECK(p.lsn == cp.lsn);
    CHECK(p.checkpoint_id == cp.id);
    CHECK(p.checkpoint == cp.name);
    CHECK(p.text == cp.name);
    // PointInfo::time_ns of a checkpoint: when it was taken (reported once
    // per store below).
    if (p.time_ns != cp.time_ns) {
      if (time_mismatches++ == 0) {
        time_example = cp.name + " (lsn " + std::to_string(cp.lsn) + "): time_ns " + std::to_string(p.time_ns) +
                       ", taken at " + std::to_string(cp.time_ns);
      }
    }
    auto snap = OpenSnap(h.store(), p);
    CHECK(snap->point().checkpoint == cp.name);
    CheckSnapshotHash(h, *snap, cp.lsn, when + ": checkpoint " + cp.name);
  }
  INFO(when << ": " << time_mismatches << " of " << h.checkpoints().size()
            << " checkpoint points have another time_ns than when they were taken, e.g. " << time_example);
  CHECK(time_mismatches == 0);
}

// time: points at, just before and just after every LSN's time, in
// several notations, resolve to the last write at or before.
void CheckTimes(Harness& h, const std::string& when) {
  static const int kOffsets[] = {0, 120, -330, 0, 345};
  // Every instant asked about below is in the past of the store's clock.
  h.clock().advance(2 * 3600 * kSec);
  uint64_t n = 0;
  for (uint64_t lsn = 0; lsn <= h.newest(); lsn++) {
    for (int64_t delta : {int64_t{0}, -kMs, kMs, -kSec}) {
      int64_t t = h.time_of(lsn) + delta;
      int off = kOffsets[n++ % 5];
      int digits = (t % kSec == 0 && n % 2 == 0) ? 0 : (n % 3 == 0 ? 9 : 3);
      std::string text = TimePoint(t, off, digits);
      auto want = h.LsnAtTime(t);
      PointInfo p;
      Status st = h.store().ResolvePoint(text, &p);
      INFO(when << ": " << text << " -> " << st.ToString() << " lsn " << p.lsn);
      if (!want) {
        CHECK(st.code() == Status::Code::kNotFound);
        CHECK(OneLine(st.message()));
        continue;
      }
      REQUIRE(st.ok());
      CHECK(p.lsn == *want);
      CHECK(p.time_ns == h.time_of(*want));
      CHECK(p.text == text);
    }
  }
  // Long after the newest write: the newest.
  std::string late = TimePoint(h.time_of(h.newest()) + 3600 * kSec);
  CHECK(Resolve(h.store(), late).lsn == h.newest());
}

// Relative points against the store's clock.
void CheckRelative(Harness& h) {
  const int64_t saved = h.clock().get();
  struct R {
    const char* text;
    int64_t ago;
  };
  static const R kRel[] = {{"-10m", 600 * kSec}, {"-1h30m", 5400 * kSec}, {"-45s", 45 * kSec},
                           {"-2d", 2 * 86400 * kSec}, {"-1w", 7 * 86400 * kSec}, {"-1m1s", 61 * kSec}};
  std::mt19937_64 rng(h.newest());
  for (int i = 0; i < 12; i++) {
    const R& r = kRel[i % 6];
    uint64_t lsn = rng() % (h.newest() + 1);
    int64_t jitter = (i % 3 == 0) ? 0 : (i % 3 == 1 ? -kMs : kMs);
    int64_t t = h.time_of(lsn) + jitter;
    h.clock().set(t + r.ago);
    auto want = h.LsnAtTime(t);
    PointInfo p;
    Status st = h.store().ResolvePoint(r.text, &p);
    INFO(r.text << " with now " << TimePoint(t + r.ago) << " -> " << st.ToString() << " lsn " << p.lsn);
    if (!want) {
      CHECK(st.code() == Status::Code::kNotFound);
    } else {
      REQUIRE(st.ok());
      CHECK(p.lsn == *want);
      CHECK(p.text == r.text);
    }
  }
  // Before the store's creation.
  h.clock().set(kBase + 60 * kSec);
  PointInfo p;
  CHECK(h.store().ResolvePoint("-1h", &p).code() == Status::Code::kNotFound);
  h.clock().set(saved);
}

void CheckRestore(Harness& h, const std::string& dir, const PointInfo& p, const std::string& what) {
  std::string out = dir + "/restore-" + std::to_string(p.lsn) + ".raw";
  RestoreOptions ro;
  ro.output = out;
  ro.overwrite = true;
  RestoreResult rr;
  Status st = h.store().Restore(p, ro, &rr);
  INFO(what << ": restore of " << p.text << " (lsn " << p.lsn << ") to " << out << ": " << st.ToString());
  REQUIRE(st.ok());
  CHECK(rr.point.lsn == p.lsn);
  CHECK(rr.bytes == h.size());
  CHECK(rr.data_bytes <= h.size());
  CHECK(rr.changed_bytes <= h.size());
  CHECK(rr.seconds >= 0);
  CHECK(FileSize(out) == h.size());
  std::vector<char> got = ReadFileBytes(out);
  if (Hash(got) != h.hash_of(p.lsn)) FAIL(what << ": restored " << p.text << ": " << Diff(h.StateAt(p.lsn), got));
  fs::remove(out);
}

// The whole model-based scenario for one store geometry and seed.
void RunModel(uint64_t size, uint32_t block_size, uint64_t seed, int ops_a, int ops_b) {
  TempDir t("rwhist");
  Harness h(t / "store", size, block_size, seed);
  INFO("seed " << seed << ", size " << size << ", block size " << block_size);

  // Phase A.
  for (int i = 0; i < ops_a; i++) h.RandomOp();
  REQUIRE(h.newest() > 5);

  // Hold snapshots of a few points while the live disk keeps changing.
  struct Held {
    std::unique_ptr<Snapshot> snap;
    uint64_t lsn;
    std::string text;
  };
  std::vector<Held> held;
  std::vector<std::string> texts = {"lsn:0", "lsn:" + std::to_string(h.newest() / 2),
                                    "lsn:" + std::to_string(h.newest()),
                                    TimePoint(h.time_of(h.newest() / 3))};
  if (!h.checkpoints().empty()) texts.push_back(h.checkpoints().back().name);
  for (const auto& text : texts) {
    PointInfo p = Resolve(h.store(), text);
    if (!h.known(p.lsn)) continue;
    auto snap = OpenSnap(h.store(), p);
    INFO("held snapshot " << text);
    CheckSnapshotHash(h, *snap, p.lsn, "held snapshot " + text + " when opened");
    // changed_bytes: the blocks changed since the newest checkpoint at or
    // before the point, so at least every byte that differs from the live disk.
    std::vector<char> then = h.StateAt(p.lsn);
    uint64_t differ = 0;
    for (uint64_t i = 0; i < size; i++) differ += then[i] != h.live()[i];
    CHECK(snap->changed_bytes() >= differ);
    CHECK(snap->changed_bytes() <= size);
    CHECK(snap->changed_bytes() == h.ChangedSinceCheckpoint(p.lsn));
    held.push_back(Held{std::move(snap), p.lsn, text});
  }

  // Phase B: more writes and checkpoints; partial reads of the held
  // snapshots in between.
  for (int i = 0; i < ops_b; i++) {
    h.RandomOp();
    if (i % 10 == 0) {
      Held& x = held[i / 10 % held.size()];
      auto [off, len] = h.RandomRange();
      std::vector<char> got(len);
      REQUIRE(x.snap->Read(off, static_cast<uint32_t>(len), got.data()).ok());
      std::vector<char> want = h.StateAt(x.lsn);
      if (std::memcmp(got.data(), want.data() + off, len) != 0) {
        FAIL("held snapshot " << x.text << " read [" << off << ", +" << len << ") after " << i
                              << " more operations differs from the model");
      }
    }
  }
  for (auto& x : held) {
    INFO("held snapshot " << x.text << " after " << ops_b << " more operations");
    CHECK(x.snap->point().lsn == x.lsn);
    CHECK(x.snap->size() == size);
    CheckSnapshotHash(h, *x.snap, x.lsn, "held snapshot " + x.text + " after more writes");
  }
  held.clear();

  // Everything, now that the history is complete.
  CheckEveryLsn(h, "before reopen");
  CheckCheckpoints(h, "before reopen");
  CheckTimes(h, "before reopen");
  CheckRelative(h);
  {
    PointInfo p;
    Status st = h.store().ResolvePoint("lsn:" + std::to_string(h.newest() + 1), &p);
    CHECK(st.code() == Status::Code::kNotFound);
    CHECK(OneLine(st.message()));
  }

  // Restores of a few points.
  std::vector<PointInfo> rp = {Resolve(h.store(), "lsn:0"), Resolve(h.store(), "lsn:" + std::to_string(h.newest())),
                               Resolve(h.store(), "lsn:" + std::to_string(h.newest() * 2 / 3))};
  if (!h.checkpoints().empty()) rp.push_back(Resolve(h.store(), h.checkpoints().front().name));
  for (uint64_t lsn = 1; lsn < h.newest(); lsn += 1 + h.newest() / 7) {
    rp.push_back(Resolve(h.store(), "lsn:" + std::to_string(lsn)));
  }
  for (const auto& p : rp) {
    if (h.known(p.lsn)) CheckRestore(h, t.path(), p, "before reopen");
  }

  // Close and reopen: old points are still there.
  h.Close();
  h.Reopen();
  REQUIRE(Info(h.store()).newest_lsn == h.newest());
  CHECK(Resolve(h.store(), "lsn:0").time_ns == kBase);
  for (uint64_t lsn = 0; lsn <= h.newest(); lsn += 1 + lsn % 4) {
    if (!h.known(lsn)) continue;
    auto snap = OpenSnap(h.store(), Resolve(h.store(), "lsn:" + std::to_string(lsn)));
    CheckSnapshotHash(h, *snap, lsn, "after reopen");
  }
  CheckCheckpoints(h, "after reopen");
  CheckTimes(h, "after reopen");

  // History goes on after the reopen.
  const uint64_t before = h.newest();
  for (int i = 0; i < 30; i++) h.RandomOp();
  for (uint64_t lsn = before; lsn <= h.newest(); lsn++) {
    if (!h.known(lsn)) continue;
    auto snap = OpenSnap(h.store(), Resolve(h.store(), "lsn:" + std::to_string(lsn)));
    CheckSnapshotHash(h, *snap, lsn, "after reopen and more writes");
  }
  CheckCheckpoints(h, "after reopen and more writes");
  h.Close();
}

}  // namespace

// ---------------------------------------------------------------- ParsePoint

TEST_CASE("ParsePoint accepts checkpoint names, lsn:, time: and relative points", "[history]") {
  ParsedPoint pp;
  auto parse = [&](const std::string& text) {
    pp = ParsedPoint();
    Status st = rwd::ParsePoint(text, &pp);
    INFO("ParsePoint(" << text << "): " << st.ToString());
    REQUIRE(st.ok());
    return pp;
  };

  for (std::string name : {"before-upgrade", "cp-1", "a.b_c+d", "X", "9lives", "lsn", "time"}) {
    auto p = parse(name);
    CHECK(p.kind == ParsedPoint::Kind::kCheckpoint);
    CHECK(p.name == name);
  }

  auto p = parse("lsn:0");
  CHECK(p.kind == ParsedPoint::Kind::kLsn);
  CHECK(p.lsn == 0);
  CHECK(parse("lsn:42").lsn == 42);
  CHECK(parse("lsn:1234567890123").lsn == 1234567890123ull);
  {
    // The largest LSN is valid syntax; refusing it is tolerable, a wrong value is not.
    ParsedPoint big;
    Status st = rwd::ParsePoint("lsn:18446744073709551615", &big);
    INFO(st.ToString());
    CHECK((st.ok() ? big.lsn == UINT64_MAX : st.code() == Status::Code::kInvalidArgument));
  }

  const int64_t t = Utc(2026, 11, 23, 10, 15, 0);
  p = parse("time:2026-11-23T10:15:00Z");
  CHECK(p.kind == ParsedPoint::Kind::kTime);
  CHECK(p.time_ns == t);
  CHECK(parse("time:2026-11-23T10:15:00.5Z").time_ns == t + 500 * kMs);
  CHECK(parse("time:2026-11-23T10:15:00.123Z").time_ns == t + 123 * kMs);
  CHECK(parse("time:2026-11-23T10:15:00.123456789Z").time_ns == t + 123456789);
  CHECK(parse("time:2026-11-23T10:15:00.000001Z").time_ns == t + 1000);
  CHECK(parse("time:2026-11-23T12:15:00+02:00").time_ns == t);
  CHECK(parse("time:2026-11-23T05:45:00-04:30").time_ns == t);
  CHECK(parse("time:2026-11-23T10:15:00+00:00").time_ns == t);
  CHECK(parse("time:2026-11-23T11:15:00.25+01:00").time_ns == t + 250 * kMs);
  CHECK(parse("time:2026-11-24T00:15:00+14:00").time_ns == t);  // crosses a date
  CHECK(parse("time:2026-11-22T22:15:00-12:00").time_ns == t);
  CHECK(parse("time:2024-02-29T00:00:00Z").time_ns == Utc(2024, 2, 29, 0, 0, 0));
  CHECK(parse("time:2000-02-29T23:59:59Z").time_ns == Utc(2000, 2, 29, 23, 59, 59));
  CHECK(parse("time:1970-01-01T00:00:00Z").time_ns == 0);
  // The range is of the instant, not of its fields (found by fuzz/point_fuzz).
  CHECK(parse("time:1969-12-31T23:30-01:00").time_ns == 1800 * kSec);
  CHECK(parse("time:2262-01-01T05:00+06:00").time_ns == Utc(2261, 12, 31, 23, 0, 0));
  CHECK(parse("time:2026-12-31T23:59:59.999999999Z").time_ns == Utc(2027, 1, 1, 0, 0, 0) - 1);
  // The helper the model test uses produces what ParsePoint reads.
  CHECK(parse(TimePoint(t + 7 * kMs, -330, 3)).time_ns == t + 7 * kMs);

  p = parse("-10m");
  CHECK(p.kind == ParsedPoint::Kind::kRelative);
  CHECK(p.ago_ns == 600 * kSec);
  CHECK(parse("-1h30m").ago_ns == 5400 * kSec);
  CHECK(parse("-45s").ago_ns == 45 * kSec);
  CHECK(parse("-1s").ago_ns == kSec);
  CHECK(parse("-2h").ago_ns == 7200 * kSec);
  CHECK(parse("-3d").ago_ns == 3 * 86400 * kSec);
  CHECK(parse("-1w").ago_ns == 7 * 86400 * kSec);
  CHECK(parse("-1w2d3h4m5s").ago_ns == ((((7 + 2) * 24 + 3) * 60 + 4) * 60 + 5) * kSec);
  CHECK(parse("-90m").ago_ns == 5400 * kSec);
  CHECK(parse("-1d12h").ago_ns == 36 * 3600 * kSec);
}

TEST_CASE("ParsePoint refuses bad syntax with a one-line InvalidArgument", "[history]") {
  for (const std::string& text : std::vector<std::string>{
        "", " ", "lsn:", "lsn:-1", "lsn:12x", "lsn:x", "lsn: 5", "lsn:5 ", "lsn:+5", "lsn:0x10", "lsn:1.5",
        "lsn:18446744073709551616", "lsn:99999999999999999999999", "time:", "time:garbage",
        "time:2026-13-01T00:00:00Z", "time:2026-00-10T00:00:00Z", "time:2026-11-32T00:00:00Z",
        "time:2026-11-00T00:00:00Z", "time:2026-02-29T00:00:00Z", "time:2026-04-31T00:00:00Z",
        "time:2026-11-23T25:00:00Z", "time:2026-11-23T10:60:00Z", "time:2026-11-23T10:15:61Z",
        "time:2026-11-23T10:15:00Zjunk", "time:2026-11-23T10:15:00+25:00", "time:2026-11-23T10:15:00+02:60",
        "time:2026-11-23T10:15:00.Z", "time:-10m", "time:lsn:5",
        "time:2026-11-23T10:15:00ZZ", "-", "-10", "-10x", "-m", "--10m", "-10m5", "-1h-30m", "- 10m", "-10 m",
        "-h", "-1.5h", "-99999999999999999999w", "-9999999999999w",
        // Not representable as int64 nanoseconds since the epoch (beyond 2262-04-11).
        "time:2263-01-01T00:00:00Z", "time:9999-12-31T23:59:59Z",
        // Fields in range, instant not (found by fuzz/point_fuzz): before 1970
        // or after 2261 in UTC.
        "time:1970-01-01T00:00+01:00", "time:2261-12-31T23:59-23:59", "time:1969-12-31T23:59Z", "a/b", ".hidden", "x y", "cp\n1", "café",
        std::string(129, 'a'), "lsn:5:6"}) {
    ParsedPoint pp;
    Status st = rwd::ParsePoint(text, &pp);
    INFO("ParsePoint(\"" << text << "\") -> " << st.ToString());
    CHECK(st.code() == Status::Code::kInvalidArgument);
    if (!st.ok()) CHECK(OneLine(st.message()));
  }
}

// ------------------------------------------------------- ResolvePoint errors

TEST_CASE("ResolvePoint: unknown names, LSNs and times get clear errors", "[history]") {
  TempDir t("rwhist");
  FakeClock clock;
  StoreOptions o;
  o.dir = t / "store";
  o.size = 1 << 20;
  o.clock = clock.fn();
  auto s = OpenStore(o);
  PointInfo p;

  // A new store has one point: lsn:0, as created.
  p = Resolve(*s, "lsn:0");
  CHECK(p.lsn == 0);
  CHECK(p.time_ns == kBase);
  CHECK(p.checkpoint_id == 0);
  CHECK(p.checkpoint.empty());
  CHECK(Resolve(*s, TimePoint(kBase)).lsn == 0);
  clock.advance(20 * 60 * kSec);
  CHECK(Resolve(*s, TimePoint(kBase + kSec)).lsn == 0);
  CHECK(Resolve(*s, "-10m").lsn == 0);
  CHECK(s->ResolvePoint("-30m", &p).code() == Status::Code::kNotFound);

  std::vector<char> buf(4096, 'x');
  REQUIRE(s->Write(0, 4096, buf.data(), false).ok());
  clock.advance(kSec);
  REQUIRE(s->Write(4096, 4096, buf.data(), true).ok());
  CheckpointInfo ci;
  REQUIRE(s->Checkpoint("two", &ci).ok());
  CHECK(ci.lsn == 2);

  struct Bad {
    std::string text;
    Status::Code code;
  };
  std::vector<Bad> bad = {
      {"nosuch", Status::Code::kNotFound},
      {"Two", Status::Code::kNotFound},  // names are case-sensitive
      {"lsn:3", Status::Code::kNotFound},
      {"lsn:1000000", Status::Code::kNotFound},
      {TimePoint(kBase - 1), Status::Code::kNotFound},
      {TimePoint(kBase - kSec), Status::Code::kNotFound},
      {"time:1970-01-01T00:00:00Z", Status::Code::kNotFound},
      {"-1w", Status::Code::kNotFound},
      {"", Status::Code::kInvalidArgument},
      {"a/b", Status::Code::kInvalidArgument},
      {"lsn:", Status::Code::kInvalidArgument},
      {"lsn:-1", Status::Code::kInvalidArgument},
      {"lsn:2x", Status::Code::kInvalidArgument},
      {"time:garbage", Status::Code::kInvalidArgument},
      {"time:2026-13-01T00:00:00Z", Status::Code::kInvalidArgument},
      {"-", Status::Code::kInvalidArgument},
      {"-10", Status::Code::kInvalidArgument},
      {"-10x", Status::Code::kInvalidArgument},
  };
  for (const auto& b : bad) {
    Status st = s->ResolvePoint(b.text, &p);
    INFO("ResolvePoint(\"" << b.text << "\") -> " << st.ToString());
    CHECK(st.code() == b.code);
    CHECK(OneLine(st.message()));
  }

  // An instant after the store's clock: a valid time outside the history
  // held, so NotFound per the header (or the newest point); never
  // InvalidArgument, which is for bad syntax.
  for (int64_t ahead : {kMs, 3600 * kSec}) {
    const std::string text = TimePoint(clock.get() + ahead);
    Status st = s->ResolvePoint(text, &p);
    INFO("ResolvePoint(\"" << text << "\") with the store's clock at " << TimePoint(clock.get()) << " -> "
                          << st.ToString() << " lsn " << p.lsn);
    CHECK((st.ok() ? p.lsn == 2 : st.code() == Status::Code::kNotFound));
  }

  p = Resolve(*s, "two");
  CHECK(p.time_ns == ci.time_ns);
  CHECK(p.lsn == 2);
  CHECK(p.checkpoint == "two");
  CHECK(p.checkpoint_id == ci.id);
  CHECK(Resolve(*s, "lsn:2").lsn == 2);
  CHECK(Resolve(*s, "lsn:1").time_ns == kBase + 20 * 60 * kSec);
  CHECK(Resolve(*s, "lsn:2").time_ns == kBase + 20 * 60 * kSec + kSec);

  // Snapshots and restores of points that do not exist fail, and create nothing.
  PointInfo forged;
  forged.lsn = 99;
  forged.text = "lsn:99";
  std::unique_ptr<Snapshot> snap;
  Status st = s->OpenSnapshot(forged, &snap);
  INFO(st.ToString());
  CHECK_FALSE(st.ok());
  CHECK(OneLine(st.message()));
  fs::create_directories(t / "out");
  RestoreOptions ro;
  ro.output = t / "out/x.raw";
  RestoreResult rr;
  st = s->Restore(forged, ro, &rr);
  INFO(st.ToString());
  CHECK_FALSE(st.ok());
  CHECK(rwd::test::DirListing(t / "out").empty());

  // Reads beyond the end of a snapshot are refused, not served.
  snap = OpenSnap(*s, Resolve(*s, "lsn:1"));
  std::vector<char> rb(8192);
  CHECK_FALSE(snap->Read((1 << 20) - 4096, 8192, rb.data()).ok());
  CHECK_FALSE(snap->Read(1 << 20, 1, rb.data()).ok());
  CHECK_FALSE(snap->Read(UINT64_MAX - 10, 100, rb.data()).ok());
  snap.reset();
  REQUIRE(s->Close().ok());
}

// ------------------------------------------------------------ model tests

TEST_CASE("every LSN, checkpoint and time of a random history reads back exactly (4 KiB blocks)", "[history]") {
  for (uint64_t seed : {1, 2, 3}) {
    DYNAMIC_SECTION("seed " << seed) { RunModel(1 << 20, 4096, seed, 110, 90); }
  }
}

TEST_CASE("every LSN of a random history reads back exactly (64 KiB blocks, unaligned writes)", "[history]") {
  for (uint64_t seed : {11, 12}) {
    DYNAMIC_SECTION("seed " << seed) { RunModel(2 << 20, 65536, seed, 110, 90); }
  }
}

TEST_CASE("every LSN of a random history reads back exactly (disk size not a multiple of the block)", "[history]") {
  RunModel((1 << 20) + 3 * 512, 4096, 21, 100, 80);
}

// ------------------------------------------------------- zero in chunks

TEST_CASE("a zero split into several LSNs: both ends are exact, the middle is a mix", "[history]") {
  TempDir t("rwhist");
  FakeClock clock;
  StoreOptions o;
  o.dir = t / "store";
  o.size = 40ull << 20;
  o.clock = clock.fn();
  auto s = OpenStore(o);
  std::vector<char> model(o.size, 0);
  uint64_t tag = 100;
  for (uint64_t off : {(16ull << 20) - 8192, 1ull << 20, (33ull << 20) + 100, (39ull << 20) + 4000}) {
    clock.advance(kSec);
    std::vector<char> d(20000);
    rwd::test::FillPattern(++tag, off, d.size(), d.data());
    REQUIRE(s->Write(off, d.size(), d.data(), false).ok());
    std::memcpy(model.data() + off, d.data(), d.size());
  }
  const uint64_t before_lsn = Info(*s).newest_lsn;
  REQUIRE(before_lsn == 4);
  std::vector<char> before = model;
  clock.advance(kSec);
  const int64_t zero_time = clock.get();
  REQUIRE(s->Zero(1000, 38ull << 20, false, true).ok());
  std::memset(model.data() + 1000, 0, 38ull << 20);
  const uint64_t after_lsn = Info(*s).newest_lsn;
  INFO("the zero took LSNs " << before_lsn + 1 << ".." << after_lsn);
  REQUIRE(after_lsn > before_lsn);

  auto snap = OpenSnap(*s, Resolve(*s, "lsn:" + std::to_string(before_lsn)));
  std::string d = Diff(before, ReadAll(*snap));
  if (!d.empty()) FAIL("before the zero: " << d);
  snap = OpenSnap(*s, Resolve(*s, "lsn:" + std::to_string(after_lsn)));
  d = Diff(model, ReadAll(*snap));
  if (!d.empty()) FAIL("after the zero: " << d);
  for (uint64_t lsn = before_lsn + 1; lsn < after_lsn; lsn++) {
    snap = OpenSnap(*s, Resolve(*s, "lsn:" + std::to_string(lsn)));
    std::vector<char> got = ReadAll(*snap);
    for (uint64_t i = 0; i < got.size(); i++) {
      if (got[i] != before[i] && got[i] != 0) FAIL("lsn " << lsn << " byte " << i << " is neither before nor zero");
    }
  }
  // A time: point names the last write at or before it: the whole zero.
  PointInfo p = Resolve(*s, TimePoint(zero_time));
  CHECK(p.lsn == after_lsn);
  p = Resolve(*s, TimePoint(zero_time - 1));
  CHECK(p.lsn == before_lsn);
  snap.reset();

  // A sparse restore of the point before the zero.
  RestoreOptions ro;
  ro.output = t / "before.raw";
  RestoreResult rr;
  Status st = s->Restore(Resolve(*s, "lsn:" + std::to_string(before_lsn)), ro, &rr);
  INFO(st.ToString());
  REQUIRE(st.ok());
  d = Diff(before, ReadFileBytes(ro.output));
  if (!d.empty()) FAIL("restore before the zero: " << d);
  CHECK(Allocated(ro.output) < (4ull << 20));
  CHECK(rr.data_bytes < (4ull << 20));
  CHECK(rr.data_bytes >= 4 * 20000 - 2 * 4096);
  REQUIRE(s->Close().ok());
}

// ---------------------------------------------------------------- Restore

TEST_CASE("Restore writes a sparse image of the point and never leaves a partial file", "[history]") {
  TempDir t("rwhist");
  FakeClock clock;
  StoreOptions o;
  o.dir = t / "store";
  o.size = 8 << 20;
  o.clock = clock.fn();
  auto s = OpenStore(o);
  const std::string out_dir = t / "out";
  fs::create_directories(out_dir);

  std::vector<char> one(o.size, 0), two(o.size, 0);
  const uint64_t off = (3 << 20) + 4096;
  rwd::test::FillPattern(1, off, 4096, one.data() + off);
  clock.advance(kSec);
  REQUIRE(s->Write(off, 4096, one.data() + off, false).ok());
  CheckpointInfo ci;
  REQUIRE(s->Checkpoint("one", &ci).ok());
  two = one;
  rwd::test::FillPattern(2, off + 1000, 100, two.data() + off + 1000);
  clock.advance(kSec);
  REQUIRE(s->Write(off + 1000, 100, two.data() + off + 1000, true).ok());
  REQUIRE(Info(*s).newest_lsn == 2);

  auto restore = [&](const std::string& point, const std::string& name, bool overwrite, RestoreResult* rr,
                     std::vector<std::pair<uint64_t, uint64_t>>* progress = nullptr) {
    RestoreOptions ro;
    ro.output = out_dir + "/" + name;
    ro.overwrite = overwrite;
    if (progress) {
      ro.progress = [progress](uint64_t done, uint64_t total) {
        progress->emplace_back(done, total);
        return true;
      };
    }
    return s->Restore(Resolve(*s, point), ro, rr);
  };

  SECTION("content, size, sparseness and result fields") {
    RestoreResult rr;
    std::vector<std::pair<uint64_t, uint64_t>> progress;
    Status st = restore("lsn:1", "one.raw", false, &rr, &progress);
    INFO(st.ToString());
    REQUIRE(st.ok());
    const std::string path = out_dir + "/one.raw";
    CHECK(FileSize(path) == o.size);
    std::string d = Diff(one, ReadFileBytes(path));
    if (!d.empty()) FAIL("restore of lsn:1: " << d);
    INFO("allocated " << Allocated(path) << ", data_bytes " << rr.data_bytes);
    CHECK(Allocated(path) < (1 << 20));
    CHECK(rr.point.lsn == 1);
    CHECK(rr.point.time_ns == kBase + kSec);
    CHECK(rr.bytes == o.size);
    CHECK(rr.data_bytes >= 4096);
    CHECK(rr.data_bytes < (1 << 20));
    CHECK(rr.changed_bytes > 0);  // the block was overwritten after lsn 1
    CHECK(rr.changed_bytes < (1 << 20));
    CHECK(rr.seconds >= 0);
    CHECK(rr.seconds < 60);
    REQUIRE_FALSE(progress.empty());
    for (size_t i = 0; i < progress.size(); i++) {
      CHECK(progress[i].first <= progress[i].second);
      if (i > 0) CHECK(progress[i].first >= progress[i - 1].first);
    }
    CHECK(progress.back().first == progress.back().second);

    // The checkpoint names the same point.
    st = restore("one", "cp.raw", false, &rr);
    REQUIRE(st.ok());
    CHECK(rr.point.checkpoint == "one");
    CHECK(rr.point.checkpoint_id == ci.id);
    CHECK(Diff(one, ReadFileBytes(out_dir + "/cp.raw")).empty());

    // The newest point comes from the live disk.
    st = restore("lsn:2", "two.raw", false, &rr);
    REQUIRE(st.ok());
    CHECK(Diff(two, ReadFileBytes(out_dir + "/two.raw")).empty());
    CHECK(rr.changed_bytes <= 4096);
    CHECK(Allocated(out_dir + "/two.raw") < (1 << 20));

    // As created: all holes.
    st = restore("lsn:0", "zero.raw", false, &rr);
    REQUIRE(st.ok());
    CHECK(FileSize(out_dir + "/zero.raw") == o.size);
    CHECK(Diff(std::vector<char>(o.size, 0), ReadFileBytes(out_dir + "/zero.raw")).empty());
    INFO("lsn:0 allocated " << Allocated(out_dir + "/zero.raw") << ", data_bytes " << rr.data_bytes);
    CHECK(Allocated(out_dir + "/zero.raw") < (64 << 10));
    CHECK(rr.data_bytes < (64 << 10));

    // Nothing else in the output directory.
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(out_dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"cp.raw", "one.raw", "two.raw", "zero.raw"});
  }

  SECTION("an existing file is kept without overwrite and replaced with it") {
    const std::string path = out_dir + "/existing.raw";
    rwd::test::WriteFile(path, std::string(9 << 20, 'q'));
    const std::string listing = rwd::test::DirListing(out_dir);
    RestoreResult rr;
    Status st = restore("lsn:1", "existing.raw", false, &rr);
    INFO(st.ToString());
    CHECK_FALSE(st.ok());
    CHECK(OneLine(st.message()));
    CHECK(rwd::test::DirListing(out_dir) == listing);  // untouched, no temporary left
    CHECK(rwd::test::ReadFile(path) == std::string(9 << 20, 'q'));

    st = restore("lsn:1", "existing.raw", true, &rr);
    INFO(st.ToString());
    REQUIRE(st.ok());
    CHECK(FileSize(path) == o.size);
    CHECK(Diff(one, ReadFileBytes(path)).empty());
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(out_dir)) names.push_back(e.path().filename().string());
    CHECK(names == std::vector<std::string>{"existing.raw"});
  }

  SECTION("a missing directory fails and creates nothing") {
    RestoreResult rr;
    Status st = restore("lsn:1", "nope/deeper/x.raw", true, &rr);
    INFO(st.ToString());
    CHECK_FALSE(st.ok());
    CHECK(OneLine(st.message()));
    CHECK_FALSE(fs::exists(out_dir + "/nope"));
    CHECK(rwd::test::DirListing(out_dir) == "");
    // A parent that is a file.
    rwd::test::WriteFile(out_dir + "/file", "x");
    st = restore("lsn:1", "file/x.raw", true, &rr);
    CHECK_FALSE(st.ok());
    CHECK(rwd::test::ReadFile(out_dir + "/file") == "x");
  }

  SECTION("a restore cancelled by its progress callback fails with Aborted and leaves nothing") {
    for (int cancel_at : {1, 2}) {
      int calls = 0;
      RestoreOptions ro;
      ro.output = out_dir + "/cancelled.raw";
      ro.progress = [&calls, cancel_at](uint64_t, uint64_t) { return ++calls < cancel_at; };
      RestoreResult rr;
      Status st = s->Restore(Resolve(*s, "lsn:1"), ro, &rr);
      INFO("cancelled at call " << cancel_at << " (" << calls << " calls): " << st.ToString());
      if (calls < cancel_at) {
        CHECK(st.ok());  // finished before the callback asked to stop
      } else {
        CHECK(st.code() == Status::Code::kAborted);
        CHECK(OneLine(st.message()));
        CHECK(calls == cancel_at);  // no further calls once cancelled
      }
      if (!st.ok()) CHECK(rwd::test::DirListing(out_dir) == "");
      fs::remove(ro.output);
    }
  }

  SECTION("an output that is a directory fails and leaves no temporary file") {
    fs::create_directories(out_dir + "/adir");
    rwd::test::WriteFile(out_dir + "/adir/keep", "keep");
    const std::string listing = rwd::test::DirListing(out_dir);
    for (bool overwrite : {false, true}) {
      RestoreResult rr;
      Status st = restore("lsn:1", "adir", overwrite, &rr);
      INFO("overwrite " << overwrite << ": " << st.ToString());
      CHECK_FALSE(st.ok());
      CHECK(OneLine(st.message()));
      CHECK(rwd::test::DirListing(out_dir) == listing);
      CHECK(rwd::test::ReadFile(out_dir + "/adir/keep") == "keep");
    }
  }
  REQUIRE(s->Close().ok());
}

TEST_CASE("an adopted image is the first point of history", "[history]") {
  TempDir t("rwhist");
  const std::string image = t / "disk.raw";
  std::vector<char> orig(1 << 20);
  rwd::test::FillPattern(77, 0, orig.size(), orig.data());
  std::memset(orig.data() + (256 << 10), 0, 256 << 10);
  rwd::test::WriteFile(image, std::string(orig.data(), orig.size()));
  FakeClock clock;
  StoreOptions o;
  o.dir = t / "store";
  o.image = image;
  o.clock = clock.fn();
  auto s = OpenStore(o);
  std::vector<char> buf(10000, 'z');
  clock.advance(kSec);
  REQUIRE(s->Write(5000, buf.size(), buf.data(), false).ok());
  REQUIRE(s->Zero(0, 1 << 20, false, true).ok());
  auto snap = OpenSnap(*s, Resolve(*s, "lsn:0"));
  std::string d = Diff(orig, ReadAll(*snap));
  if (!d.empty()) FAIL("lsn:0 of an adopted image: " << d);
  snap.reset();
  RestoreOptions ro;
  ro.output = t / "restored.raw";
  RestoreResult rr;
  Status st = s->Restore(Resolve(*s, "lsn:0"), ro, &rr);
  INFO(st.ToString());
  REQUIRE(st.ok());
  d = Diff(orig, ReadFileBytes(ro.output));
  if (!d.empty()) FAIL("restore of lsn:0 of an adopted image: " << d);
  REQUIRE(s->Close().ok());
}

// ------------------------------------------------------------ concurrency

TEST_CASE("snapshots and restores stay exact while another thread writes the live disk", "[history]") {
  TempDir t("rwhist");
  StoreOptions o;
  o.dir = t / "store";
  o.size = 4 << 20;
  auto s = OpenStore(o);
  std::vector<char> model(o.size, 0);
  std::mt19937_64 rng(99);
  uint64_t tag = 0;
  auto random_write = [&](Store& st, std::vector<char>& m, std::mt19937_64& r, uint64_t& tg) {
    uint64_t len = 1 + r() % 70000;
    uint64_t off = r() % (m.size() - len + 1);
    std::vector<char> d(len);
    rwd::test::FillPattern(++tg, off, len, d.data());
    Status w = st.Write(off, static_cast<uint32_t>(len), d.data(), r() % 8 == 0);
    if (!w.ok()) return w;
    std::memcpy(m.data() + off, d.data(), len);
    return Status::Ok();
  };
  for (int i = 0; i < 120; i++) REQUIRE(random_write(*s, model, rng, tag).ok());
  CheckpointInfo base;
  REQUIRE(s->Checkpoint("base", &base).ok());
  const std::vector<char> at_base = model;
  auto snap = OpenSnap(*s, Resolve(*s, "base"));

  // The writer: its own model, and the content at each of its checkpoints.
  std::atomic<bool> done{false};
  std::string writer_error;
  std::map<std::string, uint64_t> cp_hashes;
  std::thread writer([&] {
    std::mt19937_64 r(5);
    uint64_t tg = 100000;
    for (int i = 0; i < 600; i++) {
      Status w = random_write(*s, model, r, tg);
      if (w.ok() && i % 50 == 49) {
        CheckpointInfo ci;
        w = s->Checkpoint("", &ci);
        if (w.ok()) cp_hashes[ci.name] = Hash(model);
      }
      if (!w.ok()) {
        writer_error = w.ToString();
        break;
      }
    }
    done = true;
  });
  int passes = 0;
  std::mt19937_64 rr_rng(7);
  while (!done || passes < 2) {
    std::vector<char> got = ReadAll(*snap, passes % 2 ? &rr_rng : nullptr, 200000);
    std::string d = Diff(at_base, got);
    if (!d.empty()) {
      done = true;
      writer.join();
      FAIL("snapshot 'base' read during live writes (pass " << passes << "): " << d);
    }
    if (passes % 3 == 1) {
      RestoreOptions ro;
      ro.output = t / "base.raw";
      ro.overwrite = true;
      RestoreResult res;
      Status st = s->Restore(Resolve(*s, "base"), ro, &res);
      if (!st.ok() || !Diff(at_base, ReadFileBytes(ro.output)).empty()) {
        done = true;
        writer.join();
        FAIL("restore of 'base' during live writes: " << st.ToString() << " "
                                                      << Diff(at_base, ReadFileBytes(ro.output)));
      }
    }
    passes++;
  }
  writer.join();
  INFO("passes " << passes);
  REQUIRE(writer_error.empty());
  CHECK(Diff(at_base, ReadAll(*snap)).empty());
  snap.reset();
  REQUIRE(cp_hashes.size() == 12);
  for (const auto& [name, hash] : cp_hashes) {
    auto cs = OpenSnap(*s, Resolve(*s, name));
    INFO("writer's checkpoint " << name);
    CHECK(Hash(ReadAll(*cs)) == hash);
  }
  REQUIRE(s->Close().ok());
}

TEST_CASE("time points resolve while other threads write", "[history]") {
  // The real clock: the writers' records get real times.  A time point near
  // now must resolve (to a committed write) even while writes are being
  // sequenced and committed around the lookup.
  TempDir t("rwhist");
  StoreOptions o;
  o.dir = t / "store";
  o.size = 4 << 20;
  auto s = OpenStore(o);
  std::vector<char> buf(4096, 'w');
  REQUIRE(s->Write(0, 4096, buf.data(), false).ok());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};
  std::mutex error_mu;
  std::string writer_error;
  std::vector<std::thread> ws;
  for (int wn = 0; wn < 2; wn++) {
    ws.emplace_back([&, wn] {
      for (uint64_t i = 1 + wn * 300; !stop; i++) {
        Status w = s->Write((i % 1024) * 4096, 4096, buf.data(), i % 64 == 0);
        if (!w.ok()) {
          std::lock_guard<std::mutex> l(error_mu);
          writer_error = w.ToString();
          return;
        }
        writes++;
      }
    });
  }
  std::vector<std::string> errors;
  uint64_t queries = 0, last_lsn = 0, went_back = 0;
  const double deadline = rwd::test::NowSeconds() + 1.0;
  while (rwd::test::NowSeconds() < deadline || queries < 200) {
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    for (const std::string& text : {TimePoint(now), TimePoint(now - kMs), TimePoint(now - 10 * kMs)}) {
      PointInfo p;
      Status st = s->ResolvePoint(text, &p);
      queries++;
      if (!st.ok()) {
        if (errors.size() < 5) errors.push_back(text + ": " + st.ToString());
        continue;
      }
      if (text == TimePoint(now)) {
        went_back += p.lsn < last_lsn;
        last_lsn = p.lsn;
        if (queries % 16 == 0) {
          std::unique_ptr<Snapshot> snap;
          Status so = s->OpenSnapshot(p, &snap);
          if (!so.ok() && errors.size() < 5) errors.push_back("OpenSnapshot " + text + ": " + so.ToString());
        }
      }
    }
  }
  stop = true;
  for (auto& w : ws) w.join();
  std::string first_errors;
  for (const auto& e : errors) first_errors += "\n  " + e;
  INFO(queries << " queries during " << writes.load() << " writes; first errors:" << first_errors);
  REQUIRE(writer_error.empty());
  CHECK(errors.empty());
  CHECK(went_back == 0);  // later instants never name earlier points
  REQUIRE(s->Close().ok());
}

TEST_CASE("a PointInfo whose checkpoint does not match the store is never served wrong", "[history]") {
  // OpenSnapshot and Restore take a PointInfo, a plain struct a caller may
  // keep (or build) after the store changed.  They must refuse one whose
  // checkpoint_id names no checkpoint, or another checkpoint than the one
  // at its LSN, or serve the disk at its LSN -- never another point.
  TempDir t("rwhist");
  FakeClock clock;
  StoreOptions o;
  o.dir = t / "store";
  o.size = 1 << 20;
  o.clock = clock.fn();
  auto s = OpenStore(o);
  std::vector<std::vector<char>> at(4, std::vector<char>(o.size, 0));  // model at LSN 0..3
  CheckpointInfo c1, c2;
  for (uint64_t lsn = 1; lsn <= 3; lsn++) {
    clock.advance(kSec);
    at[lsn] = at[lsn - 1];
    rwd::test::FillPattern(lsn, 0, 8192, at[lsn].data());
    REQUIRE(s->Write(0, 8192, at[lsn].data(), false).ok());
    if (lsn == 1) REQUIRE(s->Checkpoint("c1", &c1).ok());
    if (lsn == 2) REQUIRE(s->Checkpoint("c2", &c2).ok());
  }
  struct Case {
    const char* what;
    PointInfo p;
  };
  std::vector<Case> cases;
  {
    PointInfo p = Resolve(*s, "lsn:1");
    p.checkpoint_id = 999;
    p.checkpoint = "gone";
    cases.push_back({"lsn 1 with checkpoint_id 999 (no such checkpoint)", p});
    p = Resolve(*s, "lsn:1");
    p.checkpoint_id = c2.id;
    p.checkpoint = "c2";
    cases.push_back({"lsn 1 with the id of c2 (a checkpoint at lsn 2)", p});
    p = Resolve(*s, "c1");
    p.lsn = 0;
    cases.push_back({"c1's PointInfo with lsn 0", p});
  }
  for (const auto& c : cases) {
    std::unique_ptr<Snapshot> snap;
    Status st = s->OpenSnapshot(c.p, &snap);
    INFO(c.what << ": OpenSnapshot -> " << st.ToString());
    if (st.ok()) {
      std::string d = Diff(at[c.p.lsn], ReadAll(*snap));
      if (!d.empty()) {
        std::string which = "another point";
        for (uint64_t k = 0; k < 4; k++) {
          if (Diff(at[k], ReadAll(*snap)).empty()) which = "the disk at lsn " + std::to_string(k);
        }
        FAIL_CHECK(c.what << ": the snapshot serves " << which << ", not lsn " << c.p.lsn << ": " << d);
      }
    }
    snap.reset();
    RestoreOptions ro;
    ro.output = t / "forged.raw";
    ro.overwrite = true;
    RestoreResult rr;
    st = s->Restore(c.p, ro, &rr);
    INFO(c.what << ": Restore -> " << st.ToString());
    if (st.ok()) CHECK(Diff(at[c.p.lsn], ReadFileBytes(ro.output)).empty());
    fs::remove(ro.output);
  }
  REQUIRE(s->Close().ok());
}

TEST_CASE("restore refuses to write into the store or over the live image", "[history]") {
  rwd::test::TempDir t("rwhist");
  rwd::StoreOptions o;
  o.dir = t / "store";
  o.size = 1 << 20;
  std::unique_ptr<rwd::Store> s;
  REQUIRE(rwd::Store::Open(o, &s).ok());
  std::vector<char> a(4096, 'A');
  REQUIRE(s->Write(0, 4096, a.data(), true).ok());
  rwd::PointInfo p;
  REQUIRE(s->ResolvePoint("lsn:0", &p).ok());
  for (const std::string& out : {t / "store/image.raw", t / "store/other.raw",
                                t / "store/journal/x.raw"}) {
    rwd::RestoreOptions ro;
    ro.output = out;
    ro.overwrite = true;
    rwd::RestoreResult rr;
    rwd::Status st = s->Restore(p, ro, &rr);
    INFO(out << ": " << st.ToString());
    CHECK(st.code() == rwd::Status::Code::kInvalidArgument);
  }
  // Through a symlink to the store's directory, too.
  std::filesystem::create_directory_symlink(t / "store", t / "link");
  rwd::RestoreOptions ro;
  ro.output = t / "link/image.raw";
  ro.overwrite = true;
  rwd::RestoreResult rr;
  CHECK(s->Restore(p, ro, &rr).code() == rwd::Status::Code::kInvalidArgument);
  // The live disk is untouched.
  std::vector<char> got(4096);
  REQUIRE(s->Read(0, 4096, got.data()).ok());
  CHECK(got == a);
  REQUIRE(s->Close().ok());
  REQUIRE(rwd::Store::Open(o, &s).ok());
  REQUIRE(s->Read(0, 4096, got.data()).ok());
  CHECK(got == a);
  REQUIRE(s->Close().ok());
}
