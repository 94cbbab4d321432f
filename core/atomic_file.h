// Replacing a small file (manifest, config, progress record, JSON report) so that a reader or a
// crash never sees it half written: a temporary name in the same folder, fsync, rename.
// Torch-free.
#pragma once

#include <string>

namespace diffusion {

// Throws diffusion::Error naming the file when it cannot be written; the temporary is removed.
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace diffusion
