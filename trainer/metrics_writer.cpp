// Metrics records and progress lines (see metrics_writer.h).
#include "trainer/metrics_writer.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <vector>

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

}  // namespace diffusion
