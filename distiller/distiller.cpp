// The round loop of progressive distillation (see distiller.h). Each student's run folder is
// an ordinary trainer run whose config is the teacher's [model] and [diffusion] sections with
// the student's prediction, the distiller's trainer options, and a [distilled] section with the
// student's sampling grid, which diffusion-sample reads to sample it on its own grid.
#include "core/base/durable_file.h"
#include "distiller/distiller.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "core/diffusion/distillation.h"
#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/mpi_session.h"
#include "core/models/autocast.h"
#include "datasets/dataset_file.h"
#include "distiller/distillation_objective.h"
#include "trainer/config_text.h"
#include "trainer/train_options.h"
#include "trainer/trained_model.h"
#include "trainer/trainer.h"

namespace diffusion {
namespace fs = std::filesystem;
namespace {

bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

std::string student_dir(const DistillConfig& c, int64_t steps) { return fmt::format("{}/steps-{}", c.out, steps); }

// The student's config text: the teacher's model and diffusion, the student's prediction, the
// distiller's trainer options, this round's grid.
TrainConfig student_config(const DistillConfig& c, const TrainedModel& teacher, int64_t steps) {
  const int64_t T = teacher.train.diffusion.schedule.timesteps;
  auto settings = c.student_settings;
  settings.push_back({"diffusion", "prediction", to_string(c.student_prediction)});
  settings.push_back({"diffusion", "p-uncond", "0"});  // the guidance is in the targets
  settings.push_back({"optimiser", "steps", std::to_string(c.steps_per_round)});
  settings.push_back({"checkpoint", "out", student_dir(c, steps)});
  settings.push_back({"distilled", "sampling-steps", std::to_string(steps)});
  settings.push_back({"distilled", "timesteps", fmt::format("{}", fmt::join(student_timesteps(T, steps), ","))});
  settings.push_back({"distilled", "guidance-scale", fmt::format("{}", c.guidance_scale)});
  // The teacher's own [distilled] section (a student distilled further) is replaced whole.
  const auto base = remove_ini_section(teacher.train.resolved_text, "distilled");
  const auto text = set_ini_values(base, settings);
  auto config = parse_resolved_config(text, student_dir(c, steps) + " (student config)");
  config.resolved_text = remove_ini_section(text, "derived");  // the trainer derives it anew
  return config;
}

void validate(const DistillConfig& c, const TrainedModel& teacher) {
  if (c.target_steps < 1)
    throw Error(fmt::format("option --target-steps: {} must be >= 1", c.target_steps));
  if (c.target_steps >= c.start_steps)
    throw Error(fmt::format("option --target-steps: {} must be below --start-steps {}", c.target_steps,
                            c.start_steps));
  if (c.start_steps % c.target_steps != 0 || !is_power_of_two(c.start_steps / c.target_steps))
    throw Error(fmt::format("options --start-steps {} / --target-steps {}: the ratio must be a power of two "
                            "(each round halves the steps)",
                            c.start_steps, c.target_steps));
  const auto& t = teacher.train;
  if (t.model.classifier_classes > 0)
    throw Error(fmt::format("option --teacher: {} is a noisy-sample classifier (objective = classifier), not a "
                            "denoiser", teacher.checkpoint_dir));
  const int64_t T = t.diffusion.schedule.timesteps;
  if (c.start_steps > T)
    throw Error(fmt::format("option --start-steps: {} exceeds the teacher's T = {} timesteps", c.start_steps, T));
  if (t.distilled.sampling_steps > 0 && t.distilled.sampling_steps != c.start_steps)
    throw Error(fmt::format("option --start-steps {}: the teacher {} is a student that samples in {} steps",
                            c.start_steps, teacher.checkpoint_dir, t.distilled.sampling_steps));
  if (c.guidance_scale != 1.0 && t.num_classes == 0)
    throw Error(fmt::format("option --guidance-scale {}: the teacher {} is unconditional", c.guidance_scale,
                            teacher.checkpoint_dir));
  // The data must fit the teacher (shape, labels for a conditional model), before any work.
  auto with_data = t;
  with_data.data.path = c.data;
  const auto info = probe_dataset(c.data);
  validate_data_fits_model(with_data, info);
  const auto& s = info.sample_shape;  // images [H, W, C] → the model's [C, H, W]
  const auto data_shape = info.kind == DataKind::kImages ? std::vector<int64_t>{s[2], s[0], s[1]} : s;
  if (data_shape != t.sample_shape)
    throw Error(fmt::format("option --data: {} holds samples of shape [{}], the teacher {} was trained on [{}]",
                            c.data, fmt::join(data_shape, ", "), teacher.checkpoint_dir, fmt::join(t.sample_shape, ", ")));
  if (t.num_classes > 0 && info.num_classes != t.num_classes)
    throw Error(fmt::format("option --data: {} has {} classes, the teacher {} was conditioned on {}", c.data,
                            info.num_classes, teacher.checkpoint_dir, t.num_classes));
}

}  // namespace

DistillResult run_distillation(const DistillConfig& c, MPI_Comm comm, Communicator& communicator) {
  ScopedLogRank log_scope(communicator.rank(), communicator.size());
  const auto first_teacher = load_trained_model(c.teacher, c.teacher_ema, "option --teacher");
  validate(c, first_teacher);
  const bool rank0 = communicator.rank() == 0;
  if (rank0) {
    fs::create_directories(c.out);
    write_file_atomic(c.out + "/distill.ini", c.resolved_text);
    log0("[distill] resolved config (saved to {}/distill.ini):\n{}", c.out, c.resolved_text);
  }
  log0("[distill] teacher {} (step {}, weights {}); rounds {} → {} steps, {} optimiser steps each",
       first_teacher.checkpoint_dir, first_teacher.step, first_teacher.ema, c.start_steps, c.target_steps,
       c.steps_per_round);

  DistillResult result;
  nlohmann::json rounds = nlohmann::json::array();
  std::string teacher_path = c.teacher;
  for (int64_t steps = c.start_steps / 2; steps >= c.target_steps; steps /= 2) {
    // The first round's teacher is the given one; later rounds take the previous student's
    // sampling weights (its slowest EMA, or its raw weights when it keeps none).
    const bool first = steps == c.start_steps / 2;
    const auto teacher = first ? first_teacher : load_trained_model(teacher_path, "", "teacher");
    auto config = student_config(c, teacher, steps);
    log0("[distill] round {} → {} steps: teacher {} ({} steps), student {}", 2 * steps, steps,
         teacher.checkpoint_dir, 2 * steps, config.checkpoint.out);

    DistillationSettings settings;
    settings.student_steps = steps;
    settings.teacher_prediction = teacher.train.diffusion.prediction;
    settings.student_prediction = c.student_prediction;
    settings.clip_x0 = teacher.train.sample_shape.size() == 3;
    settings.guidance_scale = c.guidance_scale;
    settings.num_classes = teacher.train.num_classes;
    settings.channels = teacher.train.sample_shape[0];  // C of [C, H, W], or D of [D]
    const c10::Device device = communicator.device();
    settings.precision = effective_precision(config.runtime.precision, device.type());
    teacher.net->to(device);
    DistillationObjective objective(NoiseSchedule::from_config(teacher.train.diffusion.schedule), teacher.net,
                                    settings);
    Trainer trainer(config, comm, communicator, &objective);
    const auto trained = trainer.run();
    if (trained.stopped_by_signal) {
      log0("[distill] stopped during the round to {} steps; the same command resumes it", steps);
      result.stopped_by_signal = true;
      return result;
    }
    rounds.push_back({{"student_steps", steps},
                      {"teacher", teacher.checkpoint_dir},
                      {"teacher_weights", teacher.ema},
                      {"run", config.checkpoint.out},
                      {"timesteps", student_timesteps(teacher.train.diffusion.schedule.timesteps, steps)}});
    if (rank0) write_file_atomic(c.out + "/distill.json", nlohmann::json{{"rounds", rounds}}.dump(2) + "\n");
    result.students.push_back(config.checkpoint.out);
    teacher_path = config.checkpoint.out;
  }
  log0("[distill] done: students {}", fmt::join(result.students, ", "));
  return result;
}

}  // namespace diffusion
