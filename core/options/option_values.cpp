// Option value conversion shared by the programs' option parsers.
#include "core/options/option_values.h"

#include <fmt/core.h>

#include <sstream>

#include "core/base/error.h"

namespace diffusion {
namespace {

template <typename T, typename Convert>
std::vector<T> option_list(const std::string& key, const std::string& value, Convert convert) {
  std::vector<T> out;
  std::stringstream ss(value);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) bad_option_value(key, value, "a comma-separated list");
    out.push_back(convert(key, item));
  }
  if (out.empty()) bad_option_value(key, value, "a comma-separated list");
  return out;
}

}  // namespace

void bad_option_value(const std::string& key, const std::string& value, const char* expected) {
  throw Error(fmt::format("option --{}: '{}' is not {}", key, value, expected));
}

int64_t option_int(const std::string& key, const std::string& value) {
  try {
    size_t used = 0;
    const long long x = std::stoll(value, &used);
    if (used == value.size()) return x;
  } catch (const std::exception&) {
  }
  bad_option_value(key, value, "an integer");
}

double option_double(const std::string& key, const std::string& value) {
  try {
    size_t used = 0;
    const double x = std::stod(value, &used);
    if (used == value.size()) return x;
  } catch (const std::exception&) {
  }
  bad_option_value(key, value, "a number");
}

namespace {
bool is_true_text(const std::string& v) { return v == "true" || v == "1" || v == "yes" || v == "on"; }
bool is_false_text(const std::string& v) { return v == "false" || v == "0" || v == "no" || v == "off"; }
}  // namespace

bool is_bool_text(const std::string& value) { return is_true_text(value) || is_false_text(value); }

bool option_bool(const std::string& key, const std::string& value) {
  if (is_true_text(value)) return true;
  if (is_false_text(value)) return false;
  bad_option_value(key, value, "true or false");
}

std::vector<int64_t> option_int_list(const std::string& key, const std::string& value) {
  return option_list<int64_t>(key, value, option_int);
}

std::vector<double> option_double_list(const std::string& key, const std::string& value) {
  return option_list<double>(key, value, option_double);
}

}  // namespace diffusion
