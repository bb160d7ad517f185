// Status: the error type of the rewind libraries.
//
// Library code reports failure by value, never by exception.  A Status
// carries a code (which maps onto an errno for the NBD boundary) and a
// one-line, user-facing message.
#pragma once

#include <cerrno>
#include <string>
#include <utility>

// The project's C++ namespace is rwd, not rewind: rewind(3) is a C library
// function declared by <stdio.h>, and a namespace of that name does not
// compile wherever <cstdio> is included.
namespace rwd {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,  // bad parameter or input from the user
    kNotFound,         // no such store, checkpoint or point
    kAlreadyExists,    // store or checkpoint name already taken
    kIOError,          // the OS or RocksDB failed an I/O
    kNoSpace,          // ENOSPC
    kCorruption,       // a checksum or invariant does not hold
    kNotSupported,     // e.g. a store of another format version
    kBusy,             // the store is open in another process
    kReadOnly,         // a write was refused (failed fsync, read-only store)
    kAborted,          // shut down while the request waited
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
  static Status IOError(std::string m, int err = EIO) { return {Code::kIOError, std::move(m), err}; }
  static Status NoSpace(std::string m) { return {Code::kNoSpace, std::move(m), ENOSPC}; }
  static Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
  static Status NotSupported(std::string m) { return {Code::kNotSupported, std::move(m)}; }
  static Status Busy(std::string m) { return {Code::kBusy, std::move(m)}; }
  static Status ReadOnly(std::string m) { return {Code::kReadOnly, std::move(m)}; }
  static Status Aborted(std::string m) { return {Code::kAborted, std::move(m)}; }
  // An I/O failure from a syscall's errno (ENOSPC becomes kNoSpace).
  static Status FromErrno(int err, const std::string& what);
  // The same status with "prefix: " before its message.
  Status WithPrefix(const std::string& prefix) const {
    return Status(code_, prefix + ": " + message_, errno_);
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // The errno an NBD client should see for this status.
  int ToErrno() const;
  // "message" for errors, "OK" otherwise.
  std::string ToString() const { return ok() ? "OK" : message_; }
  // A short stable name of the code ("invalid-argument", ...), for JSON.
  const char* CodeName() const;

 private:
  Status(Code c, std::string m, int err = 0) : code_(c), message_(std::move(m)), errno_(err) {}
  Code code_ = Code::kOk;
  std::string message_;
  int errno_ = 0;
};

}  // namespace rwd
