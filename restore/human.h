// Human-readable output of the rewind CLI: sizes, times, aligned key/value
// blocks and tables.  Only text meant for people goes through here; --json
// output uses the control protocol's objects unchanged.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace rwd::cli {

// 21474836480 -> "20 GiB", 1572864 -> "1.5 MiB", 512 -> "512 B".
std::string HumanBytes(uint64_t bytes);
// "20 GiB (21474836480 bytes)"; "512 bytes" when under 1 KiB.
std::string HumanBytesExact(uint64_t bytes);
// Nanoseconds since the epoch -> "2026-11-23 10:15:00.123" in UTC, with
// " UTC" appended when with_zone.
std::string HumanTime(int64_t time_ns, bool with_zone = true);

// "1 record", "2 records": n and the word that fits it.
std::string Plural(uint64_t n, const char* one, const char* many);

// Lines of "key:  value" with the values aligned in one column.
class KeyValueBlock {
 public:
  void Add(std::string key, std::string value);
  void Print(std::ostream& out) const;

 private:
  std::vector<std::pair<std::string, std::string>> rows_;
};

// A table with a header row; columns are separated by two spaces and sized to
// their widest cell.  Right-aligned columns suit numbers.
class Table {
 public:
  enum class Align { kLeft, kRight };
  struct Column {
    std::string title;
    Align align = Align::kLeft;
  };

  explicit Table(std::vector<Column> columns);
  // row.size() must equal the number of columns.
  void AddRow(std::vector<std::string> row);
  void Print(std::ostream& out) const;

 private:
  std::vector<size_t> Widths() const;
  void PrintRow(std::ostream& out, const std::vector<std::string>& row,
                const std::vector<size_t>& widths) const;

  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// One line of a progress bar, without '\r':
// " 45% [#########...........] 450 MiB / 1 GiB, 120 MiB/s".  The rate is left
// out while unknown (per_second < 0).  With a unit, done and total count
// things rather than bytes: " 45% [...] 4500 / 10000 records, 1200 records/s".
std::string ProgressLine(uint64_t done, uint64_t total, double per_second,
                         const char* unit = nullptr);

// A progress bar redrawn in place on a terminal: at most every
// kMinInterval, and always for the first and the last update.  Only for a
// terminal (the caller checks isatty); text for scripts never has one.
class ProgressMeter {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kMinInterval{100};

  // now may be replaced by tests; unit as for ProgressLine (null: bytes).
  explicit ProgressMeter(std::ostream& out, std::function<Clock::time_point()> now = Clock::now,
                         const char* unit = nullptr);
  // done out of total bytes (or units).
  void Update(uint64_t done, uint64_t total);
  // Erases the bar, if one was drawn.
  void Finish();

 private:
  std::ostream& out_;
  std::function<Clock::time_point()> now_;
  const char* unit_;
  Clock::time_point start_;
  Clock::time_point last_draw_{};
  bool drawn_ = false;
  uint64_t last_done_ = 0;
};

// A ProgressMeter on stderr when stderr is a terminal, else nothing: text
// for scripts never has a bar.  Updates with total 0 (not known yet) are
// skipped.
class TerminalProgress {
 public:
  explicit TerminalProgress(const char* unit = nullptr);
  void Update(uint64_t done, uint64_t total);
  void Finish();

 private:
  std::optional<ProgressMeter> meter_;
};

}  // namespace rwd::cli
