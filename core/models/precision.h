// Mixed precision for the networks: `--precision fp32|bf16` (the run setting; autocast.h applies
// it). Torch-free, so option parsers include it. Precision is a run setting, not part of the
// model: a checkpoint trained in one precision resumes or samples in the other.
#pragma once

#include <string>

namespace diffusion {

enum class Precision { kFp32, kBf16 };
Precision parse_precision(const std::string& name);  // fp32 | bf16; the error names --precision
std::string to_string(Precision precision);

}  // namespace diffusion
