// The collective watchdog (see collective_watchdog.h): the scope registry, the watchdog thread
// with its query/reply protocol, and the diagnosis.
//
// Threads and locks: scopes are opened and closed by any thread (the main thread, a
// communicator's communication thread) under the registry mutex, which guards nothing but the
// registry and is never held across a blocking call. Only the watchdog thread touches
// `diag_comm`, so its probes and receives cannot steal another thread's messages, and the
// program's own collectives never see its traffic.
//
// Protocol on diag_comm (a duplicate of MPI_COMM_WORLD, so its ranks are world ranks): a query
// (tag kQueryTag) carries a diagnosis id; the answer (tag kReplyTag) is a fixed-size WireReport
// of the answering rank's open scopes, echoing the id so that a late answer to an earlier
// diagnosis is recognised and dropped. Sends are non-blocking and kept until complete, so a
// stopped peer never blocks the watchdog thread.
#include "core/comm/collective_watchdog.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"

namespace diffusion {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// --- the registry of open scopes ----------------------------------------------------------------

constexpr int kMaxScopes = 32;  // open at once in one process (nesting times threads)
constexpr int kMaxNames = 64;   // distinct scope names with their own call counters

struct OpenScope {
  bool used = false;
  const char* name = nullptr;
  MPI_Comm comm = MPI_COMM_NULL;
  WaitKind kind = WaitKind::kCollective;
  uint64_t call = 0;
  uint64_t serial = 0;  // unique per scope, so a diagnosis can tell whether its scope is still open
  Clock::time_point start{};
};

struct NameCount {
  const char* name = nullptr;
  uint64_t calls = 0;
};

struct Registry {
  std::mutex mutex;
  OpenScope scopes[kMaxScopes];
  NameCount names[kMaxNames];
  int name_count = 0;
  uint64_t next_serial = 1;
  const char* last_name = nullptr;  // the last scope closed, for "not in a collective" answers
  uint64_t last_call = 0;
  Clock::time_point last_end{};
};

// Plain static storage rather than a member of the watchdog: a scope closing after the watchdog
// is gone (it never should, main owns the order) then still touches valid memory.
Registry g_registry;
std::atomic<bool> g_watching{false};

// Call numbers count per name (the same literal may have several addresses, hence strcmp), so
// that "call 57" of a collective means the same collective on every rank.
uint64_t next_call(Registry& r, const char* name) {
  for (int i = 0; i < r.name_count; ++i)
    if (r.names[i].name == name || std::strcmp(r.names[i].name, name) == 0) return ++r.names[i].calls;
  if (r.name_count == kMaxNames) return 0;
  r.names[r.name_count++] = {name, 1};
  return 1;
}

// --- the wire format ----------------------------------------------------------------------------

constexpr int kQueryTag = 1;
constexpr int kReplyTag = 2;
constexpr int kNameBytes = 48;
constexpr int kReportScopes = 4;  // oldest open scopes an answer describes
constexpr int kHostBytes = 64;

struct WireQuery {
  uint64_t id = 0;
};

struct WireScope {
  char name[kNameBytes] = {};
  uint64_t call = 0;
  double age_s = 0;
  int32_t kind = 0;
  int32_t unused = 0;
};

struct WireReport {
  uint64_t query_id = 0;
  int32_t open_count = 0;
  int32_t unused = 0;
  WireScope scopes[kReportScopes];
  char last_name[kNameBytes] = {};
  uint64_t last_call = 0;
  double idle_s = 0;
};

void copy_name(char (&to)[kNameBytes], const char* from) {
  std::strncpy(to, from != nullptr ? from : "", kNameBytes - 1);
  to[kNameBytes - 1] = '\0';
}

std::string name_of(const char (&from)[kNameBytes]) { return std::string(from, strnlen(from, kNameBytes)); }

// After a verdict that aborts, the ranks other than the reporter give it this long to take the
// job down before they do it themselves (in case the reporter itself failed).
constexpr double kStragglerDelay_s = 5.0;

// --- text of the diagnosis ----------------------------------------------------------------------

std::string where(int rank, const std::string& host) { return fmt::format("rank {} ({})", rank, host); }

std::string describe(const ScopeState& s) { return fmt::format("'{}' (call {})", s.name, s.call); }

std::string join(const std::vector<std::string>& parts, const char* separator) {
  std::string text;
  for (size_t i = 0; i < parts.size(); ++i) text += (i > 0 ? separator : "") + parts[i];
  return text;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::vector<std::string> parts;
  for (int r : ranks) parts.push_back(std::to_string(r));
  return join(parts, ", ");
}

// "alive outside any collective for 6.1 s (last: 'x' (call 40))" or "in 'y' (call 3) for 0.2 s"
std::string state_of(const RankState& r) {
  if (!r.open.empty())
    return fmt::format("in {} for {:.1f} s", describe(r.open.front()), r.open.front().age_s);
  const std::string last =
      r.last_name.empty() ? "none yet" : fmt::format("'{}' (call {})", r.last_name, r.last_call);
  return fmt::format("alive outside any collective for {:.1f} s (last: {})", r.idle_s, last);
}

}  // namespace

// --- CollectiveScope ----------------------------------------------------------------------------

CollectiveScope::CollectiveScope(const char* name, MPI_Comm comm, WaitKind kind) noexcept {
  if (!g_watching.load(std::memory_order_acquire)) return;
  Registry& r = g_registry;
  std::lock_guard<std::mutex> lock(r.mutex);
  for (int i = 0; i < kMaxScopes; ++i) {
    OpenScope& s = r.scopes[i];
    if (s.used) continue;
    s = {true, name, comm, kind, next_call(r, name), r.next_serial++, Clock::now()};
    slot_ = i;
    return;
  }
  // Full (more than kMaxScopes open at once): this one goes unwatched.
}

CollectiveScope::~CollectiveScope() {
  if (slot_ < 0) return;
  Registry& r = g_registry;
  std::lock_guard<std::mutex> lock(r.mutex);
  OpenScope& s = r.scopes[slot_];
  r.last_name = s.name;
  r.last_call = s.call;
  r.last_end = Clock::now();
  s.used = false;
}

// --- the diagnosis ------------------------------------------------------------------------------

double collective_timeout_option(const std::string& value) {
  double seconds = -1;
  try {
    size_t used = 0;
    seconds = std::stod(value, &used);
    if (used != value.size()) seconds = -1;
  } catch (const std::exception&) {
  }
  if (!(seconds >= 0) || !std::isfinite(seconds))
    throw Error(fmt::format("option --collective-timeout: '{}' is not a number of seconds >= 0 (0 = off)", value));
  return seconds;
}

double watchdog_grace_s(double timeout_s) { return std::min(5.0, std::max(1.0, timeout_s / 2)); }

double nccl_backstop_timeout_s(double timeout_s) {
  if (timeout_s <= 0) return 0;
  return timeout_s + watchdog_grace_s(timeout_s) + kStragglerDelay_s + 10.0;
}

Diagnosis diagnose_collective(const DiagnosisInput& in) {
  const ScopeState& w = in.waiting;
  std::vector<int> same{in.self};
  std::vector<const RankState*> silent, mismatched, busy;
  for (const RankState& r : in.others) {
    if (!r.answered) {
      silent.push_back(&r);
      continue;
    }
    const bool in_same = std::any_of(r.open.begin(), r.open.end(), [&](const ScopeState& s) {
      return s.name == w.name && s.call == w.call;
    });
    if (in_same) {
      same.push_back(r.rank);
    } else if (w.kind == WaitKind::kCollective && !r.open.empty() && r.open.front().age_s >= in.timeout_s) {
      // Waiting as long as we are, elsewhere: neither collective can finish.
      mismatched.push_back(&r);
    } else {
      // Outside any collective, or just entering another one: alive and (maybe slowly) moving.
      busy.push_back(&r);
    }
  }
  std::sort(same.begin(), same.end());
  Diagnosis d;
  d.reporter = same.front();
  // An abort is reported by the lowest rank that waits in any collective: a stuck rank can leave
  // the others in different collectives (one got its result of an all-reduce, another did not),
  // and each of them comes to the same verdict.
  int abort_reporter = d.reporter;
  for (const RankState& r : in.others)
    if (r.answered && !r.open.empty()) abort_reporter = std::min(abort_reporter, r.rank);
  const std::string head =
      fmt::format("{} has waited {:.1f} s in {}", where(in.self, in.self_host), w.age_s, describe(w));
  const std::string waiting_list =
      same.size() > 1 ? fmt::format("; ranks {} are waiting in the same collective", rank_list(same)) : "";
  const auto states = [](const std::vector<const RankState*>& ranks) {
    std::vector<std::string> parts;
    for (const RankState* r : ranks) parts.push_back(fmt::format("{} is {}", where(r->rank, r->host), state_of(*r)));
    return join(parts, "; ");
  };

  if (!silent.empty()) {
    d.verdict = Verdict::kStuck;
    d.reporter = abort_reporter;
    std::vector<std::string> names;
    for (const RankState* r : silent) names.push_back(where(r->rank, r->host));
    std::vector<const RankState*> rest = mismatched;
    rest.insert(rest.end(), busy.begin(), busy.end());
    d.message = fmt::format("[comm] collective timeout: {}; {} did not answer within {:.1f} s: {} stopped, lost or "
                            "hung{}{}",
                            head, join(names, ", "), in.grace_s, silent.size() == 1 ? "it is" : "they are",
                            waiting_list, rest.empty() ? "" : "; " + states(rest));
    return d;
  }
  if (!mismatched.empty()) {
    d.verdict = Verdict::kMismatch;
    d.reporter = abort_reporter;
    std::vector<std::string> parts;
    for (const RankState* r : mismatched)
      parts.push_back(fmt::format("{} has waited {:.1f} s in {}", where(r->rank, r->host), r->open.front().age_s,
                                  describe(r->open.front())));
    d.message = fmt::format("[comm] collective mismatch: {}, but {}: the ranks wait in different collectives, so "
                            "none of them can finish (every rank must run the same collectives in the same "
                            "order){}{}",
                            head, join(parts, ", and "), waiting_list, busy.empty() ? "" : "; " + states(busy));
    return d;
  }
  if (!busy.empty()) {
    d.verdict = Verdict::kBusy;
    if (w.kind == WaitKind::kCollective)
      d.message = fmt::format("[comm] collective watchdog: {}; {}: still waiting (the next check is in {:.0f} s)",
                              head, states(busy), in.timeout_s);
    return d;
  }
  d.verdict = Verdict::kProgressing;
  return d;
}

// --- CollectiveWatchdog -------------------------------------------------------------------------

struct CollectiveWatchdog::Impl {
  MPI_Comm diag_comm = MPI_COMM_NULL;
  MPI_Group world_group = MPI_GROUP_NULL;
  int rank = 0;
  int size = 1;
  double timeout_s = 0;
  double grace_s = 1;
  std::vector<std::string> hosts;  // by world rank

  std::mutex stop_mutex;
  std::condition_variable stop_cv;
  bool stopping = false;
  std::thread thread;

  // --- state of the watchdog thread only ---
  struct Send {
    MPI_Request request = MPI_REQUEST_NULL;
    // The buffer sent (one of the two), alive until the send completes.
    std::unique_ptr<WireReport> report;
    std::unique_ptr<WireQuery> query;
  };
  std::vector<Send> sends;
  uint64_t next_query_id = 1;
  struct Probe {
    bool active = false;
    uint64_t id = 0;
    uint64_t serial = 0;  // of the scope that timed out
    ScopeState waiting;
    std::vector<int> members;  // world ranks of its communicator, this rank excluded
    std::map<int, RankState> answers;
    Clock::time_point deadline{};
  } probe;
  struct PendingAbort {
    bool active = false;
    uint64_t serial = 0;
    std::string message;
    Clock::time_point at{};
  } pending_abort;
  Clock::time_point next_check{};  // no new diagnosis before (after a verdict that does not abort)

  void run() {
    try {
      for (;;) {
        {
          std::unique_lock<std::mutex> lock(stop_mutex);
          // While collecting answers, poll faster: the verdict should come soon after the last.
          const auto interval = probe.active ? std::chrono::milliseconds(10) : std::chrono::milliseconds(100);
          if (stop_cv.wait_for(lock, interval, [&] { return stopping; })) return;
        }
        tick();
      }
    } catch (const std::exception& e) {
      // Never let an exception leave the thread (std::terminate); the job goes on unwatched.
      log_rank("[comm] collective watchdog stopped: {}", e.what());
    }
  }

  void tick() {
    answer_queries();
    receive_answers();
    reap_sends();
    const Clock::time_point now = Clock::now();
    if (pending_abort.active && now >= pending_abort.at) {
      // The reporter should have taken the job down by now; if this rank still waits, it does.
      if (scope_age(pending_abort.serial) >= 0) abort_named(pending_abort.message);
      pending_abort.active = false;
    }
    if (probe.active) {
      if (probe.answers.size() == probe.members.size() || now >= probe.deadline) conclude(now);
    } else if (timeout_s > 0 && !pending_abort.active && now >= next_check) {
      maybe_start(now);
    }
  }

  // This rank's open scopes, oldest first, as an answer.
  WireReport snapshot() {
    WireReport report;
    const Clock::time_point now = Clock::now();
    Registry& r = g_registry;
    std::lock_guard<std::mutex> lock(r.mutex);
    std::vector<const OpenScope*> open;
    for (const OpenScope& s : r.scopes)
      if (s.used) open.push_back(&s);
    std::sort(open.begin(), open.end(), [](const OpenScope* a, const OpenScope* b) { return a->start < b->start; });
    report.open_count = static_cast<int32_t>(std::min<size_t>(open.size(), kReportScopes));
    for (int i = 0; i < report.open_count; ++i) {
      copy_name(report.scopes[i].name, open[i]->name);
      report.scopes[i].call = open[i]->call;
      report.scopes[i].age_s = seconds_between(open[i]->start, now);
      report.scopes[i].kind = static_cast<int32_t>(open[i]->kind);
    }
    copy_name(report.last_name, r.last_name);
    report.last_call = r.last_call;
    report.idle_s = seconds_between(r.last_end, now);
    return report;
  }

  // The age of the open scope `serial`, or -1 once it has closed.
  double scope_age(uint64_t serial) {
    const Clock::time_point now = Clock::now();
    Registry& r = g_registry;
    std::lock_guard<std::mutex> lock(r.mutex);
    for (const OpenScope& s : r.scopes)
      if (s.used && s.serial == serial) return seconds_between(s.start, now);
    return -1;
  }

  void answer_queries() {
    for (;;) {
      int flag = 0;
      MPI_Status status;
      MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kQueryTag, diag_comm, &flag, &status));
      if (!flag) return;
      WireQuery query;
      MPI_CHECK(MPI_Recv(&query, sizeof(query), MPI_BYTE, status.MPI_SOURCE, kQueryTag, diag_comm,
                         MPI_STATUS_IGNORE));
      Send send;
      send.report = std::make_unique<WireReport>(snapshot());
      send.report->query_id = query.id;
      MPI_CHECK(MPI_Isend(send.report.get(), sizeof(WireReport), MPI_BYTE, status.MPI_SOURCE, kReplyTag,
                          diag_comm, &send.request));
      sends.push_back(std::move(send));
    }
  }

  void receive_answers() {
    for (;;) {
      int flag = 0;
      MPI_Status status;
      MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kReplyTag, diag_comm, &flag, &status));
      if (!flag) return;
      WireReport report;
      MPI_CHECK(MPI_Recv(&report, sizeof(report), MPI_BYTE, status.MPI_SOURCE, kReplyTag, diag_comm,
                         MPI_STATUS_IGNORE));
      const int from = status.MPI_SOURCE;
      if (!probe.active || report.query_id != probe.id) continue;  // late: an earlier diagnosis
      if (std::find(probe.members.begin(), probe.members.end(), from) == probe.members.end()) continue;
      RankState state;
      state.rank = from;
      state.host = hosts[static_cast<size_t>(from)];
      state.answered = true;
      for (int i = 0; i < std::min<int32_t>(report.open_count, kReportScopes); ++i) {
        const WireScope& s = report.scopes[i];
        state.open.push_back({name_of(s.name), s.call, s.age_s, static_cast<WaitKind>(s.kind)});
      }
      state.last_name = name_of(report.last_name);
      state.last_call = report.last_call;
      state.idle_s = report.idle_s;
      probe.answers[from] = std::move(state);
    }
  }

  void reap_sends() {
    for (auto it = sends.begin(); it != sends.end();) {
      int done = 0;
      MPI_CHECK(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE));
      it = done ? sends.erase(it) : it + 1;
    }
  }

  // Starts a diagnosis when one of this rank's scopes is older than the timeout.
  void maybe_start(Clock::time_point now) {
    std::vector<int> members;
    {
      Registry& r = g_registry;
      // Held while asking MPI for the communicator's group: the scope, and so its communicator,
      // stays open meanwhile (local calls only, nothing that waits for another rank).
      std::lock_guard<std::mutex> lock(r.mutex);
      const OpenScope* oldest = nullptr;
      for (const OpenScope& s : r.scopes)
        if (s.used && (oldest == nullptr || s.start < oldest->start)) oldest = &s;
      if (oldest == nullptr || seconds_between(oldest->start, now) < timeout_s) return;
      members = world_ranks_of(oldest->comm);
      probe.waiting = {oldest->name, oldest->call, seconds_between(oldest->start, now), oldest->kind};
      probe.serial = oldest->serial;
    }
    members.erase(std::remove(members.begin(), members.end(), rank), members.end());
    probe.active = true;
    probe.id = next_query_id++;
    probe.members = members;
    probe.answers.clear();
    probe.deadline = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace_s));
    for (int member : members) {
      Send send;
      send.query = std::make_unique<WireQuery>();
      send.query->id = probe.id;
      MPI_CHECK(MPI_Isend(send.query.get(), sizeof(WireQuery), MPI_BYTE, member, kQueryTag, diag_comm,
                          &send.request));
      sends.push_back(std::move(send));
    }
  }

  std::vector<int> world_ranks_of(MPI_Comm comm) {
    std::vector<int> world(static_cast<size_t>(size));
    if (comm == MPI_COMM_NULL) {
      for (int i = 0; i < size; ++i) world[static_cast<size_t>(i)] = i;
      return world;
    }
    MPI_Group group = MPI_GROUP_NULL;
    MPI_CHECK(MPI_Comm_group(comm, &group));
    int n = 0;
    MPI_CHECK(MPI_Group_size(group, &n));
    std::vector<int> local(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) local[static_cast<size_t>(i)] = i;
    world.assign(static_cast<size_t>(n), MPI_UNDEFINED);
    MPI_CHECK(MPI_Group_translate_ranks(group, n, local.data(), world_group, world.data()));
    MPI_CHECK(MPI_Group_free(&group));
    world.erase(std::remove(world.begin(), world.end(), MPI_UNDEFINED), world.end());
    return world;
  }

  void conclude(Clock::time_point now) {
    probe.active = false;
    next_check = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
    const double age = scope_age(probe.serial);
    if (age < 0) return;  // the collective finished meanwhile
    DiagnosisInput input;
    input.self = rank;
    input.self_host = hosts[static_cast<size_t>(rank)];
    input.waiting = probe.waiting;
    input.waiting.age_s = age;
    input.timeout_s = timeout_s;
    input.grace_s = grace_s;
    for (int member : probe.members) {
      auto it = probe.answers.find(member);
      if (it != probe.answers.end()) {
        input.others.push_back(it->second);
      } else {
        RankState silent;
        silent.rank = member;
        silent.host = hosts[static_cast<size_t>(member)];
        input.others.push_back(std::move(silent));
      }
    }
    const Diagnosis d = diagnose_collective(input);
    if (d.aborts()) {
      if (d.reporter == rank) abort_named(d.message);
      pending_abort = {true, probe.serial, d.message,
                       now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(kStragglerDelay_s))};
      return;
    }
    if (!d.message.empty() && d.reporter == rank) log_line(fmt::format("[rank {}/{}] {}", rank, size, d.message));
  }

  // The messages name world ranks, so the line's prefix does too (a job of a jobs file logs with
  // its own ranks, ScopedLogRank): the job ends here, nothing logs after it.
  [[noreturn]] void abort_named(const std::string& message) {
    set_log_rank(rank, size);
    abort_job(message);
  }
};

CollectiveWatchdog::CollectiveWatchdog(MPI_Comm world, double timeout_s) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.timeout_s = std::max(0.0, timeout_s);
  s.grace_s = watchdog_grace_s(s.timeout_s);
  MPI_CHECK(MPI_Comm_rank(world, &s.rank));
  MPI_CHECK(MPI_Comm_size(world, &s.size));
  int provided = MPI_THREAD_SINGLE;
  MPI_CHECK(MPI_Query_thread(&provided));
  // One verdict for every rank: a rank without the thread would never answer and be taken for
  // a stuck one. Any timeout anywhere starts the threads; no rank without MPI_THREAD_MULTIPLE.
  double local[2] = {s.timeout_s, provided == MPI_THREAD_MULTIPLE ? 0.0 : 1.0};
  double all[2] = {0, 0};
  MPI_CHECK(MPI_Allreduce(local, all, 2, MPI_DOUBLE, MPI_MAX, world));
  if (all[0] <= 0 || s.size < 2) return;
  if (all[1] > 0) {
    log0("[comm] collective watchdog off: MPI provides thread level {} (not MPI_THREAD_MULTIPLE = {}), so a stuck "
         "rank is not detected and the job waits for it",
         provided, static_cast<int>(MPI_THREAD_MULTIPLE));
    return;
  }
  MPI_CHECK(MPI_Comm_dup(world, &s.diag_comm));
  MPI_CHECK(MPI_Comm_set_errhandler(s.diag_comm, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_group(s.diag_comm, &s.world_group));
  char mine[kHostBytes] = {};
  if (::gethostname(mine, kHostBytes - 1) != 0) std::strncpy(mine, "unknown-host", kHostBytes - 1);
  std::vector<char> all_hosts(static_cast<size_t>(kHostBytes) * static_cast<size_t>(s.size));
  MPI_CHECK(MPI_Allgather(mine, kHostBytes, MPI_CHAR, all_hosts.data(), kHostBytes, MPI_CHAR, s.diag_comm));
  for (int r = 0; r < s.size; ++r) {
    const char* host = all_hosts.data() + static_cast<size_t>(r) * kHostBytes;
    s.hosts.emplace_back(host, strnlen(host, kHostBytes));
  }
  {
    Registry& r = g_registry;
    std::lock_guard<std::mutex> lock(r.mutex);
    r.last_name = nullptr;
    r.last_call = 0;
    r.last_end = Clock::now();
  }
  g_watching.store(true, std::memory_order_release);
  s.thread = std::thread([impl = impl_.get()] { impl->run(); });
}

CollectiveWatchdog::~CollectiveWatchdog() {
  Impl& s = *impl_;
  if (!s.thread.joinable()) return;
  g_watching.store(false, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(s.stop_mutex);
    s.stopping = true;
  }
  s.stop_cv.notify_all();
  s.thread.join();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  try {
    for (auto& send : s.sends) {
      int done = 0;
      MPI_CHECK(MPI_Test(&send.request, &done, MPI_STATUS_IGNORE));
      if (done) continue;
      // An answer or query nobody received (its peer is gone or finishing): MPI completes it on
      // its own, so the buffer must outlive us; these few bytes are left to the process's end.
      MPI_CHECK(MPI_Request_free(&send.request));
      (void)send.report.release();
      (void)send.query.release();
    }
    MPI_CHECK(MPI_Group_free(&s.world_group));
    MPI_CHECK(MPI_Comm_free(&s.diag_comm));
  } catch (const std::exception& e) {
    log_rank("[comm] stopping the collective watchdog: {}", e.what());
  }
}

bool CollectiveWatchdog::running() const { return impl_->thread.joinable(); }

}  // namespace diffusion
