// A store of several disks (disk=NAME, repeatable, with size=NAME:SIZE and
// image=NAME:FILE) under a real nbdkit: each disk is its own export ("NAME"
// live, "NAME@POINT" read-only), all of them on one timeline (one LSN
// sequence, one list of checkpoints), listed by NBD_OPT_LIST, kept across
// restarts and crashes, and named by the control protocol's info, restore
// and diff.  A store made without disk= keeps its old exports "" and
// "@POINT".
#include <libnbd.h>

#include <cerrno>
#include <filesystem>
#include <set>
#include <thread>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

// No ';' in test names here: catch_discover_tests splits a name at ';' into
// ctest tests whose names match no test case, which then "pass" running
// nothing.

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kSizeA = 8 * kMiB;
constexpr uint64_t kSizeB = 4 * kMiB;

// Parameters of a new store with disks a (8 MiB) and b (4 MiB).
std::vector<std::string> TwoDisks(const std::string& dir) {
  return {"dir=" + dir, "disk=a", "disk=b", "size=a:8M", "size=b:4M"};
}

std::unique_ptr<NbdClient> ConnectExport(const std::string& socket, const std::string& name) {
  NbdClientOptions o;
  o.export_name = name;
  return NbdClient::Connect(socket, o);
}

// One request on a fresh connection to the control socket; the response.
nlohmann::json Ask(const std::string& dir, const nlohmann::json& request) {
  auto c = LineClient::Connect(dir + "/control.sock");
  return ParseJsonLine(c->Request(request.dump()));
}

// As Ask, for a request that must succeed: its result.
nlohmann::json AskOk(const std::string& dir, nlohmann::json request) {
  request["v"] = 1;
  nlohmann::json resp = Ask(dir, request);
  INFO("request " << request.dump() << " -> " << resp.dump());
  REQUIRE(resp.value("ok", false) == true);
  REQUIRE(resp.contains("result"));
  return resp["result"];
}

// As Ask, for a request that must fail with code: the error message.
std::string AskFails(const std::string& dir, nlohmann::json request, const std::string& code) {
  request["v"] = 1;
  nlohmann::json resp = Ask(dir, request);
  INFO("request " << request.dump() << " -> " << resp.dump());
  REQUIRE(resp.value("ok", true) == false);
  REQUIRE(resp.contains("error"));
  CHECK(resp["error"].value("code", "") == code);
  std::string message = resp["error"].value("message", "");
  CHECK(message != "");
  return message;
}

// A checkpoint through the control socket; its LSN.
uint64_t Checkpoint(const std::string& dir, const std::string& name) {
  nlohmann::json cp = AskOk(dir, {{"op", "checkpoint"}, {"name", name}});
  CHECK(cp.value("name", "") == name);
  return cp.value("lsn", uint64_t{0});
}

// The LSN of the newest write of the store (on any disk).
uint64_t NewestLsn(const std::string& dir) {
  return AskOk(dir, {{"op", "info"}}).value("newest_lsn", uint64_t{0});
}

// Reads [offset, offset+want.size()) through c and requires want.
void ExpectBytes(NbdClient& c, uint64_t offset, const std::vector<uint8_t>& want,
                 const std::string& what) {
  auto got = c.Pread(want.size(), offset);
  INFO(what << ": [" << offset << ", " << offset + want.size() << ")");
  CHECK(FirstDifference(got.data(), want.data(), want.size(), offset) == "");
}

std::vector<uint8_t> Zeros(size_t len) { return std::vector<uint8_t>(len, 0); }

TEST_CASE("multidisk: two disks of different sizes are two exports, each written on its own",
          "[multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, TwoDisks(dir));
  auto a = ConnectExport(server->socket(), "a");
  auto b = ConnectExport(server->socket(), "b");
  auto first = ConnectExport(server->socket(), "");  // the default export: disk a

  CHECK(a->Size() == static_cast<int64_t>(kSizeA));
  CHECK(b->Size() == static_cast<int64_t>(kSizeB));
  CHECK(first->Size() == static_cast<int64_t>(kSizeA));
  CHECK_FALSE(a->IsReadOnly());
  CHECK_FALSE(b->IsReadOnly());
  CHECK(b->CanFua());
  CHECK(b->CanMultiConn());

  // The same offset on both disks holds each disk's own bytes.
  const auto pa = Pattern(64 * kKiB, 1);
  const auto pb = Pattern(64 * kKiB, 2);
  a->Pwrite(pa, 1 * kMiB);
  ExpectBytes(*b, 1 * kMiB, Zeros(pa.size()), "b after a write to a");
  b->Pwrite(pb, 1 * kMiB);
  ExpectBytes(*a, 1 * kMiB, pa, "a after a write to b");
  ExpectBytes(*b, 1 * kMiB, pb, "b");
  // Unaligned, and the last bytes of the smaller disk.
  const auto pb_end = Pattern(5000, 3);
  b->Pwrite(pb_end, kSizeB - pb_end.size());
  ExpectBytes(*b, kSizeB - pb_end.size(), pb_end, "end of b");
  ExpectBytes(*a, kSizeB - pb_end.size(), Zeros(pb_end.size()), "a where b ends");
  // The default export is disk a, for reads and writes.
  ExpectBytes(*first, 1 * kMiB, pa, "default export");
  const auto pfirst = Pattern(4096, 4);
  first->Pwrite(pfirst, 6 * kMiB);
  ExpectBytes(*a, 6 * kMiB, pfirst, "a after a write to the default export");
  // A zero and a trim on b leave a alone.
  b->Zero(16 * kKiB, 1 * kMiB);
  b->Trim(16 * kKiB, 1 * kMiB + 32 * kKiB);
  ExpectBytes(*a, 1 * kMiB, pa, "a after zero and trim on b");
  auto got_b = b->Pread(64 * kKiB, 1 * kMiB);
  CHECK(std::vector<uint8_t>(got_b.begin(), got_b.begin() + 16 * kKiB) == Zeros(16 * kKiB));
  CHECK(std::vector<uint8_t>(got_b.begin() + 16 * kKiB, got_b.begin() + 32 * kKiB) ==
        std::vector<uint8_t>(pb.begin() + 16 * kKiB, pb.begin() + 32 * kKiB));
  // Extents are each disk's own: b has no data where only a was written.
  REQUIRE(b->CanMetaContext(LIBNBD_CONTEXT_BASE_ALLOCATION));
  a->Pwrite(Pattern(64 * kKiB, 5), 2 * kMiB);
  for (const Extent& e : b->BlockStatus(2 * kMiB, 64 * kKiB)) {
    INFO("b extent [" << e.offset << ", " << e.offset + e.length << ") flags " << e.flags);
    CHECK((e.flags & LIBNBD_STATE_ZERO) != 0);
  }
  bool a_has_data = false;
  for (const Extent& e : a->BlockStatus(2 * kMiB, 64 * kKiB)) {
    a_has_data |= (e.flags & LIBNBD_STATE_ZERO) == 0;
  }
  CHECK(a_has_data);
  a->Flush();
  b->Flush();

  // The export list: per disk, its live export, then one per checkpoint.
  CHECK(ListExportNames(server->socket()) == std::vector<std::string>{"a", "b"});
  nlohmann::json cp = RunCliJson({"checkpoint", dir, "--name", "X", "--json"});
  CHECK(cp.value("name", "") == "X");
  CHECK(ListExportNames(server->socket()) == std::vector<std::string>{"a", "a@X", "b", "b@X"});
  Checkpoint(dir, "Y");
  CHECK(ListExportNames(server->socket()) ==
        std::vector<std::string>{"a", "a@X", "a@Y", "b", "b@X", "b@Y"});

  // nbdinfo --list, as an operator would run it: names, sizes, read-only.
  if (!FindInPath("nbdinfo").empty()) {
    ProcResult r =
        RunProcess({"nbdinfo", "--list", "--json", "nbd+unix:///?socket=" + server->socket()});
    INFO(r.Describe());
    REQUIRE(r.ok());
    nlohmann::json j = nlohmann::json::parse(r.out);
    std::vector<std::string> names;
    for (const auto& e : j["exports"]) {
      const std::string name = e["export-name"];
      names.push_back(name);
      INFO("export " << e.dump());
      CHECK(e.value("is_read_only", false) == (name.find('@') != std::string::npos));
      CHECK(e.value("export-size", uint64_t{0}) == (name[0] == 'a' ? kSizeA : kSizeB));
    }
    CHECK(names == std::vector<std::string>{"a", "a@X", "a@Y", "b", "b@X", "b@Y"});
  }
}

TEST_CASE("multidisk: one checkpoint covers both disks at one instant and lsn: is one "
          "sequence across disks",
          "[multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, TwoDisks(dir));
  auto a = ConnectExport(server->socket(), "a");
  auto b = ConnectExport(server->socket(), "b");

  const auto a1 = Pattern(128 * kKiB, 11), a2 = Pattern(128 * kKiB, 12);
  const auto b1 = Pattern(128 * kKiB, 21), b2 = Pattern(128 * kKiB, 22);
  a->Pwrite(a1, 0);
  b->Pwrite(b1, 0);
  a->Flush();
  const uint64_t lsn_c1 = Checkpoint(dir, "c1");
  a->Pwrite(a2, 0);
  b->Pwrite(b2, 0);
  b->Flush();

  // c1 is both disks as they were then; "@c1" is the first disk's.
  ExpectBytes(*ConnectExport(server->socket(), "a@c1"), 0, a1, "a@c1");
  ExpectBytes(*ConnectExport(server->socket(), "b@c1"), 0, b1, "b@c1");
  ExpectBytes(*ConnectExport(server->socket(), "@c1"), 0, a1, "@c1");
  ExpectBytes(*ConnectExport(server->socket(), fmt::format("b@lsn:{}", lsn_c1)), 0, b1,
              "b@lsn:c1");
  CHECK(ConnectExport(server->socket(), "b@c1")->Size() == static_cast<int64_t>(kSizeB));
  ExpectBytes(*a, 0, a2, "live a");
  ExpectBytes(*b, 0, b2, "live b");

  // Writes to a, b, a: consecutive LSNs of one sequence.
  const auto a3 = Pattern(4096, 13), a4 = Pattern(4096, 14), b3 = Pattern(4096, 23);
  a->Pwrite(a3, 2 * kMiB);
  const uint64_t lsn_a3 = NewestLsn(dir);
  b->Pwrite(b3, 2 * kMiB);
  const uint64_t lsn_b3 = NewestLsn(dir);
  a->Pwrite(a4, 2 * kMiB);
  const uint64_t lsn_a4 = NewestLsn(dir);
  CHECK(lsn_a3 > lsn_c1);
  CHECK(lsn_b3 == lsn_a3 + 1);
  CHECK(lsn_a4 == lsn_b3 + 1);
  // At b's write, a held a3 (not yet a4), and b held b3.
  ExpectBytes(*ConnectExport(server->socket(), fmt::format("a@lsn:{}", lsn_b3)), 2 * kMiB, a3,
              "a@lsn:N (N the write to b)");
  ExpectBytes(*ConnectExport(server->socket(), fmt::format("b@lsn:{}", lsn_b3)), 2 * kMiB, b3,
              "b@lsn:N (N the write to b)");
  // Just before it, b did not hold b3 yet; at a's newest write, a holds a4.
  ExpectBytes(*ConnectExport(server->socket(), fmt::format("b@lsn:{}", lsn_a3)), 2 * kMiB,
              Zeros(4096), "b@lsn:N-1");
  ExpectBytes(*ConnectExport(server->socket(), fmt::format("a@lsn:{}", lsn_a4)), 2 * kMiB, a4,
              "a@lsn:newest");
  ExpectBytes(*ConnectExport(server->socket(), fmt::format("b@lsn:{}", lsn_a4)), 2 * kMiB, b3,
              "b@lsn:newest");
  // The disk as created.
  ExpectBytes(*ConnectExport(server->socket(), "b@lsn:0"), 0, Zeros(b1.size()), "b@lsn:0");
  // time: names the same instant on every disk: the c1 checkpoint's time.
  nlohmann::json list = AskOk(dir, {{"op", "list"}});
  REQUIRE(list["checkpoints"].size() == 1);
  const std::string time_c1 = list["checkpoints"][0].value("time", "");
  REQUIRE(time_c1 != "");
  ExpectBytes(*ConnectExport(server->socket(), "b@time:" + time_c1), 0, b1, "b@time:c1");
  ExpectBytes(*ConnectExport(server->socket(), "a@time:" + time_c1), 0, a1, "a@time:c1");
}

TEST_CASE("multidisk: time-travel exports refuse writes and unknown exports are refused "
          "naming the disks",
          "[multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, TwoDisks(dir));
  auto b = ConnectExport(server->socket(), "b");
  const auto pb = Pattern(8192, 31);
  b->Pwrite(pb, 0);
  const uint64_t lsn = Checkpoint(dir, "c1");

  for (const std::string& name : {std::string("b@c1"), std::string("a@c1"),
                                  fmt::format("b@lsn:{}", lsn), std::string("@c1")}) {
    INFO("export " << name);
    auto past = ConnectExport(server->socket(), name);
    CHECK(past->IsReadOnly());
    try {
      past->Pwrite(Pattern(4096, 1), 0);
      FAIL("a write to " << name << " succeeded");
    } catch (const NbdError& e) {
      CHECK(e.error() == EPERM);
    }
    // The server refuses too when the client sends one anyway.
    REQUIRE(nbd_set_strict_mode(past->handle(), 0) == 0);
    std::vector<uint8_t> junk = Pattern(4096, 2);
    CHECK(nbd_pwrite(past->handle(), junk.data(), junk.size(), 0, 0) == -1);
    CHECK(nbd_get_errno() == EPERM);
    CHECK(nbd_zero(past->handle(), 4096, 0, 0) == -1);
    CHECK(nbd_get_errno() == EPERM);
  }
  ExpectBytes(*b, 0, pb, "live b after writes to its past");
  ExpectBytes(*ConnectExport(server->socket(), "b@c1"), 0, pb, "b@c1");

  // Unknown disks are refused at the handshake, and the log names the disks.
  for (const char* name : {"zz", "zz@c1"}) {
    NbdClientOptions o;
    o.export_name = name;
    std::string err = TryConnect(server->socket(), o);
    INFO("export '" << name << "': " << err);
    CHECK_FALSE(err.empty());
    const std::string log = server->log();
    INFO("--- nbdkit log ---\n" << log);
    CHECK(log.find("unknown export '" + std::string(name) + "'") != std::string::npos);
    CHECK(log.find("disks are a, b") != std::string::npos);
  }
  // Unknown points of a known disk, and names that are no disk's.
  for (const char* name :
       {"b@nope", "a@lsn:999", "b@", "B", "a/b", "a@c1@c1", "@nope", "b@time:2001-01-01T00:00:00Z"}) {
    NbdClientOptions o;
    o.export_name = name;
    std::string err = TryConnect(server->socket(), o);
    INFO("export '" << name << "': " << err);
    CHECK_FALSE(err.empty());
  }
  // The server is unharmed.
  REQUIRE(server->Running());
  ExpectBytes(*ConnectExport(server->socket(), "b"), 0, pb, "b after the refusals");
}

TEST_CASE("multidisk: a restart keeps each disk, and another disk list or size is refused at "
          "start",
          "[multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  const auto pa = Pattern(256 * kKiB, 41);
  const auto pb = Pattern(256 * kKiB, 42);
  {
    auto server = StartRewind(tmp, TwoDisks(dir));
    auto a = ConnectExport(server->socket(), "a");
    auto b = ConnectExport(server->socket(), "b");
    a->Pwrite(pa, 3 * kMiB);
    b->Pwrite(pb, 3 * kMiB);
    a->Flush();
    Checkpoint(dir, "c1");
    b->Pwrite(Pattern(4096, 43), 3 * kMiB);
    b->Flush();
    a.reset();
    b.reset();
    ExitStatus st = server->Stop();
    INFO(server->log());
    REQUIRE(st.success());
  }

  // Refusals, each one line, leaving the store as it was.
  const std::string before = DirListing(dir);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a"}, {"also has disk 'b'", "a, b"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=b", "disk=a"}, {"another order", "a, b"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a", "disk=b", "disk=c", "size=c:1M"},
                      {"no disk 'c'", "cannot be added"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a", "disk=b", "size=a:16M"},
                      {"size=a:16777216", "does not match", "8388608"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a", "disk=b", "size=b:8M"},
                      {"disk 'b'", "does not match", "4194304"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a", "disk=b", "size=zz:1M"},
                      {"size=zz:1M", "'zz'", "no disk= gives"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a", "disk=b", "size=1M"},
                      {"size=1M", "size=NAME:SIZE", "a, b"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a", "disk=b", "image=" + tmp / "x.raw"},
                      {"image=NAME:FILE"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a", "disk=a"}, {"'a'", "twice"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a", "disk=b", "size=a:8M", "size=a:8M"},
                      {"disk 'a'", "more than once"});
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a/b"}, {"a/b"});
  CHECK(DirListing(dir) == before);
  // The same with a new store: nothing is created.
  const std::string fresh = tmp / "fresh";
  ExpectNbdkitRefuses(tmp, {"dir=" + fresh, "disk=a", "disk=b", "size=1M"}, {"size=NAME:SIZE"});
  ExpectNbdkitRefuses(tmp, {"dir=" + fresh, "disk=a", "disk=b", "size=a:1M"},
                      {"disk 'b'", "size=b:SIZE"});
  CHECK(DirListing(fresh) == "<missing>");

  // The same disks, with and without their sizes (which may come before
  // their disk=): the data and the history.
  for (const auto& params :
       {std::vector<std::string>{"dir=" + dir, "disk=a", "disk=b"}, TwoDisks(dir),
        std::vector<std::string>{"size=b:4M", "dir=" + dir, "disk=a", "size=a:8M", "disk=b"}}) {
    std::string joined;
    for (const auto& x : params) joined += x + " ";
    INFO("params: " << joined);
    auto server = StartRewind(tmp, params);
    auto a = ConnectExport(server->socket(), "a");
    auto b = ConnectExport(server->socket(), "b");
    CHECK(a->Size() == static_cast<int64_t>(kSizeA));
    CHECK(b->Size() == static_cast<int64_t>(kSizeB));
    ExpectBytes(*a, 3 * kMiB, pa, "a after restart");
    auto want_b = pb;
    auto p43 = Pattern(4096, 43);
    std::copy(p43.begin(), p43.end(), want_b.begin());
    ExpectBytes(*b, 3 * kMiB, want_b, "b after restart");
    ExpectBytes(*ConnectExport(server->socket(), "b@c1"), 3 * kMiB, pb, "b@c1 after restart");
    CHECK(ListExportNames(server->socket()) == std::vector<std::string>{"a", "a@c1", "b", "b@c1"});
  }
  // No disk= at all: the store serves the disks it has.
  {
    auto server = StartRewind(tmp, {"dir=" + dir});
    CHECK(ListExportNames(server->socket()) == std::vector<std::string>{"a", "a@c1", "b", "b@c1"});
    ExpectBytes(*ConnectExport(server->socket(), "b@c1"), 3 * kMiB, pb, "b@c1, no disk=");
    CHECK(ConnectExport(server->socket(), "")->Size() == static_cast<int64_t>(kSizeA));
  }
}

TEST_CASE("multidisk: the control socket's info lists the disks, restore and diff name one",
          "[multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  TempDir out;  // restore outputs, outside the store
  const std::string dir = tmp / "store";
  // b adopts an image of its own, outside the store.
  const std::string b_image = out / "b-live.raw";
  REQUIRE(RunProcess({"truncate", "-s", "4M", b_image}).ok());
  auto server = StartRewind(tmp, {"dir=" + dir, "disk=a", "disk=b", "size=a:8M",
                                  "image=b:" + b_image});

  nlohmann::json info = AskOk(dir, {{"op", "info"}});
  INFO(info.dump());
  REQUIRE(info.contains("disks"));
  REQUIRE(info["disks"].size() == 2);
  CHECK(info["disks"][0].value("name", "") == "a");
  CHECK(info["disks"][0].value("size", uint64_t{0}) == kSizeA);
  CHECK(info["disks"][0].value("image", "") == dir + "/disks/a.raw");
  CHECK(info["disks"][1].value("name", "") == "b");
  CHECK(info["disks"][1].value("size", uint64_t{0}) == kSizeB);
  CHECK(info["disks"][1].value("image", "") == b_image);

  auto a = ConnectExport(server->socket(), "a");
  auto b = ConnectExport(server->socket(), "b");
  const auto a1 = Pattern(64 * kKiB, 51);
  const auto b1 = Pattern(64 * kKiB, 52), b1_far = Pattern(12000, 53);
  a->Pwrite(a1, 0);
  b->Pwrite(b1, 0);
  b->Pwrite(b1_far, 3 * kMiB + 100);
  b->Flush();
  Checkpoint(dir, "c1");
  // After c1: b overwritten (so a restore of b at c1 needs the journal), a
  // written elsewhere.
  b->Pwrite(Pattern(64 * kKiB, 54), 0);
  a->Pwrite(Pattern(8192, 55), 5 * kMiB);
  a->Flush();
  const uint64_t newest = NewestLsn(dir);

  // Restore b at c1: exactly b@c1, b's size.
  const std::string b_out = out / "b-c1.raw";
  nlohmann::json r = AskOk(dir, {{"op", "restore"}, {"disk", "b"}, {"to", "c1"}, {"output", b_out}});
  INFO(r.dump());
  CHECK(r.value("disk", "") == "b");
  CHECK(r.value("bytes", uint64_t{0}) == kSizeB);
  CHECK(r.value("output", "") == b_out);
  {
    std::string bytes = ReadFile(b_out);
    REQUIRE(bytes.size() == kSizeB);
    std::vector<uint8_t> want(kSizeB, 0);
    std::copy(b1.begin(), b1.end(), want.begin());
    std::copy(b1_far.begin(), b1_far.end(), want.begin() + 3 * kMiB + 100);
    CHECK(FirstDifference(reinterpret_cast<const uint8_t*>(bytes.data()), want.data(), kSizeB, 0) ==
          "");
    ExpectBytes(*ConnectExport(server->socket(), "b@c1"), 0, want, "b@c1 against the restore");
  }
  // Restore a at c1: a's size and content.
  const std::string a_out = out / "a-c1.raw";
  r = AskOk(dir, {{"op", "restore"}, {"disk", "a"}, {"to", "c1"}, {"output", a_out}});
  CHECK(r.value("disk", "") == "a");
  {
    std::string bytes = ReadFile(a_out);
    REQUIRE(bytes.size() == kSizeA);
    std::vector<uint8_t> want(kSizeA, 0);
    std::copy(a1.begin(), a1.end(), want.begin());
    CHECK(FirstDifference(reinterpret_cast<const uint8_t*>(bytes.data()), want.data(), kSizeA, 0) ==
          "");
  }

  // Without "disk", or with an unknown one: refused, nothing written.
  const std::string none = out / "none.raw";
  std::string msg = AskFails(dir, {{"op", "restore"}, {"to", "c1"}, {"output", none}},
                             "invalid-argument");
  CHECK(msg.find("a, b") != std::string::npos);
  msg = AskFails(dir, {{"op", "restore"}, {"disk", "zz"}, {"to", "c1"}, {"output", none}},
                 "not-found");
  CHECK(msg.find("'zz'") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(none));
  // Never over a live image: b's adopted image, whichever disk is restored.
  for (const char* disk : {"a", "b"}) {
    INFO("restore of " << disk << " over b's live image");
    AskFails(dir,
             {{"op", "restore"}, {"disk", disk}, {"to", "c1"}, {"output", b_image}, {"force", true}},
             "invalid-argument");
  }
  ExpectBytes(*b, 0, Pattern(64 * kKiB, 54), "live b after the refused restores");

  // Diff of one disk: its own ranges only.
  const std::string to = fmt::format("lsn:{}", newest);
  nlohmann::json d = AskOk(dir, {{"op", "diff"}, {"disk", "b"}, {"from", "c1"}, {"to", to}});
  INFO(d.dump());
  CHECK(d.value("disk", "") == "b");
  CHECK(d["ranges"] == nlohmann::json::array({{{"offset", 0}, {"length", 64 * kKiB}}}));
  d = AskOk(dir, {{"op", "diff"}, {"disk", "a"}, {"from", "c1"}, {"to", to}});
  CHECK(d.value("disk", "") == "a");
  CHECK(d["ranges"] == nlohmann::json::array({{{"offset", 5 * kMiB}, {"length", 8192}}}));
  d = AskOk(dir, {{"op", "diff"}, {"disk", "b"}, {"from", "lsn:0"}, {"to", "c1"}});
  CHECK(d["ranges"] == nlohmann::json::array({{{"offset", 0}, {"length", 64 * kKiB}},
                                              {{"offset", 3 * kMiB + 100}, {"length", 12000}}}));
  msg = AskFails(dir, {{"op", "diff"}, {"from", "c1"}, {"to", to}}, "invalid-argument");
  CHECK(msg.find("a, b") != std::string::npos);
  AskFails(dir, {{"op", "diff"}, {"disk", "zz"}, {"from", "c1"}, {"to", to}}, "not-found");

  // Rollback has no disk: it puts every disk back to c1 at once.
  a->Shutdown();
  b->Shutdown();
  a.reset();
  b.reset();
  // The server notices the disconnections a moment later: busy until then.
  nlohmann::json rb;
  for (int i = 0; i < 500; ++i) {
    rb = Ask(dir, {{"v", 1}, {"op", "rollback"}, {"to", "c1"}});
    if (rb.value("ok", false) || rb["error"].value("code", "") != "busy") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  INFO(rb.dump());
  REQUIRE(rb.value("ok", false) == true);
  ExpectBytes(*ConnectExport(server->socket(), "b"), 0, b1, "b after rollback");
  ExpectBytes(*ConnectExport(server->socket(), "a"), 5 * kMiB, Zeros(8192), "a after rollback");
}

TEST_CASE("multidisk: a store made without disk= keeps its exports \"\" and \"@NAME\"",
          "[multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, {"dir=" + dir, "size=4M"});
  auto live = ConnectExport(server->socket(), "");
  const auto p = Pattern(8192, 61);
  live->Pwrite(p, 4096);
  live->Flush();
  RunCliJson({"checkpoint", dir, "--name", "X", "--json"});
  live->Pwrite(Pattern(8192, 62), 4096);

  CHECK(ListExportNames(server->socket()) == std::vector<std::string>{"", "@X"});
  ExpectBytes(*ConnectExport(server->socket(), "@X"), 4096, p, "@X");
  CHECK(ConnectExport(server->socket(), "@X")->Size() == 4 << 20);
  for (const char* name : {"a", "a@X", "X"}) {
    NbdClientOptions o;
    o.export_name = name;
    INFO("export '" << name << "'");
    CHECK_FALSE(TryConnect(server->socket(), o).empty());
  }
  CHECK(server->log().find("this store has one disk") != std::string::npos);
  nlohmann::json info = AskOk(dir, {{"op", "info"}});
  INFO(info.dump());
  REQUIRE(info["disks"].size() == 1);
  CHECK(info["disks"][0].value("name", "?") == "");
  CHECK(info["disks"][0].value("size", uint64_t{0}) == 4u << 20);
  // Restore and diff need no disk; naming one is an error.
  TempDir out;
  nlohmann::json r = AskOk(dir, {{"op", "restore"}, {"to", "X"}, {"output", out / "x.raw"}});
  CHECK_FALSE(r.contains("disk"));
  CHECK(ReadFile(out / "x.raw").substr(4096, p.size()) ==
        std::string(reinterpret_cast<const char*>(p.data()), p.size()));
  AskFails(dir, {{"op", "restore"}, {"disk", "a"}, {"to", "X"}, {"output", out / "y.raw"}},
           "not-found");
  live.reset();
  ExitStatus st = server->Stop();
  REQUIRE(st.success());
  // disk= cannot be given to it afterwards.
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "disk=a"}, {"without disk names"});
}

TEST_CASE("multidisk: kill -9 after FUA writes and flushes keeps every acknowledged write on "
          "both disks",
          "[multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, TwoDisks(dir));
  // A checkpoint first, so later writes also make recovery blocks.
  Checkpoint(dir, "c0");

  struct Written {
    char disk;
    uint64_t offset;
    std::vector<uint8_t> data;
  };
  std::vector<Written> durable;
  {
    auto a = ConnectExport(server->socket(), "a");
    auto b = ConnectExport(server->socket(), "b");
    // Interleaved FUA writes to both disks, at the same offsets on each.
    for (uint64_t i = 0; i < 64; ++i) {
      const uint64_t off = (i * 61 * 4096 + i * 512) % (kSizeB - 70000);
      const size_t len = 512 + (i * 7919) % 65536;
      auto da = Pattern(len, 1000 + i), db = Pattern(len, 2000 + i);
      a->Pwrite(da, off, LIBNBD_CMD_FLAG_FUA);
      b->Pwrite(db, off, LIBNBD_CMD_FLAG_FUA);
      durable.push_back({'a', off, std::move(da)});
      durable.push_back({'b', off, std::move(db)});
    }
    // Plain writes, then a flush on each disk's own connection.
    for (uint64_t i = 0; i < 32; ++i) {
      const uint64_t off = 4 * kMiB + i * 40000;  // a only: beyond b's end
      auto da = Pattern(30000, 3000 + i);
      a->Pwrite(da, off);
      durable.push_back({'a', off, std::move(da)});
      auto db = Pattern(4096, 4000 + i);
      b->Pwrite(db, kSizeB - (i + 1) * 4096);
      durable.push_back({'b', kSizeB - (i + 1) * 4096, std::move(db)});
    }
    a->Flush();
    b->Flush();
    // Disks share one journal, and a flush covers every disk (Disk::Flush):
    // a plain write to a, made durable by a flush on b's connection.
    auto cross = Pattern(4096, 5000);
    a->Pwrite(cross, 7 * kMiB);
    b->Flush();
    durable.push_back({'a', 7 * kMiB, std::move(cross)});
    server->Kill9();
  }

  server = StartRewind(tmp, TwoDisks(dir));
  auto a = ConnectExport(server->socket(), "a");
  auto b = ConnectExport(server->socket(), "b");
  // Later writes to the same range win: replay the list into a model.
  std::vector<uint8_t> model_a(kSizeA, 0), model_b(kSizeB, 0);
  for (const Written& w : durable) {
    auto& m = w.disk == 'a' ? model_a : model_b;
    std::copy(w.data.begin(), w.data.end(), m.begin() + static_cast<ptrdiff_t>(w.offset));
  }
  for (uint64_t off = 0; off < kSizeA; off += 2 * kMiB) {
    auto got = a->Pread(2 * kMiB, off);
    INFO("disk a after kill -9");
    CHECK(FirstDifference(got.data(), model_a.data() + off, got.size(), off) == "");
  }
  for (uint64_t off = 0; off < kSizeB; off += 2 * kMiB) {
    auto got = b->Pread(2 * kMiB, off);
    INFO("disk b after kill -9");
    CHECK(FirstDifference(got.data(), model_b.data() + off, got.size(), off) == "");
  }
  // And the past is intact: both disks at c0 are as created.
  CHECK(ConnectExport(server->socket(), "b@c0")->Pread(kSizeB, 0) == Zeros(kSizeB));
  CHECK(ConnectExport(server->socket(), "a@c0")->Pread(kSizeA, 0) == Zeros(kSizeA));
  nlohmann::json v = AskOk(dir, {{"op", "verify"}});
  INFO(v.dump());
  CHECK(v.value("clean", false) == true);
}

// ---- Fixed bugs ---------------------------------------------------------------

// A restore of a disk that is not the first once announced the FIRST disk's
// size as its total (nbdplugin/server.cc passed Store::size() to its
// progress lines).
TEST_CASE("multidisk: restore progress of disk b counts disk b's size",
          "[multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  TempDir out;
  const std::string dir = tmp / "store";
  auto server = StartRewind(tmp, TwoDisks(dir));
  Checkpoint(dir, "c1");
  auto c = LineClient::Connect(dir + "/control.sock");
  nlohmann::json req = {{"v", 1}, {"op", "restore"},         {"disk", "b"},
                        {"to", "c1"}, {"output", out / "b.raw"}, {"progress", true}};
  REQUIRE(c->Send(req.dump() + "\n"));
  std::vector<nlohmann::json> progress;
  nlohmann::json result;
  for (;;) {
    auto line = c->ReadLine();
    REQUIRE(line);
    nlohmann::json j = ParseJsonLine(*line);
    if (j.contains("progress")) {
      progress.push_back(j["progress"]);
      continue;
    }
    REQUIRE(j.value("ok", false) == true);
    result = j["result"];
    break;
  }
  REQUIRE(result.value("bytes", uint64_t{0}) == kSizeB);
  REQUIRE_FALSE(progress.empty());
  // The total of a restore is the disk's size plus the bytes taken from the
  // journal (docs/control-protocol.md), or 0 while not known.
  const uint64_t total = kSizeB + result.value("changed_bytes", uint64_t{0});
  for (const auto& p : progress) {
    INFO("progress line " << p.dump() << " of a restore of b (" << kSizeB << " bytes)");
    CHECK((p.value("total", uint64_t{0}) == 0 || p.value("total", uint64_t{0}) == total));
  }
}

// Two disks adopting one file were once refused only when the two paths
// were spelled alike (journal/store_open.cc compared lexically normal
// paths): image=a:IMG image=b:LINK, LINK a symbolic link to IMG, made a
// store whose two disks were one file, every write to a showing on b and
// b's history wrong.  Now the check compares device and inode.
TEST_CASE("multidisk: two disks adopting one file through a symlink are refused",
          "[multidisk][e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  const std::string img = tmp / "img.raw";
  const std::string link = tmp / "link.raw";
  REQUIRE(RunProcess({"truncate", "-s", "1M", img}).ok());
  std::filesystem::create_symlink(img, link);
  const std::vector<std::string> params = {"dir=" + dir, "disk=a", "disk=b", "image=a:" + img,
                                           "image=b:" + link};
  std::unique_ptr<NbdServer> server;
  try {
    server = StartRewind(tmp, params);
  } catch (const std::runtime_error& e) {
    // The right outcome: refused at start, naming the shared image.
    INFO(e.what());
    CHECK(std::string(e.what()).find("same image") != std::string::npos);
    return;
  }
  auto a = ConnectExport(server->socket(), "a");
  auto b = ConnectExport(server->socket(), "b");
  const auto p = Pattern(4096, 71);
  a->Pwrite(p, 0);
  a->Flush();
  INFO("nbdkit started with two disks on one file: " << server->command());
  ExpectBytes(*b, 0, Zeros(4096), "live b after a write to a");
  ExpectBytes(*ConnectExport(server->socket(), "b@lsn:0"), 0, Zeros(4096), "b@lsn:0");
  FAIL("two disks adopting one file (one path a symbolic link to the other) were not refused");
}

}  // namespace
}  // namespace rwd::test
