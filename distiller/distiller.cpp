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
#include "core/diffusion/consistency.h"
#include "distiller/distillation_objective.h"
#include "trainer/consistency_objective.h"
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

// The teacher and the data, for either method.
void validate_teacher(const DistillConfig& c, const TrainedModel& teacher);

void validate(const DistillConfig& c, const TrainedModel& teacher) {
  validate_teacher(c, teacher);
  if (c.method == "consistency") return;  // one run on its own grid: the step options do not apply
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
  const int64_t T = t.diffusion.schedule.timesteps;
  if (c.start_steps > T)
    throw Error(fmt::format("option --start-steps: {} exceeds the teacher's T = {} timesteps", c.start_steps, T));
  if (t.distilled.sampling_steps > 0 && t.distilled.sampling_steps != c.start_steps)
    throw Error(fmt::format("option --start-steps {}: the teacher {} is a student that samples in {} steps",
                            c.start_steps, teacher.checkpoint_dir, t.distilled.sampling_steps));
}

void validate_teacher(const DistillConfig& c, const TrainedModel& teacher) {
  const auto& t = teacher.train;
  if (t.model.classifier_classes > 0)
    throw Error(fmt::format("option --teacher: {} is a noisy-sample classifier (objective = classifier), not a "
                            "denoiser", teacher.checkpoint_dir));
  if (t.diffusion.objective == "consistency")
    throw Error(fmt::format("option --teacher: {} is a consistency model (objective = consistency); its outputs are "
                            "not a denoiser's, so it cannot teach", teacher.checkpoint_dir));
  if (c.method == "consistency" && t.distilled.sampling_steps > 0)
    throw Error(fmt::format("option --teacher: {} is a progressive-distillation student ({} steps); consistency "
                            "distillation needs a teacher whose ODE holds at every timestep",
                            teacher.checkpoint_dir, t.distilled.sampling_steps));
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

// Consistency distillation: one trainer run, OUT/consistency, with the teacher's ODE steps as
// targets and the EMA at --target-ema as the target network.
DistillResult run_consistency_distillation(const DistillConfig& c, const TrainedModel& teacher, MPI_Comm comm,
                                           Communicator& communicator) {
  const std::string dir = c.out + "/consistency";
  auto settings = c.student_settings;
  // The target network's EMA is part of the run (checkpointed with it), at the target rate.
  std::string ema_rates;
  for (const auto& s : settings)
    if (s.key == "ema-rates") ema_rates = s.value;
  ema_rates = ema_rates == "none" || ema_rates.empty() ? fmt::format("{}", c.target_ema)
                                                       : fmt::format("{},{}", ema_rates, c.target_ema);
  settings.push_back({"optimiser", "ema-rates", ema_rates});
  settings.push_back({"diffusion", "prediction", to_string(c.student_prediction)});
  settings.push_back({"diffusion", "objective", "consistency"});
  settings.push_back({"diffusion", "p-uncond", "0"});  // the guidance is in the targets
  settings.push_back({"optimiser", "steps", std::to_string(c.steps_per_round)});
  settings.push_back({"checkpoint", "out", dir});
  settings.push_back({"distilled", "method", "consistency"});
  settings.push_back({"distilled", "guidance-scale", fmt::format("{}", c.guidance_scale)});
  // Multistep sampling snaps its time points to this grid, the only timesteps the student learns.
  const auto grid = consistency_grid(NoiseSchedule::from_config(teacher.train.diffusion.schedule), c.consistency_points);
  settings.push_back({"distilled", "grid", fmt::format("{}", fmt::join(grid, ","))});
  const auto text = set_ini_values(remove_ini_section(teacher.train.resolved_text, "distilled"), settings);
  auto config = parse_resolved_config(text, dir + " (student config)");
  config.resolved_text = remove_ini_section(text, "derived");  // the trainer derives it anew

  const c10::Device device = communicator.device();
  DistillationSettings t;
  t.teacher_prediction = teacher.train.diffusion.prediction;
  t.clip_x0 = teacher.train.sample_shape.size() == 3;
  t.guidance_scale = c.guidance_scale;
  t.num_classes = teacher.train.num_classes;
  t.channels = teacher.train.sample_shape[0];
  t.precision = effective_precision(config.runtime.precision, device.type());
  teacher.net->to(device);
  const auto schedule = NoiseSchedule::from_config(teacher.train.diffusion.schedule);
  const auto solver = parse_teacher_solver(c.teacher_solver);
  auto net = teacher.net;
  TeacherStepFn step = [=](const at::Tensor& z_hi, const at::Tensor& t_hi, const at::Tensor& t_lo,
                           const at::Tensor& y) {
    const auto denoise = [&](const at::Tensor& z, const at::Tensor& tt) {
      return teacher_denoise(*net, schedule, t, z, tt, y).first;
    };
    return teacher_ode_step(schedule, solver, denoise, z_hi, t_hi, t_lo);
  };
  // The target network: the student's architecture with the teacher's weights, which the
  // student starts from as well.
  auto target = load_trained_model(c.teacher, c.teacher_ema, "option --teacher").net;
  target->to(device);
  ConsistencySettings k;
  k.prediction = c.student_prediction;
  k.channels = t.channels;
  k.precision = t.precision;
  k.huber_c = config.consistency.huber_c;
  k.points = c.consistency_points;
  k.target_ema = c.target_ema;
  ConsistencyObjective objective(schedule, k, step, target);
  log0("[distill] consistency distillation: teacher {} (step {}, weights {}), {} solver, {}-point grid ({} distinct "
       "timesteps), target EMA {}, {} optimiser steps → {}",
       teacher.checkpoint_dir, teacher.step, teacher.ema, c.teacher_solver, c.consistency_points,
       objective.grid().size(), c.target_ema, c.steps_per_round, dir);
  Trainer trainer(config, comm, communicator, &objective);
  const auto trained = trainer.run();
  DistillResult result;
  if (trained.stopped_by_signal) {
    log0("[distill] stopped during consistency distillation; the same command resumes it");
    result.stopped_by_signal = true;
    return result;
  }
  if (communicator.rank() == 0)
    write_file_atomic(c.out + "/distill.json",
                      nlohmann::json{{"method", "consistency"},
                                     {"teacher", teacher.checkpoint_dir},
                                     {"teacher_weights", teacher.ema},
                                     {"run", dir},
                                     {"teacher_solver", c.teacher_solver},
                                     {"grid_timesteps", objective.grid()},
                                     {"target_ema", c.target_ema}}
                              .dump(2) +
                          "\n");
  result.students.push_back(dir);
  log0("[distill] done: consistency student {}", dir);
  return result;
}

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
  if (c.method == "consistency") return run_consistency_distillation(c, first_teacher, comm, communicator);
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
