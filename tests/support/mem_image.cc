// MemImage and MemImageFactory: see the model in mem_image.h.
#include "support/mem_image.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

namespace rwd::test {

namespace {
constexpr uint64_t kSector = 512;
}  // namespace

// The handle a store holds; all state lives in the shared MemImage.
class MemImageFile final : public ImageFile {
 public:
  explicit MemImageFile(std::shared_ptr<MemImage> img) : img_(std::move(img)) {
    std::lock_guard<std::mutex> l(img_->mu_);
    img_->handles_++;
  }
  ~MemImageFile() override {
    std::lock_guard<std::mutex> l(img_->mu_);
    img_->handles_--;
  }
  uint64_t Size() const override { return img_->size(); }
  Status Read(uint64_t offset, uint32_t len, void* buf) override {
    return img_->Read(offset, len, buf);
  }
  Status WriteV(const std::vector<IoVec>& extents) override { return img_->WriteV(extents); }
  Status Zero(uint64_t offset, uint64_t len, bool punch_hole) override {
    return img_->Zero(offset, len, punch_hole);
  }
  Status Sync() override { return img_->Sync(); }
  Status Extents(uint64_t offset, uint64_t len,
                 const std::function<void(uint64_t, uint64_t, bool)>& fn) override {
    return img_->Extents(offset, len, fn);
  }

 private:
  std::shared_ptr<MemImage> img_;
};

MemImage::MemImage(std::string path, uint64_t size)
    : path_(std::move(path)),
      live_(size, 0),
      durable_(size, 0),
      allocated_((size + kPage - 1) / kPage, false) {}

uint64_t MemImage::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return live_.size();
}

void MemImage::Resize(uint64_t size) {
  std::lock_guard<std::mutex> l(mu_);
  live_.resize(size, 0);
  durable_.resize(size, 0);
  allocated_.resize((size + kPage - 1) / kPage, false);
  pending_.clear();
}

void MemImage::SetActive(bool active) {
  std::lock_guard<std::mutex> l(mu_);
  active_ = active;
}

Status MemImage::CheckLocked(Op op, const char* what) {
  if (!active_ && op != Op::kRead) {
    return Status::IOError(std::string("MemImage: power is off: ") + what + " " + path_);
  }
  if (op != Op::kRead && counter_ && !counter_->Use(std::string("image ") + what)) {
    active_ = false;  // the power went just before this operation
    return Status::IOError(std::string("MemImage: power is off: ") + what + " " + path_);
  }
  auto it = inject_.find(op);
  if (it == inject_.end()) return Status::Ok();
  Injected& in = it->second;
  if (in.seen++ < in.skip) return Status::Ok();
  if (in.times == 0) return Status::Ok();
  if (in.times > 0) in.times--;
  injected_++;
  return Status::FromErrno(in.err, std::string("MemImage: injected error: ") + what + " " + path_);
}

void MemImage::InjectError(Op op, int err, uint64_t skip, int64_t times) {
  std::lock_guard<std::mutex> l(mu_);
  inject_[op] = Injected{err, skip, times, 0};
}

void MemImage::SetIoCounter(std::shared_ptr<IoCounter> counter) {
  std::lock_guard<std::mutex> l(mu_);
  counter_ = std::move(counter);
}

void MemImage::ClearErrors() {
  std::lock_guard<std::mutex> l(mu_);
  inject_.clear();
}

uint64_t MemImage::injected_failures() const {
  std::lock_guard<std::mutex> l(mu_);
  return injected_;
}

Status MemImage::Read(uint64_t offset, uint32_t len, void* buf) {
  std::lock_guard<std::mutex> l(mu_);
  Status s = CheckLocked(Op::kRead, "read");
  if (!s.ok()) return s;
  char* out = static_cast<char*>(buf);
  uint64_t end = offset + len;
  uint64_t have = offset < live_.size() ? std::min<uint64_t>(end, live_.size()) - offset : 0;
  if (have > 0) std::memcpy(out, live_.data() + offset, have);
  std::memset(out + have, 0, len - have);  // beyond EOF reads zeros
  return Status::Ok();
}

void MemImage::MarkLocked(uint64_t offset, uint64_t length, bool allocated) {
  if (length == 0) return;
  if (allocated) {
    for (uint64_t p = offset / kPage; p * kPage < offset + length; p++) allocated_[p] = true;
    return;
  }
  // Only whole pages become holes.
  for (uint64_t p = (offset + kPage - 1) / kPage; (p + 1) * kPage <= offset + length; p++) {
    allocated_[p] = false;
  }
}

Status MemImage::WriteV(const std::vector<IoVec>& extents) {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const IoVec& v : extents) {
    if (v.offset + v.length > live_.size()) {
      violations_ += "WriteV beyond the end: [" + std::to_string(v.offset) + ", +" +
                     std::to_string(v.length) + ") of " + std::to_string(live_.size()) + "\n";
      return Status::IOError("MemImage: write beyond the end of " + path_);
    }
    ranges.emplace_back(v.offset, v.offset + v.length);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); i++) {
    if (ranges[i].first < ranges[i - 1].second) {
      violations_ += "WriteV with overlapping extents at " + std::to_string(ranges[i].first) + "\n";
    }
  }
  Status s = CheckLocked(Op::kWrite, "write");
  if (!s.ok()) return s;
  for (const IoVec& v : extents) {
    if (v.length == 0) continue;
    const char* p = static_cast<const char*>(v.data);
    std::memcpy(live_.data() + v.offset, p, v.length);
    pending_.push_back(Pending{v.offset, v.length, std::vector<char>(p, p + v.length), false});
    MarkLocked(v.offset, v.length, true);
  }
  return Status::Ok();
}

Status MemImage::Zero(uint64_t offset, uint64_t len, bool punch_hole) {
  std::lock_guard<std::mutex> l(mu_);
  if (offset + len > live_.size()) {
    violations_ += "Zero beyond the end: [" + std::to_string(offset) + ", +" + std::to_string(len) +
                   ") of " + std::to_string(live_.size()) + "\n";
    return Status::IOError("MemImage: zero beyond the end of " + path_);
  }
  Status s = CheckLocked(Op::kWrite, "zero");
  if (!s.ok()) return s;
  if (len == 0) return Status::Ok();
  std::memset(live_.data() + offset, 0, len);
  pending_.push_back(Pending{offset, len, {}, punch_hole});
  MarkLocked(offset, len, !punch_hole);
  return Status::Ok();
}

Status MemImage::Sync() {
  std::lock_guard<std::mutex> l(mu_);
  Status s = CheckLocked(Op::kSync, "sync");
  if (!s.ok()) return s;
  durable_ = live_;
  pending_.clear();
  syncs_++;
  return Status::Ok();
}

Status MemImage::Extents(uint64_t offset, uint64_t len,
                         const std::function<void(uint64_t, uint64_t, bool)>& fn) {
  std::vector<std::tuple<uint64_t, uint64_t, bool>> regions;
  {
    std::lock_guard<std::mutex> l(mu_);
    Status s = CheckLocked(Op::kRead, "extents");
    if (!s.ok()) return s;
    uint64_t end = offset + len;
    uint64_t pos = offset;
    while (pos < end) {
      uint64_t page = pos / kPage;
      bool data = page >= allocated_.size() ? false : static_cast<bool>(allocated_[page]);
      uint64_t next = std::min(end, (page + 1) * kPage);
      if (!regions.empty() && std::get<2>(regions.back()) == data) {
        std::get<1>(regions.back()) += next - pos;
      } else {
        regions.emplace_back(pos, next - pos, data);
      }
      pos = next;
    }
  }
  for (const auto& [o, n, d] : regions) fn(o, n, d);
  return Status::Ok();
}

void MemImage::ApplyLocked(std::vector<char>* image, const Pending& p, uint64_t from,
                           uint64_t to) const {
  if (p.data.empty()) {
    std::memset(image->data() + from, 0, to - from);
  } else {
    std::memcpy(image->data() + from, p.data.data() + (from - p.offset), to - from);
  }
}

void MemImage::SimulatePowerCut(std::mt19937_64& rng) {
  std::lock_guard<std::mutex> l(mu_);
  const int mode = static_cast<int>(rng() % 3);  // 0 nothing, 1 all, 2 a mix
  for (const Pending& p : pending_) {
    const uint64_t end = p.offset + p.length;
    int fate = mode == 2 ? static_cast<int>(rng() % 4) : mode;  // 0 lost, 1 whole, 2-3 torn
    if (fate == 0) continue;
    if (fate == 1) {
      ApplyLocked(&durable_, p, p.offset, end);
      continue;
    }
    for (uint64_t s = p.offset; s < end;) {
      uint64_t next = std::min(end, (s / kSector + 1) * kSector);
      if (rng() % 2) ApplyLocked(&durable_, p, s, next);
      s = next;
    }
  }
  pending_.clear();
  live_ = durable_;
  // A page that holds data after the cut cannot be a hole.
  for (uint64_t page = 0; page < allocated_.size(); page++) {
    if (allocated_[page]) continue;
    uint64_t b = page * kPage, e = std::min<uint64_t>(b + kPage, live_.size());
    if (std::any_of(live_.begin() + static_cast<long>(b), live_.begin() + static_cast<long>(e),
                    [](char c) { return c != 0; })) {
      allocated_[page] = true;
    }
  }
}

void MemImage::DropUnsynced() {
  std::lock_guard<std::mutex> l(mu_);
  pending_.clear();
  live_ = durable_;
}

void MemImage::KeepUnsynced() {
  std::lock_guard<std::mutex> l(mu_);
  pending_.clear();
  durable_ = live_;
}

std::vector<char> MemImage::Live() const {
  std::lock_guard<std::mutex> l(mu_);
  return live_;
}

std::vector<char> MemImage::Durable() const {
  std::lock_guard<std::mutex> l(mu_);
  return durable_;
}

size_t MemImage::unsynced_ops() const {
  std::lock_guard<std::mutex> l(mu_);
  return pending_.size();
}

uint64_t MemImage::syncs() const {
  std::lock_guard<std::mutex> l(mu_);
  return syncs_;
}

int MemImage::open_handles() const {
  std::lock_guard<std::mutex> l(mu_);
  return handles_;
}

std::string MemImage::violations() const {
  std::lock_guard<std::mutex> l(mu_);
  return violations_;
}

// ---- MemImageFactory ----

Status MemImageFactory::Open(const std::string& path, bool create, uint64_t size,
                             std::unique_ptr<ImageFile>* out) {
  std::shared_ptr<MemImage> img;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = images_.find(path);
    if (it == images_.end()) {
      if (!create) return Status::NotFound("MemImage: no image at " + path);
      img = std::make_shared<MemImage>(path, size);
      img->SetIoCounter(counter_);
      images_[path] = img;
    } else {
      img = it->second;
      if (create && size != 0 && img->size() != size) img->Resize(size);
    }
  }
  *out = std::make_unique<MemImageFile>(std::move(img));
  return Status::Ok();
}

bool MemImageFactory::Exists(const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  return images_.count(path) != 0;
}

std::shared_ptr<MemImage> MemImageFactory::Get(const std::string& path) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = images_.find(path);
  return it == images_.end() ? nullptr : it->second;
}

std::shared_ptr<MemImage> MemImageFactory::Only() const {
  std::lock_guard<std::mutex> l(mu_);
  return images_.size() == 1 ? images_.begin()->second : nullptr;
}

void MemImageFactory::SetActive(bool active) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [path, img] : images_) img->SetActive(active);
}

void MemImageFactory::SetIoCounter(std::shared_ptr<IoCounter> counter) {
  std::lock_guard<std::mutex> l(mu_);
  counter_ = counter;
  for (auto& [path, img] : images_) img->SetIoCounter(counter);
}

void MemImageFactory::PutCopy(const std::string& path, const MemImage& from) {
  auto img = std::make_shared<MemImage>(path, 0);
  {
    std::lock_guard<std::mutex> f(from.mu_);
    std::lock_guard<std::mutex> l(img->mu_);
    img->live_ = from.durable_;
    img->durable_ = from.durable_;
    img->allocated_ = from.allocated_;
  }
  std::lock_guard<std::mutex> l(mu_);
  img->SetIoCounter(counter_);
  images_[path] = img;
}

void MemImageFactory::SimulatePowerCut(std::mt19937_64& rng) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [path, img] : images_) img->SimulatePowerCut(rng);
}

}  // namespace rwd::test
