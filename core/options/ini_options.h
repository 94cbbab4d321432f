// One option table, three sources: defaults, an INI file whose [sections] are the table's
// groups, and the command line (which wins). Shared by the *_options.cpp files of the
// programs; values stay text here and each program converts them with option_values.h, so a
// bad value names its key. Only *_options.cpp files include this (it is the Boost side).
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/options/option_values.h"

namespace diffusion {

using OptionValues = std::map<std::string, std::string>;  // key → value, every key of the table

struct OptionTable {
  std::string program;              // names the program in command-line errors
  std::string usage;                // first line(s) of --help
  std::vector<std::string> groups;  // --help and INI section order
  std::vector<OptionSpec> specs;
  bool config_file = true;          // accept --config FILE.ini
};

// Parses argv (and --config FILE.ini when allowed) against the table. Returns nullopt after
// printing --help. The config file's path, if any, is returned under the key "config".
// Throws diffusion::Error for an unknown key, a key in another group's section, or a
// malformed command line.
std::optional<OptionValues> parse_option_table(int argc, char** argv, const OptionTable& table);

// Parses INI text (e.g. a run's saved resolved config) over the table's defaults; sections in
// `ignored` are skipped. `source` names the text in errors.
OptionValues parse_ini_text(const std::string& text, const std::string& source, const OptionTable& table,
                            const std::set<std::string>& ignored = {});

}  // namespace diffusion
