// The stores of a VM, through their plugins' control sockets: what the
// whole-VM commands (vm.cc) and the supervisor (supervise.cc) share.
#pragma once

#include <rewind/journal/status.h>
#include <rewind/journal/store.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace rwd::vm::detail {

// One control request to the plugin serving dir; *result is its result.
// NotFound, saying so, when no plugin serves dir; other errors name dir.
[[nodiscard]] Status Call(const std::string& dir, const nlohmann::json& request,
                          nlohmann::json* result, std::chrono::milliseconds timeout);
// The store's checkpoints, oldest first; with_pending: the pending too.
[[nodiscard]] Status ListCheckpoints(const std::string& dir, bool with_pending,
                                     std::vector<CheckpointInfo>* out,
                                     std::chrono::milliseconds timeout);
// "20261201T101500Z" for a time in nanoseconds since the epoch: the UTC
// part of the names vm-..., sv-... and sv-fault-....
std::string UtcStamp(int64_t ns);

// dirs made absolute and normal: each must hold a store, none twice.
[[nodiscard]] Status CheckDirs(const std::vector<std::string>& dirs, std::vector<std::string>* abs);

}  // namespace rwd::vm::detail
