// SIGINT and SIGTERM turned into a flag, for work that can stop cleanly
// (restore, verify): its progress callback looks at Interrupted() and
// returns false, the store cleans up, and the command exits 1 saying so.
#pragma once

#include <csignal>

namespace rwd::cli {

// While alive, SIGINT and SIGTERM set the flag that Interrupted() reads
// instead of killing the process (the flag is cleared when it is made).
// Installed without SA_RESTART: a wait for the plugin's answer returns
// EINTR and looks at the flag.  One at a time.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// Whether SIGINT or SIGTERM arrived while an InterruptGuard was alive.
bool Interrupted();

}  // namespace rwd::cli
