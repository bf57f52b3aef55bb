#pragma once
// Prometheus text exposition format 0.0.4: families announced by # HELP and # TYPE, samples with
// escaped label values, histograms as cumulative _bucket{le=...} series ending at +Inf plus _sum and
// _count. The caller writes each family's samples together (the format requires it).
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "duplex/volume/volume_stats.h"

namespace duplex::api {

using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

class MetricsWriter {
 public:
  enum class Type { counter, gauge, histogram };

  // Starts a family; later samples belong to it.
  void family(std::string_view name, Type type, std::string_view help);
  void sample(std::string_view name, const Labels& labels, double value);
  void sample(std::string_view name, const Labels& labels, std::uint64_t value);
  // One histogram series: `bounds` are the upper bounds (seconds), `counts` per bucket (not
  // cumulative) with one more entry for +Inf; `sum` in seconds.
  void histogram(std::string_view name, const Labels& labels, const std::vector<double>& bounds,
                 const std::vector<std::uint64_t>& counts, double sum);

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void series(std::string_view name, const Labels& labels, std::string_view extra_key = {},
              std::string_view extra_value = {});
  std::string out_;
};

// Label values: backslash, double quote and newline escaped as the format says.
std::string escape_label_value(std::string_view v);
// HELP text: backslash and newline escaped.
std::string escape_help(std::string_view v);
// A sample value: integers exactly, others shortest round-trip, +Inf/-Inf/NaN spelled out.
std::string format_value(double v);

// The duplex_volume_* families (docs/api.md, "Metrics") for a set of named volumes.
void render_volume_stats(MetricsWriter& w,
                         const std::vector<std::pair<std::string, volume::VolumeStatsSnapshot>>& volumes);

}  // namespace duplex::api
