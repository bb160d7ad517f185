#include "command.h"

#include <rewind/journal/store.h>

#include <filesystem>
#include <iostream>
#include <system_error>

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

void PrintJson(const nlohmann::json& j) {
  std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

}  // namespace rwd::cli
