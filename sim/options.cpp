// sim/options.cpp — strict hand-written parser for pkv-sim's flags (no exceptions, no aborts).
#include "options.hpp"

#include <charconv>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <system_error>
#include <vector>

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

namespace {

constexpr std::uint32_t kMaxWorkers = 255;  // SeqId packs the worker into 8 bits (simulator.hpp)
constexpr std::uint32_t kMaxFanout = 64;
constexpr std::size_t kMaxBlocks = std::size_t{1} << 24;
constexpr std::size_t kMaxBlockSize = 4096;
constexpr std::size_t kMaxLen = std::size_t{1} << 20;
constexpr std::uint64_t kMaxRequests = 100'000'000;

template <class T>
bool parse_uint(std::string_view s, T& out) {
  if (s.empty() || s.front() == '+' || s.front() == '-') return false;
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return false;
  out = v;
  return true;
}

bool parse_double(std::string_view s, double& out) {
  if (s.empty() || s.front() == '+') return false;
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || !std::isfinite(v)) return false;
  out = v;
  return true;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  for (;;) {
    auto pos = s.find(sep);
    parts.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos) break;
    s.remove_prefix(pos + 1);
  }
  return parts;
}

std::string parse_dataset(std::string_view v, Dataset& out) {
  if (v == "alpaca") {
    out = alpaca_dataset();
    return {};
  }
  if (v == "sharegpt") {
    out = sharegpt_dataset();
    return {};
  }
  auto parts = split(v, ':');
  if (parts.size() == 3 && parts[0] == "fixed") {
    std::size_t p = 0;
    std::size_t o = 0;
    if (!parse_uint(parts[1], p) || !parse_uint(parts[2], o) || p == 0 || o == 0 || p > kMaxLen ||
        o > kMaxLen) {
      return "--dataset fixed:P:O needs whole numbers 1.." + std::to_string(kMaxLen) + ", got '" +
             std::string(v) + "'";
    }
    out = fixed_dataset(p, o);
    return {};
  }
  return "--dataset must be alpaca, sharegpt or fixed:P:O, got '" + std::string(v) + "'";
}

std::string parse_evict(std::string_view v, Options& o) {
  auto parts = split(v, ':');
  const std::string_view head = parts[0];
  if (parts.size() == 1 && head == "lru") {
    o.evict = {EvictionStrategy::lru(), "lru"};
  } else if (parts.size() == 1 && head == "lfu") {
    o.evict = {EvictionStrategy::lfu(), "lfu"};
  } else if (parts.size() == 1 && head == "longest") {
    o.evict = {EvictionStrategy::longest_first(), "longest"};
  } else if (head == "priority" && parts.size() <= 2) {
    std::uint32_t levels = 4;
    if (parts.size() == 2 && (!parse_uint(parts[1], levels) || levels == 0 || levels > 1000000)) {
      return "--evict priority:L needs L in 1..1000000, got '" + std::string(v) + "'";
    }
    o.priority_levels = levels;
    o.evict = {EvictionStrategy::priority(levels), "priority:" + std::to_string(levels)};
  } else if (head == "streaming" && parts.size() == 3) {
    std::size_t s = 0;
    std::size_t w = 0;
    if (!parse_uint(parts[1], s) || !parse_uint(parts[2], w) || s > kMaxLen || w > kMaxLen ||
        s + w == 0) {
      return "--evict streaming:S:W needs sink S and window W in 0.." + std::to_string(kMaxLen) +
             " with S + W > 0, got '" + std::string(v) + "'";
    }
    o.evict = {EvictionStrategy::streaming_llm(s, w),
               "streaming:" + std::to_string(s) + ":" + std::to_string(w)};
  } else {
    return "--evict must be lru, lfu, longest, priority[:L] or streaming:S:W, got '" +
           std::string(v) + "'";
  }
  return {};
}

struct Flag {
  std::string_view name;
  bool takes_value;
  std::function<std::string(std::string_view, Options&)> apply;
};

template <class T>
std::function<std::string(std::string_view, Options&)> uint_flag(std::string_view name,
                                                                 T Options::*field, T lo, T hi) {
  return [name, field, lo, hi](std::string_view v, Options& o) -> std::string {
    T x{};
    if (!parse_uint(v, x) || x < lo || x > hi) {
      return std::string(name) + " needs a whole number in " + std::to_string(lo) + ".." +
             std::to_string(hi) + ", got '" + std::string(v) + "'";
    }
    o.*field = x;
    return {};
  };
}

std::function<std::string(std::string_view, Options&)> double_flag(std::string_view name,
                                                                   double Options::*field,
                                                                   double lo, double hi) {
  return [name, field, lo, hi](std::string_view v, Options& o) -> std::string {
    double x = 0;
    if (!parse_double(v, x) || x < lo || x > hi) {
      std::ostringstream os;
      os << name << " needs a number in " << lo << ".." << hi << ", got '" << v << "'";
      return os.str();
    }
    o.*field = x;
    return {};
  };
}

const std::vector<Flag>& flags() {
  static const std::vector<Flag> table = {
      {"--dataset", true,
       [](std::string_view v, Options& o) { return parse_dataset(v, o.dataset); }},
      {"--requests", true,
       uint_flag<std::uint64_t>("--requests", &Options::requests, 0, kMaxRequests)},
      {"--rate", true, double_flag("--rate", &Options::rate, 0, 1000)},
      {"--n", true, uint_flag<std::uint32_t>("--n", &Options::n, 1, kMaxFanout)},
      {"--beam-width", true,
       uint_flag<std::uint32_t>("--beam-width", &Options::beam_width, 0, kMaxFanout)},
      {"--max-len", true, uint_flag<std::size_t>("--max-len", &Options::max_len, 2, kMaxLen)},
      {"--seed", true,
       uint_flag<std::uint64_t>("--seed", &Options::seed, 0,
                                std::numeric_limits<std::uint64_t>::max())},
      {"--workers", true, uint_flag<std::uint32_t>("--workers", &Options::workers, 1, kMaxWorkers)},
      {"--blocks", true, uint_flag<std::size_t>("--blocks", &Options::blocks, 1, kMaxBlocks)},
      {"--block-size", true,
       uint_flag<std::size_t>("--block-size", &Options::block_size, 1, kMaxBlockSize)},
      {"--max-seqs", true,
       uint_flag<std::size_t>("--max-seqs", &Options::max_seqs, 1, std::size_t{1} << 20)},
      {"--watermark", true, double_flag("--watermark", &Options::watermark, 0, 0.5)},
      {"--evict", true, [](std::string_view v, Options& o) { return parse_evict(v, o); }},
      {"--step-us", true, uint_flag<std::uint64_t>("--step-us", &Options::step_us, 0, 10'000'000)},
      {"--duration", true, double_flag("--duration", &Options::duration_s, 0, 1e6)},
      {"--max-steps", true,
       uint_flag<std::uint64_t>("--max-steps", &Options::max_steps, 0, std::uint64_t{1} << 40)},
      {"--sample-every", true,
       uint_flag<std::uint32_t>("--sample-every", &Options::sample_every, 1, 1000000)},
      {"--plot", true,
       [](std::string_view v, Options& o) -> std::string {
         if (v.empty()) return "--plot needs a file name";
         o.plot_file = std::string(v);
         return {};
       }},
      {"--verify", false,
       [](std::string_view, Options& o) {
         o.verify = true;
         return std::string();
       }},
      {"--json", false,
       [](std::string_view, Options& o) {
         o.json = true;
         return std::string();
       }},
      {"--quiet", false,
       [](std::string_view, Options& o) {
         o.quiet = true;
         return std::string();
       }},
      {"--compare-baseline", false,
       [](std::string_view, Options& o) {
         o.compare_baseline = true;
         return std::string();
       }},
  };
  return table;
}

}  // namespace

std::string usage() {
  return R"(usage: pkv-sim [options]
Simulates a continuous-batching LLM scheduler: --workers threads share one pkv::PagedKvCache.

workload
  --dataset D        alpaca (~19 prompt / 58 output tokens), sharegpt (~161 / 338; default),
                     or fixed:P:O (exact lengths); alpaca/sharegpt lengths are lognormal
  --requests N       requests in total (default 1000; 0 = unlimited, needs --duration/--max-steps)
  --rate R           Poisson arrivals per scheduler step (default 1; 0 = all arrive at step 0)
  --n K              parallel sampling: K outputs share the prompt through fork (default 1)
  --beam-width K     beam search with K beams (default off); not with --n > 1
  --max-len L        prompt + output clamped to L tokens (default 2048)
  --seed S           workload seed (default 42)
engine
  --workers N        scheduler threads sharing the cache (default 2)
  --blocks N         KV blocks in the cache (default 2048)
  --block-size T     tokens per block (default 16)
  --max-seqs N       running sequences over all workers (default 256)
  --watermark F      admission leaves this fraction of blocks free (default 0.01)
  --evict S          lru (default), lfu, longest, priority[:L], streaming:S:W
  --step-us U        simulated model time per step (default 0)
  --duration SEC     stop after SEC seconds of wall time (default: when all requests are done)
  --max-steps N      stop after N scheduler steps (default: no limit)
  --sample-every N   steps between full samples of sharing/waste (default 8)
output
  --verify           write token cookies to a host arena, perform every CopyOp, read every live
                     sequence back through its block table; any mismatch is an error exit
  --json             print the report as JSON on stdout
  --plot FILE.png    plot utilization and running sequences over time (needs gnuplot)
  --compare-baseline run the same workload on the seed design behind one mutex, side by side
  --quiet            no progress output
  --help             this text
)";
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

ParseResult parse_options(std::span<const std::string_view> args) {
  ParseResult r;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    if (a == "--help" || a == "-h") {
      r.kind = ParseResult::Kind::help;
      r.text = usage();
      return r;
    }
    std::string_view name = a;
    std::optional<std::string_view> value;
    if (auto eq = a.find('='); a.starts_with("--") && eq != std::string_view::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
    }
    const Flag* flag = nullptr;
    for (const auto& f : flags()) {
      if (f.name == name) flag = &f;
    }
    if (flag == nullptr) {
      r.kind = ParseResult::Kind::error;
      r.text = "unknown option '" + std::string(a) + "' (see --help)";
      return r;
    }
    if (flag->takes_value && !value) {
      if (i + 1 >= args.size()) {
        r.kind = ParseResult::Kind::error;
        r.text = std::string(name) + " needs a value";
        return r;
      }
      value = args[++i];
    } else if (!flag->takes_value && value) {
      r.kind = ParseResult::Kind::error;
      r.text = std::string(name) + " takes no value";
      return r;
    }
    if (auto err = flag->apply(value.value_or(""), r.options); !err.empty()) {
      r.kind = ParseResult::Kind::error;
      r.text = err;
      return r;
    }
  }
  if (auto err = validate(r.options); !err.empty()) {
    r.kind = ParseResult::Kind::error;
    r.text = err;
  }
  return r;
}

ParseResult parse_options(int argc, const char* const* argv) {
  std::vector<std::string_view> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return parse_options(std::span<const std::string_view>(args));
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
