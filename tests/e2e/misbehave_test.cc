// Clients that misbehave (issue 6, item 8): a client process killed with
// SIGKILL while its writes are in flight, clients that drop the connection
// with requests in flight, unaligned, zero-length, out-of-range and
// oversized requests, and multi-conn flush semantics across connections (a
// write acknowledged on connection A is made durable by a flush on
// connection B: kill -9 right after B's flush, and A's write is there).
// Throughout, another client keeps being served correctly, the store
// verifies clean, and nothing acknowledged as durable is lost.
//
// tests/e2e/durability_test.cc covers kill -9 of nbdkit under a random
// load from well-behaved clients; nothing here repeats that.
#include <fcntl.h>
#include <libnbd.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <iostream>
#include <random>
#include <thread>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kSize = 64 * kMiB;
constexpr uint64_t kBlock = 64 * kKiB;

// The value of block b in round r: never all zeros, unique per (r, b).
std::vector<uint8_t> BlockValue(uint64_t round, uint64_t block) {
  return Pattern(kBlock, round * 100000 + block + 1);
}

// A client that writes and reads its own region [base, base + len) over and
// over on its own connection and checks every read; it must never fail
// while other clients misbehave.
class Bystander {
 public:
  Bystander(const std::string& socket, uint64_t base) : base_(base) {
    client_ = NbdClient::Connect(socket);
    thread_ = std::thread([this] { Run(); });
  }
  ~Bystander() { Stop(); }
  // Returns "" when every request succeeded and read back right.
  std::string Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return error_;
  }
  uint64_t rounds() const { return rounds_; }

 private:
  void Run() {
    try {
      // Bounded, so that a test that hangs elsewhere cannot fill the disk
      // with journal.
      for (uint64_t i = 1; !stop_ && i <= kMaxRounds; ++i) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        const auto data = Pattern(kBlock, 7000000 + i);
        const uint64_t off = base_ + (i % 16) * kBlock;
        client_->Pwrite(data, off, i % 3 == 0 ? LIBNBD_CMD_FLAG_FUA : 0);
        if (client_->Pread(kBlock, off) != data) {
          error_ = fmt::format("bystander read back wrong data at {}", off);
          return;
        }
        if (i % 8 == 0) client_->Flush();
        rounds_ = i;
      }
    } catch (const std::exception& e) {
      error_ = std::string("bystander: ") + e.what();
    }
  }
  static constexpr uint64_t kMaxRounds = 20000;  // 1.25 GiB of writes at most
  const uint64_t base_;
  std::unique_ptr<NbdClient> client_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> rounds_{0};
  std::string error_;
};

void CheckVerifyClean(const std::string& dir) {
  ProcResult r = RunCli({"verify", dir});
  INFO(r.Describe());
  CHECK(r.ok());
  CHECK(r.out.find("clean") != std::string::npos);
}

// In the writer's process: connect, keep 32 writes of whole blocks in
// flight (every fourth with FUA), and report each acknowledged FUA write's
// block on fd as it completes.  Never returns.
[[noreturn]] void WriterChild(const std::string& socket, uint64_t round, uint64_t first_block,
                              uint64_t blocks, int fd) {
  nbd_handle* h = nbd_create();
  if (h == nullptr || nbd_connect_unix(h, socket.c_str()) == -1) _exit(2);
  struct Ctx {
    uint64_t block;
    bool fua;
    int fd;
    std::vector<uint8_t> data;
  };
  auto done = [](void* user, int* error) -> int {
    auto* c = static_cast<Ctx*>(user);
    if (*error == 0 && c->fua) {
      uint64_t b = c->block;
      (void)!write(c->fd, &b, sizeof b);
    }
    return 1;
  };
  auto free_ctx = [](void* user) { delete static_cast<Ctx*>(user); };
  std::mt19937_64 rng(round);
  for (uint64_t n = 0;; ++n) {
    while (nbd_aio_in_flight(h) >= 32) {
      if (nbd_poll(h, -1) == -1) _exit(3);
    }
    auto* c = new Ctx{first_block + rng() % blocks, n % 4 == 0, fd, {}};
    c->data = BlockValue(round, c->block);
    if (nbd_aio_pwrite(h, c->data.data(), kBlock, c->block * kBlock,
                       nbd_completion_callback{done, c, free_ctx},
                       c->fua ? LIBNBD_CMD_FLAG_FUA : 0) == -1) {
      _exit(4);
    }
  }
}

// The writer runs in a process of its own: this binary again, exec'd (by
// env, which adds the parameters to the environment) with the hidden test
// case kWriterChildName, which calls WriterChild.  Not a bare fork: the
// test process has threads (the bystander's), and a forked child of a
// threaded process may find a lock held for ever; under ASan it was the
// allocator's, 2 runs of 3 hung.  fd, the pipe's write end, is made to
// cross the exec; the test's own descriptors are close-on-exec.
constexpr const char* kWriterChildName = "misbehaving clients: the killed writer (child process)";

pid_t SpawnWriter(const std::string& socket, uint64_t round, uint64_t first_block,
                  uint64_t blocks, int fd) {
  const std::string exe = SelfExePath();
  REQUIRE(fcntl(fd, F_SETFD, 0) == 0);  // this one end crosses the exec
  const pid_t pid = SpawnProcess(
      {"env", "REWIND_MB_WRITER_SOCKET=" + socket, fmt::format("REWIND_MB_WRITER_ROUND={}", round),
       fmt::format("REWIND_MB_WRITER_FIRST={}", first_block),
       fmt::format("REWIND_MB_WRITER_BLOCKS={}", blocks), fmt::format("REWIND_MB_WRITER_FD={}", fd),
       exe, kWriterChildName, "--out", "/dev/null"},
      "", "");
  close(fd);
  return pid;
}

// nbdkit 1.32 (Debian 12) aborts now and then when a client drops its
// connection while replies are being sent: "connections.c:402:
// raw_send_socket: Assertion `sock >= 0' failed" (a race in nbdkit's core,
// also with its memory plugin: e2e_tests '[nbdkit-drop]'; later nbdkit has no
// such assertion there).  The abort takes every connection with it, like a
// kill -9.  This test therefore checks that other clients keep being
// served for as long as nbdkit runs, that an abort is that one (any other
// death of nbdkit fails), and that after one nothing acknowledged is lost:
// the other client's FUA writes are there and the store verifies.
constexpr const char* kNbdkitDropAssertion = "raw_send_socket: Assertion `sock >= 0' failed";

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = 0; (pos = text.find(what, pos)) != std::string::npos; pos += what.size()) n++;
  return n;
}

// One run of the killed-writer scenario against a target: six rounds in
// which a writer process (SpawnWriter) keeps 32 whole-block writes in
// flight (every fourth with FUA) and is killed with SIGKILL once it has had
// 8, 16, ... FUA writes acknowledged; after each kill a new client checks
// every block, and at the end nbdkit itself is killed with SIGKILL and
// restarted and the blocks are checked once more.  start(fresh) starts the
// target's nbdkit (a new store when fresh); store_dir, when not empty, is
// verified with `rewind verify`.  What the checks found goes to failures,
// the first 20 of them.
struct KilledWritersResult {
  std::vector<std::string> failures;
  uint64_t kills = 0, fua_acked = 0, aborts = 0, bystander_rounds = 0;
};

// When the killed client's connection drops with requests in flight,
// nbdkit 1.32.5 itself aborts now and then (the assertion above): to the
// store that is a kill -9 of nbdkit.  The run then checks that it was that
// abort, restarts nbdkit and the bystander, and goes on: the FUA writes
// acknowledged before it must all be there.
KilledWritersResult RunKilledWriters(const std::function<std::unique_ptr<NbdServer>(bool)>& start,
                                     const std::string& store_dir) {
  KilledWritersResult res;
  auto fail = [&](std::string what) {
    if (res.failures.size() < 20) res.failures.push_back(std::move(what));
  };
  auto server = start(true);
  auto bystander = std::make_unique<Bystander>(server->socket(), 48 * kMiB);
  // nbdkit died: it must be the known abort.  Restart it and the bystander
  // (whose own connection went with it).  False when it was not that abort.
  auto survive_abort = [&](const char* when) {
    const std::string log = server->log();
    if (Count(log, kNbdkitDropAssertion) != 1) {
      fail(fmt::format("{}: nbdkit ended ({}) other than by the known abort; log (end):\n{}", when,
                       server->status().ToString(),
                       log.substr(log.size() > 1500 ? log.size() - 1500 : 0)));
      return false;
    }
    res.aborts++;
    (void)bystander->Stop();
    res.bystander_rounds += bystander->rounds();
    server = start(false);
    bystander = std::make_unique<Bystander>(server->socket(), 48 * kMiB);
    return true;
  };
  const uint64_t first = 0, blocks = 128;  // 8 MiB of blocks written by the children
  // The oldest round whose value block b may hold (0: zeros): the round of
  // its newest acknowledged FUA write.
  std::vector<uint64_t> durable_round(blocks, 0);
  auto check = [&](NbdClient& c, uint64_t round, const char* when) {
    for (uint64_t b = 0; b < blocks; ++b) {
      const auto got = c.Pread(kBlock, (first + b) * kBlock);
      // Each block holds a whole value of a round at or after its durable
      // round (this round's children write only this round's value).
      bool ok = false;
      if (durable_round[b] == 0 && got == std::vector<uint8_t>(kBlock, 0)) ok = true;
      for (uint64_t r = std::max<uint64_t>(durable_round[b], 1); r <= round && !ok; ++r) {
        ok = got == BlockValue(r, first + b);
      }
      if (!ok) {
        fail(fmt::format("{}: block {} in round {} holds none of the values of rounds {} to {}{}",
                         when, b, round, durable_round[b], round,
                         durable_round[b] == 0 ? " (or zeros)" : ""));
      }
    }
  };
  for (uint64_t round = 1; round <= 6 && res.failures.empty(); ++round) {
    int pipefd[2];
    REQUIRE(pipe2(pipefd, O_CLOEXEC) == 0);
    const pid_t pid = SpawnWriter(server->socket(), round, first, blocks, pipefd[1]);
    // Kill it once it has had some FUA writes acknowledged, a little later
    // each round; a writer that acknowledges nothing for 60 s fails the
    // test rather than hanging it.
    std::vector<uint64_t> acked;
    const size_t want = 8 * round;
    while (acked.size() < want) {
      pollfd pfd{pipefd[0], POLLIN, 0};
      if (poll(&pfd, 1, 60000) != 1) break;
      uint64_t b;
      ssize_t n = read(pipefd[0], &b, sizeof b);
      if (n != sizeof b) break;
      acked.push_back(b);
    }
    REQUIRE(kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    INFO("round " << round << ": the writer had " << acked.size() << " FUA writes acknowledged of "
                  << want << "; it ended with status " << status);
    CHECK(WIFSIGNALED(status));  // killed while writing, not failed
    res.kills++;
    // Acks that arrived before the kill.
    for (uint64_t b; read(pipefd[0], &b, sizeof b) == sizeof b;) acked.push_back(b);
    close(pipefd[0]);
    REQUIRE(acked.size() >= want);
    res.fua_acked += acked.size();
    for (uint64_t b : acked) durable_round[b - first] = round;
    // An abort comes within milliseconds of the drop; give it the time to
    // show, then check (again after a restart if it came during the check).
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (!server->Running() && !survive_abort("after the client's kill")) return res;
    for (int attempt = 0;; ++attempt) {
      try {
        auto c = NbdClient::Connect(server->socket());
        check(*c, round, "after the client's kill");
        c->Flush();
        break;
      } catch (const std::exception& e) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        if (server->Running() || attempt > 0) {
          fail(fmt::format("the check after the client's kill failed: {}", e.what()));
          return res;
        }
        if (!survive_abort("during the check")) return res;
      }
    }
  }
  const std::string bystander_error = bystander->Stop();
  if (!bystander_error.empty()) fail(bystander_error);
  res.bystander_rounds += bystander->rounds();
  if (!res.failures.empty()) return res;
  if (!store_dir.empty()) CheckVerifyClean(store_dir);
  // And after nbdkit itself is killed: the FUA-acked writes are durable.
  server->Kill9();
  server = start(false);
  {
    auto c = NbdClient::Connect(server->socket());
    check(*c, 6, "after kill -9 of nbdkit");
  }
  if (!store_dir.empty()) CheckVerifyClean(store_dir);
  return res;
}

std::string Report(const KilledWritersResult& r) {
  std::string s = fmt::format("{} kills, {} FUA writes acknowledged, {} aborts of nbdkit",
                              r.kills, r.fua_acked, r.aborts);
  for (const auto& f : r.failures) s += "\n  " + f;
  return s;
}

TEST_CASE("misbehaving clients: a client killed with SIGKILL mid-write loses none of its "
          "acknowledged FUA writes and tears no block, and others keep being served",
          "[e2e][clients]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto start = [&](bool fresh) {
    std::vector<std::string> params = {"dir=" + dir};
    if (fresh) params.push_back("size=64M");
    return StartRewind(tmp, params);
  };
  const KilledWritersResult r = RunKilledWriters(start, dir);
  INFO(Report(r));
  CHECK(r.failures.empty());
  CHECK(r.kills == 6);
  CHECK(r.bystander_rounds > 10);
  std::cerr << fmt::format("clients: {} writer processes killed with SIGKILL mid-write, {} FUA "
                           "writes acknowledged to them, none lost, no block torn; nbdkit's own "
                           "abort on a dropped connection came {} time(s)\n",
                           r.kills, r.fua_acked, r.aborts);
}

// The checks above catch what they claim to, hidden from the default run
// (e2e_tests '[harness]'): a server that forgets a client's writes when it
// disconnects (nbdkit's tmpdisk plugin: a fresh disk for every connection)
// fails the check after the first client's kill, and one that keeps them
// while it runs but loses everything at a kill -9 (the memory plugin)
// fails the check after the kill of nbdkit.
TEST_CASE("misbehaving clients harness: catches a server that forgets a killed client's writes, "
          "and one that loses them at a kill -9",
          "[.][harness]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  auto tmpdisk = [&](bool) {
    NbdServerOptions o;
    o.plugin = "tmpdisk";
    o.params = {"size=64M", "command=truncate -s $size \"$disk\""};
    o.workdir = tmp.path();
    return NbdServer::Start(o);
  };
  const KilledWritersResult forgets = RunKilledWriters(tmpdisk, "");
  INFO("tmpdisk: " << Report(forgets));
  REQUIRE_FALSE(forgets.failures.empty());
  CHECK(forgets.failures[0].find("after the client's kill: block") == 0);
  CHECK(forgets.kills == 1);

  auto memory = [&](bool) { return NbdServer::Start(MemoryPluginOptions(tmp.path())); };
  const KilledWritersResult loses = RunKilledWriters(memory, "");
  INFO("memory: " << Report(loses));
  REQUIRE_FALSE(loses.failures.empty());
  CHECK(loses.failures[0].find("after kill -9 of nbdkit: block") == 0);
  CHECK(loses.kills == 6);
}

// The other client's write at 48 MiB after connection i.
std::vector<uint8_t> OtherValue(int i) { return Pattern(kBlock, 7000000 + i); }

// What a 64 KiB block read at 48 MiB holds, in the other client's terms:
// "zeros", "write i" (its write after connection i), or, for anything
// else, what each 4 KiB page of it holds.
std::string DescribeOther(const std::vector<uint8_t>& got, int writes) {
  constexpr uint64_t kPage = 4 * kKiB;
  auto whole = [&](const uint8_t* p, uint64_t len) -> std::string {
    if (std::all_of(p, p + len, [](uint8_t x) { return x == 0; })) return "zeros";
    for (int i = 0; i < writes; ++i) {
      const auto v = OtherValue(i);
      const uint64_t at = static_cast<uint64_t>(p - got.data());
      if (std::equal(p, p + len, v.begin() + static_cast<std::ptrdiff_t>(at))) {
        return "write " + std::to_string(i);
      }
    }
    return "";
  };
  if (got.size() != kBlock) return fmt::format("{} bytes", got.size());
  std::string w = whole(got.data(), kBlock);
  if (!w.empty()) return w;
  std::string pages = "not one whole value; its 4 KiB pages:";
  for (uint64_t off = 0; off < kBlock; off += kPage) {
    const std::string p = whole(got.data() + off, kPage);
    pages += " " + (p.empty() ? std::string("other") : p);
  }
  return pages;
}

TEST_CASE("misbehaving clients: connections dropped with requests in flight, and other clients keep "
          "being served, nothing acknowledged is lost",
          "[e2e][clients]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=64M"});
  auto other = NbdClient::Connect(server->socket());
  // The block at 48 MiB, the other client's: the value it must hold (its
  // newest FUA-acknowledged write, or zeros before any), and the write sent
  // after that one, not acknowledged yet.
  std::vector<uint8_t> other_last(kBlock, 0);
  std::vector<uint8_t> other_attempt;
  uint64_t dropped = 0, in_flight_at_drop = 0, other_writes = 0, aborts = 0;
  uint64_t unacked_kept = 0;  // aborts after which the block held the unacknowledged write
  // nbdkit died: it must be the known abort; restart, and the other
  // client's acknowledged write is there, or the one the abort cut short.
  auto after_abort = [&](const std::string& when) {
    INFO(when);
    // An aborting nbdkit's sockets close before the process can be reaped
    // (the kernel closes its files, then the last thread lets go of the
    // address space); under ASan and TSan, with their large shadow
    // mappings, a connection failed while nbdkit was still not reapable.
    // An nbdkit that refused a connection and lives on still fails here.
    server->WaitExit(std::chrono::seconds(10));
    REQUIRE_FALSE(server->Running());
    const std::string log = server->log();
    INFO(when << "; nbdkit " << server->status().ToString() << "\n--- nbdkit log (end) ---\n"
              << log.substr(log.size() > 1500 ? log.size() - 1500 : 0));
    REQUIRE(Count(log, kNbdkitDropAssertion) == 1);  // each nbdkit has a log of its own
    aborts++;
    other.reset();
    server = StartRewind(tmp, {"dir=" + dir});
    other = NbdClient::Connect(server->socket());
    // The acknowledged value, or the one whose write the abort cut short:
    // NBD lets an unacknowledged write be done or not, but whole (one
    // journal record).
    const auto got = other->Pread(kBlock, 48 * kMiB);
    const bool known = got == other_last || got == other_attempt;
    INFO("at 48 MiB: " << DescribeOther(got, 40) << "; last acknowledged: "
                       << DescribeOther(other_last, 40) << "; in flight: "
                       << DescribeOther(other_attempt, 40));
    CHECK(known);
    // Whichever it is, the restarted nbdkit serves it: from now on the block
    // must hold it (until the other client's next acknowledged write).  An
    // unacknowledged write that was done is as durable as an acknowledged
    // one; it must not vanish at a later abort, nor an attempt not done
    // turn up later.  (Before 2026-12-01 the model kept the older
    // acknowledged value here, and the next abort found the newer one:
    // docs/reliability.md, "Sanitizers".)
    if (known && got != other_last) unacked_kept++;
    other_last = got;
    other_attempt = got;
  };
  for (int i = 0; i < 40; ++i) {
    nbd_handle* h = nbd_create();
    REQUIRE(h != nullptr);
    if (nbd_connect_unix(h, server->socket().c_str()) != 0) {
      nbd_close(h);
      after_abort(fmt::format("connection {}: {}", i, NbdClient::LastError()));
      h = nbd_create();
      REQUIRE(nbd_connect_unix(h, server->socket().c_str()) == 0);
    }
    std::vector<std::vector<uint8_t>> bufs;
    for (int k = 0; k < 24; ++k) {
      bufs.push_back(Pattern(kBlock, i * 100 + k + 1));
      const uint64_t off = ((i * 24 + k) % 256) * kBlock;
      if (k % 3 == 2) {
        REQUIRE(nbd_aio_pread(h, bufs.back().data(), kBlock, off, NBD_NULL_COMPLETION, 0) > 0);
      } else if (k % 5 == 4) {
        REQUIRE(nbd_aio_flush(h, NBD_NULL_COMPLETION, 0) > 0);
      } else {
        REQUIRE(nbd_aio_pwrite(h, bufs.back().data(), kBlock, off, NBD_NULL_COMPLETION,
                               k % 4 == 0 ? LIBNBD_CMD_FLAG_FUA : 0) > 0);
      }
    }
    // Let some of them reach the server, then drop the connection without
    // NBD_CMD_DISC and without waiting for the replies.
    (void)nbd_poll(h, 0);
    in_flight_at_drop += static_cast<uint64_t>(nbd_aio_in_flight(h));
    nbd_close(h);
    dropped++;
    // The other client, meanwhile: a FUA write read back.
    const auto data = OtherValue(i);
    other_attempt = data;
    try {
      other->Pwrite(data, 48 * kMiB, LIBNBD_CMD_FLAG_FUA);
      other_last = data;  // acknowledged with FUA: durable, even if the read fails
      other_writes++;
      const bool same = other->Pread(kBlock, 48 * kMiB) == data;
      CHECK(same);
    } catch (const NbdError& e) {
      // Served no more: only an abort of nbdkit excuses that.  An abort
      // (and its core dump) takes a moment to end the process; on a busy
      // machine more than 200 ms.
      for (int w = 0; w < 200 && server->Running(); ++w) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      after_abort(fmt::format("the other client after connection {}: {}", i, e.what()));
    }
  }
  CHECK(in_flight_at_drop > 0);
  CHECK(other_writes > 0);
  // A new client sees whole blocks: every block holds zeros or one whole
  // value that some dropped connection wrote there.  The last dropped
  // connection can still bring the abort: give it the time to show, and
  // check again after a restart if it comes during the check (before
  // 2026-12-01 a connection refused here failed the test, seen once).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  if (!server->Running()) after_abort("after the last connection");
  for (int attempt = 0;; ++attempt) {
    try {
      auto c = NbdClient::Connect(server->socket());
      for (uint64_t b = 0; b < 256; ++b) {
        const auto got = c->Pread(kBlock, b * kBlock);
        bool ok = got == std::vector<uint8_t>(kBlock, 0);
        for (int i = 0; i < 40 && !ok; ++i) {
          for (int k = 0; k < 24 && !ok; ++k) {
            const bool wrote = k % 3 != 2 && k % 5 != 4;
            if (wrote && static_cast<uint64_t>((i * 24 + k) % 256) == b) {
              ok = got == Pattern(kBlock, i * 100 + k + 1);
            }
          }
        }
        INFO("block " << b);
        CHECK(ok);
      }
      break;
    } catch (const NbdError& e) {
      REQUIRE(attempt == 0);
      after_abort(fmt::format("the check of the dropped connections' blocks: {}", e.what()));
    }
  }
  other.reset();
  CheckVerifyClean(dir);
  if (server->Running()) {
    ExitStatus es = server->Stop();
    INFO(server->log());
    INFO("nbdkit " << es.ToString());
    CHECK(es.success());
  }
  std::cerr << fmt::format("clients: {} connections dropped with {} requests in flight; the other "
                           "client's {} FUA writes all served; nbdkit aborted {} times (its "
                           "raw_send_socket assertion), {} time(s) with the other client's "
                           "unacknowledged write done; nothing acknowledged lost\n",
                           dropped, in_flight_at_drop, other_writes, aborts, unacked_kept);
}

// One request with libnbd's own checks off, so that it reaches the server
// as given.  Returns 0 or the errno of the server's answer.
int RawRequest(nbd_handle* h, const std::string& cmd, uint64_t offset, uint64_t len) {
  // At least one byte: libnbd declares the buffer non-null even for len 0
  // (UBSan: "null pointer passed as argument 2").
  std::vector<uint8_t> buf(std::max<uint64_t>(1, std::min<uint64_t>(len, 80 * kMiB)), 0x5a);
  int rc = 0;
  if (cmd == "read") rc = nbd_pread(h, buf.data(), len, offset, 0);
  if (cmd == "write") rc = nbd_pwrite(h, buf.data(), len, offset, 0);
  if (cmd == "write-fua") rc = nbd_pwrite(h, buf.data(), len, offset, LIBNBD_CMD_FLAG_FUA);
  if (cmd == "trim") rc = nbd_trim(h, len, offset, 0);
  if (cmd == "zero") rc = nbd_zero(h, len, offset, 0);
  if (cmd == "cache") rc = nbd_cache(h, len, offset, 0);
  return rc == 0 ? 0 : (nbd_get_errno() ? nbd_get_errno() : -1);
}

TEST_CASE("misbehaving clients: unaligned, zero-length, out-of-range and oversized requests",
          "[e2e][clients]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=64M"});
  Bystander bystander(server->socket(), 48 * kMiB);
  std::vector<uint8_t> model(8 * kMiB, 0);  // the first 8 MiB

  nbd_handle* h = nbd_create();
  REQUIRE(h != nullptr);
  REQUIRE(nbd_set_strict_mode(h, 0) == 0);
  REQUIRE(nbd_connect_unix(h, server->socket().c_str()) == 0);

  // Unaligned requests, odd offsets and lengths: served exactly.
  std::mt19937_64 rng(42);
  for (int i = 0; i < 300; ++i) {
    const uint64_t len = 1 + rng() % (i % 10 == 0 ? 300000 : 9000);
    const uint64_t off = rng() % (model.size() - len);
    const auto data = Pattern(len, 900 + i);
    REQUIRE(nbd_pwrite(h, data.data(), len, off, i % 7 == 0 ? LIBNBD_CMD_FLAG_FUA : 0) == 0);
    std::copy(data.begin(), data.end(), model.begin() + off);
    if (i % 5 == 0) {
      const uint64_t zoff = rng() % (model.size() - 5000), zlen = 1 + rng() % 5000;
      REQUIRE(nbd_zero(h, zlen, zoff, 0) == 0);
      std::fill(model.begin() + zoff, model.begin() + zoff + zlen, 0);
    }
    if (i % 25 == 0) {
      std::vector<uint8_t> got(model.size());
      REQUIRE(nbd_pread(h, got.data(), got.size(), 0, 0) == 0);
      INFO(FirstDifference(got.data(), model.data(), got.size(), 0));
      REQUIRE(std::equal(got.begin(), got.end(), model.begin()));
    }
  }

  // Out of range, zero length, oversized: each answered with an error (or,
  // for zero length, nothing done), the connection still usable, the data
  // unchanged.
  struct Case {
    std::string cmd;
    uint64_t offset, len;
    bool may_succeed;  // zero-length requests: the protocol allows them
  };
  const uint64_t kMax = ~uint64_t{0};
  std::vector<Case> cases;
  for (const std::string cmd : {"read", "write", "write-fua", "trim", "zero", "cache"}) {
    cases.push_back({cmd, kSize, 512, false});           // at the end
    cases.push_back({cmd, kSize - 1, 2, false});         // across the end
    cases.push_back({cmd, kSize + kMiB, 4096, false});   // beyond the end
    cases.push_back({cmd, uint64_t{1} << 62, 4096, false});
    cases.push_back({cmd, kMax - 100, 4096, false});     // offset + len wraps
    cases.push_back({cmd, 4096, 0, true});               // zero length
    cases.push_back({cmd, kSize, 0, true});              // zero length at the end
  }
  for (const std::string cmd : {"read", "write", "trim", "zero"}) {
    cases.push_back({cmd, 0, 64 * kMiB + 1, false});  // beyond the disk and nbdkit's 64 MiB limit
  }
  // Beyond the 32 MiB maximum the plugin advertises but within nbdkit's
  // 64 MiB: nbdkit 1.32 passes them on, and the plugin serves them.
  cases.push_back({"read", 0, 33 * kMiB, true});
  cases.push_back({"write", 0, 33 * kMiB, true});
  int refused = 0, answered = 0, disconnected = 0;
  for (const Case& c : cases) {
    INFO(c.cmd << " offset " << c.offset << " length " << c.len);
    const int err = RawRequest(h, c.cmd, c.offset, c.len);
    INFO("errno " << err << (err ? ": " + NbdClient::LastError() : std::string()));
    if (!c.may_succeed) CHECK(err != 0);
    if (err != 0) refused++;
    if (err == 0 && c.cmd.rfind("write", 0) == 0 && c.len > 0) {  // RawRequest writes 0x5a
      std::fill(model.begin(), model.begin() + std::min<uint64_t>(c.len, model.size()), 0x5a);
    }
    answered++;
    if (nbd_aio_is_ready(h) == 0) {
      // nbdkit drops a connection whose request it cannot parse (payload
      // too large): reconnect, and the disk must be unchanged.
      disconnected++;
      nbd_close(h);
      h = nbd_create();
      REQUIRE(nbd_set_strict_mode(h, 0) == 0);
      REQUIRE(nbd_connect_unix(h, server->socket().c_str()) == 0);
    }
  }
  std::vector<uint8_t> got(model.size());
  REQUIRE(nbd_pread(h, got.data(), got.size(), 0, 0) == 0);
  INFO(FirstDifference(got.data(), model.data(), got.size(), 0));
  CHECK(std::equal(got.begin(), got.end(), model.begin()));
  REQUIRE(nbd_flush(h, 0) == 0);
  nbd_close(h);
  CHECK(bystander.Stop() == "");
  CheckVerifyClean(dir);
  // The unaligned writes survive a kill -9 (they were flushed).
  server->Kill9();
  server = StartRewind(tmp, {"dir=" + dir});
  {
    auto c = NbdClient::Connect(server->socket());
    const auto after = c->Pread(model.size(), 0);
    INFO(FirstDifference(after.data(), model.data(), model.size(), 0));
    CHECK(std::equal(after.begin(), after.end(), model.begin()));
  }
  std::cerr << fmt::format("clients: 300 unaligned writes read back exactly; {} bad requests "
                           "({} refused, {} answered, {} connections dropped by nbdkit)\n",
                           cases.size(), refused, answered, disconnected);
}

// Multi-conn: A writes (no FUA) and gets its acks, B flushes, nbdkit is
// killed at once; A's writes must all be there.  start() starts the server
// (a new store in round 1).
struct MultiConnResult {
  uint64_t rounds = 0, writes = 0, lost = 0;
  std::string first_loss;
};

MultiConnResult RunMultiConn(const std::function<std::unique_ptr<NbdServer>(int)>& start, int rounds) {
  MultiConnResult r;
  std::mt19937_64 rng(7);
  std::vector<uint64_t> round_of(256, 0);  // block -> round of its last acked write
  for (int round = 1; round <= rounds; ++round) {
    auto server = start(round);
    auto a = NbdClient::Connect(server->socket());
    auto b = NbdClient::Connect(server->socket());
    CHECK(a->CanMultiConn());
    for (int i = 0; i < 32; ++i) {
      const uint64_t blk = rng() % 256;
      a->Pwrite(BlockValue(round, blk), blk * kBlock);  // acked, not flushed on A
      round_of[blk] = round;
      r.writes++;
    }
    b->Flush();
    server->Kill9();
    a.reset();
    b.reset();
    server = start(round + 1000);
    auto c = NbdClient::Connect(server->socket());
    for (uint64_t blk = 0; blk < 256; ++blk) {
      if (round_of[blk] == 0) continue;
      if (c->Pread(kBlock, blk * kBlock) != BlockValue(round_of[blk], blk)) {
        if (r.lost++ == 0) r.first_loss = fmt::format("round {} block {}", round, blk);
      }
    }
    server->Kill9();
    r.rounds++;
  }
  return r;
}

TEST_CASE("misbehaving clients: multi-conn, a write acked on one connection is made durable by a "
          "flush on another (kill -9 right after)",
          "[e2e][clients]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  MultiConnResult ok = RunMultiConn(
      [&](int round) {
        std::vector<std::string> params = {"dir=" + dir};
        if (round == 1) params.push_back("size=64M");
        return StartRewind(tmp, params);
      },
      8);
  INFO(ok.first_loss);
  CHECK(ok.lost == 0);
  CHECK(ok.rounds == 8);
  CheckVerifyClean(dir);
  std::cerr << fmt::format("clients: multi-conn: {} rounds, {} writes acked on A and flushed by B "
                           "before kill -9, {} lost\n",
                           ok.rounds, ok.writes, ok.lost);

  // The check can fail: against nbdkit's memory plugin (which a kill -9
  // empties) it finds the writes lost.
  MultiConnResult bad = RunMultiConn(
      [&](int) {
        return NbdServer::Start(MemoryPluginOptions(tmp.path()));
      },
      1);
  CHECK(bad.lost > 0);
}

}  // namespace
}  // namespace rwd::test

namespace rwd::test {
namespace {

// nbdkit itself, with its memory plugin: does dropping connections with
// requests in flight crash nbdkit's core?  Hidden: e2e_tests '[nbdkit-drop]'.
TEST_CASE("nbdkit core: connections dropped with requests in flight, memory plugin",
          "[.][nbdkit-drop]") {
  TempDir tmp;
  auto server = NbdServer::Start(MemoryPluginOptions(tmp.path()));
  for (int i = 0; i < 200; ++i) {
    nbd_handle* h = nbd_create();
    REQUIRE(h != nullptr);
    const int rc = nbd_connect_unix(h, server->socket().c_str());
    INFO("connection " << i << ": " << NbdClient::LastError() << "\n" << server->log());
    REQUIRE(rc == 0);
    std::vector<std::vector<uint8_t>> bufs;
    for (int k = 0; k < 24; ++k) {
      bufs.push_back(Pattern(kBlock, i * 100 + k + 1));
      const uint64_t off = ((i * 24 + k) % 256) * kBlock;
      if (k % 3 == 2) {
        REQUIRE(nbd_aio_pread(h, bufs.back().data(), kBlock, off, NBD_NULL_COMPLETION, 0) > 0);
      } else {
        REQUIRE(nbd_aio_pwrite(h, bufs.back().data(), kBlock, off, NBD_NULL_COMPLETION, 0) > 0);
      }
    }
    (void)nbd_poll(h, 0);
    nbd_close(h);
  }
  CHECK(server->Running());
}

// The writer of RunKilledWriters (see kWriterChildName), run only as its
// child process: hidden, and it fails when run by hand without the
// environment SpawnWriter gives it.
TEST_CASE(kWriterChildName, "[.misbehave-writer]") {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    REQUIRE(v != nullptr);
    return std::string(v);
  };
  WriterChild(env("REWIND_MB_WRITER_SOCKET"), std::stoull(env("REWIND_MB_WRITER_ROUND")),
              std::stoull(env("REWIND_MB_WRITER_FIRST")), std::stoull(env("REWIND_MB_WRITER_BLOCKS")),
              std::stoi(env("REWIND_MB_WRITER_FD")));
}

}  // namespace
}  // namespace rwd::test
