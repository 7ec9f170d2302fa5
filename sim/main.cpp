// sim/main.cpp — pkv-sim: a multithreaded continuous-batching scheduler on one shared
// pkv::PagedKvCache. Exit status: 0 ok, 1 the run failed (error in the report, --verify
// mismatch, --plot failed), 2 bad arguments.
#include <cstdio>
#include <exception>
#include <iostream>
#include <new>

#include "options.hpp"
#include "plot.hpp"
#include "progress.hpp"
#include "report.hpp"
#include "simulator.hpp"

namespace {

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
