// diffusion-eval: parse options, evaluate the samples against the reference. A single process;
// it needs no mpirun.
#include <cstdio>
#include <exception>

#include "core/base/allocator.h"
#include "evaluation/eval_options.h"
#include "evaluation/evaluation.h"

int main(int argc, char** argv) {
  diffusion::tune_allocator();
  try {
    const auto config = diffusion::parse_eval_options(argc, argv);
    if (!config) return 0;
    diffusion::run_evaluation(*config);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "diffusion-eval: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
