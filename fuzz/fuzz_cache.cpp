// libFuzzer target: bytes -> a program of PagedKvCache calls on a small cache, each call compared
// with the sequential reference model (tests/model/reference_model.hpp through
// tests/model/harness.hpp), and the whole observable state (validate_unsafe(), figures, counters,
// every sequence's blocks, slots and sharing, the KV cookie arena of tests/support/) checked after
// every call.
// Any difference aborts with a description of the call and the difference.
//
// Input format (all one byte each, read until the input ends; missing bytes read as 0):
//   config: num_blocks = 1 + b % 16, block_size = 1 + b % 5, magazine = {0,1,2,4,32,64}[b % 6]
//           and hold_copy_sources = (b / 6) % 2 from the same byte, num_heads = 1 + b % 4 and
//           affinity_shift = (b / 4) % 3 from the same byte, head_dim = 1 + b % 8
//   then per call: kind = b % kOpKinds (18 kinds, in OpKind's order in ops.hpp) for b < 252;
//   the kinds added later take the bytes whose old reading was the last, partial cycle of the
//   modulus (no input of fuzz/corpus written before them has a kind byte >= 252, so those decode
//   to the same calls as before): 252 fork_many (seq, a count byte c, c % 4 dst ids), 253
//   free_many (a count byte c, c % 5 ids), 254 truncate (seq, tokens); 255 prefix caching, a
//   second byte % 5 picking allocate(seq, prompt_of(family, n), salt) / append(seq, token ids) /
//   commit(seq, tokens) / match_prefix(prompt, salt) / reset_prefix_cache (see decode()).
//   Followed by the arguments: seq ids test_ids()[b %
//   6] (three pairs of ids, each pair in one shard under every placement used); token counts b <
//   240 ? b % 24 : a huge value (overflow / out-of-memory paths); thresholds from a table that
//   includes -0.5, 1.5, NaN and +-inf.
// At most 400 calls per input.
//
// Build: meson setup build-fuzz -Dfuzz=true (with CXX=clang++); run: see fuzz/meson.build.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "harness.hpp"

namespace {

using pkv::model::CacheConfig;
using pkv::model::Harness;
using pkv::model::Op;
using pkv::model::OpKind;

class Bytes {
 public:
  Bytes(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  bool empty() const { return i_ >= n_; }
  std::uint8_t u8() { return i_ < n_ ? d_[i_++] : 0; }

  std::uint64_t seq() { return pkv::model::test_ids()[u8() % 6]; }
  std::uint64_t tokens() {
    constexpr std::uint64_t kHuge = std::numeric_limits<std::size_t>::max();
    const std::uint8_t b = u8();
    if (b < 240) return b % 24;
    switch (b % 4) {
      case 0:
        return kHuge;
      case 1:
        return kHuge - 1;
      case 2:
        return std::uint64_t{1} << 40;
      default:
        return 1000;
    }
  }
  double fraction() {
    static constexpr double kTable[] = {0.0, 0.1,  0.25, 0.5, 0.75, 0.9,  1.0, -0.5,
                                        1.5, 0.33, 0.6,  0.8, 0.95, 0.05, 0.4, 0.7};
    const std::uint8_t b = u8();
    if (b == 255) return std::numeric_limits<double>::quiet_NaN();
    if (b == 254) return std::numeric_limits<double>::infinity();
    if (b == 253) return -std::numeric_limits<double>::infinity();
    return kTable[b % 16];
  }

 private:
  const std::uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

Op decode(Bytes& in) {
  Op op;
  const std::uint8_t kind = in.u8();
  switch (kind) {
    case 252:
      op.kind = OpKind::fork_many;
      break;
    case 253:
      op.kind = OpKind::free_many;
      break;
    case 254:
      op.kind = OpKind::truncate;
      break;
    case 255: {  // prefix caching: a second byte picks the call
      static constexpr OpKind kPrefix[] = {OpKind::allocate_tokens, OpKind::append_tokens,
                                           OpKind::commit, OpKind::match_prefix,
                                           OpKind::reset_prefix};
      op.kind = kPrefix[in.u8() % 5];
      break;
    }
    default:
      op.kind = static_cast<OpKind>(kind % pkv::model::kOpKinds);
  }
  switch (op.kind) {
    case OpKind::allocate:
    case OpKind::append:
      op.seq = in.seq();
      op.n = in.tokens();
      break;
    case OpKind::fork:
      op.seq = in.seq();
      op.seq2 = in.seq();
      break;
    case OpKind::append_batch:
      op.seq = in.seq();
      op.seq2 = in.seq();
      op.n = in.tokens();
      break;
    case OpKind::free:
    case OpKind::get_sequence:
      op.seq = in.seq();
      break;
    case OpKind::evict_to_threshold:
    case OpKind::set_threshold:
      op.x = in.fraction();
      break;
    case OpKind::streaming:
      op.seq = in.seq();
      op.n = in.tokens();
      op.m = in.tokens();
      break;
    case OpKind::set_priority: {
      op.seq = in.seq();
      const std::uint8_t b = in.u8();
      op.priority = b == 255 ? std::numeric_limits<std::uint32_t>::max() : b % 5;
      break;
    }
    case OpKind::set_strategy:
      op.strategy = static_cast<std::uint8_t>(in.u8() % 5);
      op.n = in.tokens();
      op.m = in.tokens();
      break;
    case OpKind::pin:
    case OpKind::unpin:
    case OpKind::copy_done:
      op.seq = in.seq();
      break;
    case OpKind::fork_many: {
      op.seq = in.seq();
      const int k = in.u8() % 4;
      for (int i = 0; i < k; ++i) op.ids.push_back(in.seq());
      break;
    }
    case OpKind::free_many: {
      const int k = in.u8() % 5;
      for (int i = 0; i < k; ++i) op.ids.push_back(in.seq());
      break;
    }
    case OpKind::truncate:
      op.seq = in.seq();
      op.n = in.tokens();
      break;
    case OpKind::allocate_tokens:
    case OpKind::match_prefix: {
      if (op.kind == OpKind::allocate_tokens) op.seq = in.seq();
      const std::uint8_t b = in.u8();  // length 0..15, family 0..3 and salt from one byte
      op.n = b % 16;
      op.m = (b / 16) % 4;
      op.strategy = static_cast<std::uint8_t>(b / 64);
      break;
    }
    case OpKind::append_tokens: {
      op.seq = in.seq();
      const std::uint8_t b = in.u8();  // 0..3 tokens continuing family 0..4
      op.n = b % 4;
      op.m = (b / 4) % 5;
      break;
    }
    case OpKind::commit:
      op.seq = in.seq();
      op.n = in.tokens();
      break;
    case OpKind::reset_prefix:
      break;
    case OpKind::append_batch_tokens:  // (not decoded: the corpus's byte meanings stay)
      break;
    case OpKind::sequence_ids:
    case OpKind::select_target:
    case OpKind::evict:
    case OpKind::display:
      break;
  }
  return op;
}

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  std::fprintf(stderr, "pkv fuzz: %s: %s\n", where.c_str(), what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes in(data, size);
  static constexpr std::uint32_t kMagazines[] = {0, 1, 2, 4, 32, 64};
  CacheConfig cfg;
  cfg.num_blocks = 1 + in.u8() % 16;
  cfg.block_size = 1 + in.u8() % 5;
  const std::uint8_t mag = in.u8();
  cfg.magazine_size = kMagazines[mag % 6];
  cfg.hold_copy_sources = (mag / 6) % 2 == 1;
  const std::uint8_t heads = in.u8();
  cfg.num_heads = 1 + heads % 4;
  cfg.affinity_shift = (heads / 4) % 3;  // 0: hashed placement; 1, 2: by owner bits
  cfg.head_dim = 1 + in.u8() % 8;
  Harness h(cfg);
  if (!h.init_error().empty()) fail("create", h.init_error());
  if (std::string e = h.check(); !e.empty()) fail("initial state", e);
  for (int step = 0; step < 400 && !in.empty(); ++step) {
    const Op op = decode(in);
    std::string e = h.step(op);
    if (e.empty()) e = h.check();
    if (!e.empty()) fail("step " + std::to_string(step) + " " + pkv::model::to_string(op), e);
  }
  return 0;
}
