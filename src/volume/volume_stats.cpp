#include "duplex/volume/volume_stats.h"

#include <algorithm>

namespace duplex::volume {

std::string_view to_string(IoOp op) {
  switch (op) {
    case IoOp::read: return "read";
    case IoOp::write: return "write";
    case IoOp::flush: return "flush";
    case IoOp::trim: return "trim";
    case IoOp::write_zeroes: return "write_zeroes";
  }
  return "unknown";
}

std::optional<std::size_t> latency_index(IoOp op) {
  switch (op) {
    case IoOp::read: return 0;
    case IoOp::write: return 1;
    case IoOp::flush: return 2;
    default: return std::nullopt;
  }
}

void LatencyHistogram::record(std::uint64_t ns) noexcept {
  // A bound is inclusive (Prometheus `le`): 50 µs exactly lands in the first bucket.
  const auto* it = std::lower_bound(kLatencyBoundsNs.begin(), kLatencyBoundsNs.end(), ns);
  const auto i = static_cast<std::size_t>(it - kLatencyBoundsNs.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
}

HistogramSnapshot LatencyHistogram::snapshot() const noexcept {
  HistogramSnapshot s;
  for (std::size_t i = 0; i < kLatencyBuckets; ++i)
    s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  s.count = count_.load(std::memory_order_relaxed);
  s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
  return s;
}

void VolumeStats::record(IoOp op, std::uint64_t bytes, bool ok, std::chrono::nanoseconds elapsed) noexcept {
  Counters& c = ops_[static_cast<std::size_t>(op)];
  c.ops.fetch_add(1, std::memory_order_relaxed);
  if (ok) {
    c.bytes.fetch_add(bytes, std::memory_order_relaxed);
  } else {
    c.errors.fetch_add(1, std::memory_order_relaxed);
  }
  if (auto i = latency_index(op)) {
    const auto ns = elapsed.count() < 0 ? 0 : static_cast<std::uint64_t>(elapsed.count());
    latency_[*i].record(ns);
  }
}

VolumeStatsSnapshot VolumeStats::snapshot() const noexcept {
  VolumeStatsSnapshot s;
  for (std::size_t i = 0; i < kIoOps; ++i) {
    s.ops[i].ops = ops_[i].ops.load(std::memory_order_relaxed);
    s.ops[i].bytes = ops_[i].bytes.load(std::memory_order_relaxed);
    s.ops[i].errors = ops_[i].errors.load(std::memory_order_relaxed);
  }
  for (std::size_t i = 0; i < latency_.size(); ++i) s.latency[i] = latency_[i].snapshot();
  return s;
}

}  // namespace duplex::volume
