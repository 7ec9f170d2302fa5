// bindings/python/values.cpp — the module's value types: EvictionStrategy, HashAlgorithm,
// PrefixCacheStats, CopyOp, CacheStats and SequenceInfo (snapshots and options the C++ API passes
// by value; pkv/types.hpp, pkv/prefix_types.hpp, pkv/block_hash.hpp).
#include <cstdint>
#include <string>
#include <vector>

#include "errors.hpp"
#include "module.hpp"

namespace pkv_python {

void bind_values(py::module_& m) {
  py::class_<pkv::EvictionStrategy>(m, "EvictionStrategy")
      .def(py::init<>(), "LRU, the default.")
      .def_static("lru", &pkv::EvictionStrategy::lru)
      .def_static("lfu", &pkv::EvictionStrategy::lfu)
      .def_static("longest_first", &pkv::EvictionStrategy::longest_first)
      .def_static("priority", &pkv::EvictionStrategy::priority, py::arg("levels"))
      .def_static("streaming_llm", &pkv::EvictionStrategy::streaming_llm, py::arg("sink_tokens"),
                  py::arg("window_tokens"))
      .def_property_readonly("kind",
                             [](const pkv::EvictionStrategy& s) {
                               switch (s.kind()) {
                                 case pkv::EvictionStrategy::Kind::lru:
                                   return "lru";
                                 case pkv::EvictionStrategy::Kind::lfu:
                                   return "lfu";
                                 case pkv::EvictionStrategy::Kind::longest_first:
                                   return "longest_first";
                                 case pkv::EvictionStrategy::Kind::priority:
                                   return "priority";
                                 case pkv::EvictionStrategy::Kind::streaming_llm:
                                   return "streaming_llm";
                               }
                               return "unknown";
                             })
      .def_property_readonly("levels", &pkv::EvictionStrategy::levels)
      .def_property_readonly("sink_tokens", &pkv::EvictionStrategy::sink_tokens)
      .def_property_readonly("window_tokens", &pkv::EvictionStrategy::window_tokens)
      .def(py::self == py::self)
      .def("__hash__",
           [](const pkv::EvictionStrategy& s) {
             return py::hash(py::make_tuple(static_cast<int>(s.kind()), s.levels(), s.sink_tokens(),
                                            s.window_tokens()));
           })
      .def("__repr__", [](const pkv::EvictionStrategy& s) { return printed(s); })
      .def("__str__", [](const pkv::EvictionStrategy& s) { return printed(s); });

  py::enum_<pkv::HashAlgorithm>(m, "HashAlgorithm", "The digest naming a cached block.")
      .value("sha256", pkv::HashAlgorithm::sha256)
      .value("xxh3_128", pkv::HashAlgorithm::xxh3_128);

  py::class_<pkv::PrefixCacheStats>(m, "PrefixCacheStats",
                                    "The prefix cache's counters (pkv/prefix_types.hpp).")
      .def_readonly("requests", &pkv::PrefixCacheStats::requests)
      .def_readonly("queries", &pkv::PrefixCacheStats::queries)
      .def_readonly("hits", &pkv::PrefixCacheStats::hits)
      .def_readonly("published", &pkv::PrefixCacheStats::published)
      .def_readonly("reclaimed", &pkv::PrefixCacheStats::reclaimed)
      .def_readonly("verify_failures", &pkv::PrefixCacheStats::verify_failures)
      .def("hit_rate", &pkv::PrefixCacheStats::hit_rate)
      .def(py::self == py::self)
      .def("__repr__", [](const pkv::PrefixCacheStats& s) {
        return "PrefixCacheStats(requests=" + std::to_string(s.requests) +
               ", queries=" + std::to_string(s.queries) + ", hits=" + std::to_string(s.hits) +
               ", published=" + std::to_string(s.published) +
               ", reclaimed=" + std::to_string(s.reclaimed) +
               ", verify_failures=" + std::to_string(s.verify_failures) + ")";
      });

  py::class_<pkv::CopyOp>(m, "CopyOp", "Copy the KV data of block src into block dst.")
      .def(py::init([](std::uint32_t src, std::uint32_t dst) {
             return pkv::CopyOp{BlockId{src}, BlockId{dst}};
           }),
           py::arg("src"), py::arg("dst"))
      .def_property_readonly("src", [](const pkv::CopyOp& c) { return c.src.value; })
      .def_property_readonly("dst", [](const pkv::CopyOp& c) { return c.dst.value; })
      .def(py::self == py::self)
      .def("__repr__",
           [](const pkv::CopyOp& c) {
             return "CopyOp(src=" + std::to_string(c.src.value) +
                    ", dst=" + std::to_string(c.dst.value) + ")";
           })
      .def("__str__", [](const pkv::CopyOp& c) { return printed(c); });

  py::class_<pkv::CacheStats>(m, "CacheStats")
      .def_readonly("total_allocations", &pkv::CacheStats::total_allocations)
      .def_readonly("total_frees", &pkv::CacheStats::total_frees)
      .def_readonly("total_evictions", &pkv::CacheStats::total_evictions)
      .def_readonly("total_forks", &pkv::CacheStats::total_forks)
      .def_readonly("peak_blocks_used", &pkv::CacheStats::peak_blocks_used)
      .def(py::self == py::self)
      .def("__repr__", [](const pkv::CacheStats& s) {
        return "CacheStats(total_allocations=" + std::to_string(s.total_allocations) +
               ", total_frees=" + std::to_string(s.total_frees) +
               ", total_evictions=" + std::to_string(s.total_evictions) +
               ", total_forks=" + std::to_string(s.total_forks) +
               ", peak_blocks_used=" + std::to_string(s.peak_blocks_used) + ")";
      });

  py::class_<pkv::SequenceInfo>(m, "SequenceInfo", "A snapshot of one sequence.")
      .def_property_readonly("seq_id", [](const pkv::SequenceInfo& s) { return s.seq_id.value; })
      .def_readonly("num_tokens", &pkv::SequenceInfo::num_tokens)
      .def_property_readonly("block_ids",
                             [](const pkv::SequenceInfo& s) {
                               std::vector<std::uint32_t> ids;
                               ids.reserve(s.block_ids.size());
                               for (BlockId b : s.block_ids) ids.push_back(b.value);
                               return ids;
                             })
      .def_readonly("last_access", &pkv::SequenceInfo::last_access)
      .def_readonly("access_count", &pkv::SequenceInfo::access_count)
      .def_readonly("priority", &pkv::SequenceInfo::priority)
      .def_property_readonly("token_runs",
                             [](const pkv::SequenceInfo& s) {
                               py::list runs;
                               for (const auto& r : s.token_runs) {
                                 runs.append(py::make_tuple(r.first_token, r.slot, r.length));
                               }
                               return runs;
                             })
      .def("num_blocks", &pkv::SequenceInfo::num_blocks)
      .def("slot_of",
           [](const pkv::SequenceInfo& s, std::uint64_t i) {
             if (i >= s.num_tokens) {
               raise(pkv::Error::invalid_argument("token " + std::to_string(i) +
                                                  " is not kept (num_tokens " +
                                                  std::to_string(s.num_tokens) + ")"));
             }
             return s.slot_of(i);
           })
      .def("__repr__", [](const pkv::SequenceInfo& s) {
        return "SequenceInfo(" + pkv::to_string(s.seq_id) +
               ", num_tokens=" + std::to_string(s.num_tokens) +
               ", blocks=" + std::to_string(s.block_ids.size()) + ")";
      });
}

}  // namespace pkv_python
