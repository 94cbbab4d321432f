// The project's one way to put files on disk so that a crash never leaves them half written:
// small files replaced atomically (temporary name in the same folder, fsync, rename), fsync of
// a folder (which makes the names created or renamed in it durable), and tree removal.
// Torch-free.
#pragma once

#include <string>

namespace diffusion {

// Replaces `path` with `text`: a reader or a crash sees the old file or the new one, never a
// mix. Throws diffusion::Error naming the file when it cannot be written; the temporary is
// removed. Call fsync_path(folder, true) afterwards where the rename itself must survive a
// power cut (the checkpoint protocol does).
void write_file_atomic(const std::string& path, const std::string& text);

// fsync of a file, or of a folder when `directory`.
void fsync_path(const std::string& path, bool directory);

// Removes a file or a folder tree without following symbolic links; nothing when absent.
// Written out instead of std::filesystem::remove_all, whose libtorch-exported copy is broken
// (see the root CMakeLists.txt).
void remove_tree(const std::string& path);

}  // namespace diffusion
