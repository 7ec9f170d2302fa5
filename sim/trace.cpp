// sim/trace.cpp — Mooncake trace reading (nlohmann::json), token expansion, the infinite-cache
// bound, and the shared-prefix generator (sim/trace.hpp).
#include "trace.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <istream>
#include <list>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <utility>

namespace pkv::sim {
namespace {

// splitmix64's output function (a bijection of 64-bit words).
constexpr std::uint64_t mix(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr TokenId kTokenMask = 0x1FFFF;  // 17 bits: 131,072 token ids

// Tagged keys for the tokens that are not a trace block's: tag in the top 2 bits, then a 30-bit
// key and a 32-bit position (trace blocks use id * 512 + j < 2^62 for ids below 2^53).
TokenId tagged_token(std::uint64_t tag, std::uint64_t key, std::uint64_t position) noexcept {
  return static_cast<TokenId>(
      mix(tag << 62 | (key & 0x3FFFFFFFULL) << 32 | (position & 0xFFFFFFFFULL)) & kTokenMask);
}

[[noreturn]] void fail(const std::string& source, std::size_t line, const std::string& what) {
  throw TraceError(source + ":" + std::to_string(line) + ": " + what);
}

std::uint64_t get_uint(const nlohmann::json& obj, const char* key, std::uint64_t max,
                       const std::string& source, std::size_t line) {
  const auto it = obj.find(key);
  if (it == obj.end()) fail(source, line, std::string("missing \"") + key + "\"");
  if (!it->is_number_integer()) {
    fail(source, line, std::string("\"") + key + "\" must be a non-negative integer");
  }
  if (it->is_number_integer() && !it->is_number_unsigned() && it->get<std::int64_t>() < 0) {
    fail(source, line, std::string("\"") + key + "\" must be a non-negative integer");
  }
  const std::uint64_t v = it->get<std::uint64_t>();
  if (v > max) fail(source, line, std::string("\"") + key + "\" is too large");
  return v;
}

}  // namespace

std::uint64_t Trace::prompt_tokens() const noexcept {
  std::uint64_t n = 0;
  for (const auto& r : requests) n += r.input_length;
  return n;
}

std::uint64_t Trace::output_tokens() const noexcept {
  std::uint64_t n = 0;
  for (const auto& r : requests) n += r.output_length;
  return n;
}

Trace parse_mooncake_trace(std::istream& in, const std::string& source) {
  Trace trace;
  trace.source = source;
  std::string text;
  std::size_t line = 0;
  double last_ts = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      fail(source, line, std::string("not JSON: ") + e.what());
    }
    if (!j.is_object()) fail(source, line, "not a JSON object");
    TraceRequest r;
    const auto ts = j.find("timestamp");
    if (ts == j.end()) fail(source, line, "missing \"timestamp\"");
    if (!ts->is_number() || ts->get<double>() < 0) {
      fail(source, line, "\"timestamp\" must be a non-negative number");
    }
    r.timestamp_ms = ts->get<double>();
    if (r.timestamp_ms < last_ts) fail(source, line, "timestamps go backwards");
    last_ts = r.timestamp_ms;
    r.input_length =
        static_cast<std::uint32_t>(get_uint(j, "input_length", 0xFFFFFFFFu, source, line));
    r.output_length =
        static_cast<std::uint32_t>(get_uint(j, "output_length", 0xFFFFFFFFu, source, line));
    if (r.input_length == 0) fail(source, line, "\"input_length\" must be positive");
    const auto ids = j.find("hash_ids");
    if (ids == j.end() || !ids->is_array()) fail(source, line, "\"hash_ids\" must be an array");
    const std::size_t expect = (r.input_length + kTraceBlockTokens - 1) / kTraceBlockTokens;
    if (ids->size() != expect) {
      fail(source, line,
           "\"hash_ids\" has " + std::to_string(ids->size()) + " ids, but input_length " +
               std::to_string(r.input_length) + " needs ceil(n / 512) = " + std::to_string(expect));
    }
    r.hash_ids.reserve(expect);
    for (const auto& id : *ids) {
      if (!id.is_number_integer() || (!id.is_number_unsigned() && id.get<std::int64_t>() < 0)) {
        fail(source, line, "\"hash_ids\" must hold non-negative integers");
      }
      const std::uint64_t v = id.get<std::uint64_t>();
      if (v >= (std::uint64_t{1} << 53)) fail(source, line, "a hash id is too large (>= 2^53)");
      r.hash_ids.push_back(v);
    }
    trace.requests.push_back(std::move(r));
  }
  if (in.bad()) throw TraceError(source + ": read error");
  return trace;
}

Trace load_mooncake_trace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw TraceError(path + ": cannot open");
  return parse_mooncake_trace(in, path);
}

TokenId trace_token(std::uint64_t hash_id, std::size_t j) noexcept {
  return static_cast<TokenId>(mix(hash_id * kTraceBlockTokens + j) & kTokenMask);
}

TokenId request_token(std::uint64_t index, std::uint64_t position) noexcept {
  return tagged_token(2, index, position);
}

void expand_prompt(const TraceRequest& request, std::uint64_t index, std::vector<TokenId>& out) {
  out.clear();
  out.reserve(request.input_length);
  const std::size_t n = request.input_length;
  const std::size_t full = n / kTraceBlockTokens;
  for (std::size_t t = 0; t < full; ++t) {
    for (std::size_t j = 0; j < kTraceBlockTokens; ++j)
      out.push_back(trace_token(request.hash_ids[t], j));
  }
  for (std::size_t p = full * kTraceBlockTokens; p < n; ++p) out.push_back(request_token(index, p));
}

std::vector<TokenId> expand_prompt(const TraceRequest& request, std::uint64_t index) {
  std::vector<TokenId> out;
  expand_prompt(request, index, out);
  return out;
}

PrefixBound infinite_cache_bound(const Trace& trace, std::size_t block_size) {
  if (block_size == 0)
    throw std::invalid_argument("infinite_cache_bound: block_size must be positive");
  // A trie of id chains: (parent node, id) -> node; node 0 is the root. Only full trace blocks
  // are inserted (a partial block's tokens are its request's own).
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::uint64_t> trie;
  PrefixBound b;
  b.block_size = block_size;
  for (const TraceRequest& r : trace.requests) {
    const std::size_t n = r.input_length;
    const std::size_t full = n / kTraceBlockTokens;
    std::uint64_t node = 0;
    std::size_t depth = 0;
    bool matching = true;
    for (std::size_t t = 0; t < full; ++t) {
      const auto key = std::make_pair(node, r.hash_ids[t]);
      auto it = trie.find(key);
      if (it == trie.end()) {
        matching = false;
        it = trie.emplace(key, trie.size() + 1).first;
      } else if (matching) {
        ++depth;
      }
      node = it->second;
    }
    const std::size_t matched = std::min(depth * kTraceBlockTokens, n - 1);
    b.hit_tokens += matched / block_size * block_size;
    b.prompt_tokens += n;
    ++b.requests;
  }
  return b;
}

PrefixBound lru_cache_bound(const Trace& trace, std::size_t block_size,
                            std::size_t capacity_tokens) {
  if (block_size == 0) throw std::invalid_argument("lru_cache_bound: block_size must be positive");
  const std::size_t capacity = capacity_tokens / kTraceBlockTokens;
  std::list<std::uint64_t> order;  // most recent first
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> where;
  PrefixBound b;
  b.block_size = block_size;
  for (const TraceRequest& r : trace.requests) {
    const std::size_t n = r.input_length;
    const std::size_t full = n / kTraceBlockTokens;
    std::size_t depth = 0;
    while (depth < full && where.contains(r.hash_ids[depth])) ++depth;
    b.hit_tokens += std::min(depth * kTraceBlockTokens, n - 1) / block_size * block_size;
    b.prompt_tokens += n;
    ++b.requests;
    if (capacity == 0) continue;
    // Deepest block first, so a chain's root is its most recent block and goes last.
    for (std::size_t t = full; t-- > 0;) {
      const std::uint64_t id = r.hash_ids[t];
      if (auto it = where.find(id); it != where.end()) {
        order.splice(order.begin(), order, it->second);
        continue;
      }
      order.push_front(id);
      where.emplace(id, order.begin());
      if (order.size() > capacity) {
        where.erase(order.back());
        order.pop_back();
      }
    }
  }
  return b;
}

InfiniteCacheBound::InfiniteCacheBound(std::size_t block_size) {
  if (block_size == 0) {
    throw std::invalid_argument("InfiniteCacheBound: block_size must be positive");
  }
  bound_.block_size = block_size;
}

std::size_t InfiniteCacheBound::add(std::span<const TokenId> prompt) {
  const std::size_t bs = bound_.block_size;
  const auto hashes = block_hashes(prompt, bs, {}, HashAlgorithm::xxh3_128);
  const std::size_t max_hit = prompt.empty() ? 0 : (prompt.size() - 1) / bs;
  std::size_t hit = 0;
  while (hit < std::min(max_hit, hashes.size()) && seen_.contains(hashes[hit])) ++hit;
  bound_.hit_tokens += hit * bs;
  bound_.prompt_tokens += prompt.size();
  ++bound_.requests;
  seen_.insert(hashes.begin(), hashes.end());
  return hit * bs;
}

// ---- shared-prefix ------------------------------------------------------------------------------

std::optional<SharedPrefixSpec> parse_shared_prefix(std::string_view text, std::string* error) {
  auto bad = [error](const std::string& what) -> std::optional<SharedPrefixSpec> {
    if (error != nullptr) *error = "shared-prefix: " + what;
    return std::nullopt;
  };
  constexpr std::string_view kPrefix = "shared-prefix:";
  if (text.substr(0, kPrefix.size()) != kPrefix) return bad("expected shared-prefix:G:P:S:Q");
  text.remove_prefix(kPrefix.size());
  std::size_t v[4];
  for (int i = 0; i < 4; ++i) {
    const std::size_t colon = text.find(':');
    const std::string_view field = text.substr(0, colon);
    if ((i < 3) != (colon != std::string_view::npos)) return bad("expected 4 numbers G:P:S:Q");
    const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), v[i]);
    if (field.empty() || ec != std::errc() || end != field.data() + field.size()) {
      return bad("'" + std::string(field) + "' is not a non-negative integer");
    }
    if (v[i] > (std::size_t{1} << 24)) return bad("'" + std::string(field) + "' is too large");
    if (i < 3) text.remove_prefix(colon + 1);
  }
  if (v[0] == 0 || v[1] == 0) return bad("G and P must be positive");
  if (v[0] * v[1] > (std::size_t{1} << 24)) return bad("G * P is too large");
  if (v[2] + v[3] == 0) return bad("S + Q must be positive (a prompt needs a token)");
  return SharedPrefixSpec{v[0], v[1], v[2], v[3]};
}

std::vector<SharedPrefixPrompt> generate_shared_prefix(const SharedPrefixSpec& spec, bool shuffle,
                                                       std::uint64_t seed) {
  std::vector<SharedPrefixPrompt> out;
  out.reserve(spec.groups * spec.prompts_per_group);
  for (std::size_t g = 0; g < spec.groups; ++g) {
    for (std::size_t i = 0; i < spec.prompts_per_group; ++i) {
      SharedPrefixPrompt p;
      p.group = g;
      p.index_in_group = i;
      p.tokens.reserve(spec.system_tokens + spec.question_tokens);
      for (std::size_t k = 0; k < spec.system_tokens; ++k)
        p.tokens.push_back(tagged_token(1, g, k));
      const std::uint64_t q = static_cast<std::uint64_t>(g) * spec.prompts_per_group + i;
      for (std::size_t k = 0; k < spec.question_tokens; ++k)
        p.tokens.push_back(tagged_token(3, q, k));
      out.push_back(std::move(p));
    }
  }
  if (shuffle) {
    std::uint64_t state = seed;
    for (std::size_t i = out.size(); i > 1; --i) {
      state = mix(state);
      const std::size_t j = static_cast<std::size_t>((state >> 11) % i);  // bias < 2^-29: fine here
      std::swap(out[i - 1], out[j]);
    }
  }
  return out;
}

}  // namespace pkv::sim
