// In-process throughput of the journal library alone (no NBD): T threads
// writing random 4 KiB blocks, to separate the store's cost from nbdkit's.
// Usage: store_bench DIR [threads=16] [seconds=10] [size=1G] [mode=write|read]
//        store_bench DIR THREADS 0 SIZE records N [bs=512] [region=SIZE]
// The records mode makes exactly N writes of bs bytes (aligned to bs) at random
// in the first region bytes of the disk, as fast as it can, then a flush: it
// builds long histories for bench/costs.sh (COSTS_HISTORY_GEN=store_bench).
#include <rewind/journal/store.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [threads] [seconds] [size] [write|read]\n", argv[0]);
    return 2;
  }
  int threads = argc > 2 ? std::atoi(argv[2]) : 16;
  int seconds = argc > 3 ? std::atoi(argv[3]) : 10;
  uint64_t size = 1ull << 30;
  if (argc > 4 && !rwd::ParseSize(argv[4], &size).ok()) return 2;
  bool read = argc > 5 && std::string(argv[5]) == "read";
  bool records = argc > 5 && std::string(argv[5]) == "records";
  uint64_t target = 0, bs = 4096, region = size;
  if (records) {
    if (argc < 7 || !rwd::ParseSize(argv[6], &target).ok() ||
        (argc > 7 && !rwd::ParseSize(argv[7], &bs).ok()) ||
        (argc > 8 && !rwd::ParseSize(argv[8], &region).ok()) || bs == 0 || region < bs ||
        region > size) {
      std::fprintf(stderr, "store_bench: records N [bs] [region]: bad arguments\n");
      return 2;
    }
    if (argc <= 7) bs = 512;
  }
  std::atomic<uint64_t> issued{0};
  rwd::StoreOptions o;
  o.dir = argv[1];
  o.size = size;
  if (const char* e = std::getenv("SYNC_US")) o.sync_interval_us = std::atoi(e);
  std::unique_ptr<rwd::Store> store;
  rwd::Status s = rwd::Store::Open(o, &store);
  if (!s.ok()) {
    std::fprintf(stderr, "store_bench: %s\n", s.message().c_str());
    return 1;
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0};
  std::vector<std::thread> th;
  for (int t = 0; t < threads; t++) {
    th.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::vector<char> buf(records ? bs : 4096, static_cast<char>(t));
      if (records) {
        for (auto& c : buf) c = static_cast<char>(rng());
      }
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        rwd::Status st;
        if (records) {
          if (issued.fetch_add(1, std::memory_order_relaxed) >= target) break;
          uint64_t off = (rng() % (region / bs)) * bs;
          buf[0] = static_cast<char>(n);
          st = store->Write(off, bs, buf.data(), false);
        } else {
          uint64_t off = (rng() % (size / 4096)) * 4096;
          st = read ? store->Read(off, 4096, buf.data()) : store->Write(off, 4096, buf.data(), false);
        }
        if (!st.ok()) {
          std::fprintf(stderr, "store_bench: %s\n", st.message().c_str());
          std::exit(1);
        }
        n++;
      }
      ops += n;
    });
  }
  auto t0 = std::chrono::steady_clock::now();
  if (!records) {
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    stop = true;
  }
  for (auto& x : th) x.join();
  if (records) {
    s = store->Flush();
    if (!s.ok()) {
      std::fprintf(stderr, "store_bench: %s\n", s.message().c_str());
      return 1;
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %d threads, %.0f ops/s\n", read ? "read" : records ? "records" : "write",
              threads, ops / secs);
  return store->Close().ok() ? 0 : 1;
}
