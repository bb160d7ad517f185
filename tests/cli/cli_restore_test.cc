// `rewind restore` without a running plugin: the CLI opens the store.  The
// history is written through the store in this process (the plugin's path
// to it), then restored with the built binary and compared byte for byte
// with a model of the disk.  Online restores are in cli_restore_online_test.cc.
#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli_util.h"
#include "restore_util.h"
#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSize = 8 << 20;
constexpr uint64_t kMiB = 1 << 20;

// A store with a small history, and the disk's content after each LSN.
struct History {
  std::string dir;
  std::vector<std::string> at;  // at[lsn]: the disk right after write lsn
  uint64_t checkpoint_lsn = 0;  // of checkpoint "one"
};

// lsn 1: 64 KiB at 1 MiB; lsn 2: 4 KiB at 5 MiB; checkpoint "one";
// lsn 3: 64 KiB at 1 MiB again (unaligned by 512); lsn 4: zero the 4 KiB at
// 5 MiB; lsn 5: 12 KiB at 7 MiB.
History MakeHistory(const TempDir& tmp) {
  History h;
  h.dir = tmp / "store";
  REQUIRE(Rewind({"create", h.dir, "--size", std::to_string(kSize)}).ok());
  DiskImage model(kSize);
  h.at.push_back(model.bytes());
  std::unique_ptr<Store> store = OpenStore(h.dir);
  auto write = [&](uint64_t offset, std::vector<uint8_t> data) {
    REQUIRE(store->Write(offset, static_cast<uint32_t>(data.size()), data.data(), false).ok());
    model.Write(offset, data);
    h.at.push_back(model.bytes());
  };
  write(1 * kMiB, Pattern(64 << 10, 1));
  write(5 * kMiB, Pattern(4096, 2));
  CheckpointInfo cp;
  REQUIRE(store->Checkpoint("one", &cp).ok());
  h.checkpoint_lsn = cp.lsn;
  write(1 * kMiB + 512, Pattern(64 << 10, 3));
  REQUIRE(store->Zero(5 * kMiB, 4096, false, false).ok());
  model.Zero(5 * kMiB, 4096);
  h.at.push_back(model.bytes());
  write(7 * kMiB, Pattern(12 << 10, 4));
  REQUIRE(store->Close().ok());
  REQUIRE(h.checkpoint_lsn == 2);
  REQUIRE(h.at.size() == 6);
  return h;
}

const std::regex kSummary(
    R"(restored lsn (\d+) \((checkpoint ([^,]+), )?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC\) )"
    R"(to (\S+): 8 MiB, ([0-9.]+ [KMG]?i?B) from the journal, \d+\.\d s\n)");

TEST_CASE("restore offline to a checkpoint and to every lsn", "[cli][restore]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);

  {
    std::string out = tmp / "one.raw";
    ProcResult r = Rewind({"restore", h.dir, "--to", "one", "--output", out});
    INFO(r.Describe());
    REQUIRE(r.ok());
    CHECK(r.err.empty());  // no progress bar: stderr is not a terminal
    std::smatch m;
    REQUIRE(std::regex_match(r.out, m, kSummary));
    CHECK(m[1] == "2");
    CHECK(m[3] == "one");
    CHECK(m[4] == out);
    CHECK(CompareFile(out, h.at[2]) == "");
    // Sparse: only the written blocks take space.
    CHECK(AllocatedBytes(out) < 1 * kMiB);
  }
  for (uint64_t lsn = 0; lsn < h.at.size(); ++lsn) {
    std::string out = tmp / fmt::format("lsn{}.raw", lsn);
    ProcResult r = Rewind({"restore", h.dir, "--to", fmt::format("lsn:{}", lsn), "--output", out});
    INFO(r.Describe());
    REQUIRE(r.ok());
    std::smatch m;
    REQUIRE(std::regex_match(r.out, m, kSummary));
    CHECK(m[1] == std::to_string(lsn));
    CHECK_FALSE(m[2].matched);
    INFO("lsn " << lsn);
    CHECK(CompareFile(out, h.at[lsn]) == "");
  }
  CHECK(TempFilesIn(tmp.path()).empty());

  // A time: the instant of the checkpoint names the same state.
  nlohmann::json list = nlohmann::json::parse(Rewind({"list", h.dir, "--json"}).out);
  std::string when = list["checkpoints"][0]["time"];
  std::string out = tmp / "time.raw";
  ProcResult r = Rewind({"restore", h.dir, "--to", "time:" + when, "--output", out});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(CompareFile(out, h.at[2]) == "");
  // And a relative time covers the whole (recent) history.
  r = Rewind({"restore", h.dir, "--to", "-1s", "--output", tmp / "rel.raw"});
  INFO(r.Describe());
  if (r.ok()) {
    CHECK(ReadFile(tmp / "rel.raw").size() == kSize);
  } else {
    CHECK(r.err.find("before the store was created") != std::string::npos);
  }
}

TEST_CASE("restore --json prints the result object", "[cli][restore]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  std::string out = tmp / "one.raw";
  ProcResult r = Rewind({"restore", h.dir, "--to", "one", "--output", out, "--json"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  nlohmann::json j = nlohmann::json::parse(r.out);
  CHECK(j["point"]["text"] == "one");
  CHECK(j["point"]["lsn"] == 2);
  CHECK(j["point"]["checkpoint"] == "one");
  CHECK(j["point"]["time_ns"].is_number_integer());
  CHECK(std::regex_match(j["point"]["time"].get<std::string>(),
                         std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)")));
  CHECK(j["output"] == out);
  CHECK(j["bytes"] == kSize);
  CHECK(j["data_bytes"] == (64 << 10) + 4096);
  CHECK(j["changed_bytes"].get<uint64_t>() > 0);
  CHECK(j["seconds"].is_number());

  r = Rewind({"restore", h.dir, "--to", "lsn:5", "--output", tmp / "five.raw", "--json"});
  REQUIRE(r.ok());
  j = nlohmann::json::parse(r.out);
  CHECK_FALSE(j["point"].contains("checkpoint"));
  CHECK(j["point"]["text"] == "lsn:5");
}

TEST_CASE("restore replaces an existing output only with --force", "[cli][restore]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  std::string out = tmp / "disk.raw";
  WriteFile(out, "precious");

  ProcResult r = Rewind({"restore", h.dir, "--to", "one", "--output", out});
  INFO(r.Describe());
  CHECK(r.status.code == 1);
  CHECK(r.out.empty());
  CheckOneLineError(r, "restore");
  CHECK(r.err.find("exists") != std::string::npos);
  CHECK(r.err.find("--force") != std::string::npos);
  CHECK(ReadFile(out) == "precious");
  CHECK(TempFilesIn(tmp.path()).empty());

  r = Rewind({"restore", h.dir, "--to", "one", "--output", out, "--force"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(CompareFile(out, h.at[2]) == "");
  CHECK(TempFilesIn(tmp.path()).empty());
}

TEST_CASE("restore reports bad points and outputs in one line and leaves nothing",
          "[cli][restore]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  fs::create_directory(tmp / "out");
  const std::string out = tmp / "out/disk.raw";
  struct Case {
    std::vector<std::string> args;
    int code;
    const char* says;
  };
  std::vector<Case> cases = {
      {{"--to", "nope", "--output", out}, 1, "no checkpoint named 'nope'"},
      {{"--to", "lsn:99", "--output", out}, 1, "beyond the newest write"},
      {{"--to", "time:2001-01-01T00:00:00Z", "--output", out}, 1, "before the store was created"},
      {{"--to", "bad/name", "--output", out}, 2, "bad point 'bad/name'"},
      {{"--to", "lsn:x", "--output", out}, 2, "bad point"},
      {{"--to", "-10q", "--output", out}, 2, "unknown unit"},
      {{"--to", "one", "--output", tmp / "out/missing/disk.raw"}, 1, "does not exist"},
      {{"--to", "one", "--output", tmp / "out"}, 1, "is a directory"},
      {{"--output", out}, 2, "--to"},
      {{"--to", "one"}, 2, "--output"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"restore", h.dir};
    args.insert(args.end(), c.args.begin(), c.args.end());
    ProcResult r = Rewind(args);
    INFO(r.Describe());
    CHECK(r.status.code == c.code);
    CHECK(r.out.empty());
    CheckOneLineError(r, "restore");
    CHECK(r.err.find(c.says) != std::string::npos);
    CHECK(DirListing(tmp / "out").empty());
  }
  CHECK(TempFilesIn(tmp.path()).empty());

  ProcResult r = Rewind({"restore", tmp / "nowhere", "--to", "one", "--output", out});
  CHECK(r.status.code == 1);
  CheckOneLineError(r, "restore");
  CHECK(r.err.find("does not exist") != std::string::npos);
}

// Regression: --force over the live image (or any file of the store) would
// replace it behind the journal's back.
TEST_CASE("restore refuses to write over the store's own files", "[cli][restore]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  const std::string image_before = ReadFile(h.dir + "/image.raw");
  for (const std::string& out :
       {h.dir + "/image.raw", h.dir + "/rewind.meta", h.dir + "/journal/x.raw", h.dir + "/x.raw"}) {
    ProcResult r = Rewind({"restore", h.dir, "--to", "lsn:0", "--output", out, "--force"});
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CheckOneLineError(r, "restore");
    CHECK(r.err.find("inside the store directory") != std::string::npos);
  }
  CHECK(ReadFile(h.dir + "/image.raw") == image_before);
  CHECK(TempFilesIn(h.dir).empty());
  CHECK(!fs::exists(h.dir + "/x.raw"));

  // An adopted image lives outside the store directory.
  const std::string image = tmp / "adopted.raw";
  WriteFile(image, std::string(1 << 20, 'x'));
  const std::string dir2 = tmp / "store2";
  REQUIRE(Rewind({"create", dir2, "--size", "1M", "--image", image}).ok());
  fs::create_directory(tmp / "via");
  fs::create_symlink(tmp.path(), tmp / "via/up");
  for (const std::string& out : {image, tmp / "via/up/adopted.raw"}) {
    ProcResult r = Rewind({"restore", dir2, "--to", "lsn:0", "--output", out, "--force"});
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CheckOneLineError(r, "restore");
    CHECK(r.err.find("is the live image of the store") != std::string::npos);
  }
  CHECK(ReadFile(image) == std::string(1 << 20, 'x'));
}

TEST_CASE("restore --help teaches POINT, sparse output and examples", "[cli][restore]") {
  ProcResult r = Rewind({"restore", "--help"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  for (const char* text : {"--to POINT", "--output FILE", "--force", "--json", "lsn:N",
                           "time:2026-11-23T10:15:00Z", "-10m", "sparse", "keeps serving",
                           "Examples:", "rewind restore /var/lib/rewind/vm1 --to before-upgrade"}) {
    INFO(text);
    CHECK(r.out.find(text) != std::string::npos);
  }
  CHECK(Rewind({"--help"}).out.find("restore") != std::string::npos);
}

TEST_CASE("restore writes a relative --output in the working directory", "[cli][restore]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  fs::create_directory(tmp / "work");
  ProcResult r =
      RewindIn(tmp / "work", {"restore", h.dir, "--to", "one", "--output", "rel.raw", "--json"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(nlohmann::json::parse(r.out)["output"] == tmp / "work/rel.raw");
  CHECK(CompareFile(tmp / "work/rel.raw", h.at[2]) == "");
}

TEST_CASE("restore shows a progress bar on a terminal only", "[cli][restore]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  ProcResult r = RewindOnTerminal({"restore", h.dir, "--to", "one", "--output", tmp / "t.raw"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  // The last update is drawn: 100%, a full bar, done == total.
  CHECK(std::regex_search(r.out, std::regex(R"(100% \[#{30}\] ([0-9.]+ [KM]iB) / \1)")));
  CHECK(r.out.find('\r') != std::string::npos);
  CHECK(r.out.find("restored lsn 2 (checkpoint one, ") != std::string::npos);
  // Not a terminal: nothing on stderr (checked in the tests above) and the
  // summary alone on stdout.
  r = Rewind({"restore", h.dir, "--to", "one", "--output", tmp / "p.raw"});
  CHECK(r.err.empty());
  CHECK(r.out.find('\r') == std::string::npos);
}

// A disk large enough that its restore runs for a while (it is sparse: the
// store and the image take no space).
TEST_CASE("SIGINT cancels a local restore and leaves no file", "[cli][restore]") {
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "64G"}).ok());
  REQUIRE(Rewind({"checkpoint", dir, "--name", "c"}).ok());
  fs::create_directory(tmp / "out");
  const std::string err_file = tmp / "err.txt";
  pid_t pid =
      SpawnProcess({REWIND_CLI_PATH, "restore", dir, "--to", "c", "--output", tmp / "out/big.raw"},
                   "", err_file);
  bool started = WaitForTempFile(tmp / "out", std::chrono::seconds(20));
  ::kill(pid, SIGINT);
  ExitStatus status;
  REQUIRE(WaitForExit(pid, std::chrono::seconds(20), &status));
  INFO("stderr: " << ReadFile(err_file));
  REQUIRE(started);
  CHECK(status.exited);
  CHECK(status.code == 1);
  CHECK(ReadFile(err_file) == "rewind: restore: restore interrupted\n");
  CHECK(DirListing(tmp / "out").empty());
  // The store is fine afterwards.
  CHECK(Rewind({"info", dir}).ok());
}

}  // namespace
}  // namespace rwd::test
