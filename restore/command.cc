#include "command.h"

#include <fmt/format.h>

#include <rewind/journal/store.h>

#include <filesystem>
#include <iostream>
#include <system_error>

#include "human.h"

namespace rwd::cli {

CLI::Option* AddDirArgument(CLI::App* app, std::string* dir) {
  return app->add_option("DIR", *dir, "the store directory")->required()->type_name("");
}

CLI::Option* AddJsonFlag(CLI::App* app, bool* json) {
  return app->add_flag("--json", *json,
                       "print JSON (the control protocol's objects) instead of text");
}

CLI::Validator SizeValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t bytes = 0;
        Status s = ParseSize(text, &bytes);
        if (!s.ok()) return s.message();
        if (bytes == 0) return "size '" + text + "' is zero";
        text = std::to_string(bytes);
        return "";
      },
      "", "SIZE");
}

CLI::Validator BlockSizeValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t bytes = 0;
        Status s = ParseSize(text, &bytes);
        if (s.ok()) s = ValidateBlockSize(bytes);
        if (!s.ok()) return s.message();
        text = std::to_string(bytes);
        return "";
      },
      "", "N");
}

CLI::Validator ImageValidator() {
  return CLI::Validator(
      [](std::string& path) -> std::string {
        std::error_code ec;
        auto st = std::filesystem::status(path, ec);
        if (!std::filesystem::exists(st)) return "image '" + path + "' does not exist";
        if (std::filesystem::is_directory(st)) return "image '" + path + "' is a directory";
        return "";
      },
      "", "IMAGE");
}

CLI::Validator CheckpointNameValidator() {
  return CLI::Validator(
      [](std::string& name) -> std::string {
        Status s = ValidateCheckpointName(name);
        return s.ok() ? "" : s.message();
      },
      "", "NAME");
}

CLI::Validator PointValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        ParsedPoint point;
        Status s = ParsePoint(text, &point);
        return s.ok() ? "" : s.message();
      },
      "", "POINT");
}

Status ParseDuration(const std::string& text, int64_t* ns) {
  // The amounts of a relative POINT ("-10m") are the same syntax.
  ParsedPoint point;
  if (!text.empty() && text[0] >= '0' && text[0] <= '9' && ParsePoint("-" + text, &point).ok()) {
    *ns = point.ago_ns;
    return Status::Ok();
  }
  return Status::InvalidArgument(
      fmt::format("bad duration '{}': an amount and a unit (s, m, h, d or w), as in 24h, 7d, 90m "
                  "or 1h30m; not zero, at most a century",
                  text));
}

CLI::Validator DurationValidator() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        int64_t ns = 0;
        Status s = ParseDuration(text, &ns);
        if (!s.ok()) return s.message();
        text = std::to_string(ns);
        return "";
      },
      "", "DURATION");
}

const char* const kPointHelp =
    R"(POINT is one of:
  NAME                       a checkpoint ('rewind list' shows them)
  lsn:N                      right after write N (lsn:0: the disk as created)
  time:2026-11-23T10:15:00Z  the last write at or before that instant (UTC;
                             fractions and offsets such as +01:00 allowed)
  -10m                       that long ago; units s, m, h, d, w, as in -1h30m)";

std::string DescribePoint(const PointInfo& point) {
  if (point.checkpoint.empty())
    return fmt::format("lsn {} ({})", point.lsn, HumanTime(point.time_ns));
  return fmt::format("lsn {} (checkpoint {}, {})", point.lsn, point.checkpoint,
                     HumanTime(point.time_ns));
}

void PrintJson(const nlohmann::json& j) {
  std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

}  // namespace rwd::cli
