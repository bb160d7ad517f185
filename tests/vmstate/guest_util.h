// Helpers to run the project's test guest (tests/guest, see its README.md)
// under qemu-system-x86_64 (TCG) on rewind disks: one nbdkit with the built
// rewind plugin per disk, QEMU booting disk 0 over NBD, the guest's serial
// log, its record and status sectors read and written over NBD, and QMP.
//
// The guest keeps a counter C in RAM and in a record sector on each of its two
// disks, and counts (status sector of disk 0) and prints (serial) every time
// RAM and disks disagree; so any checkpoint/restore that brings back RAM and
// disks from different instants shows up as a MISMATCH.
//
// A typical test:
//   RequireQemuOrSkip();
//   GuestVm vm;                       // two stores, guest image on disk 0
//   Qemu& q = vm.Boot();              // QEMU 1 boots the guest
//   q.WaitForTick(64, 20s);           // the guest is running
//   q.Qmp("stop");  ... checkpoint ... vm.KillQemu();
//   Qemu& q2 = vm.StartQemu({.incoming_defer = true});   // QEMU 2, paused
//   q2.Qmp("migrate-incoming", {{"uri", ...}});  ...  q2.Qmp("cont");
//   REQUIRE(vm.ReadStatus().mismatches == 0);
// Everything is torn down by the destructors: QEMU is killed (SIGKILL)
// before the nbdkit servers stop, and the directory is removed.
//
// Faults, for the supervisor's tests: with QemuOptions::pvpanic, a record
// made invalid (GuestVm::WriteBadRecord(disk, BadRecord::kGarbage)) makes
// the guest print PANIC and QEMU report GUEST_PANICKED on QMP; the hang
// marker (BadRecord::kHangMarker) makes it print HANG and hang, silently.
// With QemuOptions::agent, the guest answers guest-ping on COM2 like a QEMU
// guest agent (AgentClient) until it panics or hangs.
//
// GuestVmOptions::one_store puts both disks in ONE store instead (one
// nbdkit, disk=d0 disk=d1): QEMU then opens the exports "d0" and "d1" on
// the same socket, and the NBD reads of records and status name the export.
#pragma once

#include <rewind/vmstate/qmp.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/nbd_server.h"
#include "support/proc_util.h"

#ifndef REWIND_GUEST_IMAGE
#error "guest_util.h needs REWIND_GUEST_IMAGE (tests/vmstate/CMakeLists.txt)"
#endif

namespace rwd::test::guest {

using namespace std::chrono_literals;

// The built guest image (raw, whole sectors, written at LBA 0 of disk 0).
inline constexpr const char* kImagePath = REWIND_GUEST_IMAGE;

// The guest's disk layout (tests/guest/guest.S).
inline constexpr uint64_t kSectorSize = 512;
inline constexpr uint64_t kRecordLba = 64;  // on both disks
inline constexpr uint64_t kStatusLba = 65;  // on disk 0
// Formerly what an invalid record read as in MISMATCH lines; the guest now
// panics on an invalid record instead (PANIC), so no message holds it.
inline constexpr uint32_t kInvalidRecord = 0xffffffff;
// BIOS drive numbers of the guest's disks (PANIC, HANG and DISKERR lines).
inline constexpr uint32_t kFirstDrive = 0x80;  // disk i is kFirstDrive + i
// The guest agent's answer to guest-ping, as the guest sends it on COM2.
inline constexpr std::string_view kAgentPong = "{\"return\": {}}";
// TICK lines come at counters that are multiples of this.
inline constexpr uint32_t kTickEvery = 16;
// Guest-physical address of the RAM counter C (u32).
inline constexpr uint64_t kRamCounterAddress = 0x520;

// Ends the test as skipped (exit 77, see RequireNbdkitOrSkip) when nbdkit or
// qemu-system-x86_64 is not installed; REQUIREs the built plugin, CLI and
// guest image.
void RequireQemuOrSkip();

// ------------------------------------------------------------ disk content

// A record sector: {"RWGUEST1", counter, ~counter, disk index}.
struct GuestRecord {
  bool valid = false;        // magic, inverse and a disk index 0/1 all right
  bool hang_marker = false;  // magic "RWGHANG!" (then not valid)
  uint32_t counter = 0;
  uint32_t disk_index = 0;
  std::string ToString() const;
};

// The status sector of disk 0.
struct GuestStatus {
  bool valid = false;  // magic "RWGSTAT1"
  uint32_t mismatches = 0;
  uint32_t last_ram = 0;  // RAM counter at the last mismatch
  uint32_t last_d0 = 0;   // disk 0's record then
  uint32_t last_d1 = 0;   // disk 1's record then
  uint32_t boots = 0;
  uint32_t ram_errors = 0;    // RAM pattern buffer found not matching C
  uint32_t ram_error_at = 0;  // C at the last of them
  std::string ToString() const;
};

GuestRecord ParseRecord(const uint8_t* sector);
// The 512 bytes of a valid record.
std::vector<uint8_t> MakeRecord(uint32_t counter, uint32_t disk_index);
GuestStatus ParseStatus(const uint8_t* sector);

// What WriteBadRecord puts in a record sector.
enum class BadRecord {
  kGarbage,     // bytes that are no record: the guest panics (PANIC)
  kHangMarker,  // "RWGHANG!", rest zero: the guest hangs (HANG)
};
// The 512 bytes of such a sector.
std::vector<uint8_t> MakeBadRecord(BadRecord kind);

// Over a fresh NBD connection to socket, to the export export_name ("":
// the default export; "d1", "d0@NAME", ...).  Throw NbdError on failure.
GuestRecord ReadRecord(const std::string& nbd_socket, const std::string& export_name = "");
void WriteRecord(const std::string& nbd_socket, uint32_t counter, uint32_t disk_index,
                 const std::string& export_name = "");
// Writes MakeBadRecord(kind) to the record sector and flushes.  The guest
// reads it at its next read of that record unless it writes the record
// first: stop it at a safe point (Qemu::StopAtSafePoint) before, cont after,
// for a fault that is seen for certain.
void WriteBadRecord(const std::string& nbd_socket, BadRecord kind,
                    const std::string& export_name = "");
GuestStatus ReadStatus(const std::string& nbd_socket, const std::string& export_name = "");
// Writes the guest image at LBA 0 and flushes.
void InstallImage(const std::string& nbd_socket, const std::string& export_name = "");

// ------------------------------------------------------------- serial log

struct Tick {
  uint32_t counter = 0;
  uint32_t mismatches = 0;
  uint32_t ram_errors = 0;
};

struct Mismatch {
  uint32_t ram = 0, d0 = 0, d1 = 0, mismatches = 0;
};

// The guest's serial output, parsed.  Only complete lines count (a line
// still being written is left for the next read).
struct SerialLog {
  std::vector<std::string> lines;
  std::vector<uint32_t> boots;  // boots= of each BOOT line
  std::vector<Tick> ticks;
  std::vector<Mismatch> mismatches;
  std::vector<std::string> ram_bad;     // RAMBAD lines
  std::vector<std::string> disk_errors;  // DISKERR lines
  std::vector<std::string> panics;       // PANIC lines
  std::vector<std::string> hangs;        // HANG lines
  std::vector<std::string> unknown;      // anything else

  std::optional<Tick> LastTick() const;
  // The last lines, for failure messages.
  std::string Tail(size_t n = 20) const;
};

SerialLog ParseSerial(std::string_view text);

// ------------------------------------------------------------------ disks

// One rewind store: nbdkit with the built plugin serving it, with one
// unnamed disk (Start) or several named ones (StartNamed: each an export
// named after it).  Files in workdir: nbd.sock, nbdkit.pid, nbdkit.log, and
// the store in workdir/store.
class GuestDisk {
 public:
  // Starts nbdkit (creating the store when new: size= is passed then).
  // extra_params: further plugin parameters ("block-size=512").
  // nbdkit_flags: before the plugin ("--filter=error").
  static std::unique_ptr<GuestDisk> Start(const std::string& workdir, uint64_t size,
                                          std::vector<std::string> extra_params = {},
                                          std::vector<std::string> nbdkit_flags = {});
  // A store of named disks: disk=NAME size=NAME:SIZE for each, in order.
  struct Named {
    std::string name;
    uint64_t size = 0;
  };
  static std::unique_ptr<GuestDisk> StartNamed(const std::string& workdir,
                                               std::vector<Named> disks,
                                               std::vector<std::string> extra_params = {});
  GuestDisk(const GuestDisk&) = delete;
  GuestDisk& operator=(const GuestDisk&) = delete;
  ~GuestDisk();

  const std::string& socket() const { return server_->socket(); }
  const std::string& store_dir() const { return store_dir_; }
  const std::string& workdir() const { return workdir_; }
  NbdServer& server() { return *server_; }
  // The (first) disk's size.
  uint64_t size() const { return size_; }
  // The named disks (empty for a store of one unnamed disk).
  const std::vector<Named>& named() const { return named_; }

  // Stops nbdkit (SIGTERM, waits) and starts it again on the same store.
  void Restart();
  // Stops nbdkit (SIGTERM, waits); Restart() brings it back.
  ExitStatus Stop();

  GuestRecord ReadRecord(const std::string& export_name = "") const {
    return guest::ReadRecord(socket(), export_name);
  }
  void WriteRecord(uint32_t counter, uint32_t disk_index,
                   const std::string& export_name = "") const {
    guest::WriteRecord(socket(), counter, disk_index, export_name);
  }
  void WriteBadRecord(BadRecord kind, const std::string& export_name = "") const {
    guest::WriteBadRecord(socket(), kind, export_name);
  }

 private:
  GuestDisk() = default;
  std::string workdir_;
  std::string store_dir_;
  uint64_t size_ = 0;
  std::vector<Named> named_;
  std::vector<std::string> extra_params_;
  std::vector<std::string> nbdkit_flags_;
  std::unique_ptr<NbdServer> server_;
};

// ------------------------------------------------------------------- QEMU

struct QemuOptions {
  // NBD Unix sockets of the disks, disk 0 (the boot disk) first.  Disk i is
  // IDE bus i / 2, unit i % 2: BIOS drive 0x80 + i.
  std::vector<std::string> disk_sockets;
  // The NBD export of each disk ("d0", "d1": disks of one store, served on
  // one socket); missing or empty: the server's default export.
  std::vector<std::string> disk_exports;
  // Where the files go; names start with name: NAME.serial (the guest's
  // COM1), NAME.qmp (the helper's QMP socket), NAME-tool.qmp (a second QMP
  // socket, free for other clients such as the rewind CLI: QEMU serves one
  // client per QMP socket), NAME.log (QEMU's stdout and stderr).
  std::string workdir;
  std::string name = "qemu";
  // -incoming defer: QEMU waits, paused, for migrate-incoming.
  bool incoming_defer = false;
  // -S: do not start the CPU (cont starts it).
  bool paused = false;
  // -no-reboot: a guest reset (or system_reset) ends QEMU instead.
  bool no_reboot = true;
  int memory_mb = 256;
  // -device pvpanic: QEMU's ISA pvpanic device (port 0x505), through which
  // the guest reports its panics (GUEST_PANICKED on QMP).
  bool pvpanic = false;
  // -action panic=VALUE ("pause", "shutdown", "none", ...); empty: not
  // given, QEMU's default (7.2: shutdown, i.e. QEMU exits on a panic
  // unless -no-shutdown).
  std::string panic_action;
  // The heartbeat: COM2 (isa-serial index 1, port 0x2f8) on a listening
  // Unix socket NAME.qga (AgentSocketPath), where the guest answers
  // guest-ping (AgentClient):
  //   -chardev socket,id=qga0,path=NAME.qga,server=on,wait=off
  //   -device isa-serial,chardev=qga0,index=1
  bool agent = false;
  // Appended to the command line.
  std::vector<std::string> extra_args;
  // How long Start waits for the QMP socket.
  std::chrono::milliseconds ready_timeout{20s};
};

// The QEMU command line for options (without starting it).
std::vector<std::string> QemuCommand(const QemuOptions& options);
// WORKDIR/NAME.qga: the heartbeat socket of options (with agent).
std::string AgentSocketPath(const QemuOptions& options);

// A client of the guest's heartbeat on COM2 (QemuOptions::agent): sends
// {"execute":"guest-ping"} as the supervisor does and reads the answer.
// QEMU's socket chardev serves one client at a time.
class AgentClient {
 public:
  // Connects to the socket, retrying until timeout.  Throws
  // std::runtime_error when it cannot.
  static std::unique_ptr<AgentClient> Connect(const std::string& socket_path,
                                              std::chrono::milliseconds timeout = 10s);
  ~AgentClient();
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;
  // Drops the answers still unread (late ones to earlier pings), sends one
  // guest-ping and waits for the answer line.  True when the line is
  // kAgentPong; false when no line came within timeout, or another line
  // came (*reply gets the line, or "" without one; may be null).  Throws
  // std::runtime_error when the connection fails or was closed.
  bool Ping(std::chrono::milliseconds timeout, std::string* reply = nullptr);

 private:
  AgentClient() = default;
  // Reads what is there, waiting until deadline for more; false at EOF.
  bool ReadSome(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  std::string buf_;
};

// One qemu-system-x86_64 process.  The destructor kills it (SIGKILL) and
// reaps it.  It also dies (SIGKILL) when the thread that started it ends,
// so a crashed test leaves no QEMU behind.  Not thread-safe.
class Qemu {
 public:
  // Starts QEMU and connects to its QMP socket.  Throws std::runtime_error
  // (quoting QEMU's log) when it exits or does not listen in time.
  static std::unique_ptr<Qemu> Start(QemuOptions options);
  ~Qemu();
  Qemu(const Qemu&) = delete;
  Qemu& operator=(const Qemu&) = delete;

  const QemuOptions& options() const { return options_; }
  const std::vector<std::string>& argv() const { return argv_; }
  std::string command() const;
  pid_t pid() const { return pid_; }
  const std::string& serial_path() const { return serial_path_; }
  const std::string& qmp_path() const { return qmp_path_; }
  const std::string& tool_qmp_path() const { return tool_qmp_path_; }
  const std::string& log_path() const { return log_path_; }
  // The heartbeat socket (with options().agent; else empty).
  const std::string& agent_path() const { return agent_path_; }

  // The guest's serial output so far, raw and parsed.
  std::string SerialText() const;
  SerialLog Serial() const;
  // QEMU's own stdout/stderr.
  std::string Log() const;

  // Waits for a TICK line with C >= min_counter (counting from the start of
  // this QEMU's log).  nullopt when QEMU exited, the guest printed DISKERR,
  // PANIC or HANG (it stopped for good), or the timeout passed; *why (may be
  // null) then says which.
  std::optional<Tick> WaitForTick(uint32_t min_counter, std::chrono::milliseconds timeout,
                                  std::string* why = nullptr);
  // Waits until the serial log holds at least count complete lines starting
  // with prefix ("PANIC ", "HANG " too); returns the count-th such line,
  // nullopt as above.
  std::optional<std::string> WaitForLine(std::string_view prefix, size_t count,
                                         std::chrono::milliseconds timeout,
                                         std::string* why = nullptr);

  // The helper's QMP connection (made in Start).
  rwd::vm::QmpClient& qmp() { return *qmp_; }
  // Runs a QMP command; returns its "return" member.  Throws
  // std::runtime_error on an error reply or a dead connection.
  nlohmann::json Qmp(const std::string& command, const nlohmann::json& args = nullptr,
                     std::chrono::milliseconds timeout = 30s);
  // Waits for the QMP event name (also one that came during an earlier
  // command) and returns it whole ({"event", "data", "timestamp"});
  // nullopt after timeout or on a broken connection, *why (may be null)
  // then says which.
  std::optional<nlohmann::json> WaitEvent(const std::string& name,
                                          std::chrono::milliseconds timeout,
                                          std::string* why = nullptr);
  // The names of the QMP events received so far and not yet waited for or
  // taken, oldest first; takes them.
  std::vector<std::string> TakeEventNames();
  // query-status's "status" ("running", "paused", "inmigrate", ...).
  std::string RunState();
  // The guest's RAM counter C, read with pmemsave (works running or
  // stopped; consistent only when stopped).
  uint32_t ReadRamCounter();
  // Whether the (stopped) CPU is halted: HLT=1 in HMP's info registers.
  bool IsHalted();
  // Stops the guest at a safe point: halted in its pause at the end of the
  // loop, with C in RAM equal to both records, so that the next disk
  // access is the read of disk 0's record (see guest.S).  Tries stop /
  // check / cont until then; returns C.  Throws std::runtime_error after
  // timeout.  Needs the records readable: disks are the given sockets
  // and exports.
  uint32_t StopAtSafePoint(std::chrono::milliseconds timeout = 20s);
  // Polls query-migrate until its status is "completed" (returns it) or
  // "failed"/"cancelled" or timeout (throws, saying which).
  nlohmann::json WaitMigration(std::chrono::milliseconds timeout);

  bool Running();
  // SIGKILL and reap.
  void Kill();
  // QMP quit, then waits; SIGKILL after timeout.
  ExitStatus Quit(std::chrono::milliseconds timeout = 10s);
  const ExitStatus& status() const { return status_; }

  // Command line, run state, the tails of QEMU's log and of the serial log:
  // for INFO() in failing tests.
  std::string Describe() const;

 private:
  Qemu() = default;
  QemuOptions options_;
  std::vector<std::string> argv_;
  std::string serial_path_, qmp_path_, tool_qmp_path_, log_path_, agent_path_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  ExitStatus status_;
  std::unique_ptr<rwd::vm::QmpClient> qmp_;
};

// --------------------------------------------------------- the whole guest

struct GuestVmOptions {
  int disks = 2;
  uint64_t disk_size = 4u << 20;
  // Per disk, overriding disk_size (one_store only; missing: disk_size).
  std::vector<uint64_t> disk_sizes;
  std::vector<std::string> disk_params;  // extra plugin parameters for each store
  // nbdkit flags for each store (a store per disk only), e.g. a filter:
  // {"--filter=error"} with disk_params {"error-rate=100%", "error-file=F"}.
  std::vector<std::string> disk_nbdkit_flags;
  // All disks in one store (one nbdkit, vmstore/): disk=d0 disk=d1
  // size=d0:.. size=d1:..; QEMU opens the exports d0 and d1.
  bool one_store = false;
};

// A temporary directory with one rewind disk per disk (d0/, d1/) or, with
// one_store, one store of disks d0, d1 (vmstore/), the guest image installed
// on disk 0, and QEMU processes started on them one at a time (q1, q2, ...
// in the same directory).  Destruction order: QEMU, nbdkit, the directory.
//
// disk_count() and disk(i) are the stores (GuestDisk: one nbdkit each);
// guest_disk_count(), socket_of(i) and export_of(i) the guest's disks.
class GuestVm {
 public:
  explicit GuestVm(GuestVmOptions options = {});
  ~GuestVm();
  GuestVm(const GuestVm&) = delete;
  GuestVm& operator=(const GuestVm&) = delete;

  const std::string& dir() const { return dir_.path(); }
  std::string path(std::string_view name) const { return dir_ / name; }
  size_t disk_count() const { return disks_.size(); }
  GuestDisk& disk(size_t i) { return *disks_.at(i); }
  bool one_store() const { return options_.one_store; }
  // The guest's disks: how many, and where each is served.
  size_t guest_disk_count() const { return static_cast<size_t>(options_.disks); }
  const std::string& socket_of(size_t guest_disk) const;
  // "" (default export) with a store per disk, "d<i>" with one_store.
  std::string export_of(size_t guest_disk) const;

  // The options of the next QEMU: disk sockets and exports, workdir and
  // name filled in.
  QemuOptions NextQemuOptions() const;
  // Starts a QEMU (killing the current one, if any).  options' disk_sockets
  // (with disk_exports), workdir and name are filled in when empty.
  Qemu& StartQemu(QemuOptions options = {});
  // StartQemu and REQUIRE a BOOT line within timeout.
  Qemu& Boot(std::chrono::milliseconds timeout = 20s);
  Qemu& Boot(QemuOptions options, std::chrono::milliseconds timeout = 20s);
  Qemu& qemu();
  bool has_qemu() const { return qemu_ != nullptr; }
  void KillQemu();

  // The status sector of disk 0 and the records (of guest disk i), read
  // over NBD.  at: a point ("NAME", "lsn:N"): the disk then, read through
  // the read-only export DISK@POINT ("@POINT" for a store per disk).
  GuestStatus ReadStatus(const std::string& at = "") const;
  GuestRecord ReadRecord(size_t disk, const std::string& at = "") const;
  // Writes a bad record (garbage or the hang marker) to guest disk i's
  // record sector (see guest::WriteBadRecord).
  void WriteBadRecord(size_t disk, BadRecord kind) const;

  // The current QEMU (if any) and the nbdkit logs' tails.
  std::string Describe() const;

 private:
  GuestVmOptions options_;
  TempDir dir_;
  std::vector<std::unique_ptr<GuestDisk>> disks_;
  std::unique_ptr<Qemu> qemu_;
  int qemu_count_ = 0;
};

}  // namespace rwd::test::guest
