// Edits of a resolved config's INI text ("[section]" lines, then "key = value" lines), the
// canonical form a run records. The distiller builds each student's config by laying its own
// settings over the teacher's text, then reads it back with parse_resolved_config, so a student
// run is configured through exactly the code path of any other run. Torch- and Boost-free.
#pragma once

#include <string>
#include <vector>

namespace diffusion {

struct IniSetting {
  std::string section;  // without brackets
  std::string key;
  std::string value;
};

// Sets each key in its section, replacing the value where the key exists and appending it to
// the section (or a new section at the end) where it does not.
std::string set_ini_values(const std::string& text, const std::vector<IniSetting>& settings);

// Drops "[section]" and its lines.
std::string remove_ini_section(const std::string& text, const std::string& section);

}  // namespace diffusion
