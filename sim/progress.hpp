// sim/progress.hpp — live progress: a redrawn bar on a terminal, plain periodic lines otherwise.
//
// Contract
//   A ProgressPrinter is called from one thread at a time (the simulator's step barrier). On a TTY
//   it redraws one line (carriage return) at most every 0.1 s and ends it with a newline on the
//   final call; on a pipe or file it prints a full line at most once a second, plus the final one.
#pragma once

#include <cstdio>
#include <string>

#include "simulator.hpp"

namespace pkv::sim {

class ProgressPrinter {
 public:
  ProgressPrinter(std::FILE* out, bool tty, std::string label);
  void operator()(const Progress& p);

 private:
  std::FILE* out_;
  bool tty_;
  std::string label_;
  double last_print_ = -1;
  double last_wall_ = 0;
  std::uint64_t last_tokens_ = 0;
  std::size_t last_width_ = 0;
};

/// True when `f` is a terminal.
bool is_terminal(std::FILE* f) noexcept;

}  // namespace pkv::sim
