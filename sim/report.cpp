// sim/report.cpp — the final report as text, side by side, and JSON.
#include "report.hpp"

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <ostream>
#include <sstream>

namespace pkv::sim {

const char* op_name(Op op) noexcept {
  switch (op) {
    case Op::allocate:
      return "allocate";
    case Op::append:
      return "append";
    case Op::append_batch:
      return "append/batch";
    case Op::fork:
      return "fork";
    case Op::free:
      return "free";
    case Op::evict:
      return "evict";
    case Op::streaming:
      return "apply_streaming_llm";
    case Op::set_priority:
      return "set_priority";
    case Op::commit:
      return "commit";
  }
  return "?";
}

namespace {

double per_s(double x, double s) {
  return s > 0 ? x / s : 0;
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

/// 1234567 -> "1.23M", 12345 -> "12.3k".
std::string human(double v) {
  const char* suffix = "";
  if (std::fabs(v) >= 1e9) {
    v /= 1e9;
    suffix = "G";
  } else if (std::fabs(v) >= 1e6) {
    v /= 1e6;
    suffix = "M";
  } else if (std::fabs(v) >= 1e4) {
    v /= 1e3;
    suffix = "k";
  }
  const int digits = std::fabs(v) >= 100 ? 0 : (std::fabs(v) >= 10 ? 1 : 2);
  return fixed(v, digits) + suffix;
}

std::string ns(std::uint64_t v) {
  if (v >= 1'000'000) return fixed(static_cast<double>(v) / 1e6, 2) + " ms";
  if (v >= 10'000) return fixed(static_cast<double>(v) / 1e3, 1) + " us";
  return std::to_string(v) + " ns";
}

struct Row {
  std::string label;
  std::string value;
};

std::vector<Row> rows(const Report& r) {
  std::vector<Row> v;
  auto add = [&](std::string label, std::string value) {
    v.push_back({std::move(label), std::move(value)});
  };
  add("requests", std::to_string(r.finished) + " finished, " + std::to_string(r.aborted) +
                      " aborted, " + std::to_string(r.unfinished) + " unfinished, " +
                      std::to_string(r.not_arrived) + " not arrived (of " +
                      std::to_string(r.requests) + ")");
  add("mean lengths",
      fixed(r.mean_prompt, 1) + " prompt / " + fixed(r.mean_output, 1) + " output tokens");
  add("time", fixed(r.wall_s, 2) + " s, " + std::to_string(r.steps) + " steps");
  add("throughput",
      human(r.requests_per_s()) + " requests/s, " + human(r.tokens_per_s()) + " tokens/s");
  add("allocator calls", human(r.calls_per_s()) + " calls/s (" + std::to_string(r.latency.count()) +
                             " calls, " + std::to_string(r.failed_calls) + " returned an error)");
  add("call latency", "p50 " + ns(r.latency.quantile(0.5)) + ", p99 " +
                          ns(r.latency.quantile(0.99)) + ", max " + ns(r.latency.max()));
  for (std::size_t i = 0; i < kNumOps; ++i) {
    const auto& h = r.op_latency[i];
    if (h.count() == 0) continue;
    add(std::string("  ") + op_name(static_cast<Op>(i)), std::to_string(h.count()) +
                                                             " calls, p50 " + ns(h.quantile(0.5)) +
                                                             ", p99 " + ns(h.quantile(0.99)));
  }
  const double per_step_us =
      r.steps > 0 && r.worker_seconds > 0
          ? 1e6 * r.allocator_seconds / (static_cast<double>(r.steps) * r.worker_seconds / r.wall_s)
          : 0;
  add("allocator share", fixed(r.allocator_share_pct(), 1) + "% of worker time (" +
                             fixed(per_step_us, 2) + " us of calls per worker step)");
  add("block utilization", "mean " + fixed(100 * r.util_mean, 1) + "%, peak " +
                               fixed(100 * r.util_peak, 1) + "% (" +
                               std::to_string(r.peak_blocks_used) + " of " +
                               std::to_string(r.total_blocks) + " blocks)");
  add("internal waste", fixed(r.waste_pct, 2) + "% of allocated token slots hold no token");
  add("saved by sharing", fixed(r.sharing_saved_pct, 2) + "% of blocks (" +
                              std::to_string(r.sharing_samples) + " samples)");
  add("copy-on-write",
      std::to_string(r.cow_copies) + " block copies, " + std::to_string(r.forks) + " forks");
  add("preemptions", std::to_string(r.preemptions) + " (" + std::to_string(r.evictions) +
                         " evictions, " + std::to_string(r.recomputed_tokens) +
                         " tokens recomputed)");
  if (r.token_mode) {
    if (r.prefix_caching) {
      add("prefix hit rate", fixed(100 * r.prefix_hit_rate(), 2) + "% of prompt tokens (" +
                                 std::to_string(r.prefix_hit_tokens) + " of " +
                                 std::to_string(r.prompt_tokens) + " not recomputed)");
    } else {
      add("prefix hit rate", "none: allocated by count (this cache has no prefix caching)");
    }
    if (r.has_bound) {
      add("hit-rate bound", fixed(100 * r.bound.hit_rate(), 2) + "% with an infinite cache (" +
                                std::to_string(r.bound.hit_tokens) + " of " +
                                std::to_string(r.bound.prompt_tokens) + " tokens, " +
                                std::to_string(r.bound.requests) + " requests)");
    }
    if (r.prefix_caching) {
      add("prefix cache", std::to_string(r.prefix.published) + " blocks published, " +
                              std::to_string(r.prefix.reclaimed) + " reclaimed; " +
                              std::to_string(r.recompute_hit_tokens) +
                              " readmitted tokens found cached");
      add("  at the end", std::to_string(r.end_cached_blocks) + " cached blocks, " +
                              std::to_string(r.end_reclaimable_blocks) + " reclaimable");
    }
  }
  if (r.streaming_trims > 0) {
    add("streaming", std::to_string(r.streaming_trims) + " trims, " +
                         std::to_string(r.streaming_dropped_tokens) + " tokens dropped");
  }
  if (r.verified) {
    add("verify", std::to_string(r.verify_sequences_checked) + " sequence reads, " +
                      std::to_string(r.verify_tokens_checked) + " tokens checked");
  }
  add("at the end", std::to_string(r.end_used_blocks) + " blocks used, " +
                        std::to_string(r.end_sequences) + " sequences");
  return v;
}

void json_string(std::ostream& os, const std::string& s) {
  os << '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      os << '\\' << ch;
    } else if (c == '\n') {
      os << "\\n";
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      os << buf;
    } else {
      os << ch;
    }
  }
  os << '"';
}

void json_number(std::ostream& os, double v) {
  if (!std::isfinite(v)) {
    os << "null";
    return;
  }
  std::ostringstream s;
  s << std::setprecision(10) << v;
  os << s.str();
}

void json_report(std::ostream& os, const Report& r, const std::string& indent) {
  const std::string in = indent + "  ";
  auto key = [&](const char* k) { os << in << '"' << k << "\": "; };
  os << "{\n";
  key("cache");
  json_string(os, r.cache_name);
  os << ",\n";
  key("config");
  json_string(os, r.config);
  os << ",\n";
  key("ok");
  os << (r.error.empty() ? "true" : "false") << ",\n";
  key("error");
  json_string(os, r.error);
  os << ",\n";
  key("note");
  json_string(os, r.note);
  os << ",\n";
  auto u = [&](const char* k, std::uint64_t v) {
    key(k);
    os << v << ",\n";
  };
  auto d = [&](const char* k, double v) {
    key(k);
    json_number(os, v);
    os << ",\n";
  };
  u("requests", r.requests);
  u("finished", r.finished);
  u("aborted", r.aborted);
  u("unfinished", r.unfinished);
  u("not_arrived", r.not_arrived);
  d("mean_prompt_tokens", r.mean_prompt);
  d("mean_output_tokens", r.mean_output);
  u("steps", r.steps);
  d("wall_seconds", r.wall_s);
  d("requests_per_second", r.requests_per_s());
  d("tokens_per_second", r.tokens_per_s());
  u("prompt_tokens", r.prompt_tokens);
  u("output_tokens", r.output_tokens);
  u("recomputed_tokens", r.recomputed_tokens);
  u("allocator_calls", r.latency.count());
  u("failed_calls", r.failed_calls);
  d("allocator_calls_per_second", r.calls_per_s());
  u("latency_p50_ns", r.latency.quantile(0.5));
  u("latency_p99_ns", r.latency.quantile(0.99));
  u("latency_max_ns", r.latency.max());
  d("allocator_share_percent", r.allocator_share_pct());
  key("ops");
  os << "{";
  bool first = true;
  for (std::size_t i = 0; i < kNumOps; ++i) {
    const auto& h = r.op_latency[i];
    if (h.count() == 0) continue;
    os << (first ? "\n" : ",\n") << in << "  \"" << op_name(static_cast<Op>(i))
       << "\": {\"calls\": " << h.count() << ", \"p50_ns\": " << h.quantile(0.5)
       << ", \"p99_ns\": " << h.quantile(0.99) << ", \"max_ns\": " << h.max() << "}";
    first = false;
  }
  os << (first ? "" : "\n" + in) << "},\n";
  u("total_blocks", r.total_blocks);
  u("block_size", r.block_size);
  d("utilization_mean_percent", 100 * r.util_mean);
  d("utilization_peak_percent", 100 * r.util_peak);
  u("peak_blocks_used", r.peak_blocks_used);
  d("internal_waste_percent", r.waste_pct);
  d("memory_saved_by_sharing_percent", r.sharing_saved_pct);
  u("sharing_samples", r.sharing_samples);
  u("cow_copies", r.cow_copies);
  u("forks", r.forks);
  u("preemptions", r.preemptions);
  u("evictions", r.evictions);
  key("prefix");
  os << "{\"token_workload\": " << (r.token_mode ? "true" : "false")
     << ", \"prefix_caching\": " << (r.prefix_caching ? "true" : "false") << ", \"hit_rate\": ";
  json_number(os, r.prefix_hit_rate());
  os << ", \"prompt_tokens\": " << r.prompt_tokens
     << ", \"hit_tokens_not_recomputed\": " << r.prefix_hit_tokens
     << ", \"readmission_hit_tokens\": " << r.recompute_hit_tokens
     << ", \"cache_requests\": " << r.prefix.requests << ", \"cache_queries\": " << r.prefix.queries
     << ", \"cache_hits\": " << r.prefix.hits << ", \"published_blocks\": " << r.prefix.published
     << ", \"reclaimed_blocks\": " << r.prefix.reclaimed
     << ", \"verify_failures\": " << r.prefix.verify_failures
     << ", \"end_cached_blocks\": " << r.end_cached_blocks
     << ", \"end_reclaimable_blocks\": " << r.end_reclaimable_blocks << ", \"bound\": ";
  if (r.has_bound) {
    os << "{\"hit_rate\": ";
    json_number(os, r.bound.hit_rate());
    os << ", \"hit_tokens\": " << r.bound.hit_tokens
       << ", \"prompt_tokens\": " << r.bound.prompt_tokens << ", \"requests\": " << r.bound.requests
       << ", \"block_size\": " << r.bound.block_size << "}";
  } else {
    os << "null";
  }
  os << "},\n";
  u("streaming_trims", r.streaming_trims);
  u("streaming_dropped_tokens", r.streaming_dropped_tokens);
  key("verified");
  os << (r.verified ? "true" : "false") << ",\n";
  u("verify_sequence_reads", r.verify_sequences_checked);
  u("verify_tokens_checked", r.verify_tokens_checked);
  u("end_used_blocks", r.end_used_blocks);
  key("end_sequences");
  os << r.end_sequences << "\n" << indent << "}";
}

}  // namespace

double Report::requests_per_s() const noexcept {
  return per_s(static_cast<double>(finished), wall_s);
}
double Report::tokens_per_s() const noexcept {
  return per_s(static_cast<double>(output_tokens), wall_s);
}
double Report::calls_per_s() const noexcept {
  return per_s(static_cast<double>(latency.count()), wall_s);
}
double Report::prefix_hit_rate() const noexcept {
  return prompt_tokens == 0
             ? 0.0
             : static_cast<double>(prefix_hit_tokens) / static_cast<double>(prompt_tokens);
}
double Report::allocator_share_pct() const noexcept {
  return worker_seconds > 0 ? 100.0 * allocator_seconds / worker_seconds : 0;
}

void print_text(std::ostream& os, const Report& r) {
  os << "pkv-sim report: " << r.cache_name << "\n  " << r.config << "\n";
  std::size_t width = 0;
  const auto v = rows(r);
  for (const auto& row : v) width = std::max(width, row.label.size());
  for (const auto& row : v) {
    os << "  " << std::left << std::setw(static_cast<int>(width)) << row.label << "  " << row.value
       << "\n";
  }
  if (!r.note.empty()) os << "  note: " << r.note << "\n";
  if (!r.error.empty()) os << "  ERROR: " << r.error << "\n";
}

void print_comparison(std::ostream& os, const Report& a, const Report& b) {
  os << "pkv-sim comparison, same seeded workload\n  " << a.config << "\n";
  auto ra = rows(a);
  auto rb = rows(b);
  std::size_t lw = std::string("").size();
  std::size_t aw = a.cache_name.size();
  for (const auto& row : ra) {
    lw = std::max(lw, row.label.size());
    aw = std::max(aw, row.value.size());
  }
  auto line = [&](const std::string& l, const std::string& x, const std::string& y) {
    os << "  " << std::left << std::setw(static_cast<int>(lw)) << l << "  "
       << std::setw(static_cast<int>(aw)) << x << "  |  " << y << "\n";
  };
  line("", a.cache_name, b.cache_name);
  // Rows are matched by label (per-op rows may differ between the two runs).
  for (const auto& row : ra) {
    std::string other = "-";
    for (const auto& o : rb) {
      if (o.label == row.label) other = o.value;
    }
    line(row.label, row.value, other);
  }
  for (const auto& o : rb) {
    bool found = false;
    for (const auto& row : ra) found = found || row.label == o.label;
    if (!found) line(o.label, "-", o.value);
  }
  if (a.wall_s > 0 && b.wall_s > 0 && b.calls_per_s() > 0) {
    os << "  speed-up of " << a.cache_name << ": " << fixed(b.wall_s / a.wall_s, 2)
       << "x wall time, " << fixed(a.calls_per_s() / b.calls_per_s(), 2)
       << "x allocator calls/s; p99 latency " << ns(a.latency.quantile(0.99)) << " vs "
       << ns(b.latency.quantile(0.99)) << "\n";
  }
  if (!a.note.empty()) os << "  note (" << a.cache_name << "): " << a.note << "\n";
  if (!b.note.empty()) os << "  note (" << b.cache_name << "): " << b.note << "\n";
  if (!a.error.empty()) os << "  ERROR (" << a.cache_name << "): " << a.error << "\n";
  if (!b.error.empty()) os << "  ERROR (" << b.cache_name << "): " << b.error << "\n";
}

void print_json(std::ostream& os, const Report& r, const Report* baseline) {
  if (baseline == nullptr) {
    json_report(os, r, "");
    os << "\n";
    return;
  }
  os << "{\n  \"pkv\": ";
  json_report(os, r, "  ");
  os << ",\n  \"baseline\": ";
  json_report(os, *baseline, "  ");
  os << "\n}\n";
}

}  // namespace pkv::sim
