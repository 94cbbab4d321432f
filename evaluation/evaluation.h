// diffusion-eval's job: load the samples and the reference, compute every metric and report
// it (stdout and optionally a JSON file). Torch-free header.
#pragma once

#include <nlohmann/json.hpp>

#include "evaluation/eval_config.h"

namespace diffusion {

// Every metric as JSON (docs/evaluation.md lists the keys). Throws diffusion::Error naming the
// file for bad input.
nlohmann::json evaluate(const EvalConfig& config);

// The human-readable summary of evaluate()'s result.
std::string format_report(const nlohmann::json& report);

// evaluate, print the summary on stdout, write config.json_out when set.
void run_evaluation(const EvalConfig& config);

}  // namespace diffusion
