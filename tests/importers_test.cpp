// Tests of the importers (IDX, CIFAR-10, image folders), the toy sets and inspect, on inputs
// built byte by byte here, so every expected value is known independently of the code.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include "core/base/error.h"
#include "core/base/rng.h"
#include "datasets/cifar_import.h"
#include "datasets/dataset_file.h"
#include "datasets/idx_import.h"
#include "datasets/image_import.h"
#include "datasets/inspect.h"
#include "datasets/toy_sets.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::ScratchDir;
using testing::expect_error;
namespace fs = std::filesystem;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(f);
}

// IDX bytes: 0x00 0x00 0x08 <rank>, big-endian dims, payload.
std::string idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload) {
  std::string s{'\0', '\0', '\x08', static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int shift : {24, 16, 8, 0}) s.push_back(static_cast<char>((d >> shift) & 0xff));
  s.append(payload.begin(), payload.end());
  return s;
}

// Only the output folder's own inputs may remain after a failed import: no output, no temp.
void expect_no_output(const ScratchDir& dir, const std::string& out_name) {
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().rfind(out_name, 0), std::string::npos)
        << "left behind: " << entry.path();
}

// --- IDX --------------------------------------------------------------------------------------

struct IdxFixture {
  static constexpr uint32_t kN = 5, kRows = 3, kCols = 4;
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> labels{3, 0, 9, 1, 3};
  IdxFixture() {
    for (uint32_t i = 0; i < kN * kRows * kCols; ++i) pixels.push_back(static_cast<uint8_t>(i * 7 + 1));
  }
  std::string images() const { return idx_bytes({kN, kRows, kCols}, pixels); }
  std::string label_bytes() const { return idx_bytes({kN}, labels); }
};

void check_idx_output(const std::string& path, const IdxFixture& fx) {
  DatasetReader reader(path);
  const DatasetInfo& info = reader.info();
  EXPECT_EQ(info.kind, DataKind::kImages);
  EXPECT_EQ(info.num_samples, 5);
  EXPECT_EQ(info.sample_shape, (std::vector<int64_t>{3, 4, 1}));
  std::vector<uint8_t> pixels(5 * 12);
  reader.read_images_range(0, 5, pixels.data());
  EXPECT_EQ(pixels, fx.pixels);
  std::vector<int64_t> labels(5);
  reader.read_labels({0, 1, 2, 3, 4}, labels.data());
  EXPECT_EQ(labels, (std::vector<int64_t>{3, 0, 9, 1, 3}));
}

TEST(IdxImportTest, RawAndGzippedFilesGiveTheSameValues) {
  ScratchDir dir("idx_import");
  IdxFixture fx;
  write_bytes(dir.file("images-idx3-ubyte"), fx.images());
  write_bytes(dir.file("labels-idx1-ubyte"), fx.label_bytes());
  write_gzip(dir.file("images-idx3-ubyte.gz"), fx.images());
  write_gzip(dir.file("labels-idx1-ubyte.gz"), fx.label_bytes());

  IdxImportOptions raw{dir.file("images-idx3-ubyte"), dir.file("labels-idx1-ubyte"),
                       dir.file("raw.h5"), {}};
  const DatasetInfo info = import_idx(raw);
  EXPECT_EQ(info.num_classes, 10);
  EXPECT_EQ(info.class_names.front(), "0");
  EXPECT_EQ(info.class_names.back(), "9");
  check_idx_output(dir.file("raw.h5"), fx);

  IdxImportOptions gz{dir.file("images-idx3-ubyte.gz"), dir.file("labels-idx1-ubyte.gz"),
                      dir.file("gz.h5"), {}};
  import_idx(gz);
  check_idx_output(dir.file("gz.h5"), fx);
}

TEST(IdxImportTest, ClassNamesFromPathOrOption) {
  EXPECT_EQ(default_idx_class_names("/usr/share/datasets/Fashion-MNIST/train-labels.gz"),
            (std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}));
  EXPECT_EQ(default_idx_class_names("/data/mnist/train-labels").at(7), "7");

  ScratchDir dir("idx_names");
  IdxFixture fx;
  fx.labels = {0, 1, 2, 1, 0};
  write_bytes(dir.file("i"), fx.images());
  write_bytes(dir.file("l"), fx.label_bytes());
  const DatasetInfo info =
      import_idx({dir.file("i"), dir.file("l"), dir.file("named.h5"), {"a", "b", "c"}});
  EXPECT_EQ(info.num_classes, 3);
  EXPECT_EQ(info.class_names, (std::vector<std::string>{"a", "b", "c"}));
  // A label past the given names is refused, naming the labels file.
  expect_error([&] { import_idx({dir.file("i"), dir.file("l"), dir.file("two.h5"), {"a", "b"}}); },
               {dir.file("l"), "label 2", "[0, 2)"});
  expect_no_output(dir, "two.h5");
}

TEST(IdxImportTest, TruncatedAndCorruptFilesAreRejectedNamingTheFile) {
  ScratchDir dir("idx_bad");
  IdxFixture fx;
  const std::string images = fx.images();
  write_bytes(dir.file("labels"), fx.label_bytes());
  auto import = [&](const std::string& images_name) {
    import_idx({dir.file(images_name), dir.file("labels"), dir.file("out.h5"), {}});
  };

  write_bytes(dir.file("short"), images.substr(0, images.size() - 1));
  expect_error([&] { import("short"); }, {dir.file("short"), "truncated", "expected 60 bytes"});
  write_gzip(dir.file("short.gz"), images.substr(0, images.size() - 10));
  expect_error([&] { import("short.gz"); }, {dir.file("short.gz"), "expected 60 bytes", "got 50"});
  write_bytes(dir.file("header"), images.substr(0, 9));
  expect_error([&] { import("header"); }, {dir.file("header"), "truncated IDX header"});
  write_bytes(dir.file("long"), images + "x");
  expect_error([&] { import("long"); }, {dir.file("long"), "more data than the 60 bytes"});

  std::string bad_magic = images;
  bad_magic[0] = '\x1f';
  bad_magic[1] = '\x00';
  write_bytes(dir.file("magic"), bad_magic);
  expect_error([&] { import("magic"); }, {dir.file("magic"), "magic"});
  std::string floats = images;
  floats[2] = '\x0d';
  write_bytes(dir.file("floats"), floats);
  expect_error([&] { import("floats"); }, {dir.file("floats"), "0x0d", "unsigned byte"});
  expect_error([&] { import("labels"); }, {dir.file("labels"), "rank 1", "expected 3"});
  expect_error([&] { import("absent"); }, {dir.file("absent"), "cannot open"});

  // A gzip stream cut in the middle: zlib reports it, and the error names the file.
  const std::string full_gz = dir.file("full.gz");
  std::vector<uint8_t> big(60000);
  KeyedRng rng(3);
  for (auto& b : big) b = static_cast<uint8_t>(rng.below(256));
  write_gzip(full_gz, idx_bytes({100, 20, 30}, big));
  const std::string gz = read_bytes(full_gz);
  write_bytes(dir.file("cut.gz"), gz.substr(0, gz.size() / 2));
  expect_error([&] { import("cut.gz"); }, {dir.file("cut.gz")});

  // Label count differing from the image count.
  write_bytes(dir.file("good"), images);
  write_bytes(dir.file("labels4"), idx_bytes({4}, {0, 1, 2, 3}));
  expect_error([&] { import_idx({dir.file("good"), dir.file("labels4"), dir.file("out.h5"), {}}); },
               {dir.file("labels4"), "4 labels", "expected 5"});
  expect_no_output(dir, "out.h5");
}

TEST(IdxImportTest, ExistingOutputIsRefusedAndUntouched) {
  ScratchDir dir("idx_existing");
  IdxFixture fx;
  write_bytes(dir.file("i"), fx.images());
  write_bytes(dir.file("l"), fx.label_bytes());
  write_bytes(dir.file("out.h5"), "keep me");
  expect_error([&] { import_idx({dir.file("i"), dir.file("l"), dir.file("out.h5"), {}}); },
               {dir.file("out.h5"), "already exists"});
  EXPECT_EQ(read_bytes(dir.file("out.h5")), "keep me");
}

// --- CIFAR-10 -----------------------------------------------------------------------------------

// A record whose pixel at (y, x) of channel c has a value that identifies all three.
std::string cifar_record(uint8_t label, int seed) {
  std::string r(1, static_cast<char>(label));
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) r.push_back(static_cast<char>((c * 85 + y * 7 + x * 3 + seed) & 0xff));
  return r;
}

uint8_t expected_cifar_pixel(int seed, int y, int x, int c) {
  return static_cast<uint8_t>((c * 85 + y * 7 + x * 3 + seed) & 0xff);
}

TEST(CifarImportTest, ChwPlanesBecomeHwc) {
  const std::string record = cifar_record(4, 11);
  std::vector<uint8_t> hwc(kCifarImageBytes);
  cifar_chw_to_hwc(reinterpret_cast<const uint8_t*>(record.data()) + 1, hwc.data());
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      for (int c = 0; c < 3; ++c)
        ASSERT_EQ(hwc[(y * 32 + x) * 3 + c], expected_cifar_pixel(11, y, x, c))
            << "y " << y << " x " << x << " c " << c;
}

TEST(CifarImportTest, BatchesImportWithLabelsAndClassNames) {
  ScratchDir dir("cifar_import");
  // Two records per training batch, one in the test batch; label = 2·batch + record mod 10.
  for (int b = 1; b <= 5; ++b)
    write_bytes(dir.file("data_batch_" + std::to_string(b) + ".bin"),
                cifar_record(static_cast<uint8_t>((2 * b) % 10), b * 10) +
                    cifar_record(static_cast<uint8_t>((2 * b + 1) % 10), b * 10 + 1));
  write_bytes(dir.file("test_batch.bin"), cifar_record(9, 99));

  const DatasetInfo train = import_cifar10({dir.path(), dir.file("train.h5"), CifarSplit::kTrain});
  EXPECT_EQ(train.num_samples, 10);
  EXPECT_EQ(train.sample_shape, (std::vector<int64_t>{32, 32, 3}));
  EXPECT_EQ(train.class_names.at(0), "airplane");
  EXPECT_EQ(train.class_names.at(9), "truck");
  DatasetReader reader(dir.file("train.h5"));
  std::vector<uint8_t> pixels(10 * kCifarImageBytes);
  std::vector<int64_t> labels(10);
  reader.read_images_range(0, 10, pixels.data());
  reader.read_labels_range(0, 10, labels.data());
  for (int b = 1; b <= 5; ++b)
    for (int r = 0; r < 2; ++r) {
      const int row = (b - 1) * 2 + r;
      EXPECT_EQ(labels[row], (2 * b + r) % 10);
      for (int y : {0, 13, 31})
        for (int x : {0, 5, 31})
          for (int c = 0; c < 3; ++c)
            ASSERT_EQ(pixels[row * kCifarImageBytes + (y * 32 + x) * 3 + c],
                      expected_cifar_pixel(b * 10 + r, y, x, c));
    }

  // batches.meta.txt, when present, names the classes (blank lines ignored).
  write_bytes(dir.file("batches.meta.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n");
  const DatasetInfo all = import_cifar10({dir.path(), dir.file("all.h5"), CifarSplit::kAll});
  EXPECT_EQ(all.num_samples, 11);
  EXPECT_EQ(all.class_names.at(9), "j");
  const DatasetInfo test = import_cifar10({dir.path(), dir.file("test.h5"), CifarSplit::kTest});
  EXPECT_EQ(test.num_samples, 1);
}

TEST(CifarImportTest, TruncatedOrMissingBatchIsRejectedNamingTheFile) {
  ScratchDir dir("cifar_bad");
  for (int b = 1; b <= 4; ++b)
    write_bytes(dir.file("data_batch_" + std::to_string(b) + ".bin"), cifar_record(1, b));
  expect_error([&] { import_cifar10({dir.path(), dir.file("out.h5"), CifarSplit::kTrain}); },
               {dir.file("data_batch_5.bin"), "missing"});
  write_bytes(dir.file("data_batch_5.bin"), cifar_record(1, 5) + cifar_record(2, 6).substr(0, 3000));
  expect_error([&] { import_cifar10({dir.path(), dir.file("out.h5"), CifarSplit::kTrain}); },
               {dir.file("data_batch_5.bin"), "truncated", "3073"});
  std::string bad_label = cifar_record(1, 5);
  bad_label[0] = static_cast<char>(10);
  write_bytes(dir.file("data_batch_5.bin"), bad_label);
  expect_error([&] { import_cifar10({dir.path(), dir.file("out.h5"), CifarSplit::kTrain}); },
               {dir.file("data_batch_5.bin"), "label 10"});
  expect_no_output(dir, "out.h5");
  expect_error([&] { import_cifar10({dir.file("nowhere"), dir.file("out.h5"), CifarSplit::kTrain}); },
               {dir.file("nowhere")});
}

// --- image folders ------------------------------------------------------------------------------

// A w×h RGB image whose pixel (x, y) is (10x, 10y, c0): positions are readable from values.
std::vector<uint8_t> coded_image(int w, int h, uint8_t c0) {
  std::vector<uint8_t> p;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      p.push_back(static_cast<uint8_t>(10 * x));
      p.push_back(static_cast<uint8_t>(10 * y));
      p.push_back(c0);
    }
  return p;
}

void write_png(const std::string& path, int w, int h, int channels, const std::vector<uint8_t>& p) {
  ASSERT_NE(stbi_write_png(path.c_str(), w, h, channels, p.data(), w * channels), 0) << path;
}

TEST(ImageImportTest, CentreCropAndLabelsFromSortedSubFolders) {
  ScratchDir dir("image_import");
  const std::string root = dir.file("images");
  fs::create_directories(root + "/cats");
  fs::create_directories(root + "/birds/nested");
  fs::create_directories(root + "/empty");
  // Landscape 6×4: the centre square is columns 1..4. Portrait 4×6: rows 1..4.
  write_png(root + "/cats/wide.png", 6, 4, 3, coded_image(6, 4, 200));
  write_png(root + "/birds/tall.png", 4, 6, 3, coded_image(4, 6, 100));
  // Uniform 8×8 grey (1 channel), resized to 4×4: stays that grey, as RGB.
  write_png(root + "/birds/nested/grey.png", 8, 8, 1, std::vector<uint8_t>(64, 77));
  write_bytes(root + "/cats/notes.txt", "not an image, skipped");

  const DatasetInfo info = import_images({root, dir.file("out.h5"), 4});
  EXPECT_EQ(info.num_samples, 3);
  EXPECT_EQ(info.sample_shape, (std::vector<int64_t>{4, 4, 3}));
  EXPECT_EQ(info.class_names, (std::vector<std::string>{"birds", "cats"}));  // "empty" skipped

  DatasetReader reader(dir.file("out.h5"));
  std::vector<uint8_t> px(3 * 48);
  std::vector<int64_t> labels(3);
  reader.read_images_range(0, 3, px.data());
  reader.read_labels_range(0, 3, labels.data());
  // Sorted paths: birds/nested/grey.png, birds/tall.png, cats/wide.png.
  EXPECT_EQ(labels, (std::vector<int64_t>{0, 0, 1}));
  for (int i = 0; i < 48; ++i) EXPECT_NEAR(px[i], 77, 1) << "grey pixel " << i;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      const uint8_t* tall = &px[48 + (y * 4 + x) * 3];
      EXPECT_EQ(tall[0], 10 * x);
      EXPECT_EQ(tall[1], 10 * (y + 1));
      EXPECT_EQ(tall[2], 100);
      const uint8_t* wide = &px[96 + (y * 4 + x) * 3];
      EXPECT_EQ(wide[0], 10 * (x + 1));
      EXPECT_EQ(wide[1], 10 * y);
      EXPECT_EQ(wide[2], 200);
    }
}

TEST(ImageImportTest, RootImagesAreUnlabelledAndJpegDecodes) {
  ScratchDir dir("image_unlabelled");
  std::vector<uint8_t> red;
  for (int i = 0; i < 16 * 16; ++i) red.insert(red.end(), {220, 30, 40});
  ASSERT_NE(stbi_write_jpg(dir.file("a.jpg").c_str(), 16, 16, 3, red.data(), 95), 0);
  write_png(dir.file("b.PNG"), 16, 16, 3, red);
  const DatasetInfo info = import_images({dir.path(), dir.file("out.h5"), 8});
  EXPECT_FALSE(info.has_labels);
  EXPECT_EQ(info.num_samples, 2);
  std::vector<uint8_t> px(2 * 8 * 8 * 3);
  DatasetReader(dir.file("out.h5")).read_images_range(0, 2, px.data());
  for (size_t i = 0; i < px.size(); i += 3) {
    EXPECT_NEAR(px[i], 220, 6);
    EXPECT_NEAR(px[i + 1], 30, 6);
    EXPECT_NEAR(px[i + 2], 40, 6);
  }
}

TEST(ImageImportTest, BadFoldersAndFilesAreRejected) {
  ScratchDir dir("image_bad");
  const std::string root = dir.file("in");
  fs::create_directories(root + "/dogs");
  write_png(root + "/dogs/ok.png", 4, 4, 3, coded_image(4, 4, 1));
  write_bytes(root + "/dogs/broken.png", "\x89PNG but then nothing");
  expect_error([&] { import_images({root, dir.file("out.h5"), 4}); },
               {root + "/dogs/broken.png", "cannot read image"});
  expect_no_output(dir, "out.h5");
  fs::remove(root + "/dogs/broken.png");

  write_png(root + "/loose.png", 4, 4, 3, coded_image(4, 4, 1));
  expect_error([&] { import_images({root, dir.file("out.h5"), 4}); }, {root, "one layout"});
  expect_error([&] { import_images({dir.file("none"), dir.file("out.h5"), 4}); },
               {dir.file("none"), "does not exist"});
  fs::create_directories(dir.file("blank"));
  expect_error([&] { import_images({dir.file("blank"), dir.file("out.h5"), 4}); },
               {dir.file("blank"), "no PNG or JPEG"});
  expect_no_output(dir, "out.h5");
}

// --- toy sets -----------------------------------------------------------------------------------

TEST(ToySetsTest, GmmRingModesHaveTheirCentreStdAndEqualWeight) {
  ToyOptions options;
  options.num = 40000;
  options.seed = 5;
  const ToySamples s = make_toy(options);
  ASSERT_EQ(s.x.size(), 80000u);
  ASSERT_EQ(s.labels.size(), 40000u);
  std::vector<double> n(8), sx(8), sy(8), sxx(8), syy(8);
  for (size_t i = 0; i < s.labels.size(); ++i) {
    const auto k = static_cast<size_t>(s.labels[i]);
    ASSERT_LT(k, 8u);
    n[k] += 1;
    sx[k] += s.x[2 * i];
    sy[k] += s.x[2 * i + 1];
    sxx[k] += s.x[2 * i] * s.x[2 * i];
    syy[k] += s.x[2 * i + 1] * s.x[2 * i + 1];
  }
  for (size_t k = 0; k < 8; ++k) {
    // Count ~ Binomial(40000, 1/8): sd = sqrt(40000·(1/8)·(7/8)) ≈ 66; allow 5 sd.
    EXPECT_NEAR(n[k], 5000, 330) << "mode " << k;
    const double mx = sx[k] / n[k], my = sy[k] / n[k];
    // Centre k of the ring: 2·(cos 2πk/8, sin 2πk/8); the mean's sd is 0.15/√5000 ≈ 0.002.
    EXPECT_NEAR(mx, 2.0 * std::cos(2 * M_PI * k / 8), 0.012) << "mode " << k;
    EXPECT_NEAR(my, 2.0 * std::sin(2 * M_PI * k / 8), 0.012) << "mode " << k;
    // The std estimate's sd is about 0.15/√(2·5000) ≈ 0.0015.
    EXPECT_NEAR(std::sqrt(sxx[k] / n[k] - mx * mx), 0.15, 0.008) << "mode " << k;
    EXPECT_NEAR(std::sqrt(syy[k] / n[k] - my * my), 0.15, 0.008) << "mode " << k;
  }
}

TEST(ToySetsTest, GmmRingParametersChangeTheRing) {
  ToyOptions options;
  options.num = 9000;
  options.modes = 3;
  options.radius = 5.0;
  options.std = 0.5;
  const ToySamples s = make_toy(options);
  std::vector<double> n(3), sx(3), sr(3);
  for (size_t i = 0; i < s.labels.size(); ++i) {
    const auto k = static_cast<size_t>(s.labels[i]);
    ASSERT_LT(k, 3u);
    n[k] += 1;
    sx[k] += s.x[2 * i];
  }
  EXPECT_EQ(s.class_names.size(), 3u);
  EXPECT_NEAR(sx[0] / n[0], 5.0, 0.05);   // mode 0 at (5, 0)
  EXPECT_NEAR(sx[1] / n[1], -2.5, 0.05);  // mode 1 at 5·(cos 120°, sin 120°)
}

TEST(ToySetsTest, SameSeedSameFileDifferentSeedDifferentFile) {
  ScratchDir dir("toy_files");
  ToyOptions options;
  options.num = 1000;
  options.seed = 17;
  options.out_path = dir.file("a.h5");
  write_toy(options);
  options.out_path = dir.file("b.h5");
  write_toy(options);
  EXPECT_EQ(read_bytes(dir.file("a.h5")), read_bytes(dir.file("b.h5")));
  options.seed = 18;
  options.out_path = dir.file("c.h5");
  write_toy(options);
  EXPECT_NE(read_bytes(dir.file("a.h5")), read_bytes(dir.file("c.h5")));

  DatasetReader a(dir.file("a.h5")), c(dir.file("c.h5"));
  std::vector<float> xa(2000), xc(2000);
  a.read_vectors_range(0, 1000, xa.data());
  c.read_vectors_range(0, 1000, xc.data());
  EXPECT_EQ(xa, make_toy({ToyKind::kGmmRing, 1000, 17, "", 8, 2.0, 0.15, 0.05}).x);
  EXPECT_NE(xa, xc);
  // A smaller set is a prefix of a larger one: each sample has its own stream.
  const auto prefix = make_toy({ToyKind::kGmmRing, 10, 17, "", 8, 2.0, 0.15, 0.05}).x;
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), xa.begin()));
  options.out_path = dir.file("a.h5");
  expect_error([&] { write_toy(options); }, {dir.file("a.h5"), "already exists"});
}

TEST(ToySetsTest, MoonsAndSwissRoll) {
  ToyOptions moons;
  moons.kind = ToyKind::kMoons;
  moons.num = 4000;
  moons.noise = 0.0;
  const ToySamples m = make_toy(moons);
  ASSERT_EQ(m.labels.size(), 4000u);
  EXPECT_EQ(m.class_names.size(), 2u);
  for (size_t i = 0; i < m.labels.size(); ++i) {
    // Without noise every point lies on its half circle of radius 1 (centres (-0.5, -0.25)
    // and (0.5, 0.25) after centring).
    const double cx = m.labels[i] == 0 ? -0.5 : 0.5, cy = m.labels[i] == 0 ? -0.25 : 0.25;
    ASSERT_NEAR(std::hypot(m.x[2 * i] - cx, m.x[2 * i + 1] - cy), 1.0, 1e-5) << i;
    ASSERT_EQ(m.x[2 * i + 1] >= cy - 1e-6, m.labels[i] == 0) << i;
  }
  ToyOptions roll;
  roll.kind = ToyKind::kSwissRoll;
  roll.num = 1000;
  roll.noise = 0.0;
  const ToySamples r = make_toy(roll);
  EXPECT_TRUE(r.labels.empty());
  for (size_t i = 0; i < 1000; ++i) {
    const double radius = std::hypot(r.x[2 * i], r.x[2 * i + 1]) * 5.0;  // = t
    ASSERT_GE(radius, 1.5 * M_PI - 1e-3);
    ASSERT_LE(radius, 4.5 * M_PI + 1e-3);
  }
  EXPECT_EQ(parse_toy_kind("swiss-roll"), ToyKind::kSwissRoll);
  expect_error([] { parse_toy_kind("spiral"); }, {"spiral", "gmm-ring"});
}

// --- inspect ------------------------------------------------------------------------------------

TEST(InspectTest, ReportsShapeHistogramRangeAndVerdict) {
  ScratchDir dir("inspect");
  ToyOptions options;
  options.num = 500;
  options.seed = 1;
  options.out_path = dir.file("toy.h5");
  write_toy(options);
  const ToySamples s = make_toy(options);

  const InspectReport r = inspect_dataset(dir.file("toy.h5"));
  ASSERT_TRUE(r.readable) << r.reason;
  std::vector<int64_t> counts(8);
  for (int64_t k : s.labels) ++counts[k];
  EXPECT_EQ(r.label_counts, counts);
  double lo = 1e9, hi = -1e9, sum = 0;
  for (float v : s.x) {
    lo = std::min<double>(lo, v);
    hi = std::max<double>(hi, v);
    sum += v;
  }
  EXPECT_EQ(r.min, lo);
  EXPECT_EQ(r.max, hi);
  EXPECT_NEAR(r.mean, sum / 1000, 1e-9);
  const std::string text = format_report(r);
  EXPECT_NE(text.find("shape: [500, 2]"), std::string::npos) << text;
  EXPECT_NE(text.find("dtype: float32"), std::string::npos) << text;
  EXPECT_NE(text.find("class 3 (mode 3): " + std::to_string(counts[3])), std::string::npos);
  EXPECT_NE(text.find("trainer can read it: yes"), std::string::npos);

  write_bytes(dir.file("junk.h5"), "junk");
  const InspectReport bad = inspect_dataset(dir.file("junk.h5"));
  EXPECT_FALSE(bad.readable);
  const std::string bad_text = format_report(bad);
  EXPECT_NE(bad_text.find("trainer can read it: no: "), std::string::npos) << bad_text;
  EXPECT_NE(bad_text.find("junk.h5"), std::string::npos) << bad_text;
}

// The mirror check on images built here: a pattern p that is not its own mirror image p', and
// classes whose share of rows facing as the class mean follows by hand.
TEST(InspectTest, MirrorCheckFindsClassesThatFaceOneWay) {
  ScratchDir dir("inspect_mirror");
  const int64_t h = 4, w = 6, c = 2, elements = h * w * c;
  // p: bright on the left, dim on the right, with a ramp so no two columns are alike.
  std::vector<uint8_t> p(static_cast<size_t>(elements)), p_mirror(p.size()), sym(p.size());
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) {
        p[static_cast<size_t>((y * w + x) * c + k)] = static_cast<uint8_t>(200 - 30 * x + 5 * y + k);
        p_mirror[static_cast<size_t>((y * w + (w - 1 - x)) * c + k)] =
            static_cast<uint8_t>(200 - 30 * x + 5 * y + k);
        sym[static_cast<size_t>((y * w + x) * c + k)] =
            static_cast<uint8_t>(50 + 20 * std::min(x, w - 1 - x) + y);
      }
  // class 0: 8 rows of p (all one way: share 1); class 1: p and p' alternating (the mean is its
  // own mirror image, every row ties: 0.5); class 2: symmetric rows (0.5); class 3: 6 rows of p
  // and 2 of p' (the mean's m - mirror(m) is (p - p')/2, so the p rows face as the mean: 0.75).
  std::vector<uint8_t> rows;
  std::vector<int64_t> labels;
  const auto add = [&](const std::vector<uint8_t>& img, int64_t label) {
    rows.insert(rows.end(), img.begin(), img.end());
    labels.push_back(label);
  };
  for (int i = 0; i < 8; ++i) add(p, 0);
  for (int i = 0; i < 8; ++i) add(i % 2 ? p_mirror : p, 1);
  for (int i = 0; i < 8; ++i) add(sym, 2);
  for (int i = 0; i < 8; ++i) add(i < 6 ? p : p_mirror, 3);
  DatasetSpec spec;
  spec.kind = DataKind::kImages;
  spec.sample_shape = {h, w, c};
  spec.has_labels = true;
  spec.num_classes = 5;  // class 4 has no rows
  spec.class_names = {"left", "both", "symmetric", "mostly left", "none"};
  {
    DatasetWriter writer(dir.file("labelled.h5"), spec);
    writer.append_images(rows.data(), labels.data(), static_cast<int64_t>(labels.size()));
    writer.commit();
  }
  const InspectReport r = inspect_dataset(dir.file("labelled.h5"));
  ASSERT_TRUE(r.readable) << r.reason;
  ASSERT_EQ(r.facing_share.size(), 5u);
  EXPECT_EQ(r.facing_share[0], 1.0);
  EXPECT_EQ(r.facing_share[1], 0.5);
  EXPECT_EQ(r.facing_share[2], 0.5);
  EXPECT_EQ(r.facing_share[3], 0.75);
  const std::string text = format_report(r);
  EXPECT_NE(text.find("class 0 (left): 8, facing as the class mean: 1.000"), std::string::npos) << text;
  EXPECT_NE(text.find("class 3 (mostly left): 8, facing as the class mean: 0.750"), std::string::npos) << text;
  EXPECT_NE(text.find("class 4 (none): 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("class 0 (left) faces one way"), std::string::npos) << text;
  EXPECT_NE(text.find("random-flip would train on mirror images"), std::string::npos) << text;

  // Unlabelled: one group. Only the symmetric rows: no orientation at all.
  spec.has_labels = false;
  spec.num_classes = 0;
  spec.class_names.clear();
  {
    DatasetWriter writer(dir.file("symmetric.h5"), spec);
    writer.append_images(sym.data(), nullptr, 1);
    writer.append_images(sym.data(), nullptr, 1);
    writer.commit();
  }
  const InspectReport u = inspect_dataset(dir.file("symmetric.h5"));
  ASSERT_TRUE(u.readable) << u.reason;
  ASSERT_EQ(u.facing_share.size(), 1u);
  EXPECT_EQ(u.facing_share[0], 0.5);
  EXPECT_NE(format_report(u).find("the images do not face one way"), std::string::npos) << format_report(u);

  // Vectors have no mirror image: no check.
  ToyOptions options;
  options.num = 10;
  options.out_path = dir.file("toy.h5");
  write_toy(options);
  EXPECT_TRUE(inspect_dataset(dir.file("toy.h5")).facing_share.empty());
  EXPECT_EQ(format_report(inspect_dataset(dir.file("toy.h5"))).find("mirror check"), std::string::npos);
}

}  // namespace
}  // namespace diffusion
