// The option table of diffusion-distill: its own [distill] group plus the trainer's [data],
// [optimiser], [checkpoint], [logging] and [runtime] options (taken from the trainer's table, so both
// programs accept the same keys with the same help), which configure every round's student.
#include "distiller/distill_options.h"

#include <fmt/format.h>

#include <deque>

#include "core/base/error.h"
#include "core/comm/collective_watchdog.h"
#include "core/comm/device.h"
#include "core/options/ini_options.h"
#include "core/options/option_values.h"
#include "trainer/train_options.h"

namespace diffusion {
namespace {

const OptionSpec kDistillOptions[] = {
    {"distill", "teacher", "", "teacher: run folder (its latest checkpoint) or step folder"},
    {"distill", "teacher-ema", "auto", "EMA rate of the teacher's weights, sigma-rel-S (a power EMA, post-hoc when "
     "not kept), or none; auto = the slowest"},
    {"distill", "out", "", "output folder: one student run folder per round, OUT/steps-N"},
    {"distill", "method", "progressive", "progressive (halving rounds, OUT/steps-N) | consistency (consistency "
     "distillation, OUT/consistency)"},
    {"distill", "consistency-points", "18", "consistency: points N of the sigma grid (Karras spacing)"},
    {"distill", "teacher-solver", "heun", "consistency: the teacher's ODE step between grid points, heun | ddim"},
    {"distill", "target-ema", "0.95", "consistency: EMA rate of the target network (added to ema-rates)"},
    {"distill", "start-steps", "256", "the teacher's sampling steps in the first round (2N)"},
    {"distill", "target-steps", "4", "the last student's sampling steps (>= 1)"},
    {"distill", "steps-per-round", "2000", "optimiser steps of each halving (consistency: of the run)"},
    {"distill", "student-prediction", "v", "student network target: v | x0"},
    {"distill", "guidance-scale", "1", "class-conditional teacher: guidance scale of its targets"},
};

// Trainer keys a distillation sets itself (per round) rather than taking from the user.
bool set_by_distiller(const std::string& key) { return key == "steps" || key == "out"; }

const OptionTable& distill_table() {
  static const OptionTable table = [] {
    OptionTable t;
    t.program = "diffusion-distill";
    t.usage = "mpirun -np W diffusion-distill --config FILE.ini --teacher RUN --data DATA.h5 --out DIR [--key value ...]";
    t.groups = {"distill", "data", "optimiser", "checkpoint", "logging", "runtime"};
    t.specs.assign(std::begin(kDistillOptions), std::end(kDistillOptions));
    for (const auto& o : train_option_specs()) {
      const std::string group = o.group;
      if (group == "model" || group == "diffusion" || group == "consistency" || set_by_distiller(o.key)) continue;
      // A student is a short fine-tune: no EMA unless asked for.
      if (std::string(o.key) == "ema-rates") {
        t.specs.push_back({o.group, o.key, "none", o.help});
        continue;
      }
      t.specs.push_back(o);
    }
    return t;
  }();
  return table;
}

}  // namespace

std::optional<DistillConfig> parse_distill_options(int argc, char** argv) {
  const auto& table = distill_table();
  const auto values = parse_option_table(argc, argv, table);
  if (!values) return std::nullopt;
  const auto s = [&](const char* key) { return values->at(key); };

  DistillConfig c;
  c.config_file = s("config");
  c.teacher = s("teacher");
  if (c.teacher.empty()) throw Error("option --teacher is required (the teacher's run or step folder)");
  c.out = s("out");
  if (c.out.empty()) throw Error("option --out is required (the distillation's output folder)");
  c.teacher_ema = ema_choice_option("teacher-ema", s("teacher-ema"));
  c.start_steps = option_int("start-steps", s("start-steps"));
  c.target_steps = option_int("target-steps", s("target-steps"));
  c.steps_per_round = option_int("steps-per-round", s("steps-per-round"));
  if (c.steps_per_round < 1) throw Error(fmt::format("option --steps-per-round: {} must be >= 1", c.steps_per_round));
  try {
    c.student_prediction = parse_prediction(s("student-prediction"));
  } catch (const Error& e) {
    throw Error(fmt::format("option --student-prediction: {}", e.what()));
  }
  if (c.student_prediction == Prediction::kEps)
    throw Error("option --student-prediction eps: an eps student is unstable at few steps (x0 = (z - sigma eps)/a "
                "blows up where a -> 0); use v or x0");
  c.guidance_scale = option_double("guidance-scale", s("guidance-scale"));
  c.method = s("method");
  if (c.method != "progressive" && c.method != "consistency")
    throw Error(fmt::format("option --method: '{}' is not progressive or consistency", c.method));
  c.consistency_points = option_int("consistency-points", s("consistency-points"));
  if (c.consistency_points < 2)
    throw Error(fmt::format("option --consistency-points: {} must be >= 2", c.consistency_points));
  c.teacher_solver = s("teacher-solver");
  if (c.teacher_solver != "heun" && c.teacher_solver != "ddim")
    throw Error(fmt::format("option --teacher-solver: '{}' is not heun or ddim", c.teacher_solver));
  c.target_ema = option_double("target-ema", s("target-ema"));
  if (!(c.target_ema > 0 && c.target_ema < 1))
    throw Error(fmt::format("option --target-ema: {} is not in (0, 1)", c.target_ema));
  c.device = s("device");
  parse_device_kind(c.device);  // a bad value fails here, naming the option
  c.share_gpus = option_bool("share-gpus", s("share-gpus"));
  c.collective_timeout_s = collective_timeout_option(s("collective-timeout"));
  c.data = s("data");
  if (c.data.empty()) throw Error("option --data is required (the data the teacher was trained on)");

  for (const auto& g : table.groups) {
    c.resolved_text += fmt::format("[{}]\n", g);
    for (const auto& o : table.specs) {
      if (o.group != g) continue;
      c.resolved_text += fmt::format("{} = {}\n", o.key, s(o.key));
      if (g != "distill") c.student_settings.push_back({o.group, o.key, s(o.key)});
    }
    c.resolved_text += "\n";
  }
  return c;
}

}  // namespace diffusion
