// Tests of Store::Rollback: putting the live disk back to a point of its
// history, in place, through the journal.
//
// A Rig drives a store with random writes, zeros, trims, flushes and
// checkpoints next to a model of its whole history: the disk's content
// after every LSN.  A rollback's own writes are LSNs too; the model learns
// them by reading their snapshots, each of which must hold, in every
// block, either the content from before the rollback or the target's (never
// a torn block, never anything else), ending with the target exactly.
//
//  * Basic: rollbacks to a checkpoint, to lsn:N and to time:... put the
//    live disk at the model's content of that point byte for byte; the
//    result reports the before-rollback checkpoint and the bytes examined
//    and rewritten; every point of history, from before and after, still
//    reads back (snapshots) and restores exactly; the disk works normally
//    afterwards; all of it again after a reopen.
//  * Undo: a rollback to the before-rollback checkpoint puts the disk back
//    as it was; rollbacks of rollbacks of rollbacks.
//  * Crash: a child process (fork + exec of this binary, running the hidden
//    test case below) rolls back and is killed with SIGKILL at each rollback
//    fault point (also inside the resume at open); the parent reopens and
//    must find the target exactly (or, before the marker, the disk as it
//    was), the before-rollback checkpoint, and nothing left to do.
//  * Power cut: FaultInjectionFS and MemImage lose everything unsynced at a
//    rollback fault point: the reopened disk is the pre-rollback state or
//    the whole target, never a mix, and nothing acknowledged is lost.
//  * Errors: a point beyond the newest LSN; a progress callback that
//    answers false (a rollback cannot be cancelled half way).
#include <catch2/catch.hpp>

#include "support/disk_model.h"
#include "support/fault_fs.h"
#include "support/mem_image.h"
#include "support/proc_util.h"

#include <rewind/journal/fault_point.h>
#include <rewind/journal/store.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

extern char** environ;

using rwd::CheckpointInfo;
using rwd::PointInfo;
using rwd::RollbackOptions;
using rwd::RollbackResult;
using rwd::Snapshot;
using rwd::Status;
using rwd::Store;
using rwd::StoreInfo;
using rwd::StoreOptions;
using rwd::test::FaultInjectionFS;
using rwd::test::MemImageFactory;
using rwd::test::TempDir;

namespace {

constexpr int64_t kSec = 1000000000;
constexpr int64_t kMs = 1000000;
constexpr const char* kBeforePrefix = "before-rollback-";

// 2026-11-23T10:00:00Z, the fake clocks' start.
int64_t BaseTime() {
  std::tm tm{};
  tm.tm_year = 2026 - 1900;
  tm.tm_mon = 10;
  tm.tm_mday = 23;
  tm.tm_hour = 10;
  return static_cast<int64_t>(timegm(&tm)) * kSec;
}

std::tm Gm(int64_t ns) {
  time_t t = static_cast<time_t>(ns / kSec);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return tm;
}

// The name a rollback at ns gives its checkpoint, before any suffix.
std::string BeforeName(int64_t ns) {
  std::tm tm = Gm(ns);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%04d%02d%02dT%02d%02d%02dZ", kBeforePrefix, tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

// "time:YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ"
std::string TimeText(int64_t ns) {
  std::tm tm = Gm(ns);
  char buf[80];
  std::snprintf(buf, sizeof buf, "time:%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(ns % kSec));
  return buf;
}

// Whether name is before-rollback-YYYYmmddTHHMMSSZ, optionally with -N.
bool LooksLikeBeforeName(const std::string& name) {
  if (name.rfind(kBeforePrefix, 0) != 0) return false;
  std::string rest = name.substr(std::strlen(kBeforePrefix));
  if (rest.size() < 16) return false;
  for (size_t i = 0; i < 16; i++) {
    const char c = rest[i];
    if (i == 8 && c != 'T') return false;
    if (i == 15 && c != 'Z') return false;
    if (i != 8 && i != 15 && (c < '0' || c > '9')) return false;
  }
  if (rest.size() == 16) return true;
  if (rest[16] != '-' || rest.size() == 17) return false;
  return std::all_of(rest.begin() + 17, rest.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool OneLine(const std::string& m) { return !m.empty() && m.find('\n') == std::string::npos; }

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
  const uint64_t sector = i / rwd::test::kSectorSize * rwd::test::kSectorSize;
  const uint64_t n = std::min<uint64_t>(rwd::test::kSectorSize, want.size() - sector);
  return "first difference at byte " + std::to_string(i) + ", last at " + std::to_string(last) +
         "; sector " + std::to_string(sector) + " holds [" +
         rwd::test::DescribeSector(got.data() + sector, sector, n) + "], want [" +
         rwd::test::DescribeSector(want.data() + sector, sector, n) + "]";
}

std::vector<char> ReadFileBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::vector<char> ReadSnapshot(Snapshot& snap) {
  std::vector<char> out(snap.size());
  for (uint64_t off = 0; off < out.size();) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(1 << 20, out.size() - off));
    Status st = snap.Read(off, n, out.data() + off);
    if (!st.ok())
      FAIL("snapshot of lsn " << snap.point().lsn << " read at " << off << ": " << st.ToString());
    off += n;
  }
  return out;
}

// ---------------------------------------------------------------- the rig

struct RigConfig {
  uint64_t size = (1ull << 20) + 1536;  // ends in a partial block
  uint32_t block_size = 4096;
  bool fake_clock = true;
  bool doubles = false;  // FaultInjectionFS + MemImageFactory
};

// A store, the model of its history, and helpers to check one against the
// other.
class Rig {
 public:
  Rig(const RigConfig& cfg, uint64_t seed)
      : cfg_(cfg),
        rng_(seed),
        tmp_("rwrb"),
        now_(std::make_shared<std::atomic<int64_t>>(BaseTime())) {
    opts_.dir = tmp_ / "store";
    opts_.size = cfg.size;
    opts_.block_size = cfg.block_size;
    opts_.sync_interval_us = 2000;
    if (cfg.fake_clock) {
      auto n = now_;
      opts_.clock = [n] { return n->load(); };
    }
    if (cfg.doubles) {
      fs_ = std::make_shared<FaultInjectionFS>();
      images_ = std::make_shared<MemImageFactory>();
      opts_.fs = fs_;
      opts_.image_factory = images_;
    }
    live_.assign(cfg.size, 0);
    entries_.emplace_back();
    entries_[0].time_ns = now_->load();
  }
  ~Rig() {
    rwd::SetFaultHook(nullptr);
    if (store_) {  // a failed REQUIRE left it open
      if (fs_) {
        fs_->SetActive(true);
        fs_->ClearFaults();
      }
      if (images_) images_->SetActive(true);
      store_.reset();
    }
  }

  Store& store() {
    REQUIRE(store_ != nullptr);
    return *store_;
  }
  const std::string& dir() const { return opts_.dir; }
  const TempDir& tmp() const { return tmp_; }
  std::mt19937_64& rng() { return rng_; }
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  uint64_t size() const { return cfg_.size; }
  uint32_t bs() const { return cfg_.block_size; }
  uint64_t blocks() const { return (cfg_.size + bs() - 1) / bs(); }
  uint64_t BlockLen(uint64_t b) const { return std::min<uint64_t>(bs(), size() - b * bs()); }
  uint64_t newest() const { return entries_.size() - 1; }
  const std::vector<char>& live() const { return live_; }
  int64_t now() const { return now_->load(); }
  void Advance(int64_t d) { now_->fetch_add(d); }
  int64_t time_of(uint64_t lsn) const { return entries_[lsn].time_ns; }
  FaultInjectionFS& fs() { return *fs_; }
  MemImageFactory& images() { return *images_; }

  struct Cp {
    std::string name;
    uint64_t id;
    uint64_t lsn;
  };
  const std::vector<Cp>& checkpoints() const { return cps_; }
  void AddCheckpoint(const CheckpointInfo& ci) { cps_.push_back(Cp{ci.name, ci.id, ci.lsn}); }

  Status TryOpen() { return Store::Open(opts_, &store_); }
  void Open() {
    Status s = TryOpen();
    INFO("open " << opts_.dir << ": " << s.ToString());
    REQUIRE(s.ok());
  }
  void Close() {
    Status s = store().Close();
    INFO("close: " << s.ToString());
    REQUIRE(s.ok());
    store_.reset();
  }
  // Destroys the store without a clean close (after a power cut).
  void Drop() { store_.reset(); }

  StoreInfo Info() {
    StoreInfo info;
    Status s = store().GetInfo(&info);
    INFO("GetInfo: " << s.ToString());
    REQUIRE(s.ok());
    return info;
  }
  PointInfo Resolve(const std::string& text) {
    PointInfo p;
    Status s = store().ResolvePoint(text, &p);
    INFO("ResolvePoint(" << text << "): " << s.ToString());
    REQUIRE(s.ok());
    return p;
  }
  std::unique_ptr<Snapshot> OpenSnap(const PointInfo& p) {
    std::unique_ptr<Snapshot> snap;
    Status s = store().OpenSnapshot(p, &snap);
    INFO("OpenSnapshot(" << p.text << ", lsn " << p.lsn << "): " << s.ToString());
    REQUIRE(s.ok());
    REQUIRE(snap != nullptr);
    return snap;
  }
  std::vector<char> SnapshotAt(uint64_t lsn) {
    auto snap = OpenSnap(Resolve("lsn:" + std::to_string(lsn)));
    REQUIRE(snap->point().lsn == lsn);
    return ReadSnapshot(*snap);
  }
  std::vector<char> ReadLive() {
    std::vector<char> disk(size());
    for (uint64_t off = 0; off < size();) {
      const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(1 << 20, size() - off));
      Status s = store().Read(off, n, disk.data() + off);
      INFO("read at " << off << ": " << s.ToString());
      REQUIRE(s.ok());
      off += n;
    }
    return disk;
  }
  std::vector<CheckpointInfo> List() {
    std::vector<CheckpointInfo> cps;
    Status s = store().ListCheckpoints(&cps);
    INFO("ListCheckpoints: " << s.ToString());
    REQUIRE(s.ok());
    return cps;
  }

  // ---- operations, recorded in the model ----

  void Tick() {
    if (cfg_.fake_clock && Rand(6) != 0) Advance(kMs * static_cast<int64_t>(1 + Rand(3000)));
  }

  std::pair<uint64_t, uint64_t> RandomRange() {
    uint64_t len;
    switch (Rand(4)) {
      case 0: len = 1 + Rand(700); break;
      case 1: len = bs() * (1 + Rand(3)); break;
      case 2: len = 1 + Rand(3 * bs() + 1000); break;
      default: len = 512 * (1 + Rand(2 * bs() / 512)); break;
    }
    len = std::min(len, size());
    uint64_t off = Rand(size() - len + 1);
    switch (Rand(3)) {
      case 0:
        if (len % bs() == 0) off = off / bs() * bs();
        break;
      case 1: off = off / 512 * 512; break;
      default: break;
    }
    return {off, len};
  }

  void Write(uint64_t off, uint64_t len, bool fua) {
    std::vector<char> data(len);
    rwd::test::FillPattern(++tag_, off, len, data.data());
    Status s = store().Write(off, static_cast<uint32_t>(len), data.data(), fua);
    INFO("write [" << off << ", +" << len << "): " << s.ToString());
    REQUIRE(s.ok());
    std::memcpy(live_.data() + off, data.data(), len);
    RecordOp(off, len, std::move(data));
  }

  void Zero(uint64_t off, uint64_t len, bool trim) {
    Status s = store().Zero(off, len, Rand(2) == 0, trim);
    INFO((trim ? "trim" : "zero") << " [" << off << ", +" << len << "): " << s.ToString());
    REQUIRE(s.ok());
    std::memset(live_.data() + off, 0, len);
    RecordOp(off, len, {});
  }

  void Flush() {
    Status s = store().Flush();
    INFO("flush: " << s.ToString());
    REQUIRE(s.ok());
  }

  CheckpointInfo Checkpoint(const std::string& name = "") {
    CheckpointInfo ci;
    Status s = store().Checkpoint(name, &ci);
    INFO("checkpoint '" << name << "': " << s.ToString());
    REQUIRE(s.ok());
    REQUIRE(ci.lsn == newest());
    AddCheckpoint(ci);
    return ci;
  }

  void RandomOp() {
    Tick();
    const uint64_t r = Rand(100);
    if (r < 50) {
      auto [off, len] = RandomRange();
      Write(off, len, Rand(6) == 0);
    } else if (r < 68) {
      const bool trim = r >= 59;
      if (Rand(25) == 0) {
        Zero(0, size(), trim);
      } else {
        auto [off, len] = RandomRange();
        Zero(off, len, trim);
      }
    } else if (r < 76) {
      Flush();
    } else if (r < 88) {
      Checkpoint(Rand(2) ? "" : "c" + std::to_string(cps_.size()) + "-" + std::to_string(tag_));
    } else {
      auto [off, len] = RandomRange();
      std::vector<char> got(len);
      REQUIRE(store().Read(off, static_cast<uint32_t>(len), got.data()).ok());
      REQUIRE(std::memcmp(got.data(), live_.data() + off, len) == 0);
    }
  }
  void RandomOps(int n) {
    for (int i = 0; i < n; i++) RandomOp();
  }

  // ---- the model's history ----

  // The model disk right after lsn.
  std::vector<char> StateAt(uint64_t lsn) const {
    REQUIRE(lsn <= newest());
    uint64_t k = lsn;
    while (k > 0 && entries_[k].is_op) k--;
    std::vector<char> d(size(), 0);
    if (k > 0) Materialize(entries_[k], &d);
    for (uint64_t i = k + 1; i <= lsn; i++) Apply(entries_[i], &d);
    return d;
  }
  // Calls fn with the model disk after every LSN, in order.
  void ForEachState(const std::function<void(uint64_t, const std::vector<char>&)>& fn) const {
    std::vector<char> d(size(), 0);
    fn(0, d);
    for (uint64_t lsn = 1; lsn <= newest(); lsn++) {
      Apply(entries_[lsn], &d);
      fn(lsn, d);
    }
  }
  // The last LSN written at or before t (0: none).
  uint64_t LsnAtTime(int64_t t) const {
    uint64_t best = 0;
    for (uint64_t i = 1; i <= newest(); i++) {
      if (entries_[i].time_ns <= t) best = i;
    }
    return best;
  }
  // Blocks in which a and b differ.
  std::vector<uint64_t> DifferingBlocks(const std::vector<char>& a,
                                        const std::vector<char>& b) const {
    std::vector<uint64_t> out;
    for (uint64_t blk = 0; blk < blocks(); blk++) {
      if (std::memcmp(a.data() + blk * bs(), b.data() + blk * bs(), BlockLen(blk)) != 0)
        out.push_back(blk);
    }
    return out;
  }
  uint64_t BytesOf(const std::vector<uint64_t>& bl) const {
    uint64_t n = 0;
    for (uint64_t b : bl) n += BlockLen(b);
    return n;
  }
  // Bytes of the blocks touched by the LSNs in (from, newest()].
  uint64_t TouchedSince(uint64_t from) const {
    std::vector<bool> touched(blocks(), false);
    for (uint64_t i = from + 1; i <= newest(); i++) {
      for (uint64_t b : entries_[i].touched) touched[b] = true;
    }
    uint64_t bytes = 0;
    for (uint64_t b = 0; b < blocks(); b++) {
      if (touched[b]) bytes += BlockLen(b);
    }
    return bytes;
  }
  // The newest checkpoint LSN at or before lsn (0: none); extra: one more
  // checkpoint's LSN to consider.
  uint64_t CheckpointLsnAtOrBefore(uint64_t lsn, uint64_t extra = 0) const {
    uint64_t from = extra <= lsn ? extra : 0;
    for (const auto& cp : cps_) {
      if (cp.lsn <= lsn) from = std::max(from, cp.lsn);
    }
    return from;
  }

  // The store's LSNs (newest(), to] are a rollback's writes from pre
  // towards target.  Reads each of them back: every block must hold its
  // pre or its target content, once at the target a block stays there,
  // and (when complete) the last one is the target.  The model learns
  // them.
  void RecordRollbackLsns(const std::vector<char>& pre, const std::vector<char>& target,
                          uint64_t to, bool complete, const std::string& what) {
    INFO(what);
    const uint64_t from = newest();
    REQUIRE(to >= from);
    if (to == from) {
      if (complete) REQUIRE(Diff(target, pre).empty());
      return;
    }
    auto rec = std::make_shared<RbRec>();
    rec->pre = pre;
    rec->target = target;
    std::set<uint64_t> prev;
    for (uint64_t lsn = from + 1; lsn <= to; lsn++) {
      INFO("rollback write lsn " << lsn << " (the rollback's LSNs are " << from + 1 << ".." << to
                                 << ")");
      const PointInfo p = Resolve("lsn:" + std::to_string(lsn));
      std::vector<char> got = SnapshotAt(lsn);
      Entry e;
      e.is_op = false;
      e.rb = rec;
      e.time_ns = p.time_ns;
      for (uint64_t b = 0; b < blocks(); b++) {
        const char* g = got.data() + b * bs();
        const bool is_pre = std::memcmp(g, pre.data() + b * bs(), BlockLen(b)) == 0;
        const bool is_target = std::memcmp(g, target.data() + b * bs(), BlockLen(b)) == 0;
        if (is_target && !is_pre) {
          e.at_target.push_back(b);
          if (!prev.count(b)) e.touched.push_back(b);
        } else if (!is_pre) {
          const uint64_t n = std::min<uint64_t>(512, BlockLen(b));
          FAIL(
              "block " << b
                       << " is neither its content before the rollback nor the target's: it holds ["
                       << rwd::test::DescribeSector(g, b * bs(), n) << "], before ["
                       << rwd::test::DescribeSector(pre.data() + b * bs(), b * bs(), n)
                       << "], target ["
                       << rwd::test::DescribeSector(target.data() + b * bs(), b * bs(), n) << "]");
        } else if (prev.count(b)) {
          FAIL("block " << b << " went back from the target to its content before the rollback");
        }
      }
      CHECK_FALSE(e.touched.empty());  // every rollback write changes something
      prev.insert(e.at_target.begin(), e.at_target.end());
      entries_.push_back(std::move(e));
    }
    if (complete) {
      std::vector<char> last(size());
      Materialize(entries_.back(), &last);
      std::string d = Diff(target, last);
      if (!d.empty())
        FAIL("the last rollback write (lsn " << to << ") does not leave the target: " << d);
    }
    std::vector<char> d(size());
    Materialize(entries_.back(), &d);
    live_ = d;
  }

  // ---- checks ----

  // The live disk equals the model.
  void CheckLive(const std::string& what) {
    std::string d = Diff(live_, ReadLive());
    if (!d.empty()) FAIL(what << ": the live disk differs from the model: " << d);
  }

  // Every LSN's snapshot equals the model's content then.
  void CheckEveryLsn(const std::string& what) {
    REQUIRE(Info().newest_lsn == newest());
    ForEachState([&](uint64_t lsn, const std::vector<char>& want) {
      std::string d = Diff(want, SnapshotAt(lsn));
      if (!d.empty())
        FAIL(what << ": snapshot of lsn:" << lsn << " (newest " << newest() << "): " << d);
    });
  }

  // Every checkpoint is listed, resolves to its LSN and reads back.
  void CheckCheckpoints(const std::string& what) {
    std::vector<CheckpointInfo> listed = List();
    std::map<std::string, CheckpointInfo> by_name;
    for (const auto& c : listed) by_name[c.name] = c;
    for (const auto& cp : cps_) {
      INFO(what << ": checkpoint " << cp.name);
      REQUIRE(by_name.count(cp.name) == 1);
      CHECK(by_name[cp.name].id == cp.id);
      CHECK(by_name[cp.name].lsn == cp.lsn);
      PointInfo p = Resolve(cp.name);
      CHECK(p.lsn == cp.lsn);
      CHECK(p.checkpoint_id == cp.id);
      auto snap = OpenSnap(p);
      std::string d = Diff(StateAt(cp.lsn), ReadSnapshot(*snap));
      if (!d.empty()) FAIL(what << ": checkpoint " << cp.name << " (lsn " << cp.lsn << "): " << d);
    }
    CHECK(listed.size() == cps_.size());
  }

  // Restore of the point writes exactly the model's content.
  void CheckRestore(const std::string& text, const std::string& what) {
    PointInfo p = Resolve(text);
    const std::string out = tmp_ / ("restore-" + std::to_string(p.lsn) + ".raw");
    rwd::RestoreOptions ro;
    ro.output = out;
    ro.overwrite = true;
    rwd::RestoreResult rr;
    Status s = store().Restore(p, ro, &rr);
    INFO(what << ": restore of " << text << " (lsn " << p.lsn << "): " << s.ToString());
    REQUIRE(s.ok());
    CHECK(rr.point.lsn == p.lsn);
    std::string d = Diff(StateAt(p.lsn), ReadFileBytes(out));
    std::filesystem::remove(out);
    if (!d.empty()) FAIL(what << ": restored " << text << " (lsn " << p.lsn << "): " << d);
  }

  // Extents cover the disk, and holes read as zeros.
  void CheckExtents(const std::string& what) {
    uint64_t pos = 0;
    bool ok = true;
    std::string bad;
    Status s = store().Extents(0, size(), [&](uint64_t o, uint64_t n, bool data) {
      if (o != pos || n == 0) {
        ok = false;
        bad = "extent [" + std::to_string(o) + ", +" + std::to_string(n) + ") after " +
              std::to_string(pos);
      }
      if (!data &&
          !std::all_of(live_.begin() + static_cast<long>(o),
                       live_.begin() + static_cast<long>(o + n), [](char c) { return c == 0; })) {
        ok = false;
        bad = "hole [" + std::to_string(o) + ", +" + std::to_string(n) + ") holds data";
      }
      pos = o + n;
    });
    INFO(what << ": extents: " << s.ToString() << " " << bad);
    REQUIRE(s.ok());
    CHECK(ok);
    CHECK(pos == size());
  }

  // The name the next rollback's checkpoint must get (fake clock only).
  std::string NextBeforeName() const {
    std::set<std::string> taken;
    for (const auto& c : cps_) taken.insert(c.name);
    const std::string base = BeforeName(now());
    if (!taken.count(base)) return base;
    for (int n = 2;; n++) {
      std::string name = base + "-" + std::to_string(n);
      if (!taken.count(name)) return name;
    }
  }

  // A rollback to text that must succeed, with every check of its result.
  RollbackResult Rollback(const std::string& text) {
    INFO("rollback to " << text);
    const PointInfo p = Resolve(text);
    const std::vector<char> pre = live_;
    const uint64_t pre_newest = newest();
    REQUIRE(Info().newest_lsn == pre_newest);
    const std::vector<char> target = StateAt(p.lsn);
    const std::vector<uint64_t> differing = DifferingBlocks(pre, target);
    // Examined: at least every block touched since the point, at most
    // every block touched since the newest checkpoint at or before it (the
    // before-rollback checkpoint counts: it is taken first).
    const uint64_t min_examined = TouchedSince(p.lsn);
    const uint64_t max_examined = TouchedSince(CheckpointLsnAtOrBefore(p.lsn, pre_newest));
    const std::string want_name = cfg_.fake_clock ? NextBeforeName() : "";
    uint64_t max_id = 0;
    for (const auto& c : cps_) max_id = std::max(max_id, c.id);

    std::vector<std::pair<uint64_t, uint64_t>> calls;
    RollbackOptions ro;
    ro.progress = [&](uint64_t done, uint64_t total) {
      calls.emplace_back(done, total);
      return true;
    };
    RollbackResult r;
    Status s = store().Rollback(p, ro, &r);
    INFO("Rollback: " << s.ToString());
    REQUIRE(s.ok());

    CHECK(r.point.lsn == p.lsn);
    CHECK(r.point.text == p.text);
    CHECK(LooksLikeBeforeName(r.before.name));
    if (!want_name.empty()) CHECK(r.before.name == want_name);
    CHECK(r.before.lsn == pre_newest);
    CHECK(r.before.id == max_id + 1);
    CHECK(r.before.kind == "disk");
    if (cfg_.fake_clock) CHECK(r.before.time_ns == now());
    CHECK(r.examined_bytes >= min_examined);
    CHECK(r.examined_bytes <= max_examined);
    CHECK(r.rewritten_bytes == BytesOf(differing));
    CHECK(r.rewritten_bytes <= r.examined_bytes);
    CHECK(r.seconds >= 0);
    // Progress: bytes examined, rising to the total.
    uint64_t last = 0;
    for (const auto& [done, total] : calls) {
      INFO("progress " << done << " of " << total);
      CHECK(total == r.examined_bytes);
      CHECK(done >= last);
      CHECK(done <= total);
      last = done;
    }
    if (r.examined_bytes > 0) {
      REQUIRE_FALSE(calls.empty());
      CHECK(calls.back().first == r.examined_bytes);
    }

    AddCheckpoint(r.before);
    const uint64_t to = Info().newest_lsn;
    if (r.rewritten_bytes == 0) CHECK(to == pre_newest);
    RecordRollbackLsns(pre, target, to, true, "rollback to " + text);
    if (cfg_.fake_clock) {
      for (uint64_t lsn = pre_newest + 1; lsn <= to; lsn++) CHECK(time_of(lsn) == now());
    }
    CheckLive("after the rollback to " + text);
    return r;
  }

 private:
  // A rollback's states: its pre and target disks.
  struct RbRec {
    std::vector<char> pre, target;
  };
  struct Entry {
    int64_t time_ns = 0;
    bool is_op = true;
    // An operation: data empty for zero and trim.
    uint64_t offset = 0, length = 0;
    std::vector<char> data;
    // A rollback write: the blocks at their target content after it.
    std::shared_ptr<const RbRec> rb;
    std::vector<uint64_t> at_target;
    std::vector<uint64_t> touched;  // blocks the LSN wrote
  };

  void RecordOp(uint64_t off, uint64_t len, std::vector<char> data) {
    const uint64_t lsn = Info().newest_lsn;
    INFO("every write and zero takes one LSN: newest was " << newest() << ", now " << lsn);
    REQUIRE(lsn == newest() + 1);
    Entry e;
    e.time_ns = now();
    e.offset = off;
    e.length = len;
    e.data = std::move(data);
    for (uint64_t b = off / bs(); b <= (off + len - 1) / bs(); b++) e.touched.push_back(b);
    entries_.push_back(std::move(e));
  }
  void Materialize(const Entry& e, std::vector<char>* d) const {
    *d = e.rb->pre;
    for (uint64_t b : e.at_target) {
      std::memcpy(d->data() + b * bs(), e.rb->target.data() + b * bs(), BlockLen(b));
    }
  }
  void Apply(const Entry& e, std::vector<char>* d) const {
    if (!e.is_op) {
      Materialize(e, d);
    } else if (e.data.empty()) {
      std::memset(d->data() + e.offset, 0, e.length);
    } else {
      std::memcpy(d->data() + e.offset, e.data.data(), e.length);
    }
  }

  RigConfig cfg_;
  std::mt19937_64 rng_;
  TempDir tmp_;
  std::shared_ptr<std::atomic<int64_t>> now_;
  StoreOptions opts_;
  std::shared_ptr<FaultInjectionFS> fs_;
  std::shared_ptr<MemImageFactory> images_;
  std::unique_ptr<Store> store_;
  std::vector<char> live_;
  std::vector<Entry> entries_;  // by LSN; [0]: creation
  std::vector<Cp> cps_;
  uint64_t tag_ = 0;
};

// The before-rollback checkpoints listed by the store.
std::vector<CheckpointInfo> BeforeCheckpoints(const std::vector<CheckpointInfo>& cps) {
  std::vector<CheckpointInfo> out;
  for (const auto& c : cps) {
    if (c.name.rfind(kBeforePrefix, 0) == 0) out.push_back(c);
  }
  return out;
}

// A checkpoint in the middle of the history, at least a few LSNs old.
std::string MiddleCheckpoint(Rig& rig) {
  std::vector<Rig::Cp> c;
  for (const auto& cp : rig.checkpoints()) {
    if (cp.lsn > 3 && cp.lsn + 10 < rig.newest()) c.push_back(cp);
  }
  REQUIRE_FALSE(c.empty());
  return c[c.size() / 2].name;
}

// ------------------------------------------------------------- 1. basic

void RunBasic(const RigConfig& cfg, uint64_t seed) {
  INFO("seed " << seed << ", size " << cfg.size << ", block size " << cfg.block_size);
  Rig rig(cfg, seed);
  rig.Open();
  rig.RandomOps(90);
  rig.Write(rig.size() - 3000, 3000, false);  // the last block, maybe partial
  rig.RandomOps(5);

  // To a checkpoint.
  const std::string cp = MiddleCheckpoint(rig);
  const uint64_t first_pre_newest = rig.newest();
  // Snapshots held across the rollback stay exact while it rewrites the
  // blocks under them.
  std::vector<std::pair<uint64_t, std::unique_ptr<Snapshot>>> held;
  for (uint64_t lsn : {first_pre_newest, first_pre_newest / 2, uint64_t{0}}) {
    held.emplace_back(lsn, rig.OpenSnap(rig.Resolve("lsn:" + std::to_string(lsn))));
  }
  RollbackResult r1 = rig.Rollback(cp);
  CHECK(r1.point.checkpoint == cp);
  CHECK(r1.rewritten_bytes > 0);
  for (auto& [lsn, snap] : held) {
    std::string d = Diff(rig.StateAt(lsn), ReadSnapshot(*snap));
    if (!d.empty())
      FAIL("a snapshot of lsn:" << lsn << " opened before the rollback, read after it: " << d);
  }
  held.clear();
  rig.CheckEveryLsn("after the rollback to " + cp);
  rig.CheckCheckpoints("after the rollback to " + cp);
  rig.CheckExtents("after the rollback to " + cp);
  rig.CheckRestore("lsn:" + std::to_string(first_pre_newest),
                   "the newest point before the rollback");
  rig.CheckRestore(r1.before.name, "the before-rollback checkpoint");
  rig.CheckRestore(cp, "the rollback's target");

  // The disk works normally afterwards: new writes over the rolled-back
  // blocks, checkpoints, reads.
  rig.RandomOps(40);
  rig.CheckLive("after more writes");

  // To lsn:N, before the first rollback.
  const uint64_t n = 1 + rig.Rand(first_pre_newest - 1);
  rig.Advance(2 * kSec);
  RollbackResult r2 = rig.Rollback("lsn:" + std::to_string(n));
  CHECK(r2.point.lsn == n);
  rig.RandomOps(25);

  // To time:T, between two LSNs (T is the time of a random LSN, or halfway
  // to the next LSN).
  {
    const uint64_t x = 1 + rig.Rand(rig.newest() - 1);
    int64_t t = rig.time_of(x);
    if (rig.Rand(2) && rig.time_of(x + 1) > t + 1) t += (rig.time_of(x + 1) - t) / 2;
    const uint64_t want = rig.LsnAtTime(t);
    rig.Advance(kSec);
    RollbackResult r3 = rig.Rollback(TimeText(t));
    CHECK(r3.point.lsn == want);
  }
  // To an LSN inside the first rollback's writes, when it took several.
  {
    const uint64_t first_rb_end = r1.before.lsn + 1;  // its first write
    rig.Advance(kSec);
    rig.Rollback("lsn:" + std::to_string(first_rb_end));
  }
  // To the newest point: nothing to do, but still undoable.
  {
    const uint64_t before = rig.newest();
    rig.Advance(kSec);
    RollbackResult r = rig.Rollback("lsn:" + std::to_string(before));
    CHECK(r.examined_bytes == 0);
    CHECK(r.rewritten_bytes == 0);
    CHECK(rig.Info().newest_lsn == before);
  }
  rig.RandomOps(15);

  rig.CheckEveryLsn("after several rollbacks");
  rig.CheckCheckpoints("after several rollbacks");
  rig.CheckExtents("after several rollbacks");
  rig.CheckRestore("lsn:0", "lsn 0");
  rig.CheckRestore("lsn:" + std::to_string(rig.newest()), "the newest point");

  // A reopen finishes nothing (no marker left) and keeps everything.
  const uint64_t newest = rig.newest();
  rig.Close();
  rig.Open();
  CHECK(rig.Info().newest_lsn == newest);
  rig.CheckLive("after reopen");
  rig.CheckEveryLsn("after reopen");
  rig.CheckCheckpoints("after reopen");
  // And it rolls back after a reopen too.
  rig.Advance(kSec);
  rig.Rollback(cp);
  rig.CheckEveryLsn("after a rollback after the reopen");
  rig.Close();
}

TEST_CASE("rollback to a checkpoint or lsn: or time: puts the disk back exactly and keeps history",
          "[rollback]") {
  SECTION("4 KiB blocks, a partial last block") { RunBasic(RigConfig{}, 1); }
  SECTION("4 KiB blocks, another history") { RunBasic(RigConfig{}, 2); }
  SECTION("64 KiB blocks, unaligned writes") {
    RigConfig cfg;
    cfg.size = (2ull << 20) + 4608;  // a partial last block too
    cfg.block_size = 65536;
    RunBasic(cfg, 3);
  }
}

TEST_CASE("rollback to lsn:0 empties the disk and its checkpoint keeps the unflushed writes",
          "[rollback]") {
  Rig rig(RigConfig{}, 5);
  rig.Open();
  rig.RandomOps(30);
  // Not flushed: the before-rollback checkpoint covers them.
  rig.Write(0, 4096, false);
  rig.Write(rig.size() - 700, 700, false);  // in the partial last block
  RollbackResult r = rig.Rollback("lsn:0");
  CHECK(r.rewritten_bytes > 0);
  CHECK(std::all_of(rig.live().begin(), rig.live().end(), [](char c) { return c == 0; }));
  rig.CheckExtents("after the rollback to lsn:0");
  rig.CheckEveryLsn("after the rollback to lsn:0");
  rig.CheckCheckpoints("after the rollback to lsn:0");
  rig.CheckRestore(r.before.name, "the before-rollback checkpoint");
  rig.Close();
}

TEST_CASE("a rollback examines the blocks changed since the point and rewrites those that differ",
          "[rollback]") {
  Rig rig(RigConfig{}, 6);
  rig.Open();
  rig.Checkpoint("c1");
  rig.Write(10 * 4096, 4096, false);        // lsn 1
  rig.Write(20 * 4096, 4096, false);        // lsn 2
  rig.Write(30 * 4096 + 100, 5000, false);  // lsn 3: blocks 30 and 31
  // Block 40 written and zeroed again: changed since lsn:3 but the same.
  rig.Write(40 * 4096, 4096, false);  // lsn 4
  rig.Zero(40 * 4096, 4096, true);    // lsn 5: back to zeros, as at lsn 3
  RollbackResult r = rig.Rollback("lsn:3");
  // Blocks 20, 30, 31 and 40 were written in between; 10 was not, and is
  // the same at both ends.  (Rollback() above checks examined_bytes
  // against these bounds and rewritten_bytes exactly.)
  CHECK(r.rewritten_bytes == 0);
  CHECK(r.examined_bytes >= 4096);  // block 40
  CHECK(r.examined_bytes <= 5 * 4096);
  RollbackResult r2 = rig.Rollback("lsn:1");
  CHECK(r2.rewritten_bytes == 3 * 4096);  // blocks 20, 30, 31
  CHECK(r2.examined_bytes >= 4 * 4096);   // and 40
  CHECK(r2.examined_bytes <= 5 * 4096);   // and maybe 10, written since c1
  rig.CheckEveryLsn("after the rollbacks");
  rig.Close();
}

// -------------------------------------------------------------- 2. undo

TEST_CASE("a rollback is undone by rolling back to its before-rollback checkpoint again and again",
          "[rollback]") {
  Rig rig(RigConfig{}, 7);
  rig.Open();
  rig.RandomOps(80);
  rig.Flush();
  const std::vector<char> start = rig.live();
  const std::string cp = MiddleCheckpoint(rig);
  const std::vector<char> at_cp = rig.StateAt(rig.Resolve(cp).lsn);
  REQUIRE_FALSE(Diff(at_cp, start).empty());

  // The clock stands still: the names collide and get suffixes.
  const std::string base = BeforeName(rig.now());
  RollbackResult r1 = rig.Rollback(cp);
  CHECK(r1.before.name == base);
  CHECK(Diff(at_cp, rig.live()).empty());

  RollbackResult r2 = rig.Rollback(r1.before.name);  // undo
  CHECK(r2.before.name == base + "-2");
  {
    std::string d = Diff(start, rig.ReadLive());
    if (!d.empty()) FAIL("undoing the rollback does not give back the disk as it was: " << d);
  }
  CHECK(r2.rewritten_bytes == r1.rewritten_bytes);

  RollbackResult r3 = rig.Rollback(r2.before.name);  // undo the undo
  CHECK(r3.before.name == base + "-3");
  {
    std::string d = Diff(at_cp, rig.ReadLive());
    if (!d.empty()) FAIL("undoing the undo does not give the rollback's target: " << d);
  }
  RollbackResult r4 = rig.Rollback(r3.before.name);  // and once more
  CHECK(r4.before.name == base + "-4");
  {
    std::string d = Diff(start, rig.ReadLive());
    if (!d.empty()) FAIL("undoing the third rollback does not give back the start: " << d);
  }
  // A user's checkpoint of that name is skipped too.
  rig.Checkpoint(base + "-5");
  RollbackResult r5 = rig.Rollback(r1.before.name);
  CHECK(r5.before.name == base + "-6");
  CHECK(Diff(start, rig.live()).empty());  // r1's checkpoint is the start

  // A new second: no suffix.
  rig.Advance(kSec);
  RollbackResult r6 = rig.Rollback(cp);
  CHECK(r6.before.name == BeforeName(rig.now()));

  rig.CheckEveryLsn("after rollbacks of rollbacks");
  rig.CheckCheckpoints("after rollbacks of rollbacks");
  rig.Close();
  rig.Open();
  rig.CheckLive("after reopen");
  rig.CheckEveryLsn("after reopen");
  rig.CheckCheckpoints("after reopen");
  rig.Close();
}

// ---------------------------------------------------------- 5. errors

TEST_CASE("a rollback beyond the newest LSN is NotFound and changes nothing", "[rollback]") {
  Rig rig(RigConfig{}, 9);
  rig.Open();
  rig.RandomOps(20);
  const uint64_t newest = rig.newest();
  const size_t cps = rig.List().size();
  {
    PointInfo p;
    Status s = rig.store().ResolvePoint("lsn:" + std::to_string(newest + 1), &p);
    CHECK(s.code() == Status::Code::kNotFound);
  }
  for (uint64_t lsn : {newest + 1, newest + 1000, UINT64_MAX}) {
    PointInfo p;
    p.lsn = lsn;
    p.text = "lsn:" + std::to_string(lsn);
    RollbackResult r;
    Status s = rig.store().Rollback(p, RollbackOptions{}, &r);
    INFO("rollback to lsn " << lsn << ": " << s.ToString());
    CHECK(s.code() == Status::Code::kNotFound);
    CHECK(OneLine(s.message()));
  }
  CHECK(rig.Info().newest_lsn == newest);
  CHECK(rig.List().size() == cps);  // no before-rollback checkpoint
  rig.CheckLive("after refused rollbacks");
  rig.Close();
  rig.Open();
  CHECK(rig.Info().newest_lsn == newest);
  rig.CheckLive("after refused rollbacks and a reopen");
  rig.Close();
}

TEST_CASE("a progress callback returning false does not stop a rollback half way", "[rollback]") {
  // store.h: "A rollback cannot be cancelled: its return value is ignored."
  // (When false cancelled it with Aborted, the disk was left a mix with the
  // marker in place, and the next open finished the rollback over every
  // write acknowledged in between.)
  const int stop_at = GENERATE(1, 3);
  INFO("the callback returns false from call " << stop_at << " on");
  Rig rig(RigConfig{}, 11);
  rig.Open();
  rig.RandomOps(90);
  const std::string cp = MiddleCheckpoint(rig);
  const PointInfo p = rig.Resolve(cp);
  const std::vector<char> pre = rig.live();
  const std::vector<char> target = rig.StateAt(p.lsn);
  const uint64_t pre_newest = rig.newest();
  const uint64_t min_examined = rig.TouchedSince(p.lsn);
  const uint64_t max_examined = rig.TouchedSince(rig.CheckpointLsnAtOrBefore(p.lsn));

  std::vector<std::pair<uint64_t, uint64_t>> calls;
  RollbackOptions ro;
  ro.progress = [&](uint64_t done, uint64_t total) {
    calls.emplace_back(done, total);
    return static_cast<int>(calls.size()) < stop_at;
  };
  RollbackResult r;
  Status s = rig.store().Rollback(p, ro, &r);
  INFO("rollback whose callback says stop: " << s.ToString());
  REQUIRE(s.ok());
  REQUIRE(calls.size() >= static_cast<size_t>(stop_at));
  uint64_t last = 0;
  for (const auto& [done, total] : calls) {
    CHECK(total == r.examined_bytes);
    CHECK(done >= last);
    CHECK(done <= total);
    last = done;
  }
  CHECK(calls.back().first == r.examined_bytes);
  CHECK(r.examined_bytes >= min_examined);
  CHECK(r.examined_bytes <= max_examined);
  CHECK(r.before.lsn == pre_newest);
  CHECK(r.before.name == BeforeName(rig.now()));
  rig.AddCheckpoint(r.before);
  rig.RecordRollbackLsns(pre, target, rig.Info().newest_lsn, true, "the rollback");
  rig.CheckLive("right after the rollback");

  // Nothing is left for the next open: writes acknowledged now survive it.
  const std::vector<uint64_t> diff = rig.DifferingBlocks(pre, target);
  REQUIRE_FALSE(diff.empty());
  rig.Write(diff.front() * rig.bs(), rig.BlockLen(diff.front()), false);
  rig.Write(diff.back() * rig.bs(), rig.BlockLen(diff.back()), true);
  const uint64_t newest = rig.newest();
  rig.Close();
  rig.Open();
  CHECK(rig.Info().newest_lsn == newest);
  rig.CheckLive("writes made after the rollback survive a reopen");
  rig.CheckEveryLsn("after the reopen");
  rig.CheckCheckpoints("after the reopen");
  rig.CheckRestore(r.before.name, "the before-rollback checkpoint");
  rig.Close();
}

// ------------------------------------------------------------- 3. crash
//
// The child runs this binary's hidden test case with REWIND_RB_CHILD set:
//   rollback  opens the store in REWIND_RB_DIR and rolls back to
//             REWIND_RB_POINT, then closes;
//   open      opens the store (finishing a rollback) and closes.
// REWIND_RB_HOOK=NAME:N kills it with SIGKILL at the Nth pass of NAME
// through SetFaultHook (REWIND_CRASH_AT does the same from the library).
// Every fault point passed is appended to REWIND_RB_LOG, one line each.

constexpr const char* kChildName = "rollback child process";

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int child_log = -1;

void ChildLog(const std::string& line) {
  const std::string l = line + "\n";
  if (child_log >= 0 && write(child_log, l.data(), l.size()) != static_cast<ssize_t>(l.size()))
    _exit(5);
}

int RunChild(const std::string& mode) {
  if (!Env("REWIND_RB_LOG").empty()) {
    child_log = open(Env("REWIND_RB_LOG").c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (child_log < 0) return 4;
  }
  std::string name;
  long hit = 0;
  if (const std::string spec = Env("REWIND_RB_HOOK"); !spec.empty()) {
    const size_t colon = spec.rfind(':');
    name = spec.substr(0, colon);
    hit = std::atol(spec.c_str() + colon + 1);
  }
  auto count = std::make_shared<std::atomic<long>>(0);
  rwd::SetFaultHook([=](std::string_view point) {
    ChildLog("P " + std::string(point));
    if (!name.empty() && point == name && ++*count == hit) kill(getpid(), SIGKILL);
  });
  StoreOptions o;
  o.dir = Env("REWIND_RB_DIR");
  o.sync_interval_us = 2000;
  std::unique_ptr<Store> store;
  Status s = Store::Open(o, &store);
  if (!s.ok()) {
    ChildLog("X open " + s.ToString());
    return 3;
  }
  ChildLog("O");
  if (mode == "rollback") {
    PointInfo p;
    s = store->ResolvePoint(Env("REWIND_RB_POINT"), &p);
    RollbackResult r;
    if (s.ok()) s = store->Rollback(p, RollbackOptions{}, &r);
    if (!s.ok()) {
      ChildLog("X rollback " + s.ToString());
      return 3;
    }
    ChildLog("R " + r.before.name + " " + std::to_string(r.rewritten_bytes));
  }
  s = store->Close();
  if (!s.ok()) {
    ChildLog("X close " + s.ToString());
    return 3;
  }
  ChildLog("D");
  return 0;
}

// Runs the child with env; its output goes to out_file.
rwd::test::ExitStatus SpawnChild(const std::map<std::string, std::string>& env,
                                 const std::string& out_file) {
  return rwd::test::RunSelfAsChild(kChildName, env, "REWIND_", out_file, std::chrono::seconds(60));
}

bool Killed(const rwd::test::ExitStatus& st) { return !st.timed_out && st.signal == SIGKILL; }

int CountLines(const std::string& text, const std::string& line) {
  int n = 0;
  for (const std::string& l : rwd::test::NonEmptyLines(text)) n += l == line;
  return n;
}

// Builds the crash tests' history in rig and returns the target point.
std::string BuildCrashHistory(Rig& rig) {
  rig.Open();
  rig.RandomOps(110);
  rig.Write(rig.size() - 5000, 5000, false);  // the partial last block, unflushed
  const std::string cp = MiddleCheckpoint(rig);
  return cp;
}

// Stretches of consecutive differing blocks: a rollback makes at least
// one write each.
int Stretches(const std::vector<uint64_t>& blocks) {
  int n = 0;
  for (size_t i = 0; i < blocks.size(); i++) n += i == 0 || blocks[i] != blocks[i - 1] + 1;
  return n;
}

// After a crash somewhere in a rollback from pre to target: reopens and
// checks the disk, the before-rollback checkpoint and that the rollback is
// finished for good.
void VerifyAfterCrash(Rig& rig, const std::vector<char>& pre, const std::vector<char>& target,
                      uint64_t pre_newest, bool want_target, bool checkpoint_may_be_lost = false) {
  rig.Open();
  const StoreInfo info = rig.Info();
  std::vector<char> live = rig.ReadLive();
  {
    std::string d = Diff(want_target ? target : pre, live);
    if (!d.empty()) {
      const char* is = Diff(pre, live).empty()      ? "as before the rollback"
                       : Diff(target, live).empty() ? "the target"
                                                    : "neither";
      FAIL("after reopening, the disk is not "
           << (want_target ? "the rollback's target" : "as before the rollback") << " (it is " << is
           << "): " << d);
    }
  }
  auto before = BeforeCheckpoints(rig.List());
  if (checkpoint_may_be_lost && before.empty()) {
    before.push_back(rig.Checkpoint("stand-in"));  // to go on with the same checks
  }
  REQUIRE(before.size() == 1);
  CHECK(before[0].lsn == pre_newest);
  if (!checkpoint_may_be_lost) CHECK(LooksLikeBeforeName(before[0].name));
  if (before[0].name != "stand-in") rig.AddCheckpoint(before[0]);
  if (want_target) {
    rig.RecordRollbackLsns(pre, target, info.newest_lsn, true, "the crashed rollback's writes");
  } else {
    CHECK(info.newest_lsn == pre_newest);  // not a single block rewritten
  }
  rig.CheckLive("after reopening");
  rig.CheckEveryLsn("after reopening");
  rig.CheckCheckpoints("after reopening");
  rig.CheckRestore(before[0].name, "the before-rollback checkpoint");

  // Nothing left to do: a second open adds nothing, and a write made now
  // (to a block the rollback put back) is not undone by the next open.
  rig.Close();
  rig.Open();
  CHECK(rig.Info().newest_lsn == info.newest_lsn);
  rig.CheckLive("after a second reopen");
  const std::vector<uint64_t> diff = rig.DifferingBlocks(pre, target);
  REQUIRE_FALSE(diff.empty());
  rig.Write(diff[diff.size() / 2] * rig.bs(), std::min<uint64_t>(rig.bs(), 4096), true);
  rig.Close();
  rig.Open();
  CHECK(rig.Info().newest_lsn == info.newest_lsn + 1);
  rig.CheckLive("a write after the finished rollback survives a reopen");
  rig.Close();
}

struct CrashCase {
  std::string point;
  int hit;
  bool want_target;
};

TEST_CASE(kChildName, "[.rollback-child]") {
  const std::string mode = Env("REWIND_RB_CHILD");
  if (mode.empty()) {
    SUCCEED("the helper process of the rollback crash tests; does nothing on its own");
    return;
  }
  std::fflush(nullptr);
  _exit(RunChild(mode));
}

TEST_CASE("a rollback killed at any of its fault points is finished at the next open",
          "[rollback]") {
  const std::vector<CrashCase> cases = {
      // Inside the before-rollback checkpoint: it may be lost, and nothing
      // else has happened.
      {"checkpoint.before_commit", 1, false},  {"checkpoint.after_commit", 1, false},
      {"rollback.after_checkpoint", 1, false}, {"rollback.after_marker", 1, true},
      {"rollback.after_write", 1, true},       {"rollback.after_write", 2, true},
      {"rollback.after_write", 5, true},       {"rollback.before_clear", 1, true},
  };
  int n = 0;
  for (const CrashCase& c : cases) {
    const bool use_env = n++ % 2 == 1;
    DYNAMIC_SECTION("killed at " << c.point << ":" << c.hit << " armed through "
                                 << (use_env ? "REWIND_CRASH_AT" : "SetFaultHook")) {
      RigConfig cfg;
      cfg.fake_clock = false;
      Rig rig(cfg, 21);
      const std::string cp = BuildCrashHistory(rig);
      const std::vector<char> pre = rig.live();
      const std::vector<char> target = rig.StateAt(rig.Resolve(cp).lsn);
      const uint64_t pre_newest = rig.newest();
      REQUIRE(Stretches(rig.DifferingBlocks(pre, target)) >= 6);
      rig.Close();

      const std::string log = rig.tmp() / "log", out = rig.tmp() / "out";
      std::map<std::string, std::string> env = {{"REWIND_RB_CHILD", "rollback"},
                                                {"REWIND_RB_DIR", rig.dir()},
                                                {"REWIND_RB_POINT", cp},
                                                {"REWIND_RB_LOG", log}};
      const std::string spec = c.point + ":" + std::to_string(c.hit);
      env[use_env ? "REWIND_CRASH_AT" : "REWIND_RB_HOOK"] = spec;
      rwd::test::ExitStatus st = SpawnChild(env, out);
      const std::string text = rwd::test::ReadFile(log);
      INFO("child: " << st.ToString() << "\nlog:\n"
                     << text << "\noutput:\n"
                     << rwd::test::ReadFile(out));
      REQUIRE(Killed(st));
      // REWIND_CRASH_AT kills before the hook logs the pass.
      CHECK(CountLines(text, "P " + c.point) == (use_env ? c.hit - 1 : c.hit));
      CHECK(CountLines(text, "P rollback.after_marker") ==
            (c.want_target ? 1 : 0) - (use_env && c.point == "rollback.after_marker"));
      CHECK(text.find("\nR ") == std::string::npos);
      VerifyAfterCrash(rig, pre, target, pre_newest, c.want_target,
                       c.point.starts_with("checkpoint."));
    }
  }
}

TEST_CASE("a rollback finishing at open survives kills inside that open", "[rollback]") {
  // The rollback dies after its second write (or right after its marker);
  // the next open is killed as it starts to finish it, the one after that
  // after its first write; then an open finishes it.
  const std::string first =
      GENERATE(std::string("rollback.after_write:2"), std::string("rollback.after_marker:1"));
  INFO("the rollback is killed at " << first);
  RigConfig cfg;
  cfg.fake_clock = false;
  Rig rig(cfg, 22);
  const std::string cp = BuildCrashHistory(rig);
  const std::vector<char> pre = rig.live();
  const std::vector<char> target = rig.StateAt(rig.Resolve(cp).lsn);
  const uint64_t pre_newest = rig.newest();
  REQUIRE(Stretches(rig.DifferingBlocks(pre, target)) >= 6);
  rig.Close();

  const std::string out = rig.tmp() / "out";
  rwd::test::ExitStatus st = SpawnChild({{"REWIND_RB_CHILD", "rollback"},
                                         {"REWIND_RB_DIR", rig.dir()},
                                         {"REWIND_RB_POINT", cp},
                                         {"REWIND_RB_HOOK", first}},
                                        out);
  INFO("rollback child: " << st.ToString() << "\n" << rwd::test::ReadFile(out));
  REQUIRE(Killed(st));
  int i = 0;
  for (const char* spec :
       {"recovery.rollback:1", "rollback.after_write:1", "recovery.rollback:1"}) {
    const std::string log = rig.tmp() / ("open-log-" + std::to_string(i++));
    st = SpawnChild({{"REWIND_RB_CHILD", "open"},
                     {"REWIND_RB_DIR", rig.dir()},
                     {"REWIND_RB_LOG", log},
                     {i % 2 ? "REWIND_RB_HOOK" : "REWIND_CRASH_AT", spec}},
                    out);
    const std::string text = rwd::test::ReadFile(log);
    INFO("open child killed at " << spec << ": " << st.ToString() << "\nlog:\n"
                                 << text << "\noutput:\n"
                                 << rwd::test::ReadFile(out));
    REQUIRE(Killed(st));
    CHECK(CountLines(text, "P recovery.rollback") == 1);
  }
  VerifyAfterCrash(rig, pre, target, pre_newest, true);
}

// --------------------------------------------------------- 4. power cut

// What a power cut does to both doubles; the store must be gone.
void CutDisks(Rig& rig, std::mt19937_64& rng) {
  auto img = rig.images().Only();
  REQUIRE(img != nullptr);
  REQUIRE(img->open_handles() == 0);
  rig.images().SimulatePowerCut(rng);
  std::string err = rig.fs().DropUnsyncedData(&rng);
  err += rig.fs().DeleteFilesCreatedAfterLastDirSync();
  INFO(err);
  REQUIRE(err.empty());
  rig.fs().ResetState();
  rig.fs().SetActive(true);
  rig.images().SetActive(true);
}

// Arms a power cut at the hit-th pass of point; returns whether it fired.
std::shared_ptr<std::atomic<bool>> ArmCut(Rig& rig, const std::string& point, int hit) {
  auto fired = std::make_shared<std::atomic<bool>>(false);
  auto hits = std::make_shared<std::atomic<int>>(0);
  FaultInjectionFS* fs = &rig.fs();
  MemImageFactory* images = &rig.images();
  rwd::SetFaultHook([=](std::string_view name) {
    if (name == point && ++*hits == hit && !fired->exchange(true)) {
      images->SetActive(false);
      fs->SetActive(false);
    }
  });
  return fired;
}

void PowerCutCase(const std::string& point, int hit, uint64_t seed, bool cut_in_resume) {
  RigConfig cfg;
  cfg.size = (768ull << 10) + 512;
  cfg.doubles = true;
  Rig rig(cfg, seed);
  rig.Open();
  rig.RandomOps(90);
  rig.Flush();
  // Acknowledged but not flushed: the before-rollback checkpoint makes
  // them durable.
  for (int i = 0; i < 4; i++) {
    auto [off, len] = rig.RandomRange();
    rig.Write(off, len, false);
  }
  // A cut inside the before-rollback checkpoint may lose those: here they
  // must be durable already.
  if (point.starts_with("checkpoint.")) rig.Flush();
  const std::string cp = MiddleCheckpoint(rig);
  const PointInfo p = rig.Resolve(cp);
  const std::vector<char> pre = rig.live();
  const std::vector<char> target = rig.StateAt(p.lsn);
  const uint64_t pre_newest = rig.newest();
  REQUIRE(Stretches(rig.DifferingBlocks(pre, target)) >= 3);
  std::mt19937_64 rng(seed * 7919);

  auto fired = ArmCut(rig, point, hit);
  RollbackResult r;
  Status s = rig.store().Rollback(p, RollbackOptions{}, &r);
  rwd::SetFaultHook(nullptr);
  INFO("rollback with a power cut at " << point << ":" << hit << ": " << s.ToString());
  REQUIRE(fired->load());
  CHECK_FALSE(s.ok());
  rig.Drop();
  CutDisks(rig, rng);

  if (cut_in_resume) {
    // The power goes again while the open finishes the rollback: right as
    // it starts, then after its first write.
    for (const char* again : {"recovery.rollback", "rollback.after_write"}) {
      auto f = ArmCut(rig, again, 1);
      Status os = rig.TryOpen();
      rwd::SetFaultHook(nullptr);
      INFO("open with a power cut at " << again << ": " << os.ToString());
      if (f->load()) {
        CHECK_FALSE(os.ok());
      } else {
        // No marker (the cut came before it): nothing to finish.
        REQUIRE(os.ok());
        CHECK(point == "rollback.after_checkpoint");
      }
      rig.Drop();
      CutDisks(rig, rng);
    }
  }

  rig.Open();
  std::vector<char> live = rig.ReadLive();
  const bool is_pre = Diff(pre, live).empty();
  const bool is_target = Diff(target, live).empty();
  if (!is_pre && !is_target) {
    FAIL(
        "after the power cut the disk is neither as before the rollback nor its target: against "
        "the target "
        << Diff(target, live) << "; against the disk before: " << Diff(pre, live));
  }
  // The marker is durable before any block is rewritten: from
  // rollback.after_marker on, the open must finish the rollback.
  if (point == "rollback.after_checkpoint" || point.starts_with("checkpoint.")) {
    CHECK(is_pre);
  } else {
    CHECK(is_target);
  }
  auto before = BeforeCheckpoints(rig.List());
  if (point.starts_with("checkpoint.")) {
    REQUIRE(before.size() <= 1);  // cut while it was taken
  } else {
    REQUIRE(before.size() == 1);  // durable before the first rollback point
  }
  for (const auto& b : before) {
    CHECK(b.lsn == pre_newest);
    rig.AddCheckpoint(b);
  }
  const uint64_t to = rig.Info().newest_lsn;
  if (is_target) {
    rig.RecordRollbackLsns(pre, target, to, true, "the rollback's writes after the power cut");
  } else {
    CHECK(to == pre_newest);
  }
  rig.CheckLive("after the power cut");
  rig.CheckEveryLsn("after the power cut");
  rig.CheckCheckpoints("after the power cut");
  {
    auto img = rig.images().Only();
    INFO(img->violations());
    CHECK(img->violations().empty());
  }
  // Done for good: a clean close, a power cut, an open: the same.
  rig.Close();
  CutDisks(rig, rng);
  rig.Open();
  CHECK(rig.Info().newest_lsn == to);
  rig.CheckLive("after a clean close, a power cut and an open");
  rig.Close();
}

TEST_CASE(
    "a power cut inside a rollback leaves the disk before it or its whole target and never a mix",
    "[rollback]") {
  struct C {
    const char* point;
    int hit;
  };
  const std::vector<C> cases = {{"checkpoint.before_commit", 1},  {"checkpoint.after_commit", 1},
                                {"rollback.after_checkpoint", 1}, {"rollback.after_marker", 1},
                                {"rollback.after_write", 1},      {"rollback.after_write", 2},
                                {"rollback.after_write", 3},      {"rollback.before_clear", 1}};
  for (const C& c : cases) {
    for (uint64_t seed : {31, 32}) {
      DYNAMIC_SECTION(c.point << ":" << c.hit << " seed " << seed) {
        PowerCutCase(c.point, c.hit, seed, false);
      }
    }
  }
}

TEST_CASE("power cuts while the open finishes a rollback", "[rollback]") {
  for (const char* point :
       {"rollback.after_marker", "rollback.after_write", "rollback.after_checkpoint"}) {
    DYNAMIC_SECTION(point) {
      PowerCutCase(point, point == std::string("rollback.after_write") ? 2 : 1, 41, true);
    }
  }
}

}  // namespace
