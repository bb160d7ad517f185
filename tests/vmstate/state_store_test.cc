// Tests of the saved-state store (StateStore): round trips fed in odd
// pieces, dedup across saves, ids, abort, reopen and the clean-up of
// interrupted saves, Remove and shared packs, damage (flipped and cut
// packs and manifests), the directory lock, a full disk and power cuts
// (through FaultInjectionFS), and a throughput figure.
#include <rewind/vmstate/state_store.h>

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "support/fault_fs.h"
#include "support/proc_util.h"

namespace rwd::vm {
namespace {

namespace fs = std::filesystem;
using Bytes = std::string;
using rwd::test::FaultInjectionFS;
using rwd::test::FsFault;
using rwd::test::TempDir;

constexpr size_t kMiB = 1 << 20;

Bytes Random(size_t n, uint64_t seed) {
  Bytes b(n, '\0');
  std::mt19937_64 rng(seed);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&b[i], &v, 8);
  }
  for (; i < n; ++i) b[i] = static_cast<char>(rng());
  return b;
}

// Like a migration stream: 4 KiB pages, most zero, some repeated text, some
// random, each behind an 8-byte header.
Bytes Mixed(size_t pages, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::string text = "the quick brown fox jumps over the lazy dog, 0123456789\n";
  Bytes b;
  b.reserve(pages * 4104);
  for (size_t p = 0; p < pages; ++p) {
    uint64_t header = p << 12;
    b.append(reinterpret_cast<const char*>(&header), 8);
    switch (rng() % 4) {
      case 0:
      case 1: b.append(4096, '\0'); break;
      case 2:
        for (size_t i = 0; i < 4096; ++i) b.push_back(text[(i + p) % text.size()]);
        break;
      default: b += Random(4096, rng()); break;
    }
  }
  return b;
}

std::unique_ptr<StateStore> OpenStore(const std::string& dir, StateStoreOptions o = {}) {
  std::unique_ptr<StateStore> s;
  Status st = StateStore::Open(dir, o, &s);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return s;
}

// Feeds data in pieces of odd sizes (1 byte to over 1 MiB), cycling.
Status Feed(StateWriter& w, const Bytes& data) {
  static const size_t kPieces[] = {1, 3, 4093, 65543, kMiB + 5, 17, 300001, 8};
  size_t off = 0;
  for (size_t i = 0; off < data.size(); ++i) {
    const size_t n = std::min(kPieces[i % std::size(kPieces)], data.size() - off);
    Status s = w.Append(data.data() + off, n);
    if (!s.ok()) return s;
    off += n;
  }
  return Status::Ok();
}

Status Save(StateStore& store, const std::string& id, const Bytes& data, StateInfo* info = nullptr,
            const nlohmann::json& meta = {{"checkpoint", "c"}}) {
  std::unique_ptr<StateWriter> w;
  Status s = store.NewWriter(&w);
  if (s.ok()) s = Feed(*w, data);
  StateInfo local;
  if (s.ok()) s = w->Commit(id, meta, info ? info : &local);
  return s;
}

void RequireSaved(StateStore& store, const std::string& id, const Bytes& data,
                  StateInfo* info = nullptr) {
  Status s = Save(store, id, data, info);
  INFO(s.ToString());
  REQUIRE(s.ok());
}

Status ReadBack(StateStore& store, const std::string& id, Bytes* out) {
  out->clear();
  return store.Read(id, [&](const void* p, size_t n) {
    out->append(static_cast<const char*>(p), n);
    return Status::Ok();
  });
}

void RequireReads(StateStore& store, const std::string& id, const Bytes& want) {
  Bytes got;
  Status s = ReadBack(store, id, &got);
  INFO(id << ": " << s.ToString());
  REQUIRE(s.ok());
  REQUIRE(got.size() == want.size());
  REQUIRE(got == want);
}

// Regular files under dir with their sizes and mtimes, and the directories
// (without their mtimes, which creating and deleting a file changes).
std::string Listing(const std::string& dir) {
  std::vector<std::string> lines;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    const std::string rel = fs::relative(it->path(), dir).string();
    if (S_ISDIR(st.st_mode)) {
      lines.push_back(rel + "/");
    } else {
      lines.push_back(
          fmt::format("{} {} {}.{}", rel, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec));
    }
  }
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> v;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

void FlipByte(const std::string& path, uint64_t offset) {
  Bytes b = rwd::test::ReadFile(path);
  REQUIRE(offset < b.size());
  b[offset] = static_cast<char>(b[offset] ^ 0x40);
  rwd::test::WriteFile(path, b);
}

void Truncate(const std::string& path, uint64_t size) {
  REQUIRE(::truncate(path.c_str(), size) == 0);
}

// ---------------------------------------------------------------------

TEST_CASE("statestore: random, zero and mixed streams round-trip in odd pieces", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  auto store = OpenStore(dir);
  struct Case {
    std::string id;
    Bytes data;
  };
  std::vector<Case> cases = {
      {"empty", ""},
      {"one", "x"},
      {"below-min", Random(1000, 1)},
      {"just-below-min", Random((16 << 10) - 1, 2)},
      {"max-plus-one", Random((256 << 10) + 1, 3)},
      {"random-9m", Random(9 * kMiB + 12345, 4)},
      {"zero-9m", Bytes(9 * kMiB + 7, '\0')},
      {"mixed", Mixed(3000, 5)},
  };
  for (const Case& c : cases) {
    StateInfo info;
    RequireSaved(*store, c.id, c.data, &info);
    CHECK(info.id == c.id);
    CHECK(info.stream_bytes == c.data.size());
    CHECK(info.meta == nlohmann::json{{"checkpoint", "c"}});
    CHECK((info.chunks == 0) == c.data.empty());
    CHECK(info.time_ns > 0);
  }
  for (const Case& c : cases) RequireReads(*store, c.id, c.data);

  StateInfo zero;
  REQUIRE(store->Get("zero-9m", &zero).ok());
  INFO("zero stream: " << zero.chunks << " chunks, " << zero.new_chunks << " new, "
                       << zero.new_bytes << " bytes");
  CHECK(zero.new_chunks <= 2);
  CHECK(zero.new_bytes < 4096);  // 9 MiB of zeros: one compressed chunk and a manifest

  StateInfo empty;
  REQUIRE(store->Get("empty", &empty).ok());
  CHECK(empty.chunks == 0);
  CHECK(empty.new_chunks == 0);

  // A sink's error stops the read and is returned as it is.
  int calls = 0;
  Status s = store->Read("random-9m", [&](const void*, size_t) {
    return ++calls == 3 ? Status::Aborted("enough") : Status::Ok();
  });
  CHECK(s.code() == Status::Code::kAborted);
  CHECK(s.message() == "enough");
  CHECK(calls == 3);

  std::vector<StateInfo> list;
  REQUIRE(store->List(&list).ok());
  CHECK(list.size() == cases.size());
  std::vector<std::string> damage;
  REQUIRE(store->Verify(&damage).ok());
  CHECK(damage.empty());
  CHECK(store->bytes_used() == StateStoreBytes(dir));
  CHECK(StateStoreBytes(dir) > 9 * kMiB);
  CHECK(StateStoreBytes(tmp / "missing") == 0);
}

TEST_CASE("statestore: a second save with a small change stores little", "[statestore]") {
  TempDir tmp("rwss");
  auto store = OpenStore(tmp / "vmstate");
  const Bytes base = Random(32 * kMiB, 11);
  StateInfo first;
  RequireSaved(*store, "first", base, &first);
  CHECK(first.new_bytes > 32 * kMiB);  // random data: stored raw

  SECTION("the same stream again") {
    StateInfo again;
    RequireSaved(*store, "again", base, &again);
    CHECK(again.new_chunks == 0);
    CHECK(again.new_bytes < 64 * 1024);  // the manifest only
    RequireReads(*store, "again", base);
  }
  SECTION("bytes changed in place") {
    Bytes changed = base;
    for (size_t i = 0; i < 100; ++i) changed[10 * kMiB + i * 37] ^= 0x5a;
    StateInfo second;
    RequireSaved(*store, "changed", changed, &second);
    WARN(
        fmt::format("in-place change: second save stored {} of {} bytes ({:.2f}%), {} of {} chunks",
                    second.new_bytes, changed.size(), 100.0 * second.new_bytes / changed.size(),
                    second.new_chunks, second.chunks));
    CHECK(second.new_bytes < changed.size() / 10);
    RequireReads(*store, "changed", changed);
    RequireReads(*store, "first", base);
  }
  SECTION("bytes inserted and deleted") {
    Bytes edited = base;
    edited.insert(5 * kMiB, Random(1000, 12));
    edited.erase(20 * kMiB, 3000);
    StateInfo second;
    RequireSaved(*store, "edited", edited, &second);
    WARN(
        fmt::format("insertion+deletion: second save stored {} of {} bytes ({:.2f}%), {} of {} "
                    "chunks",
                    second.new_bytes, edited.size(), 100.0 * second.new_bytes / edited.size(),
                    second.new_chunks, second.chunks));
    CHECK(second.new_bytes < edited.size() / 10);
    RequireReads(*store, "edited", edited);
  }
}

TEST_CASE("statestore: ids are checked and never taken twice", "[statestore]") {
  TempDir tmp("rwss");
  auto store = OpenStore(tmp / "vmstate");
  for (const std::string& good :
       {std::string("a"), std::string("cp-1.2_3+x"), std::string("A.state"), std::string(".."),
        std::string(128, 'z')}) {
    CHECK(ValidateStateId(good).ok());
  }
  for (const std::string& bad : {std::string(), std::string(129, 'z'), std::string("a/b"),
                                 std::string("a b"), std::string("x\n"), std::string("\xc3\xa9")}) {
    Status s = ValidateStateId(bad);
    CHECK(s.code() == Status::Code::kInvalidArgument);
  }
  const Bytes data = Random(300000, 21);
  RequireSaved(*store, "cp1", data);

  std::unique_ptr<StateWriter> w;
  REQUIRE(store->NewWriter(&w).ok());
  REQUIRE(Feed(*w, data).ok());
  StateInfo info;
  Status s = w->Commit("cp1", {}, &info);
  CHECK(s.code() == Status::Code::kAlreadyExists);
  CHECK(s.message().find("cp1") != std::string::npos);
  CHECK(w->Commit("bad/id", {}, &info).code() == Status::Code::kInvalidArgument);
  // Neither changed anything: the same writer commits under a free id.
  s = w->Commit("cp2", {{"n", 2}}, &info);
  INFO(s.ToString());
  REQUIRE(s.ok());
  CHECK(info.meta["n"] == 2);
  CHECK(w->Append("x", 1).code() == Status::Code::kInvalidArgument);
  CHECK(w->Commit("cp3", {}, &info).code() == Status::Code::kInvalidArgument);
  w.reset();
  RequireReads(*store, "cp2", data);
  CHECK(store->Get("nope", &info).code() == Status::Code::kNotFound);
  Bytes got;
  CHECK(ReadBack(*store, "nope", &got).code() == Status::Code::kNotFound);
}

TEST_CASE("statestore: Abort and a writer destroyed without Commit leave nothing", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  auto store = OpenStore(dir);
  RequireSaved(*store, "kept", Random(2 * kMiB, 31));
  const std::string before = Listing(dir);
  const Bytes data = Random(6 * kMiB, 32) + Random(2 * kMiB, 31);  // new and shared chunks
  for (bool abort : {true, false}) {
    std::unique_ptr<StateWriter> w;
    REQUIRE(store->NewWriter(&w).ok());
    REQUIRE(Feed(*w, data).ok());
    if (abort) w->Abort();
    w.reset();
    CHECK(Listing(dir) == before);
  }
  std::vector<StateInfo> list;
  REQUIRE(store->List(&list).ok());
  CHECK(list.size() == 1);
  RequireReads(*store, "kept", Random(2 * kMiB, 31));
}

TEST_CASE("statestore: a reopened store finds its states and dedups against them", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  const Bytes a = Random(5 * kMiB, 41), b = Mixed(2000, 42);
  {
    auto store = OpenStore(dir);
    RequireSaved(*store, "a", a);
    StateInfo info;
    Status s = Save(*store, "b", b, &info, {{"lsn", 7}, {"qemu", "7.2"}});
    REQUIRE(s.ok());
  }
  auto store = OpenStore(dir);
  std::vector<StateInfo> list;
  REQUIRE(store->List(&list).ok());
  REQUIRE(list.size() == 2);
  CHECK(list[0].id == "a");
  CHECK(list[1].id == "b");
  CHECK(list[1].meta == nlohmann::json{{"lsn", 7}, {"qemu", "7.2"}});
  CHECK(list[1].stream_bytes == b.size());
  RequireReads(*store, "a", a);
  RequireReads(*store, "b", b);
  StateInfo again;
  RequireSaved(*store, "a2", a, &again);
  CHECK(again.new_chunks == 0);
}

TEST_CASE("statestore: Open cleans what an interrupted save left", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  const Bytes a = Random(3 * kMiB, 51);
  {
    auto store = OpenStore(dir);
    RequireSaved(*store, "a", a);
  }
  const std::vector<std::string> packs = Names(dir + "/packs");
  REQUIRE(packs.size() == 1);
  // A pack no manifest names (a copy of a real one, and garbage), and a
  // manifest that never reached its rename.
  fs::copy_file(dir + "/packs/" + packs[0], dir + "/packs/00000041.pack");
  rwd::test::WriteFile(dir + "/packs/00000099.pack", "RWD-PACK torn");
  fs::copy_file(dir + "/states/a.state", dir + "/states/b.state.tmp");
  rwd::test::WriteFile(dir + "/states/c.state.tmp", "torn");
  rwd::test::WriteFile(dir + "/states/README", "not ours");

  auto store = OpenStore(dir);
  CHECK(Names(dir + "/packs") == packs);
  CHECK(Names(dir + "/states") == std::vector<std::string>{"README", "a.state"});
  std::vector<StateInfo> list;
  REQUIRE(store->List(&list).ok());
  REQUIRE(list.size() == 1);
  RequireReads(*store, "a", a);
  // New packs are numbered above every pack seen, deleted ones included.
  RequireSaved(*store, "b", Random(kMiB, 52));
  CHECK(Names(dir + "/packs") == std::vector<std::string>{packs[0], "00000100.pack"});
}

TEST_CASE("statestore: Remove keeps shared chunks and deletes unneeded packs", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  auto store = OpenStore(dir);
  const Bytes r1 = Random(4 * kMiB, 61), r2 = Random(4 * kMiB, 62), r3 = Random(4 * kMiB, 63);
  RequireSaved(*store, "a", r1);
  RequireSaved(*store, "b", r1 + r2);  // shares a's pack
  RequireSaved(*store, "c", r3);
  REQUIRE(Names(dir + "/packs").size() == 3);
  const uint64_t used = store->bytes_used();

  CHECK(store->Remove("nope").code() == Status::Code::kNotFound);
  REQUIRE(store->Remove("a").ok());
  CHECK(Names(dir + "/packs").size() == 3);  // b still needs a's pack
  CHECK(Names(dir + "/states") == std::vector<std::string>{"b.state", "c.state"});
  RequireReads(*store, "b", r1 + r2);
  Bytes got;
  CHECK(ReadBack(*store, "a", &got).code() == Status::Code::kNotFound);

  REQUIRE(store->Remove("c").ok());
  CHECK(Names(dir + "/packs").size() == 2);
  CHECK(store->bytes_used() < used - 4 * kMiB);
  RequireReads(*store, "b", r1 + r2);

  // After a reopen the same holds.
  store.reset();
  store = OpenStore(dir);
  RequireReads(*store, "b", r1 + r2);
  StateInfo info;
  RequireSaved(*store, "a-again", r1, &info);
  CHECK(info.new_chunks <= 1);  // r1's last chunk: in b it runs on into r2
  REQUIRE(store->Remove("b").ok());
  RequireReads(*store, "a-again", r1);
  REQUIRE(store->Remove("a-again").ok());
  CHECK(Names(dir + "/packs").empty());
  CHECK(Names(dir + "/states").empty());
  CHECK(StateStoreBytes(dir) == 0);  // the lock file is empty
}

TEST_CASE("statestore: Remove while a writer dedups against the removed state", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  auto store = OpenStore(dir);
  const Bytes r = Random(4 * kMiB, 71);
  RequireSaved(*store, "a", r);
  std::unique_ptr<StateWriter> w;
  REQUIRE(store->NewWriter(&w).ok());
  REQUIRE(Feed(*w, r).ok());  // every chunk found in a's pack, which is now pinned
  REQUIRE(store->Remove("a").ok());
  CHECK(Names(dir + "/packs").size() == 1);
  SECTION("the writer commits: its state needs the pack") {
    StateInfo info;
    REQUIRE(w->Commit("b", {}, &info).ok());
    CHECK(info.new_chunks == 0);
    w.reset();
    RequireReads(*store, "b", r);
    REQUIRE(store->Remove("b").ok());
    CHECK(Names(dir + "/packs").empty());
  }
  SECTION("the writer aborts: the pack goes with it") {
    w.reset();
    CHECK(Names(dir + "/packs").empty());
  }
}

TEST_CASE("statestore: damage is reported, never served", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  const Bytes data = Random(3 * kMiB, 81) + Mixed(500, 82);
  {
    auto store = OpenStore(dir);
    RequireSaved(*store, "good", Random(kMiB, 83));
    RequireSaved(*store, "hurt", data);
  }
  const std::vector<std::string> packs = Names(dir + "/packs");
  REQUIRE(packs.size() == 2);
  const std::string pack = dir + "/packs/" + packs[1];
  const std::string manifest = dir + "/states/hurt.state";
  const uint64_t pack_size = fs::file_size(pack);

  std::string damage_kind;
  SECTION("a byte flipped in a pack's chunk") {
    FlipByte(pack, 2 * kMiB);
    damage_kind = "fails its hash";
  }
  SECTION("a byte flipped in a compressed chunk") {
    FlipByte(pack, pack_size - 1000);
    damage_kind = "chunk";
  }
  SECTION("a byte flipped in a record header") {
    FlipByte(pack, 16 + 20);  // the first record's hash
    damage_kind = "record header";
  }
  SECTION("a pack cut short") {
    Truncate(pack, pack_size - 5000);
    damage_kind = "cut short";
  }
  SECTION("a pack missing") {
    fs::remove(pack);
    damage_kind = "missing";
  }
  SECTION("a byte flipped in the manifest") {
    FlipByte(manifest, fs::file_size(manifest) / 2);
    damage_kind = "checksum";
  }
  SECTION("a manifest cut short") {
    Truncate(manifest, fs::file_size(manifest) - 41);
    damage_kind = "checksum";
  }
  auto store = OpenStore(dir);
  Bytes got;
  Status s = ReadBack(*store, "hurt", &got);
  INFO(s.ToString());
  CHECK(s.code() == Status::Code::kCorruption);
  CHECK(s.message().find("'hurt'") != std::string::npos);
  CHECK(s.message().find(damage_kind) != std::string::npos);
  if (s.message().find("chunk") != std::string::npos) {
    CHECK(s.message().find("stream offset") != std::string::npos);
  }
  // What the sink got before the damage is the stream's true prefix.
  REQUIRE(got.size() < data.size());
  CHECK(data.compare(0, got.size(), got) == 0);

  std::vector<std::string> damage;
  REQUIRE(store->Verify(&damage).ok());
  REQUIRE(damage.size() == 1);
  CHECK(damage[0].find("'hurt'") != std::string::npos);
  RequireReads(*store, "good", Random(kMiB, 83));
  // A damaged manifest keeps its packs (which ones are unknown) until it is
  // removed.
  REQUIRE(store->Remove("hurt").ok());
  damage.clear();
  REQUIRE(store->Verify(&damage).ok());
  CHECK(damage.empty());
  CHECK(Names(dir + "/packs") == std::vector<std::string>{packs[0]});
}

TEST_CASE("statestore: a manifest damaged after Open is caught by Read", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  auto store = OpenStore(dir);
  RequireSaved(*store, "s", Random(kMiB, 91));
  FlipByte(dir + "/states/s.state", 30);
  Bytes got;
  Status s = ReadBack(*store, "s", &got);
  CHECK(s.code() == Status::Code::kCorruption);
  CHECK(got.empty());
  std::vector<std::string> damage;
  REQUIRE(store->Verify(&damage).ok());
  CHECK(damage.size() == 1);
  // Reopened: listed as damaged, not as a state; its pack is kept.
  store.reset();
  store = OpenStore(dir);
  std::vector<StateInfo> list;
  REQUIRE(store->List(&list).ok());
  CHECK(list.empty());
  StateInfo info;
  CHECK(store->Get("s", &info).code() == Status::Code::kCorruption);
  CHECK(Save(*store, "s", "x").code() == Status::Code::kAlreadyExists);
  CHECK(Names(dir + "/packs").size() == 1);
}

TEST_CASE("statestore: a second Open of the same directory is Busy", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  auto store = OpenStore(dir);
  std::unique_ptr<StateStore> second;
  Status s = StateStore::Open(dir, &second);
  CHECK(s.code() == Status::Code::kBusy);
  CHECK(s.message() == "another rewind process is using the saved VM state in " + dir);
  CHECK(StateStoreBytes(dir) == 0);  // readable without the lock
  store.reset();
  REQUIRE(StateStore::Open(dir, &second).ok());
}

TEST_CASE("statestore: a full disk fails the save and leaves nothing", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  auto fsys = std::make_shared<FaultInjectionFS>();
  StateStoreOptions o;
  o.fs = fsys;
  auto store = OpenStore(dir, o);
  RequireSaved(*store, "a", Random(kMiB, 101));
  const std::string before = Listing(dir);
  const Bytes data = Random(8 * kMiB, 102);
  std::unique_ptr<StateWriter> w;
  REQUIRE(store->NewWriter(&w).ok());
  StateInfo info;
  SECTION("while the pack is written") {
    FsFault f;
    f.kind = FsFault::Kind::kNoSpace;
    f.skip = 20;
    f.times = -1;
    f.path_contains = ".pack";
    fsys->FailWrites(f);
    Status s = Feed(*w, data);
    if (s.ok()) s = w->Commit("b", {}, &info);
    INFO(s.ToString());
    CHECK(s.code() == Status::Code::kNoSpace);
    // The writer is unusable from then on.
    CHECK(!w->Append("x", 1).ok());
    CHECK(!w->Commit("c", {}, &info).ok());
  }
  SECTION("while the manifest is written") {
    FsFault f;
    f.kind = FsFault::Kind::kNoSpace;
    f.path_contains = ".state";
    fsys->FailWrites(f);
    REQUIRE(Feed(*w, data).ok());
    Status s = w->Commit("b", {}, &info);
    INFO(s.ToString());
    CHECK(s.code() == Status::Code::kNoSpace);
  }
  w.reset();
  fsys->ClearFaults();
  CHECK(Listing(dir) == before);
  CHECK(store->Get("b", &info).code() == Status::Code::kNotFound);
  RequireSaved(*store, "b", data);  // the id was not kept
  RequireReads(*store, "b", data);
}

TEST_CASE("statestore: a power cut keeps committed states and drops the rest", "[statestore]") {
  TempDir tmp("rwss");
  const std::string dir = tmp / "vmstate";
  auto fsys = std::make_shared<FaultInjectionFS>();
  StateStoreOptions o;
  o.fs = fsys;
  const Bytes a = Random(2 * kMiB, 111), b = Random(3 * kMiB, 112), c = Random(kMiB, 113);
  auto store = OpenStore(dir, o);
  RequireSaved(*store, "a", a);
  std::unique_ptr<StateWriter> w;
  REQUIRE(store->NewWriter(&w).ok());
  SECTION("cut right after a commit") {
    REQUIRE(Feed(*w, b).ok());
    StateInfo info;
    REQUIRE(w->Commit("b", {}, &info).ok());
  }
  SECTION("cut while the stream is written") { REQUIRE(Feed(*w, b + a).ok()); }
  SECTION("cut after the pack is durable, before the manifest is") {
    FsFault f;
    f.path_contains = ".state";
    fsys->FailWrites(f);
    REQUIRE(Feed(*w, b).ok());
    StateInfo info;
    REQUIRE(!w->Commit("b", {}, &info).ok());
  }
  // The cut: nothing reaches the disk any more, not even the clean-up.
  fsys->SetActive(false);
  w.reset();
  store.reset();
  REQUIRE(fsys->DropUnsyncedData() == "");
  REQUIRE(fsys->DeleteFilesCreatedAfterLastDirSync() == "");
  fsys->SetActive(true);
  fsys->ClearFaults();
  fsys->ResetState();

  store = OpenStore(dir, o);
  std::vector<StateInfo> list;
  REQUIRE(store->List(&list).ok());
  RequireReads(*store, "a", a);
  std::vector<std::string> damage;
  REQUIRE(store->Verify(&damage).ok());
  CHECK(damage.empty());
  if (list.size() == 2) {
    RequireReads(*store, "b", b);
    CHECK(Names(dir + "/packs").size() == 2);
  } else {
    REQUIRE(list.size() == 1);
    CHECK(Names(dir + "/packs").size() == 1);  // no orphan left
    CHECK(Names(dir + "/states") == std::vector<std::string>{"a.state"});
  }
  RequireSaved(*store, "c", c);
  RequireReads(*store, "c", c);
}

TEST_CASE("statestore: throughput of a save", "[statestore]") {
  TempDir tmp("rwss");
  StateStoreOptions o;
  if (const char* t = std::getenv("REWIND_TEST_COMPRESS_THREADS"))
    o.compress_threads = std::atoi(t);
  auto store = OpenStore(tmp / "vmstate", o);
  struct Run {
    const char* name;
    Bytes data;
  };
  std::vector<Run> runs;
  runs.push_back({"random", Random(256 * kMiB, 121)});
  runs.push_back({"zero", Bytes(256 * kMiB, '\0')});
  runs.push_back({"mixed", Mixed(64 * 1024, 122)});
  for (const Run& r : runs) {
    std::unique_ptr<StateWriter> w;
    REQUIRE(store->NewWriter(&w).ok());
    const double t0 = rwd::test::NowSeconds();
    // 64 KiB pieces, as read from QEMU's pipe.
    for (size_t off = 0; off < r.data.size(); off += 64 * 1024) {
      REQUIRE(
          w->Append(r.data.data() + off, std::min<size_t>(64 * 1024, r.data.size() - off)).ok());
    }
    const double t1 = rwd::test::NowSeconds();
    StateInfo info;
    REQUIRE(w->Commit(r.name, {}, &info).ok());
    const double t2 = rwd::test::NowSeconds();
    Bytes got;
    got.reserve(r.data.size());
    REQUIRE(ReadBack(*store, r.name, &got).ok());
    const double t3 = rwd::test::NowSeconds();
    CHECK(got == r.data);
    const double mb = r.data.size() / 1e6;
    WARN(
        fmt::format("{}: {} MiB appended at {:.0f} MB/s, {:.0f} MB/s with the commit's fsyncs "
                    "({:.2f} s); read at {:.0f} MB/s; stored {} bytes, {} new of {} chunks",
                    r.name, r.data.size() / kMiB, mb / (t1 - t0), mb / (t2 - t0), t2 - t1,
                    mb / (t3 - t2), info.new_bytes, info.new_chunks, info.chunks));
  }
}

}  // namespace
}  // namespace rwd::vm
