// sim/tests/test_sim.cpp — pkv-sim: argument errors, workload, and seeded runs whose reports must
// satisfy the accounting (every request finished or reported; nothing held at the end).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "histogram.hpp"
#include "options.hpp"
#include "pkv/paged_kv_cache.hpp"
#include "plot.hpp"
#include "report.hpp"
#include "simulator.hpp"
#include "simulator_impl.hpp"
#include "workload.hpp"

namespace pkv::sim {
namespace {

ParseResult parse(std::vector<std::string_view> args) {
  return parse_options(std::span<const std::string_view>(args));
}

Options small(std::vector<std::string_view> args) {
  auto r = parse(std::move(args));
  EXPECT_EQ(r.kind, ParseResult::Kind::run) << r.text;
  r.options.quiet = true;
  return r.options;
}

void expect_accounted(const Report& r) {
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.finished + r.aborted + r.unfinished + r.not_arrived, r.requests);
  EXPECT_EQ(r.end_used_blocks, 0u);
  EXPECT_EQ(r.end_sequences, 0u);
  EXPECT_EQ(r.note, "");  // block tables and the cache's counters always agreed
}

// ---- arguments --------------------------------------------------------------------------------

TEST(Options, st_defaults_are_valid) {
  auto r = parse({});
  ASSERT_EQ(r.kind, ParseResult::Kind::run) << r.text;
  EXPECT_EQ(validate(r.options), "");
  EXPECT_EQ(r.options.dataset.name, "sharegpt");
  EXPECT_EQ(r.options.workers, 2u);
}

TEST(Options, st_accepts_every_form) {
  auto o = small({"--dataset=alpaca", "--workers", "3", "--evict", "streaming:4:60", "--n=4",
                  "--rate", "0.25", "--seed", "7", "--verify", "--json", "--plot", "x.png"});
  EXPECT_EQ(o.dataset.name, "alpaca");
  EXPECT_EQ(o.workers, 3u);
  EXPECT_EQ(o.evict.strategy, EvictionStrategy::streaming_llm(4, 60));
  EXPECT_EQ(o.n, 4u);
  EXPECT_DOUBLE_EQ(o.rate, 0.25);
  EXPECT_TRUE(o.verify && o.json);
  EXPECT_EQ(o.plot_file, "x.png");
  EXPECT_EQ(small({"--evict", "priority:8"}).evict.strategy, EvictionStrategy::priority(8));
  EXPECT_EQ(small({"--evict", "longest"}).evict.strategy, EvictionStrategy::longest_first());
  EXPECT_EQ(small({"--evict", "lfu"}).evict.strategy, EvictionStrategy::lfu());
  auto f = small({"--dataset", "fixed:7:9"});
  EXPECT_EQ(f.dataset.kind, Dataset::Kind::fixed);
  EXPECT_DOUBLE_EQ(f.dataset.mean_prompt, 7);
  EXPECT_DOUBLE_EQ(f.dataset.mean_output, 9);
}

TEST(Options, st_help) {
  auto r = parse({"--verify", "--help"});
  EXPECT_EQ(r.kind, ParseResult::Kind::help);
  EXPECT_NE(r.text.find("--compare-baseline"), std::string::npos);
}

TEST(Options, st_rejects_bad_arguments_with_a_message) {
  struct Case {
    std::vector<std::string_view> args;
    std::string_view says;
  };
  const std::vector<Case> cases = {
      {{"--frobnicate"}, "unknown option '--frobnicate'"},
      {{"-w", "2"}, "unknown option '-w'"},
      {{"--workers"}, "--workers needs a value"},
      {{"--workers", "two"}, "--workers needs a whole number"},
      {{"--workers", "0"}, "--workers needs a whole number in 1..255"},
      {{"--workers", "-1"}, "--workers"},
      {{"--workers", "99999999999999999999999"}, "--workers"},
      {{"--blocks", "0"}, "--blocks"},
      {{"--blocks", "1e3"}, "--blocks"},
      {{"--block-size", ""}, "--block-size"},
      {{"--rate", "nan"}, "--rate"},
      {{"--rate", "-1"}, "--rate"},
      {{"--rate", "inf"}, "--rate"},
      {{"--rate", "2000"}, "--rate needs a number in 0..1000"},
      {{"--duration", "1x"}, "--duration"},
      {{"--dataset", "wikipedia"}, "--dataset must be"},
      {{"--dataset", "fixed:0:5"}, "fixed:P:O"},
      {{"--dataset", "fixed:5"}, "--dataset must be"},
      {{"--dataset", "fixed:1500:1500"}, "longer than --max-len"},
      {{"--evict", "random"}, "--evict must be"},
      {{"--evict", "streaming:0:0"}, "S + W > 0"},
      {{"--evict", "streaming:4"}, "--evict must be"},
      {{"--evict", "priority:0"}, "priority:L"},
      {{"--n", "0"}, "--n"},
      {{"--n", "2", "--beam-width", "2"}, "cannot be combined"},
      {{"--requests", "0"}, "needs --duration or --max-steps"},
      {{"--verify=yes"}, "--verify takes no value"},
      {{"--plot", ""}, "--plot needs a file name"},
      {{"--blocks", "16777216", "--block-size", "4096"}, "2^32"},
  };
  for (const auto& c : cases) {
    auto r = parse(c.args);
    EXPECT_EQ(r.kind, ParseResult::Kind::error) << c.args.front();
    EXPECT_NE(r.text.find(c.says), std::string::npos)
        << "args " << c.args.front() << ": message '" << r.text << "' lacks '" << c.says << "'";
  }
}

// ---- workload ---------------------------------------------------------------------------------

TEST(Workload, st_seeded_stream_is_reproducible) {
  auto o = small({"--dataset", "sharegpt", "--requests", "50", "--n", "3", "--rate", "0.5"});
  RequestStream a(o);
  RequestStream b(o);
  std::uint64_t last_arrival = 0;
  while (!a.exhausted()) {
    ASSERT_FALSE(b.exhausted());
    const auto x = a.next();
    const auto y = b.next();
    EXPECT_EQ(x.prompt, y.prompt);
    EXPECT_EQ(x.outputs, y.outputs);
    EXPECT_EQ(x.arrival_step, y.arrival_step);
    EXPECT_EQ(x.outputs.size(), 3u);
    EXPECT_GE(x.arrival_step, last_arrival);
    last_arrival = x.arrival_step;
  }
  EXPECT_TRUE(b.exhausted());
}

TEST(Workload, st_dataset_means_match_the_paper) {
  for (auto [name, prompt, output] :
       {std::tuple{"alpaca", 19.31, 58.45}, std::tuple{"sharegpt", 161.31, 337.99}}) {
    auto o = small({"--dataset", name, "--requests", "40000", "--rate", "0"});
    RequestStream s(o);
    double p = 0;
    double out = 0;
    while (!s.exhausted()) {
      const auto r = s.next();
      p += r.prompt;
      out += r.outputs[0];
      EXPECT_EQ(r.arrival_step, 0u);  // --rate 0: everything arrives at once
    }
    EXPECT_NEAR(p / 40000, prompt, prompt * 0.05) << name;
    EXPECT_NEAR(out / 40000, output, output * 0.05) << name;
  }
}

TEST(Workload, st_fixed_lengths_are_exact) {
  RequestStream s(small({"--dataset", "fixed:12:34", "--requests", "10"}));
  while (!s.exhausted()) {
    const auto r = s.next();
    EXPECT_EQ(r.prompt, 12u);
    EXPECT_EQ(r.outputs, std::vector<std::uint32_t>{34});
  }
}

TEST(Histogram, st_quantiles_within_a_bucket) {
  LatencyHistogram h;
  for (std::uint64_t v = 1; v <= 10000; ++v) h.record(v);
  EXPECT_EQ(h.count(), 10000u);
  EXPECT_EQ(h.max(), 10000u);
  EXPECT_NEAR(static_cast<double>(h.quantile(0.5)), 5000, 5000 * 0.07);
  EXPECT_NEAR(static_cast<double>(h.quantile(0.99)), 9900, 9900 * 0.07);
  EXPECT_EQ(h.quantile(1.0), 10000u);
  for (std::uint64_t v : {0ull, 1ull, 15ull, 16ull, 17ull, 1000ull, 123456789ull, ~0ull}) {
    const auto i = LatencyHistogram::index_of(v);
    ASSERT_LT(i, LatencyHistogram::kBuckets);
    EXPECT_LE(LatencyHistogram::lower_bound_of(i), v);
    EXPECT_GE(LatencyHistogram::lower_bound_of(i) + (LatencyHistogram::width_of(i) - 1), v);
  }
  EXPECT_EQ(LatencyHistogram().quantile(0.5), 0u);
}

TEST(Histogram, st_shared_samples_keep_the_sum) {
  // One call that did 3 items' work in 10 ns: samples 3, 3, 4 (append_batch's per-item form).
  LatencyHistogram h;
  h.record_shared(10, 3);
  EXPECT_EQ(h.count(), 3u);
  EXPECT_EQ(h.sum(), 10u);
  EXPECT_EQ(h.max(), 4u);
  EXPECT_EQ(h.quantile(0.0), 3u);
  h.record_shared(7, 0);  // no items: nothing recorded
  EXPECT_EQ(h.count(), 3u);
  h.record_shared(1000, 10);
  EXPECT_EQ(h.count(), 13u);
  EXPECT_EQ(h.sum(), 1010u);
  EXPECT_EQ(h.max(), 100u);
}

// ---- seeded runs ------------------------------------------------------------------------------

TEST(Sim, st_seeded_run_accounts_for_every_request) {
  // 48 blocks of 16 for 30 requests of 20 + 40 tokens (4 blocks each at the end): preemption.
  auto o = small({"--workers", "1", "--requests", "30", "--dataset", "fixed:20:40", "--blocks",
                  "48", "--rate", "0", "--verify"});
  const Report r = run_pkv(o);
  expect_accounted(r);
  EXPECT_EQ(r.finished, 30u);
  EXPECT_EQ(r.output_tokens, 30u * 40u);
  EXPECT_EQ(r.prompt_tokens, 30u * 20u);
  EXPECT_GT(r.preemptions, 0u);
  EXPECT_EQ(r.evictions, r.preemptions);  // one worker: each eviction preempts one request
  EXPECT_GT(r.verify_tokens_checked, 0u);
  EXPECT_GT(r.util_peak, 0.9);
  EXPECT_LE(r.util_peak, 1.0);
  EXPECT_GT(r.latency.count(), 30u * 40u);
  EXPECT_FALSE(r.series.empty());
  EXPECT_EQ(r.sharing_saved_pct, 0.0);  // nothing is shared without fork
  // 20 + 40 tokens in 16-token blocks: waste is the last block's empty slots.
  EXPECT_GT(r.waste_pct, 0.0);
  EXPECT_LT(r.waste_pct, 50.0);
}

TEST(Sim, st_one_worker_is_deterministic) {
  auto o = small({"--workers", "1", "--requests", "60", "--dataset", "alpaca", "--n", "2",
                  "--blocks", "64", "--rate", "2"});
  const Report a = run_pkv(o);
  const Report b = run_pkv(o);
  expect_accounted(a);
  expect_accounted(b);
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.output_tokens, b.output_tokens);
  EXPECT_EQ(a.preemptions, b.preemptions);
  EXPECT_EQ(a.cow_copies, b.cow_copies);
  EXPECT_EQ(a.latency.count(), b.latency.count());
  EXPECT_DOUBLE_EQ(a.sharing_saved_pct, b.sharing_saved_pct);
  EXPECT_DOUBLE_EQ(a.waste_pct, b.waste_pct);
}

TEST(Sim, mt_parallel_sampling_shares_the_prompt) {
  auto o = small({"--workers", "2", "--requests", "24", "--dataset", "fixed:40:24", "--n", "3",
                  "--blocks", "96", "--rate", "0", "--verify", "--sample-every", "1"});
  const Report r = run_pkv(o);
  expect_accounted(r);
  EXPECT_EQ(r.finished, 24u);
  EXPECT_GE(r.forks, 24u * 2u);
  EXPECT_GT(r.cow_copies, 0u);  // 40 tokens leave the third prompt block half full and shared
  EXPECT_GT(r.sharing_saved_pct, 10.0);
  EXPECT_GT(r.verify_sequences_checked, 0u);
}

TEST(Sim, mt_beam_search_forks_and_frees) {
  auto o = small({"--workers", "2", "--requests", "12", "--dataset", "fixed:10:30", "--beam-width",
                  "4", "--blocks", "64", "--rate", "0", "--verify", "--sample-every", "2"});
  const Report r = run_pkv(o);
  expect_accounted(r);
  EXPECT_EQ(r.finished, 12u);
  EXPECT_GT(r.forks, 12u * 3u);
  EXPECT_GT(r.cow_copies, 0u);
  EXPECT_GT(r.sharing_saved_pct, 20.0);
}

// pkv as the simulator sees it, counting the sequence calls it makes: parallel sampling and beam
// search must fork through fork_many and free through free_many (one call per parent, per group
// or per set of losers), never per sequence.
class CountingCache final : public PagedKvCache {
 public:
  CountingCache(std::size_t blocks, std::size_t block_size, const PagedKvCache::Options& o)
      : PagedKvCache(blocks, block_size, 4, 8, o) {}
  Result<void> fork(SeqId src, SeqId dst) {
    forks.fetch_add(1);
    return PagedKvCache::fork(src, dst);
  }
  Result<void> fork_many(SeqId src, std::span<const SeqId> dsts) {
    fork_many_calls.fetch_add(1);
    Result<void> r = PagedKvCache::fork_many(src, dsts);
    if (r) fork_many_children.fetch_add(dsts.size());  // all or nothing
    return r;
  }
  Result<void> free(SeqId seq) {
    frees.fetch_add(1);
    return PagedKvCache::free(seq);
  }
  void free_many(std::span<const SeqId> seqs, FreeManyOutcome& out) {
    free_many_calls.fetch_add(1);
    free_many_ids.fetch_add(seqs.size());
    PagedKvCache::free_many(seqs, out);
  }
  std::atomic<std::uint64_t> forks{0}, fork_many_calls{0}, fork_many_children{0};
  std::atomic<std::uint64_t> frees{0}, free_many_calls{0}, free_many_ids{0};
};

Report run_counting(const Options& o, CountingCache& c) {
  const ProgressFn no_progress;  // the simulator keeps a reference: it must outlive sim
  detail::Simulator<CountingCache> sim(o, c, "counting", no_progress);
  return sim.run();
}

TEST(Sim, mt_sampling_and_beams_use_fork_many_and_free_many) {
  PagedKvCache::Options co;
  co.hold_copy_sources = true;  // --verify, as run_pkv configures it
  {
    auto o = small({"--workers", "2", "--requests", "24", "--dataset", "fixed:40:24", "--n", "3",
                    "--blocks", "96", "--rate", "0", "--verify"});
    CountingCache c(o.blocks, o.block_size, co);
    const Report r = run_counting(o, c);
    expect_accounted(r);
    EXPECT_EQ(r.finished, 24u);
    EXPECT_EQ(c.forks.load(), 0u);
    EXPECT_GT(c.fork_many_calls.load(), 0u);
    EXPECT_EQ(c.fork_many_children.load(), r.forks);  // every counted fork went through it
    EXPECT_GE(r.forks, 24u * 2u);
  }
  {
    auto o = small({"--workers", "2", "--requests", "12", "--dataset", "fixed:10:30",
                    "--beam-width", "4", "--blocks", "64", "--rate", "0", "--verify"});
    CountingCache c(o.blocks, o.block_size, co);
    const Report r = run_counting(o, c);
    expect_accounted(r);
    EXPECT_EQ(r.finished, 12u);
    EXPECT_EQ(c.forks.load(), 0u);
    EXPECT_EQ(c.fork_many_children.load(), r.forks);
    EXPECT_GT(c.fork_many_calls.load(), 0u);
    EXPECT_LT(c.fork_many_calls.load(), r.forks);  // a parent's children in one call
    EXPECT_EQ(c.frees.load(), 0u);  // losers, finished and preempted groups: free_many
    EXPECT_GT(c.free_many_calls.load(), 0u);
    EXPECT_LT(c.free_many_calls.load(), c.free_many_ids.load());
  }
}

TEST(Sim, mt_streaming_llm_trims_and_verifies) {
  auto o = small({"--workers", "2", "--requests", "16", "--dataset", "fixed:24:100", "--evict",
                  "streaming:4:20", "--blocks", "40", "--rate", "0", "--verify", "--n", "2",
                  "--sample-every", "1"});
  const Report r = run_pkv(o);
  expect_accounted(r);
  EXPECT_EQ(r.finished, 16u);
  EXPECT_GT(r.streaming_trims, 0u);
  EXPECT_GT(r.streaming_dropped_tokens, 0u);
}

TEST(Sim, mt_every_strategy_finishes) {
  for (std::string_view evict : {"lru", "lfu", "longest", "priority:3"}) {
    auto o = small({"--workers", "2", "--requests", "40", "--dataset", "alpaca", "--blocks", "40",
                    "--rate", "0", "--evict", evict, "--verify"});
    const Report r = run_pkv(o);
    expect_accounted(r);
    EXPECT_EQ(r.finished + r.aborted, 40u) << evict;
  }
}

TEST(Sim, mt_step_limit_reports_unfinished_and_frees_everything) {
  auto o = small({"--workers", "2", "--requests", "0", "--max-steps", "40", "--dataset",
                  "fixed:30:500", "--blocks", "128", "--rate", "1"});
  const Report r = run_pkv(o);
  expect_accounted(r);
  EXPECT_EQ(r.steps, 40u);
  EXPECT_EQ(r.finished, 0u);
  EXPECT_GT(r.unfinished, 0u);
}

TEST(Sim, st_request_larger_than_the_cache_is_aborted) {
  auto o =
      small({"--workers", "1", "--requests", "3", "--dataset", "fixed:60:60", "--blocks", "4"});
  const Report r = run_pkv(o);
  expect_accounted(r);
  EXPECT_EQ(r.aborted, 3u);
  // A beam that outgrows the cache only while running is aborted too, never loops.
  auto b = small({"--workers", "1", "--requests", "2", "--dataset", "fixed:8:120", "--beam-width",
                  "8", "--blocks", "12", "--rate", "0"});
  const Report rb = run_pkv(b);
  expect_accounted(rb);
  EXPECT_EQ(rb.finished + rb.aborted, 2u);
}

TEST(Sim, mt_step_cost_shows_allocator_share) {
  auto o = small({"--workers", "2", "--requests", "8", "--dataset", "fixed:8:20", "--step-us",
                  "200", "--rate", "0"});
  const Report r = run_pkv(o);
  expect_accounted(r);
  EXPECT_GT(r.wall_s, 20 * 200e-6);
  EXPECT_LT(r.allocator_share_pct(), 50.0);
}

TEST(Sim, mt_baseline_runs_the_same_workload) {
  if (!baseline_available()) GTEST_SKIP() << "built without baselines/";
  auto o = small({"--workers", "2", "--requests", "30", "--dataset", "alpaca", "--blocks", "48",
                  "--rate", "0"});
  const Report p = run_pkv(o);
  const Report b = run_baseline(o);
  expect_accounted(p);
  expect_accounted(b);
  EXPECT_EQ(b.cache_name, "seed+mutex");
  EXPECT_EQ(p.finished, b.finished);
  EXPECT_EQ(p.mean_prompt, b.mean_prompt);  // same seeded requests
}

TEST(Sim, mt_verify_catches_the_seeds_missing_copy_on_write) {
  if (!baseline_available()) GTEST_SKIP() << "built without baselines/";
  // After fork the seed keeps appending into the shared, half-full last block: the samples
  // overwrite each other's tokens. --verify must see that (pkv passes the same run).
  auto o = small({"--workers", "1", "--requests", "4", "--dataset", "fixed:8:8", "--n", "2",
                  "--verify", "--sample-every", "1"});
  o.verify_baseline = true;
  expect_accounted(run_pkv(o));
  const Report b = run_baseline(o);
  EXPECT_NE(b.error.find("--verify"), std::string::npos) << b.error;
}

// ---- output -----------------------------------------------------------------------------------

TEST(Report, st_text_and_json) {
  auto o = small({"--workers", "1", "--requests", "5", "--dataset", "fixed:8:8"});
  const Report r = run_pkv(o);
  std::ostringstream text;
  print_text(text, r);
  for (auto needle : {"requests/s", "tokens/s", "calls/s", "p50", "p99", "block utilization",
                      "internal waste", "saved by sharing", "copy-on-write", "preemptions"}) {
    EXPECT_NE(text.str().find(needle), std::string::npos) << needle;
  }
  std::ostringstream json;
  print_json(json, r, nullptr);
  const std::string j = json.str();
  EXPECT_EQ(j.front(), '{');
  EXPECT_EQ(j.substr(j.size() - 2), "}\n");
  for (auto key : {"\"requests_per_second\"", "\"latency_p99_ns\"", "\"cow_copies\"",
                   "\"memory_saved_by_sharing_percent\"", "\"ok\": true"}) {
    EXPECT_NE(j.find(key), std::string::npos) << key;
  }
  std::ostringstream both;
  print_json(both, r, &r);
  EXPECT_NE(both.str().find("\"baseline\""), std::string::npos);
}

TEST(Plot, st_png_or_a_clear_error) {
  auto o = small({"--workers", "1", "--requests", "5", "--dataset", "fixed:8:8"});
  const Report r = run_pkv(o);
  const auto png = std::filesystem::temp_directory_path() / "pkv-sim-test-plot.png";
  const std::string missing = plot_png(r, nullptr, png.string(), "pkv-no-such-gnuplot");
  EXPECT_NE(missing.find("gnuplot"), std::string::npos);
  EXPECT_NE(missing.find("not found"), std::string::npos);
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "no gnuplot";
  ASSERT_EQ(plot_png(r, &r, png.string()), "");
  std::ifstream in(png, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  std::filesystem::remove(png);
}

// ---- the program ------------------------------------------------------------------------------

struct Exec {
  int status = -1;
  std::string out;
  std::string err;
};

Exec exec(const std::string& args) {
  const auto dir = std::filesystem::temp_directory_path();
  const auto out = dir / "pkv-sim-test.out";
  const auto err = dir / "pkv-sim-test.err";
  const std::string cmd = std::string(PKV_SIM_EXE) + " " + args + " >" + out.string() + " 2>" +
                          err.string() + " </dev/null";
  const int raw = std::system(cmd.c_str());
  Exec e;
  e.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  auto slurp = [](const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  e.out = slurp(out);
  e.err = slurp(err);
  return e;
}

TEST(Program, st_bad_arguments_exit_2_with_a_message) {
  for (const char* args :
       {"--frobnicate", "--workers two", "--blocks 0", "--dataset fixed:10",
        "--evict streaming:0:0", "--rate", "--n 2 --beam-width 3", "--requests 0"}) {
    const Exec e = exec(args);
    EXPECT_EQ(e.status, 2) << args;
    EXPECT_NE(e.err.find("pkv-sim: "), std::string::npos) << args;
    EXPECT_EQ(e.out, "") << args;
  }
}

TEST(Program, st_short_run_prints_report_and_json) {
  Exec e = exec("--requests 20 --dataset fixed:16:16 --blocks 32 --workers 2");
  EXPECT_EQ(e.status, 0) << e.err;
  EXPECT_NE(e.out.find("pkv-sim report"), std::string::npos);
  EXPECT_NE(e.out.find("20 finished"), std::string::npos) << e.out;
  e = exec("--requests 10 --dataset fixed:16:16 --json");
  EXPECT_EQ(e.status, 0) << e.err;
  EXPECT_EQ(e.out.front(), '{');
  EXPECT_EQ(e.err, "");  // no TTY: no progress on stderr with --json
  e = exec("--help");
  EXPECT_EQ(e.status, 0);
  EXPECT_NE(e.out.find("usage: pkv-sim"), std::string::npos);
}

}  // namespace
}  // namespace pkv::sim
