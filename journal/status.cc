#include <rewind/journal/status.h>

#include <cstring>

namespace rwd {

Status Status::FromErrno(int err, const std::string& what) {
  std::string m = what + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) return NoSpace(m);
  return IOError(m, err);
}

int Status::ToErrno() const {
  switch (code_) {
    case Code::kOk: return 0;
    case Code::kInvalidArgument: return EINVAL;
    case Code::kNotFound: return ENOENT;
    case Code::kAlreadyExists: return EEXIST;
    case Code::kIOError: return errno_ != 0 ? errno_ : EIO;
    case Code::kNoSpace: return ENOSPC;
    case Code::kCorruption: return EIO;
    case Code::kNotSupported: return ENOTSUP;
    case Code::kBusy: return EBUSY;
    case Code::kReadOnly: return EROFS;
    case Code::kAborted: return ESHUTDOWN;
  }
  return EIO;
}

const char* Status::CodeName() const {
  switch (code_) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid-argument";
    case Code::kNotFound: return "not-found";
    case Code::kAlreadyExists: return "already-exists";
    case Code::kIOError: return "io-error";
    case Code::kNoSpace: return "no-space";
    case Code::kCorruption: return "corruption";
    case Code::kNotSupported: return "not-supported";
    case Code::kBusy: return "busy";
    case Code::kReadOnly: return "read-only";
    case Code::kAborted: return "aborted";
  }
  return "io-error";
}

}  // namespace rwd
