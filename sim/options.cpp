// sim/options.cpp — what the options mean beyond one flag: the datasets' shapes, the checks of
// combined settings (validate) and the one-line description of a run (describe). The flags
// themselves are parsed in cli.cpp.
#include "options.hpp"

#include <sstream>

namespace pkv::sim {

Dataset alpaca_dataset() {
  Dataset d;
  d.kind = Dataset::Kind::alpaca;
  d.mean_prompt = 19.31;
  d.mean_output = 58.45;
  d.sigma = 0.6;
  d.name = "alpaca";
  return d;
}

Dataset sharegpt_dataset() {
  Dataset d;
  d.kind = Dataset::Kind::sharegpt;
  d.mean_prompt = 161.31;
  d.mean_output = 337.99;
  d.sigma = 0.9;
  d.name = "sharegpt";
  return d;
}

Dataset fixed_dataset(std::size_t prompt, std::size_t output) {
  Dataset d;
  d.kind = Dataset::Kind::fixed;
  d.mean_prompt = static_cast<double>(prompt);
  d.mean_output = static_cast<double>(output);
  d.sigma = 0;
  d.name = "fixed:" + std::to_string(prompt) + ":" + std::to_string(output);
  return d;
}

std::size_t token_workload_size(const Options& o) {
  if (o.trace) return o.trace->requests.size();
  if (o.shared_prefix) return o.shared_prefix->groups * o.shared_prefix->prompts_per_group;
  return 0;
}

void resolve_token_workload(Options& o) {
  if (!o.token_mode()) return;
  const std::uint64_t size = token_workload_size(o);
  if (!o.requests_set || o.requests == 0 || o.requests > size) o.requests = size;
  if (!o.blocks_set) o.blocks = kTokenModeDefaultBlocks;
  if (o.shared_prefix) o.dataset.mean_output = o.output_len;
}

std::string validate(const Options& o) {
  if (o.n > 1 && o.beam_width > 0) return "--n and --beam-width cannot be combined";
  if (o.trace && o.dataset_set) return "--trace replaces --dataset: give one of them";
  if (o.dataset.kind == Dataset::Kind::shared_prefix && !o.shared_prefix)
    return "--dataset shared-prefix: no spec";  // only a hand-built Options can get here
  if (o.token_mode() && (o.n > 1 || o.beam_width > 0)) {
    return "--trace and --dataset shared-prefix run one sequence per request: no --n or "
           "--beam-width";
  }
  if (o.token_mode() && o.evict.strategy.kind() == EvictionStrategy::Kind::streaming_llm) {
    return "--evict streaming stops a sequence's prefix publishing: not with --trace or "
           "--dataset shared-prefix";
  }
  if (!o.capacity_sweep.empty() && !o.token_mode())
    return "--capacity-sweep needs a token workload (--trace or --dataset shared-prefix)";
  if (!o.capacity_sweep.empty() && o.compare_baseline)
    return "--capacity-sweep and --compare-baseline cannot be combined (the seed has no prefix "
           "cache)";
  if (!o.capacity_sweep.empty() && o.verify)
    return "--capacity-sweep and --verify cannot be combined (run --verify at one size)";
  if (o.requests == 0 && o.duration_s <= 0 && o.max_steps == 0) {
    return "--requests 0 (unlimited) needs --duration or --max-steps";
  }
  if (!o.token_mode() && o.dataset.kind == Dataset::Kind::fixed &&
      o.dataset.mean_prompt + o.dataset.mean_output > static_cast<double>(o.max_len)) {
    return "--dataset " + o.dataset.name + " is longer than --max-len " + std::to_string(o.max_len);
  }
  for (const std::size_t b : o.capacity_sweep) {
    if (b * o.block_size > (std::size_t{1} << 32))
      return "--capacity-sweep sizes x --block-size must stay below 2^32 token slots";
  }
  if (o.blocks * o.block_size > (std::size_t{1} << 32)) {
    return "--blocks x --block-size must stay below 2^32 token slots";
  }
  if (o.verify && o.blocks * o.block_size > (std::size_t{1} << 25)) {
    return "--verify keeps one 8-byte cookie per token slot: at most 2^25 slots (--blocks x "
           "--block-size)";
  }
  return {};
}

std::string describe(const Options& o) {
  std::ostringstream os;
  os << "dataset " << o.dataset.name << ", ";
  if (o.requests == 0) {
    os << "unlimited requests";
  } else {
    os << o.requests << " requests";
  }
  if (o.trace) {
    os << ", " << o.time_scale << " trace ms/step";
  } else {
    os << ", rate " << o.rate << "/step";
  }
  if (o.shared_prefix) os << ", output " << o.output_len;
  if (o.n > 1) os << ", n=" << o.n;
  if (o.beam_width > 0) os << ", beam width " << o.beam_width;
  os << "; " << o.workers << (o.workers == 1 ? " worker, " : " workers, ") << o.blocks
     << " blocks x " << o.block_size << " tokens, evict " << o.evict.text << ", seed " << o.seed;
  if (o.step_us > 0) os << ", step " << o.step_us << " us";
  return os.str();
}

}  // namespace pkv::sim
