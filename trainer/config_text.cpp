// INI text edits (see config_text.h).
#include "trainer/config_text.h"

#include <sstream>

namespace diffusion {
namespace {

struct Section {
  std::string name;
  std::vector<std::string> lines;  // everything after the header, blank lines dropped
};

std::vector<Section> split_sections(const std::string& text) {
  std::vector<Section> out{{"", {}}};
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.front() == '[' && line.back() == ']') {
      out.push_back({line.substr(1, line.size() - 2), {}});
    } else if (!line.empty()) {
      out.back().lines.push_back(line);
    }
  }
  return out;
}

std::string join_sections(const std::vector<Section>& sections) {
  std::string out;
  for (const auto& s : sections) {
    if (s.name.empty() && s.lines.empty()) continue;
    if (!s.name.empty()) out += "[" + s.name + "]\n";
    for (const auto& l : s.lines) out += l + "\n";
    out += "\n";
  }
  return out;
}

std::string key_of(const std::string& line) {
  const auto eq = line.find('=');
  if (eq == std::string::npos) return "";
  auto key = line.substr(0, eq);
  while (!key.empty() && key.back() == ' ') key.pop_back();
  return key;
}

}  // namespace

std::string set_ini_values(const std::string& text, const std::vector<IniSetting>& settings) {
  auto sections = split_sections(text);
  for (const auto& s : settings) {
    Section* target = nullptr;
    for (auto& sec : sections)
      if (sec.name == s.section) target = &sec;
    if (!target) {
      sections.push_back({s.section, {}});
      target = &sections.back();
    }
    const std::string line = s.key + " = " + s.value;
    bool replaced = false;
    for (auto& l : target->lines)
      if (key_of(l) == s.key) {
        l = line;
        replaced = true;
      }
    if (!replaced) target->lines.push_back(line);
  }
  return join_sections(sections);
}

std::string remove_ini_section(const std::string& text, const std::string& section) {
  auto sections = split_sections(text);
  std::vector<Section> kept;
  for (auto& s : sections)
    if (s.name != section) kept.push_back(std::move(s));
  return join_sections(kept);
}

}  // namespace diffusion
