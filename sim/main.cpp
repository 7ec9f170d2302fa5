// sim/main.cpp — pkv-sim: a multithreaded continuous-batching scheduler on one shared
// pkv::PagedKvCache. Exit status: 0 ok, 1 the run failed (error in the report, --verify
// mismatch, --plot failed), 2 bad arguments.
#include <cstdio>
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "options.hpp"
#include "plot.hpp"
#include "progress.hpp"
#include "report.hpp"
#include "simulator.hpp"
#include "trace.hpp"

namespace {

std::string percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * x);
  return buf;
}

/// --capacity-sweep: one replay per cache size, a table (or JSON) and, with --plot, the chart.
int sweep(const pkv::sim::Options& o) {
  using namespace pkv::sim;
  std::vector<SweepPoint> points;
  std::vector<Report> reports;
  double bound = 0;
  for (const std::size_t blocks : o.capacity_sweep) {
    Options run = o;
    run.blocks = blocks;
    run.blocks_set = true;
    run.plot_file.clear();
    if (!o.quiet) std::fprintf(stderr, "pkv-sim: sweep: %zu blocks ...\n", blocks);
    reports.push_back(run_pkv(run));
    const Report& r = reports.back();
    SweepPoint p;
    p.blocks = blocks;
    p.tokens = blocks * o.block_size;
    p.hit_rate = r.prefix_hit_rate();
    p.lru_rate = o.trace ? lru_cache_bound(*o.trace, o.block_size, p.tokens).hit_rate() : -1;
    points.push_back(p);
    bound = r.bound.hit_rate();
  }
  int status = 0;
  if (o.json) {
    std::cout << "{\n  \"config\": ";
    std::cout << '"' << describe(o) << "\",\n  \"bound\": " << bound << ",\n  \"sweep\": [";
    for (std::size_t i = 0; i < points.size(); ++i) {
      const Report& r = reports[i];
      std::cout << (i ? ",\n" : "\n") << "    {\"blocks\": " << points[i].blocks
                << ", \"tokens\": " << points[i].tokens << ", \"hit_rate\": " << points[i].hit_rate
                << ", \"lru_model_hit_rate\": ";
      if (points[i].lru_rate >= 0) {
        std::cout << points[i].lru_rate;
      } else {
        std::cout << "null";
      }
      std::cout << ", \"hit_tokens_not_recomputed\": " << r.prefix_hit_tokens
                << ", \"prompt_tokens\": " << r.prompt_tokens
                << ", \"reclaimed_blocks\": " << r.prefix.reclaimed
                << ", \"preemptions\": " << r.preemptions << ", \"aborted\": " << r.aborted
                << ", \"ok\": " << (r.error.empty() ? "true" : "false") << "}";
    }
    std::cout << "\n  ]\n}\n";
  } else {
    std::cout << "pkv-sim capacity sweep\n  " << describe(o) << "\n"
              << "  infinite-cache bound: " << percent(bound) << "\n\n";
    std::printf("  %9s %11s %9s %9s %14s %10s %8s %7s\n", "blocks", "tokens", "hit rate",
                "LRU model", "not recomputed", "reclaimed", "preempt", "aborted");
    for (std::size_t i = 0; i < points.size(); ++i) {
      const Report& r = reports[i];
      const std::string lru = points[i].lru_rate >= 0 ? percent(points[i].lru_rate) : "-";
      std::printf("  %9zu %11zu %9s %9s %14llu %10llu %8llu %7llu\n", points[i].blocks,
                  points[i].tokens, percent(points[i].hit_rate).c_str(), lru.c_str(),
                  static_cast<unsigned long long>(r.prefix_hit_tokens),
                  static_cast<unsigned long long>(r.prefix.reclaimed),
                  static_cast<unsigned long long>(r.preemptions),
                  static_cast<unsigned long long>(r.aborted));
    }
    std::fflush(stdout);
  }
  for (std::size_t i = 0; i < reports.size(); ++i) {
    if (!reports[i].error.empty()) {
      std::cerr << "pkv-sim: sweep at " << points[i].blocks << " blocks: " << reports[i].error
                << "\n";
      status = 1;
    }
  }
  if (!o.plot_file.empty()) {
    if (auto err = plot_sweep_png(points, bound, describe(o), o.plot_file); !err.empty()) {
      std::cerr << "pkv-sim: " << err << "\n";
      status = 1;
    } else if (!o.json) {
      std::cout << "plot written to " << o.plot_file << "\n";
    }
  }
  return status;
}

int run(int argc, char** argv) {
  using namespace pkv::sim;
  const ParseResult parsed = parse_options(argc, argv);
  if (parsed.kind == ParseResult::Kind::help) {
    std::cout << parsed.text;
    return 0;
  }
  if (parsed.kind == ParseResult::Kind::error) {
    std::cerr << "pkv-sim: " << parsed.text << "\n";
    return 2;
  }
  const Options& o = parsed.options;
  if (o.compare_baseline && !baseline_available()) {
    std::cerr << "pkv-sim: --compare-baseline is unavailable: this build has no "
                 "baselines/seed_mutex_cache (configure with -Dsim=true and Boost installed)\n";
    return 2;
  }
  if (!o.capacity_sweep.empty()) return sweep(o);
  // Progress goes to the terminal the report is not written to; --json keeps stdout clean.
  std::FILE* out = o.json ? stderr : stdout;
  const bool tty = is_terminal(out);
  const bool show = !o.quiet && (!o.json || tty);
  ProgressPrinter pkv_progress(out, tty, "pkv");
  ProgressPrinter base_progress(out, tty, "seed+mutex");
  const ProgressFn pkv_fn = show ? ProgressFn(std::ref(pkv_progress)) : ProgressFn();
  const ProgressFn base_fn = show ? ProgressFn(std::ref(base_progress)) : ProgressFn();

  const Report report = run_pkv(o, pkv_fn);
  Report baseline;
  if (o.compare_baseline) baseline = run_baseline(o, base_fn);
  const Report* base = o.compare_baseline ? &baseline : nullptr;

  if (o.json) {
    print_json(std::cout, report, base);
  } else if (base) {
    print_comparison(std::cout, report, *base);
  } else {
    print_text(std::cout, report);
  }
  std::cout.flush();

  int status = report.error.empty() && (!base || base->error.empty()) ? 0 : 1;
  if (!o.plot_file.empty()) {
    if (auto err = plot_png(report, base, o.plot_file); !err.empty()) {
      std::cerr << "pkv-sim: " << err << "\n";
      status = 1;
    } else if (!o.json) {
      std::cout << "plot written to " << o.plot_file << "\n";
    }
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::bad_alloc&) {
    std::cerr << "pkv-sim: out of memory (try fewer --blocks or requests)\n";
  } catch (const std::exception& e) {
    std::cerr << "pkv-sim: " << e.what() << "\n";
  }
  return 1;
}
