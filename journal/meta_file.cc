#include "meta_file.h"

#include "format.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

namespace rwd {

namespace {

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

bool ParseU64(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;  // 20 digits above 2^64-1
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

// The disk lines of a version-3 file: disks=N, then disk.<i>.name, .size and
// .image for i < N; the first disk's size and image are also size= and
// image=.
Status ReadDisks(const std::string& path, std::map<std::string, std::string>& kv, MetaFile* out) {
  uint64_t n = 0;
  if (!ParseU64(kv["disks"], &n) || n == 0) return Status::Corruption(path + " lacks a required field");
  if (n > format::kMaxDisks) return Status::Corruption(path + " has a field out of range");
  for (uint64_t i = 0; i < n; i++) {
    const std::string prefix = "disk." + std::to_string(i) + ".";
    MetaDisk d;
    d.name = kv[prefix + "name"];
    d.image = kv[prefix + "image"];
    if (d.name.empty() || d.image.empty() || !ParseU64(kv[prefix + "size"], &d.size)) {
      return Status::Corruption(path + " lacks a required field");
    }
    out->disks.push_back(std::move(d));
  }
  if (out->disks[0].size != out->size || out->disks[0].image != out->image) {
    return Status::Corruption(path + " has disk fields that disagree with size= and image=");
  }
  return Status::Ok();
}

}  // namespace

std::string MetaFilePath(const std::string& dir) { return dir + "/" + format::kMetaFileName; }

Status ReadMetaFile(const std::string& dir, MetaFile* out) {
  std::string path = MetaFilePath(dir);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return Status::NotFound(dir + " is not a rewind store (no " +
                                                 format::kMetaFileName + ")");
    return Status::FromErrno(errno, "open " + path);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseMetaText(path, ss.str(), out);
}

Status ParseMetaText(const std::string& path, const std::string& text, MetaFile* out) {
  size_t pos = text.rfind("checksum=");
  if (pos == std::string::npos || (pos != 0 && text[pos - 1] != '\n')) {
    return Status::Corruption(path + " has no checksum line");
  }
  std::string want = text.substr(pos + 9);
  while (!want.empty() && (want.back() == '\n' || want.back() == '\r')) want.pop_back();
  if (Hex64(XXH3_64bits(text.data(), pos)) != want) {
    return Status::Corruption(path + " fails its checksum");
  }
  std::map<std::string, std::string> kv;
  std::istringstream lines(text.substr(0, pos));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) return Status::Corruption(path + " has a malformed line");
    kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  uint64_t version = 0, size = 0, bs = 0, created = 0;
  std::string created_text = kv["created_ns"];
  bool negative = !created_text.empty() && created_text[0] == '-';
  if (negative) created_text.erase(0, 1);
  if (!ParseU64(kv["format_version"], &version) || !ParseU64(kv["size"], &size) ||
      !ParseU64(kv["block_size"], &bs) || !ParseU64(created_text, &created)) {
    return Status::Corruption(path + " lacks a required field");
  }
  if (version > UINT32_MAX || bs > UINT32_MAX || created > INT64_MAX) {
    return Status::Corruption(path + " has a field out of range");
  }
  if (negative) created = static_cast<uint64_t>(-static_cast<int64_t>(created));
  out->format_version = static_cast<uint32_t>(version);
  out->size = size;
  out->block_size = static_cast<uint32_t>(bs);
  out->created_ns = static_cast<int64_t>(created);
  out->image = kv["image"];
  out->uuid = kv["uuid"];
  out->disks.clear();
  if (out->format_version == format::kFormatVersionDisks) {
    return ReadDisks(path, kv, out);
  }
  out->disks.push_back(MetaDisk{"", out->size, out->image});
  return Status::Ok();
}

std::string DisksText(const MetaFile& m) {
  std::ostringstream o;
  for (size_t i = 0; i < m.disks.size(); i++) {
    o << "disk." << i << ".name=" << m.disks[i].name << "\n"
      << "disk." << i << ".size=" << m.disks[i].size << "\n"
      << "disk." << i << ".image=" << m.disks[i].image << "\n";
  }
  return o.str();
}

Status SyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + dir);
  int r = fsync(fd);
  int err = errno;
  close(fd);
  if (r != 0) return Status::FromErrno(err, "fsync " + dir);
  return Status::Ok();
}

std::string MetaFileText(const MetaFile& m) {
  std::ostringstream o;
  o << "# rewind store metadata: written once at creation, do not edit\n"
    << "format_version=" << m.format_version << "\n"
    << "size=" << m.size << "\n"
    << "block_size=" << m.block_size << "\n"
    << "image=" << m.image << "\n"
    << "created_ns=" << m.created_ns << "\n"
    << "uuid=" << m.uuid << "\n";
  if (m.format_version == format::kFormatVersionDisks) {
    o << "disks=" << m.disks.size() << "\n" << DisksText(m);
  }
  std::string text = o.str();
  text += "checksum=" + Hex64(XXH3_64bits(text.data(), text.size())) + "\n";
  return text;
}

Status WriteMetaFile(const std::string& dir, const MetaFile& m) {
  const std::string text = MetaFileText(m);
  std::string path = MetaFilePath(dir);
  std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t r = write(fd, p, left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      close(fd);
      unlink(tmp.c_str());
      return Status::FromErrno(err, "write " + tmp);
    }
    p += r;
    left -= static_cast<size_t>(r);
  }
  if (fsync(fd) != 0) {
    int err = errno;
    close(fd);
    unlink(tmp.c_str());
    return Status::FromErrno(err, "fsync " + tmp);
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return Status::FromErrno(err, "rename " + tmp);
  }
  return SyncDir(dir);
}

}  // namespace rwd
