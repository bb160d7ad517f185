// In-process throughput of the journal library alone (no NBD): T threads
// writing random 4 KiB blocks, to separate the store's cost from nbdkit's.
// Usage: store_bench DIR [threads=16] [seconds=10] [size=1G] [mode=write|read]
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
      std::vector<char> buf(4096, static_cast<char>(t));
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        uint64_t off = (rng() % (size / 4096)) * 4096;
        rwd::Status st = read ? store->Read(off, 4096, buf.data())
                              : store->Write(off, 4096, buf.data(), false);
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
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (auto& x : th) x.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %d threads, %.0f ops/s\n", read ? "read" : "write", threads, ops / secs);
  return store->Close().ok() ? 0 : 1;
}
