// The project's one dataset format in HDF5 (docs/formats.md): images as `images` uint8
// [N, H, W, C] or vectors as `x` float32 [N, D], optional `labels` int64 [N], file attributes
// `num_classes` and `class_names`, chunked along N. Readers validate on open and name the file
// and key in every error; writers write under a temporary name and rename on commit, so a
// failed import never leaves a half-written file under the output name. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace diffusion {

enum class DataKind { kImages, kVectors };

struct DatasetInfo {
  std::string path;
  DataKind kind = DataKind::kVectors;
  int64_t num_samples = 0;
  std::vector<int64_t> sample_shape;  // images: {H, W, C}; vectors: {D}
  bool has_labels = false;
  int64_t num_classes = 0;  // 0 when the file has no labels
  std::vector<std::string> class_names;  // empty or num_classes names

  int64_t sample_elements() const;  // product of sample_shape
  std::string describe() const;     // e.g. "images uint8 [60000, 28, 28, 1], 10 classes"
};

// Opens `path`, validates the layout (dataset present, rank, dtype, N > 0, labels length and
// range, attributes) and returns what it holds. Throws diffusion::Error naming file and key.
DatasetInfo probe_dataset(const std::string& path);

// Random-access reads of rows. One instance per thread.
class DatasetReader {
 public:
  explicit DatasetReader(const std::string& path);
  ~DatasetReader();
  DatasetReader(const DatasetReader&) = delete;
  DatasetReader& operator=(const DatasetReader&) = delete;

  const DatasetInfo& info() const;

  // Rows `rows` (any order, repeats allowed) into `out`, row-major, sample_elements() values
  // per row, in the order of `rows`. read_vectors throws when a value is not finite, naming
  // the file and the row.
  void read_images(const std::vector<int64_t>& rows, uint8_t* out);
  void read_vectors(const std::vector<int64_t>& rows, float* out);
  void read_labels(const std::vector<int64_t>& rows, int64_t* out);  // requires has_labels

  // Rows [begin, end) in file order: the fast path for loading a whole file into memory.
  void read_images_range(int64_t begin, int64_t end, uint8_t* out);
  void read_vectors_range(int64_t begin, int64_t end, float* out);
  void read_labels_range(int64_t begin, int64_t end, int64_t* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct DatasetSpec {
  DataKind kind = DataKind::kVectors;
  std::vector<int64_t> sample_shape;  // images: {H, W, C}; vectors: {D}
  bool has_labels = false;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
  int64_t chunk_rows = 0;  // 0: chosen from the row size (about 1 MiB per chunk)
};

// Appends rows to a new file at `<path>.tmp-<pid>` and renames it to `path` on commit().
// Refuses an existing `path`. Destroyed without commit(), it removes the temporary file.
class DatasetWriter {
 public:
  DatasetWriter(const std::string& path, const DatasetSpec& spec);
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  // `labels` may be null only when the spec has no labels.
  void append_images(const uint8_t* data, const int64_t* labels, int64_t rows);
  void append_vectors(const float* data, const int64_t* labels, int64_t rows);
  int64_t rows_written() const;
  void commit();  // throws if no row was written (N = 0 is not a dataset)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffusion
