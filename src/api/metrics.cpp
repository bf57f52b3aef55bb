#include "duplex/api/metrics.h"

#include <fmt/format.h>

#include <cmath>

namespace duplex::api {

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

void MetricsWriter::family(std::string_view name, Type type, std::string_view help) {
  const char* t = type == Type::counter ? "counter" : type == Type::gauge ? "gauge" : "histogram";
  out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(help), name, t);
}

void MetricsWriter::series(std::string_view name, const Labels& labels, std::string_view extra_key,
                           std::string_view extra_value) {
  out_ += name;
  if (labels.empty() && extra_key.empty()) return;
  out_ += '{';
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out_ += ',';
    first = false;
    out_ += fmt::format("{}=\"{}\"", k, escape_label_value(v));
  }
  if (!extra_key.empty()) out_ += fmt::format("{}{}=\"{}\"", first ? "" : ",", extra_key, extra_value);
  out_ += '}';
}

void MetricsWriter::sample(std::string_view name, const Labels& labels, double value) {
  series(name, labels);
  out_ += ' ';
  out_ += format_value(value);
  out_ += '\n';
}

void MetricsWriter::sample(std::string_view name, const Labels& labels, std::uint64_t value) {
  series(name, labels);
  out_ += fmt::format(" {}\n", value);
}

void MetricsWriter::histogram(std::string_view name, const Labels& labels, const std::vector<double>& bounds,
                              const std::vector<std::uint64_t>& counts, double sum) {
  const std::string bucket = fmt::format("{}_bucket", name);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += i < counts.size() ? counts[i] : 0;
    series(bucket, labels, "le", i < bounds.size() ? format_value(bounds[i]) : "+Inf");
    out_ += fmt::format(" {}\n", cumulative);
  }
  series(fmt::format("{}_sum", name), labels);
  out_ += ' ' + format_value(sum) + '\n';
  series(fmt::format("{}_count", name), labels);
  out_ += fmt::format(" {}\n", cumulative);
}

void render_volume_stats(MetricsWriter& w,
                         const std::vector<std::pair<std::string, volume::VolumeStatsSnapshot>>& volumes) {
  using volume::IoOp;
  constexpr IoOp kAll[] = {IoOp::read, IoOp::write, IoOp::flush, IoOp::trim, IoOp::write_zeroes};
  w.family("duplex_volume_ops_total", MetricsWriter::Type::counter,
           "I/O operations completed, by operation.");
  for (const auto& [name, s] : volumes) {
    for (IoOp op : kAll)
      w.sample("duplex_volume_ops_total", {{"volume", name}, {"op", to_string(op)}}, s.op(op).ops);
  }
  w.family("duplex_volume_bytes_total", MetricsWriter::Type::counter, "Bytes read or written successfully.");
  for (const auto& [name, s] : volumes) {
    for (IoOp op : {IoOp::read, IoOp::write})
      w.sample("duplex_volume_bytes_total", {{"volume", name}, {"op", to_string(op)}}, s.op(op).bytes);
  }
  w.family("duplex_volume_errors_total", MetricsWriter::Type::counter,
           "I/O operations that failed, by operation.");
  for (const auto& [name, s] : volumes) {
    for (IoOp op : kAll)
      w.sample("duplex_volume_errors_total", {{"volume", name}, {"op", to_string(op)}}, s.op(op).errors);
  }
  w.family("duplex_volume_latency_seconds", MetricsWriter::Type::histogram,
           "Time from the volume receiving an operation to its completion.");
  std::vector<double> bounds;
  bounds.reserve(volume::kLatencyBoundsNs.size());
  for (auto ns : volume::kLatencyBoundsNs) bounds.push_back(static_cast<double>(ns) / 1e9);
  for (const auto& [name, s] : volumes) {
    for (IoOp op : volume::kTimedOps) {
      const auto& h = s.latency[*volume::latency_index(op)];
      w.histogram("duplex_volume_latency_seconds", {{"volume", name}, {"op", to_string(op)}}, bounds,
                  std::vector<std::uint64_t>(h.buckets.begin(), h.buckets.end()),
                  static_cast<double>(h.sum_ns) / 1e9);
    }
  }
}

}  // namespace duplex::api
