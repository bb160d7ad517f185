// nbdkit-rewind-plugin: the nbdkit boundary of rewind.
//
// Design note.
//
// This file only translates: it parses the parameters, owns the process-wide
// Store and ControlServer, and maps each NBD request onto one Store call.
// Everything about journaling, durability and recovery lives behind
// rwd::Store (journal/), and the control protocol in rewind_control.
//
// Disks: a store holds one unnamed disk, or the named disks of one VM
// (disk=NAME, repeatable, with size=NAME:SIZE and image=NAME:FILE).  Each
// disk is an export: "DISK" the live disk, "DISK@POINT" read-only; "" and
// "@POINT" are the first disk (for a store of one unnamed disk, its only
// one).  A connection's Handle holds its disk.
//
// Lifetime:
//   config / config_complete   parse and check the parameters (Store::Check)
//                              without opening the journal, so bad input
//                              fails before nbdkit forks or daemonizes;
//   after_fork                 open the Store (RocksDB starts threads, which
//                              must not be started before nbdkit forks) and
//                              start the ControlServer on DIR/control.sock;
//   open ... close             one Handle per NBD connection;
//   cleanup                    stop the ControlServer, then close the Store
//                              (all connections have ended by then).
//
// Concurrency: NBDKIT_THREAD_MODEL_PARALLEL.  Store is thread-safe, and
// Store::Flush makes every write that completed on any connection durable,
// which is what can_multi_conn promises.
//
// Errors: every callback catches every exception; a failed Status becomes
// nbdkit_error(message) plus nbdkit_set_error(status.ToErrno()) and -1.
#include <rewind/control/protocol.h>
#include <rewind/control/server.h>
#include <rewind/journal/status.h>
#include <rewind/journal/store.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <mutex>
#include <functional>
#include <string>
#include <vector>

namespace {

using rwd::Status;
using rwd::Store;
using rwd::control::ControlServer;

// Set by config, fixed once config_complete has returned.
rwd::StoreOptions g_options;
bool g_block_size_set = false;
// size= and image= as given, read by config_complete once every disk= is
// known (they may come before it): SIZE or NAME:SIZE, FILE or NAME:FILE.
std::vector<std::string> g_sizes;
std::vector<std::string> g_images;
// Opened in after_fork, closed in cleanup.  Read-only in between.
std::unique_ptr<Store> g_store;
std::unique_ptr<ControlServer> g_control;

// Largest request a client may send (the NBD block-size maximum).
constexpr uint32_t kMaxRequest = 32u << 20;

// One NBD connection: a live disk (snap null), or a time-travel export
// ("DISK@NAME", "@lsn:N", "DISK@time:..."), a read-only view of a disk at a
// point.
struct Handle {
  rwd::Disk* disk;
  std::unique_ptr<rwd::Snapshot> snap;
  bool writer = false;  // counted in g_live_writers
};

// Live connections that may write, and whether a rollback or prune holds
// the disk (then no writer may connect).  The control server runs those
// through RunExclusive.
std::mutex g_writers_mu;
int g_live_writers = 0;     // GUARDED_BY(g_writers_mu)
bool g_exclusive = false;   // GUARDED_BY(g_writers_mu)

Status RunExclusive(const std::function<Status()>& fn, bool allow_idle_writers) {
  {
    std::lock_guard<std::mutex> l(g_writers_mu);
    if (g_exclusive) return Status::Busy("a rollback or prune is already running");
    if (g_live_writers > 0 && !allow_idle_writers) {
      return Status::Busy(std::to_string(g_live_writers) +
                          (g_live_writers == 1 ? " client has" : " clients have") +
                          (g_store && g_store->disk_count() > 1 ? " a live disk" : " the live disk") +
                          " open for writing; disconnect " +
                          (g_live_writers == 1 ? "it" : "them") + " (or stop the VM) first");
    }
    g_exclusive = true;
  }
  struct Release {
    ~Release() {
      std::lock_guard<std::mutex> l(g_writers_mu);
      g_exclusive = false;
    }
  } release;  // also when fn throws
  return fn();
}

rwd::Disk* DiskOf(void* handle) { return static_cast<Handle*>(handle)->disk; }
rwd::Snapshot* SnapOf(void* handle) { return static_cast<Handle*>(handle)->snap.get(); }

int Fail(const Status& s) {
  nbdkit_error("%s", s.message().c_str());
  nbdkit_set_error(s.ToErrno());
  return -1;
}

int FailStatus(const Status& s) { return s.ok() ? 0 : Fail(s); }

// Outside a connection nbdkit does not name the plugin in its messages, so
// errors of configuration, start and shutdown say "rewind: " themselves.
int FailSetup(const Status& s) {
  nbdkit_error("rewind: %s", s.message().c_str());
  return -1;
}

// Runs fn, turning any exception into an nbdkit error: the C boundary.
// Returns fn's result, or -1 after an exception.
template <typename Fn>
auto Guard(const char* what, Fn&& fn) noexcept -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    nbdkit_error("%s: out of memory", what);
    nbdkit_set_error(ENOMEM);
  } catch (const std::exception& e) {
    nbdkit_error("%s: %s", what, e.what());
    nbdkit_set_error(EIO);
  } catch (...) {
    nbdkit_error("%s: unexpected exception", what);
    nbdkit_set_error(EIO);
  }
  return -1;
}

// ---- Configuration ---------------------------------------------------------

int SetPath(const char* key, const char* value, std::string* out) {
  if (!out->empty()) {
    nbdkit_error("rewind: %s= given more than once", key);
    return -1;
  }
  if (*value == '\0') {
    nbdkit_error("rewind: %s= is empty", key);
    return -1;
  }
  // Absolute, because nbdkit may change directory when it daemonizes.
  char* abs = nbdkit_absolute_path(value);
  if (abs == nullptr) return -1;
  *out = abs;
  free(abs);
  return 0;
}

int SetSize(const char* key, const char* value, bool* seen, uint64_t* out) {
  if (*seen) {
    nbdkit_error("rewind: %s= given more than once", key);
    return -1;
  }
  *seen = true;
  Status s = rwd::ParseSize(value, out);
  if (!s.ok()) return FailSetup(s);
  if (*out == 0) {
    nbdkit_error("rewind: %s=%s: must be greater than zero", key, value);
    return -1;
  }
  return 0;
}

int AddDisk(const char* value) {
  Status s = rwd::ValidateDiskName(value);
  if (!s.ok()) return FailSetup(s.WithPrefix("disk=" + std::string(value)));
  g_options.disks.push_back(rwd::DiskSpec{value, 0, ""});
  return 0;
}

// ---- size= and image= against the disks ----

std::string DiskNames() {
  std::string out;
  for (const rwd::DiskSpec& d : g_options.disks) out += (out.empty() ? "" : ", ") + d.name;
  return out;
}

rwd::DiskSpec* FindSpec(const std::string& name) {
  for (rwd::DiskSpec& d : g_options.disks) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

// Which disk a size= or image= value is for, and the rest of the value.
// With no disk= it is the one unnamed disk's (null).  NAME:VALUE names a
// disk when NAME is one; a plain value goes to the only disk when there is
// one.  A NAME that looks like a disk name but is none is an error (a typo
// must not become a file name).
Status Target(const char* key, const std::string& value, rwd::DiskSpec** disk,
              std::string* rest) {
  *disk = nullptr;
  *rest = value;
  if (g_options.disks.empty()) return Status::Ok();
  const size_t colon = value.find(':');
  if (colon != std::string::npos) {
    const std::string name = value.substr(0, colon);
    if (rwd::DiskSpec* d = FindSpec(name)) {
      *disk = d;
      *rest = value.substr(colon + 1);
      return Status::Ok();
    }
    if (rwd::ValidateDiskName(name).ok()) {
      return Status::InvalidArgument(std::string(key) + "=" + value + " names disk '" + name +
                                     "', which no disk= gives (disks: " + DiskNames() + ")");
    }
  }
  if (g_options.disks.size() == 1) {
    *disk = &g_options.disks[0];
    return Status::Ok();
  }
  return Status::InvalidArgument(std::string(key) + "=" + value + ": with several disks give " +
                                 key + "=NAME:" + (std::string(key) == "size" ? "SIZE" : "FILE") +
                                 " (disks: " + DiskNames() + ")");
}

// Puts every size= and image= where it belongs; called by config_complete.
int ApplySizesAndImages() {
  std::vector<std::string> sized, imaged;  // disks given one already
  for (const std::string& v : g_sizes) {
    rwd::DiskSpec* d = nullptr;
    std::string text;
    if (Status s = Target("size", v, &d, &text); !s.ok()) return FailSetup(s);
    const std::string who = d ? d->name : "";
    if (std::find(sized.begin(), sized.end(), who) != sized.end()) {
      if (d == nullptr) return FailSetup(Status::InvalidArgument("size= given more than once"));
      return FailSetup(Status::InvalidArgument("size= of disk '" + who + "' given more than once"));
    }
    sized.push_back(who);
    uint64_t bytes = 0;
    Status s = rwd::ParseSize(text, &bytes);
    if (!s.ok()) return FailSetup(s);
    if (bytes == 0) return FailSetup(Status::InvalidArgument("size=" + v + ": must be greater than zero"));
    (d ? d->size : g_options.size) = bytes;
  }
  for (const std::string& v : g_images) {
    rwd::DiskSpec* d = nullptr;
    std::string path;
    if (Status s = Target("image", v, &d, &path); !s.ok()) return FailSetup(s);
    const std::string who = d ? d->name : "";
    if (std::find(imaged.begin(), imaged.end(), who) != imaged.end()) {
      if (d == nullptr) return FailSetup(Status::InvalidArgument("image= given more than once"));
      return FailSetup(Status::InvalidArgument("image= of disk '" + who + "' given more than once"));
    }
    imaged.push_back(who);
    if (path.empty()) return FailSetup(Status::InvalidArgument("image=" + v + " is empty"));
    // Absolute, because nbdkit may change directory when it daemonizes.
    char* abs = nbdkit_absolute_path(path.c_str());
    if (abs == nullptr) return -1;
    (d ? d->image : g_options.image) = abs;
    free(abs);
  }
  return 0;
}

int rewind_config(const char* key, const char* value) {
  return Guard("config", [&] {
    std::string k = key;
    if (k == "dir") return SetPath(key, value, &g_options.dir);
    if (k == "disk") return AddDisk(value);
    if (k == "image") {
      if (*value == '\0') {
        nbdkit_error("rewind: image= is empty");
        return -1;
      }
      g_images.push_back(value);
      return 0;
    }
    if (k == "size") {
      g_sizes.push_back(value);
      return 0;
    }
    if (k == "block-size") {
      uint64_t bs = 0;
      if (SetSize(key, value, &g_block_size_set, &bs) == -1) return -1;
      if (Status s = rwd::ValidateBlockSize(bs); !s.ok()) return FailSetup(s);
      g_options.block_size = static_cast<uint32_t>(bs);
      return 0;
    }
    nbdkit_error("rewind: unknown parameter '%s' (see: nbdkit rewind --help)", key);
    return -1;
  });
}

int rewind_config_complete() {
  return Guard("config", [] {
    if (g_options.dir.empty()) {
      nbdkit_error("rewind: dir= is required: the store directory (see: nbdkit rewind --help)");
      return -1;
    }
    if (ApplySizesAndImages() == -1) return -1;
    g_options.create_if_missing = true;
    Status s = Store::Check(g_options);
    return s.ok() ? 0 : FailSetup(s);
  });
}

constexpr const char kConfigHelp[] =
    "dir=<DIR>          (required) The store: journal, metadata and, unless\n"
    "                   image= is given, the live image.  Created on first start.\n"
    "size=<SIZE>        Size of a new disk (20G, 512M, bytes).  Required when DIR\n"
    "                   is new; for an existing store it must match.\n"
    "image=<FILE>       Adopt an existing raw image as the live disk of a new store;\n"
    "                   its content is the first point of history.\n"
    "disk=<NAME>        (repeatable) A store of several disks of one VM, on one\n"
    "                   timeline: each disk= names one, in order; then\n"
    "                   size=NAME:SIZE and image=NAME:FILE per disk.  Each disk is\n"
    "                   an export: NAME (live) and NAME@POINT (read-only).\n"
    "block-size=<N>     Granularity of recovery blocks: a power of two from 512 to\n"
    "                   1M (default 4096).  Fixed when the store is created.\n"
    "While running, the plugin answers the rewind CLI on DIR/control.sock.";

// ---- Lifetime --------------------------------------------------------------

int rewind_after_fork() {
  return Guard("open store", [] {
    Status s = Store::Open(g_options, &g_store);
    if (!s.ok()) return FailSetup(s);
    rwd::control::ControlServerOptions copts;
    copts.socket_path = rwd::control::SocketPath(g_options.dir);
    copts.log = [](const std::string& line) { nbdkit_debug("%s", line.c_str()); };
    copts.exclusive = [](const std::function<Status()>& fn) { return RunExclusive(fn, false); };
    copts.exclusive_quiesced = [](const std::function<Status()>& fn) {
      return RunExclusive(fn, true);
    };
    s = ControlServer::Start(copts, g_store.get(), &g_control);
    if (!s.ok()) {
      FailSetup(s);
      Status closed = g_store->Close();
      if (!closed.ok()) FailSetup(closed);
      g_store.reset();
      return -1;
    }
    nbdkit_debug("rewind: store %s open, control socket %s", g_options.dir.c_str(),
                 copts.socket_path.c_str());
    return 0;
  });
}

void rewind_cleanup() {
  Guard("close store", [] {
    if (g_control) {
      g_control->Stop();
      g_control.reset();
    }
    if (g_store) {
      Status s = g_store->Close();
      g_store.reset();
      if (!s.ok()) return FailSetup(s);
    }
    return 0;
  });
}

// ---- Exports and connections -----------------------------------------------

// Whether the store's disks have names (disk=): then exports are named
// after them.  A store of one unnamed disk keeps "" and "@POINT".
bool NamedDisks() { return g_store && !g_store->disk(0)->name().empty(); }

// A store of one unnamed disk: the live disk, then one read-only export per
// checkpoint, oldest first.  Named disks: per disk, its live export, then
// one per checkpoint.  (Any lsn: or time: point is served too, but they are
// too many to list.)
int rewind_list_exports(int /*readonly*/, int /*is_tls*/, nbdkit_exports* exports) {
  return Guard("list_exports", [&] {
    if (!g_store) {
      std::string description = "live disk of " + g_options.dir;
      return nbdkit_add_export(exports, "", description.c_str());
    }
    std::vector<rwd::CheckpointInfo> cps;
    if (Status s = g_store->ListCheckpoints(&cps); !s.ok()) return Fail(s);
    for (size_t i = 0; i < g_store->disk_count(); i++) {
      const std::string& disk = g_store->disk(i)->name();
      std::string description =
          disk.empty() ? "live disk of " + g_options.dir : "live disk " + disk + " of " + g_options.dir;
      if (nbdkit_add_export(exports, disk.c_str(), description.c_str()) == -1) return -1;
      for (const rwd::CheckpointInfo& cp : cps) {
        std::string name = disk + "@" + cp.name;
        std::string desc = (disk.empty() ? "" : disk + " at ") + "checkpoint " + cp.name +
                           " (lsn " + std::to_string(cp.lsn) + "), read-only";
        if (nbdkit_add_export(exports, name.c_str(), desc.c_str()) == -1) return -1;
      }
    }
    return 0;
  });
}

// "" is the first disk: for named disks, its name.
const char* rewind_default_export(int /*readonly*/, int /*is_tls*/) {
  return NamedDisks() ? g_store->disk(0)->name().c_str() : "";
}

// The disk an export name's DISK part names ("" is the first disk), or null
// after reporting the error.
rwd::Disk* ExportDisk(const std::string& export_name, const std::string& disk) {
  if (disk.empty()) return g_store->disk(0);
  if (rwd::Disk* d = g_store->FindDisk(disk)) return d;
  if (!NamedDisks()) {
    nbdkit_error("unknown export '%s': this store has one disk, exported as \"\" (live) and "
                 "\"@POINT\" (read-only, POINT a checkpoint name, lsn:N or time:...)",
                 export_name.c_str());
  } else {
    std::string names;
    for (size_t i = 0; i < g_store->disk_count(); i++) {
      names += (names.empty() ? "" : ", ") + g_store->disk(i)->name();
    }
    nbdkit_error("unknown export '%s': this store's disks are %s, exported as DISK (live) and "
                 "DISK@POINT (read-only, POINT a checkpoint name, lsn:N or time:...)",
                 export_name.c_str(), names.c_str());
  }
  nbdkit_set_error(ENOENT);
  return nullptr;
}

void* rewind_open(int readonly) {
  void* handle = nullptr;
  Guard("open", [&] {
    const char* name = nbdkit_export_name();
    if (name == nullptr) return -1;  // nbdkit has reported the error
    if (!g_store) {
      nbdkit_error("the store %s is not open", g_options.dir.c_str());
      nbdkit_set_error(EIO);
      return -1;
    }
    // "DISK", "DISK@POINT", "" or "@POINT" (the first disk).
    const std::string export_name = name;
    const size_t at = export_name.find('@');
    rwd::Disk* disk = ExportDisk(export_name, export_name.substr(0, at));
    if (disk == nullptr) return -1;
    if (at == std::string::npos) {
      auto h = std::make_unique<Handle>(Handle{disk, nullptr, false});
      if (!readonly) {
        std::lock_guard<std::mutex> l(g_writers_mu);
        if (g_exclusive) {
          nbdkit_error("the live disk is being rolled back or pruned; try again when it is done");
          nbdkit_set_error(EBUSY);
          return -1;
        }
        g_live_writers++;
        h->writer = true;
      }
      handle = h.release();
      return 0;
    }
    rwd::PointInfo point;
    Status s = g_store->ResolvePoint(export_name.substr(at + 1), &point);
    std::unique_ptr<rwd::Snapshot> snap;
    if (s.ok()) s = disk->OpenSnapshot(point, &snap);
    if (!s.ok()) {
      nbdkit_error("export '%s': %s", name, s.message().c_str());
      nbdkit_set_error(s.code() == Status::Code::kNotFound ? ENOENT : s.ToErrno());
      return -1;
    }
    nbdkit_debug("export '%s': the disk at lsn %llu, %llu bytes from the journal", name,
                 static_cast<unsigned long long>(point.lsn),
                 static_cast<unsigned long long>(snap->changed_bytes()));
    handle = new Handle{disk, std::move(snap), false};
    return 0;
  });
  return handle;
}

void rewind_close(void* handle) {
  auto* h = static_cast<Handle*>(handle);
  if (h->writer) {
    std::lock_guard<std::mutex> l(g_writers_mu);
    g_live_writers--;
  }
  delete h;
}

// ---- Properties ------------------------------------------------------------

int64_t rewind_get_size(void* handle) {
  return Guard("get_size", [&] { return static_cast<int64_t>(DiskOf(handle)->size()); });
}

int rewind_block_size(void* handle, uint32_t* minimum, uint32_t* preferred, uint32_t* maximum) {
  return Guard("block_size", [&] {
    *minimum = 1;
    (void)handle;
    *preferred = std::max<uint32_t>(4096, g_store->block_size());
    *maximum = kMaxRequest;
    return 0;
  });
}

// A time-travel export is read-only: nbdkit then refuses writes, trims and
// zeros with EPERM before they reach the plugin.
int rewind_can_write(void* handle) { return SnapOf(handle) ? 0 : 1; }
int rewind_can_flush(void*) { return 1; }
int rewind_can_fua(void*) { return NBDKIT_FUA_NATIVE; }
int rewind_can_trim(void*) { return 1; }
int rewind_can_zero(void*) { return 1; }
int rewind_can_fast_zero(void*) { return 0; }
int rewind_can_extents(void* handle) { return SnapOf(handle) ? 0 : 1; }
int rewind_can_multi_conn(void*) { return 1; }
int rewind_is_rotational(void*) { return 0; }

// ---- Data path -------------------------------------------------------------

int rewind_pread(void* handle, void* buf, uint32_t count, uint64_t offset, uint32_t /*flags*/) {
  if (count == 0) return 0;
  return Guard("pread", [&] {
    if (rwd::Snapshot* snap = SnapOf(handle)) return FailStatus(snap->Read(offset, count, buf));
    return FailStatus(DiskOf(handle)->Read(offset, count, buf));
  });
}

int rewind_pwrite(void* handle, const void* buf, uint32_t count, uint64_t offset, uint32_t flags) {
  if (count == 0) return 0;
  bool fua = (flags & NBDKIT_FLAG_FUA) != 0;
  return Guard("pwrite",
               [&] { return FailStatus(DiskOf(handle)->Write(offset, count, buf, fua)); });
}

int rewind_flush(void* handle, uint32_t /*flags*/) {
  if (SnapOf(handle)) return 0;  // a read-only view has nothing to flush
  return Guard("flush", [&] { return FailStatus(DiskOf(handle)->Flush()); });
}

int rewind_trim(void* handle, uint32_t count, uint64_t offset, uint32_t flags) {
  if (count == 0) return 0;
  bool fua = (flags & NBDKIT_FLAG_FUA) != 0;
  return Guard(
      "trim", [&] { return FailStatus(DiskOf(handle)->Zero(offset, count, fua, /*trim=*/true)); });
}

int rewind_zero(void* handle, uint32_t count, uint64_t offset, uint32_t flags) {
  if ((flags & NBDKIT_FLAG_FAST_ZERO) != 0) {
    // Zeroing is journaled, never guaranteed faster than writing zeros.
    nbdkit_set_error(ENOTSUP);
    return -1;
  }
  if (count == 0) return 0;
  bool fua = (flags & NBDKIT_FLAG_FUA) != 0;
  bool trim = (flags & NBDKIT_FLAG_MAY_TRIM) != 0;
  return Guard("zero", [&] { return FailStatus(DiskOf(handle)->Zero(offset, count, fua, trim)); });
}

int rewind_extents(void* handle, uint32_t count, uint64_t offset, uint32_t /*flags*/,
                   nbdkit_extents* extents) {
  return Guard("extents", [&] {
    bool add_failed = false;
    Status s =
        DiskOf(handle)->Extents(offset, count, [&](uint64_t off, uint64_t len, bool is_data) {
          if (add_failed) return;
          uint32_t type = is_data ? 0 : (NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO);
          if (nbdkit_add_extent(extents, off, len, type) == -1) add_failed = true;
        });
    if (add_failed) return -1;  // nbdkit_add_extent has reported the error
    return FailStatus(s);
  });
}

nbdkit_plugin MakePlugin() {
  nbdkit_plugin p = nbdkit_plugin();
  p.name = "rewind";
  p.longname = "rewind: a journaled, time-travelling live disk";
  p.version = REWIND_VERSION;
  p.description =
      "A live raw disk that journals every write (redo) and the before-image "
      "of every overwritten block (undo) in RocksDB, so the disk can be "
      "restored or rolled back to any checkpoint, write or instant.";
  p.config = rewind_config;
  p.config_complete = rewind_config_complete;
  p.config_help = kConfigHelp;
  p.magic_config_key = "dir";
  p.after_fork = rewind_after_fork;
  p.cleanup = rewind_cleanup;
  p.list_exports = rewind_list_exports;
  p.default_export = rewind_default_export;
  p.open = rewind_open;
  p.close = rewind_close;
  p.get_size = rewind_get_size;
  p.block_size = rewind_block_size;
  p.can_write = rewind_can_write;
  p.can_flush = rewind_can_flush;
  p.can_fua = rewind_can_fua;
  p.can_trim = rewind_can_trim;
  p.can_zero = rewind_can_zero;
  p.can_fast_zero = rewind_can_fast_zero;
  p.can_extents = rewind_can_extents;
  p.can_multi_conn = rewind_can_multi_conn;
  p.is_rotational = rewind_is_rotational;
  p.pread = rewind_pread;
  p.pwrite = rewind_pwrite;
  p.flush = rewind_flush;
  p.trim = rewind_trim;
  p.zero = rewind_zero;
  p.extents = rewind_extents;
  return p;
}

nbdkit_plugin plugin = MakePlugin();

}  // namespace

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
NBDKIT_REGISTER_PLUGIN(plugin)
