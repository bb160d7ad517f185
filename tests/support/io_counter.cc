// IoCounter: see io_counter.h.
#include "support/io_counter.h"

namespace rwd::test {

bool IoCounter::Use(const std::string& label) {
  std::lock_guard<std::mutex> l(mu_);
  if (cut_) return false;
  ops_++;
  if (limit_ != 0 && ops_ >= limit_) {
    cut_ = true;
    cut_label_ = label;
    return false;
  }
  tally_[label]++;
  return true;
}

void IoCounter::CutAt(uint64_t n) {
  std::lock_guard<std::mutex> l(mu_);
  limit_ = n;
  ops_ = 0;
  cut_ = false;
  cut_label_.clear();
  tally_.clear();
}

uint64_t IoCounter::ops() const {
  std::lock_guard<std::mutex> l(mu_);
  return ops_;
}

bool IoCounter::cut() const {
  std::lock_guard<std::mutex> l(mu_);
  return cut_;
}

std::string IoCounter::cut_label() const {
  std::lock_guard<std::mutex> l(mu_);
  return cut_label_;
}

std::map<std::string, uint64_t> IoCounter::tally() const {
  std::lock_guard<std::mutex> l(mu_);
  return tally_;
}

std::string IoCounter::KindOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  auto ends = [&](const char* s) { return base.ends_with(s); };
  if (ends(".log")) return "WAL";
  if (ends(".sst")) return "SST";
  if (ends(".vlog")) return "payload log";
  if (base.starts_with("MANIFEST")) return "MANIFEST";
  if (base.starts_with("CURRENT")) return "CURRENT";
  if (base.starts_with("OPTIONS")) return "OPTIONS";
  if (base.starts_with("IDENTITY")) return "IDENTITY";
  if (base == "LOCK") return "LOCK";
  if (base == "LOG" || base.starts_with("LOG.old")) return "info log";
  if (ends(".dbtmp")) return "temp file";
  if (base.find('.') == std::string::npos) return "directory";
  return "other";
}

}  // namespace rwd::test
