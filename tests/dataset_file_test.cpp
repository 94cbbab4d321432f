// Tests of the HDF5 dataset format: write→read round trips in random row orders against values
// generated here, the writer's temp+rename contract, and every bad-input error naming the file
// and the key.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/base/rng.h"
#include "datasets/dataset_file.h"
#include "tests/test_utils.h"

namespace diffusion {
namespace {

using testing::ScratchDir;
using testing::expect_error;
namespace fs = std::filesystem;

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  KeyedRng rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng.below(256));
  return v;
}

std::vector<int64_t> random_rows(size_t n, int64_t num_rows, uint64_t seed) {
  KeyedRng rng(seed);
  std::vector<int64_t> rows(n);
  for (auto& r : rows) r = static_cast<int64_t>(rng.below(static_cast<uint64_t>(num_rows)));
  return rows;
}

// --- raw HDF5 files with chosen (often wrong) layouts ---------------------------------------

class RawFile {
 public:
  explicit RawFile(const std::string& path)
      : id_(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)) {
    EXPECT_GE(id_, 0);
  }
  ~RawFile() { H5Fclose(id_); }

  // A contiguous dataset `name` of file type `type`, filled from `data` (memory type `mem`).
  void dataset(const char* name, hid_t type, const std::vector<hsize_t>& dims, hid_t mem,
               const void* data) {
    hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    hid_t ds = H5Dcreate2(id_, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    size_t n = 1;
    for (auto d : dims) n *= d;
    if (n > 0) {
      EXPECT_GE(H5Dwrite(ds, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    }
    H5Dclose(ds);
    H5Sclose(space);
  }
  void int_attribute(const char* name, int64_t value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(id_, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &value);
    H5Aclose(a);
    H5Sclose(space);
  }
  // Fixed-length, null-padded strings of width `width` (what some tools write).
  void fixed_strings_attribute(const char* name, const std::vector<std::string>& values,
                               size_t width) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, width);
    H5Tset_strpad(type, H5T_STR_NULLPAD);
    const hsize_t count = values.size();
    hid_t space = H5Screate_simple(1, &count, nullptr);
    std::vector<char> raw(values.size() * width, '\0');
    for (size_t i = 0; i < values.size(); ++i)
      std::copy(values[i].begin(), values[i].end(), raw.begin() + static_cast<long>(i * width));
    hid_t a = H5Acreate2(id_, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, type, raw.data());
    H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
  }

 private:
  hid_t id_;
};

// A well-formed small image file with 3 classes, to be broken one piece at a time.
struct GoodImages {
  std::vector<uint8_t> pixels = random_bytes(4 * 2 * 2 * 1, 1);
  std::vector<int64_t> labels{0, 1, 2, 1};
};

// --- round trips ----------------------------------------------------------------------------

TEST(DatasetFileTest, ImagesRoundTripInRandomOrderWithRepeats) {
  ScratchDir dir("dataset_images");
  const std::string path = dir.file("images.h5");
  const int64_t n = 257, h = 5, w = 4, c = 3, e = h * w * c;
  const auto pixels = random_bytes(static_cast<size_t>(n * e), 42);
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = (i * 7) % 10;

  DatasetSpec spec;
  spec.kind = DataKind::kImages;
  spec.sample_shape = {h, w, c};
  spec.has_labels = true;
  spec.num_classes = 10;
  for (int k = 0; k < 10; ++k) spec.class_names.push_back("class " + std::to_string(k));
  spec.chunk_rows = 16;  // many chunks, so runs cross chunk borders
  {
    DatasetWriter writer(path, spec);
    // Uneven appends: the extent grows by odd amounts, not chunk multiples.
    int64_t done = 0;
    for (int64_t part : {13, 100, 1, 143}) {
      writer.append_images(pixels.data() + done * e, labels.data() + done, part);
      done += part;
    }
    EXPECT_EQ(writer.rows_written(), n);
    writer.commit();
  }

  const DatasetInfo info = probe_dataset(path);
  EXPECT_EQ(info.kind, DataKind::kImages);
  EXPECT_EQ(info.num_samples, n);
  EXPECT_EQ(info.sample_shape, (std::vector<int64_t>{h, w, c}));
  EXPECT_EQ(info.sample_elements(), e);
  EXPECT_TRUE(info.has_labels);
  EXPECT_EQ(info.num_classes, 10);
  EXPECT_EQ(info.class_names, spec.class_names);
  EXPECT_EQ(info.describe(), "images uint8 [257, 5, 4, 3], 10 classes");

  DatasetReader reader(path);
  std::vector<int64_t> rows = random_rows(600, n, 7);  // repeats are certain at 600 of 257
  rows.push_back(0);
  rows.push_back(n - 1);
  std::vector<uint8_t> got(rows.size() * e);
  std::vector<int64_t> got_labels(rows.size());
  reader.read_images(rows, got.data());
  reader.read_labels(rows, got_labels.data());
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(got_labels[i], labels[rows[i]]) << "position " << i << ", row " << rows[i];
    for (int64_t j = 0; j < e; ++j)
      ASSERT_EQ(got[i * e + j], pixels[rows[i] * e + j]) << "position " << i << ", row " << rows[i];
  }

  std::vector<uint8_t> range((100 - 37) * e);
  reader.read_images_range(37, 100, range.data());
  EXPECT_TRUE(std::equal(range.begin(), range.end(), pixels.begin() + 37 * e));
  std::vector<int64_t> range_labels(n);
  reader.read_labels_range(0, n, range_labels.data());
  EXPECT_EQ(range_labels, labels);
}

TEST(DatasetFileTest, VectorsRoundTripManyRunsUnlabelled) {
  ScratchDir dir("dataset_vectors");
  const std::string path = dir.file("x.h5");
  const int64_t n = 5000, d = 3;
  std::vector<float> x(n * d);
  KeyedRng rng(9);
  for (auto& v : x) v = static_cast<float>(rng.normal() * 10.0);

  DatasetSpec spec;
  spec.kind = DataKind::kVectors;
  spec.sample_shape = {d};
  spec.chunk_rows = 64;
  {
    DatasetWriter writer(path, spec);
    writer.append_vectors(x.data(), nullptr, 3000);
    writer.append_vectors(x.data() + 3000 * d, nullptr, n - 3000);
    writer.commit();
  }
  DatasetReader reader(path);
  EXPECT_FALSE(reader.info().has_labels);
  EXPECT_EQ(reader.info().num_classes, 0);
  EXPECT_EQ(reader.info().describe(), "x float32 [5000, 3], unlabelled");

  // 3000 random rows of 5000: many single rows, many runs of neighbours, many repeats.
  const std::vector<int64_t> rows = random_rows(3000, n, 11);
  std::vector<float> got(rows.size() * d);
  reader.read_vectors(rows, got.data());
  for (size_t i = 0; i < rows.size(); ++i)
    for (int64_t j = 0; j < d; ++j) ASSERT_EQ(got[i * d + j], x[rows[i] * d + j]) << "row " << rows[i];

  std::vector<float> all(n * d);
  reader.read_vectors_range(0, n, all.data());
  EXPECT_EQ(all, x);
  reader.read_vectors({}, nullptr);  // empty request: nothing to do

  expect_error([&] { reader.read_vectors({0, n}, got.data()); }, {"x.h5", "row 5000"});
  expect_error([&] { reader.read_vectors_range(10, n + 1, got.data()); }, {"x.h5", "5001"});
  expect_error([&] { reader.read_images({0}, nullptr); }, {"x.h5", "images"});
  expect_error([&] { reader.read_labels({0}, nullptr); }, {"x.h5", "labels"});
}

TEST(DatasetFileTest, FixedLengthClassNamesAreAccepted) {
  ScratchDir dir("dataset_fixed_names");
  const std::string path = dir.file("fixed.h5");
  GoodImages good;
  {
    RawFile f(path);
    f.dataset("images", H5T_STD_U8LE, {4, 2, 2, 1}, H5T_NATIVE_UINT8, good.pixels.data());
    f.dataset("labels", H5T_STD_I64LE, {4}, H5T_NATIVE_INT64, good.labels.data());
    f.int_attribute("num_classes", 3);
    f.fixed_strings_attribute("class_names", {"cat", "dog", "axolotl"}, 8);
  }
  const DatasetInfo info = probe_dataset(path);
  EXPECT_EQ(info.class_names, (std::vector<std::string>{"cat", "dog", "axolotl"}));
}

// --- writer contract ------------------------------------------------------------------------

DatasetSpec small_vector_spec() {
  DatasetSpec spec;
  spec.kind = DataKind::kVectors;
  spec.sample_shape = {2};
  spec.has_labels = true;
  spec.num_classes = 2;
  return spec;
}

TEST(DatasetFileTest, WriterWithoutCommitLeavesNoFile) {
  ScratchDir dir("dataset_no_commit");
  const std::string path = dir.file("out.h5");
  {
    DatasetWriter writer(path, small_vector_spec());
    const float x[4] = {1, 2, 3, 4};
    const int64_t y[2] = {0, 1};
    writer.append_vectors(x, y, 2);
    EXPECT_FALSE(fs::exists(path)) << "the output name appears only on commit";
  }
  EXPECT_TRUE(fs::is_empty(dir.path())) << "neither output nor temporary file may remain";
}

TEST(DatasetFileTest, CommitWithoutRowsThrowsAndLeavesNoFile) {
  ScratchDir dir("dataset_empty_commit");
  const std::string path = dir.file("empty.h5");
  {
    DatasetWriter writer(path, small_vector_spec());
    expect_error([&] { writer.commit(); }, {"empty.h5", "no rows"});
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(DatasetFileTest, ExistingOutputIsRefusedAndUntouched) {
  ScratchDir dir("dataset_existing");
  const std::string path = dir.file("taken.h5");
  { std::ofstream(path) << "precious"; }
  expect_error([&] { DatasetWriter writer(path, small_vector_spec()); },
               {"taken.h5", "already exists"});
  std::ifstream in(path);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "precious");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(DatasetFileTest, OutputAppearingDuringTheWriteIsNotOverwritten) {
  ScratchDir dir("dataset_race");
  const std::string path = dir.file("raced.h5");
  DatasetWriter writer(path, small_vector_spec());
  const float x[2] = {1, 2};
  const int64_t y[1] = {1};
  writer.append_vectors(x, y, 1);
  { std::ofstream(path) << "the other import's file"; }
  expect_error([&] { writer.commit(); }, {"raced.h5", "refusing to overwrite"});
  std::ifstream in(path);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "the other import's file");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1)
      << "the temporary file must be gone";
}

TEST(DatasetFileTest, WriterRejectsBadRowsNamingTheRow) {
  ScratchDir dir("dataset_bad_rows");
  const std::string path = dir.file("bad.h5");
  DatasetWriter writer(path, small_vector_spec());
  const float x[4] = {1, 2, 3, std::numeric_limits<float>::quiet_NaN()};
  const float ok[4] = {1, 2, 3, 4};
  const int64_t y[2] = {0, 1};
  const int64_t bad_y[2] = {0, 2};
  expect_error([&] { writer.append_vectors(x, y, 2); }, {"bad.h5", "'x'", "row 1"});
  expect_error([&] { writer.append_vectors(ok, bad_y, 2); }, {"bad.h5", "row 1", "[0, 2)"});
  expect_error([&] { writer.append_vectors(ok, nullptr, 2); }, {"bad.h5", "labels"});
  expect_error([&] { writer.append_images(nullptr, nullptr, 1); }, {"bad.h5", "append_images"});
  writer.append_vectors(ok, y, 2);
  writer.commit();
  expect_error([&] { writer.append_vectors(ok, y, 2); }, {"bad.h5", "after commit"});
  EXPECT_EQ(probe_dataset(path).num_samples, 2);
}

TEST(DatasetFileTest, SameRowsGiveByteIdenticalFiles) {
  ScratchDir dir("dataset_reproducible");
  const float x[4] = {1, 2, 3, 4};
  const int64_t y[2] = {0, 1};
  for (const char* name : {"a.h5", "b.h5"}) {
    DatasetWriter writer(dir.file(name), small_vector_spec());
    writer.append_vectors(x, y, 2);
    writer.commit();
  }
  auto bytes = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(dir.file("a.h5")), bytes(dir.file("b.h5")));
}

// --- bad input: each error names the file and the key ---------------------------------------

TEST(DatasetFileTest, MissingFileAndNotHdf5) {
  ScratchDir dir("dataset_missing");
  expect_error([&] { probe_dataset(dir.file("nothing.h5")); }, {"nothing.h5", "does not exist"});
  const std::string text = dir.file("text.h5");
  { std::ofstream(text) << "this is not HDF5\n"; }
  expect_error([&] { DatasetReader reader(text); }, {"text.h5", "not an HDF5 file"});
}

TEST(DatasetFileTest, NeitherOrBothDatasets) {
  ScratchDir dir("dataset_neither");
  GoodImages good;
  const float x[4] = {0, 1, 2, 3};
  {
    RawFile f(dir.file("neither.h5"));
    f.dataset("pixels", H5T_STD_U8LE, {4, 2, 2, 1}, H5T_NATIVE_UINT8, good.pixels.data());
  }
  expect_error([&] { probe_dataset(dir.file("neither.h5")); }, {"neither.h5", "'images'", "'x'"});
  {
    RawFile f(dir.file("both.h5"));
    f.dataset("images", H5T_STD_U8LE, {4, 2, 2, 1}, H5T_NATIVE_UINT8, good.pixels.data());
    f.dataset("x", H5T_IEEE_F32LE, {2, 2}, H5T_NATIVE_FLOAT, x);
  }
  expect_error([&] { probe_dataset(dir.file("both.h5")); }, {"both.h5", "'images'", "'x'"});
}

TEST(DatasetFileTest, WrongRankOrDtype) {
  ScratchDir dir("dataset_rank_dtype");
  GoodImages good;
  std::vector<float> floats(16, 0.5f);
  std::vector<double> doubles(8, 0.5);
  {
    RawFile f(dir.file("images_rank3.h5"));
    f.dataset("images", H5T_STD_U8LE, {4, 2, 2}, H5T_NATIVE_UINT8, good.pixels.data());
  }
  expect_error([&] { probe_dataset(dir.file("images_rank3.h5")); },
               {"images_rank3.h5", "'images'", "rank 3", "rank 4"});
  {
    RawFile f(dir.file("images_float.h5"));
    f.dataset("images", H5T_IEEE_F32LE, {4, 2, 2, 1}, H5T_NATIVE_FLOAT, floats.data());
  }
  expect_error([&] { probe_dataset(dir.file("images_float.h5")); },
               {"images_float.h5", "'images'", "float32", "expected uint8"});
  {
    RawFile f(dir.file("x_double.h5"));
    f.dataset("x", H5T_IEEE_F64LE, {4, 2}, H5T_NATIVE_DOUBLE, doubles.data());
  }
  expect_error([&] { probe_dataset(dir.file("x_double.h5")); },
               {"x_double.h5", "'x'", "float64", "expected float32"});
  {
    RawFile f(dir.file("x_rank1.h5"));
    f.dataset("x", H5T_IEEE_F32LE, {8}, H5T_NATIVE_FLOAT, floats.data());
  }
  expect_error([&] { probe_dataset(dir.file("x_rank1.h5")); },
               {"x_rank1.h5", "'x'", "rank 1", "rank 2"});
}

TEST(DatasetFileTest, ZeroRows) {
  ScratchDir dir("dataset_zero");
  {
    RawFile f(dir.file("zero.h5"));
    f.dataset("x", H5T_IEEE_F32LE, {0, 2}, H5T_NATIVE_FLOAT, nullptr);
  }
  expect_error([&] { probe_dataset(dir.file("zero.h5")); }, {"zero.h5", "'x'", "N = 0"});
}

TEST(DatasetFileTest, BadLabels) {
  ScratchDir dir("dataset_labels");
  GoodImages good;
  auto write = [&](const std::string& name, const std::vector<int64_t>& labels, int64_t classes) {
    RawFile f(dir.file(name));
    f.dataset("images", H5T_STD_U8LE, {4, 2, 2, 1}, H5T_NATIVE_UINT8, good.pixels.data());
    f.dataset("labels", H5T_STD_I64LE, {labels.size()}, H5T_NATIVE_INT64, labels.data());
    if (classes >= 0) f.int_attribute("num_classes", classes);
  };
  write("short.h5", {0, 1, 2}, 3);
  expect_error([&] { probe_dataset(dir.file("short.h5")); },
               {"short.h5", "'labels'", "3 entries", "expected 4"});
  write("too_big.h5", {0, 1, 3, 1}, 3);
  expect_error([&] { probe_dataset(dir.file("too_big.h5")); },
               {"too_big.h5", "'labels'", "row 2", "[0, 3)"});
  write("negative.h5", {0, -1, 2, 1}, 3);
  expect_error([&] { probe_dataset(dir.file("negative.h5")); },
               {"negative.h5", "'labels'", "row 1"});
  write("no_classes.h5", good.labels, -1);
  expect_error([&] { probe_dataset(dir.file("no_classes.h5")); },
               {"no_classes.h5", "num_classes"});
  {
    RawFile f(dir.file("int32.h5"));
    const int32_t labels[4] = {0, 1, 2, 1};
    f.dataset("images", H5T_STD_U8LE, {4, 2, 2, 1}, H5T_NATIVE_UINT8, good.pixels.data());
    f.dataset("labels", H5T_STD_I32LE, {4}, H5T_NATIVE_INT32, labels);
    f.int_attribute("num_classes", 3);
  }
  expect_error([&] { probe_dataset(dir.file("int32.h5")); },
               {"int32.h5", "'labels'", "int32", "expected int64"});
  {
    RawFile f(dir.file("names.h5"));
    f.dataset("images", H5T_STD_U8LE, {4, 2, 2, 1}, H5T_NATIVE_UINT8, good.pixels.data());
    f.dataset("labels", H5T_STD_I64LE, {4}, H5T_NATIVE_INT64, good.labels.data());
    f.int_attribute("num_classes", 3);
    f.fixed_strings_attribute("class_names", {"a", "b"}, 4);
  }
  expect_error([&] { probe_dataset(dir.file("names.h5")); },
               {"names.h5", "'class_names'", "2 names", "num_classes = 3"});
}

TEST(DatasetFileTest, NonFiniteValuesFoundAtReadNamingTheRow) {
  ScratchDir dir("dataset_nan");
  const std::string path = dir.file("nan.h5");
  std::vector<float> x{0, 1, 2, 3, 4, std::nanf(""), 6, std::numeric_limits<float>::infinity()};
  {
    RawFile f(path);
    f.dataset("x", H5T_IEEE_F32LE, {4, 2}, H5T_NATIVE_FLOAT, x.data());
  }
  DatasetReader reader(path);  // the layout is fine; values are checked as they are read
  std::vector<float> out(8);
  reader.read_vectors({1, 0}, out.data());
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + 4), (std::vector<float>{2, 3, 0, 1}));
  expect_error([&] { reader.read_vectors({0, 2}, out.data()); }, {"nan.h5", "'x'", "row 2", "nan"});
  expect_error([&] { reader.read_vectors_range(3, 4, out.data()); },
               {"nan.h5", "'x'", "row 3", "inf"});
}

}  // namespace
}  // namespace diffusion
