// What diffusion-distill was asked to do, as a plain struct (filled by distill_options.cpp,
// the only Boost file of the distiller).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/diffusion/diffusion_config.h"
#include "trainer/config_text.h"

namespace diffusion {

struct DistillConfig {
  std::string config_file;  // --config, if any
  std::string teacher;      // --teacher: run folder (its latest) or step folder
  std::string teacher_ema;  // EMA rate of the teacher's weights; "" = the slowest, "none" = raw
  std::string out;          // --out DIR: one run folder per round, DIR/steps-N
  // --method: "progressive" (rounds of halving, OUT/steps-N) or "consistency" (one consistency
  // distillation run, OUT/consistency; trainer/consistency_objective.h).
  std::string method = "progressive";
  int64_t consistency_points = 18;   // consistency: N of the σ grid
  std::string teacher_solver = "heun";  // consistency: the teacher's ODE step, heun | ddim
  double target_ema = 0.95;          // consistency: EMA rate of the target network
  int64_t start_steps = 256;   // the teacher's sampling steps in the first round
  int64_t target_steps = 4;    // the last student's steps
  int64_t steps_per_round = 2000;  // optimiser steps of each round (consistency: of the one run)
  Prediction student_prediction = Prediction::kV;
  double guidance_scale = 1.0;  // class-conditional teachers: targets from the guided teacher
  // The trainer options of every student ([data], [optimiser], [checkpoint], [logging]), laid
  // over the teacher's [model] and [diffusion] sections.
  std::vector<IniSetting> student_settings;
  std::string data;          // the [data] data path, also in student_settings
  std::string device = "auto";  // [runtime] device, share-gpus and collective-timeout, also in
  bool share_gpus = false;      // student_settings
  double collective_timeout_s = 300;
  std::string resolved_text;  // every option with its value, INI-style; printed and saved
};

}  // namespace diffusion
