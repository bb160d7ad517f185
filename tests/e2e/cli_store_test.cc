// `rewind create` and `rewind info` as an operator uses them, then the store
// served by nbdkit: sizes with suffixes, block sizes, an adopted image.
#include <libnbd.h>

#include <cstring>
#include <filesystem>

#include "support/nbd_rewind.h"

namespace rwd::test {
namespace {

TEST_CASE("cli: rewind create with --size 64M and --block-size 64K, then nbdkit serves it",
          "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string dir = tmp / "store";
  nlohmann::json created =
      RunCliJson({"create", dir, "--size", "64M", "--block-size", "64K", "--json"});
  INFO(created.dump());
  CHECK(created.value("size", uint64_t{0}) == 64u << 20);
  CHECK(created.value("block_size", uint64_t{0}) == 64u << 10);

  nlohmann::json info = RunCliJson({"info", dir, "--json"});
  INFO(info.dump());
  CHECK(info.value("size", uint64_t{0}) == 64u << 20);
  CHECK(info.value("block_size", uint64_t{0}) == 64u << 10);
  CHECK(info.value("format_version", uint64_t{0}) == 2);
  CHECK(info.value("checkpoints", uint64_t{1}) == 0);
  CHECK((!info.contains("online") || info["online"] == false));

  // create never overwrites a store.
  {
    ProcResult again = RunCli({"create", dir, "--size", "1G"});
    INFO(again.Describe());
    CHECK_FALSE(again.ok());
    CHECK(NonEmptyLines(again.err).size() == 1);
  }

  auto server = StartRewind(tmp, {"dir=" + dir, "size=64M", "block-size=65536"});
  auto c = NbdClient::Connect(server->socket());
  CHECK(c->Size() == 64 << 20);
  auto data = Pattern(70000, 5);
  c->Pwrite(data, 12345);
  CHECK(c->Pread(data.size(), 12345) == data);
}

TEST_CASE("cli: rewind create --image adopts a raw image without changing it", "[e2e]") {
  RequireNbdkitOrSkip();
  TempDir tmp;
  const std::string image = tmp / "disk.raw";
  auto content = Pattern(4 << 20, 77);
  WriteFile(image, std::string(content.begin(), content.end()));
  const std::string before = DirListing(image);
  const std::string dir = tmp / "store";
  nlohmann::json created = RunCliJson({"create", dir, "--size", "4M", "--image", image, "--json"});
  INFO(created.dump());
  CHECK(created.value("size", uint64_t{0}) == 4u << 20);
  CHECK(DirListing(image) == before);
  CHECK(ReadFile(image) == std::string(content.begin(), content.end()));

  auto server = StartRewind(tmp, {"dir=" + dir});
  auto c = NbdClient::Connect(server->socket());
  REQUIRE(c->Size() == 4 << 20);
  CHECK(c->Pread(content.size(), 0) == content);
  // Writes land in the adopted image (it is the live disk).
  auto data = Pattern(4096, 78);
  c->Pwrite(data, 8192, LIBNBD_CMD_FLAG_FUA);
  c->Shutdown();
  c.reset();
  REQUIRE(server->Stop().success());
  std::string now = ReadFile(image);
  REQUIRE(now.size() == content.size());
  CHECK(std::memcmp(now.data() + 8192, data.data(), data.size()) == 0);
}

}  // namespace
}  // namespace rwd::test
