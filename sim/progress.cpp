// sim/progress.cpp — progress bar and periodic lines.
#include "progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <utility>

namespace pkv::sim {

bool is_terminal(std::FILE* f) noexcept {
  return ::isatty(::fileno(f)) == 1;
}

ProgressPrinter::ProgressPrinter(std::FILE* out, bool tty, std::string label)
    : out_(out), tty_(tty), label_(std::move(label)) {}

namespace {
std::string rate(double v) {
  char buf[32];
  if (v >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  } else if (v >= 1e4) {
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  }
  return buf;
}
}  // namespace

void ProgressPrinter::operator()(const Progress& p) {
  const double interval = tty_ ? 0.1 : 1.0;
  if (!p.final && last_print_ >= 0 && p.wall_s - last_print_ < interval) return;
  const double dt = p.wall_s - last_wall_;
  const double tps = p.final
                         ? (p.wall_s > 0 ? static_cast<double>(p.output_tokens) / p.wall_s : 0)
                         : (dt > 0 ? static_cast<double>(p.output_tokens - last_tokens_) / dt : 0);
  last_print_ = p.wall_s;
  last_wall_ = p.wall_s;
  last_tokens_ = p.output_tokens;
  char tail[256];
  std::snprintf(tail, sizeof tail,
                "%s tok/s  util %5.1f%%  %" PRIu64 " running  %" PRIu64 " waiting  %" PRIu64
                " preempted  %.1fs",
                rate(tps).c_str(), 100 * p.utilization, p.running_seqs, p.waiting, p.preemptions,
                p.wall_s);
  char count[64];
  if (p.total > 0) {
    std::snprintf(count, sizeof count, "%" PRIu64 "/%" PRIu64 " req", p.done, p.total);
  } else {
    std::snprintf(count, sizeof count, "%" PRIu64 " req", p.done);
  }
  if (tty_) {
    constexpr int kBar = 24;
    const double frac =
        p.total > 0 ? std::min(1.0, static_cast<double>(p.done) / static_cast<double>(p.total)) : 0;
    const int filled = static_cast<int>(frac * kBar);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.append(static_cast<std::size_t>(kBar - filled), '.');
    std::string line = label_ + " [" + bar + "] " + count + "  " + tail;
    const std::size_t width = line.size();
    if (width < last_width_) line.append(last_width_ - width, ' ');
    last_width_ = width;
    std::fprintf(out_, "\r%s%s", line.c_str(), p.final ? "\n" : "");
  } else {
    std::fprintf(out_, "%s step %" PRIu64 ": %s  %s\n", label_.c_str(), p.step, count, tail);
  }
  std::fflush(out_);
}

}  // namespace pkv::sim
