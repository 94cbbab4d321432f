// The job fan-out behind `diffusion-sample --jobs`: the world's ranks are split into one
// sub-communicator per job (in file order, each job a contiguous block of ranks) and the jobs
// run at the same time; a job with `after` waits until those jobs finished. Each job runs its
// program's own code (run_sampling, run_distillation), which resumes from what its output
// folder holds, so a killed fan-out is resumed by running the same command again. Rank 0
// prints a summary table at the end.
#pragma once

#include <mpi.h>

#include "sampler/jobs_config.h"

namespace diffusion {

// Returns true when every job finished (false when a stop request ended one early).
bool run_jobs(const JobsConfig& config, MPI_Comm world);

// The --collective-timeout of the job world rank `rank` runs (the largest of all jobs for a rank
// without a job).
double jobs_collective_timeout(const JobsConfig& config, int rank);

}  // namespace diffusion
