// Metrics records and progress lines (see metrics_writer.h).
#include "trainer/metrics_writer.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <vector>

#include "core/base/durable_file.h"
#include "core/base/error.h"
#include "core/base/log.h"
#include "core/base/text.h"

namespace diffusion {

void MetricsWriter::write(const MetricsRecord& r) const {
  log0("[train] step {}/{} loss {:.5f} grad-norm {:.3f} lr {:.2e} {:.0f} img/s ETA {}{}", r.step, r.total_steps,
       r.loss, r.grad_norm, r.lr, r.images_per_s, format_duration(r.eta_s),
       r.accuracy >= 0 ? fmt::format(" train-accuracy {:.3f}", r.accuracy) : "");
  if (!writes_) return;
  nlohmann::json record = {{"step", r.step},
                                 {"loss", r.loss},
                                 {"grad_norm", r.grad_norm},
                                 {"lr", r.lr},
                                 {"images_per_s", r.images_per_s},
                                 {"images_seen", r.images_seen},
                                 {"skipped_steps", r.skipped_steps},
                                 {"loss_per_t_quarter", std::vector<double>(r.loss_per_t_quarter.begin(),
                                                                            r.loss_per_t_quarter.end())}};
  if (r.accuracy >= 0) record["accuracy"] = r.accuracy;
  std::ofstream metrics(path_, std::ios::app);
  if (!(metrics << record.dump() << "\n"))
    throw Error(fmt::format("{}: cannot append the metrics record", path_));
}

int64_t drop_metrics_after(const std::string& path, int64_t step) {
  if (!std::filesystem::exists(path)) return 0;
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot read the metrics records", path));
  std::string line, kept;
  int64_t dropped = 0;
  while (std::getline(in, line)) {
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool past = !record.is_discarded() && record.is_object() && record.contains("step") &&
                      record["step"].is_number_integer() && record["step"].get<int64_t>() > step;
    if (past) {
      ++dropped;
      continue;
    }
    kept += line;
    kept += '\n';
  }
  if (in.bad()) throw Error(fmt::format("{}: cannot read the metrics records", path));
  if (dropped > 0) write_file_atomic(path, kept);
  return dropped;
}

}  // namespace diffusion
