// Human-readable output of the rewind CLI: sizes, times, aligned key/value
// blocks and tables.  Only text meant for people goes through here; --json
// output uses the control protocol's objects unchanged.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
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
// out while unknown (bytes_per_second < 0).
std::string ProgressLine(uint64_t done, uint64_t total, double bytes_per_second);

// A progress bar redrawn in place on a terminal: at most every
// kMinInterval, and always for the first and the last update.  Only for a
// terminal (the caller checks isatty); text for scripts never has one.
class ProgressMeter {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kMinInterval{100};

  // now may be replaced by tests.
  explicit ProgressMeter(std::ostream& out, std::function<Clock::time_point()> now = Clock::now);
  // done out of total bytes.
  void Update(uint64_t done, uint64_t total);
  // Erases the bar, if one was drawn.
  void Finish();

 private:
  std::ostream& out_;
  std::function<Clock::time_point()> now_;
  Clock::time_point start_;
  Clock::time_point last_draw_{};
  bool drawn_ = false;
  uint64_t last_done_ = 0;
};

}  // namespace rwd::cli
