// A jobs file for `diffusion-sample --jobs FILE.ini`, as plain structs (filled by
// jobs_options.cpp, which parses each job's keys with the sampler's or the distiller's own
// option parser, so a job accepts exactly the options of its program).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "distiller/distill_config.h"
#include "sampler/sample_config.h"

namespace diffusion {

enum class JobKind { kSample, kDistill };

struct JobSpec {
  std::string name;                // [job.NAME]
  JobKind kind = JobKind::kSample;
  int ranks = 0;                   // its share of the world (resolved: >= 1)
  std::vector<std::string> after;  // jobs that must finish first
  std::optional<SampleConfig> sample;
  std::optional<DistillConfig> distill;
  std::string out() const { return sample ? sample->out : distill->out; }
};

struct JobsConfig {
  std::string path;  // the jobs file
  std::vector<JobSpec> jobs;  // in file order; every `after` names an earlier or later job, no cycles
};

}  // namespace diffusion
