// Guards the link order the build relies on: libtorch.so exports a broken copy of
// std::filesystem::remove_all, so every binary must resolve std:: symbols in libstdc++ first
// (CMakeLists.txt). Linked next to libtorch, this crashed before that fix.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace diffusion {
namespace {

TEST(Toolchain, StdFilesystemRemoveAllWorksInATorchLinkedBinary) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("toolchain-test-" + std::to_string(::getpid()));
  fs::create_directories(root / "a" / "b");
  std::ofstream(root / "a" / "b" / "file.txt") << "x";
  EXPECT_EQ(fs::remove_all(root), 4u);  // root, a, b, file.txt
  EXPECT_FALSE(fs::exists(root));
}

}  // namespace
}  // namespace diffusion
