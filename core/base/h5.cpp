// HDF5 error-stack capture for H5_CHECK.
#include "core/base/h5.h"

#include <fmt/core.h>

namespace diffusion {
namespace {

herr_t append_error(unsigned n, const H5E_error2_t* err, void* data) {
  auto* text = static_cast<std::string*>(data);
  if (!text->empty()) *text += "; ";
  *text += fmt::format("#{} {}(): {}", n, err->func_name ? err->func_name : "?",
                       err->desc ? err->desc : "");
  return 0;
}

}  // namespace

std::string h5_error_text() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, append_error, &text);
  return text.empty() ? std::string("no HDF5 error message") : text;
}

void h5_silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

}  // namespace diffusion
