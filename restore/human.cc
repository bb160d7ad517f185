#include "human.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <ctime>
#include <iostream>

#include <unistd.h>

namespace rwd::cli {

std::string HumanBytes(uint64_t bytes) {
  static constexpr std::array<const char*, 7> kUnits = {"B",   "KiB", "MiB", "GiB",
                                                        "TiB", "PiB", "EiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  size_t unit = 0;
  uint64_t scale = 1;
  while (unit + 1 < kUnits.size() && bytes / scale >= 1024) {
    scale *= 1024;
    ++unit;
  }
  if (bytes % scale == 0) return fmt::format("{} {}", bytes / scale, kUnits[unit]);
  double value = static_cast<double>(bytes) / static_cast<double>(scale);
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string HumanBytesExact(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} bytes", bytes);
  return fmt::format("{} ({} bytes)", HumanBytes(bytes), bytes);
}

std::string HumanTime(int64_t time_ns, bool with_zone) {
  constexpr int64_t kNsPerSec = 1000000000;
  int64_t secs = time_ns / kNsPerSec;
  int64_t rem = time_ns % kNsPerSec;
  if (rem < 0) {
    secs -= 1;
    rem += kNsPerSec;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return fmt::format("@{}ns", time_ns);
  std::array<char, 32> buf{};
  size_t n = std::strftime(buf.data(), buf.size(), "%Y-%m-%d %H:%M:%S", &tm);
  return fmt::format("{}.{:03}{}", std::string_view(buf.data(), n), rem / 1000000,
                     with_zone ? " UTC" : "");
}

std::string Plural(uint64_t n, const char* one, const char* many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

void KeyValueBlock::Add(std::string key, std::string value) {
  rows_.emplace_back(std::move(key), std::move(value));
}

void KeyValueBlock::Print(std::ostream& out) const {
  size_t width = 0;
  for (const auto& [key, value] : rows_) width = std::max(width, key.size() + 1);
  for (const auto& [key, value] : rows_) {
    out << fmt::format("{:<{}}  {}\n", key + ":", width, value);
  }
}

Table::Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

void Table::AddRow(std::vector<std::string> row) {
  assert(row.size() == columns_.size());
  rows_.push_back(std::move(row));
}

std::vector<size_t> Table::Widths() const {
  std::vector<size_t> widths;
  for (const Column& c : columns_) widths.push_back(c.title.size());
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  return widths;
}

void Table::PrintRow(std::ostream& out, const std::vector<std::string>& row,
                     const std::vector<size_t>& widths) const {
  std::string line;
  for (size_t i = 0; i < row.size(); ++i) {
    if (i > 0) line += "  ";
    bool last = i + 1 == row.size();
    if (columns_[i].align == Align::kRight) {
      line += fmt::format("{:>{}}", row[i], widths[i]);
    } else if (last) {
      line += row[i];  // no trailing blanks
    } else {
      line += fmt::format("{:<{}}", row[i], widths[i]);
    }
  }
  // A blank last cell leaves the separator before it.
  while (!line.empty() && line.back() == ' ') line.pop_back();
  out << line << '\n';
}

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths = Widths();
  std::vector<std::string> titles;
  for (const Column& c : columns_) titles.push_back(c.title);
  PrintRow(out, titles, widths);
  for (const auto& row : rows_) PrintRow(out, row, widths);
}

std::string ProgressLine(uint64_t done, uint64_t total, double per_second, const char* unit) {
  constexpr int kWidth = 30;
  done = std::min(done, total);
  const double fraction = total == 0 ? 1.0 : static_cast<double>(done) / static_cast<double>(total);
  const int filled = static_cast<int>(fraction * kWidth);
  std::string amounts = unit == nullptr
                            ? fmt::format("{} / {}", HumanBytes(done), HumanBytes(total))
                            : fmt::format("{} / {} {}", done, total, unit);
  std::string line =
      fmt::format("{:3}% [{}{}] {}", static_cast<int>(fraction * 100), std::string(filled, '#'),
                  std::string(kWidth - filled, '.'), amounts);
  if (per_second >= 0) {
    const auto rate = static_cast<uint64_t>(per_second);
    line += unit == nullptr ? fmt::format(", {}/s", HumanBytes(rate))
                            : fmt::format(", {} {}/s", rate, unit);
  }
  return line;
}

ProgressMeter::ProgressMeter(std::ostream& out, std::function<Clock::time_point()> now,
                             const char* unit)
    : out_(out), now_(std::move(now)), unit_(unit), start_(now_()) {}

void ProgressMeter::Update(uint64_t done, uint64_t total) {
  const Clock::time_point now = now_();
  const bool last = done >= total;
  if (drawn_ && !last && now - last_draw_ < kMinInterval) return;
  if (drawn_ && done == last_done_ && now - last_draw_ < kMinInterval) return;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  const double rate = seconds >= 0.2 ? static_cast<double>(done) / seconds : -1;
  // "\r" back to the line's start, "\x1b[K" erases what a longer line left.
  out_ << '\r' << ProgressLine(done, total, rate, unit_) << "\x1b[K" << std::flush;
  drawn_ = true;
  last_draw_ = now;
  last_done_ = done;
}

void ProgressMeter::Finish() {
  if (!drawn_) return;
  out_ << "\r\x1b[K" << std::flush;
  drawn_ = false;
}

TerminalProgress::TerminalProgress(const char* unit) {
  if (::isatty(STDERR_FILENO) == 1) meter_.emplace(std::cerr, ProgressMeter::Clock::now, unit);
}

void TerminalProgress::Update(uint64_t done, uint64_t total) {
  if (meter_ && total > 0) meter_->Update(done, total);
}

void TerminalProgress::Finish() {
  if (meter_) meter_->Finish();
}

}  // namespace rwd::cli
