// The POINT syntax (docs/architecture.md): checkpoint names,
// lsn:N, time:ISO-8601 and relative times, parsed without a store.  Kept
// apart from history.cc so that the fuzz targets (fuzz/) can link it alone.
#include <rewind/journal/store.h>

#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace rwd {

// ---------------------------------------------------------------------------
// POINT syntax

namespace {

constexpr const char* kPointHelp =
    "a POINT is a checkpoint name, lsn:N, time:YYYY-MM-DDTHH:MM:SS[.frac]Z or a relative time "
    "such as -10m";

// text as it may appear in a one-line message: control characters escaped.
std::string Printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

Status BadPoint(const std::string& text, const std::string& why) {
  return Status::InvalidArgument("bad point '" + Printable(text) + "': " + Printable(why) + " (" +
                                 kPointHelp + ")");
}

bool ParseDigits(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

// Fixed-width decimal field at s[pos..pos+n).
bool Field(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  uint64_t v = 0;
  if (!ParseDigits(s.substr(pos, n), &v)) return false;
  *out = static_cast<int>(v);
  return true;
}

bool IsLeap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

// YYYY-MM-DDTHH:MM[:SS[.frac]][Z|+HH:MM|-HH:MM|+HHMM]; no zone means UTC.
Status ParseIsoTime(const std::string& text, std::string_view s, int64_t* ns) {
  int year, mon, day, hour, min, sec = 0;
  if (!Field(s, 0, 4, &year) || s.size() < 16 || s[4] != '-' || !Field(s, 5, 2, &mon) ||
      s[7] != '-' || !Field(s, 8, 2, &day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !Field(s, 11, 2, &hour) || s[13] != ':' || !Field(s, 14, 2, &min)) {
    return BadPoint(text, "the time is not of the form YYYY-MM-DDTHH:MM:SSZ");
  }
  size_t pos = 16;
  int64_t frac_ns = 0;
  if (pos < s.size() && s[pos] == ':') {
    if (!Field(s, pos + 1, 2, &sec)) return BadPoint(text, "bad seconds");
    pos += 3;
    if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
      pos++;
      size_t digits = 0;
      int64_t scale = 100000000;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        if (digits < 9) frac_ns += (s[pos] - '0') * scale;
        scale /= 10;
        digits++;
        pos++;
      }
      if (digits == 0) return BadPoint(text, "no digits after the decimal point");
    }
  }
  int64_t offset_s = 0;
  if (pos < s.size()) {
    if (s[pos] == 'Z' || s[pos] == 'z') {
      pos++;
    } else if (s[pos] == '+' || s[pos] == '-') {
      int oh = 0, om = 0;
      const int sign = s[pos] == '-' ? -1 : 1;
      if (!Field(s, pos + 1, 2, &oh)) return BadPoint(text, "bad time zone offset");
      size_t mpos = pos + 3;
      if (mpos < s.size() && s[mpos] == ':') mpos++;
      if (!Field(s, mpos, 2, &om)) return BadPoint(text, "bad time zone offset");
      if (oh > 23 || om > 59) return BadPoint(text, "bad time zone offset");
      offset_s = sign * (oh * 3600 + om * 60);
      pos = mpos + 2;
    }
  }
  if (pos != s.size()) return BadPoint(text, "unexpected '" + std::string(s.substr(pos)) + "'");
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  // The fields may be a day off the instant (a zone offset); the instant
  // is what must lie in [1970, 2262), where nanoseconds fit an int64.
  if (year < 1969 || year > 2262 || mon < 1 || mon > 12 || day < 1 ||
      day > kDays[mon - 1] + (mon == 2 && IsLeap(year)) || hour > 23 || min > 59 || sec > 60) {
    return BadPoint(text, "no such date or time");
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec == 60 ? 59 : sec;  // a leap second reads as the second before
  const int64_t t = static_cast<int64_t>(timegm(&tm)) - offset_s;
  constexpr int64_t kEnd = 9214646400;  // 2262-01-01T00:00:00Z
  if (t < 0 || t >= kEnd) return BadPoint(text, "the time is not between 1970 and 2261 (UTC)");
  *ns = t * 1000000000LL + frac_ns;
  return Status::Ok();
}

// -10m, -1h30m, -2d, -90s, -1w.
Status ParseRelative(const std::string& text, std::string_view s, int64_t* ago_ns) {
  if (s.empty()) return BadPoint(text, "a relative time needs an amount and a unit, as in -10m");
  int64_t total_s = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') pos++;
    uint64_t n = 0;
    if (pos == start || !ParseDigits(s.substr(start, pos - start), &n) || n > 1000000000) {
      return BadPoint(text, "a relative time is an amount and a unit, as in -10m");
    }
    if (pos == s.size()) return BadPoint(text, "'" + std::string(s) + "' has no unit (s, m, h, d or w)");
    int64_t unit = 0;
    switch (s[pos]) {
      case 's': unit = 1; break;
      case 'm': unit = 60; break;
      case 'h': unit = 3600; break;
      case 'd': unit = 86400; break;
      case 'w': unit = 7 * 86400; break;
      default:
        return BadPoint(text, std::string("unknown unit '") + s[pos] + "' (s, m, h, d or w)");
    }
    pos++;
    total_s += static_cast<int64_t>(n) * unit;
    if (total_s > 100LL * 365 * 86400) return BadPoint(text, "more than a century ago");
  }
  if (total_s == 0) return BadPoint(text, "a relative time must be in the past");
  *ago_ns = total_s * 1000000000LL;
  return Status::Ok();
}

}  // namespace

Status ParsePoint(const std::string& text, ParsedPoint* out) {
  *out = ParsedPoint();
  if (text.empty()) return BadPoint(text, "it is empty");
  if (text.rfind("lsn:", 0) == 0) {
    out->kind = ParsedPoint::Kind::kLsn;
    if (!ParseDigits(std::string_view(text).substr(4), &out->lsn)) {
      return BadPoint(text, "lsn: takes a decimal number");
    }
    return Status::Ok();
  }
  if (text.rfind("time:", 0) == 0) {
    out->kind = ParsedPoint::Kind::kTime;
    return ParseIsoTime(text, std::string_view(text).substr(5), &out->time_ns);
  }
  if (text[0] == '-') {
    out->kind = ParsedPoint::Kind::kRelative;
    return ParseRelative(text, std::string_view(text).substr(1), &out->ago_ns);
  }
  Status s = ValidateCheckpointName(text);
  if (!s.ok()) return BadPoint(text, s.message());
  out->kind = ParsedPoint::Kind::kCheckpoint;
  out->name = text;
  return Status::Ok();
}

}  // namespace rwd
