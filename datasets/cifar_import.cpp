// CIFAR-10 binary version (https://www.cs.toronto.edu/~kriz/cifar.html): each record is one
// label byte followed by 1024 red, 1024 green and 1024 blue bytes, each plane row-major.
#include "datasets/cifar_import.h"

#include <fmt/core.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/base/error.h"
#include "core/base/log.h"

namespace diffusion {
namespace {

const std::vector<std::string> kCifar10Names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                "dog",      "frog",       "horse", "ship", "truck"};

// Records are converted and appended this many at a time to bound memory.
constexpr int64_t kRecordsPerAppend = 1000;

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

}  // namespace

CifarSplit parse_cifar_split(const std::string& text) {
  if (text == "train") return CifarSplit::kTrain;
  if (text == "test") return CifarSplit::kTest;
  if (text == "all") return CifarSplit::kAll;
  throw Error(fmt::format("--split '{}': expected train, test or all", text));
}

void cifar_chw_to_hwc(const uint8_t* chw, uint8_t* hwc) {
  constexpr int64_t kPlane = kCifarSide * kCifarSide;
  for (int64_t p = 0; p < kPlane; ++p)
    for (int64_t c = 0; c < 3; ++c) hwc[p * 3 + c] = chw[c * kPlane + p];
}

std::vector<std::string> cifar_batch_names(CifarSplit split) {
  std::vector<std::string> names;
  if (split != CifarSplit::kTest)
    for (int i = 1; i <= 5; ++i) names.push_back(fmt::format("data_batch_{}.bin", i));
  if (split != CifarSplit::kTrain) names.push_back("test_batch.bin");
  return names;
}

std::vector<std::string> cifar_class_names(const std::string& dir) {
  const std::string meta = dir + "/batches.meta.txt";
  std::ifstream in(meta);
  if (!in) return kCifar10Names;
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (!line.empty()) names.push_back(line);
  }
  if (names.empty()) throw Error(fmt::format("{}: no class names in the file", meta));
  return names;
}

DatasetInfo import_cifar10(const CifarImportOptions& options) {
  if (std::filesystem::exists(options.out_path))
    throw Error(fmt::format("output '{}' already exists; refusing to overwrite it",
                            options.out_path));
  if (!std::filesystem::is_directory(options.dir))
    throw Error(fmt::format("CIFAR-10 folder '{}' does not exist (expected the binary batches "
                            "data_batch_1.bin ... from cifar-10-binary.tar.gz)",
                            options.dir));
  // Check every batch before writing anything, so a missing or short file fails fast.
  const std::vector<std::string> batches = cifar_batch_names(options.split);
  std::vector<std::string> paths;
  for (const auto& name : batches) {
    const std::string path = options.dir + "/" + name;
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec)
      throw Error(fmt::format("CIFAR-10 batch '{}' is missing or unreadable: {}", path,
                              ec.message()));
    if (size == 0 || size % kCifarRecordBytes != 0)
      throw Error(fmt::format("{}: truncated or corrupt CIFAR-10 batch: {} bytes is not a whole "
                              "number of {}-byte records (expected {} bytes for 10000 records)",
                              path, size, kCifarRecordBytes, 10000 * kCifarRecordBytes));
    paths.push_back(path);
  }

  const std::vector<std::string> names = cifar_class_names(options.dir);
  DatasetSpec spec;
  spec.kind = DataKind::kImages;
  spec.sample_shape = {kCifarSide, kCifarSide, 3};
  spec.has_labels = true;
  spec.num_classes = static_cast<int64_t>(names.size());
  spec.class_names = names;
  DatasetWriter writer(options.out_path, spec);

  std::vector<uint8_t> records(static_cast<size_t>(kRecordsPerAppend * kCifarRecordBytes));
  std::vector<uint8_t> pixels(static_cast<size_t>(kRecordsPerAppend * kCifarImageBytes));
  std::vector<int64_t> labels(static_cast<size_t>(kRecordsPerAppend));
  for (const auto& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(fmt::format("cannot open CIFAR-10 batch '{}': {}", path, std::strerror(errno)));
    int64_t record_index = 0;
    while (true) {
      in.read(reinterpret_cast<char*>(records.data()), static_cast<std::streamsize>(records.size()));
      const auto got = static_cast<int64_t>(in.gcount());
      if (got == 0) break;
      if (got % kCifarRecordBytes != 0)
        throw Error(fmt::format("{}: truncated CIFAR-10 batch: record {} is incomplete", path,
                                record_index + got / kCifarRecordBytes));
      const int64_t count = got / kCifarRecordBytes;
      for (int64_t r = 0; r < count; ++r) {
        const uint8_t* record = records.data() + r * kCifarRecordBytes;
        if (record[0] >= spec.num_classes)
          throw Error(fmt::format("{}: record {} has label {}, expected a value in [0, {})", path,
                                  record_index + r, record[0], spec.num_classes));
        labels[static_cast<size_t>(r)] = record[0];
        cifar_chw_to_hwc(record + 1, pixels.data() + r * kCifarImageBytes);
      }
      writer.append_images(pixels.data(), labels.data(), count);
      record_index += count;
      if (got < static_cast<int64_t>(records.size())) break;
    }
  }
  writer.commit();
  DatasetInfo info = probe_dataset(options.out_path);
  log0("[data] wrote {}: {}", options.out_path, info.describe());
  return info;
}

}  // namespace diffusion
