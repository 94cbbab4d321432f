// Reading a jobs file (see jobs_options.h). Boost reads the INI; each job's keys then go
// through its program's own option parser as `--key value` arguments.
#include "sampler/jobs_options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <boost/program_options.hpp>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "core/base/error.h"
#include "core/options/option_values.h"
#include "distiller/distill_options.h"
#include "sampler/sample_options.h"

namespace diffusion {
namespace po = boost::program_options;
namespace {

struct RawJob {
  std::string name;
  std::vector<std::pair<std::string, std::string>> keys;  // in file order
};

std::optional<std::string> jobs_argument(int argc, char** argv) {
  std::optional<std::string> path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--jobs" && i + 1 < argc) {
      path = argv[++i];
    } else if (arg.rfind("--jobs=", 0) == 0) {
      path = arg.substr(7);
    } else if (arg == "--jobs") {
      throw Error("option --jobs needs a file (--jobs FILE.ini)");
    }
  }
  if (path && argc != 3 && !(argc == 2 && std::string(argv[1]).rfind("--jobs=", 0) == 0))
    throw Error("option --jobs: the jobs file holds every option; give no other options with it");
  return path;
}

std::vector<RawJob> read_jobs_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("option --jobs: cannot open {}", path));
  po::parsed_options parsed(nullptr);
  try {
    po::options_description none;
    parsed = po::parse_config_file(in, none, /*allow_unregistered=*/true);
  } catch (const po::error& e) {
    throw Error(fmt::format("{}: {}", path, e.what()));
  }
  std::vector<RawJob> jobs;
  for (const auto& opt : parsed.options) {
    const auto& full = opt.string_key;  // "job.NAME.key"
    const auto last_dot = full.rfind('.');
    const std::string section = last_dot == std::string::npos ? "" : full.substr(0, last_dot);
    const std::string key = full.substr(last_dot + 1);
    if (section.rfind("job.", 0) != 0 || section.size() <= 4)
      throw Error(fmt::format("{}: key '{}' is outside a [job.NAME] section (found in [{}])", path, key, section));
    const std::string name = section.substr(4);
    if (name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != std::string::npos)
      throw Error(fmt::format("{}: [job.{}]: job names use letters, digits, _ and - only", path, name));
    if (jobs.empty() || jobs.back().name != name) {
      for (const auto& j : jobs)
        if (j.name == name) throw Error(fmt::format("{}: [job.{}] appears twice", path, name));
      jobs.push_back({name, {}});
    }
    jobs.back().keys.emplace_back(key, opt.value.empty() ? "" : opt.value.front());
  }
  if (jobs.empty()) throw Error(fmt::format("{}: no [job.NAME] sections", path));
  return jobs;
}

// The job's keys as its program's command line, parsed by that program's parser.
template <typename Parse>
auto parse_as_program(const char* program, const std::vector<std::pair<std::string, std::string>>& keys,
                      Parse parse) {
  std::vector<std::string> args{program};
  for (const auto& [k, v] : keys) {
    args.push_back("--" + k);
    args.push_back(v);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  auto config = parse(static_cast<int>(argv.size()), argv.data());
  if (!config) throw Error("help requested inside a jobs file");
  return *config;
}

void check_no_cycles(const std::string& path, const std::vector<JobSpec>& jobs) {
  std::map<std::string, const JobSpec*> by_name;
  for (const auto& j : jobs) by_name[j.name] = &j;
  for (const auto& j : jobs)
    for (const auto& a : j.after) {
      if (!by_name.count(a))
        throw Error(fmt::format("{}: [job.{}] after = {}: no job of that name", path, j.name, a));
      if (a == j.name) throw Error(fmt::format("{}: [job.{}] waits for itself", path, j.name));
    }
  // Depth-first search; a job met again while on the stack closes a cycle.
  std::map<std::string, int> state;  // 0 new, 1 on the stack, 2 done
  std::vector<std::string> stack;
  std::function<void(const std::string&)> visit = [&](const std::string& name) {
    state[name] = 1;
    stack.push_back(name);
    for (const auto& a : by_name.at(name)->after) {
      if (state[a] == 1) {
        auto from = std::find(stack.begin(), stack.end(), a);
        std::vector<std::string> cycle(from, stack.end());
        cycle.push_back(a);
        throw Error(fmt::format("{}: the jobs wait for each other in a cycle: {}", path, fmt::join(cycle, " -> ")));
      }
      if (state[a] == 0) visit(a);
    }
    stack.pop_back();
    state[name] = 2;
  };
  for (const auto& j : jobs)
    if (state[j.name] == 0) visit(j.name);
}

}  // namespace

std::optional<JobsConfig> parse_jobs_options(int argc, char** argv, int world_size) {
  const auto path = jobs_argument(argc, argv);
  if (!path) return std::nullopt;
  JobsConfig config;
  config.path = *path;
  int claimed = 0, unclaimed_jobs = 0;
  for (const auto& raw : read_jobs_file(*path)) {
    JobSpec job;
    job.name = raw.name;
    std::vector<std::pair<std::string, std::string>> program_keys;
    std::string kind = "sample";
    try {
      for (const auto& [k, v] : raw.keys) {
        if (k == "kind") {
          kind = v;
        } else if (k == "ranks") {
          job.ranks = static_cast<int>(option_int("ranks", v));
          if (job.ranks < 1) throw Error(fmt::format("ranks = {}: must be >= 1", job.ranks));
        } else if (k == "after") {
          job.after = {};
          for (size_t start = 0; start <= v.size();) {
            const auto comma = std::min(v.find(',', start), v.size());
            auto name = v.substr(start, comma - start);
            name.erase(0, name.find_first_not_of(' '));
            name.erase(name.find_last_not_of(' ') + 1);
            if (!name.empty()) job.after.push_back(name);
            start = comma + 1;
          }
        } else {
          program_keys.emplace_back(k, v);
        }
      }
      if (kind == "sample") {
        job.kind = JobKind::kSample;
        job.sample = parse_as_program("diffusion-sample", program_keys, parse_sample_options);
      } else if (kind == "distill") {
        job.kind = JobKind::kDistill;
        job.distill = parse_as_program("diffusion-distill", program_keys, parse_distill_options);
      } else {
        throw Error(fmt::format("kind = {}: expected sample or distill", kind));
      }
    } catch (const Error& e) {
      throw Error(fmt::format("{}: [job.{}]: {}", *path, raw.name, e.what()));
    }
    if (job.ranks > 0) claimed += job.ranks;
    else ++unclaimed_jobs;
    config.jobs.push_back(std::move(job));
  }
  check_no_cycles(*path, config.jobs);

  // Jobs without `ranks` share what the others leave.
  const int left = world_size - claimed;
  if (claimed > world_size || (unclaimed_jobs > 0 && left < unclaimed_jobs))
    throw Error(fmt::format("{}: the jobs ask for {} ranks{}, but this run has {} (mpirun -np)", *path,
                            claimed + unclaimed_jobs,
                            unclaimed_jobs > 0 ? fmt::format(" (at least 1 for each of {} jobs without ranks)", unclaimed_jobs) : "",
                            world_size));
  int given = 0;
  for (auto& job : config.jobs)
    if (job.ranks == 0) job.ranks = left / unclaimed_jobs + (given++ < left % unclaimed_jobs ? 1 : 0);
  // Outputs must not collide: two jobs writing one folder would corrupt each other.
  std::set<std::string> outs;
  for (const auto& job : config.jobs)
    if (!outs.insert(job.out()).second)
      throw Error(fmt::format("{}: [job.{}] writes to {}, as another job does", *path, job.name, job.out()));
  return config;
}

}  // namespace diffusion
