// sim/histogram.hpp — an HDR-like latency histogram with log-linear buckets.
//
// Contract
//   Values are nanoseconds. Below 16 ns every value has its own bucket; above, each power of two
//   is split into 16 linear sub-buckets, so a reported quantile is within 1/16 (6.25%) of the true
//   value. Not thread-safe: each worker records into its own histogram and they are merged after
//   the workers have joined.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace pkv::sim {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 4;
  static constexpr std::uint64_t kSub = std::uint64_t{1} << kSubBits;
  static constexpr std::size_t kBuckets = kSub + (64 - kSubBits) * kSub;

  void record(std::uint64_t ns) noexcept {
    ++counts_[index_of(ns)];
    ++count_;
    sum_ += ns;
    if (ns > max_) max_ = ns;
  }

  /// `n` samples that share one measured `total_ns` (one call that did n items' work): each
  /// records its share, total_ns / n (total_ns % n of them 1 ns more), so sum() grows by exactly
  /// total_ns and count() by n.
  void record_shared(std::uint64_t total_ns, std::uint64_t n) noexcept {
    if (n == 0) return;
    const std::uint64_t each = total_ns / n;
    const std::uint64_t longer = total_ns % n;
    counts_[index_of(each)] += n - longer;
    if (longer > 0) counts_[index_of(each + 1)] += longer;
    count_ += n;
    sum_ += total_ns;
    const std::uint64_t top = each + (longer > 0 ? 1 : 0);
    if (top > max_) max_ = top;
  }

  void merge(const LatencyHistogram& other) noexcept {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    if (other.max_ > max_) max_ = other.max_;
  }

  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t sum() const noexcept { return sum_; }
  std::uint64_t max() const noexcept { return max_; }
  double mean() const noexcept {
    return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_);
  }

  /// The value at quantile q in [0, 1]: the midpoint of its bucket, never above max(); the top
  /// rank is max() itself. 0 when empty.
  std::uint64_t quantile(double q) const noexcept {
    if (count_ == 0) return 0;
    if (q < 0) q = 0;
    if (q > 1) q = 1;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_ - 1)) + 1;
    if (rank >= count_) return max_;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        const std::uint64_t mid = lower_bound_of(i) + (width_of(i) - 1) / 2;
        return mid < max_ ? mid : max_;
      }
    }
    return max_;
  }

  static std::size_t index_of(std::uint64_t v) noexcept {
    if (v < kSub) return static_cast<std::size_t>(v);
    const int e = std::bit_width(v) - 1;  // e >= kSubBits
    const std::uint64_t sub = (v >> (e - kSubBits)) & (kSub - 1);
    return static_cast<std::size_t>(kSub + static_cast<std::uint64_t>(e - kSubBits) * kSub + sub);
  }
  static std::uint64_t lower_bound_of(std::size_t i) noexcept {
    if (i < kSub) return i;
    const std::uint64_t e = (i - kSub) / kSub + kSubBits;
    const std::uint64_t sub = (i - kSub) % kSub;
    return (std::uint64_t{1} << e) | (sub << (e - kSubBits));
  }
  static std::uint64_t width_of(std::size_t i) noexcept {
    if (i < kSub) return 1;
    const std::uint64_t e = (i - kSub) / kSub + kSubBits;
    return std::uint64_t{1} << (e - kSubBits);
  }

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace pkv::sim
