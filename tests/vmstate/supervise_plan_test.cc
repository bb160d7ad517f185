// The supervisor's pure parts: Daly's interval and the rollback planner
// (vmstate/include/rewind/vmstate/supervise.h).  The supervisor with a real
// guest is in supervise_guest_test.cc.
#include <rewind/vmstate/supervise.h>

#include <catch2/catch.hpp>
#include <cmath>

namespace rwd::vm {
namespace {

TEST_CASE("Daly's interval: Young's sqrt(2CM) for cheap checkpoints, M when they cost 2M",
          "[supervise]") {
  // C = 1 s, M = 1 day: sqrt(2 * 86400) = 415.7 s; Daly's correction
  // adds sqrt(C/2M)/3 of it and subtracts C.
  const double young = std::sqrt(2.0 * 1 * 86400);
  const double daly = DalyInterval(1, 86400);
  CHECK(daly == Approx(young * (1 + std::sqrt(1 / 172800.0) / 3 + 1 / 172800.0 / 9) - 1));
  CHECK(daly > young - 1);
  CHECK(daly < young + 1);
  // Daly's own example scale: C = 5 min, M = 24 h.
  CHECK(DalyInterval(300, 86400) == Approx(7200.0 * (1 + std::sqrt(300 / 172800.0) / 3 +
                                                            300 / 172800.0 / 9) -
                                                  300));
  // Costlier checkpoints, longer intervals; more faults, shorter ones.
  CHECK(DalyInterval(10, 86400) > DalyInterval(1, 86400));
  CHECK(DalyInterval(1, 3600) < DalyInterval(1, 86400));
  // C >= 2M: checkpoint once per expected fault.
  CHECK(DalyInterval(100, 50) == 50);
  CHECK(DalyInterval(100, 10) == 10);
  // Degenerate inputs give no negative or NaN interval.
  CHECK(DalyInterval(0, 100) == 100);
  CHECK(DalyInterval(-1, 100) == 100);
  CHECK(DalyInterval(1, 0) == 0);
}

TEST_CASE("the planner rolls back to the newest good checkpoint after a first fault",
          "[supervise]") {
  RollbackPlanner p(/*window*/ 60, /*max*/ 3);
  CheckpointInfo t;
  std::string why;
  CHECK_FALSE(p.OnFault(0, &t, &why));
  CHECK(why == "there is no whole-VM checkpoint to go back to");
  p.AddCandidate(3, "sv-a");
  p.AddCandidate(7, "sv-b");
  p.AddCandidate(5, "vm-user");
  p.AddCandidate(7, "sv-b");  // twice: once
  REQUIRE(p.OnFault(100, &t, &why));
  CHECK(t.id == 7);
  CHECK(t.name == "sv-b");
  CHECK(p.streak() == 1);
}

TEST_CASE("a repeat fault goes a checkpoint further back, skipping those taken since",
          "[supervise]") {
  RollbackPlanner p(60, 3);
  p.AddCandidate(1, "a");
  p.AddCandidate(2, "b");
  p.AddCandidate(3, "c");
  CheckpointInfo t;
  std::string why;
  REQUIRE(p.OnFault(100, &t, &why));
  CHECK(t.name == "c");
  p.OnResumed(110);
  // The VM runs on from c and a new checkpoint d is taken; then it faults
  // again within the window: c (and d, its descendant) are bad.
  p.AddCandidate(4, "d");
  REQUIRE(p.OnFault(150, &t, &why));
  CHECK(t.name == "b");
  CHECK(p.streak() == 2);
  p.OnResumed(155);
  // Out of the window: a new fault starts over from the newest good one,
  // and c and d stay bad.
  p.AddCandidate(5, "e");
  REQUIRE(p.OnFault(155 + 61, &t, &why));
  CHECK(t.name == "e");
  CHECK(p.streak() == 1);
}

TEST_CASE("the planner gives up after max rollbacks in a row, never loops", "[supervise]") {
  RollbackPlanner p(60, 2);
  for (uint64_t id = 1; id <= 10; id++) p.AddCandidate(id, "cp" + std::to_string(id));
  CheckpointInfo t;
  std::string why;
  REQUIRE(p.OnFault(0, &t, &why));
  CHECK(t.id == 10);
  p.OnResumed(1);
  REQUIRE(p.OnFault(2, &t, &why));
  CHECK(t.id == 9);
  p.OnResumed(3);
  CHECK_FALSE(p.OnFault(4, &t, &why));
  CHECK(why == "the VM faulted again within 60 s of each of 2 rollback(s) in a row");
}

TEST_CASE("the planner runs out of checkpoints before it runs out of tries", "[supervise]") {
  RollbackPlanner p(60, 5);
  p.AddCandidate(4, "only");
  CheckpointInfo t;
  std::string why;
  REQUIRE(p.OnFault(0, &t, &why));
  p.OnResumed(1);
  CHECK_FALSE(p.OnFault(2, &t, &why));
  CHECK(why == "there is no older good whole-VM checkpoint to go back to");
}

TEST_CASE("a failed rollback tries the next older checkpoint and counts as a try",
          "[supervise]") {
  RollbackPlanner p(60, 2);
  p.AddCandidate(1, "a");
  p.AddCandidate(2, "b");
  p.AddCandidate(3, "c");
  CheckpointInfo t;
  std::string why;
  REQUIRE(p.OnFault(0, &t, &why));
  CHECK(t.name == "c");
  REQUIRE(p.OnRollbackFailed(&t, &why));
  CHECK(t.name == "b");
  CHECK(p.streak() == 2);
  CHECK_FALSE(p.OnRollbackFailed(&t, &why));
  CHECK(why == "2 rollback(s) in a row did not bring the VM back");
  // Pruned checkpoints are forgotten.
  RollbackPlanner q(60, 3);
  q.AddCandidate(1, "a");
  q.AddCandidate(2, "b");
  q.Forget(2);
  REQUIRE(q.OnFault(0, &t, &why));
  CHECK(t.name == "a");
}

}  // namespace
}  // namespace rwd::vm
