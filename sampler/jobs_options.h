// Parsing a jobs file (the Boost side of `diffusion-sample --jobs`).
#pragma once

#include <optional>

#include "sampler/jobs_config.h"

namespace diffusion {

// Returns nullopt when the command line has no --jobs. Otherwise reads FILE.ini: one
// [job.NAME] section per job with `kind = sample | distill` (default sample), `ranks = K`
// (default: an even share of the ranks no job claims), `after = NAME[,NAME]` and the job's
// program options as `key = value` (the long option names without dashes). Every job's
// options are checked here, before any work starts, as are unknown `after` names, cycles and
// more ranks asked than `world_size`; errors name the file and the job.
std::optional<JobsConfig> parse_jobs_options(int argc, char** argv, int world_size);

}  // namespace diffusion
