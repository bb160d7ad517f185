// Tests of the rewind CLI without a running plugin: the built binary is run
// as a user would run it, and its stdout, stderr and exit status checked.
// Online use (through the plugin's control socket) is in cli_restore_online_test.cc
// and in tests/e2e.
#include <rewind/journal/store.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli_util.h"

namespace rwd::test {
namespace {

namespace fs = std::filesystem;

TEST_CASE("create then info describes the new store", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  ProcResult created = Rewind({"create", dir, "--size", "64M"});
  REQUIRE(created.ok());
  CHECK(created.err.empty());
  CHECK(created.out.find("created store " + dir) != std::string::npos);

  ProcResult info = Rewind({"info", dir});
  INFO(info.Describe());
  REQUIRE(info.ok());
  CHECK(info.err.empty());
  CHECK(ValueOf(info.out, "store") == dir);
  CHECK(ValueOf(info.out, "size") == "64 MiB (67108864 bytes)");
  CHECK(ValueOf(info.out, "block size") == "4096 bytes");
  CHECK(ValueOf(info.out, "format version") == "2");
  CHECK(ValueOf(info.out, "image") == dir + "/image.raw");
  CHECK(ValueOf(info.out, "history") == "empty (no writes yet)");
  CHECK(ValueOf(info.out, "checkpoints") == "0");
  CHECK(ValueOf(info.out, "plugin") == "not running (store opened directly)");
  CHECK(std::regex_search(ValueOf(info.out, "created"),
                          std::regex(R"(^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC$)")));
  CHECK(info.out.find("WARNING") == std::string::npos);
}

// Writes through the library in this process (the plugin's path to the
// store), then reads the history back with the CLI.
TEST_CASE("info and list show the history span after writes", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "1M"}).ok());
  {
    StoreOptions options;
    options.dir = dir;
    options.create_if_missing = false;
    std::unique_ptr<Store> store;
    REQUIRE(Store::Open(options, &store).ok());
    std::string block(4096, 'a');
    REQUIRE(store->Write(0, 4096, block.data(), false).ok());
    CheckpointInfo cp;
    REQUIRE(store->Checkpoint("after-one", &cp).ok());
    REQUIRE(store->Write(0, 4096, block.data(), false).ok());
    REQUIRE(store->Write(8192, 4096, block.data(), true).ok());
    REQUIRE(store->Close().ok());
  }
  const std::string at_time = R"( at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC)";

  ProcResult info = Rewind({"info", dir});
  INFO(info.Describe());
  REQUIRE(info.ok());
  CHECK(std::regex_match(ValueOf(info.out, "oldest write"), std::regex("lsn 1" + at_time)));
  CHECK(std::regex_match(ValueOf(info.out, "newest write"), std::regex("lsn 3" + at_time)));
  CHECK(ValueOf(info.out, "durable up to") == "lsn 3");
  CHECK(std::regex_match(ValueOf(info.out, "redo"), std::regex(R"(.* in 3 records)")));
  CHECK(ValueOf(info.out, "history") == "<absent>");
  CHECK(ValueOf(info.out, "checkpoints") == "1");

  nlohmann::json j = nlohmann::json::parse(Rewind({"info", dir, "--json"}).out);
  CHECK(j.at("oldest_lsn") == 1);
  CHECK(j.at("newest_lsn") == 3);
  CHECK(j.at("redo_records") == 3);
  CHECK(j.at("oldest_time_ns") <= j.at("newest_time_ns"));

  ProcResult list = Rewind({"list", dir});
  INFO(list.Describe());
  REQUIRE(list.ok());
  std::vector<std::string> lines = NonEmptyLines(list.out);
  REQUIRE(lines.size() == 2);
  CHECK(std::regex_match(lines[1], std::regex(R"(\s*1  after-one  disk  \s*1  .*  no)")));
}

TEST_CASE("info --json gives the protocol's StoreInfo with online", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "1G", "--block-size", "64K"}).ok());

  ProcResult info = Rewind({"info", dir, "--json"});
  INFO(info.Describe());
  REQUIRE(info.ok());
  nlohmann::json j = nlohmann::json::parse(info.out);
  CHECK(j.at("dir") == dir);
  CHECK(j.at("size") == 1ull << 30);
  CHECK(j.at("block_size") == 65536);
  CHECK(j.at("format_version") == 2);
  CHECK(j.at("checkpoints") == 0);
  CHECK(j.at("online") == false);
  CHECK(j.at("writes_refused") == false);
  CHECK(j.at("newest_lsn") == 0);
  CHECK(j.contains("created_ns"));
}

TEST_CASE("create --json prints the new store's StoreInfo", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  ProcResult created = Rewind({"create", dir, "--size", "2M", "--json"});
  INFO(created.Describe());
  REQUIRE(created.ok());
  nlohmann::json j = nlohmann::json::parse(created.out);
  CHECK(j.at("size") == 2u << 20);
  CHECK(j.at("block_size") == 4096);
}

TEST_CASE("the store records its directory absolute and normalised", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir + "/./", "--size", "1M"}).ok());
  nlohmann::json j = nlohmann::json::parse(Rewind({"info", dir + "//", "--json"}).out);
  CHECK(j.at("dir") == dir);
  CHECK(j.at("image") == dir + "/image.raw");
}

TEST_CASE("create --image adopts an existing raw image", "[cli]") {
  TempDir tmp("rwcli");
  std::string image = tmp / "disk.raw";
  WriteFile(image, std::string(1 << 20, 'x'));
  std::string dir = tmp / "store";
  ProcResult created = Rewind({"create", dir, "--size", "1M", "--image", image});
  INFO(created.Describe());
  REQUIRE(created.ok());
  nlohmann::json j = nlohmann::json::parse(Rewind({"info", dir, "--json"}).out);
  CHECK(j.at("image") == image);
  CHECK(ReadFile(image) == std::string(1 << 20, 'x'));
}

TEST_CASE("checkpoint with and without --name", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());
  const std::regex time_re(R"(\(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC\))");

  ProcResult named = Rewind({"checkpoint", dir, "--name", "before-upgrade"});
  INFO(named.Describe());
  REQUIRE(named.ok());
  CHECK(named.err.empty());
  CHECK(std::regex_match(named.out, std::regex(R"(checkpoint before-upgrade at lsn \d+ )" +
                                               std::string(R"(\(.*\)\n)"))));
  CHECK(std::regex_search(named.out, time_re));

  ProcResult unnamed = Rewind({"checkpoint", dir});
  INFO(unnamed.Describe());
  REQUIRE(unnamed.ok());
  CHECK(std::regex_match(unnamed.out, std::regex(R"(checkpoint cp-2 at lsn \d+ \(.*\)\n)")));

  ProcResult json = Rewind({"checkpoint", dir, "--name", "third", "--json"});
  INFO(json.Describe());
  REQUIRE(json.ok());
  nlohmann::json j = nlohmann::json::parse(json.out);
  CHECK(j.at("id") == 3);
  CHECK(j.at("name") == "third");
  CHECK(j.at("kind") == "disk");
  CHECK(j.at("pinned") == false);
  CHECK(j.contains("time_ns"));

  nlohmann::json info = nlohmann::json::parse(Rewind({"info", dir, "--json"}).out);
  CHECK(info.at("checkpoints") == 3);
}

TEST_CASE("list shows the timeline oldest first", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());

  ProcResult empty = Rewind({"list", dir});
  REQUIRE(empty.ok());
  CHECK(empty.out == "no checkpoints\n");
  CHECK(nlohmann::json::parse(Rewind({"list", dir, "--json"}).out) ==
        nlohmann::json{{"checkpoints", nlohmann::json::array()}});

  for (const char* name : {"zeta", "alpha", "mid"}) {
    REQUIRE(Rewind({"checkpoint", dir, "--name", name}).ok());
  }
  REQUIRE(Rewind({"checkpoint", dir}).ok());

  ProcResult json = Rewind({"list", dir, "--json"});
  INFO(json.Describe());
  REQUIRE(json.ok());
  CHECK(NamesOf(json.out) == std::vector<std::string>{"zeta", "alpha", "mid", "cp-4"});
  nlohmann::json cps = nlohmann::json::parse(json.out).at("checkpoints");
  for (size_t i = 0; i < cps.size(); ++i) CHECK(cps[i].at("id") == i + 1);

  ProcResult text = Rewind({"list", dir});
  INFO(text.Describe());
  REQUIRE(text.ok());
  std::vector<std::string> lines = NonEmptyLines(text.out);
  REQUIRE(lines.size() == 5);
  CHECK(std::regex_match(lines[0],
                         std::regex(R"(\s*ID  NAME\s+KIND  \s*LSN  TIME UTC\s+\s*UNDO  \s*VM STATE \(\+NEW\)  PINNED  BY)")));
  // A disk checkpoint has no saved VM state: "-".
  CHECK(std::regex_match(lines[1], std::regex(R"(\s*1  zeta\s+disk  \s*\d+  \d{4}-.*  .*  \s*-  no)")));
  CHECK(lines[2].find("alpha") != std::string::npos);
  CHECK(lines[3].find("mid") != std::string::npos);
  CHECK(lines[4].find("cp-4") != std::string::npos);
}

TEST_CASE("a duplicate checkpoint name is refused", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());
  REQUIRE(Rewind({"checkpoint", dir, "--name", "same"}).ok());
  std::string before = Rewind({"list", dir, "--json"}).out;

  ProcResult dup = Rewind({"checkpoint", dir, "--name", "same"});
  INFO(dup.Describe());
  CHECK(dup.status.exited);
  CHECK(dup.status.code == 1);
  CHECK(dup.out.empty());
  CheckOneLineError(dup, "checkpoint");
  CHECK(dup.err.find("same") != std::string::npos);
  CHECK(Rewind({"list", dir, "--json"}).out == before);
}

TEST_CASE("a checkpoint name with '/' is refused and the store is unchanged", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());
  REQUIRE(Rewind({"checkpoint", dir, "--name", "first"}).ok());
  std::string list_before = Rewind({"list", dir, "--json"}).out;
  std::string files_before = DirListing(dir);

  ProcResult bad = Rewind({"checkpoint", dir, "--name", "a/b"});
  INFO(bad.Describe());
  CHECK(bad.status.exited);
  CHECK(bad.status.code == 2);
  CHECK(bad.out.empty());
  CheckOneLineError(bad, "checkpoint");
  CHECK(bad.err.find("'a/b'") != std::string::npos);
  CHECK(bad.err.find("path separator") != std::string::npos);

  CHECK(DirListing(dir) == files_before);  // the store was not even opened
  CHECK(Rewind({"list", dir, "--json"}).out == list_before);
}

TEST_CASE("checkpoint names the store reserves are refused", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());
  for (const char* name : {"", "-x", ".hidden", "has space", "lsn:5"}) {
    ProcResult bad = Rewind({"checkpoint", dir, "--name", name});
    INFO(bad.Describe());
    CHECK(bad.status.code == 2);
    CheckOneLineError(bad, "checkpoint");
  }
  CHECK(Rewind({"list", dir}).out == "no checkpoints\n");
}

TEST_CASE("create refuses a directory that already holds a store", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());
  REQUIRE(Rewind({"checkpoint", dir, "--name", "keep"}).ok());
  std::string files_before = DirListing(dir);

  ProcResult again = Rewind({"create", dir, "--size", "32M"});
  INFO(again.Describe());
  CHECK(again.status.code == 1);
  CheckOneLineError(again, "create");
  CHECK(again.err.find("already holds a rewind store") != std::string::npos);
  CHECK(DirListing(dir) == files_before);
  nlohmann::json j = nlohmann::json::parse(Rewind({"info", dir, "--json"}).out);
  CHECK(j.at("size") == 16u << 20);
  CHECK(j.at("checkpoints") == 1);
}

TEST_CASE("info, checkpoint and list refuse a directory without a store", "[cli]") {
  TempDir tmp("rwcli");
  std::string empty = tmp / "empty";
  fs::create_directory(empty);
  for (const char* sub : {"info", "checkpoint", "list"}) {
    ProcResult r = Rewind({sub, empty});
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CheckOneLineError(r, sub);
    CHECK(r.err.find("is not a rewind store") != std::string::npos);
  }
  CHECK(DirListing(empty).empty());  // nothing was created there

  ProcResult missing = Rewind({"info", tmp / "nowhere"});
  INFO(missing.Describe());
  CHECK(missing.status.code == 1);
  CheckOneLineError(missing, "info");
  CHECK(missing.err.find("does not exist") != std::string::npos);
  CHECK(!fs::exists(tmp / "nowhere"));

  WriteFile(tmp / "file", "not a store");
  ProcResult file = Rewind({"list", tmp / "file"});
  INFO(file.Describe());
  CHECK(file.status.code == 1);
  CheckOneLineError(file, "list");
  CHECK(file.err.find("is not a directory") != std::string::npos);
}

TEST_CASE("create refuses a bad --size or --block-size before touching anything", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  struct Case {
    std::vector<std::string> args;
    const char* option;
  };
  std::vector<Case> cases = {
      {{"--size", "abc"}, "--size"},
      {{"--size", "12Q"}, "--size"},
      {{"--size", "0"}, "--size"},
      {{"--size", "-5G"}, "--size"},
      {{"--size", "16M", "--block-size", "3000"}, "--block-size"},
      {{"--size", "16M", "--block-size", "256"}, "--block-size"},
      {{"--size", "16M", "--block-size", "2M"}, "--block-size"},
      {{}, "--size"},  // required
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"create", dir};
    args.insert(args.end(), c.args.begin(), c.args.end());
    ProcResult r = Rewind(args);
    INFO(r.Describe());
    CHECK(r.status.code == 2);
    CheckOneLineError(r, "create");
    CHECK(r.err.find(c.option) != std::string::npos);
    CHECK(!fs::exists(dir));
  }
}

TEST_CASE("create --image refuses a missing image", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  ProcResult r = Rewind({"create", dir, "--size", "1M", "--image", tmp / "missing.raw"});
  INFO(r.Describe());
  CHECK(r.status.code == 2);
  CheckOneLineError(r, "create");
  CHECK(!Store::Exists(dir));
}

TEST_CASE("usage errors exit 2 with one line", "[cli]") {
  struct Case {
    std::vector<std::string> args;
    const char* sub;  // the subcommand the error is reported for
  };
  for (const Case& c :
       {Case{{}, ""}, Case{{"frobnicate"}, ""}, Case{{"info"}, "info"},
        Case{{"list", "a", "b"}, "list"}, Case{{"checkpoint", "--bogus", "x"}, "checkpoint"}}) {
    ProcResult r = Rewind(c.args);
    INFO(r.Describe());
    CHECK(r.status.code == 2);
    CHECK(r.out.empty());
    CheckOneLineError(r, c.sub);
  }
}

TEST_CASE("--help teaches every subcommand, --version names the release", "[cli]") {
  struct Case {
    const char* sub;
    const char* example;
  };
  for (Case c : {Case{"", "rewind create /var/lib/rewind/vm1 --size 20G"},
                 Case{"create", "rewind create /var/lib/rewind/vm1 --size 20G"},
                 Case{"info", "rewind info /var/lib/rewind/vm1"},
                 Case{"checkpoint", "rewind checkpoint /var/lib/rewind/vm1 --name before-upgrade"},
                 Case{"list", "rewind list /var/lib/rewind/vm1"},
                 Case{"pin", "rewind pin /var/lib/rewind/vm1 before-upgrade"},
                 Case{"unpin", "rewind unpin /var/lib/rewind/vm1 before-upgrade"}}) {
    std::vector<std::string> args;
    if (c.sub[0] != '\0') args.push_back(c.sub);
    args.push_back("--help");
    ProcResult r = Rewind(args);
    INFO(r.Describe());
    CHECK(r.ok());
    CHECK(r.err.empty());
    CHECK(r.out.find("Examples:") != std::string::npos);
    CHECK(r.out.find(c.example) != std::string::npos);
    if (c.sub[0] != '\0') CHECK(r.out.find("--json") != std::string::npos);
  }
  ProcResult v = Rewind({"--version"});
  CHECK(v.ok());
  CHECK(std::regex_match(v.out, std::regex(R"(rewind \d+\.\d+\.\d+\n)")));
}

// A socket file left behind by a plugin that died: connecting is refused,
// and the CLI must open the store itself.
TEST_CASE("a stale control socket falls back to opening the store", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());
  MakeStaleSocket(dir + "/control.sock");

  ProcResult cp = Rewind({"checkpoint", dir, "--name", "after-crash"});
  INFO(cp.Describe());
  REQUIRE(cp.ok());
  nlohmann::json j = nlohmann::json::parse(Rewind({"info", dir, "--json"}).out);
  CHECK(j.at("online") == false);
  CHECK(j.at("checkpoints") == 1);
}

TEST_CASE("a store held open by another process without a plugin is busy", "[cli]") {
  TempDir tmp("rwcli");
  std::string dir = tmp / "store";
  REQUIRE(Rewind({"create", dir, "--size", "16M"}).ok());
  StoreOptions options;
  options.dir = dir;
  options.create_if_missing = false;
  std::unique_ptr<Store> held;
  REQUIRE(Store::Open(options, &held).ok());

  for (const char* sub : {"info", "checkpoint", "list"}) {
    ProcResult r = Rewind({sub, dir});
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CheckOneLineError(r, sub);
    CHECK(r.err.find("in use by another process") != std::string::npos);
  }
  std::vector<CheckpointInfo> cps;
  REQUIRE(held->ListCheckpoints(&cps).ok());
  CHECK(cps.empty());
  REQUIRE(held->Close().ok());
}

}  // namespace
}  // namespace rwd::test
