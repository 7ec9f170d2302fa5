// sim/tests/test_prefix_replay.cpp — pkv-sim on token workloads (issue 11): trace replay with
// prefix caching, hit rates known exactly on small synthetic traces, capacity too small for
// reuse, the infinite-cache and LRU bounds against the measured rate, the seed baseline by
// count, --verify on content cookies, the options and the program's --capacity-sweep.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "options.hpp"
#include "report.hpp"
#include "simulator.hpp"
#include "trace.hpp"

namespace pkv::sim {
namespace {

/// A Mooncake JSONL file in the temporary directory, removed at the end of the test.
class TraceFile {
 public:
  TraceFile(const std::string& name, const std::string& body)
      : path_(std::filesystem::temp_directory_path() /
              ("pkv-sim-" + name + "-" + std::to_string(::getpid()) + ".jsonl")) {
    std::ofstream(path_) << body;
  }
  ~TraceFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

std::string line(double ts, unsigned input, unsigned output, const std::string& ids) {
  std::ostringstream os;
  os << "{\"timestamp\": " << ts << ", \"input_length\": " << input
     << ", \"output_length\": " << output << ", \"hash_ids\": [" << ids << "]}\n";
  return os.str();
}

ParseResult parse(std::vector<std::string> args) {
  std::vector<std::string_view> views(args.begin(), args.end());
  return parse_options(std::span<const std::string_view>(views));
}

Options options(std::vector<std::string> args) {
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
}

// Two identical 1024-token prompts (two full trace blocks) 100 s apart, and an unrelated one of
// the same size between them.
const std::string kTwoSame = line(0, 1024, 5, "1, 2") + line(100000, 1024, 5, "1, 2");
const std::string kFlushed =
    line(0, 1024, 5, "1, 2") + line(50000, 1024, 5, "3, 4") + line(100000, 1024, 5, "1, 2");

TEST(PrefixReplay, st_second_identical_request_hits_all_but_the_last_token) {
  TraceFile f("two-same", kTwoSame);
  for (const char* verify : {"", "--verify"}) {
    std::vector<std::string> args = {"--trace",  f.path(), "--workers",      "1",
                                     "--blocks", "1024",   "--sample-every", "1"};
    if (*verify) args.emplace_back(verify);
    const Report r = run_pkv(options(args));
    expect_accounted(r);
    ASSERT_TRUE(r.token_mode && r.prefix_caching);
    EXPECT_EQ(r.finished, 2u);
    EXPECT_EQ(r.prompt_tokens, 2048u);
    // floor((1024 - 1) / 16) * 16: the last prompt token is always computed.
    EXPECT_EQ(r.prefix_hit_tokens, 1008u) << verify;
    EXPECT_DOUBLE_EQ(r.prefix_hit_rate(), 1008.0 / 2048.0);
    ASSERT_TRUE(r.has_bound);
    EXPECT_EQ(r.bound.hit_tokens, 1008u);
    EXPECT_EQ(r.bound.prompt_tokens, 2048u);
    EXPECT_EQ(r.prefix.hits, 1008u);  // the cache's own counter agrees
    EXPECT_EQ(r.prefix.reclaimed, 0u);
    EXPECT_GT(r.end_cached_blocks, 0u);
    EXPECT_EQ(r.end_cached_blocks, r.end_reclaimable_blocks);
    if (*verify) {
      EXPECT_GT(r.verify_tokens_checked, 2048u);
    }
  }
}

TEST(PrefixReplay, st_block_size_sets_the_granularity) {
  TraceFile f("two-same-bs", kTwoSame);
  const Report r = run_pkv(
      options({"--trace", f.path(), "--workers", "1", "--blocks", "256", "--block-size", "48"}));
  expect_accounted(r);
  EXPECT_EQ(r.prefix_hit_tokens, 1023u / 48u * 48u);
  EXPECT_EQ(r.bound.hit_tokens, 1023u / 48u * 48u);
}

TEST(PrefixReplay, st_cache_too_small_for_reuse_hits_less_than_the_bound) {
  TraceFile f("flushed", kFlushed);
  // Big enough: the third request finds the first's blocks.
  const Report big = run_pkv(options({"--trace", f.path(), "--workers", "1", "--blocks", "1024"}));
  expect_accounted(big);
  EXPECT_EQ(big.prefix_hit_tokens, 1008u);
  EXPECT_EQ(big.prefix.reclaimed, 0u);
  // 70 blocks hold one request (64 prompt blocks + 1 for the output): the unrelated request
  // reclaims most of the first's cached blocks (deepest first), so the third finds less.
  const Report small = run_pkv(options({"--trace", f.path(), "--workers", "1", "--blocks", "70"}));
  expect_accounted(small);
  EXPECT_EQ(small.finished, 3u);
  EXPECT_GT(small.prefix.reclaimed, 0u);
  EXPECT_LT(small.prefix_hit_tokens, big.prefix_hit_tokens);
  EXPECT_EQ(small.prefix_hit_tokens % 16, 0u);
  EXPECT_EQ(small.bound.hit_tokens, 1008u);  // the bound does not depend on the capacity
  EXPECT_LE(small.prefix_hit_rate(), small.bound.hit_rate());
  // The LRU model (512-token trace blocks): 70 x 16 tokens hold 2 of them, so the unrelated
  // request flushes the first there too; 4 blocks keep both prompts.
  const Options o = options({"--trace", f.path()});
  EXPECT_EQ(lru_cache_bound(*o.trace, 16, 70 * 16).hit_tokens, 0u);
  EXPECT_EQ(lru_cache_bound(*o.trace, 16, 4 * 512).hit_tokens, 1008u);
}

TEST(PrefixReplay, st_lru_model_reaches_the_infinite_bound) {
  TraceFile f("lru", kFlushed + line(120000, 1500, 3, "1, 2, 9") + line(130000, 700, 3, "3, 7"));
  const Options o = options({"--trace", f.path()});
  const PrefixBound inf = infinite_cache_bound(*o.trace, 16);
  EXPECT_EQ(lru_cache_bound(*o.trace, 16, std::size_t{1} << 30).hit_tokens, inf.hit_tokens);
  EXPECT_EQ(lru_cache_bound(*o.trace, 16, 0).hit_tokens, 0u);
  EXPECT_LE(lru_cache_bound(*o.trace, 16, 1024).hit_tokens, inf.hit_tokens);
}

TEST(PrefixReplay, mt_shared_prefix_meets_its_bound_with_a_big_cache_and_stays_below_it) {
  // 4 groups of 8 prompts, a 400-token system prompt each; rate 0.25: one admission at a time
  // mostly, but two workers may prefill the same prefix at once (each then computes its own).
  const Report r = run_pkv(
      options({"--dataset", "shared-prefix:4:8:400:40", "--workers", "2", "--blocks", "4096",
               "--output-len", "20", "--rate", "0.25", "--verify", "--sample-every", "1"}));
  expect_accounted(r);
  EXPECT_EQ(r.finished, 32u);
  EXPECT_EQ(r.prompt_tokens, 32u * 440u);
  ASSERT_TRUE(r.has_bound);
  // Bound: every prompt after its group's first hits floor(400 / 16) * 16 = 400 tokens.
  EXPECT_EQ(r.bound.hit_tokens, 4u * 7u * 400u);
  EXPECT_LE(r.prefix_hit_tokens, r.bound.hit_tokens);
  EXPECT_GT(r.prefix_hit_tokens, r.bound.hit_tokens / 2);
  EXPECT_GT(r.verify_tokens_checked, 0u);
}

TEST(PrefixReplay, mt_real_trace_head_stays_below_its_bound) {
  const std::string path = std::string(PKV_TRACE_DIR) + "/mooncake_conversation.jsonl";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent";
  const Report r = run_pkv(
      options({"--trace", path, "--requests", "200", "--workers", "2", "--blocks", "40000"}));
  expect_accounted(r);
  EXPECT_EQ(r.requests, 200u);
  ASSERT_TRUE(r.has_bound);
  EXPECT_EQ(r.bound.requests, 200u);
  EXPECT_GT(r.prefix_hit_tokens, 0u);
  EXPECT_LE(r.prefix_hit_tokens, r.bound.hit_tokens);
  EXPECT_EQ(r.prefix.hits, r.prefix_hit_tokens + r.recompute_hit_tokens);
}

TEST(PrefixReplay, st_preempted_requests_find_their_own_blocks) {
  // 6 requests of 1024 + 600 tokens (102 blocks at the end) at once on 160 blocks: two are
  // admitted (64 blocks each), their growth preempts one; the victim's committed blocks stay
  // cached, so its readmission finds what was not reclaimed meanwhile (recompute_hit_tokens).
  std::string body;
  for (int i = 0; i < 6; ++i)
    body += line(0, 1024, 600, std::to_string(10 * i + 1) + ", " + std::to_string(10 * i + 2));
  TraceFile f("preempt", body);
  for (const char* workers : {"1", "2"}) {
    const Report r = run_pkv(options({"--trace", f.path(), "--workers", workers, "--blocks", "160",
                                      "--watermark", "0", "--verify", "--sample-every", "4"}));
    expect_accounted(r);
    EXPECT_EQ(r.finished, 6u);
    EXPECT_EQ(r.prefix_hit_tokens, 0u);  // no two prompts share a block
    EXPECT_GT(r.preemptions, 0u);
    EXPECT_GT(r.recomputed_tokens, 0u);
    if (std::string_view(workers) == "1") {
      EXPECT_GT(r.recompute_hit_tokens, 0u);
    }
    EXPECT_EQ(r.prefix.hits, r.recompute_hit_tokens);
  }
}

TEST(PrefixReplay, mt_baseline_runs_a_trace_by_count) {
  TraceFile f("baseline", kTwoSame);
  if (!baseline_available()) GTEST_SKIP() << "built without baselines/";
  const Report r =
      run_baseline(options({"--trace", f.path(), "--workers", "2", "--blocks", "1024"}));
  expect_accounted(r);
  EXPECT_TRUE(r.token_mode);
  EXPECT_FALSE(r.prefix_caching);
  EXPECT_EQ(r.prefix_hit_tokens, 0u);
  EXPECT_EQ(r.prompt_tokens, 2048u);
  EXPECT_NE(r.note.find("by count"), std::string::npos) << r.note;
}

TEST(PrefixReplay, st_options) {
  TraceFile f("opts", kTwoSame);
  auto o = options({"--trace", f.path()});
  EXPECT_TRUE(o.token_mode());
  EXPECT_EQ(o.requests, 2u);                     // the whole trace by default
  EXPECT_EQ(o.blocks, kTokenModeDefaultBlocks);  // unless --blocks is given
  EXPECT_EQ(options({"--trace", f.path(), "--requests", "1"}).requests, 1u);
  EXPECT_EQ(options({"--trace", f.path(), "--requests", "9"}).requests, 2u);
  EXPECT_EQ(options({"--trace", f.path(), "--blocks", "99"}).blocks, 99u);
  EXPECT_DOUBLE_EQ(options({"--trace", f.path(), "--time-scale", "2.5"}).time_scale, 2.5);
  auto s = options({"--trace", f.path(), "--capacity-sweep", "10..1000:3"});
  EXPECT_EQ(s.capacity_sweep, (std::vector<std::size_t>{10, 100, 1000}));
  s = options({"--trace", f.path(), "--capacity-sweep", "300,20,300"});
  EXPECT_EQ(s.capacity_sweep, (std::vector<std::size_t>{20, 300}));
  auto sp = options({"--dataset", "shared-prefix:2:3:100:10", "--output-len", "7"});
  ASSERT_TRUE(sp.shared_prefix.has_value());
  EXPECT_EQ(sp.requests, 6u);
  EXPECT_DOUBLE_EQ(sp.dataset.mean_output, 7);
  // Untouched: the length-only datasets keep their defaults.
  EXPECT_EQ(options({}).blocks, 2048u);
  EXPECT_EQ(options({}).requests, 1000u);

  struct Case {
    std::vector<std::string> args;
    const char* needle;
  };
  const std::vector<Case> bad = {
      {{"--trace", "/nonexistent/trace.jsonl"}, "--trace"},
      {{"--trace", f.path(), "--n", "2"}, "--n"},
      {{"--trace", f.path(), "--beam-width", "2"}, "--beam-width"},
      {{"--trace", f.path(), "--evict", "streaming:4:16"}, "streaming"},
      {{"--trace", f.path(), "--dataset", "alpaca"}, "--trace"},
      {{"--capacity-sweep", "10,20"}, "token workload"},
      {{"--trace", f.path(), "--capacity-sweep", "10..5:3"}, "--capacity-sweep"},
      {{"--trace", f.path(), "--capacity-sweep", "0,4"}, "--capacity-sweep"},
      {{"--trace", f.path(), "--capacity-sweep", "8,16", "--compare-baseline"}, "baseline"},
      {{"--trace", f.path(), "--time-scale", "0"}, "--time-scale"},
      {{"--dataset", "shared-prefix:0:3:10:10"}, "shared-prefix"},
  };
  for (const auto& c : bad) {
    const auto r = parse(c.args);
    EXPECT_EQ(r.kind, ParseResult::Kind::error) << c.args.back();
    EXPECT_NE(r.text.find(c.needle), std::string::npos) << r.text;
  }
}

// ---- the program ------------------------------------------------------------------------------

struct Exec {
  int status = -1;
  std::string out;
  std::string err;
};

Exec exec(const std::string& args) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string tag = std::to_string(::getpid());
  const auto out = dir / ("pkv-sim-prefix-" + tag + ".out");
  const auto err = dir / ("pkv-sim-prefix-" + tag + ".err");
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
  std::error_code ec;
  std::filesystem::remove(out, ec);
  std::filesystem::remove(err, ec);
  return e;
}

TEST(PrefixProgram, st_trace_report_and_json) {
  TraceFile f("prog", kTwoSame);
  Exec e = exec("--trace " + f.path() + " --workers 1 --blocks 1024");
  EXPECT_EQ(e.status, 0) << e.err;
  EXPECT_NE(e.out.find("prefix hit rate    49.22% of prompt tokens (1008 of 2048"),
            std::string::npos)
      << e.out;
  EXPECT_NE(e.out.find("hit-rate bound     49.22%"), std::string::npos) << e.out;
  e = exec("--trace " + f.path() + " --workers 1 --blocks 1024 --json");
  EXPECT_EQ(e.status, 0) << e.err;
  EXPECT_NE(e.out.find("\"hit_tokens_not_recomputed\": 1008"), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("\"bound\": {\"hit_rate\": 0.4921875"), std::string::npos) << e.out;
  e = exec("--trace /nonexistent.jsonl");
  EXPECT_EQ(e.status, 2);
  EXPECT_NE(e.err.find("pkv-sim: --trace"), std::string::npos) << e.err;
}

TEST(PrefixProgram, st_capacity_sweep_prints_a_row_per_size) {
  TraceFile f("sweep", kFlushed);
  const Exec e = exec("--trace " + f.path() + " --workers 1 --capacity-sweep 70,1024 --quiet");
  EXPECT_EQ(e.status, 0) << e.err;
  EXPECT_NE(e.out.find("infinite-cache bound: 32.81%"), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("     1024       16384    32.81%"), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("       70        1120 "), std::string::npos) << e.out;
}

}  // namespace
}  // namespace pkv::sim
