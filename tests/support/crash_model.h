// CrashModel: what a region of an NBD disk may hold after the server is
// killed with SIGKILL under a load from several connections.  Shared by
// tests/e2e/durability_test.cc (one kill per round) and
// tests/torture/torture_test.cc (hundreds or thousands of kills, with
// checkpoints read back through the time-travel exports).
//
// The model.  The region is a run of units (4 KiB blocks, or 512-byte
// sectors); every request covers whole units.  No two requests touching one
// unit are ever in flight together, so the requests to a unit are totally
// ordered: history[0] is the unit's value when the round started (read back
// and flushed), history[1..] the writes, trims and zeroes issued to it in
// order.  A unit's entry becomes
//   acked    when its reply arrived without error;
//   durable  when it was a FUA request and was acked, or it was acked
//            before a flush (on any connection: the export advertises
//            multi-conn) was sent, or before a checkpoint was sent, and that
//            flush or checkpoint was acked.
// After a kill and restart every unit must hold exactly one value from
// history[durable..]: the durable value or a later request's (acked or
// not).  Every written unit carries a header naming its round, sequence
// number and unit number, and its remaining bytes are derived from them, so
// a torn, mixed, misplaced or stale unit is told apart from every
// legitimate value.  Requests in flight on different connections may touch
// disjoint units of one page, so a lost read-modify-write shows up too.
//
// A checkpoint's content, unit by unit, is one of history[lo..hi]: lo the
// unit's last acked entry when the checkpoint was sent, hi its last issued
// entry when the answer arrived (or when the server was killed, for a
// checkpoint in flight then).  A unit with nothing in flight across the
// checkpoint has lo == hi: its value at the checkpoint is exact.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "support/nbd_server.h"

namespace rwd::test {

// ------------------------------------------------------------- unit values

// A value of a unit: 0 is all zeros, else (round << 32) | seq.
uint64_t UnitValue(uint32_t round, uint32_t seq);
// "zeros" or "r12s345".
std::string UnitValueName(uint64_t v);
// The bytes of value written to unit number unit_index (len bytes): a
// 32-byte header (magic, value, unit_index, check word), then bytes derived
// from value and unit_index.
void FillUnit(uint64_t value, uint64_t unit_index, uint8_t* out, size_t len);

struct ClassifiedUnit {
  bool valid = false;
  uint64_t value = 0;
  std::string problem;  // when !valid
};
// What the len bytes read from unit unit_index hold: zeros, a whole value
// written to that unit, or a description of what is wrong (garbage or torn,
// misplaced, header and body of different writes).
ClassifiedUnit ClassifyUnit(const uint8_t* buf, uint64_t unit_index, size_t len);

// ------------------------------------------------------------------ model

struct UnitState {
  std::vector<uint64_t> history;  // [0]: value at the round's start
  std::vector<bool> fua;          // per history entry
  size_t acked = 0;
  size_t durable = 0;
  bool busy = false;
};

struct CrashStats {
  uint64_t issued = 0;
  uint64_t acked = 0;
  uint64_t failed = 0;  // completed with an error (the kill)
  uint64_t writes_acked = 0;
  uint64_t zeros_acked = 0;
  uint64_t trims_acked = 0;
  uint64_t fua_acked = 0;
  uint64_t flushes = 0;           // acknowledged flushes (any connection)
  uint64_t flushes_failed = 0;    // flushes the kill cut off
  uint64_t checkpoints = 0;       // acknowledged checkpoints
  uint64_t unacked_at_kill = 0;   // requests in flight when SIGKILL was sent
  uint64_t durable_checked = 0;   // units whose durable value is a request of their round
  uint64_t later_value_seen = 0;  // units found holding a newer-than-durable value
  uint64_t units_checked = 0;     // units read back and checked after restarts
  uint64_t rounds = 0;

  // The summary durability_test prints.
  std::string ToString() const;
};

// The geometry and mix of the load.
struct RegionConfig {
  uint64_t region_offset = 4 * 1024 * 1024;
  // The unit of the model: every request covers whole units at
  // unit-aligned offsets, and each unit must hold exactly one value.
  uint32_t unit = 4096;
  uint32_t region_units = 2048;
  uint32_t max_units_per_write = 4;
  int queue_depth = 32;
  // Per mille of a writer's requests that are flushes (on its own
  // connection; 0: the writers send none).
  uint32_t flush_permille = 0;
};

struct CrashModel {
  std::mutex mu;
  std::vector<UnitState> units;
  uint32_t round = 0;
  uint32_t next_seq = 1;
  CrashStats stats;
  std::vector<std::string> harness_errors;
  // Writes are numbered from 1 in the order they are issued;
  // newest_acked_data is the highest number acknowledged.
  // A checkpoint sent when newest_acked_data > (data_issued when an earlier
  // checkpoint was answered) follows a write sequenced after that one: its
  // LSN must be higher.
  uint64_t data_issued = 0;
  uint64_t newest_acked_data = 0;
  // Set just before the server is killed: a request failing before that is
  // a failure of the server, not an effect of the kill.
  std::atomic<bool> killing{false};

  explicit CrashModel(uint32_t region_units);
  // A new round: baseline[i] is unit i's value now (and durable).
  void Reset(const std::vector<uint64_t>& baseline);
  // Every unit's last acked history index, now.
  std::vector<size_t> SnapshotAcked();
  // A flush or checkpoint sent after SnapshotAcked() returned acked was
  // acknowledged: those entries are durable.
  void ApplyDurable(const std::vector<size_t>& acked);
  // Requests issued and not yet completed.
  uint64_t InFlight();
  uint64_t DataIssued();
  uint64_t NewestAckedData();
  // Records that a request failed before the kill (a server failure).
  void RecordUnexpectedError(const std::string& what, int err);
};

// One connection's writer: keeps cfg.queue_depth requests in flight to
// random free units of the region (shared with the other connections)
// until *stop or the connection dies: writes (about 1 in 8 with FUA), zeroes
// and trims, and flushes when cfg.flush_permille > 0.  While *pause (when
// given) is set it issues nothing new but still collects replies.
void WriterLoop(NbdClient* client, CrashModel* m, const RegionConfig* cfg, uint64_t seed,
                const std::atomic<bool>* stop, const std::atomic<bool>* pause = nullptr);

// Reads the region back through c and checks every unit against the model
// (and that the never-written MiB before and after the region reads as
// zeros).  Fills observed with the values found.  Returns false, with
// descriptions added to failures, when it found a problem.
bool VerifyRegion(NbdClient& c, CrashModel& m, const RegionConfig& cfg, const std::string& when,
                  std::vector<uint64_t>* observed, std::vector<std::string>* failures);

// The history entries a unit may hold at a checkpoint, one list per unit.
struct CheckpointCandidates {
  std::vector<uint32_t> first;  // unit i: values[first[i] .. first[i+1])
  std::vector<uint64_t> values;
  uint64_t exact_units = 0;  // units with exactly one candidate

  // lo: SnapshotAcked() taken before the checkpoint was sent; hi: every
  // unit's history as it stands after the answer arrived (or the kill).
  static CheckpointCandidates Capture(CrashModel& m, const std::vector<size_t>& lo);
  bool Allows(uint32_t unit, uint64_t value) const;
  std::string Describe(uint32_t unit) const;
};

// Reads the region from c (a time-travel export of a checkpoint) and checks
// every unit against cands, and the guard ranges as VerifyRegion does.
// Adds to *exact and *ambiguous the units checked against one value and
// against several.  false (and failures) on a mismatch.
bool VerifyCheckpointRegion(NbdClient& c, const CheckpointCandidates& cands,
                            const RegionConfig& cfg, const std::string& when, uint64_t* exact,
                            uint64_t* ambiguous, std::vector<std::string>* failures);

// ---------------------------------------------------------- control socket

struct TakenCheckpoint {
  std::string name;
  uint64_t lsn = 0;
};

// Takes a checkpoint through DIR/control.sock; false (and *error) when it
// was not acknowledged.
bool TakeCheckpoint(const std::string& store_dir, const std::string& name, TakenCheckpoint* out,
                    std::string* error);
// Parses a control response line to a checkpoint request; false (and
// *error) when it is not a success.
bool ParseCheckpointResponse(const std::string& line, const std::string& name, TakenCheckpoint* out,
                             std::string* error);
// The store's visible checkpoints, oldest first; false (and *error) when
// the list request failed.
bool ListCheckpoints(const std::string& store_dir, std::vector<TakenCheckpoint>* out,
                     std::string* error);
// Every checkpoint of taken (acknowledged, oldest first) is listed, in
// order, with its LSN, and LSNs never go backwards.
void VerifyCheckpoints(const std::string& store_dir, const std::vector<TakenCheckpoint>& taken,
                       const std::string& when, std::vector<std::string>* failures);

}  // namespace rwd::test
