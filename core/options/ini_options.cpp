// Boost.Program_options over an OptionTable (see ini_options.h): one options_description per
// group with its defaults shown in --help, INI sections mirroring the groups.
#include "core/options/ini_options.h"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/base/error.h"

namespace diffusion {
namespace po = boost::program_options;
namespace {

// INI text ("section.key" in Boost's terms) stored into `vm` under the flat command-line
// names; unknown keys and keys in another group's section are refused. Values already in `vm`
// (the command line) win.
void store_ini(std::istream& in, const std::string& source, const OptionTable& table, po::variables_map& vm,
               const std::set<std::string>& ignored) {
  std::map<std::string, std::string> group_of;
  po::options_description ini_options, flat;
  for (const auto& o : table.specs) {
    group_of[o.key] = o.group;
    ini_options.add_options()(fmt::format("{}.{}", o.group, o.key).c_str(), po::value<std::string>());
    flat.add_options()(o.key, po::value<std::string>());
  }
  po::parsed_options parsed(&ini_options);
  try {
    parsed = po::parse_config_file(in, ini_options, /*allow_unregistered=*/true);
  } catch (const po::error& e) {
    throw Error(fmt::format("{}: {}", source, e.what()));
  }
  std::vector<po::option> kept;
  for (auto opt : parsed.options) {
    const auto dot = opt.string_key.find('.');
    const std::string section = dot == std::string::npos ? "" : opt.string_key.substr(0, dot);
    const std::string key = dot == std::string::npos ? opt.string_key : opt.string_key.substr(dot + 1);
    if (ignored.count(section)) continue;
    const auto it = group_of.find(key);
    if (it == group_of.end())
      throw Error(fmt::format("{}: unknown key '{}' in section [{}]", source, key, section));
    if (it->second != section)
      throw Error(fmt::format("{}: key '{}' belongs in section [{}], found in [{}]", source, key,
                              it->second, section));
    opt.string_key = key;
    opt.unregistered = false;
    kept.push_back(opt);
  }
  parsed.options = kept;
  parsed.description = &flat;
  try {
    po::store(parsed, vm);
  } catch (const po::error& e) {
    throw Error(fmt::format("{}: {}", source, e.what()));
  }
}

// A boolean option (its default is "true" or "false") given as a bare flag means true: the
// command line gets "true" after it unless a true/false word follows already.
bool is_flag(const OptionSpec& o) { return std::string(o.default_value) == "true" || std::string(o.default_value) == "false"; }

std::vector<std::string> expand_bare_flags(int argc, char** argv, const OptionTable& table) {
  std::set<std::string> flags;
  for (const auto& o : table.specs)
    if (is_flag(o)) flags.insert(std::string("--") + o.key);
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    args.emplace_back(argv[i]);
    if (flags.count(args.back()) && (i + 1 >= argc || !is_bool_text(argv[i + 1]))) args.emplace_back("true");
  }
  return args;
}

OptionValues values_of(const po::variables_map& vm, const OptionTable& table) {
  OptionValues out;
  for (const auto& o : table.specs) out[o.key] = vm[o.key].as<std::string>();
  return out;
}

}  // namespace

std::optional<OptionValues> parse_option_table(int argc, char** argv, const OptionTable& table) {
  po::options_description general("general");
  general.add_options()("help,h", "show this help");
  if (table.config_file)
    general.add_options()("config", po::value<std::string>(), "INI file; its [sections] mirror the groups below");
  po::options_description all(table.usage);
  all.add(general);
  for (const auto& g : table.groups) {
    po::options_description group(g);
    for (const auto& o : table.specs)
      if (g == o.group) {
        auto* value = po::value<std::string>()->default_value(o.default_value);
        if (is_flag(o)) value->value_name("[true|false]");
        group.add_options()(o.key, value, o.help);
      }
    all.add(group);
  }
  po::variables_map vm;
  try {
    // Exact names only: Boost would otherwise take --num-sample for --num-samples.
    po::store(po::command_line_parser(expand_bare_flags(argc, argv, table))
                  .options(all)
                  .style(po::command_line_style::unix_style ^ po::command_line_style::allow_guessing)
                  .run(),
              vm);
  } catch (const po::error& e) {
    throw Error(fmt::format("{}: {} (see --help)", table.program, e.what()));
  }
  if (vm.count("help")) {
    std::cout << all << "\n";
    return std::nullopt;
  }
  std::string config_file;
  if (vm.count("config")) {
    config_file = vm["config"].as<std::string>();
    std::ifstream in(config_file);
    if (!in) throw Error(fmt::format("{}: cannot open the config file", config_file));
    store_ini(in, config_file, table, vm, {});
  }
  po::notify(vm);
  auto out = values_of(vm, table);
  out["config"] = config_file;
  return out;
}

OptionValues parse_ini_text(const std::string& text, const std::string& source, const OptionTable& table,
                            const std::set<std::string>& ignored) {
  po::options_description defaults;
  for (const auto& o : table.specs)
    defaults.add_options()(o.key, po::value<std::string>()->default_value(o.default_value));
  po::variables_map vm;
  const char* no_args[] = {"resolved"};
  po::store(po::parse_command_line(1, no_args, defaults), vm);  // defaults, which the text replaces
  std::istringstream in(text);
  store_ini(in, source, table, vm, ignored);
  po::notify(vm);
  return values_of(vm, table);
}

}  // namespace diffusion
