// Parsing and validation of user input shared by the plugin and the CLI.
#include <rewind/journal/store.h>

#include <cctype>
#include <cmath>
#include <cstdlib>

namespace rwd {

Status ParseSize(const std::string& text, uint64_t* out) {
  auto bad = [&] {
    return Status::InvalidArgument("size '" + text +
                                   "' is not a size (examples: 20G, 512M, 1048576)");
  };
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '.')) {
    return bad();
  }
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(text.c_str(), &end);
  if (errno != 0 || end == text.c_str() || !std::isfinite(value) || value < 0) return bad();
  std::string suffix(end);
  uint64_t mult = 1;
  if (!suffix.empty()) {
    static const std::string units = "KMGTPE";
    size_t pos = units.find(static_cast<char>(std::toupper(static_cast<unsigned char>(suffix[0]))));
    if (pos == std::string::npos) {
      if (suffix == "b" || suffix == "B") suffix.clear();
      else return bad();
    } else {
      std::string rest = suffix.substr(1);
      if (!(rest.empty() || rest == "B" || rest == "iB" || rest == "b")) return bad();
      mult = 1ull << (10 * (pos + 1));
    }
  }
  double bytes = value * static_cast<double>(mult);
  if (bytes > 9.0e18 || std::floor(bytes) != bytes) return bad();
  *out = static_cast<uint64_t>(bytes);
  return Status::Ok();
}

namespace {

// The rules shared by checkpoint and disk names; what is "checkpoint" or
// "disk" in messages.
Status ValidateName(const char* what, const std::string& name) {
  const std::string kind = what;
  if (name.empty()) return Status::InvalidArgument(kind + " name is empty");
  if (name.size() > 128) {
    return Status::InvalidArgument(kind + " name is longer than 128 characters");
  }
  for (char c : name) {
    if (c == '/' || c == '\\') {
      return Status::InvalidArgument(kind + " name '" + name + "' contains a path separator");
    }
  }
  for (char c : name) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ||
              c == '+';
    if (!ok) {
      return Status::InvalidArgument(kind + " name '" + name +
                                     "' may only hold letters, digits and . _ + -");
    }
  }
  if (name[0] == '.' || name[0] == '-') {
    return Status::InvalidArgument(kind + " name '" + name + "' must not start with '.' or '-'");
  }
  return Status::Ok();
}

}  // namespace

Status ValidateCheckpointName(const std::string& name) { return ValidateName("checkpoint", name); }

Status ValidateDiskName(const std::string& name) { return ValidateName("disk", name); }

Disk* Store::FindDisk(const std::string& name) {
  for (size_t i = 0; i < disk_count(); i++) {
    Disk* d = disk(i);
    if (d != nullptr && d->name() == name) return d;
  }
  return nullptr;
}

Status ValidateBlockSize(uint64_t bs) {
  if (bs < kMinBlockSize || bs > kMaxBlockSize || (bs & (bs - 1)) != 0) {
    return Status::InvalidArgument("block-size " + std::to_string(bs) +
                                   " is not a power of two from 512 to 1048576");
  }
  return Status::Ok();
}

}  // namespace rwd
