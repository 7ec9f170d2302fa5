// sim/cli.cpp — pkv-sim's command line, parsed with CLI11: one declaration per flag (its value's
// form, range and help), CLI11's errors rephrased into one line that names the flag.
//
// Every flag takes its value as `--flag V` or `--flag=V`; flags without a value reject one. Numbers
// are strict: whole numbers in decimal without sign, numbers finite; each flag has a range.
// parse_options never throws and never exits (main.cpp prints and picks the exit status).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <sstream>
#include <system_error>
#include <vector>

#include "options.hpp"

namespace pkv::sim {

namespace {

constexpr std::uint32_t kMaxWorkers = 255;  // a sanity bound on scheduler threads
constexpr std::uint32_t kMaxFanout = 64;
constexpr std::size_t kMaxBlocks = std::size_t{1} << 24;
constexpr std::size_t kMaxBlockSize = 4096;
constexpr std::size_t kMaxLen = std::size_t{1} << 20;
constexpr std::uint64_t kMaxRequests = 100'000'000;

// ---- value forms
// ---------------------------------------------------------------------------------

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

// A bad value: CLI11 reports the message as is (it ends the parse).
[[noreturn]] void reject(const std::string& message) {
  throw CLI::ValidationError(message);
}

std::function<void(const std::string&)> whole(const std::string& flag, auto& field, auto lo,
                                              auto hi) {
  using T = std::remove_reference_t<decltype(field)>;
  return [flag, &field, lo = T(lo), hi = T(hi)](const std::string& v) {
    T x{};
    if (!parse_uint(v, x) || x < lo || x > hi)
      reject(flag + " needs a whole number in " + std::to_string(lo) + ".." + std::to_string(hi) +
             ", got '" + v + "'");
    field = x;
  };
}

std::function<void(const std::string&)> number(const std::string& flag, double& field, double lo,
                                               double hi) {
  return [flag, &field, lo, hi](const std::string& v) {
    double x = 0;
    if (!parse_double(v, x) || x < lo || x > hi) {
      std::ostringstream os;
      os << flag << " needs a number in " << lo << ".." << hi << ", got '" << v << "'";
      reject(os.str());
    }
    field = x;
  };
}

void parse_dataset(const std::string& v, Dataset& out) {
  if (v == "alpaca") {
    out = alpaca_dataset();
    return;
  }
  if (v == "sharegpt") {
    out = sharegpt_dataset();
    return;
  }
  auto parts = split(v, ':');
  if (parts[0] == "shared-prefix") {
    std::string why;
    auto spec = parse_shared_prefix(v, &why);
    if (!spec) reject("--dataset " + v + ": " + why);
    out = Dataset{};
    out.kind = Dataset::Kind::shared_prefix;
    out.mean_prompt = static_cast<double>(spec->system_tokens + spec->question_tokens);
    out.sigma = 0;
    out.name = v;
    return;
  }
  if (parts.size() == 3 && parts[0] == "fixed") {
    std::size_t p = 0;
    std::size_t o = 0;
    if (!parse_uint(parts[1], p) || !parse_uint(parts[2], o) || p == 0 || o == 0 || p > kMaxLen ||
        o > kMaxLen) {
      reject("--dataset fixed:P:O needs whole numbers 1.." + std::to_string(kMaxLen) + ", got '" +
             v + "'");
    }
    out = fixed_dataset(p, o);
    return;
  }
  reject("--dataset must be alpaca, sharegpt, fixed:P:O or shared-prefix:G:P:S:Q, got '" + v + "'");
}

// --capacity-sweep: "B1,B2,..." (block counts) or "LO..HI:N" (N counts spaced geometrically
// from LO to HI, both included). Each in 1..kMaxBlocks; the list is sorted, duplicates dropped.
void parse_sweep(const std::string& v, std::vector<std::size_t>& out) {
  const std::string form = "--capacity-sweep needs B1,B2,... or LO..HI:N (block counts 1.." +
                           std::to_string(kMaxBlocks) + ", N in 2..64), got '" + v + "'";
  std::vector<std::size_t> sizes;
  if (const auto dots = v.find(".."); dots != std::string::npos) {
    const auto colon = v.find(':', dots);
    std::size_t lo = 0;
    std::size_t hi = 0;
    std::size_t n = 0;
    if (colon == std::string::npos || !parse_uint(std::string_view(v).substr(0, dots), lo) ||
        !parse_uint(std::string_view(v).substr(dots + 2, colon - dots - 2), hi) ||
        !parse_uint(std::string_view(v).substr(colon + 1), n) || lo == 0 || hi < lo ||
        hi > kMaxBlocks || n < 2 || n > 64) {
      reject(form);
    }
    for (std::size_t i = 0; i < n; ++i) {
      const double x =
          static_cast<double>(lo) * std::pow(static_cast<double>(hi) / static_cast<double>(lo),
                                             static_cast<double>(i) / static_cast<double>(n - 1));
      sizes.push_back(std::clamp<std::size_t>(static_cast<std::size_t>(std::llround(x)), lo, hi));
    }
  } else {
    for (auto part : split(v, ',')) {
      std::size_t b = 0;
      if (!parse_uint(part, b) || b == 0 || b > kMaxBlocks) reject(form);
      sizes.push_back(b);
    }
  }
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  out = std::move(sizes);
}

void parse_evict(const std::string& v, Options& o) {
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
    if (parts.size() == 2 && (!parse_uint(parts[1], levels) || levels == 0 || levels > 1000000))
      reject("--evict priority:L needs L in 1..1000000, got '" + v + "'");
    o.priority_levels = levels;
    o.evict = {EvictionStrategy::priority(levels), "priority:" + std::to_string(levels)};
  } else if (head == "streaming" && parts.size() == 3) {
    std::size_t s = 0;
    std::size_t w = 0;
    if (!parse_uint(parts[1], s) || !parse_uint(parts[2], w) || s > kMaxLen || w > kMaxLen ||
        s + w == 0) {
      reject("--evict streaming:S:W needs sink S and window W in 0.." + std::to_string(kMaxLen) +
             " with S + W > 0, got '" + v + "'");
    }
    o.evict = {EvictionStrategy::streaming_llm(s, w),
               "streaming:" + std::to_string(s) + ":" + std::to_string(w)};
  } else {
    reject("--evict must be lru, lfu, longest, priority[:L] or streaming:S:W, got '" + v + "'");
  }
}

// ---- the flags
// -----------------------------------------------------------------------------------

// "usage: pkv-sim [options]" and the description first, then the groups as CLI11 lays them out.
class Help : public CLI::Formatter {
 public:
  std::string make_description(const CLI::App*) const override { return {}; }
  std::string make_usage(const CLI::App* app, std::string) const override {
    return "usage: pkv-sim [options]\n" + app->get_description() + "\n";
  }
};

void declare(CLI::App& app, Options& o) {
  app.formatter(std::make_shared<Help>());
  app.get_formatter()->column_width(22);
  app.allow_extras();  // reported as "unknown option" by parse_options
  auto value = [&](const char* flag, const char* form, std::function<void(const std::string&)> f,
                   const char* help, const char* group) {
    app.add_option_function<std::string>(flag, std::move(f), help)->option_text(form)->group(group);
  };
  auto flag = [&](const char* name, bool& field, const char* help) {
    app.add_flag(name, field, help)->disable_flag_override()->group("output");
  };

  const char* workload = "workload";
  value(
      "--dataset", "D",
      [&o](const std::string& v) {
        parse_dataset(v, o.dataset);
        o.dataset_set = true;
        o.shared_prefix.reset();
        if (o.dataset.kind == Dataset::Kind::shared_prefix)
          o.shared_prefix = parse_shared_prefix(v);
      },
      "alpaca (~19 prompt / 58 output tokens), sharegpt (~161 / 338; default),\n"
      "fixed:P:O (exact lengths), or shared-prefix:G:P:S:Q (G groups of P prompts:\n"
      "an S-token shared system prompt + a Q-token question; prefix caching);\n"
      "alpaca/sharegpt lengths are lognormal",
      workload);
  {
    auto set_requests = whole("--requests", o.requests, 0, kMaxRequests);
    value(
        "--requests", "N",
        [&o, set_requests](const std::string& v) {
          set_requests(v);
          o.requests_set = true;
        },
        "requests in total (default 1000, a token workload all of its own; 0 = unlimited,\n"
        "needs --duration/--max-steps)",
        workload);
  }
  value(
      "--trace", "FILE",
      [&o](const std::string& v) {
        try {
          o.trace = std::make_shared<const Trace>(load_mooncake_trace(v));
        } catch (const TraceError& e) {
          reject(std::string("--trace: ") + e.what());
        }
        if (o.trace->requests.empty()) reject("--trace: " + v + " holds no request");
        o.dataset = Dataset{};
        o.dataset.kind = Dataset::Kind::trace;
        o.dataset.name = "trace " + std::filesystem::path(v).filename().string();
      },
      "replay a Mooncake JSONL trace (token ids from its hash_ids; prefix caching)", workload);
  value("--time-scale", "MS", number("--time-scale", o.time_scale, 1e-3, 1e9),
        "--trace: trace milliseconds per scheduler step (default 50)", workload);
  value("--output-len", "N", whole("--output-len", o.output_len, 1, kMaxLen),
        "shared-prefix: output tokens of each request (default 256)", workload);
  value("--rate", "R", number("--rate", o.rate, 0, 1000),
        "Poisson arrivals per scheduler step (default 1; 0 = all arrive at step 0)", workload);
  value("--n", "K", whole("--n", o.n, 1, kMaxFanout),
        "parallel sampling: K outputs share the prompt through fork (default 1)", workload);
  value("--beam-width", "K", whole("--beam-width", o.beam_width, 0, kMaxFanout),
        "beam search with K beams (default off); not with --n > 1", workload);
  value("--max-len", "L", whole("--max-len", o.max_len, 2, kMaxLen),
        "prompt + output clamped to L tokens (default 2048)", workload);
  value("--seed", "S", whole("--seed", o.seed, 0, std::numeric_limits<std::uint64_t>::max()),
        "workload seed (default 42)", workload);

  const char* engine = "engine";
  value("--workers", "N", whole("--workers", o.workers, 1, kMaxWorkers),
        "scheduler threads sharing the cache (default 2)", engine);
  {
    auto set_blocks = whole("--blocks", o.blocks, 1, kMaxBlocks);
    value(
        "--blocks", "N",
        [&o, set_blocks](const std::string& v) {
          set_blocks(v);
          o.blocks_set = true;
        },
        "KV blocks in the cache (default 2048; 131072 for a token workload)", engine);
  }
  value(
      "--capacity-sweep", "LIST", [&o](const std::string& v) { parse_sweep(v, o.capacity_sweep); },
      "token workloads: replay at each cache size (B1,B2,... or LO..HI:N blocks),\n"
      "print hit rate against capacity (and --plot it)",
      engine);
  value("--block-size", "T", whole("--block-size", o.block_size, 1, kMaxBlockSize),
        "tokens per block (default 16)", engine);
  value("--max-seqs", "N", whole("--max-seqs", o.max_seqs, 1, std::size_t{1} << 20),
        "running sequences over all workers (default 256)", engine);
  value("--watermark", "F", number("--watermark", o.watermark, 0, 0.5),
        "admission leaves this fraction of blocks free (default 0.01)", engine);
  value(
      "--evict", "S", [&o](const std::string& v) { parse_evict(v, o); },
      "lru (default), lfu, longest, priority[:L], streaming:S:W", engine);
  value("--step-us", "U", whole("--step-us", o.step_us, 0, 10'000'000),
        "simulated model time per step (default 0)", engine);
  value("--duration", "SEC", number("--duration", o.duration_s, 0, 1e6),
        "stop after SEC seconds of wall time (default: when all requests are done)", engine);
  value("--max-steps", "N", whole("--max-steps", o.max_steps, 0, std::uint64_t{1} << 40),
        "stop after N scheduler steps (default: no limit)", engine);
  value("--sample-every", "N", whole("--sample-every", o.sample_every, 1, 1000000),
        "steps between full samples of sharing/waste (default 8)", engine);

  flag("--verify", o.verify,
       "write token cookies to a host arena, perform every CopyOp, read every live\n"
       "sequence back through its block table; any mismatch is an error exit");
  flag("--json", o.json, "print the report as JSON on stdout");
  value(
      "--plot", "FILE.png",
      [&o](const std::string& v) {
        if (v.empty()) reject("--plot needs a file name");
        o.plot_file = v;
      },
      "plot utilization and running sequences over time (needs gnuplot)", "output");
  flag("--compare-baseline", o.compare_baseline,
       "run the same workload on the seed design behind one mutex, side by side");
  flag("--quiet", o.quiet, "no progress output");
  app.set_help_flag("-h,--help", "this text")->group("output");
}

constexpr const char* kDescription =
    "Simulates a continuous-batching LLM scheduler: --workers threads share one "
    "pkv::PagedKvCache.";

// The flag a CLI11 message starts with ("--workers: 1 required ...", "verify was given ...").
std::string flag_of(const std::string& message) {
  std::string name = message.substr(0, message.find_first_of(": "));
  if (!name.starts_with("-")) name = "--" + name;
  return name;
}

// CLI11's errors in pkv-sim's words; our own value errors (ValidationError) pass as they are.
std::string rephrase(const CLI::ParseError& e) {
  const std::string what = e.what();
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e) != nullptr) {
    if (what.find("disallowed flag override") != std::string::npos)
      return flag_of(what) + " takes no value";
    return flag_of(what) + " needs a value";
  }
  return what;
}

}  // namespace

std::string usage() {
  Options o;
  CLI::App app(kDescription, "pkv-sim");
  declare(app, o);
  return app.help();
}

ParseResult parse_options(std::span<const std::string_view> args) {
  ParseResult r;
  CLI::App app(kDescription, "pkv-sim");
  declare(app, r.options);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them last first
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    r.kind = ParseResult::Kind::help;
    r.text = app.help();
    return r;
  } catch (const CLI::ParseError& e) {
    r.kind = ParseResult::Kind::error;
    r.text = rephrase(e);
    return r;
  }
  if (const std::vector<std::string> extra = app.remaining(); !extra.empty()) {
    r.kind = ParseResult::Kind::error;
    r.text = "unknown option '" + extra.front() + "' (see --help)";
    return r;
  }
  resolve_token_workload(r.options);
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

}  // namespace pkv::sim
