#include "duplex/volume/metered_volume.h"

#include <chrono>

namespace duplex::volume {

namespace {
using Clock = std::chrono::steady_clock;
}

MeteredVolume::MeteredVolume(std::unique_ptr<BlockVolume> inner, std::shared_ptr<VolumeStats> stats)
    : inner_(std::move(inner)), stats_(std::move(stats)) {}

Task<Status> MeteredVolume::read(std::uint64_t offset, std::span<std::byte> buf) {
  const auto t0 = Clock::now();
  Status st = co_await inner_->read(offset, buf);
  stats_->record(IoOp::read, buf.size(), st.is_ok(), Clock::now() - t0);
  co_return st;
}

Task<Status> MeteredVolume::write(std::uint64_t offset, std::span<const std::byte> buf, bool fua) {
  const auto t0 = Clock::now();
  Status st = co_await inner_->write(offset, buf, fua);
  stats_->record(IoOp::write, buf.size(), st.is_ok(), Clock::now() - t0);
  co_return st;
}

Task<Status> MeteredVolume::flush() {
  const auto t0 = Clock::now();
  Status st = co_await inner_->flush();
  stats_->record(IoOp::flush, 0, st.is_ok(), Clock::now() - t0);
  co_return st;
}

Task<Status> MeteredVolume::trim(std::uint64_t offset, std::uint64_t length) {
  const auto t0 = Clock::now();
  Status st = co_await inner_->trim(offset, length);
  stats_->record(IoOp::trim, length, st.is_ok(), Clock::now() - t0);
  co_return st;
}

Task<Status> MeteredVolume::write_zeroes(std::uint64_t offset, std::uint64_t length, bool no_unmap,
                                         bool fua) {
  const auto t0 = Clock::now();
  Status st = co_await inner_->write_zeroes(offset, length, no_unmap, fua);
  stats_->record(IoOp::write_zeroes, length, st.is_ok(), Clock::now() - t0);
  co_return st;
}

Task<Result<CompareOutcome>> MeteredVolume::compare_and_write(std::uint64_t offset,
                                                              std::span<const std::byte> expected,
                                                              std::span<const std::byte> data, bool fua) {
  const auto t0 = Clock::now();
  Result<CompareOutcome> r = co_await inner_->compare_and_write(offset, expected, data, fua);
  stats_->record(IoOp::write, data.size(), r.is_ok(), Clock::now() - t0);
  co_return r;
}

}  // namespace duplex::volume
