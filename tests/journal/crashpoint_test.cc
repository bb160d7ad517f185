// Crash tests of the store on the real file system: a child process runs a
// scripted workload and is killed with SIGKILL (as kill -9 would) at the
// Nth pass of a named fault point; the parent then reopens the store in
// further children and checks what they read against a model built from
// the log of operations the workload child acknowledged.
//
// Every child is a fresh process (fork + exec of this test binary, running
// the hidden test case "crashpoint child process"): RocksDB's thread pools
// do not survive a bare fork, and this process may have opened stores in
// other test cases.  The parent itself never opens a store.
//
// For each fault point in rwd::AllFaultPoints() and each hit count:
//  A  workload child, armed at POINT:N (through REWIND_CRASH_AT, or through
//     rwd::SetFaultHook in the child, alternately); it must die of SIGKILL
//     or, when the point is not on its path N times, finish cleanly;
//  B  reopens the store (recovery), dumps the disk and the checkpoints and
//     kills itself before closing, so that recovery must run again;
//  C  reopens, dumps again and closes cleanly.
// B must hold every acknowledged-durable write and checkpoint and be a
// prefix of the history (see DiskModel); C must equal B (recovery is
// idempotent).  For the recovery points, A is killed mid-workload at a
// fixed point and B is the child killed inside recovery.
//
// Finally every fault point must have killed some child, and every point a
// child passed must be listed by AllFaultPoints().
#include <catch2/catch.hpp>

#include "support/disk_model.h"
#include "support/fault_fs.h"
#include "support/proc_util.h"

#include <rewind/journal/fault_point.h>
#include <rewind/journal/store.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

extern char** environ;

using rwd::Status;
using rwd::Store;
using rwd::StoreOptions;
using rwd::test::DiskModel;

namespace {

constexpr uint64_t kDiskSize = (2ull << 20) + 1536;  // ends in a partial block
constexpr int kWorkloadOps = 160;
constexpr const char* kChildTestName = "crashpoint child process";

// ---------------------------------------------------------------------------
// The child side.  Plain code, no Catch2 assertions: it reports through its
// log, its dump files, stderr and its exit code.

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int log_fd = -1;

// One line per event, appended with a single write(2) so that a kill never
// leaves half a line that looks whole.
void Log(const std::string& line) {
  std::string l = line + "\n";
  if (log_fd >= 0 && write(log_fd, l.data(), l.size()) != static_cast<ssize_t>(l.size())) _exit(5);
}

// REWIND_CRASH_CHILD_HOOK=NAME:N kills at the Nth pass of NAME through the
// in-process hook; either way the hook logs each distinct point passed.
void ArmHook() {
  std::string spec = Env("REWIND_CRASH_CHILD_HOOK");
  std::string name;
  long hit = 0;
  if (!spec.empty()) {
    size_t colon = spec.rfind(':');
    name = spec.substr(0, colon);
    hit = std::atol(spec.c_str() + colon + 1);
  }
  auto mu = std::make_shared<std::mutex>();
  auto seen = std::make_shared<std::set<std::string>>();
  auto count = std::make_shared<long>(0);
  rwd::SetFaultHook([=](std::string_view point) {
    std::lock_guard<std::mutex> l(*mu);
    if (seen->insert(std::string(point)).second) Log(fmt::format("P {}", point));
    if (!name.empty() && point == name && ++*count == hit) {
      Log(fmt::format("K {} {}", point, hit));
      kill(getpid(), SIGKILL);
    }
  });
}

Status OpenChildStore(std::unique_ptr<Store>* out) {
  StoreOptions o;
  o.dir = Env("REWIND_CRASH_CHILD_DIR");
  o.size = kDiskSize;
  o.sync_interval_us = 5000;
  o.image_sync_interval_ms = 1000;  // the tests wait for apply.after_image_sync
  return Store::Open(o, out);
}

// The scripted workload: deterministic in the seed, logged as it goes.
int RunWorkload() {
  std::unique_ptr<Store> store;
  Status s = OpenChildStore(&store);
  if (!s.ok()) {
    Log("X open " + s.ToString());
    return 3;
  }
  Log("O");
  std::mt19937_64 rng(std::strtoull(Env("REWIND_CRASH_CHILD_SEED").c_str(), nullptr, 0));
  auto rand = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  // The applier syncs the image once a second: let that point be reached.
  int naps = std::atoi(Env("REWIND_CRASH_CHILD_NAPS").c_str());
  int cp = 0;
  uint64_t tag = 1;
  std::vector<char> buf;
  for (int i = 1; i <= kWorkloadOps; i++) {
    if (naps > 0 && i % 20 == 0) {
      naps--;
      std::this_thread::sleep_for(std::chrono::milliseconds(1050));
    }
    uint64_t r = rand(100);
    std::string what;
    if (r < 56) {
      uint64_t len, off;
      if (rand(2)) {
        len = 512 * (1 + rand(128));
        off = 512 * rand((kDiskSize - len) / 512 + 1);
      } else {
        len = 512 + rand(65536 - 512 + 1);
        off = rand(kDiskSize - len + 1);
      }
      bool fua = rand(6) == 0;
      buf.resize(len);
      rwd::test::FillPattern(tag, off, len, buf.data());
      Log(fmt::format("B {} W {} {} {} {}", i, off, len, tag, fua ? 1 : 0));
      tag++;
      s = store->Write(off, static_cast<uint32_t>(len), buf.data(), fua);
    } else if (r < 64) {
      Log(fmt::format("B {} F", i));
      s = store->Flush();
    } else if (r < 76) {
      uint64_t len = 1 + rand(256 << 10);
      uint64_t off = rand(kDiskSize - len + 1);
      bool trim = r >= 70, fua = rand(4) == 0;
      Log(fmt::format("B {} Z {} {} {} {}", i, off, len, trim ? 1 : 0, fua ? 1 : 0));
      s = store->Zero(off, len, fua, trim);
    } else if (r < 90) {
      std::string name = fmt::format("cp-{}", ++cp);
      Log(fmt::format("B {} C {}", i, name));
      s = store->Checkpoint(name, nullptr);
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(rand(3000)));
      continue;
    }
    if (!s.ok()) {
      Log(fmt::format("X {} {}", i, s.ToString()));
      return 3;
    }
    Log(fmt::format("A {}", i));
  }
  s = store->Close();
  if (!s.ok()) {
    Log("X close " + s.ToString());
    return 3;
  }
  Log("D");
  return 0;
}

// Reopens the store, writes the disk to DUMP and the checkpoints to
// DUMP.cps, then closes (or, with REWIND_CRASH_CHILD_KILL_AFTER, dies).
int RunDump() {
  std::unique_ptr<Store> store;
  Status s = OpenChildStore(&store);
  if (!s.ok()) {
    std::fprintf(stderr, "open: %s\n", s.ToString().c_str());
    return 3;
  }
  std::vector<char> disk(kDiskSize);
  for (uint64_t off = 0; off < kDiskSize; off += 1 << 20) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(1 << 20, kDiskSize - off));
    s = store->Read(off, n, disk.data() + off);
    if (!s.ok()) {
      std::fprintf(stderr, "read: %s\n", s.ToString().c_str());
      return 3;
    }
  }
  std::vector<rwd::CheckpointInfo> cps;
  s = store->ListCheckpoints(&cps);
  if (!s.ok()) {
    std::fprintf(stderr, "list checkpoints: %s\n", s.ToString().c_str());
    return 3;
  }
  std::string listing;
  for (const auto& c : cps) listing += fmt::format("{} {} {}\n", c.id, c.name, c.lsn);
  const std::string dump = Env("REWIND_CRASH_CHILD_DUMP");
  rwd::test::WriteFile(dump, std::string_view(disk.data(), disk.size()));
  rwd::test::WriteFile(dump + ".cps", listing);
  if (!Env("REWIND_CRASH_CHILD_KILL_AFTER").empty()) kill(getpid(), SIGKILL);
  s = store->Close();
  if (!s.ok()) {
    std::fprintf(stderr, "close: %s\n", s.ToString().c_str());
    return 3;
  }
  return 0;
}

// ---- races between a journal I/O error and the other journal user ----
//
// A failed WAL append or sync leaves RocksDB's WAL writer in an error state;
// a later SyncWAL or WAL append on it must fail cleanly (the store then
// refuses writes), never abort the process.  The scenarios hold one thread
// at a fault point while the other meets the injected error.

// Blocks the first pass of `point` after Arm() until Release().  The hook
// shares its state, so a background thread that passes the point after the
// Gate is gone (the syncer loops) touches live memory; the destructor
// uninstalls the hook.
class Gate {
 public:
  explicit Gate(std::string point) : st_(std::make_shared<State>()) {
    st_->point = std::move(point);
  }
  ~Gate() { rwd::SetFaultHook(nullptr); }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  void Install() {
    rwd::SetFaultHook([st = st_](std::string_view p) {
      if (p != st->point || !st->armed.exchange(false)) return;
      std::unique_lock<std::mutex> l(st->mu);
      st->reached = true;
      st->cv.notify_all();
      st->cv.wait_for(l, std::chrono::seconds(10), [&] { return st->released; });
    });
  }
  void Arm() { st_->armed = true; }
  bool WaitReached() {
    std::unique_lock<std::mutex> l(st_->mu);
    return st_->cv.wait_for(l, std::chrono::seconds(10), [&] { return st_->reached; });
  }
  void Release() {
    std::lock_guard<std::mutex> l(st_->mu);
    st_->released = true;
    st_->cv.notify_all();
  }

 private:
  struct State {
    std::string point;
    std::atomic<bool> armed{false};
    std::mutex mu;
    std::condition_variable cv;
    bool reached = false, released = false;
  };
  std::shared_ptr<State> st_;
};

int Fail(const std::string& why) {
  std::fprintf(stderr, "%s\n", why.c_str());
  return 7;
}

// Writes, Flush and Checkpoint must all fail now, with a refusal.
int ExpectRefusing(Store& store) {
  std::vector<char> data(4096, 'r');
  for (int i = 0; i < 5; i++) {
    Status s = store.Write(4096 * static_cast<uint64_t>(i), 4096, data.data(), i % 2 == 0);
    if (s.ok()) return Fail("a write was acknowledged after the journal failed");
    if (s.code() != Status::Code::kReadOnly && s.code() != Status::Code::kIOError) {
      return Fail(std::string("a write after the failure returned ") + s.CodeName() + ": " +
                  s.ToString());
    }
  }
  if (store.Flush().ok()) return Fail("a flush succeeded after the journal failed");
  if (store.Checkpoint("after", nullptr).ok())
    return Fail("a checkpoint succeeded after the journal failed");
  return 0;
}

int RunRace(const std::string& mode) {
  auto fs = std::make_shared<rwd::test::FaultInjectionFS>();
  StoreOptions o;
  o.dir = Env("REWIND_CRASH_CHILD_DIR");
  o.size = 1 << 20;
  o.fs = fs;
  o.sync_interval_us = 1000;
  o.image_sync_interval_ms = 1000;  // the tests wait for apply.after_image_sync
  std::unique_ptr<Store> store;
  Status s = Store::Open(o, &store);
  if (!s.ok()) return Fail("open: " + s.ToString());
  std::vector<char> base(65536), data(4096);
  rwd::test::FillPattern(1, 0, base.size(), base.data());
  s = store->Write(0, static_cast<uint32_t>(base.size()), base.data(), false);
  if (s.ok()) s = store->Flush();
  if (!s.ok()) return Fail("baseline: " + s.ToString());
  rwd::test::FillPattern(2, 131072, data.size(), data.data());

  if (mode.starts_with("race-append-then-sync")) {
    // The committer is about to sync when a write's WAL append starts
    // failing; then it syncs, and journals the write.
    Gate gate("flush.before_sync");
    gate.Install();
    gate.Arm();
    s = store->Write(131072, 4096, data.data(), false);  // something for the syncer to sync
    if (!s.ok()) return Fail("write: " + s.ToString());
    if (!gate.WaitReached()) return Fail("the committer never reached flush.before_sync");
    // EIO leaves RocksDB's WAL writer failed; after ENOSPC RocksDB may first
    // recover on its own in the background (onto a new WAL), which hides
    // the race at times.
    const bool nospace = mode.ends_with("-enospc");
    fs->FailWrites(rwd::test::FsFault{
        nospace ? rwd::test::FsFault::Kind::kNoSpace : rwd::test::FsFault::Kind::kIOError, 0, -1,
        ".log"});
    // The committer is held at the gate, so this write is only queued (and
    // acknowledged, like a write into a page cache); its WAL append fails
    // once the committer goes on.  The flush after it must fail.
    s = store->Write(135168, 4096, data.data(), false);
    std::fprintf(stderr, "write meeting %s: %s\n", nospace ? "ENOSPC" : "EIO",
                 s.ToString().c_str());
    gate.Release();
    s = store->Flush();
    std::fprintf(stderr, "flush after it: %s\n", s.ToString().c_str());
    if (s.ok()) return Fail("a flush after a failed WAL append succeeded");
  } else if (mode == "append-fails") {
    // No race: a write's WAL append fails while the syncer is idle; the
    // store is then used and closed.
    fs->FailWrites(rwd::test::FsFault{rwd::test::FsFault::Kind::kIOError, 0, -1, ".log"});
    s = store->Write(135168, 4096, data.data(), false);
    std::fprintf(stderr, "write meeting EIO: %s\n", s.ToString().c_str());
    s = store->Flush();
    std::fprintf(stderr, "flush after it: %s\n", s.ToString().c_str());
    if (s.ok()) return Fail("a flush after a failed WAL append succeeded");
  } else if (mode == "race-sync-then-append") {
    // A write is on its way to the commit queue when the WAL sync fails;
    // then it appends to the WAL.  The sync must have something to do when
    // it fails (an earlier periodic sync may have made everything durable),
    // so the write it covers comes after the fault is armed.
    Gate gate("write.before_commit");
    gate.Install();
    gate.Arm();
    Status racer;
    std::thread t([&] { racer = store->Write(135168, 4096, data.data(), false); });
    if (!gate.WaitReached()) {
      t.join();
      return Fail("the write never reached write.before_commit");
    }
    fs->FailSyncs(rwd::test::FsFault{rwd::test::FsFault::Kind::kIOError, 0, -1, ".log"});
    s = store->Write(131072, 4096, data.data(), false);
    std::fprintf(stderr, "write before the failing sync: %s\n", s.ToString().c_str());
    s = store->Flush();
    std::fprintf(stderr, "flush meeting EIO: %s\n", s.ToString().c_str());
    gate.Release();
    t.join();
    std::fprintf(stderr, "the write held at write.before_commit: %s\n", racer.ToString().c_str());
    if (s.ok()) return Fail("a flush whose WAL sync failed succeeded");
  } else {
    return 4;
  }
  rwd::SetFaultHook(nullptr);
  int rc = ExpectRefusing(*store);
  if (rc != 0) return rc;
  fs->ClearFaults();
  (void)store->Close();
  store.reset();
  // The acknowledged baseline survives.
  s = Store::Open(o, &store);
  if (!s.ok()) return Fail("reopen: " + s.ToString());
  std::vector<char> got(base.size());
  s = store->Read(0, static_cast<uint32_t>(got.size()), got.data());
  if (!s.ok() || got != base) return Fail("the flushed baseline did not survive: " + s.ToString());
  s = store->Close();
  if (!s.ok()) return Fail("close: " + s.ToString());
  return 0;
}

int RunChild(const std::string& mode) {
  const std::string log = Env("REWIND_CRASH_CHILD_LOG");
  if (!log.empty()) {
    log_fd = open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log_fd < 0) return 4;
  }
  ArmHook();
  if (mode == "workload") return RunWorkload();
  if (mode == "dump") return RunDump();
  return RunRace(mode);
}

// ---------------------------------------------------------------------------
// The parent side.

// Runs this binary's child test case with extra environment; returns how
// it ended.  Its stdout and stderr go to out_file.
rwd::test::ExitStatus RunChildProcess(const std::map<std::string, std::string>& env,
                                      const std::string& out_file) {
  return rwd::test::RunSelfAsChild(kChildTestName, env, "REWIND_CRASH", out_file,
                                   std::chrono::seconds(120));
}

bool KilledBySigkill(const rwd::test::ExitStatus& st) {
  return !st.timed_out && st.signal == SIGKILL;
}

// What the workload child's log says.
struct Workload {
  DiskModel model{kDiskSize};
  struct Cp {
    uint64_t ops_before;
    bool acked;
  };
  std::map<std::string, Cp> checkpoints;
  std::set<std::string> points_passed;
  bool opened = false, done = false;
  std::string error;  // an X line: the child failed on its own
  int acked_ops = 0;
};

Workload ParseLog(const std::string& text) {
  Workload w;
  struct Begun {
    char kind;
    bool fua;
    std::string name;
  };
  std::map<int, Begun> begun;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string ev;
    ls >> ev;
    if (ev == "O") {
      w.opened = true;
    } else if (ev == "D") {
      w.done = true;
    } else if (ev == "P") {
      std::string p;
      ls >> p;
      w.points_passed.insert(p);
    } else if (ev == "X") {
      w.error = line;
    } else if (ev == "B") {
      int i;
      char kind;
      ls >> i >> kind;
      Begun b{kind, false, ""};
      if (kind == 'W') {
        uint64_t off, len, tag;
        int fua;
        ls >> off >> len >> tag >> fua;
        std::vector<char> data(len);
        rwd::test::FillPattern(tag, off, len, data.data());
        w.model.Write(
            off, data.data(), len,
            fmt::format("#{} write tag {} [{}, +{}){}", i, tag, off, len, fua ? " fua" : ""));
        b.fua = fua;
      } else if (kind == 'Z') {
        uint64_t off, len;
        int trim, fua;
        ls >> off >> len >> trim >> fua;
        w.model.Zero(off, len,
                     fmt::format("#{} {} [{}, +{}){}", i, trim ? "trim" : "zero", off, len,
                                 fua ? " fua" : ""));
        b.fua = fua;
      } else if (kind == 'C') {
        ls >> b.name;
        w.checkpoints[b.name] = Workload::Cp{w.model.ops(), false};
      }
      begun[i] = b;
    } else if (ev == "A") {
      int i;
      ls >> i;
      const Begun& b = begun.at(i);
      w.acked_ops++;
      // Single-threaded: an acknowledged flush or FUA makes everything
      // recorded so far durable.
      if (b.kind == 'F' || ((b.kind == 'W' || b.kind == 'Z') && b.fua)) w.model.MarkDurable();
      if (b.kind == 'C') w.checkpoints[b.name].acked = true;
    }
  }
  return w;
}

struct Dump {
  std::string disk;
  std::vector<std::string> checkpoints;  // names in listing order
  std::string listing;
};

Dump ReadDump(const std::string& path) {
  Dump d;
  d.disk = rwd::test::ReadFile(path);
  d.listing = rwd::test::ReadFile(path + ".cps");
  for (const std::string& l : rwd::test::NonEmptyLines(d.listing)) {
    std::istringstream ls(l);
    std::string id, name;
    ls >> id >> name;
    d.checkpoints.push_back(name);
  }
  return d;
}

// Checks a dump against the workload's model and adopts it.
void VerifyDump(Workload& w, const Dump& d, const std::string& when) {
  INFO(when);
  REQUIRE(d.disk.size() == kDiskSize);
  uint64_t min_ops = 0;
  std::set<std::string> listed;
  for (const std::string& name : d.checkpoints) {
    INFO("listed checkpoint '" << name << "'");
    auto it = w.checkpoints.find(name);
    REQUIRE(it != w.checkpoints.end());   // never asked for
    REQUIRE(listed.insert(name).second);  // listed twice
    min_ops = std::max(min_ops, it->second.ops_before);
  }
  for (auto it = w.checkpoints.begin(); it != w.checkpoints.end();) {
    INFO("acknowledged checkpoint '" << it->first << "' is not listed");
    if (it->second.acked) CHECK(listed.count(it->first) == 1);
    if (listed.count(it->first)) {
      it->second.acked = true;
      ++it;
    } else {
      it = w.checkpoints.erase(it);
    }
  }
  uint64_t recovered = 0;
  std::string err = w.model.CheckRecovered(d.disk.data(), min_ops, &recovered);
  INFO(err);
  REQUIRE(err.empty());
  w.model.Reset(d.disk.data());
}

struct CaseResult {
  bool killed = false;  // the armed point killed the child
  std::set<std::string> points_passed;
};

// One crash case in a fresh directory.  recovery_point: arm point:hit in
// the first reopen instead of the workload.
CaseResult RunCase(const std::string& point, int hit, bool use_env, uint64_t seed) {
  rwd::test::TempDir tmp("rwcrash");
  const std::string dir = tmp / "store", log = tmp / "log", out = tmp / "out";
  const bool in_recovery = point.starts_with("recovery.");
  auto child_out = [&] { return rwd::test::ReadFile(out); };
  std::map<std::string, std::string> env = {
      {"REWIND_CRASH_CHILD", "workload"},
      {"REWIND_CRASH_CHILD_DIR", dir},
      {"REWIND_CRASH_CHILD_LOG", log},
      {"REWIND_CRASH_CHILD_SEED", std::to_string(seed)},
  };
  auto arm = [&](std::map<std::string, std::string>* e, const std::string& p, int n) {
    if (use_env)
      (*e)["REWIND_CRASH_AT"] = fmt::format("{}:{}", p, n);
    else
      (*e)["REWIND_CRASH_CHILD_HOOK"] = fmt::format("{}:{}", p, n);
  };
  CaseResult res;
  if (in_recovery) {
    // Leave plenty to replay: die after a fair share of the workload.
    arm(&env, "write.before_ack", 60);
  } else {
    arm(&env, point, hit);
    if (point == "apply.after_image_sync" && hit <= 5)
      env["REWIND_CRASH_CHILD_NAPS"] = std::to_string(hit + 1);
  }
  rwd::test::ExitStatus st = RunChildProcess(env, out);
  Workload w = ParseLog(rwd::test::ReadFile(log));
  res.points_passed = w.points_passed;
  INFO("workload child: " << st.ToString() << ", " << w.acked_ops << " operations acknowledged\n"
                          << child_out());
  REQUIRE(w.error.empty());
  if (KilledBySigkill(st)) {
    res.killed = !in_recovery;
    REQUIRE_FALSE(w.done);
  } else {
    REQUIRE(st.success());  // the point was not passed that often
    REQUIRE(w.done);
    w.model.MarkDurable();  // a clean close keeps everything
    for (auto& [name, cp] : w.checkpoints) CHECK(cp.acked);
  }

  std::map<std::string, std::string> dump_env = {
      {"REWIND_CRASH_CHILD", "dump"},
      {"REWIND_CRASH_CHILD_DIR", dir},
      {"REWIND_CRASH_CHILD_LOG", log + ".dump"},
  };
  if (in_recovery) {
    auto e = dump_env;
    arm(&e, point, hit);
    e["REWIND_CRASH_CHILD_DUMP"] = tmp / "dump0";
    rwd::test::ExitStatus rst = RunChildProcess(e, out);
    INFO("child armed inside recovery: " << rst.ToString() << "\n" << child_out());
    if (KilledBySigkill(rst)) {
      res.killed = true;
    } else {
      REQUIRE(rst.success());  // recovery did not pass the point that often
      VerifyDump(w, ReadDump(tmp / "dump0"), "dump of a reopen armed inside recovery");
    }
  }
  // B: reopen, dump, die before closing.
  auto b_env = dump_env;
  b_env["REWIND_CRASH_CHILD_DUMP"] = tmp / "dump1";
  b_env["REWIND_CRASH_CHILD_KILL_AFTER"] = "1";
  rwd::test::ExitStatus bst = RunChildProcess(b_env, out);
  INFO("first reopen: " << bst.ToString() << "\n" << child_out());
  REQUIRE(KilledBySigkill(bst));
  Dump b = ReadDump(tmp / "dump1");
  VerifyDump(w, b, "first reopen after the crash");
  // C: reopen after a crash right after recovery; must find the same.
  auto c_env = dump_env;
  c_env["REWIND_CRASH_CHILD_DUMP"] = tmp / "dump2";
  rwd::test::ExitStatus cst = RunChildProcess(c_env, out);
  INFO("second reopen: " << cst.ToString() << "\n" << child_out());
  REQUIRE(cst.success());
  Dump c = ReadDump(tmp / "dump2");
  CHECK(c.listing == b.listing);
  VerifyDump(w, c, "second reopen (recovery again after a crash right after recovery)");
  for (const auto& p : ParseLog(rwd::test::ReadFile(log + ".dump")).points_passed) {
    res.points_passed.insert(p);
  }
  return res;
}

}  // namespace

TEST_CASE(kChildTestName, "[.crash-child]") {
  const std::string mode = Env("REWIND_CRASH_CHILD");
  if (mode.empty()) {
    SUCCEED("the helper process of the [crash] tests; does nothing on its own");
    return;
  }
  std::fflush(nullptr);
  _exit(RunChild(mode));
}

TEST_CASE("kills at every named fault point keep every acknowledged write", "[journal][crash]") {
  const uint64_t seed = std::strtoull(
      Env("REWIND_CRASH_SEED").empty() ? "77" : Env("REWIND_CRASH_SEED").c_str(), nullptr, 0);
  std::set<std::string> killed_at, passed;
  int n = 0;
  for (std::string_view p : rwd::AllFaultPoints()) {
    const std::string point(p);
    // The workload takes no rollback (tests/journal/rollback_test.cc) and no
    // pending checkpoint (tests/journal/pending_checkpoint_test.cc).
    if (point.starts_with("rollback.") || point.starts_with("prune.") || point == "recovery.rollback" ||
        point.ends_with("_pending")) {
      continue;
    }
    for (int hit : {1, 2, 5, 20}) {
      const bool use_env = n % 2 == 0;
      INFO(fmt::format("crash at {}:{} armed through {}, seed {}", point, hit,
                       use_env ? "REWIND_CRASH_AT" : "SetFaultHook", seed + n));
      CaseResult r = RunCase(point, hit, use_env, seed + static_cast<uint64_t>(n));
      n++;
      if (r.killed) killed_at.insert(point);
      passed.insert(r.points_passed.begin(), r.points_passed.end());
    }
  }
  std::vector<std::string> never, unlisted;
  std::set<std::string> listed;
  for (std::string_view p : rwd::AllFaultPoints()) {
    listed.emplace(p);
    const bool rollback = p.starts_with("rollback.") || p.starts_with("prune.") ||
                          p == "recovery.rollback" || p.ends_with("_pending");
    if (!rollback && !killed_at.count(std::string(p))) never.emplace_back(p);
  }
  for (const std::string& p : passed) {
    if (!listed.count(p)) unlisted.push_back(p);
  }
  INFO("fault points that never killed a child: " << fmt::format("{}", fmt::join(never, ", ")));
  CHECK(never.empty());
  INFO("fault points passed but missing from AllFaultPoints(): " << fmt::format(
           "{}", fmt::join(unlisted, ", ")));
  CHECK(unlisted.empty());
}

TEST_CASE(
    "a journal write failing while the syncer is about to sync refuses writes and does not abort",
    "[journal][crash]") {
  // Regression: the syncer, already past its check for a refused store,
  // called SyncWAL on a WAL writer whose append had just failed; Debian's
  // librocksdb 7.8.3 keeps its assertions and aborts the process in
  // WritableFileWriter::AssertFalseAndGetStatusForPrevError (a previous
  // error is tolerated there only when it came from a failed sync).  Each child
  // holds one thread at a fault point while the other meets the error, and
  // must then see every write refused and, after a restart, its data.
  // race-append-then-sync (EIO) hits the race every time; with ENOSPC
  // RocksDB sometimes resumes onto a new WAL first.
  const std::string mode =
      GENERATE(std::string("race-append-then-sync"), std::string("race-append-then-sync-enospc"),
               std::string("race-sync-then-append"), std::string("append-fails"));
  rwd::test::TempDir tmp("rwrace");
  const std::string out = tmp / "out";
  rwd::test::ExitStatus st = RunChildProcess(
      {{"REWIND_CRASH_CHILD", mode}, {"REWIND_CRASH_CHILD_DIR", tmp / "store"}}, out);
  INFO(mode << ": child " << st.ToString() << "\n" << rwd::test::ReadFile(out));
  CHECK(st.success());
}
