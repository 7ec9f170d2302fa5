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
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pkv/types.hpp"
#include "trace.hpp"

namespace pkv::sim {

/// Where prompt and output lengths come from.
struct Dataset {
  /// trace (--trace FILE) and shared_prefix carry token ids: the token workloads (prefix caching).
  enum class Kind : std::uint8_t { alpaca, sharegpt, fixed, trace, shared_prefix };
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
  // token workloads (prefix caching, issue 11): prompts are token ids, allocated with
  // allocate(seq, prompt) so that cached prefixes are shared instead of recomputed.
  std::shared_ptr<const Trace> trace;  ///< --trace FILE (Mooncake JSONL), loaded by the parser
  double time_scale = 50;              ///< --time-scale: trace milliseconds per scheduler step
  std::optional<SharedPrefixSpec> shared_prefix;  ///< --dataset shared-prefix:G:P:S:Q
  std::uint32_t output_len = 256;  ///< --output-len: output tokens of each shared-prefix request
  std::vector<std::size_t> capacity_sweep;  ///< --capacity-sweep: cache sizes in blocks
  bool requests_set = false;                ///< --requests given (else a token workload runs all)
  bool blocks_set = false;                  ///< --blocks given (else token workloads use more)
  bool dataset_set = false;                 ///< --dataset given (not with --trace)
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

  /// A workload whose prompts are token ids (--trace, --dataset shared-prefix).
  bool token_mode() const noexcept { return trace != nullptr || shared_prefix.has_value(); }
};

/// --blocks of a token workload when the flag is not given: 2^17 blocks (2M tokens at 16 a
/// block), room for the ~60 Mooncake conversations that run at once at --time-scale 50.
inline constexpr std::size_t kTokenModeDefaultBlocks = std::size_t{1} << 17;

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

/// For a token workload: --requests (unless given) becomes the workload's size (a given count is
/// capped at it), --blocks (unless given) kTokenModeDefaultBlocks, and the shared-prefix output
/// length the dataset's. Nothing for the other workloads. Called by parse_options.
void resolve_token_workload(Options& options);

/// Requests in the token workload (trace lines, or G * P); 0 for the others.
std::size_t token_workload_size(const Options& options);

/// Checks the combination of settings (also done by parse_options). "" when valid.
std::string validate(const Options& options);

/// One line describing the workload and engine, printed at the top of the report.
std::string describe(const Options& options);

}  // namespace pkv::sim
