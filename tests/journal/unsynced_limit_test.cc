// StoreOptions::max_unsynced_bytes: writers wait while more than that many
// bytes are sequenced but not durable, and their waiting makes the journal
// sync at once; with no limit (0, the default) plain writes wait for nothing
// and the journal syncs on its interval.
#include <catch2/catch.hpp>
#include <rewind/journal/fault_point.h>
#include <rewind/journal/store.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string_view>
#include <vector>

namespace {

namespace fs = std::filesystem;
using rwd::Status;
using rwd::Store;
using rwd::StoreOptions;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/rewind-unsynced-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

struct HookGuard {
  explicit HookGuard(std::function<void(std::string_view)> fn) { rwd::SetFaultHook(std::move(fn)); }
  ~HookGuard() { rwd::SetFaultHook(nullptr); }
};

// Writes n 4 KiB blocks with plain writes; returns the journal syncs seen
// meanwhile and how long the writes took.
int SyncsDuring(uint64_t limit, int n, double* seconds) {
  TempDir tmp;
  StoreOptions o;
  o.dir = (tmp.path / "store").string();
  o.size = 8 << 20;
  o.sync_interval_us = 10'000'000;  // no sync on the interval during the test
  o.max_unsynced_bytes = limit;
  std::unique_ptr<Store> s;
  Status st = Store::Open(o, &s);
  INFO(st.ToString());
  REQUIRE(st.ok());
  std::atomic<int> syncs{0};
  std::vector<char> block(4096, 'x');
  const auto start = std::chrono::steady_clock::now();
  {
    HookGuard hook([&](std::string_view p) {
      if (p == "flush.before_sync") syncs++;
    });
    for (int i = 0; i < n; i++) {
      block[0] = static_cast<char>(i);
      REQUIRE(s->Write(static_cast<uint64_t>(i) * 4096, 4096, block.data(), false).ok());
    }
  }
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int seen = syncs.load();
  REQUIRE(s->Close().ok());
  return seen;
}

TEST_CASE("max_unsynced_bytes makes writers wait for syncs beyond it, and 0 for none",
          "[journal][unsynced]") {
  double secs = 0;
  // 32 KiB: at most 8 blocks may be undurable, so 256 writes need about 31
  // syncs, each asked for by a waiting writer (the interval is 10 s).
  const int limited = SyncsDuring(32 << 10, 256, &secs);
  INFO("syncs with a 32 KiB limit: " << limited << " in " << secs << " s");
  CHECK(limited >= 256 / 8 - 2);
  CHECK(secs < 5.0);  // woken by the writers, not by the 10 s interval
  const int unlimited = SyncsDuring(0, 256, &secs);
  INFO("syncs without a limit: " << unlimited << " in " << secs << " s");
  CHECK(unlimited == 0);
}

}  // namespace
