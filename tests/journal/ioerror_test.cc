// I/O errors, the whole matrix: {live image, RocksDB WAL, RocksDB table
// files (SST), payload log} x {EIO, ENOSPC} x {once, persistent} x {write,
// sync}, injected through the doubles (MemImage, FaultInjectionFS) under a
// random workload of writes, FUA writes, flushes, zeros, trims and
// checkpoints.  In every cell:
//  * the error reaches the client: some operation fails (never a hang),
//    and nothing acknowledged as durable -- a FUA write, a flush, a
//    checkpoint -- is lost: the model checks the reopened disk;
//  * from the first failure on the store refuses every write, zero, flush
//    and checkpoint, and GetInfo says why (a failed fsync is never
//    retried: the data it covered may be gone from the page cache);
//  * a persistent fault still there at the next Open: the Open fails, or
//    opens a store that reads back everything acknowledged and still fails
//    what the fault hits;
//  * once the fault is gone, the reopened store (after a kill or a power
//    cut) holds everything acknowledged, Store::Verify finds no damage,
//    and it takes writes again.
// The test prints one line per cell (the table in docs/reliability.md).
#include <catch2/catch.hpp>

#include "support/store_harness.h"

#include <rewind/journal/store.h>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

using rwd::Status;
using rwd::test::FsFault;
using rwd::test::HarnessConfig;
using rwd::test::MemImage;
using rwd::test::StoreHarness;

namespace {

enum class Target { kImage, kWal, kSst, kVlog };
enum class On { kWrite, kSync };

const char* Name(Target t) {
  switch (t) {
    case Target::kImage: return "image";
    case Target::kWal: return "WAL";
    case Target::kSst: return "SST";
    case Target::kVlog: return "payload log";
  }
  return "?";
}

void Inject(StoreHarness& h, Target t, On on, int err, bool persistent) {
  if (t == Target::kImage) {
    h.image().InjectError(on == On::kWrite ? MemImage::Op::kWrite : MemImage::Op::kSync, err, 0,
                          persistent ? -1 : 1);
    return;
  }
  FsFault f;
  f.kind = err == ENOSPC ? FsFault::Kind::kNoSpace : FsFault::Kind::kIOError;
  f.times = persistent ? -1 : 1;
  f.path_contains = t == Target::kWal ? ".log" : t == Target::kSst ? ".sst" : ".vlog";
  if (on == On::kWrite) {
    h.fs().FailWrites(f);
  } else {
    h.fs().FailSyncs(f);
  }
}

void ClearFaults(StoreHarness& h) {
  h.fs().ClearFaults();
  if (auto img = h.images().Only()) img->ClearErrors();
}

uint64_t Injected(StoreHarness& h) {
  uint64_t n = h.fs().injected_failures();
  if (auto img = h.images().Only()) n += img->injected_failures();
  return n;
}

// After a failure: every further write, zero, flush and checkpoint fails.
// Returns the code of the refusals.
std::string RequireRefusing(StoreHarness& h) {
  std::vector<char> data(4096, 'x');
  std::string code;
  for (int i = 0; i < 4; i++) {
    Status s = h.store().Write(4096 * static_cast<uint64_t>(i), 4096, data.data(), i % 2 == 0);
    INFO("write after the failure: " << s.ToString());
    REQUIRE_FALSE(s.ok());
    code = s.CodeName();
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
  return code;
}

struct Row {
  std::string cell;
  uint64_t acked = 0;
  std::string first_error;
  std::string refusal;
  std::string reopen_with_fault;
};

}  // namespace

TEST_CASE("I/O errors on the image, the WAL, the tables and the payload log lose nothing acknowledged",
          "[journal][ioerror]") {
  const Target target = GENERATE(Target::kImage, Target::kWal, Target::kSst, Target::kVlog);
  const int err = GENERATE(EIO, ENOSPC);
  const bool persistent = GENERATE(false, true);
  const On on = GENERATE(On::kWrite, On::kSync);
  const std::string cell =
      fmt::format("{} {} {} {}", Name(target), on == On::kWrite ? "write" : "sync",
                  err == EIO ? "EIO" : "ENOSPC", persistent ? "persistent" : "once");
  INFO(cell);
  // Small memtables, so that RocksDB writes table files while the workload
  // runs; image syncs every 50 ms.
  HarnessConfig cfg{2ull << 20, 4096, 3000, 64u << 10};
  cfg.image_sync_interval_ms = 50;
  StoreHarness h(cfg, 1000 + static_cast<uint64_t>(target) * 16 + static_cast<uint64_t>(err));
  h.Open();
  h.Run(40);
  h.DoFlush();
  h.DoCheckpoint();
  Inject(h, target, on, err, persistent);

  // The workload until the client sees an error: small writes (the
  // journal's records fill memtables quickly), FUA writes, flushes, zeros,
  // trims, checkpoints.
  Row row;
  row.cell = cell;
  h.set_expect_errors(true);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool ok = true;
  while (ok && std::chrono::steady_clock::now() < deadline) {
    const uint64_t r = h.Rand(100);
    if (r < 70) {
      auto [off, len] = h.Range(512, 8192);
      ok = h.WriteAt(off, len, h.Rand(6) == 0);
    } else if (r < 85) {
      ok = h.DoFlush();
    } else if (r < 95) {
      ok = h.DoZero(h.Rand(2) == 0, h.Rand(4) == 0);
    } else {
      ok = h.DoCheckpoint();
    }
    if (ok) row.acked++;
  }
  const Status first = h.last_error();
  INFO("first error after " << row.acked << " acknowledged operations: " << first.ToString());
  REQUIRE_FALSE(first.ok());  // the client was told
  CHECK(Injected(h) >= 1);
  row.first_error = first.CodeName();
  row.refusal = RequireRefusing(h);

  if (persistent) {
    // The fault is still there when the store is opened again.
    h.Kill();
    Status s = h.TryOpen();
    if (!s.ok()) {
      row.reopen_with_fault = std::string("Open fails (") + s.CodeName() + ")";
    } else {
      // Whatever it serves must hold everything acknowledged (Verify), and
      // the next operations that need the faulty file fail.
      row.reopen_with_fault = "opens";
      h.Verify("reopened with the fault still there");
      bool failed = false;
      for (int i = 0; i < 300 && !failed; i++) {
        failed = !h.WriteAt(8192 * h.Rand(200), 4096, true);
        if (!failed && i % 10 == 9) failed = !h.DoFlush();
        if (i % 30 == 29) std::this_thread::sleep_for(std::chrono::milliseconds(60));
      }
      if (failed) row.reopen_with_fault += ", then fails " + std::string(h.last_error().CodeName());
      // A table file is written only when a memtable fills: 300 writes may
      // not get there.
      if (target != Target::kSst) CHECK(failed);
    }
  } else {
    row.reopen_with_fault = "-";
  }
  ClearFaults(h);
  if (h.Rand(2) == 0) {
    h.PowerCut();
  } else {
    h.Kill();
  }
  h.set_expect_errors(false);
  h.Open();
  h.Verify("after reopening a store that refused writes");
  h.Run(20);
  REQUIRE(h.DoFlush());
  h.Close();
  fmt::print("I/O error {}: {} operations acknowledged, then the client got {}; refused with {}; "
             "reopen with the fault: {}; recovered, verified\n",
             cell, row.acked, row.first_error, row.refusal, row.reopen_with_fault);
}
