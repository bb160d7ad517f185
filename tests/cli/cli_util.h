// Helpers of the CLI tests: running the built `rewind` and reading its output.
#pragma once

#include <string>
#include <vector>

#include "support/proc_util.h"

namespace rwd::test {

// Runs the built rewind binary with args.
ProcResult Rewind(const std::vector<std::string>& args);

// The value of "key:" in the key/value block of `rewind info`, or "<absent>".
std::string ValueOf(const std::string& text, const std::string& key);

// The checkpoint names of `rewind list --json` output, in order.
std::vector<std::string> NamesOf(const std::string& list_json);

// Checks (with Catch2) that r failed with exactly one line on stderr of the
// form "rewind: SUB: message", or "rewind: message" when sub is empty.
void CheckOneLineError(const ProcResult& r, const std::string& sub);

// Leaves a Unix socket file at path that nothing listens on, as a plugin
// killed with SIGKILL does.
void MakeStaleSocket(const std::string& path);

}  // namespace rwd::test
