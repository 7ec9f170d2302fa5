// Printing and error texts for pkv/types.hpp (the seed's texts).
#include "pkv/types.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <sstream>

namespace pkv {

std::ostream& operator<<(std::ostream& os, SeqId id) {
  return os << 'S' << id.value;
}
std::ostream& operator<<(std::ostream& os, BlockId id) {
  return os << 'B' << id.value;
}
std::string to_string(SeqId id) {
  return "S" + std::to_string(id.value);
}
std::string to_string(BlockId id) {
  return "B" + std::to_string(id.value);
}

const char* to_string(Errc code) noexcept {
  switch (code) {
    case Errc::out_of_memory:
      return "out_of_memory";
    case Errc::sequence_not_found:
      return "sequence_not_found";
    case Errc::block_not_found:
      return "block_not_found";
    case Errc::invalid_operation:
      return "invalid_operation";
    case Errc::invalid_argument:
      return "invalid_argument";
  }
  return "unknown";
}

Error Error::out_of_memory(std::size_t requested, std::size_t available) {
  return Error(Errc::out_of_memory, "Out of memory: requested " + std::to_string(requested) +
                                        " blocks, " + std::to_string(available) + " available");
}
Error Error::sequence_not_found(SeqId id) {
  return Error(Errc::sequence_not_found, "Sequence not found: " + to_string(id));
}
Error Error::block_not_found(BlockId id) {
  return Error(Errc::block_not_found, "Block not found: " + to_string(id));
}
Error Error::invalid_operation(const std::string& what) {
  return Error(Errc::invalid_operation, "Invalid operation: " + what);
}
Error Error::invalid_argument(const std::string& what) {
  return Error(Errc::invalid_argument, "Invalid argument: " + what);
}

std::ostream& operator<<(std::ostream& os, const Error& e) {
  return os << e.message();
}

namespace detail {
void bad_result_access(const char* what) noexcept {
  std::fprintf(stderr, "pkv: bad Result access: %s\n", what);
  std::abort();
}
}  // namespace detail

std::ostream& operator<<(std::ostream& os, const EvictionStrategy& s) {
  switch (s.kind()) {
    case EvictionStrategy::Kind::lru:
      return os << "LRU";
    case EvictionStrategy::Kind::lfu:
      return os << "LFU";
    case EvictionStrategy::Kind::longest_first:
      return os << "LongestFirst";
    case EvictionStrategy::Kind::priority:
      return os << "Priority(" << s.levels() << ')';
    case EvictionStrategy::Kind::streaming_llm:
      return os << "StreamingLLM(sink=" << s.sink_tokens() << ", window=" << s.window_tokens()
                << ')';
  }
  return os;
}

std::string to_string(const EvictionStrategy& s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

std::uint64_t SequenceInfo::slot_of(std::uint64_t i) const noexcept {
  // Runs are few (one per StreamingLLM application plus one) and sorted by first_token.
  for (const TokenRun& r : token_runs) {
    if (i >= r.first_token && i < r.first_token + r.length) return r.slot + (i - r.first_token);
  }
  return ~std::uint64_t{0};
}

std::ostream& operator<<(std::ostream& os, const CopyOp& op) {
  return os << "CopyOp{" << op.src << " -> " << op.dst << '}';
}

Result<std::optional<CopyOp>> AppendBatchOutcome::item(std::size_t i) const {
  const auto e = std::lower_bound(errors.begin(), errors.end(), i,
                                  [](const ItemError& x, std::size_t k) { return x.item < k; });
  if (e != errors.end() && e->item == i) return e->error;
  const auto c = std::lower_bound(copies.begin(), copies.end(), i,
                                  [](const ItemCopy& x, std::size_t k) { return x.item < k; });
  if (c != copies.end() && c->item == i)
    return Result<std::optional<CopyOp>>(std::in_place, c->copy);
  return Result<std::optional<CopyOp>>(std::in_place);
}

Result<void> FreeManyOutcome::item(std::size_t i) const {
  const auto e = std::lower_bound(errors.begin(), errors.end(), i,
                                  [](const ItemError& x, std::size_t k) { return x.item < k; });
  if (e != errors.end() && e->item == i) return e->error;
  return {};
}

std::vector<Result<std::optional<CopyOp>>> AppendBatchOutcome::per_item() const {
  std::vector<Result<std::optional<CopyOp>>> all;
  all.reserve(items);
  for (std::size_t i = 0; i < items; ++i) all.push_back(item(i));
  return all;
}

}  // namespace pkv
