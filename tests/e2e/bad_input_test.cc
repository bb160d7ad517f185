// Bad input: each case gets a clear one-line error, a non-zero exit, and
// leaves the store exactly as it was (same files, sizes and mtimes; same
// checkpoints).
#include <xxhash.h>

#include <filesystem>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

// The CLI with args must fail with one line on stderr holding every phrase,
// and print nothing on stdout.
void ExpectCliRefuses(const std::vector<std::string>& args, const std::vector<std::string>& phrases) {
  ProcResult r = RunCli(args);
  INFO(r.Describe());
  CHECK(r.status.exited);
  CHECK(r.status.code != 0);
  CHECK(NonEmptyLines(r.err).size() == 1);
  CHECK(r.out == "");
  for (const auto& p : phrases) {
    INFO("expected phrase: " << p);
    CHECK(r.err.find(p) != std::string::npos);
  }
}

// `rewind create DIR --size BYTES`.  (Sizes with suffixes through the CLI
// are covered by cli_store_test.cc; these tests are about refusals.)
void CreateStore(const std::string& dir, uint64_t size, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {"create", dir, "--size", std::to_string(size), "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  nlohmann::json j = RunCliJson(args);
  INFO(j.dump());
  REQUIRE(j.is_object());
}

// `rewind list --json` and `rewind info --json` minus what may differ
// between two reads of an unchanged store.
std::string StoreSummary(const std::string& dir) {
  nlohmann::json list = RunCliJson({"list", dir, "--json"});
  nlohmann::json info = RunCliJson({"info", dir, "--json"});
  info.erase("online");
  return list.dump() + "\n" + info.dump();
}

// rewind.meta with format_version replaced and a valid checksum (the store's
// own format: key=value lines, then "checksum=" + 16 hex digits of XXH3-64
// over every byte before that line; see journal/meta_file.cc).
std::string MetaWithVersion(const std::string& meta, const std::string& version) {
  size_t cs = meta.rfind("checksum=");
  REQUIRE(cs != std::string::npos);
  std::string body = meta.substr(0, cs);
  size_t at = body.find("\nformat_version=");
  REQUIRE(at != std::string::npos);
  size_t eol = body.find('\n', at + 1);
  REQUIRE(eol != std::string::npos);
  body.replace(at + 1, eol - at - 1, "format_version=" + version);
  return body + fmt::format("checksum={:016x}\n", XXH3_64bits(body.data(), body.size()));
}

TEST_CASE("bad input: nbdkit without dir= refuses to start", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  std::string before = DirListing(tmp.path());
  ExpectNbdkitRefuses(tmp, {}, {"dir=", "required"});
  ExpectNbdkitRefuses(tmp, {"size=64M"}, {"dir=", "required"});
  // Nothing but nbdkit's own log appeared.
  std::error_code ec;
  std::filesystem::remove(tmp / "nbdkit.log", ec);
  CHECK(DirListing(tmp.path()) == before);
}

TEST_CASE("bad input: a new store without size= is refused and not created", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string empty_dir = tmp / "empty";
  std::filesystem::create_directory(empty_dir);
  const std::string missing_dir = tmp / "missing";
  std::string before = DirListing(empty_dir);
  ExpectNbdkitRefuses(tmp, {"dir=" + empty_dir}, {"size=", empty_dir});
  CHECK(DirListing(empty_dir) == before);
  ExpectNbdkitRefuses(tmp, {"dir=" + missing_dir}, {"size="});
  CHECK(DirListing(missing_dir) == "<missing>");
}

TEST_CASE("bad input: size= that does not match the existing store", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  CreateStore(dir, 64 << 20);
  std::string before = DirListing(dir);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "size=32M"}, {"does not match", "33554432", "67108864"});
  CHECK(DirListing(dir) == before);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "size=64G"}, {"does not match", "67108864"});
  CHECK(DirListing(dir) == before);
  // The store still works with the right size.
  auto server = StartRewind(tmp, {"dir=" + dir, "size=64M"});
  CHECK(NbdClient::Connect(server->socket())->Size() == 64 << 20);
}

TEST_CASE("bad input: block-size that is not a power of two from 512 to 1 MiB", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "new";
  std::filesystem::create_directory(dir);
  const std::string before_new = DirListing(dir);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "size=64M", "block-size=3000"},
                      {"block-size", "3000", "power of two"});
  CHECK(DirListing(dir) == before_new);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "size=64M", "block-size=2097152"},
                      {"block-size", "2097152", "1048576"});
  CHECK(DirListing(dir) == before_new);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "size=64M", "block-size=256"}, {"block-size", "256"});
  CHECK(DirListing(dir) == before_new);

  // An existing store: a bad block size, and one that does not match.
  const std::string store = tmp / "store";
  CreateStore(store, 64 << 20, {"--block-size", "8192"});
  const std::string before = DirListing(store);
  ExpectNbdkitRefuses(tmp, {"dir=" + store, "block-size=3000"}, {"block-size", "3000"});
  CHECK(DirListing(store) == before);
  ExpectNbdkitRefuses(tmp, {"dir=" + store, "block-size=4096"},
                      {"block-size", "does not match", "8192"});
  CHECK(DirListing(store) == before);
  // And the CLI refuses them too, creating nothing.
  ExpectCliRefuses({"create", tmp / "cli-new", "--size", "67108864", "--block-size", "3000"},
                   {"3000"});
  CHECK(DirListing(tmp / "cli-new") == "<missing>");
  ExpectCliRefuses({"create", tmp / "cli-new", "--size", "67108864", "--block-size", "2097152"},
                   {"2097152"});
  CHECK(DirListing(tmp / "cli-new") == "<missing>");
}

TEST_CASE("bad input: a checkpoint name with a path separator, online and offline", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  CreateStore(dir, 64 << 20);
  RunCliJson({"checkpoint", dir, "--name", "good", "--json"});

  // Offline.
  std::string before = StoreSummary(dir);
  for (const char* name : {"a/b", "../evil", "/abs", "x\\y"}) {
    INFO("name " << name);
    ExpectCliRefuses({"checkpoint", dir, "--name", name, "--json"}, {name});
  }
  CHECK(StoreSummary(dir) == before);

  // Online: the CLI refuses, and so does the plugin when asked directly.
  auto server = StartRewind(tmp, {"dir=" + dir});
  before = StoreSummary(dir);
  for (const char* name : {"a/b", "../evil"}) {
    INFO("name " << name);
    ExpectCliRefuses({"checkpoint", dir, "--name", name}, {name});
  }
  for (const char* name : {"a/b", "..", "x\\y"}) {
    auto ctl = LineClient::Connect(dir + "/control.sock");
    nlohmann::json req = {{"v", 1}, {"id", 1}, {"op", "checkpoint"}, {"name", name}};
    nlohmann::json resp = ParseJsonLine(ctl->Request(req.dump()));
    INFO("request " << req.dump() << " -> " << resp.dump());
    CHECK(resp.value("ok", true) == false);
    REQUIRE(resp.contains("error"));
    CHECK(resp["error"].value("code", "") == "invalid-argument");
  }
  CHECK(StoreSummary(dir) == before);
  ExitStatus st = server->Stop();
  INFO(server->log());
  CHECK(st.success());
}

TEST_CASE("bad input: a store of an unknown format version is refused by nbdkit and the CLI",
          "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  CreateStore(dir, 64 << 20);
  const std::string meta_path = dir + "/rewind.meta";
  const std::string original = ReadFile(meta_path);
  REQUIRE(original.find("\nformat_version=2\n") != std::string::npos);
  // Rewriting it as version 2 with our checksum reproduces it byte for byte:
  // the edit below is exactly a change of version.
  REQUIRE(MetaWithVersion(original, "2") == original);

  WriteFile(meta_path, MetaWithVersion(original, "999"));
  const std::string before = DirListing(dir);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir}, {"format version 999"});
  CHECK(DirListing(dir) == before);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "size=64M"}, {"format version 999"});
  CHECK(DirListing(dir) == before);
  ExpectCliRefuses({"info", dir, "--json"}, {"999"});
  ExpectCliRefuses({"list", dir}, {"999"});
  ExpectCliRefuses({"checkpoint", dir, "--name", "x"}, {"999"});
  ExpectCliRefuses({"create", dir, "--size", "67108864"}, {dir});
  CHECK(DirListing(dir) == before);
  CHECK(ReadFile(meta_path) == MetaWithVersion(original, "999"));

  // A damaged meta file (checksum no longer matches) is refused as such.
  std::string damaged = original;
  damaged.replace(damaged.find("\nsize=") + 6, 1, "9");
  WriteFile(meta_path, damaged);
  const std::string before_damaged = DirListing(dir);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir}, {"checksum"});
  CHECK(DirListing(dir) == before_damaged);

  // Put back, the store serves again.
  WriteFile(meta_path, original);
  auto server = StartRewind(tmp, {"dir=" + dir});
  CHECK(NbdClient::Connect(server->socket())->Size() == 64 << 20);
}

}  // namespace
}  // namespace rwd::test

namespace rwd::test {
namespace {

TEST_CASE("bad input: image= that is not the store's image", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  CreateStore(dir, 64 << 20);
  const std::string other = tmp / "other.raw";
  REQUIRE(RunProcess({"truncate", "-s", "64M", other}).ok());
  const std::string before = DirListing(dir);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "image=" + other}, {"image=", other});
  CHECK(DirListing(dir) == before);
  ExpectNbdkitRefuses(tmp, {"dir=" + dir, "image=" + tmp / "missing.raw"}, {"missing.raw"});
  CHECK(DirListing(dir) == before);
}

TEST_CASE("bad input: a second nbdkit on a store in use is refused, the first keeps serving",
          "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  TempDir tmp2;
  const std::string dir = tmp / "store";
  auto first = StartRewind(tmp, {"dir=" + dir, "size=16M"});
  auto c = NbdClient::Connect(first->socket());
  auto data = Pattern(8192, 3);
  c->Pwrite(data, 4096);

  std::string line = ExpectNbdkitRefuses(tmp2, {"dir=" + dir}, {"in use"});
  INFO("refusal: " << line);

  // The first instance is untouched: its disk, its control socket.
  REQUIRE(first->Running());
  CHECK(c->Pread(data.size(), 4096) == data);
  nlohmann::json info = RunCliJson({"info", dir, "--json"});
  CHECK(info.value("online", false) == true);
  RunCliJson({"checkpoint", dir, "--name", "still-mine", "--json"});
  c->Flush();
  c.reset();
  ExitStatus st = first->Stop();
  INFO(first->log());
  CHECK(st.success());
}

}  // namespace
}  // namespace rwd::test
