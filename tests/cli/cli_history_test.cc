// `rewind rollback`, `diff`, `verify` and `prune` without a running plugin:
// the CLI opens the store.  The history is written through the store in this
// process (the plugin's path to it), and the results are compared with a
// model of the disk after every write.  Online use is in
// cli_history_online_test.cc.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli_util.h"
#include "command.h"
#include "human.h"
#include "restore_util.h"
#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kSize = 8 << 20;
constexpr uint64_t kMiB = 1 << 20;

struct History {
  std::string dir;
  std::vector<std::string> at;  // at[lsn]: the disk right after write lsn
};

// lsn 1: 64 KiB at 1 MiB; lsn 2: 4 KiB at 5 MiB; checkpoint "one" (lsn 2);
// lsn 3: 64 KiB at 1 MiB + 512; lsn 4: zero the 4 KiB at 5 MiB; lsn 5:
// 12 KiB at 7 MiB; checkpoint "two" (lsn 5).
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
  CheckpointInfo cp;
  write(1 * kMiB, Pattern(64 << 10, 1));
  write(5 * kMiB, Pattern(4096, 2));
  REQUIRE(store->Checkpoint("one", &cp).ok());
  REQUIRE(cp.lsn == 2);
  write(1 * kMiB + 512, Pattern(64 << 10, 3));
  REQUIRE(store->Zero(5 * kMiB, 4096, false, false).ok());
  model.Zero(5 * kMiB, 4096);
  h.at.push_back(model.bytes());
  write(7 * kMiB, Pattern(12 << 10, 4));
  REQUIRE(store->Checkpoint("two", &cp).ok());
  REQUIRE(cp.lsn == 5);
  REQUIRE(store->Close().ok());
  return h;
}

// The live disk, read in this process.
std::string LiveDisk(const std::string& dir) {
  std::unique_ptr<Store> store = OpenStore(dir);
  std::string bytes(store->size(), '\0');
  for (uint64_t off = 0; off < bytes.size(); off += kMiB) {
    REQUIRE(store->Read(off, static_cast<uint32_t>(kMiB), bytes.data() + off).ok());
  }
  REQUIRE(store->Close().ok());
  return bytes;
}

uint64_t NewestLsn(const std::string& dir) {
  return RunCliJson({"info", dir, "--json"})["newest_lsn"].get<uint64_t>();
}

const std::string kTime = R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC)";

TEST_CASE("rollback offline puts the live disk back and is undone by its checkpoint",
          "[cli][history]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);

  ProcResult r = Rewind({"rollback", h.dir, "--to", "one"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(r.err.empty());
  std::smatch m;
  REQUIRE(std::regex_match(
      r.out, m,
      std::regex("rolled back to lsn 2 \\(checkpoint one, " + kTime +
                 "\\); the state before is checkpoint (before-rollback-\\d{8}T\\d{6}Z(-\\d+)?): "
                 "'rewind rollback " +
                 h.dir + " --to \\1' undoes it\n" +
                 R"(examined [0-9.]+ [KM]iB of changed blocks, rewrote 84 KiB, \d+\.\d s\n)")));
  const std::string before = m[1];
  CHECK(LiveDisk(h.dir) == h.at[2]);
  // Through `rewind restore` of the newest point, too.
  const uint64_t newest = NewestLsn(h.dir);
  CHECK(newest > 5);  // the rollback's rewrites are journaled like any write
  REQUIRE(
      Rewind({"restore", h.dir, "--to", fmt::format("lsn:{}", newest), "--output", tmp / "now.raw"})
          .ok());
  CHECK(CompareFile(tmp / "now.raw", h.at[2]) == "");
  // History is kept: the before-rollback checkpoint names the newer state.
  CHECK(NamesOf(Rewind({"list", h.dir, "--json"}).out) ==
        std::vector<std::string>{"one", "two", before});

  json j = RunCliJson({"rollback", h.dir, "--to", before, "--json"});
  CHECK(j["point"]["text"] == before);
  CHECK(j["point"]["checkpoint"] == before);
  CHECK(j["point"]["lsn"] == 5);
  CHECK(j["before"]["name"].get<std::string>().rfind("before-rollback-", 0) == 0);
  CHECK(j["before"]["name"] != before);
  CHECK(j["before"]["lsn"] == newest);
  CHECK(j["rewritten_bytes"] == 21 * 4096);  // 17 blocks at 1 MiB, 1 at 5 MiB, 3 at 7 MiB
  CHECK(j["examined_bytes"] >= j["rewritten_bytes"]);
  CHECK(j["seconds"].is_number());
  CHECK(LiveDisk(h.dir) == h.at[5]);
  CHECK(Rewind({"verify", h.dir}).ok());
}

TEST_CASE("rollback shows a progress bar on a terminal only", "[cli][history]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  ProcResult r = RewindOnTerminal({"rollback", h.dir, "--to", "lsn:0"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(std::regex_search(r.out, std::regex(R"(100% \[#{30}\] ([0-9.]+ [KM]iB) / \1)")));
  CHECK(r.out.find("rolled back to lsn 0 (") != std::string::npos);
  CHECK(LiveDisk(h.dir) == h.at[0]);
}

TEST_CASE("diff offline reports the ranges written between two points", "[cli][history]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);

  ProcResult r = Rewind({"diff", h.dir, "--from", "one", "--to", "two"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(r.err.empty());
  std::vector<std::string> lines = NonEmptyLines(r.out);
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == "1049088 65536  (64 KiB at 1.0 MiB)");
  CHECK(lines[1] == "5242880 4096  (4 KiB at 5 MiB)");
  CHECK(lines[2] == "7340032 12288  (12 KiB at 7 MiB)");
  CHECK(std::regex_match(lines[3],
                         std::regex("3 ranges, 80 KiB \\(81920 bytes\\) differ between lsn 2 "
                                    "\\(checkpoint one, " +
                                    kTime + "\\) and lsn 5 \\(checkpoint two, " + kTime +
                                    "\\); 3 records between them")));

  // Every pair of points, either way round, against the model.
  for (uint64_t a = 0; a <= 5; ++a) {
    for (uint64_t b = 0; b <= 5; ++b) {
      json j = RunCliJson({"diff", h.dir, "--from", fmt::format("lsn:{}", a), "--to",
                           fmt::format("lsn:{}", b), "--json"});
      INFO("lsn:" << a << " -> lsn:" << b << ": " << j.dump());
      json want = json::array();
      uint64_t bytes = 0;
      for (auto [off, len] : SectorDiff(h.at[a], h.at[b])) {
        want.push_back(json{{"offset", off}, {"length", len}});
        bytes += len;
      }
      CHECK(j["ranges"] == want);
      CHECK(j["bytes"] == bytes);
      CHECK(j["records"] == (a > b ? a - b : b - a));
      CHECK(j["from"]["lsn"] == a);
      CHECK(j["to"]["lsn"] == b);
      CHECK(j["from"]["text"] == fmt::format("lsn:{}", a));
      CHECK(j["to"].contains("time_ns"));
    }
  }

  r = Rewind({"diff", h.dir, "--from", "two", "--to", "lsn:5"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(std::regex_match(
      r.out, std::regex("no differences between lsn 5 \\(checkpoint two, " + kTime +
                        "\\) and lsn 5 \\(" + kTime + "\\); 0 records between them\n")));
}

// The first place in a payload log segment of DIR that holds needle.
std::pair<std::string, size_t> FindInVlog(const std::string& dir, const std::string& needle) {
  for (const auto& e : fs::directory_iterator(dir + "/vlog")) {
    if (e.path().extension() != ".vlog") continue;
    std::string data = ReadFile(e.path());
    size_t at = data.find(needle);
    if (at != std::string::npos) return {e.path().string(), at};
  }
  return {"", std::string::npos};
}

TEST_CASE("verify offline: clean, then a flipped payload byte is damage and exit 1",
          "[cli][history]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);

  ProcResult r = Rewind({"verify", h.dir});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(r.err.empty());
  CHECK(std::regex_match(
      r.out,
      std::regex(R"(checked 5 redo records, \d+ before-images? and 2 checkpoints )"
                 R"(\([0-9.]+ [KM]iB of payloads\), and \d+ pages? of the live image: clean\n)")));
  json j = RunCliJson({"verify", h.dir, "--json"});
  CHECK(j["clean"] == true);
  CHECK(j["damage"] == json::array());
  CHECK(j["redo_records"] == 5);
  CHECK(j["checkpoints"] == 2);
  CHECK(j["payload_bytes"].get<uint64_t>() >= 80 << 10);

  // Flip one byte of the payload of lsn 1, the first 64 KiB written.
  std::vector<uint8_t> p1 = Pattern(64 << 10, 1);
  auto [file, at] = FindInVlog(h.dir, std::string(p1.begin() + 100, p1.begin() + 164));
  REQUIRE(at != std::string::npos);
  std::string data = ReadFile(file);
  data[at + 10] ^= 0x40;
  WriteFile(file, data);

  r = Rewind({"verify", h.dir});
  INFO(r.Describe());
  CHECK(r.status.code == 1);
  CheckOneLineError(r, "verify");
  std::smatch m;
  REQUIRE(std::regex_match(
      r.err, m,
      std::regex("rewind: verify: store " + h.dir + R"( is damaged: (\d+) problems?\n)")));
  const int problems = std::stoi(m[1]);
  CHECK(problems >= 1);
  std::vector<std::string> lines = NonEmptyLines(r.out);
  REQUIRE(lines.size() == 1 + static_cast<size_t>(problems));
  CHECK(lines[0].find(fmt::format(": {} problem", problems)) != std::string::npos);
  CHECK(r.out.find("  redo record 1: payload fails its hash\n") != std::string::npos);

  r = Rewind({"verify", h.dir, "--json"});
  CHECK(r.status.code == 1);
  CheckOneLineError(r, "verify");
  j = json::parse(r.out);
  CHECK(j["clean"] == false);
  CHECK(j["damage"].size() == static_cast<size_t>(problems));
  CHECK(j["damage"][0] == "redo record 1: payload fails its hash");
}

TEST_CASE("verify shows a progress bar in records on a terminal", "[cli][history]") {
  TempDir tmp("rwcli");
  const std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "4M"}).ok());
  {
    std::unique_ptr<Store> store = OpenStore(dir);
    std::vector<uint8_t> sector = Pattern(512, 9);
    for (uint64_t i = 0; i < 5000; ++i) {  // progress comes every 4096 records
      REQUIRE(store->Write((i % 8192) * 512, 512, sector.data(), false).ok());
    }
    REQUIRE(store->Close().ok());
  }
  ProcResult r = RewindOnTerminal({"verify", dir});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(std::regex_search(r.out, std::regex(R"(\d+% \[[#.]{30}\] \d+ / \d+ records)")));
  CHECK(r.out.find("checked 5000 redo records") != std::string::npos);
}

TEST_CASE("prune offline: --dry-run changes nothing, --keep-last 1 drops older history",
          "[cli][history]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  const std::string list_before = Rewind({"list", h.dir, "--json"}).out;

  ProcResult r = Rewind({"prune", h.dir, "--keep-last", "1", "--dry-run"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(r.err.empty());
  std::vector<std::string> lines = NonEmptyLines(r.out);
  REQUIRE(lines.size() >= 5);
  CHECK(lines[0] == "dry run: nothing was changed");
  CHECK(std::regex_match(lines[1], std::regex(R"(ID  NAME  LSN  TIME UTC\s+PINNED  PRUNE)")));
  CHECK(std::regex_match(lines[2], std::regex(R"(\s*1  one \s+2  .*  no\s+would drop)")));
  CHECK(std::regex_match(lines[3], std::regex(R"(\s*2  two \s+5  .*  no\s+would keep)")));
  CHECK(ValueOf(r.out, "history") == "would start at lsn 5");
  json j = RunCliJson({"prune", h.dir, "--keep-last", "1", "--dry-run", "--json"});
  CHECK(j["dry_run"] == true);
  CHECK(j["kept"].size() == 1);
  CHECK(j["dropped"].size() == 1);
  CHECK(j["dropped"][0]["name"] == "one");
  CHECK(j["history_start_lsn"] == 5);
  CHECK(j["redo_records_dropped"] == 5);
  const uint64_t undo_dropped = j["undo_records_dropped"];
  CHECK(undo_dropped > 0);  // the before-images of epochs 0 and 1
  const std::string records = fmt::format("drop 5 redo records and {} before-image{}", undo_dropped,
                                          undo_dropped == 1 ? "" : "s");
  CHECK(ValueOf(r.out, "records") == "would " + records);
  CHECK(Rewind({"list", h.dir, "--json"}).out == list_before);
  REQUIRE(Rewind({"restore", h.dir, "--to", "lsn:1", "--output", tmp / "old.raw"}).ok());
  CHECK(CompareFile(tmp / "old.raw", h.at[1]) == "");

  r = Rewind({"prune", h.dir, "--keep-last", "1"});
  INFO(r.Describe());
  REQUIRE(r.ok());
  CHECK(r.out.find("dry run") == std::string::npos);
  CHECK(
      std::regex_match(NonEmptyLines(r.out)[1], std::regex(R"(\s*1  one \s+2  .*  no\s+dropped)")));
  CHECK(ValueOf(r.out, "checkpoints") == "kept 1, dropped 1");
  CHECK(ValueOf(r.out, "history") == "starts at lsn 5");
  CHECK(ValueOf(r.out, "records") == "dropped" + records.substr(4));
  CHECK(std::regex_match(ValueOf(r.out, "segments"),
                         std::regex(R"(deleted \d+ payload log segments?)")));
  CHECK(std::regex_match(ValueOf(r.out, "space"),
                         std::regex(R"([0-9.]+ [KM]?i?B -> [0-9.]+ [KM]?i?B)")));

  CHECK(NamesOf(Rewind({"list", h.dir, "--json"}).out) == std::vector<std::string>{"two"});
  for (const auto& [to, says] : std::vector<std::pair<std::string, std::string>>{
           {"lsn:1", "older than the history kept"}, {"one", "no checkpoint named 'one'"}}) {
    ProcResult refused = Rewind({"restore", h.dir, "--to", to, "--output", tmp / "x.raw"});
    INFO(refused.Describe());
    CHECK(refused.status.code == 1);
    CheckOneLineError(refused, "restore");
    CHECK(refused.err.find(says) != std::string::npos);
  }
  REQUIRE(Rewind({"restore", h.dir, "--to", "two", "--output", tmp / "two.raw"}).ok());
  CHECK(CompareFile(tmp / "two.raw", h.at[5]) == "");

  j = RunCliJson({"prune", h.dir, "--keep-within", "1h", "--json"});
  CHECK(j["dry_run"] == false);
  CHECK(j["dropped"] == json::array());
  CHECK(j["kept"][0]["name"] == "two");
  for (const char* key : {"history_start_lsn", "redo_records_dropped", "undo_records_dropped",
                          "segments_deleted", "bytes_before", "bytes_after"}) {
    CHECK(j.contains(key));
  }
}

// Regression: with every redo record pruned (history_start == the newest
// LSN), verify reported "redo records 1 to N are missing".
TEST_CASE("verify after a prune that drops every redo record reports no damage",
          "[cli][history]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);  // checkpoint "two" is at the newest write
  REQUIRE(Rewind({"prune", h.dir, "--keep-last", "1"}).ok());
  ProcResult r = Rewind({"verify", h.dir});
  INFO(r.Describe());
  CHECK(r.ok());
}

TEST_CASE("verify is clean after a prune that keeps later writes", "[cli][history]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  {
    std::unique_ptr<Store> store = OpenStore(h.dir);
    std::vector<uint8_t> data = Pattern(4096, 5);
    REQUIRE(store->Write(6 * kMiB, 4096, data.data(), false).ok());
    REQUIRE(store->Close().ok());
  }
  REQUIRE(Rewind({"prune", h.dir, "--keep-last", "1"}).ok());
  ProcResult r = Rewind({"verify", h.dir});
  INFO(r.Describe());
  CHECK(r.ok());
  CHECK(r.out.find("checked 1 redo record, ") == 0);
}

TEST_CASE("rollback, diff, verify and prune report errors in one line", "[cli][history]") {
  TempDir tmp("rwcli");
  History h = MakeHistory(tmp);
  fs::create_directory(tmp / "empty");
  struct Case {
    std::vector<std::string> args;
    int code;
    const char* says;
  };
  for (const Case& c : std::vector<Case>{
           {{"rollback", h.dir, "--to", "nope"}, 1, "no checkpoint named 'nope'"},
           {{"rollback", h.dir, "--to", "lsn:99"}, 1, "beyond the newest write"},
           {{"rollback", h.dir, "--to", "a/b"}, 2, "bad point 'a/b'"},
           {{"rollback", h.dir}, 2, "--to is required"},
           {{"rollback", tmp / "missing", "--to", "one"}, 1, "does not exist"},
           {{"rollback", tmp / "empty", "--to", "one"}, 1, "is not a rewind store"},
           {{"diff", h.dir, "--to", "one"}, 2, "--from is required"},
           {{"diff", h.dir, "--from", "one", "--to", "lsn:x"}, 2, "bad point 'lsn:x'"},
           {{"diff", h.dir, "--from", "nope", "--to", "one"}, 1, "no checkpoint named 'nope'"},
           {{"diff", h.dir, "--from", "one", "--to", "lsn:99"}, 1, "beyond the newest write"},
           {{"verify", tmp / "empty"}, 1, "is not a rewind store"},
           {{"verify", h.dir, "extra"}, 2, "extra"},
           {{"prune", h.dir}, 2, "prune needs a policy"},
           {{"prune", h.dir, "--dry-run", "--json"}, 2, "prune needs a policy"},
           {{"prune", h.dir, "--keep-last", "0"}, 2, "at least 1"},
           {{"prune", h.dir, "--keep-daily", "-1"}, 2, "--keep-daily: N must be a whole number"},
           {{"prune", h.dir, "--keep-last", "1.5"}, 2, "--keep-last: N must be a whole number"},
           {{"prune", h.dir, "--keep-within", "5x"}, 2, "bad duration '5x'"},
           {{"prune", h.dir, "--keep-within", "0h"}, 2, "bad duration '0h'"},
           {{"prune", tmp / "empty", "--keep-last", "1"}, 1, "is not a rewind store"},
       }) {
    ProcResult r = Rewind(c.args);
    INFO(r.Describe());
    CHECK(r.status.code == c.code);
    CHECK(r.out.empty());
    CheckOneLineError(r, c.args[0]);
    CHECK(r.err.find(c.says) != std::string::npos);
  }
  // Nothing was changed by any of them.
  CHECK(NamesOf(Rewind({"list", h.dir, "--json"}).out) == std::vector<std::string>{"one", "two"});
  CHECK(LiveDisk(h.dir) == h.at[5]);
}

TEST_CASE("rollback, diff, verify and prune --help teach their use", "[cli][history]") {
  struct Case {
    const char* sub;
    std::vector<const char*> texts;
  };
  for (const Case& c : std::vector<Case>{
           {"rollback",
            {"--to POINT", "--json", "before-rollback-", "lsn:N", "time:2026-11-23T10:15:00Z",
             "-10m", "undoes", "busy",
             "Examples:", "rewind rollback /var/lib/rewind/vm1 --to before-upgrade"}},
           {"diff",
            {"--from POINT", "--to POINT", "--json", "lsn:N", "-10m", "512-byte", "Examples:",
             "rewind diff /var/lib/rewind/vm1 --from before-upgrade --to after-upgrade"}},
           {"verify",
            {"--json", "checksum", "store DIR is damaged: N problems", "Exit status 0",
             "Examples:", "rewind verify /var/lib/rewind/vm1"}},
           {"prune",
            {"--keep-last N", "--keep-within DURATION", "--keep-daily N", "--dry-run", "--json",
             "24h", "7d", "pinned",
             "Examples:", "rewind prune /var/lib/rewind/vm1 --keep-last 10"}},
       }) {
    ProcResult r = Rewind({c.sub, "--help"});
    INFO(r.Describe());
    REQUIRE(r.ok());
    CHECK(r.err.empty());
    for (const char* text : c.texts) {
      INFO(text);
      CHECK(r.out.find(text) != std::string::npos);
    }
  }
  ProcResult top = Rewind({"--help"});
  for (const char* sub : {"rollback", "diff", "verify", "prune"}) {
    INFO(sub);
    CHECK(top.out.find(std::string("\n  ") + sub) != std::string::npos);
    CHECK(top.out.find(std::string("rewind ") + sub + " /var/lib/rewind/vm1") != std::string::npos);
  }
}

}  // namespace
}  // namespace rwd::test

namespace rwd::cli {
namespace {

TEST_CASE("ParseDuration takes an amount and a unit, as relative POINTs do", "[cli]") {
  constexpr int64_t kS = 1000000000;
  for (const auto& [text, ns] :
       std::vector<std::pair<std::string, int64_t>>{{"24h", 24 * 3600 * kS},
                                                    {"7d", 7 * 86400 * kS},
                                                    {"90m", 90 * 60 * kS},
                                                    {"2w", 14 * 86400 * kS},
                                                    {"1h30m", 5400 * kS},
                                                    {"45s", 45 * kS}}) {
    INFO(text);
    int64_t got = 0;
    REQUIRE(ParseDuration(text, &got).ok());
    CHECK(got == ns);
  }
  for (const char* bad : {"", "5", "h", "-1h", "+1h", "0m", "5x", "1h 30m", "200w0d99999d"}) {
    INFO(bad);
    int64_t got = 0;
    Status s = ParseDuration(bad, &got);
    CHECK(s.code() == Status::Code::kInvalidArgument);
    CHECK(s.message().find("bad duration") == 0);
  }
}

TEST_CASE("ProgressLine counts things when given a unit", "[cli]") {
  CHECK(ProgressLine(4096, 8192, -1, "records") ==
        " 50% [###############...............] 4096 / 8192 records");
  CHECK(ProgressLine(8192, 8192, 1200.7, "records") ==
        "100% [##############################] 8192 / 8192 records, 1200 records/s");
  CHECK(Plural(1, "record", "records") == "1 record");
  CHECK(Plural(0, "record", "records") == "0 records");
}

}  // namespace
}  // namespace rwd::cli
