// libFuzzer target: the POINT parser (rwd::ParsePoint, journal/point.cc) and
// the other parsers of user text that export names and plugin parameters go
// through (ValidateDiskName, ParseSize).
//
// Invariants beyond "no crash, no undefined behaviour":
//   - a refusal is InvalidArgument with a one-line message;
//   - an accepted POINT never holds '@' (the plugin splits DISK@POINT at the
//     first '@') and re-serializes: its canonical spelling parses to the
//     same point (lsn:N, time:RFC 3339 in UTC with nine fractional digits,
//     -<w>w<d>d<h>h<m>m<s>s, or the checkpoint name itself);
//   - an accepted time lies in [1970, 2262), where nanoseconds fit an int64;
//   - an accepted size re-parses from its decimal spelling.
#include "fuzz_check.h"

#include <rewind/journal/store.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace {

using rwd::ParsedPoint;
using rwd::Status;
using rwd::fuzz::OneLine;

constexpr int64_t kNsPerSec = 1000000000;

std::string CanonicalTime(int64_t ns) {
  const time_t secs = static_cast<time_t>(ns / kNsPerSec);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "time:%04d-%02d-%02dT%02d:%02d:%02d.%09" PRId64 "Z",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                ns % kNsPerSec);
  return buf;
}

std::string CanonicalRelative(int64_t ago_ns) {
  int64_t s = ago_ns / kNsPerSec;
  std::string out = "-";
  const struct {
    int64_t secs;
    char unit;
  } kUnits[] = {{7 * 86400, 'w'}, {86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
  for (const auto& u : kUnits) {
    if (s >= u.secs) {
      out += std::to_string(s / u.secs) + u.unit;
      s %= u.secs;
    }
  }
  return out;
}

void CheckRefusal(const Status& s) {
  FUZZ_CHECK(s.code() == Status::Code::kInvalidArgument);
  FUZZ_CHECK(OneLine(s.message()));
}

void CheckPoint(const std::string& text) {
  ParsedPoint p;
  Status s = rwd::ParsePoint(text, &p);
  if (!s.ok()) {
    CheckRefusal(s);
    return;
  }
  FUZZ_CHECK(text.find('@') == std::string::npos);
  std::string canonical;
  switch (p.kind) {
    case ParsedPoint::Kind::kCheckpoint:
      FUZZ_CHECK(p.name == text);
      FUZZ_CHECK(rwd::ValidateCheckpointName(p.name).ok());
      canonical = p.name;
      break;
    case ParsedPoint::Kind::kLsn: canonical = "lsn:" + std::to_string(p.lsn); break;
    case ParsedPoint::Kind::kTime:
      // 2262-01-01T00:00:00Z.
      FUZZ_CHECK(p.time_ns >= 0 && p.time_ns < INT64_C(9214646400) * kNsPerSec);
      canonical = CanonicalTime(p.time_ns);
      break;
    case ParsedPoint::Kind::kRelative:
      FUZZ_CHECK(p.ago_ns > 0 && p.ago_ns % kNsPerSec == 0);
      FUZZ_CHECK(p.ago_ns <= INT64_C(100) * 365 * 86400 * kNsPerSec);
      canonical = CanonicalRelative(p.ago_ns);
      break;
  }
  ParsedPoint again;
  Status s2 = rwd::ParsePoint(canonical, &again);
  if (!s2.ok()) std::fprintf(stderr, "'%s' -> '%s': %s\n", text.c_str(), canonical.c_str(),
                             s2.ToString().c_str());
  FUZZ_CHECK(s2.ok());
  FUZZ_CHECK(again.kind == p.kind && again.name == p.name && again.lsn == p.lsn &&
             again.time_ns == p.time_ns && again.ago_ns == p.ago_ns);
}

void CheckDiskName(const std::string& text) {
  Status s = rwd::ValidateDiskName(text);
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == Status::Code::kInvalidArgument);
    return;
  }
  // A disk name is never a POINT separator or a path.
  FUZZ_CHECK(text.find_first_of("@/:") == std::string::npos);
  FUZZ_CHECK(!text.empty() && text.size() <= 128);
}

void CheckSize(const std::string& text) {
  uint64_t v = 0;
  Status s = rwd::ParseSize(text, &v);
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == Status::Code::kInvalidArgument);
    return;
  }
  uint64_t again = 0;
  FUZZ_CHECK(rwd::ParseSize(std::to_string(v), &again).ok());
  FUZZ_CHECK(again == v);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  CheckPoint(text);
  CheckDiskName(text);
  CheckSize(text);
  return 0;
}
