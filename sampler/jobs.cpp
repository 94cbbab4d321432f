// The job fan-out (see jobs.h). Waiting ranks and ranks without a job poll non-blocking MPI
// requests with a sleep instead of blocking in MPI, whose busy-wait would steal the cores the
// running jobs need.
#include "sampler/jobs.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"
#include "core/comm/collective_watchdog.h"
#include "core/comm/communicator_factory.h"
#include "core/comm/device.h"
#include "distiller/distiller.h"
#include "sampler/generation.h"

namespace diffusion {
namespace fs = std::filesystem;
namespace {

constexpr int kJobDoneTag = 7001;

enum JobStatus : int { kNotRun = 0, kDone = 1, kAlreadyComplete = 2, kStopped = 3, kSkippedAfter = 4 };

const char* status_text(int status) {
  switch (status) {
    case kDone: return "done";
    case kAlreadyComplete: return "complete (re-run: nothing to do)";
    case kStopped: return "stopped (resume: same command)";
    case kSkippedAfter: return "not run (a job it waits for did not finish)";
    default: return "not run";
  }
}

void wait_for(MPI_Request* request) {
  int done = 0;
  while (true) {
    MPI_CHECK(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Whether the job's output folder already holds its finished result (for the summary; the
// job's own code still runs and checks that the settings match).
bool output_complete(const JobSpec& job) {
  std::error_code ec;
  try {
    if (job.sample) {
      std::ifstream in(job.sample->out + "/manifest.json");
      return in && nlohmann::json::parse(in).value("status", "") == "complete";
    }
    std::ifstream in(job.distill->out + "/distill.json");
    if (!in) return false;
    const auto rounds = nlohmann::json::parse(in).at("rounds");
    return !rounds.empty() && rounds.back().value("student_steps", 0) == job.distill->target_steps;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

double jobs_collective_timeout(const JobsConfig& config, int rank) {
  double largest = 0;
  int next = 0;
  for (const auto& job : config.jobs) {
    const double timeout = job.sample ? job.sample->collective_timeout_s : job.distill->collective_timeout_s;
    if (rank >= next && rank < next + job.ranks) return timeout;
    next += job.ranks;
    largest = std::max(largest, timeout);
  }
  return largest;
}

bool run_jobs(const JobsConfig& config, MPI_Comm world) {
  int rank = 0, world_size = 0;
  MPI_CHECK(MPI_Comm_rank(world, &rank));
  MPI_CHECK(MPI_Comm_size(world, &world_size));
  const auto& jobs = config.jobs;
  const int num_jobs = static_cast<int>(jobs.size());
  std::vector<int> first_rank(num_jobs);
  int my_job = -1;
  for (int j = 0, next = 0; j < num_jobs; next += jobs[j].ranks, ++j) {
    first_rank[j] = next;
    if (rank >= next && rank < next + jobs[j].ranks) my_job = j;
  }
  if (rank == 0) {
    log0("[jobs] {}: {} jobs on {} ranks", config.path, num_jobs, world_size);
    for (int j = 0; j < num_jobs; ++j)
      log0("[jobs]   {} ({}) ranks {}-{}{}", jobs[j].name, jobs[j].sample ? "sample" : "distill", first_rank[j],
           first_rank[j] + jobs[j].ranks - 1, jobs[j].after.empty() ? "" : fmt::format(", after {}", fmt::join(jobs[j].after, ", ")));
  }
  // Devices are chosen once over the whole world (a node's GPUs split among all its ranks,
  // whatever job they run): CUDA where any job asks for it, CPU where every job does.
  DeviceRequest wanted{DeviceKind::kCpu, false};
  for (const auto& job : jobs) {
    const DeviceKind kind = parse_device_kind(job.sample ? job.sample->device : job.distill->device);
    if (kind == DeviceKind::kCuda || (kind == DeviceKind::kAuto && wanted.kind == DeviceKind::kCpu))
      wanted.kind = kind;
    wanted.share_gpus = wanted.share_gpus || (job.sample ? job.sample->share_gpus : job.distill->share_gpus);
  }
  const c10::Device rank_device = select_device(world, wanted).device;
  MPI_Comm job_comm = MPI_COMM_NULL;
  {
    CollectiveScope scope("jobs communicator split", world);
    MPI_CHECK(MPI_Comm_split(world, my_job < 0 ? MPI_UNDEFINED : my_job, rank, &job_comm));
  }

  int status = kNotRun;
  double seconds = 0;
  if (my_job >= 0) {
    const auto& job = jobs[my_job];
    // A job that asks for the CPU gets it, also on a rank that holds a GPU.
    const bool cpu_job = parse_device_kind(job.sample ? job.sample->device : job.distill->device) == DeviceKind::kCpu;
    const c10::Device device = cpu_job ? c10::Device(c10::kCPU) : rank_device;
    const auto index_of = [&](const std::string& name) {
      for (int j = 0; j < num_jobs; ++j)
        if (jobs[j].name == name) return j;
      throw Error(fmt::format("{}: no job named {}", config.path, name));
    };
    int job_rank = 0;
    MPI_CHECK(MPI_Comm_rank(job_comm, &job_rank));
    ScopedLogRank log_scope(job_rank, job.ranks);  // the job's first rank prints its progress
    if (job_rank == 0 && !job.after.empty()) log0("[jobs] {}: waiting for {}", job.name, fmt::join(job.after, ", "));
    // Wait for the jobs this one comes after: each one's first rank tells every rank of
    // every job waiting for it how it ended.
    bool may_run = true;
    for (const auto& name : job.after) {
      const int dep = index_of(name);
      int dep_status = kNotRun;
      MPI_Request request;
      MPI_CHECK(MPI_Irecv(&dep_status, 1, MPI_INT, first_rank[dep], kJobDoneTag + dep, world, &request));
      // As long as that job runs: its own ranks watch its collectives.
      CollectiveScope scope("waiting for an earlier job", world, WaitKind::kOtherJobs);
      wait_for(&request);
      if (dep_status != kDone && dep_status != kAlreadyComplete) may_run = false;
    }
    if (job_rank == 0) log0("[jobs] {}: starting on ranks {}-{}", job.name, first_rank[my_job], first_rank[my_job] + job.ranks - 1);
    const auto start = std::chrono::steady_clock::now();
    if (!may_run) {
      status = kSkippedAfter;
    } else {
      const bool complete_before = output_complete(job);
      try {
        if (job.sample) {
          run_sampling(*job.sample, job_comm, device);
          status = kDone;
        } else {
          // The job's own communicator over its slice of the ranks (NCCL on GPUs).
          const auto communicator =
              make_communicator(job_comm, device, nccl_backstop_timeout_s(job.distill->collective_timeout_s));
          status = run_distillation(*job.distill, job_comm, *communicator).stopped_by_signal ? kStopped : kDone;
        }
      } catch (const Error& e) {
        throw Error(fmt::format("[job.{}] {}", job.name, e.what()));
      }
      if (status == kDone && complete_before) status = kAlreadyComplete;
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (job_rank == 0) {
      log0("[jobs] {}: {} after {:.1f} s", job.name, status_text(status), seconds);
      for (int j = 0; j < num_jobs; ++j) {
        if (std::find(jobs[j].after.begin(), jobs[j].after.end(), job.name) == jobs[j].after.end()) continue;
        for (int r = first_rank[j]; r < first_rank[j] + jobs[j].ranks; ++r)
          MPI_CHECK(MPI_Send(&status, 1, MPI_INT, r, kJobDoneTag + my_job, world));
      }
    }
    MPI_CHECK(MPI_Comm_free(&job_comm));
  }

  // The summary: every rank reports (job, status, seconds); rank 0 prints a table.
  double mine[3] = {double(my_job), double(status), seconds};
  std::vector<double> all(3 * static_cast<size_t>(world_size));
  MPI_Request request;
  MPI_CHECK(MPI_Iallgather(mine, 3, MPI_DOUBLE, all.data(), 3, MPI_DOUBLE, world, &request));
  {
    // A job that finished early waits here for the others, however long they run.
    CollectiveScope scope("jobs summary gather", world, WaitKind::kOtherJobs);
    wait_for(&request);
  }
  bool all_finished = true;
  std::string table = fmt::format("[jobs] summary of {}\n  {:<16} {:<8} {:>9}  {:<34} {}\n", config.path, "job", "ranks",
                                  "wall", "output", "status");
  for (int j = 0; j < num_jobs; ++j) {
    const double* leader = &all[3 * static_cast<size_t>(first_rank[j])];
    const int s = static_cast<int>(leader[1]);
    if (s != kDone && s != kAlreadyComplete) all_finished = false;
    table += fmt::format("  {:<16} {:<8} {:>8.1f}s  {:<34} {}\n", jobs[j].name,
                         fmt::format("{}-{}", first_rank[j], first_rank[j] + jobs[j].ranks - 1), leader[2],
                         jobs[j].out(), status_text(s));
  }
  log0("{}", table);
  return all_finished;
}

}  // namespace diffusion
