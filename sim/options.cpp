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

std::string validate(const Options& o) {
  if (o.n > 1 && o.beam_width > 0) return "--n and --beam-width cannot be combined";
  if (o.requests == 0 && o.duration_s <= 0 && o.max_steps == 0) {
    return "--requests 0 (unlimited) needs --duration or --max-steps";
  }
  if (o.dataset.kind == Dataset::Kind::fixed &&
      o.dataset.mean_prompt + o.dataset.mean_output > static_cast<double>(o.max_len)) {
    return "--dataset " + o.dataset.name + " is longer than --max-len " + std::to_string(o.max_len);
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
  os << ", rate " << o.rate << "/step";
  if (o.n > 1) os << ", n=" << o.n;
  if (o.beam_width > 0) os << ", beam width " << o.beam_width;
  os << "; " << o.workers << (o.workers == 1 ? " worker, " : " workers, ") << o.blocks
     << " blocks x " << o.block_size << " tokens, evict " << o.evict.text << ", seed " << o.seed;
  if (o.step_us > 0) os << ", step " << o.step_us << " us";
  return os.str();
}

}  // namespace pkv::sim
