// Process-wide malloc settings (see allocator.h).
#include "core/base/allocator.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

namespace diffusion {

void tune_allocator() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables && std::strstr(tunables, "glibc.malloc.")) return;
#ifdef M_MMAP_THRESHOLD
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}

}  // namespace diffusion
