// The CLI's progress bar: its line, and how often it is redrawn.
#include <algorithm>
#include <catch2/catch.hpp>
#include <sstream>

#include "human.h"

namespace rwd::cli {
namespace {

TEST_CASE("ProgressLine shows percent, a bar, bytes and the rate", "[cli]") {
  CHECK(ProgressLine(0, 1ull << 30, -1) == "  0% [..............................] 0 B / 1 GiB");
  CHECK(ProgressLine(512ull << 20, 1ull << 30, 100 << 20) ==
        " 50% [###############...............] 512 MiB / 1 GiB, 100 MiB/s");
  CHECK(ProgressLine(1ull << 30, 1ull << 30, 1.5 * (1 << 30)) ==
        "100% [##############################] 1 GiB / 1 GiB, 1.5 GiB/s");
  CHECK(ProgressLine(5, 0, -1) == "100% [##############################] 0 B / 0 B");
}

TEST_CASE("ProgressMeter redraws at most every 100 ms, and always at the end", "[cli]") {
  using namespace std::chrono_literals;
  ProgressMeter::Clock::time_point now{};
  std::ostringstream out;
  ProgressMeter meter(out, [&] { return now; });
  auto draws = [&] {
    const std::string text = out.str();
    return std::count(text.begin(), text.end(), '\r');
  };

  meter.Update(1, 100);  // the first update is drawn
  CHECK(draws() == 1);
  now += 50ms;
  meter.Update(2, 100);
  CHECK(draws() == 1);
  now += 60ms;
  meter.Update(3, 100);
  CHECK(draws() == 2);
  now += 10ms;
  meter.Update(100, 100);  // the last one is drawn at once
  CHECK(draws() == 3);
  CHECK(out.str().find("100% [") != std::string::npos);
  meter.Finish();
  const std::string text = out.str();
  CHECK(text.substr(text.size() - 4) == "\r\x1b[K");
  meter.Finish();  // nothing more to erase
  CHECK(draws() == 4);
}

}  // namespace
}  // namespace rwd::cli
