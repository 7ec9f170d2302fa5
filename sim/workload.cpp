// sim/workload.cpp — seeded generator, distributions and the request stream.
#include "workload.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace pkv::sim {

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

Rng::Rng(std::uint64_t seed) noexcept {
  std::uint64_t x = seed;
  for (auto& s : s_) {
    x = splitmix64(x);
    s = x;
  }
}

std::uint64_t Rng::next() noexcept {
  auto rotl = [](std::uint64_t v, int k) { return (v << k) | (v >> (64 - k)); };
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() noexcept {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

std::uint64_t Rng::below(std::uint64_t bound) noexcept {
  // Modulo bias is below 2^-40 for the small bounds a simulator uses.
  return next() % bound;
}

double Rng::normal() noexcept {
  double u1 = uniform();
  while (u1 <= 0) u1 = uniform();
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

double Rng::exponential(double mean) noexcept {
  double u = uniform();
  while (u <= 0) u = uniform();
  return -std::log(u) * mean;
}

TokenWorkload::TokenWorkload(const Options& o) : trace_(o.trace) {
  if (!trace_ && o.shared_prefix) prompts_ = generate_shared_prefix(*o.shared_prefix, true, o.seed);
  output_ = o.output_len;
}

std::size_t TokenWorkload::size() const noexcept {
  return trace_ ? trace_->requests.size() : prompts_.size();
}

std::uint32_t TokenWorkload::prompt_length(std::uint64_t id) const {
  return trace_ ? trace_->requests.at(id).input_length
                : static_cast<std::uint32_t>(prompts_.at(id).tokens.size());
}

std::uint32_t TokenWorkload::output_length(std::uint64_t id) const {
  return trace_ ? trace_->requests.at(id).output_length : output_;
}

void TokenWorkload::prompt(std::uint64_t id, std::vector<TokenId>& out) const {
  if (trace_) {
    expand_prompt(trace_->requests.at(id), id, out);
  } else {
    const auto& t = prompts_.at(id).tokens;
    out.assign(t.begin(), t.end());
  }
}

PrefixBound TokenWorkload::bound(std::size_t block_size, std::uint64_t requests) const {
  const std::size_t n = std::min<std::uint64_t>(requests, size());
  if (trace_) {
    if (n == trace_->requests.size()) return infinite_cache_bound(*trace_, block_size);
    Trace head;
    head.source = trace_->source;
    head.requests.assign(trace_->requests.begin(),
                         trace_->requests.begin() + static_cast<std::ptrdiff_t>(n));
    return infinite_cache_bound(head, block_size);
  }
  InfiniteCacheBound b(block_size);
  for (std::size_t i = 0; i < n; ++i) b.add(prompts_[i].tokens);
  return b.result();
}

RequestStream::RequestStream(const Options& options) : options_(options), rng_(options.seed) {
  if (options_.token_mode()) tokens_ = std::make_shared<const TokenWorkload>(options_);
  if (!exhausted() && options_.trace) {
    next_arrival_ = trace_step(0);
  } else if (!exhausted() && options_.rate > 0) {
    clock_ = rng_.exponential(1.0 / options_.rate);
    next_arrival_ = static_cast<std::uint64_t>(clock_);
  }
}

bool RequestStream::exhausted() const noexcept {
  if (tokens_ && drawn_ >= tokens_->size()) return true;
  return options_.requests != 0 && drawn_ >= options_.requests;
}

std::uint32_t RequestStream::draw_length(double mean) {
  if (options_.dataset.kind == Dataset::Kind::fixed) return static_cast<std::uint32_t>(mean);
  // Lognormal with the dataset's mean: mean = exp(mu + sigma^2 / 2).
  const double sigma = options_.dataset.sigma;
  const double mu = std::log(mean) - sigma * sigma / 2;
  const double x = std::exp(mu + sigma * rng_.normal());
  const double clamped = std::clamp(std::round(x), 1.0, static_cast<double>(options_.max_len));
  return static_cast<std::uint32_t>(clamped);
}

std::uint64_t RequestStream::trace_step(std::uint64_t id) const {
  return static_cast<std::uint64_t>(options_.trace->requests.at(id).timestamp_ms /
                                    options_.time_scale);
}

Request RequestStream::next() {
  Request r;
  r.id = drawn_++;
  r.arrival_step = next_arrival_;
  if (tokens_) {
    // Token workloads keep their own lengths (no --max-len clamp: a clamp would cut prefixes).
    r.tokens = tokens_.get();
    r.prompt = tokens_->prompt_length(r.id);
    r.outputs.assign(1, std::max<std::uint32_t>(1, tokens_->output_length(r.id)));
    r.priority = static_cast<std::uint32_t>(rng_.below(options_.priority_levels));
    r.rng_seed = splitmix64(options_.seed ^ splitmix64(r.id));
    if (exhausted()) return r;
    if (options_.trace) {
      next_arrival_ = trace_step(drawn_);
    } else if (options_.rate > 0) {
      clock_ += rng_.exponential(1.0 / options_.rate);
      next_arrival_ = static_cast<std::uint64_t>(clock_);
    }
    return r;
  }
  const auto max_len = static_cast<std::uint32_t>(options_.max_len);
  r.prompt = std::min(draw_length(options_.dataset.mean_prompt), max_len - 1);
  // Every sample of a request decodes the request's output length, as serving benchmarks run
  // (vLLM's: ignore_eos, max_tokens = the dataset's output length).
  const std::uint32_t out = std::min(draw_length(options_.dataset.mean_output), max_len - r.prompt);
  r.outputs.assign(options_.n > 1 ? options_.n : 1, out);
  r.priority = static_cast<std::uint32_t>(rng_.below(options_.priority_levels));
  r.rng_seed = splitmix64(options_.seed ^ splitmix64(r.id));
  if (options_.rate > 0) {
    clock_ += rng_.exponential(1.0 / options_.rate);
    next_arrival_ = static_cast<std::uint64_t>(clock_);
  }
  return r;
}

}  // namespace pkv::sim
