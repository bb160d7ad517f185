// `rewind create` and `rewind info`: making a store and describing one.
#include <fmt/format.h>
#include <rewind/control/protocol.h>
#include <rewind/journal/store.h>

#include <iostream>
#include <memory>

#include "backend.h"
#include "command.h"
#include "human.h"

namespace rwd::cli {
namespace {

// ---- create ----------------------------------------------------------------

struct CreateOptions {
  std::string dir;
  uint64_t size = 0;
  std::string image;
  uint32_t block_size = kDefaultBlockSize;
  bool json = false;
};

void PrintCreated(const StoreInfo& info) {
  std::cout << fmt::format("created store {}\n", info.dir);
  KeyValueBlock block;
  block.Add("size", HumanBytesExact(info.size));
  block.Add("block size", fmt::format("{} bytes", info.block_size));
  block.Add("image", info.image_path);
  block.Print(std::cout);
}

// The store is created by Store::Open, which never overwrites one; the
// check here only gives the clearer message, and covers a running plugin.
Status RunCreate(const CreateOptions& o) {
  if (Store::Exists(o.dir)) {
    return Status::AlreadyExists(fmt::format("'{}' already holds a rewind store", o.dir));
  }
  StoreOptions options;
  options.dir = AbsoluteDir(o.dir);
  options.size = o.size;
  options.image = o.image;
  options.block_size = o.block_size;
  options.create_if_missing = true;
  std::unique_ptr<Store> store;
  if (Status s = Store::Open(options, &store); !s.ok()) return s;
  StoreInfo info;
  Status s = store->GetInfo(&info);
  Status closed = store->Close();
  if (!s.ok()) return s;
  if (!closed.ok()) return closed;
  if (o.json) {
    PrintJson(control::ToJson(info, /*online=*/false));
  } else {
    PrintCreated(info);
  }
  return Status::Ok();
}

constexpr const char* kCreateFooter = R"(
A store holds the live raw image (DIR/image.raw unless --image is given), the
redo and undo journals and the checkpoints.  Serve it with
'nbdkit rewind dir=DIR'.  create refuses a directory that already holds a store.

Examples:
  rewind create /var/lib/rewind/vm1 --size 20G
  rewind create /var/lib/rewind/vm2 --size 10G --image /srv/vm2.raw --block-size 64K)";

// ---- info ------------------------------------------------------------------

struct InfoOptions {
  std::string dir;
  bool json = false;
};

std::string LsnAt(uint64_t lsn, int64_t time_ns) {
  return fmt::format("lsn {} at {}", lsn, HumanTime(time_ns));
}

void AddHistory(const StoreInfo& info, KeyValueBlock* block) {
  if (info.newest_lsn == 0) {
    block->Add("history", "empty (no writes yet)");
    return;
  }
  block->Add("oldest write", LsnAt(info.oldest_lsn, info.oldest_time_ns));
  block->Add("newest write", LsnAt(info.newest_lsn, info.newest_time_ns));
  block->Add("durable up to", fmt::format("lsn {}", info.durable_lsn));
}

void PrintInfo(const StoreInfo& info, bool online, const std::string& dir) {
  KeyValueBlock block;
  block.Add("store", info.dir);
  if (info.disks.empty() || info.disks.front().name.empty()) {
    block.Add("image", info.image_path);
    block.Add("size", HumanBytesExact(info.size));
  } else {  // named disks (disk=NAME): one line each, one timeline
    for (const DiskInfo& d : info.disks) {
      block.Add("disk " + d.name, fmt::format("{}, {}", HumanBytesExact(d.size), d.image_path));
    }
  }
  block.Add("block size", fmt::format("{} bytes", info.block_size));
  block.Add("format version", std::to_string(info.format_version));
  block.Add("created", HumanTime(info.created_ns));
  AddHistory(info, &block);
  block.Add("redo",
            fmt::format("{} in {} records", HumanBytes(info.redo_bytes), info.redo_records));
  block.Add("undo",
            fmt::format("{} in {} records", HumanBytes(info.undo_bytes), info.undo_records));
  block.Add("vmstate", HumanBytes(info.vmstate_bytes));
  block.Add("checkpoints", std::to_string(info.checkpoints));
  block.Add("plugin", online ? fmt::format("running (answers on {})", ControlSocketPath(dir))
                             : "not running (store opened directly)");
  if (info.writes_refused) {
    block.Add("WARNING", fmt::format("the store refuses writes: {}", info.refused_reason));
  }
  block.Print(std::cout);
}

Status RunInfo(const InfoOptions& o) {
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(o.dir, &backend); !s.ok()) return s;
  StoreInfo info;
  Status s = backend->GetInfo(&info);
  Status closed = backend->Close();
  if (!s.ok()) return s;
  if (!closed.ok()) return closed;
  if (o.json) {
    PrintJson(control::ToJson(info, backend->online()));
  } else {
    PrintInfo(info, backend->online(), o.dir);
  }
  return Status::Ok();
}

constexpr const char* kInfoFooter = R"(
Shows the disk's size and block size (for a store of several disks, each
disk's name, size and image), the span of its history (oldest and
newest write), the space held by redo, undo and vmstate records, the number
of checkpoints and whether the plugin is serving the store.  Works whether
or not the plugin runs.

Examples:
  rewind info /var/lib/rewind/vm1
  rewind info /var/lib/rewind/vm1 --json | jq .newest_lsn)";

}  // namespace

Command AddCreateCommand(CLI::App* parent) {
  auto o = std::make_shared<CreateOptions>();
  CLI::App* app = parent->add_subcommand("create", "make a new store without starting nbdkit");
  AddDirArgument(app, &o->dir);
  app->add_option("--size", o->size, "size of the disk: 20G, 512M, 1.5T or bytes")
      ->required()
      ->type_name("SIZE")
      ->transform(SizeValidator());
  app->add_option(
         "--image", o->image,
         "adopt this raw image as the live disk; its content is the first point of history")
      ->type_name("FILE")
      ->check(ImageValidator());
  app->add_option("--block-size", o->block_size,
                  "granularity of recovery blocks: a power of two from 512 to 1M (default 4096)")
      ->type_name("N")
      ->transform(BlockSizeValidator());
  AddJsonFlag(app, &o->json);
  app->footer(kCreateFooter);
  return {app, [o] { return RunCreate(*o); }};
}

Command AddInfoCommand(CLI::App* parent) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* app =
      parent->add_subcommand("info", "describe a store: size, history span, space used");
  AddDirArgument(app, &o->dir);
  AddJsonFlag(app, &o->json);
  app->footer(kInfoFooter);
  return {app, [o] { return RunInfo(*o); }};
}

}  // namespace rwd::cli
