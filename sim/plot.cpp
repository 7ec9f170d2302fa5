// sim/plot.cpp — gnuplot script generation and invocation.
#include "plot.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <system_error>

namespace pkv::sim {

namespace {

/// Finds `name` on PATH the way the shell would (names with a '/' are taken as they are).
bool on_path(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string_view rest(path);
  for (;;) {
    const auto colon = rest.find(':');
    std::string dir(rest.substr(0, colon));
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return true;
    }
    if (colon == std::string_view::npos) return false;
    rest.remove_prefix(colon + 1);
  }
}

/// A gnuplot single-quoted string ('' stands for ').
std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    if (c == '\n') {
      out += ' ';
      continue;
    }
    out += c;
  }
  return out + "'";
}

/// A POSIX shell single-quoted word.
std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

bool write_series(const std::filesystem::path& file, const Report& r) {
  std::ofstream out(file);
  out << "# step\tutilization_percent\trunning_sequences\twaiting\n";
  for (const auto& s : r.series) {
    out << s.step << '\t'
        << 100.0 * static_cast<double>(s.used_blocks) / static_cast<double>(r.total_blocks) << '\t'
        << s.running_seqs << '\t' << s.waiting << '\n';
  }
  return static_cast<bool>(out);
}

/// A temporary directory removed with its contents when it goes out of scope.
struct TempDir {
  std::filesystem::path path;
  std::string error;
  TempDir() {
    std::error_code ec;
    const auto root = std::filesystem::temp_directory_path(ec);
    if (ec) {
      error = "no temporary directory: " + ec.message();
      return;
    }
    std::string pattern = (root / "pkv-sim-plot-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      error = "cannot create a temporary directory";
      return;
    }
    path = pattern;
  }
  ~TempDir() {
    std::error_code e;
    if (!path.empty()) std::filesystem::remove_all(path, e);
  }
};

/// Runs gnuplot on `script`; "" or the error (with `flag` as its prefix).
std::string run_gnuplot(const std::string& gnuplot, const std::filesystem::path& script,
                        const std::filesystem::path& log, const std::string& png_file,
                        const std::string& flag) {
  std::error_code rm;
  std::filesystem::remove(png_file, rm);
  const std::string cmd =
      sh_quote(gnuplot) + " " + sh_quote(script.string()) + " >" + sh_quote(log.string()) + " 2>&1";
  const int status = std::system(cmd.c_str());
  if (status != 0) {
    std::ifstream in(log);
    std::string first;
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) first = line;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
      return flag + ": gnuplot could not be run (Debian: apt-get install gnuplot-nox)";
    }
    return flag + ": gnuplot failed" + (first.empty() ? std::string() : ": " + first);
  }
  if (!std::filesystem::exists(png_file, rm)) return flag + ": gnuplot wrote no " + png_file;
  return {};
}

}  // namespace

std::string plot_sweep_png(const std::vector<SweepPoint>& points, double bound,
                           const std::string& title, const std::string& png_file,
                           const std::string& gnuplot) {
  if (!on_path(gnuplot)) {
    return "--plot needs gnuplot, which was not found on PATH (Debian: apt-get install "
           "gnuplot-nox)";
  }
  if (points.empty()) return "--plot: the sweep has no point";
  TempDir dir;
  if (!dir.error.empty()) return "--plot: " + dir.error;
  const auto data = dir.path / "sweep.tsv";
  const auto script = dir.path / "plot.gp";
  const auto log = dir.path / "gnuplot.log";
  bool lru = false;
  {
    std::ofstream out(data);
    out << "# tokens\tblocks\thit_percent\tlru_percent\n";
    for (const auto& p : points) {
      out << p.tokens << '\t' << p.blocks << '\t' << 100 * p.hit_rate << '\t'
          << (p.lru_rate >= 0 ? 100 * p.lru_rate : 0) << '\n';
      lru = lru || p.lru_rate >= 0;
    }
    if (!out) return "--plot: cannot write the data file";
  }
  {
    std::ofstream gp(script);
    gp << "set terminal pngcairo size 1000,620 noenhanced font 'sans,10'\n"
       << "set output " << gp_quote(png_file) << "\n"
       << "set title " << gp_quote("pkv-sim --capacity-sweep: " + title) << "\n"
       << "set xlabel 'cache capacity (tokens = blocks x block size)'\n"
       << "set ylabel 'prefix hit rate (% of prompt tokens)'\n"
       << "set logscale x\nset yrange [0:*]\nset grid\nset key bottom right\n"
       << "plot " << gp_quote(data.string())
       << " using 1:3 with linespoints lw 2 pt 7 lc rgb '#1f77b4' title 'pkv replay'";
    if (lru) {
      gp << ", '' using 1:4 with linespoints dt 2 pt 6 lc rgb '#2ca02c' title "
            "'LRU model (512-token blocks, no running requests)'";
    }
    gp << ", " << 100 * bound << " with lines lw 2 dt 3 lc rgb '#d62728' title "
       << gp_quote("infinite-cache bound") << "\n";
    if (!gp) return "--plot: cannot write the gnuplot script";
  }
  return run_gnuplot(gnuplot, script, log, png_file, "--plot");
}

std::string plot_png(const Report& report, const Report* baseline, const std::string& png_file,
                     const std::string& gnuplot) {
  if (!on_path(gnuplot)) {
    return "--plot needs gnuplot, which was not found on PATH (Debian: apt-get install "
           "gnuplot-nox)";
  }
  if (report.series.empty()) return "--plot: the run recorded no samples";
  std::error_code ec;
  const auto tmp_root = std::filesystem::temp_directory_path(ec);
  if (ec) return "--plot: no temporary directory: " + ec.message();
  std::string pattern = (tmp_root / "pkv-sim-plot-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) return "--plot: cannot create a temporary directory";
  const std::filesystem::path dir(pattern);
  struct Cleanup {
    std::filesystem::path d;
    ~Cleanup() {
      std::error_code e;
      std::filesystem::remove_all(d, e);
    }
  } cleanup{dir};

  const auto data = dir / "pkv.tsv";
  const auto base_data = dir / "baseline.tsv";
  const auto script = dir / "plot.gp";
  const auto log = dir / "gnuplot.log";
  if (!write_series(data, report) || (baseline && !write_series(base_data, *baseline))) {
    return "--plot: cannot write the data file";
  }
  {
    std::ofstream gp(script);
    gp << "set terminal pngcairo size 1100,620 noenhanced font 'sans,10'\n"
       << "set output " << gp_quote(png_file) << "\n"
       << "set title " << gp_quote("pkv-sim: " + report.config) << "\n"
       << "set xlabel 'scheduler step'\n"
       << "set ylabel 'block utilization (%)'\n"
       << "set y2label 'running sequences'\n"
       << "set yrange [0:105]\nset y2range [0:*]\n"
       << "set ytics nomirror\nset y2tics\nset grid\n"
       << "set key outside bottom center horizontal\n"
       << "plot " << gp_quote(data.string()) << " using 1:2 with lines lw 2 lc rgb '#1f77b4' title "
       << gp_quote(report.cache_name + " utilization")
       << ", '' using 1:3 axes x1y2 with lines lw 2 lc rgb '#ff7f0e' title "
       << gp_quote(report.cache_name + " running sequences");
    if (baseline) {
      gp << ", " << gp_quote(base_data.string())
         << " using 1:2 with lines dt 2 lc rgb '#1f77b4' title "
         << gp_quote(baseline->cache_name + " utilization")
         << ", '' using 1:3 axes x1y2 with lines dt 2 lc rgb '#ff7f0e' title "
         << gp_quote(baseline->cache_name + " running sequences");
    }
    gp << "\n";
    if (!gp) return "--plot: cannot write the gnuplot script";
  }
  std::error_code rm;
  std::filesystem::remove(png_file, rm);
  const std::string cmd =
      sh_quote(gnuplot) + " " + sh_quote(script.string()) + " >" + sh_quote(log.string()) + " 2>&1";
  const int status = std::system(cmd.c_str());
  if (status != 0) {
    std::ifstream in(log);
    std::string first;
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) first = line;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
      return "--plot: gnuplot could not be run (Debian: apt-get install gnuplot-nox)";
    }
    return "--plot: gnuplot failed" + (first.empty() ? std::string() : ": " + first);
  }
  if (!std::filesystem::exists(png_file, rm)) return "--plot: gnuplot wrote no " + png_file;
  return {};
}

}  // namespace pkv::sim
