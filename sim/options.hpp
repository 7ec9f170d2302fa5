// sim/options.hpp — pkv-sim's command line: the Options a run takes and the parser.
//
// Contract
//   parse_options() (cli.cpp, with CLI11) never throws and never aborts on bad input: every
//   malformed number, unknown flag, missing value or out-of-range setting comes back as
//   ParseResult::error with a one-line message naming the flag. It touches no globals.
//   validate() and describe() (options.cpp) give the checks of combined settings and a run's
//   one-line description.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "pkv/types.hpp"

namespace pkv::sim {

/// Where prompt and output lengths come from.
struct Dataset {
  enum class Kind : std::uint8_t { alpaca, sharegpt, fixed };
  Kind kind = Kind::sharegpt;
  double mean_prompt = 161.0;  ///< lognormal mean (alpaca/sharegpt) or exact length (fixed)
  double mean_output = 338.0;
  double sigma = 0.8;  ///< lognormal shape (spread); 0 for fixed
  std::string name = "sharegpt";
};

/// Alpaca: the PagedAttention paper reports 19.31 prompt / 58.45 output tokens on average.
Dataset alpaca_dataset();
/// ShareGPT: 161.31 prompt / 337.99 output tokens on average in the paper.
Dataset sharegpt_dataset();
Dataset fixed_dataset(std::size_t prompt, std::size_t output);

/// Whole-sequence eviction strategy as given on the command line.
struct EvictSpec {
  EvictionStrategy strategy = EvictionStrategy::lru();
  std::string text = "lru";
};

struct Options {
  // workload
  Dataset dataset = sharegpt_dataset();
  std::uint64_t requests = 1000;  ///< total requests; 0 = unlimited (needs duration)
  double rate = 1.0;              ///< mean arrivals per scheduler step (Poisson); 0 = all at step 0
  std::uint32_t n = 1;            ///< parallel samples per request (fork)
  std::uint32_t beam_width = 0;   ///< beam search width; 0 = off
  std::size_t max_len = 2048;     ///< prompt + output are clamped to this many tokens
  std::uint64_t seed = 42;
  // engine
  std::uint32_t workers = 2;
  std::size_t blocks = 2048;
  std::size_t block_size = 16;
  std::size_t max_seqs = 256;  ///< running sequences over all workers (vLLM's max_num_seqs)
  double watermark = 0.01;     ///< admission keeps this fraction of blocks free
  EvictSpec evict{};
  std::uint32_t priority_levels = 4;  ///< priority:L (random level per request)
  std::uint64_t step_us = 0;          ///< simulated model time per step and worker (sleep)
  double duration_s = 0;              ///< wall-clock limit; 0 = none
  std::uint64_t max_steps = 0;        ///< scheduler-step limit; 0 = none
  std::uint32_t sample_every = 8;  ///< steps between full samples (sharing, waste, --verify checks)
  // checking and output
  bool verify = false;
  bool json = false;
  bool quiet = false;  ///< no progress output
  bool compare_baseline = false;
  std::string plot_file;  ///< --plot FILE.png
  /// Not a flag: tests set it to run --verify on the seed baseline too, which has no
  /// copy-on-write, to show that the check catches it.
  bool verify_baseline = false;
};

/// Outcome of parsing: options to run with, help text to print (exit 0), or an error (exit 2).
struct ParseResult {
  enum class Kind : std::uint8_t { run, help, error };
  Kind kind = Kind::run;
  Options options{};
  std::string text;  ///< help text or error message
};

ParseResult parse_options(std::span<const std::string_view> args);
ParseResult parse_options(int argc, const char* const* argv);

std::string usage();

/// Checks the combination of settings (also done by parse_options). "" when valid.
std::string validate(const Options& options);

/// One line describing the workload and engine, printed at the top of the report.
std::string describe(const Options& options);

}  // namespace pkv::sim
