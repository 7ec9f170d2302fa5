// bindings/python/cache.cpp — PagedKvCache's pybind11-bound methods (construction,
// configuration, figures, sequence snapshots, many-item calls, prefix caching, eviction, checks)
// and the BlockTable that block_table() returns. The per-step methods (allocate, append,
// append_tokens, append_batch, free, fork) are plain METH_FASTCALL methods: per_step.cpp.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convert.hpp"
#include "errors.hpp"
#include "module.hpp"

namespace pkv_python {
namespace {

// A block table that numpy reads without copying (buffer protocol, uint32).
struct BlockTable {
  std::vector<std::uint32_t> ids;
};

BlockTable block_table(const pkv::PagedKvCache& c, SeqId seq) {
  auto info = c.get_sequence(seq);
  if (!info) raise(pkv::Error::sequence_not_found(seq));
  BlockTable t;
  t.ids.reserve(info->block_ids.size());
  for (BlockId b : info->block_ids) t.ids.push_back(b.value);
  return t;
}

std::unique_ptr<pkv::PagedKvCache> make_cache(std::size_t num_blocks, std::size_t block_size,
                                              std::size_t num_heads, std::size_t head_dim,
                                              std::uint32_t magazine_size, bool hold_copy_sources,
                                              unsigned affinity_shift,
                                              std::optional<pkv::EvictionStrategy> strategy,
                                              std::optional<double> threshold, bool prefix_caching,
                                              pkv::HashAlgorithm prefix_hash, bool verify_tokens) {
  pkv::PagedKvCache::Options o{};
  o.prefix.enabled = prefix_caching;
  o.prefix.hash = prefix_hash;
  o.prefix.verify_tokens = verify_tokens;
  o.pool.magazine_size = magazine_size;
  o.hold_copy_sources = hold_copy_sources;
  o.affinity_shift = affinity_shift;
  auto c =
      value_or_raise(pkv::PagedKvCache::create(num_blocks, block_size, num_heads, head_dim, o));
  if (strategy) value_or_raise(c->set_eviction_strategy(*strategy));
  if (threshold) value_or_raise(c->set_eviction_threshold(*threshold));
  return c;
}

}  // namespace

void bind_block_table(py::module_& m) {
  py::class_<BlockTable>(m, "BlockTable", py::buffer_protocol(),
                         "A block table: a sequence of ints and a uint32 buffer (numpy reads it "
                         "without copying: numpy.asarray(table)).")
      .def_buffer([](BlockTable& t) {
        return py::buffer_info(t.ids.data(), sizeof(std::uint32_t),
                               py::format_descriptor<std::uint32_t>::format(), 1,
                               {static_cast<py::ssize_t>(t.ids.size())},
                               {static_cast<py::ssize_t>(sizeof(std::uint32_t))}, true);
      })
      .def("__len__", [](const BlockTable& t) { return t.ids.size(); })
      .def("__getitem__",
           [](const BlockTable& t, py::ssize_t i) {
             const auto n = static_cast<py::ssize_t>(t.ids.size());
             if (i < 0) i += n;
             if (i < 0 || i >= n) throw py::index_error("block table index out of range");
             return t.ids[static_cast<std::size_t>(i)];
           })
      .def("tolist", [](const BlockTable& t) { return t.ids; })
      .def("__eq__",
           [](const BlockTable& t, const py::object& other) {
             // Equal to a list of the same ints or a BlockTable of them; anything else is not.
             if (py::isinstance<BlockTable>(other)) {
               return t.ids == other.cast<const BlockTable&>().ids;
             }
             return PyList_Check(other.ptr()) && py::cast(t.ids).equal(other);
           })
      .def("__repr__", [](const BlockTable& t) {
        std::string s = "BlockTable([";
        for (std::size_t i = 0; i < t.ids.size(); ++i) {
          s += (i ? ", " : "") + std::to_string(t.ids[i]);
        }
        return s + "])";
      });
}

void bind_cache(py::module_& m) {
  py::class_<C> cache_class(m, "PagedKvCache");
  cache_class
      .def(py::init(&make_cache), py::arg("num_blocks"), py::arg("block_size"),
           py::arg("num_heads"), py::arg("head_dim"), py::kw_only(),
           py::arg("magazine_size") = pkv::BlockPoolOptions{}.magazine_size,
           py::arg("hold_copy_sources") = false, py::arg("affinity_shift") = 0u,
           py::arg("eviction_strategy") = py::none(), py::arg("eviction_threshold") = py::none(),
           py::arg("prefix_caching") = true, py::arg("prefix_hash") = pkv::HashAlgorithm::sha256,
           py::arg("verify_tokens") = false, kRelease())
      // configuration
      .def(
          "set_eviction_strategy",
          [](C& c, const pkv::EvictionStrategy& s) { value_or_raise(c.set_eviction_strategy(s)); },
          py::arg("strategy"), kRelease())
      .def("eviction_strategy", &C::eviction_strategy, kRelease())
      .def(
          "set_eviction_threshold",
          [](C& c, double t) { value_or_raise(c.set_eviction_threshold(t)); }, py::arg("threshold"))
      .def("eviction_threshold", &C::eviction_threshold)
      .def(
          "set_priority",
          [](C& c, std::uint64_t s, std::uint32_t p) {
            value_or_raise(c.set_priority(SeqId{s}, p));
          },
          py::arg("seq"), py::arg("priority"), kRelease())
      .def(
          "pin", [](C& c, std::uint64_t s) { value_or_raise(c.pin(SeqId{s})); }, py::arg("seq"),
          kRelease())
      .def(
          "unpin", [](C& c, std::uint64_t s) { value_or_raise(c.unpin(SeqId{s})); }, py::arg("seq"),
          kRelease())
      .def(
          "copy_done", [](C& c, std::uint64_t s) { return value_or_raise(c.copy_done(SeqId{s})); },
          py::arg("seq"), kRelease())
      // figures (lock-free; cheap, so the GIL is kept)
      .def("block_size", &C::block_size)
      .def("total_blocks", &C::total_blocks)
      .def("free_block_count", &C::free_block_count)
      .def("used_block_count", &C::used_block_count)
      .def("utilization", &C::utilization)
      .def("block_memory_bytes", &C::block_memory_bytes)
      .def("total_memory_bytes", &C::total_memory_bytes)
      .def("used_memory_bytes", &C::used_memory_bytes)
      .def("needs_eviction", &C::needs_eviction)
      .def("num_sequences", &C::num_sequences)
      .def("stats", &C::stats)
      .def("__len__", &C::num_sequences)
      // sequences (allocate, append, append_batch, free, fork: fast methods, below)
      .def(
          "get_sequence", [](const C& c, std::uint64_t s) { return c.get_sequence(SeqId{s}); },
          py::arg("seq"), kRelease())
      .def(
          "block_table", [](const C& c, std::uint64_t s) { return block_table(c, SeqId{s}); },
          py::arg("seq"), kRelease())
      .def(
          "__contains__",
          [](const C& c, std::uint64_t s) { return c.get_sequence(SeqId{s}).has_value(); },
          kRelease())
      .def(
          "sequence_ids",
          [](const C& c) {
            std::vector<std::uint64_t> ids;
            for (SeqId s : c.sequence_ids()) ids.push_back(s.value);
            return ids;
          },
          kRelease())
      .def(
          "fork_many",
          [](C& c, std::uint64_t src, py::handle dsts) {
            std::vector<SeqId> ids;
            read_ints(dsts.ptr(), ids, "fork_many dsts");
            py::gil_scoped_release nogil;
            value_or_raise(c.fork_many(SeqId{src}, ids));
          },
          py::arg("src"), py::arg("dsts"),
          "fork(src, d) for every d of dsts in one step, all or nothing.")
      .def(
          "free_many",
          [](C& c, py::handle seqs) {
            std::vector<SeqId> ids;
            read_ints(seqs.ptr(), ids, "free_many seqs");
            pkv::FreeManyOutcome out;
            {
              py::gil_scoped_release nogil;
              c.free_many(ids, out);
            }
            py::list errors;
            for (const auto& e : out.errors)
              errors.append(py::make_tuple(e.item, error_object(e.error)));
            return errors;
          },
          py::arg("seqs"),
          "free(seqs[i]) for each item in order; returns [(item, pkv.Error)] of the items that "
          "failed (each changed nothing); [] when all were freed.")
      .def(
          "truncate",
          [](C& c, std::uint64_t s, std::size_t n) {
            return value_or_raise(c.truncate(SeqId{s}, n));
          },
          py::arg("seq"), py::arg("num_tokens"), kRelease(),
          "Drops the last num_tokens tokens; returns how many blocks left the table.")
      // prefix caching
      .def(
          "allocate_tokens",
          [](C& c, std::uint64_t seq, py::handle prompt, py::handle salt) {
            auto& t = t_tokens;
            read_tokens(prompt.ptr(), t, "allocate_tokens prompt");
            const std::string_view sv = salt_arg(salt.ptr());
            std::optional<pkv::Result<std::size_t>> r;
            {
              py::gil_scoped_release nogil;
              r.emplace(c.allocate(SeqId{seq}, t, sv));
            }
            return value_or_raise(std::move(*r));
          },
          py::arg("seq"), py::arg("prompt"), py::arg("salt") = "",
          "Registers seq with the blocks of prompt (token ids: a sequence of ints or a uint32 "
          "array), sharing its longest cached prefix under salt (str or bytes); returns how many "
          "leading tokens were found cached.")
      .def("append_batch_tokens", &append_batch_tokens, py::arg("seqs"), py::arg("tokens"),
           "One decode step with token ids: append(seqs[i], [tokens[i]]) for each item in order. "
           "Returns BatchOutcome(items, copies, errors).")
      .def(
          "commit",
          [](C& c, std::uint64_t s, std::size_t n) {
            return value_or_raise(c.commit(SeqId{s}, n));
          },
          py::arg("seq"), py::arg("num_tokens"), kRelease(),
          "The KV of the first num_tokens tokens is written: their full blocks become findable. "
          "Returns how many blocks were newly published.")
      .def(
          "match_prefix",
          [](const C& c, py::handle tokens, py::handle salt) {
            auto& t = t_tokens;
            read_tokens(tokens.ptr(), t, "match_prefix tokens");
            const std::string_view sv = salt_arg(salt.ptr());
            py::gil_scoped_release nogil;
            return c.match_prefix(t, sv);
          },
          py::arg("tokens"), py::arg("salt") = "",
          "How many leading tokens allocate(.., tokens, salt) would find cached now; no effect.")
      .def("cached_block_count", &C::cached_block_count)
      .def("reclaimable_block_count", &C::reclaimable_block_count)
      .def("prefix_stats", &C::prefix_stats)
      .def(
          "reset_prefix_cache", [](C& c) { value_or_raise(c.reset_prefix_cache()); }, kRelease())
      .def(
          "block_ref_count",
          [](const C& c, std::uint32_t b) { return c.block_ref_count(BlockId{b}); },
          py::arg("block"))
      // eviction
      .def(
          "select_eviction_target",
          [](const C& c) -> std::optional<std::uint64_t> {
            auto t = c.select_eviction_target();
            if (!t) return std::nullopt;
            return t->value;
          },
          kRelease())
      .def(
          "evict", [](C& c) { return value_or_raise(c.evict()).value; }, kRelease())
      .def(
          "evict_to_threshold",
          [](C& c, double target) {
            std::vector<std::uint64_t> ids;
            for (SeqId s : value_or_raise(c.evict_to_threshold(target))) ids.push_back(s.value);
            return ids;
          },
          py::arg("target"), kRelease())
      .def(
          "apply_streaming_llm",
          [](C& c, std::uint64_t s, std::size_t sink, std::size_t window) {
            return value_or_raise(c.apply_streaming_llm(SeqId{s}, sink, window));
          },
          py::arg("seq"), py::arg("sink_tokens"), py::arg("window_tokens"), kRelease())
      .def(
          "shard_index", [](const C& c, std::uint64_t s) { return c.shard_index(SeqId{s}); },
          py::arg("seq"))
      .def("validate_unsafe", &C::validate_unsafe, kRelease(),
           "Full structural check; '' when sound. NOT thread-safe: call only when quiescent.")
      .def(
          "__repr__", [](const C& c) { return printed(c); }, kRelease())
      .def(
          "__str__", [](const C& c) { return printed(c); }, kRelease());
  add_per_step_methods(cache_class);
}

}  // namespace pkv_python
