// Named fault points: places on the write, flush, checkpoint and recovery
// paths where a test can kill the process (as kill -9 would) to check that
// recovery keeps every promise.
//
// Armed from the environment: REWIND_CRASH_AT=NAME[:N] makes the Nth hit
// (default the first) of the point NAME send SIGKILL to the process.
// Tests in the same process can arm points with SetFaultHook.
#pragma once

#include <functional>
#include <string_view>
#include <vector>

namespace rwd {

// Called at each named point; cheap when nothing is armed.
void FaultPoint(std::string_view name);

// In-process hook (tests): called with each point's name; nullptr clears.
void SetFaultHook(std::function<void(std::string_view)> hook);

// Every fault point name used by the library, for tests that iterate them.
const std::vector<std::string_view>& AllFaultPoints();

}  // namespace rwd
