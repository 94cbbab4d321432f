// diffusion-train's options: INI sections mirror the groups, the command line wins, defaults
// apply, and bad input names the key (and the file).
#include <gtest/gtest.h>

#include <fstream>

#include "core/base/error.h"
#include "datasets/dataset_file.h"
#include "tests/test_utils.h"
#include "trainer/train_options.h"

namespace diffusion {
namespace {

std::optional<TrainConfig> parse(std::vector<std::string> args) {
  args.insert(args.begin(), "diffusion-train");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_train_options(static_cast<int>(argv.size()), argv.data());
}

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse(args);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(TrainOptions, IniSectionsAndCommandLineOverrides) {
  testing::ScratchDir dir("train_options");
  const auto ini = dir.file("run.ini");
  std::ofstream(ini) << "[data]\ndata = a.h5\n[model]\nmodel = mlp\nmlp-hidden = 64\n"
                        "[optimiser]\nbatch-size = 32\nema-rates = 0.999,0.99\nlr = 1e-3\n"
                        "[diffusion]\nschedule = cosine\nprediction = v\n";
  const auto c = parse({"--config", ini, "--batch-size", "48", "--out", "runs/x"});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->data.path, "a.h5");
  EXPECT_EQ(c->model.kind, "mlp");
  EXPECT_EQ(c->model.mlp.hidden, 64);
  EXPECT_EQ(c->optim.batch_size, 48);  // the command line wins over the file
  EXPECT_DOUBLE_EQ(c->optim.lr, 1e-3);
  EXPECT_EQ(c->optim.ema_rates, (std::vector<double>{0.999, 0.99}));
  EXPECT_EQ(c->diffusion.schedule.kind, ScheduleKind::kCosine);
  EXPECT_EQ(c->diffusion.prediction, Prediction::kV);
  EXPECT_EQ(c->checkpoint.out, "runs/x");
  EXPECT_EQ(c->optim.steps, 1000);  // default
  EXPECT_NE(c->resolved_text.find("batch-size = 48"), std::string::npos);
  EXPECT_NE(c->resolved_text.find("[optimiser]"), std::string::npos);
}

TEST(TrainOptions, DdpmDefaultsWithoutAFile) {
  const auto c = parse({"--data", "d.h5", "--out", "o"});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->model.unet.channel_mult, (std::vector<int64_t>{1, 2, 2, 2}));
  EXPECT_EQ(c->model.unet.attention_resolutions, (std::vector<int64_t>{16}));
  EXPECT_EQ(c->diffusion.schedule.timesteps, 1000);
  EXPECT_FALSE(c->diffusion.schedule.beta_start.has_value());
}

TEST(TrainOptions, BadInputNamesTheKey) {
  testing::ScratchDir dir("train_options_bad");
  const auto ini = dir.file("bad.ini");
  std::ofstream(ini) << "[optimiser]\nlearning-rate = 1\n";
  auto e = error_of({"--config", ini});
  EXPECT_NE(e.find("bad.ini"), std::string::npos) << e;
  EXPECT_NE(e.find("learning-rate"), std::string::npos) << e;
  std::ofstream(ini) << "[model]\nbatch-size = 4\n";
  e = error_of({"--config", ini});
  EXPECT_NE(e.find("[optimiser]"), std::string::npos) << e;
  e = error_of({"--steps", "ten"});
  EXPECT_NE(e.find("--steps"), std::string::npos) << e;
  e = error_of({"--no-such-option", "1"});
  EXPECT_NE(e.find("no-such-option"), std::string::npos) << e;
  e = error_of({"--config", dir.file("missing.ini")});
  EXPECT_NE(e.find("missing.ini"), std::string::npos) << e;
}

TEST(TrainConfigValidation, NamesTheKeyAtFault) {
  auto c = parse({"--data", "d.h5", "--out", "o", "--batch-size", "10"});
  ASSERT_TRUE(c);
  EXPECT_NO_THROW(validate_train_config(*c, 2));
  try {
    validate_train_config(*c, 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--batch-size"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("3 ranks"), std::string::npos);
  }
  c->diffusion.schedule.timesteps = 1;
  EXPECT_THROW(validate_train_config(*c, 1), Error);
  c = parse({"--data", "d.h5", "--out", "o", "--batch-size", "8", "--micro-batch", "3"});
  EXPECT_THROW(validate_train_config(*c, 1), Error);
  c = parse({"--data", "d.h5", "--out", "o", "--ema-rates", "1.5"});
  EXPECT_THROW(validate_train_config(*c, 1), Error);
}

TEST(TrainOptions, LrDecayFromIniAndCommandLine) {
  testing::ScratchDir dir("train_options_lr_decay");
  const auto ini = dir.file("run.ini");
  std::ofstream(ini) << "[data]\ndata = a.h5\n[optimiser]\nlr = 1e-2\nlr-decay = cosine\nlr-min = 1e-4\n";
  auto c = parse({"--config", ini, "--out", "o"});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->optim.lr_decay, LrDecay::kCosine);
  EXPECT_DOUBLE_EQ(c->optim.lr_min, 1e-4);
  EXPECT_NE(c->resolved_text.find("lr-decay = cosine"), std::string::npos);
  EXPECT_NO_THROW(validate_train_config(*c, 1));
  c = parse({"--config", ini, "--out", "o", "--lr-decay", "constant"});
  EXPECT_EQ(c->optim.lr_decay, LrDecay::kConstant);
  c = parse({"--data", "a.h5", "--out", "o"});
  EXPECT_EQ(c->optim.lr_decay, LrDecay::kConstant);  // default: the rate the runs before it used
  EXPECT_DOUBLE_EQ(c->optim.lr_min, 0.0);
}

TEST(TrainConfigValidation, LrDecayErrorsNameTheKey) {
  EXPECT_NE(error_of({"--lr-decay", "linear"}).find("--lr-decay"), std::string::npos);
  EXPECT_NE(error_of({"--lr-decay", "linear"}).find("linear"), std::string::npos);
  EXPECT_NE(error_of({"--lr-min", "small"}).find("lr-min"), std::string::npos);
  const auto expect_key = [](const std::vector<std::string>& args, const std::string& key) {
    auto c = parse(args);
    ASSERT_TRUE(c);
    testing::expect_error([&] { validate_train_config(*c, 1); }, {key});
  };
  expect_key({"--data", "d.h5", "--out", "o", "--lr", "1e-3", "--lr-decay", "cosine", "--lr-min", "2e-3"}, "--lr-min");
  expect_key({"--data", "d.h5", "--out", "o", "--lr-min", "-1e-5"}, "--lr-min");
  // A run shorter than its warmup is allowed (smoke runs of a cosine config): it never decays.
  auto c = parse({"--data", "d.h5", "--out", "o", "--lr-decay", "cosine", "--steps", "10", "--warmup", "100"});
  EXPECT_NO_THROW(validate_train_config(*c, 1));
}

TEST(TrainConfigValidation, MinSnrGammaFromIniAndItsErrors) {
  testing::ScratchDir dir("train_options_min_snr");
  const auto ini = dir.file("run.ini");
  std::ofstream(ini) << "[data]\ndata = a.h5\n[diffusion]\nmin-snr-gamma = 5\n";
  auto c = parse({"--config", ini, "--out", "o"});
  ASSERT_TRUE(c);
  EXPECT_DOUBLE_EQ(c->diffusion.min_snr_gamma, 5.0);
  EXPECT_NE(c->resolved_text.find("min-snr-gamma = 5"), std::string::npos);
  EXPECT_NO_THROW(validate_train_config(*c, 1));
  EXPECT_DOUBLE_EQ(parse({"--data", "a.h5", "--out", "o"})->diffusion.min_snr_gamma, 0.0);  // off by default
  EXPECT_NE(error_of({"--min-snr-gamma", "five"}).find("min-snr-gamma"), std::string::npos);
  c = parse({"--data", "d.h5", "--out", "o", "--min-snr-gamma", "-1"});
  testing::expect_error([&] { validate_train_config(*c, 1); }, {"--min-snr-gamma", "-1"});
  c = parse({"--data", "d.h5", "--out", "o", "--min-snr-gamma", "5", "--objective", "classifier"});
  testing::expect_error([&] { validate_train_config(*c, 1); }, {"--min-snr-gamma", "classifier"});
}

TEST(TrainConfigValidation, DatasetMustFitTheModel) {
  auto c = parse({"--data", "d.h5", "--out", "o", "--model", "unet", "--class-cond", "true"});
  DatasetInfo vectors;
  vectors.path = "ring.h5";
  vectors.kind = DataKind::kVectors;
  vectors.sample_shape = {2};
  vectors.num_samples = 10;
  try {
    validate_data_fits_model(*c, vectors);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ring.h5"), std::string::npos);
  }
  DatasetInfo images;
  images.path = "img.h5";
  images.kind = DataKind::kImages;
  images.sample_shape = {28, 28, 1};
  images.num_samples = 10;
  EXPECT_THROW(validate_data_fits_model(*c, images), Error);  // no labels for --class-cond
  images.has_labels = true;
  images.num_classes = 10;
  EXPECT_THROW(validate_data_fits_model(*c, images), Error);  // 28×28 data, --image-size 32
  c->model.unet.image_size = 28;
  EXPECT_NO_THROW(validate_data_fits_model(*c, images));
  c->model.unet.in_channels = 3;
  EXPECT_THROW(validate_data_fits_model(*c, images), Error);
  c = parse({"--data", "d.h5", "--out", "o", "--model", "mlp", "--learned-variance", "true"});
  EXPECT_THROW(validate_data_fits_model(*c, vectors), Error);
}

}  // namespace
}  // namespace diffusion

namespace diffusion {
namespace {

TEST(ResolvedConfig, ReadsBackWhatTheTrainerSavedIncludingTheDataShape) {
  const auto original = parse({"--data", "d.h5", "--out", "o", "--model", "unet", "--base-channels", "32",
                               "--channel-mult", "1,2", "--class-cond", "true", "--prediction", "v",
                               "--timesteps", "500", "--schedule", "cosine"});
  ASSERT_TRUE(original);
  const std::string text = original->resolved_text +
                           "[derived]\nsample-shape = 1,28,28\nnum-classes = 10\nworld-size = 2\n";
  const auto back = parse_resolved_config(text, "run/config.ini");
  EXPECT_EQ(back.model.kind, "unet");
  EXPECT_EQ(back.model.unet.base_channels, 32);
  EXPECT_EQ(back.model.unet.channel_mult, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(back.model.unet.in_channels, 1);
  EXPECT_EQ(back.model.unet.num_classes, 10);
  EXPECT_EQ(back.sample_shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(back.diffusion.prediction, Prediction::kV);
  EXPECT_EQ(back.diffusion.schedule.kind, ScheduleKind::kCosine);
  EXPECT_EQ(back.diffusion.schedule.timesteps, 500);
  EXPECT_EQ(back.optim.steps, original->optim.steps);
  testing::expect_error([&] { parse_resolved_config(original->resolved_text, "run/config.ini"); },
                        {"run/config.ini", "sample-shape"});
  testing::expect_error([&] { parse_resolved_config("[model]\nwidth = 3\n", "x.ini"); }, {"x.ini", "width"});
}

TEST(TrainOptions, BooleanOptionsWorkAsBareFlags) {
  // Bare flag: true, also when another option follows or it ends the line.
  const auto bare = parse({"--data", "a.h5", "--random-flip", "--class-cond", "--out", "runs/x"});
  ASSERT_TRUE(bare);
  EXPECT_TRUE(bare->data.random_flip);
  EXPECT_TRUE(bare->diffusion.class_conditional);
  const auto last = parse({"--data", "a.h5", "--out", "runs/x", "--learned-variance"});
  ASSERT_TRUE(last);
  EXPECT_TRUE(last->diffusion.learned_variance);
  // With a value, as before.
  const auto valued = parse({"--data", "a.h5", "--random-flip", "false", "--class-cond=true", "--out", "runs/x"});
  ASSERT_TRUE(valued);
  EXPECT_FALSE(valued->data.random_flip);
  EXPECT_TRUE(valued->diffusion.class_conditional);
  // A non-boolean option still needs its value.
  EXPECT_NE(error_of({"--data", "a.h5", "--out", "runs/x", "--steps"}).find("steps"), std::string::npos);
}

}  // namespace
}  // namespace diffusion
