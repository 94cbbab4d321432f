// core/comm/collective_watchdog.h without MPI traffic: the diagnosis as a pure function of every
// rank's state (a stuck rank, a mismatch, a busy rank, all in the collective, a jobs-file wait),
// the --collective-timeout value, NCCL's later time limit, and scopes with no watchdog running.
#include <gtest/gtest.h>

#include <string>

#include "core/base/error.h"
#include "core/comm/collective_watchdog.h"

namespace diffusion {
namespace {

ScopeState scope(const std::string& name, uint64_t call, double age_s, WaitKind kind = WaitKind::kCollective) {
  ScopeState s;
  s.name = name;
  s.call = call;
  s.age_s = age_s;
  s.kind = kind;
  return s;
}

RankState waiting_in(int rank, const std::string& host, ScopeState s) {
  RankState r;
  r.rank = rank;
  r.host = host;
  r.answered = true;
  r.open.push_back(std::move(s));
  return r;
}

RankState silent(int rank, const std::string& host) {
  RankState r;
  r.rank = rank;
  r.host = host;
  return r;
}

RankState idle(int rank, const std::string& host, double idle_s, const std::string& last, uint64_t last_call) {
  RankState r;
  r.rank = rank;
  r.host = host;
  r.answered = true;
  r.idle_s = idle_s;
  r.last_name = last;
  r.last_call = last_call;
  return r;
}

// Rank 1 on node1 has waited 5 s in gradient all-reduce call 57 (timeout 3 s, grace 2.5 s).
DiagnosisInput rank1_waiting() {
  DiagnosisInput in;
  in.self = 1;
  in.self_host = "node1";
  in.waiting = scope("gradient all-reduce", 57, 5.0);
  in.timeout_s = 3;
  in.grace_s = 2.5;
  return in;
}

TEST(CollectiveDiagnosis, ASilentRankIsStuckAndNamedWithItsHostAndTheCollective) {
  DiagnosisInput in = rank1_waiting();
  in.others = {waiting_in(0, "node1", scope("gradient all-reduce", 57, 5.1)),
               waiting_in(2, "node2", scope("gradient all-reduce", 57, 4.9)), silent(3, "node2")};
  const Diagnosis d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kStuck);
  EXPECT_TRUE(d.aborts());
  EXPECT_EQ(d.reporter, 0);  // the lowest waiting rank aborts at once
  EXPECT_EQ(d.message,
            "[comm] collective timeout: rank 1 (node1) has waited 5.0 s in 'gradient all-reduce' (call 57); "
            "rank 3 (node2) did not answer within 2.5 s: it is stopped, lost or hung; ranks 0, 1, 2 are "
            "waiting in the same collective");
}

TEST(CollectiveDiagnosis, SeveralSilentRanksAndTheStateOfTheRest) {
  DiagnosisInput in = rank1_waiting();
  in.others = {silent(0, "node1"), silent(3, "node2"), idle(2, "node2", 0.5, "agreement", 4)};
  const Diagnosis d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kStuck);
  EXPECT_EQ(d.reporter, 1);  // rank 2 waits in nothing: rank 1 is the lowest waiting rank
  EXPECT_EQ(d.message,
            "[comm] collective timeout: rank 1 (node1) has waited 5.0 s in 'gradient all-reduce' (call 57); "
            "rank 0 (node1), rank 3 (node2) did not answer within 2.5 s: they are stopped, lost or hung; "
            "rank 2 (node2) is alive outside any collective for 0.5 s (last: 'agreement' (call 4))");
}

TEST(CollectiveDiagnosis, TheLowestRankWaitingInAnyCollectiveReportsAStuckRank) {
  // Rank 0 got its result of the all-reduce and went on to the next collective; rank 2 did not:
  // both see rank 3 silent, and rank 0 (not rank 1) reports, so the message comes once.
  DiagnosisInput in = rank1_waiting();
  in.others = {waiting_in(0, "node1", scope("stop flag all-reduce", 56, 3.2)), silent(3, "node2")};
  const Diagnosis d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kStuck);
  EXPECT_EQ(d.reporter, 0);
  EXPECT_NE(d.message.find("rank 0 (node1) is in 'stop flag all-reduce' (call 56) for 3.2 s"), std::string::npos)
      << d.message;
}

TEST(CollectiveDiagnosis, ARankWaitingLongInAnotherCollectiveIsAMismatch) {
  DiagnosisInput in = rank1_waiting();
  in.others = {waiting_in(0, "node1", scope("checkpoint CRC gather", 3, 6.0)),
               waiting_in(2, "node2", scope("gradient all-reduce", 57, 4.0))};
  const Diagnosis d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kMismatch);
  EXPECT_TRUE(d.aborts());
  EXPECT_EQ(d.reporter, 0);
  EXPECT_EQ(d.message,
            "[comm] collective mismatch: rank 1 (node1) has waited 5.0 s in 'gradient all-reduce' (call 57), but "
            "rank 0 (node1) has waited 6.0 s in 'checkpoint CRC gather' (call 3): the ranks wait in different "
            "collectives, so none of them can finish (every rank must run the same collectives in the same "
            "order); ranks 1, 2 are waiting in the same collective");
}

TEST(CollectiveDiagnosis, AnotherCallOfTheSameCollectiveIsAMismatchToo) {
  DiagnosisInput in = rank1_waiting();
  in.others = {waiting_in(0, "node1", scope("gradient all-reduce", 58, 4.0))};
  const Diagnosis d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kMismatch);
  EXPECT_NE(d.message.find("rank 0 (node1) has waited 4.0 s in 'gradient all-reduce' (call 58)"), std::string::npos)
      << d.message;
}

TEST(CollectiveDiagnosis, ABusyRankIsAWarningNotAnAbort) {
  DiagnosisInput in = rank1_waiting();
  in.others = {idle(0, "node1", 6.1, "step statistics all-reduce", 40),
               waiting_in(2, "node2", scope("gradient all-reduce", 57, 4.9))};
  const Diagnosis d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kBusy);
  EXPECT_FALSE(d.aborts());
  EXPECT_EQ(d.reporter, 1);  // the lowest rank waiting in the collective logs it, rank 2 does not
  EXPECT_EQ(d.message,
            "[comm] collective watchdog: rank 1 (node1) has waited 5.0 s in 'gradient all-reduce' (call 57); "
            "rank 0 (node1) is alive outside any collective for 6.1 s (last: 'step statistics all-reduce' (call "
            "40)): still waiting (the next check is in 3 s)");
}

TEST(CollectiveDiagnosis, ARankJustEnteringAnotherCollectiveIsBusyNotAMismatch) {
  DiagnosisInput in = rank1_waiting();
  in.others = {waiting_in(0, "node1", scope("barrier", 9, 0.2))};
  const Diagnosis d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kBusy);
  EXPECT_NE(d.message.find("rank 0 (node1) is in 'barrier' (call 9) for 0.2 s"), std::string::npos) << d.message;
}

TEST(CollectiveDiagnosis, EveryRankInTheCollectiveIsProgress) {
  DiagnosisInput in = rank1_waiting();
  in.others = {waiting_in(0, "node1", scope("gradient all-reduce", 57, 0.01))};
  const Diagnosis d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kProgressing);
  EXPECT_TRUE(d.message.empty());
  EXPECT_EQ(d.reporter, 0);
}

TEST(CollectiveDiagnosis, AJobsFileWaitReportsOnlySilentRanks) {
  DiagnosisInput in = rank1_waiting();
  in.waiting = scope("jobs summary gather", 1, 400, WaitKind::kOtherJobs);
  // Ranks of another job, long in their own collectives or between them: no word, no abort.
  in.others = {waiting_in(0, "node1", scope("gradient all-reduce", 9000, 400)), idle(2, "node2", 0.3, "barrier", 2)};
  Diagnosis d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kBusy);
  EXPECT_TRUE(d.message.empty());
  in.others.push_back(silent(3, "node2"));
  d = diagnose_collective(in);
  EXPECT_EQ(d.verdict, Verdict::kStuck);
  EXPECT_NE(d.message.find("rank 3 (node2) did not answer"), std::string::npos) << d.message;
}

TEST(CollectiveTimeoutOption, SecondsAtLeastZero) {
  EXPECT_EQ(collective_timeout_option("300"), 300);
  EXPECT_EQ(collective_timeout_option("0"), 0);
  EXPECT_EQ(collective_timeout_option("2.5"), 2.5);
  for (const char* bad : {"-1", "abc", "", "5s", "nan", "inf"}) {
    try {
      collective_timeout_option(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("option --collective-timeout"), std::string::npos) << e.what();
    }
  }
}

TEST(CollectiveTimeoutOption, NcclWaitsLongerThanTheWatchdog) {
  EXPECT_EQ(nccl_backstop_timeout_s(0), 0);
  for (double t : {1.0, 3.0, 300.0}) EXPECT_GT(nccl_backstop_timeout_s(t), t + watchdog_grace_s(t) + 5.0);
  EXPECT_EQ(watchdog_grace_s(3), 1.5);
  EXPECT_EQ(watchdog_grace_s(1), 1.0);
  EXPECT_EQ(watchdog_grace_s(300), 5.0);
}

TEST(CollectiveScopeTest, IsANoOpWithoutAWatchdog) {
  CollectiveScope outer("outer", MPI_COMM_NULL);
  { CollectiveScope inner("inner", MPI_COMM_NULL, WaitKind::kOtherJobs); }
  SUCCEED();
}

}  // namespace
}  // namespace diffusion
