// RAII owners for HDF5 handles and the H5_CHECK macro. HDF5 prints its own error stack by
// default; we silence that and put the stack's text into the exception instead.
#pragma once

#include <hdf5.h>

#include <string>
#include <utility>

#include "core/base/check.h"

namespace diffusion {

// Text of the calling thread's HDF5 error stack, innermost message last.
std::string h5_error_text();

// Turns off HDF5's automatic stack printing for the calling thread (error stacks are per
// thread in the thread-safe library); idempotent and cheap.
void h5_silence_errors();

#define H5_CHECK(expr)                                                                       \
  ([&]() {                                                                                   \
    auto h5_check_result_ = (expr);                                                          \
    if (h5_check_result_ < 0)                                                                \
      ::diffusion::raise_check_failure("HDF5", #expr, __FILE__, __LINE__,                    \
                                       ::diffusion::h5_error_text());                        \
    return h5_check_result_;                                                                 \
  }())

// Owns one hid_t and closes it with the matching H5xclose; movable, not copyable, and its
// destructor never throws.
template <herr_t (*Close)(hid_t)>
class H5Handle {
 public:
  H5Handle() = default;
  explicit H5Handle(hid_t id) : id_(id) {}
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  H5Handle(H5Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  H5Handle& operator=(H5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  ~H5Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0) Close(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

using H5File = H5Handle<H5Fclose>;
using H5Group = H5Handle<H5Gclose>;
using H5DataSet = H5Handle<H5Dclose>;
using H5DataSpace = H5Handle<H5Sclose>;
using H5DataType = H5Handle<H5Tclose>;
using H5PropList = H5Handle<H5Pclose>;
using H5Attribute = H5Handle<H5Aclose>;

}  // namespace diffusion
