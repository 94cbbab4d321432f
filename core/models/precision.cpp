// Parsing the precision option (see precision.h).
#include "core/models/precision.h"

#include <fmt/format.h>

#include "core/base/error.h"

namespace diffusion {

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  throw Error(fmt::format("option --precision: '{}' is not a precision; expected fp32 or bf16", name));
}

std::string to_string(Precision precision) { return precision == Precision::kBf16 ? "bf16" : "fp32"; }

}  // namespace diffusion
