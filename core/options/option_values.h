// Converting option values given as text (command line, INI files) to numbers, flags and
// lists, with errors that name the option: shared by every *_options.cpp. Boost- and torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace diffusion {

// One row of a program's option table (llama.cpp's arg table): group, name, default, help.
struct OptionSpec {
  const char* group;
  const char* key;
  const char* default_value;
  const char* help;
};

[[noreturn]] void bad_option_value(const std::string& key, const std::string& value, const char* expected);

int64_t option_int(const std::string& key, const std::string& value);
double option_double(const std::string& key, const std::string& value);
bool is_bool_text(const std::string& value);  // what option_bool accepts
bool option_bool(const std::string& key, const std::string& value);  // true/false, 1/0, yes/no, on/off
std::vector<int64_t> option_int_list(const std::string& key, const std::string& value);  // "1,2,2"
std::vector<double> option_double_list(const std::string& key, const std::string& value);

}  // namespace diffusion
