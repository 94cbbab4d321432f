// CollectiveWatchdog: a stuck rank (stopped, lost, deadlocked) ends the job with a message that
// names it, its host and the collective it is missing, instead of hanging until the time limit.
// CollectiveScope marks where a thread blocks in (or waits on) a collective. Torch-free.
//
// How it works: every blocking collective opens a CollectiveScope, which records {name, call
// number, start} in a small process-wide registry. A watchdog thread per rank wakes every
// 100 ms. It answers other ranks' queries about this rank's state (on its own duplicate of
// MPI_COMM_WORLD), and when one of this rank's scopes is older than the timeout it asks every
// member of that scope's communicator what it is doing, waits a grace period for the answers,
// and then: a member that did not answer is stuck (abort, naming it); a member waiting too long
// in a different collective is a mismatch (abort, naming both); a member alive but outside any
// collective is only slow (a warning, and another check one timeout later). The answering works
// while the rank's other threads are blocked inside MPI because MPI runs with
// MPI_THREAD_MULTIPLE; without it the watchdog stays off.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace diffusion {

// What a scope waits for.
enum class WaitKind {
  // A collective over its communicator: every member has to come, and soon.
  kCollective,
  // Other jobs of a jobs fan-out finishing (diffusion-sample --jobs): legitimately as long as
  // they run, so only a member that does not answer at all ends the job; busy members and
  // members in their own jobs' collectives are not reported.
  kOtherJobs,
};

// Opened (RAII) by any thread around a blocking collective or a wait on one, with a string
// literal for `name` (it is kept as a pointer) and the communicator the collective runs on
// (whose members are asked when it times out; it must stay valid while the scope is open).
// A no-op while no CollectiveWatchdog is running (unit tests, a single rank, timeout 0).
// Cheap: one mutex lock each way, no allocation. Scopes nest; the oldest open one is reported.
class CollectiveScope {
 public:
  CollectiveScope(const char* name, MPI_Comm comm, WaitKind kind = WaitKind::kCollective) noexcept;
  ~CollectiveScope();
  CollectiveScope(const CollectiveScope&) = delete;
  CollectiveScope& operator=(const CollectiveScope&) = delete;

 private:
  int slot_ = -1;  // the registry slot, -1 when not registered
};

class CollectiveWatchdog {
 public:
  // Collective over `world` (MPI_COMM_WORLD), constructed in main after MpiSession and before
  // any communicator. `timeout_s`: how long one of this rank's scopes may stay open before it
  // asks the others (0 = this rank never asks). The thread runs on every rank when any rank has
  // a timeout, MPI provides MPI_THREAD_MULTIPLE and there are two ranks or more (a rank with
  // timeout 0 still answers the others); otherwise the watchdog is off (logged once when only the
  // thread level is missing).
  CollectiveWatchdog(MPI_Comm world, double timeout_s);
  // Stops and joins the thread and frees its communicator; before MPI_Finalize. Never throws.
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  bool running() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The value of --collective-timeout (seconds, >= 0; 0 = off); throws an Error naming the option.
double collective_timeout_option(const std::string& value);

// How long a diagnosis waits for the answers: min(5 s, max(1 s, timeout / 2)).
double watchdog_grace_s(double timeout_s);
// The time limit for NCCL's own waits with a collective timeout of `timeout_s`: later than the
// watchdog's diagnosis (timeout + grace + the other waiting ranks' extra delay + margin), so the
// watchdog gets to name the stuck rank first and NCCL's abort is the backstop; 0 stays 0.
double nccl_backstop_timeout_s(double timeout_s);

// --- the diagnosis as a pure function (state of every member -> verdict and message) ---------

struct ScopeState {
  std::string name;
  uint64_t call = 0;   // the how-manieth scope of this name in its process (1 = first)
  double age_s = 0;    // how long it has been open
  WaitKind kind = WaitKind::kCollective;
};

struct RankState {
  int rank = 0;  // in MPI_COMM_WORLD
  std::string host;
  bool answered = false;
  std::vector<ScopeState> open;  // oldest first; empty: not in a collective
  // When `open` is empty: the last scope it closed (empty name: none yet) and how long ago.
  std::string last_name;
  uint64_t last_call = 0;
  double idle_s = 0;
};

struct DiagnosisInput {
  int self = 0;
  std::string self_host;
  ScopeState waiting;            // this rank's scope that timed out
  double timeout_s = 0;
  double grace_s = 0;            // how long the others had to answer
  std::vector<RankState> others;  // every other member of the scope's communicator
};

enum class Verdict {
  kStuck,        // a member did not answer: abort
  kMismatch,     // a member waits too long in a different collective: abort
  kBusy,         // members alive outside the collective (or just entering another): warn, re-check
  kProgressing,  // every member is in the collective now: re-check later, nothing to say
};

struct Diagnosis {
  Verdict verdict = Verdict::kProgressing;
  // "[comm] ..."; empty for kProgressing, and for kBusy of a kOtherJobs scope (not worth a word)
  std::string message;
  // Who reports: for kBusy the lowest rank waiting in the same collective (this rank included),
  // which logs the warning while the others stay silent; for an abort the lowest rank waiting in
  // any collective, which aborts at once while the others abort a few seconds later only if it
  // did not.
  int reporter = 0;
  bool aborts() const { return verdict == Verdict::kStuck || verdict == Verdict::kMismatch; }
};

Diagnosis diagnose_collective(const DiagnosisInput& input);

}  // namespace diffusion
