// DiskModel: see the model in disk_model.h.
#include "support/disk_model.h"

#include <algorithm>
#include <cstring>
#include <map>

#include <fmt/format.h>

namespace rwd::test {

namespace {

constexpr uint64_t kPatternKey = 0x5a17c3e9b4d2f001ull;
constexpr uint64_t kPosMask = (1ull << 40) - 1;

uint64_t PatternWord(uint64_t tag, uint64_t word_index) {
  return ((tag << 40) | (word_index & kPosMask)) ^ kPatternKey;
}

uint64_t LoadLE64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// [begin, end) runs of a sector's candidate mask, e.g. "[3,5) [9,12)".
std::string Runs(const std::vector<bool>& mask, uint64_t base) {
  std::string out;
  size_t i = 0;
  while (i < mask.size()) {
    if (!mask[i]) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < mask.size() && mask[j]) j++;
    out += fmt::format("{}[{},{}]", out.empty() ? "" : " ", base + i, base + j - 1);
    i = j;
  }
  return out.empty() ? "none" : out;
}

}  // namespace

void FillPattern(uint64_t tag, uint64_t offset, uint64_t len, char* out) {
  for (uint64_t i = 0; i < len; i++) {
    uint64_t p = offset + i;
    out[i] = static_cast<char>(PatternWord(tag, p >> 3) >> (8 * (p & 7)));
  }
}

std::string DescribeSector(const char* data, uint64_t offset, uint64_t len) {
  if (std::all_of(data, data + len, [](char c) { return c == 0; })) return "zeros";
  // Runs of whole words by (tag, how far from their own place they are);
  // "?" for words no write produced (e.g. mixing two writes' bytes).
  struct Run {
    uint64_t tag;
    int64_t shift;
    uint64_t words;
  };
  std::vector<Run> runs;
  for (uint64_t p = (offset + 7) / 8 * 8; p + 8 <= offset + len; p += 8) {
    uint64_t w = LoadLE64(data + (p - offset)) ^ kPatternKey;
    uint64_t tag = w >> 40;
    int64_t shift =
        static_cast<int64_t>((w & kPosMask) * 8) - static_cast<int64_t>(p & (kPosMask * 8 + 7));
    if (tag == 0 || tag >= (1u << 24)) tag = 0, shift = 0;
    if (!runs.empty() && runs.back().tag == tag && runs.back().shift == shift) {
      runs.back().words++;
    } else {
      runs.push_back(Run{tag, shift, 1});
    }
  }
  std::string out;
  bool unknown = false;
  for (const Run& r : runs) {
    if (!out.empty()) out += " ";
    if (r.tag == 0 || (r.shift != 0 && r.words < 4)) {
      out += fmt::format("?x{}", r.words);
      unknown = true;
    } else if (r.shift != 0) {
      out += fmt::format("tag {} moved by {} bytes x{}", r.tag, -r.shift, r.words);
    } else {
      out += fmt::format("tag {}x{}", r.tag, r.words);
    }
  }
  if (unknown) {
    out += " (bytes start ";
    for (uint64_t i = 0; i < std::min<uint64_t>(len, 16); i++) {
      out += fmt::format("{:02x}", static_cast<unsigned char>(data[i]));
    }
    out += ")";
  }
  return out;
}

DiskModel::DiskModel(uint64_t size, uint64_t origin)
    : size_(size), origin_(origin), base_(size, 0), current_(size, 0) {}

void DiskModel::ApplyTo(const Op& op, char* image, uint64_t image_offset,
                        uint64_t image_len) const {
  uint64_t b = std::max(op.offset, image_offset);
  uint64_t e = std::min(op.offset + op.length, image_offset + image_len);
  if (b >= e) return;
  if (op.data.empty()) {
    std::memset(image + (b - image_offset), 0, e - b);
  } else {
    std::memcpy(image + (b - image_offset), op.data.data() + (b - op.offset), e - b);
  }
}

uint64_t DiskModel::Write(uint64_t offset, const char* data, uint64_t len, std::string label) {
  Op op{ops() + 1, offset, len, std::vector<char>(data, data + len), std::move(label)};
  ApplyTo(op, current_.data(), 0, size_);
  pending_.push_back(std::move(op));
  return ops();
}

uint64_t DiskModel::Zero(uint64_t offset, uint64_t len, std::string label) {
  Op op{ops() + 1, offset, len, {}, std::move(label)};
  ApplyTo(op, current_.data(), 0, size_);
  pending_.push_back(std::move(op));
  return ops();
}

void DiskModel::DropLast() {
  if (pending_.empty()) return;
  pending_.pop_back();
  current_ = base_;
  for (const Op& op : pending_) ApplyTo(op, current_.data(), 0, size_);
}

void DiskModel::MarkDurable() {
  base_ = current_;
  durable_ops_ += pending_.size();
  pending_.clear();
}

void DiskModel::ReadCurrent(uint64_t offset, uint64_t len, char* out) const {
  std::memcpy(out, current_.data() + offset, len);
}

void DiskModel::Reset(const char* disk) {
  base_.assign(disk, disk + size_);
  current_ = base_;
  durable_ops_ += pending_.size();  // numbers stay unique; lost ones vanish
  pending_.clear();
}

std::string DiskModel::CheckRecovered(const char* disk, uint64_t min_ops,
                                      uint64_t* recovered_ops) const {
  const uint64_t n = pending_.size();
  const uint64_t lo = min_ops > durable_ops_ ? min_ops - durable_ops_ : 0;  // in [0, n]
  if (lo > n) {
    return fmt::format("model: min_ops {} beyond the {} operations issued", min_ops, ops());
  }
  const uint64_t sectors = (size_ + kSectorSize - 1) / kSectorSize;
  // Which pending operations touch each sector, in order.
  std::map<uint64_t, std::vector<size_t>> touched;
  for (size_t i = 0; i < n; i++) {
    const Op& op = pending_[i];
    if (op.length == 0) continue;
    for (uint64_t s = op.offset / kSectorSize; s * kSectorSize < op.offset + op.length; s++) {
      touched[s].push_back(i);
    }
  }
  std::string errors;
  int nerrors = 0;
  auto error = [&](const std::string& e) {
    if (nerrors++ < 12) errors += e + "\n";
  };
  // allowed[j]: the disk may be the state after durable_ops_ + j operations.
  std::vector<bool> allowed(n + 1, false);
  for (uint64_t j = lo; j <= n; j++) allowed[j] = true;
  struct Mask {
    uint64_t sector;
    std::vector<bool> mask;
  };
  std::vector<Mask> masks;
  std::vector<char> version(kSectorSize);
  for (uint64_t s = 0; s < sectors; s++) {
    const uint64_t off = s * kSectorSize;
    const uint64_t len = std::min<uint64_t>(kSectorSize, size_ - off);
    const char* got = disk + off;
    auto it = touched.find(s);
    if (it == touched.end()) {
      if (std::memcmp(got, base_.data() + off, len) != 0) {
        error(fmt::format(
            "sector {} (offset {}): no operation since the durable point touched it, "
            "yet it holds {} instead of its durable {}",
            (origin_ + off) / kSectorSize, origin_ + off, DescribeSector(got, origin_ + off, len),
            DescribeSector(base_.data() + off, origin_ + off, len)));
      }
      continue;
    }
    // Versions: the durable one until the first operation on the sector,
    // then one after each.  visit(version, first j, end j, op or null).
    const auto& ops = it->second;
    auto walk = [&](auto&& visit) {
      std::memcpy(version.data(), base_.data() + off, len);
      size_t from = 0;
      const Op* by = nullptr;
      for (size_t k = 0; k <= ops.size(); k++) {
        size_t to = k < ops.size() ? ops[k] + 1 : n + 1;
        visit(version.data(), from, to, by);
        if (k == ops.size()) break;
        by = &pending_[ops[k]];
        ApplyTo(*by, version.data(), off, len);
        from = to;
      }
    };
    std::vector<bool> mask(n + 1, false);
    walk([&](const char* v, size_t from, size_t to, const Op*) {
      if (std::memcmp(v, got, len) == 0) {
        for (size_t j = from; j < to; j++) mask[j] = true;
      }
    });
    if (std::none_of(mask.begin(), mask.end(), [](bool b) { return b; })) {
      std::string acceptable;
      walk([&](const char* v, size_t, size_t, const Op* by) {
        acceptable += by ? fmt::format("; after op {} ({}): ", by->number, by->label) : "durable: ";
        acceptable += DescribeSector(v, origin_ + off, len);
      });
      error(
          fmt::format("sector {} (offset {}): holds {}, which is neither its durable value nor "
                      "one written later; acceptable: {}",
                      (origin_ + off) / kSectorSize, origin_ + off,
                      DescribeSector(got, origin_ + off, len), acceptable));
      continue;
    }
    bool any = false;
    for (uint64_t j = 0; j <= n; j++) {
      if (mask[j] && allowed[j]) any = true;
      allowed[j] = allowed[j] && mask[j];
    }
    if (!any && lo > 0) {
      error(
          fmt::format("sector {} (offset {}): holds {}, a state before op {}, which a listed "
                      "checkpoint covers",
                      (origin_ + off) / kSectorSize, origin_ + off,
                      DescribeSector(got, origin_ + off, len), durable_ops_ + lo));
    }
    masks.push_back(Mask{s, std::move(mask)});
  }
  if (!errors.empty()) {
    if (nerrors > 12) errors += fmt::format("... and {} more\n", nerrors - 12);
    return errors;
  }
  for (uint64_t j = n + 1; j-- > 0;) {
    if (allowed[j]) {
      *recovered_ops = durable_ops_ + j;
      return "";
    }
  }
  // Every sector is acceptable on its own but no single prefix explains
  // them all: a torn write or one that overtook an earlier one.  Report the
  // sectors that disagree with the prefix most sectors agree on.
  std::vector<uint64_t> votes(n + 1, 0);
  for (const Mask& m : masks) {
    for (uint64_t j = 0; j <= n; j++) votes[j] += m.mask[j] && j >= lo;
  }
  uint64_t best =
      static_cast<uint64_t>(std::max_element(votes.begin(), votes.end()) - votes.begin());
  std::string out = fmt::format(
      "no prefix of the history explains the disk (torn or reordered writes); durable ops {}, "
      "issued {}; most sectors fit the state after {} ops; sectors that do not (ops after which "
      "each fits):\n",
      durable_ops_, ops(), durable_ops_ + best);
  int shown = 0;
  for (const Mask& m : masks) {
    if (m.mask[best]) continue;
    if (shown++ == 12) {
      out += "...\n";
      break;
    }
    const uint64_t off = m.sector * kSectorSize;
    out += fmt::format(
        "  sector {} (offset {}): holds {}; fits {}\n", (origin_ + off) / kSectorSize,
        origin_ + off,
        DescribeSector(disk + off, origin_ + off, std::min<uint64_t>(kSectorSize, size_ - off)),
        Runs(m.mask, durable_ops_));
  }
  out += "  operations after the durable point:";
  for (const Op& op : pending_) out += fmt::format(" [{}: {}]", op.number, op.label);
  return out + "\n";
}

}  // namespace rwd::test
