// Durable files (see durable_file.h).
#include "core/base/durable_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/base/error.h"

namespace diffusion {

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(fmt::format("{}: cannot write: {}", tmp, std::strerror(errno)));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                  ::fsync(::fileno(f)) == 0;
  std::fclose(f);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error(fmt::format("{}: cannot write: {}", path, why));
  }
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw Error(fmt::format("cannot open '{}' to fsync it: {}", path, std::strerror(errno)));
  const int rc = ::fsync(fd);
  const std::string why = rc != 0 ? std::strerror(errno) : "";
  ::close(fd);
  if (rc != 0) throw Error(fmt::format("fsync of '{}' failed: {}", path, why));
}

void remove_tree(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::symlink_status(path, ec);
  if (ec || status.type() == fs::file_type::not_found) return;
  if (status.type() == fs::file_type::directory) {
    std::vector<std::string> children;
    for (const auto& entry : fs::directory_iterator(path)) children.push_back(entry.path().string());
    for (const auto& child : children) remove_tree(child);
  }
  fs::remove(path);
}

}  // namespace diffusion
